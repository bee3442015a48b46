"""The uniform ring buffer and how transitions are stored (terminated vs truncated)."""

import gymnasium as gym
import numpy as np
import pytest

from agent.config import DQNConfig
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


def test_truncated_episode_keeps_its_final_observation_and_bootstraps():
    """A time-limit end stores the real last observation and terminated=0 (CartPole with a 5-step limit)."""
    from agent.training import replay_targets

    cfg = DQNConfig()
    env = gym.make("CartPole-v1", max_episode_steps=5)
    buf = ReplayBuffer(10, (4,), seed=0)
    obs, _ = env.reset(seed=3)
    for _ in range(5):
        next_obs, reward, terminated, truncated, _ = env.step(0 if _ % 2 else 1)
        stored_reward, ends = replay_targets(reward, terminated, truncated, cfg)
        buf.add(obs, 0, stored_reward, next_obs, ends)
        obs = next_obs
    assert truncated and not terminated
    np.testing.assert_array_equal(buf.next_obs[4], next_obs)  # not a reset observation
    assert buf.terminated[4] == 0.0 and buf.rewards[4] == 1.0


def test_terminated_episode_stops_bootstrap():
    from agent.training import replay_targets

    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):  # always push left: the pole falls within ~10 steps
        _, reward, terminated, truncated, _ = env.step(0)
    assert terminated
    assert replay_targets(reward, terminated, truncated, DQNConfig()) == (1.0, True)


def test_chapter_rules_are_opt_in():
    from agent.training import replay_targets

    chapter = DQNConfig(terminal_reward=-10.0, truncation_as_terminal=True)
    assert replay_targets(1.0, False, True, chapter) == (-10.0, True)
    assert replay_targets(1.0, False, False, chapter) == (1.0, False)
    assert replay_targets(1.0, False, True, DQNConfig()) == (1.0, False)
