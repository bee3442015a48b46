"""n-step returns from both replay memories equal a direct computation on the stored steps."""

from __future__ import annotations

import numpy as np
import pytest

from replay import FrameReplayBuffer, ReplayBuffer
from tests.test_frame_replay import drive, expected_sampleable


def reference(steps: list[tuple], t: int, n: int, gamma: float) -> tuple[float, float, float, bytes]:
    """(return, bootstrap discount, ended, bootstrap obs) of step t, walking the list itself."""
    total, scale = 0.0, 1.0
    for k in range(n):
        obs, a, r, next_obs, terminated, truncated = steps[t + k]
        total += scale * r
        scale *= gamma
        if terminated:
            return total, 0.0, 1.0, next_obs.tobytes()
        if truncated or k + 1 == n or t + k + 1 == len(steps):  # episode cut, window full, newest step
            return total, scale, 0.0, next_obs.tobytes()
    raise AssertionError("unreachable")


def fill(buf, steps):
    for obs, a, r, next_obs, terminated, truncated in steps:
        buf.add(obs, a, r, next_obs, terminated, truncated=truncated)


def check(buf, steps: list[tuple], alive: list[int], n: int, gamma: float, draws: int) -> None:
    """Every sampled row is the n-step window of a live stored step; every live step comes up."""
    table: dict[bytes, set] = {}
    for t in alive:
        obs, a = steps[t][0], steps[t][1]
        R, d, e, nxt = reference(steps, t, n, gamma)
        table.setdefault(obs.tobytes() + bytes([a]), set()).add((round(R, 4), round(d, 6), e, nxt))
    batch = buf.sample(draws)
    assert batch.discounts.dtype == np.float32 and batch.discounts.shape == (draws,)
    seen = set()
    for i in range(draws):
        k = batch.obs[i].tobytes() + bytes([int(batch.actions[i])])
        got = (round(float(batch.rewards[i]), 4), round(float(batch.discounts[i]), 6), float(batch.terminated[i]), batch.next_obs[i].tobytes())
        assert got in table.get(k, ()), f"sample {i}: {got[:3]} is not the n-step window of a stored step"
        seen.add(k)
    assert seen == set(table)


@pytest.fixture(scope="module")
def breakout_rewarding() -> list[tuple]:
    """Training-mode Breakout steps (life losses end episodes) with rewards made dense and distinct,
    so a wrong window or a wrong discount cannot hide behind zeros."""
    steps = drive("train", 300, seed=1)
    assert sum(s[4] for s in steps) >= 3
    return [(o, a, float(1 + t % 7), no, te, tr) for t, (o, a, _, no, te, tr) in enumerate(steps)]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_frame_memory_windows_match_the_stored_steps(breakout_rewarding, n):
    buf = FrameReplayBuffer(5_000, seed=n, n_steps=n, gamma=0.9)
    fill(buf, breakout_rewarding)
    check(buf, breakout_rewarding, list(range(len(breakout_rewarding))), n, 0.9, draws=6000)


@pytest.mark.parametrize("n", [1, 3])
def test_uniform_memory_windows_match_the_stored_steps(breakout_rewarding, n):
    buf = ReplayBuffer(5_000, (84, 84, 4), np.uint8, seed=n, n_steps=n, gamma=0.9)
    fill(buf, breakout_rewarding)
    check(buf, breakout_rewarding, list(range(len(breakout_rewarding))), n, 0.9, draws=6000)


def test_frame_memory_windows_after_the_ring_wraps(breakout_rewarding):
    capacity = 97
    for upto in (150, 233, len(breakout_rewarding)):
        buf = FrameReplayBuffer(capacity, seed=upto, n_steps=4, gamma=0.5)
        steps = breakout_rewarding[:upto]
        fill(buf, steps)
        check(buf, steps, expected_sampleable(steps, capacity), 4, 0.5, draws=3000)


def test_windows_stop_at_time_limits_and_bootstrap_there():
    steps = drive("eval", 130, seed=3, max_frames=240)  # 60-step games cut by the time limit
    steps = [(o, a, 1.0, no, te, tr) for o, a, _, no, te, tr in steps]
    assert any(s[5] for s in steps) and not any(s[4] for s in steps)
    buf = FrameReplayBuffer(1_000, seed=0, n_steps=3, gamma=0.5)
    fill(buf, steps)
    check(buf, steps, list(range(len(steps))), 3, 0.5, draws=3000)
    batch = buf.sample(3000)
    assert not batch.terminated.any()
    assert set(np.round(batch.discounts, 6)) == {0.125, 0.25, 0.5}  # full windows, and ones cut short


def test_uniform_links_only_consecutive_steps_of_one_episode():
    """A step whose obs is not the previous next_obs starts a new chain (as after a reset)."""
    buf = ReplayBuffer(10, (1,), np.float32, n_steps=3, gamma=1.0)
    buf.add([0.0], 0, 1.0, [1.0], False)
    buf.add([1.0], 0, 2.0, [2.0], False)
    buf.add([5.0], 0, 4.0, [6.0], False)  # a jump: not linked
    buf.add([6.0], 0, 8.0, [7.0], True)
    batch = buf._gather(np.arange(4))
    np.testing.assert_array_equal(batch.rewards, [3.0, 2.0, 12.0, 8.0])
    np.testing.assert_array_equal(batch.discounts, [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(batch.next_obs[:, 0], [2.0, 2.0, 7.0, 7.0])


def cartpole_rows(buf: ReplayBuffer, steps: int, seed: int = 0, dtype=np.float32) -> None:
    import gymnasium as gym

    env = gym.make("CartPole-v1", max_episode_steps=40)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        a = int(rng.integers(2))
        next_obs, r, terminated, truncated, _ = env.step(a)
        buf.add(np.asarray(obs, dtype), a, r, np.asarray(next_obs, dtype), terminated, truncated=truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs


def test_uniform_links_survive_a_checkpoint_and_old_ones_are_rebuilt(tmp_path):
    from agent.run.run_state import StateDictPart

    buf = ReplayBuffer(150, (4,), np.float32, seed=0, n_steps=3)
    cartpole_rows(buf, 400)  # wraps the ring; short episodes, terminated and truncated
    assert buf.links.sum() > 100 and (~buf.links[: buf.size]).sum() > 5
    StateDictPart(buf, "replay memory").save_state(tmp_path / "r")
    same = ReplayBuffer(150, (4,), np.float32, n_steps=3)
    StateDictPart(same, "replay memory").load_state(tmp_path / "r", "test")
    np.testing.assert_array_equal(same.links, buf.links)
    assert same.open == buf.open
    # A state from before rows were linked: no links, no `open`; the memory rebuilds them.
    old = {k: v for k, v in buf.state_dict().items() if k not in ("links", "open")}
    rebuilt = ReplayBuffer(150, (4,), np.float32, n_steps=3)
    rebuilt.load_state_dict(old)
    np.testing.assert_array_equal(rebuilt.links, buf.links)


def test_uniform_links_do_not_depend_on_the_callers_dtype():
    """CartPole hands out float64 arrays on some paths; the link test compares stored (float32) values."""
    a, b = ReplayBuffer(100, (4,), np.float32, n_steps=3), ReplayBuffer(100, (4,), np.float32, n_steps=3)
    cartpole_rows(a, 60, dtype=np.float32)
    cartpole_rows(b, 60, dtype=np.float64)
    np.testing.assert_array_equal(a.links, b.links)
    assert a.links.any()
