"""The uniform ring buffer and how transitions are stored (terminated vs truncated)."""

import gymnasium as gym
import numpy as np
import pytest

from agent.core.config import DQNConfig
from replay import Batch, ReplayBuffer, ReplayMemoryError


def fill(buf: ReplayBuffer, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        buf.add(np.full(buf.obs_shape, i), i % 3, float(i), np.full(buf.obs_shape, i + 1), i % 5 == 0)


def test_ring_wraps_and_keeps_capacity():
    buf = ReplayBuffer(5, (2,), np.float32, seed=0)
    fill(buf, 3)
    assert len(buf) == 3 and buf.pos == 3
    fill(buf, 4, start=3)  # 7 transitions into 5 rows
    assert len(buf) == 5
    assert buf.pos == 2
    # rows 0 and 1 were overwritten by transitions 5 and 6; the oldest kept is 2
    assert sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert buf.obs[0, 0] == 5 and buf.next_obs[1, 0] == 7


def test_samples_only_stored_rows_and_keeps_dtypes():
    buf = ReplayBuffer(100, (84, 84, 1), np.uint8, seed=1)
    for i in range(10):
        buf.add(np.full((84, 84, 1), i, np.uint8), 1, 1.0, np.full((84, 84, 1), i + 1, np.uint8), False)
    batch = buf.sample(64)
    assert isinstance(batch, Batch)
    assert batch.obs.dtype == np.uint8 and batch.next_obs.dtype == np.uint8
    assert batch.actions.dtype == np.int32 and batch.rewards.dtype == np.float32 and batch.terminated.dtype == np.float32
    assert batch.obs.shape == (64, 84, 84, 1)
    assert batch.obs.max() <= 9  # only the 10 rows written so far are sampled
    np.testing.assert_array_equal(batch.next_obs[:, 0, 0, 0], batch.obs[:, 0, 0, 0] + 1)


def test_sample_many_stacks_batches():
    buf = ReplayBuffer(50, (4,), seed=0)
    fill(buf, 50)
    batch = buf.sample_many(8, 16)
    assert batch.obs.shape == (8, 16, 4) and batch.actions.shape == (8, 16)
    np.testing.assert_array_equal(batch.next_obs[..., 0], batch.obs[..., 0] + 1)


def test_nbytes_is_exact_and_predicted():
    buf = ReplayBuffer(1000, (4,), np.float32)
    assert buf.nbytes == 1000 * (2 * 16 + 12 + 1)  # obs, next_obs, action, reward, terminated, link
    assert buf.nbytes == ReplayBuffer.expected_nbytes(1000, (4,), np.float32)


def test_bad_sizes_are_refused():
    with pytest.raises(ReplayMemoryError, match="capacity"):
        ReplayBuffer(0, (4,))
    with pytest.raises(ReplayMemoryError, match="GiB"):
        ReplayBuffer(10**12, (84, 84, 4), np.uint8)
    with pytest.raises(ReplayMemoryError, match="empty"):
        ReplayBuffer(10, (4,)).sample(1)


class StepLog(gym.Wrapper):
    """Cuts episodes at 5 steps (a time limit) and notes every observation the training loop was given."""

    def __init__(self, env, log: list):
        super().__init__(gym.wrappers.TimeLimit(env, max_episode_steps=5))
        self.log = log

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.log.append(("reset", obs.copy()))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.log.append(("step", int(action), float(reward), obs.copy(), bool(terminated), bool(truncated)))
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("chapter_rules", [False, True], ids=["default", "chapter"])
def test_the_training_loop_stores_what_the_env_gave(tmp_path, monkeypatch, chapter_rules):
    """agent.run.trainer.train itself, on CartPole cut at 5 steps: each stored row is the env's own step; a time-limit end keeps
    its real final observation and bootstraps (terminated 0), unless the chapter's rules (-10, done as terminal) are on."""
    import agent.run.trainer as training
    from agent.core.presets import resolve_config

    log, buffers = [], []
    real_make_env, real_make_replay = training.make_env, training.make_replay

    def make_env(env_id, *, mode="train", **kwargs):
        env = real_make_env(env_id, mode=mode, **kwargs)
        return StepLog(env, log) if mode == "train" else env

    def make_replay(*args, **kwargs):
        buffers.append(real_make_replay(*args, **kwargs))
        return buffers[-1]

    monkeypatch.setattr(training, "make_env", make_env)
    monkeypatch.setattr(training, "make_replay", make_replay)
    changes = dict(terminal_reward=-10.0, truncation_as_terminal=True) if chapter_rules else {}
    cfg = resolve_config(env_id="CartPole-v1").replace(
        total_steps=23, learning_starts=1_000, replay_capacity=100, eval_every=0, eval_episodes=1, final_eval_episodes=0,
        checkpoint_every=0, log_every=0, **changes)
    training.train(cfg, tmp_path, progress=False)

    rows, obs = [], None  # (obs, action, reward, next_obs, terminated, truncated) as the env produced them
    for entry in log:
        if entry[0] == "reset":
            obs = entry[1]
        else:
            _, action, reward, next_obs, terminated, truncated = entry
            rows.append((obs, action, reward, next_obs, terminated, truncated))
            obs = next_obs
    buf = buffers[0]
    assert isinstance(buf, ReplayBuffer) and len(rows) == len(buf) == 23
    cut = [i for i, row in enumerate(rows) if row[5]]
    assert cut == [4, 9, 14, 19], "CartPole outlives 5 random steps: every episode is cut by the time limit"
    for i, (obs, action, reward, next_obs, terminated, truncated) in enumerate(rows):
        np.testing.assert_array_equal(buf.obs[i], obs)
        np.testing.assert_array_equal(buf.next_obs[i], next_obs)  # a cut episode's real last observation, not a reset one
        assert buf.actions[i] == action
        ends = terminated or truncated
        assert buf.rewards[i] == (-10.0 if chapter_rules and ends else reward)
        assert buf.terminated[i] == float(terminated or (chapter_rules and truncated))
        assert buf.links[i] == (not ends and i + 1 < len(rows))  # n-step sums stop at an episode's end
    for i in cut:
        assert not np.array_equal(buf.next_obs[i], buf.obs[i + 1])  # the next row starts from the reset


def test_terminated_episode_stops_bootstrap():
    from agent.run.loop import replay_targets

    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):  # always push left: the pole falls within ~10 steps
        _, reward, terminated, truncated, _ = env.step(0)
    assert terminated
    assert replay_targets(reward, terminated, truncated, DQNConfig()) == (1.0, True)


def test_chapter_rules_are_opt_in():
    from agent.run.loop import replay_targets

    chapter = DQNConfig(terminal_reward=-10.0, truncation_as_terminal=True)
    assert replay_targets(1.0, False, True, chapter) == (-10.0, True)
    assert replay_targets(1.0, False, False, chapter) == (1.0, False)
    assert replay_targets(1.0, False, True, DQNConfig()) == (1.0, False)
