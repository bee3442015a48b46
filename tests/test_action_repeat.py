"""`action_repeat`: each agent step takes its action for N env steps; returns, episode ends and lengths stay in env steps."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from agent.core.config import DQNConfig, env_options, validate
from common.errors import UserError
from envs import ActionRepeat, EnvError, make_env


class Counter(gym.Env):
    """Reward = the env step's index (1, 2, 3, ...): a sum shows which steps were taken."""

    observation_space = gym.spaces.Box(0, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.t = fail_at, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), float(self.t), self.t == self.fail_at, False, {"t": self.t}


def test_rewards_are_summed_and_the_last_observation_kept():
    env = ActionRepeat(Counter(), 3)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
    assert (obs[0], reward, terminated, truncated, info["t"]) == (3.0, 1 + 2 + 3, False, False, 3)
    obs, reward, *_ = env.step(1)
    assert (obs[0], reward) == (6.0, 4 + 5 + 6)


@pytest.mark.parametrize("end", ["terminated", "truncated"])
def test_an_episode_end_inside_a_repeat_stops_it_there(end):
    env = ActionRepeat(Counter(fail_at=5) if end == "terminated" else gym.wrappers.TimeLimit(Counter(), 5), 3)
    env.reset(seed=0)
    env.step(0)  # env steps 1-3
    obs, reward, terminated, truncated, _ = env.step(0)  # steps 4 and 5; 6 is never taken
    assert (obs[0], reward) == (5.0, 4 + 5)
    assert (terminated, truncated) == ((True, False) if end == "terminated" else (False, True))


def test_cartpole_with_repeat_2_plays_the_same_game_in_half_the_decisions():
    """The same action every env step: the same physics, the same return, half the agent steps; the episode's
    statistics (RecordEpisodeStatistics, below the repeat) count env steps."""

    def play(repeat: int) -> tuple[float, int, int]:
        env = make_env("CartPole-v1", seed=3, action_repeat=repeat)
        env.reset(seed=3)
        total, decisions, done = 0.0, 0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(1)
            total, decisions, done = total + reward, decisions + 1, terminated or truncated
        env.close()
        return total, decisions, int(info["episode"]["l"])

    once, twice = play(1), play(2)
    assert twice[0] == once[0] and twice[2] == once[2] == int(once[0])
    assert twice[1] == -(-once[1] // 2)


def test_a_pixel_env_with_repeat_stacks_every_second_state():
    plain = make_env("CartPole-v1", seed=0, pixels=True, pixel_view="cart")
    repeated = make_env("CartPole-v1", seed=0, pixels=True, pixel_view="cart", action_repeat=2)
    plain.reset(seed=0), repeated.reset(seed=0)
    for _ in range(4):
        states_1_to_4, *_ = plain.step(0)
    for _ in range(2):
        states_2_and_4, *_ = repeated.step(0)
    np.testing.assert_array_equal(states_2_and_4[..., -1], states_1_to_4[..., -1])  # state 4
    np.testing.assert_array_equal(states_2_and_4[..., -2], states_1_to_4[..., -3])  # state 2: state 3 was never rendered
    assert not np.array_equal(states_1_to_4[..., -2], states_1_to_4[..., -3])  # and states 2 and 3 look different
    plain.close(), repeated.close()


def test_bad_repeats_are_refused_in_one_line():
    with pytest.raises(EnvError, match="repeats each action 4 frames already"):
        make_env("ALE/Breakout-v5", action_repeat=2)
    with pytest.raises(EnvError, match="action_repeat must be >= 1"):
        make_env("CartPole-v1", action_repeat=0)
    with pytest.raises(UserError, match="action_repeat must be >= 1"):
        validate(DQNConfig(action_repeat=0))


def test_the_config_passes_it_to_make_env():
    cfg = DQNConfig(env_id="CartPole-v1", pixels=True, pixel_view="cart_track", action_repeat=2)
    assert env_options(cfg) == {"pixels": True, "pixel_view": "cart_track", "action_repeat": 2}
