"""envs.atari's frame max-pooling (MaxAndSkip), no-op starts (NoopReset) and the presses after a lost life
(`after_life_lost`): on a scripted env whose every frame the test knows, and on the real Breakout ROM against a bare
emulator stepped by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.atari import NOOP, NOOP_MAX, MaxAndSkip, NoopReset, make_atari_env


class ScriptedGame(gym.Env):
    """Frame t (t = 0 at reset) is `frames[t]` with reward `rewards[t]`; the game ends on frame `end_at`. Every action is noted."""

    observation_space = gym.spaces.Box(0, 255, (3, 4), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def __init__(self, frames: np.ndarray, rewards: np.ndarray | None = None, end_at: int | None = None):
        self.frames, self.end_at = frames, end_at
        self.rewards = np.arange(len(frames), dtype=float) if rewards is None else rewards
        self.actions: list[int] = []
        self.resets = 0
        self.t = 0

    def get_action_meanings(self) -> list[str]:
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        self.t = 0
        return self.frames[0], {}

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        return self.frames[self.t], float(self.rewards[self.t]), self.t == self.end_at, False, {}


def random_frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 4), dtype=np.uint8)


# ---------------------------------------------------------------- MaxAndSkip


def test_max_and_skip_repeats_the_action_and_pools_the_last_two_frames():
    frames = random_frames(9)
    game = ScriptedGame(frames)
    env = MaxAndSkip(game, skip=4)
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(2)
    np.testing.assert_array_equal(obs, np.maximum(frames[3], frames[4]))
    assert reward == 1 + 2 + 3 + 4 and not terminated and not truncated
    obs, reward, *_ = env.step(3)
    np.testing.assert_array_equal(obs, np.maximum(frames[7], frames[8]))
    assert reward == 5 + 6 + 7 + 8
    assert game.actions == [2] * 4 + [3] * 4


def test_max_pooling_removes_flicker():
    """A sprite drawn on every other frame only (as many Atari games do) is in every observation."""
    frames = np.zeros((13, 3, 4), np.uint8)
    frames[1::2, 1, 2] = 200  # odd frames show the sprite
    frames[:, 0, 0] = np.arange(13) * 10  # a background that changes: pooling keeps the newer (brighter) of the two
    env = MaxAndSkip(ScriptedGame(frames), skip=4)
    env.reset()
    for step in range(1, 4):
        obs = env.step(0)[0]
        assert obs[1, 2] == 200 and obs[0, 0] == 40 * step
        assert frames[4 * step, 1, 2] == 0  # the step's own last frame lacks it


@pytest.mark.parametrize("end_at, frames_seen", [(6, (5, 6)), (5, (5,))], ids=["second-frame", "first-frame"])
def test_max_and_skip_stops_at_the_end_of_the_game(end_at, frames_seen):
    frames = random_frames(9, seed=1)
    game = ScriptedGame(frames, end_at=end_at)
    env = MaxAndSkip(game, skip=4)
    env.reset()
    env.step(1)
    obs, reward, terminated, _, _ = env.step(1)
    assert terminated and len(game.actions) == end_at  # no frame is played after the end
    np.testing.assert_array_equal(obs, np.max(frames[list(frames_seen)], axis=0))  # the last frame alone if the end came first
    assert reward == sum(frames_seen)


def test_max_and_skip_on_the_real_rom_equals_the_bare_emulator_by_hand():
    def bare():
        return gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False, obs_type="grayscale")

    wrapped, by_hand = MaxAndSkip(bare(), skip=4), bare()
    wrapped.reset(seed=7)
    by_hand.reset(seed=7)
    rng = np.random.default_rng(0)
    pooled_differs = 0
    for _ in range(60):
        action = int(rng.integers(4))
        obs, reward, terminated, truncated, _ = wrapped.step(action)
        screens, total = [], 0.0
        for _ in range(4):
            screen, r, *_ = by_hand.step(action)
            screens.append(screen)
            total += r
        np.testing.assert_array_equal(obs, np.maximum(screens[-2], screens[-1]))
        assert reward == total and not (terminated or truncated)
        pooled_differs += not np.array_equal(obs, screens[-1])
    assert pooled_differs > 10  # the ball and paddle move between frames: pooling shows both places
    wrapped.close()
    by_hand.close()


# ---------------------------------------------------------------- NoopReset


def noop_count(seed: int, noop_max: int = NOOP_MAX) -> tuple[int, ScriptedGame, np.ndarray]:
    game = ScriptedGame(random_frames(40, seed=seed))
    obs, _ = NoopReset(game, noop_max).reset(seed=seed)
    return len(game.actions), game, obs


def test_noop_starts_press_noop_1_to_30_times_seeded():
    counts = []
    for seed in range(60):
        n, game, obs = noop_count(seed)
        assert 1 <= n <= 30 and set(game.actions) == {0}  # only NOOP is pressed
        np.testing.assert_array_equal(obs, game.frames[n])  # the game starts from the screen after the last no-op
        assert noop_count(seed)[0] == n  # the same seed, the same start
        counts.append(n)
    assert min(counts) <= 3 and max(counts) >= 28 and len(set(counts)) >= 20  # starts spread over the whole range
    assert noop_count(0, noop_max=0)[0] == 0  # noop_max=0: no no-ops
    assert set(noop_count(s, noop_max=1)[0] for s in range(10)) == {1}


def test_a_game_that_ends_during_the_noops_is_reset_again():
    game = ScriptedGame(random_frames(40), end_at=1)  # over after one frame
    NoopReset(game, NOOP_MAX).reset(seed=3)
    assert game.resets > 1


def test_noop_starts_on_the_real_rom():
    """make_atari_env's Breakout starts 1..30 NOOP frames into the game (then FIRE, 4 frames): the screen is the one a bare
    emulator shows after that many NOOPs, and seeds give different starts."""
    def bare():
        return gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0, full_action_space=False, obs_type="grayscale")

    starts = set()
    for seed in range(4):
        env = NoopReset(bare())
        obs, _ = env.reset(seed=seed)
        n = env.unwrapped.ale.getEpisodeFrameNumber()
        assert 1 <= n <= 30
        by_hand = bare()
        by_hand.reset(seed=seed)
        for _ in range(n):
            screen = by_hand.step(0)[0]
        np.testing.assert_array_equal(obs, screen)
        full = make_atari_env("Breakout", mode="eval")
        full.reset(seed=seed)
        assert full.unwrapped.ale.getEpisodeFrameNumber() == n + 4  # the same no-ops, then FIRE for one agent step
        starts.add(n)
        for e in (env, by_hand, full):
            e.close()
    assert len(starts) >= 3


# ---------------------------------------------------------------- after a lost life


RIGHT = 2  # Breakout: ['NOOP', 'FIRE', 'RIGHT', 'LEFT']


def emulator_actions(mode: str, seed: int = 5) -> list[tuple[int, int]]:
    """(action, lives after it) of every emulator frame of one Breakout game whose agent always presses RIGHT."""
    env = make_atari_env("Breakout", seed=seed, mode=mode)
    base = env.unwrapped
    sent: list[tuple[int, int]] = []
    step = base.step

    def recording(action):
        out = step(action)
        sent.append((int(action), base.ale.lives()))
        return out

    base.step = recording  # every wrapper's presses reach the emulator through here
    env.reset(seed=seed)
    for _ in range(5_000):
        _, _, terminated, truncated, info = env.step(RIGHT)
        if truncated or info["lives"] == 0:
            break
        if terminated:  # training: a lost life ends the episode; the reset goes on with the same game
            env.reset()
    else:
        raise AssertionError("the game did not end")
    env.close()
    return sent


def test_train_and_eval_send_the_same_presses_after_a_lost_life():
    """Training presses after a lost life in the reset that starts the next episode, evaluation inside the step that
    lost it: both send the emulator the same frames, NOOP then FIRE (4 frames each) after every lost life."""
    train, evaluation = emulator_actions("train"), emulator_actions("eval")
    assert train == evaluation
    actions = [a for a, _ in train]
    lost = [i for i in range(1, len(train)) if 0 < train[i][1] < train[i - 1][1]]
    assert len(lost) == 4  # 5 lives: 4 lost with the game going on, then game over
    for i in lost:
        while actions[i] == RIGHT:  # the rest of the agent step that lost the life
            i += 1
        assert actions[i:i + 9] == [NOOP] * 4 + [1] * 4 + [RIGHT], actions[i - 4:i + 12]
    assert actions.count(1) == 4 * (1 + len(lost))  # FIRE: once at the start, once after each lost life, never else
