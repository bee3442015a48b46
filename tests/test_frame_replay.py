"""The frame replay rebuilds exactly the stacks a real Breakout env produced."""

from __future__ import annotations


import numpy as np
import pytest

import replay.base
from envs.atari import make_atari_env
from replay import FrameReplayBuffer, ReplayMemoryError


def drive(mode: str, steps: int, seed: int = 0, **env_kwargs) -> list[tuple]:
    """(obs, action, reward, next_obs, terminated, truncated) from a real Breakout env with random actions."""
    env = make_atari_env("Breakout", seed=seed, mode=mode, **env_kwargs)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        a = int(rng.integers(env.action_space.n))
        next_obs, r, terminated, truncated, _ = env.step(a)
        out.append((obs, a, float(r), next_obs, terminated, truncated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return out


@pytest.fixture(scope="module")
def breakout() -> list[tuple]:
    """Training-mode steps: several lost lives, so several episode boundaries."""
    steps = drive("train", 400)
    assert sum(t[4] for t in steps) >= 4
    return steps


def store(buf: FrameReplayBuffer, steps: list[tuple]) -> None:
    for obs, a, r, next_obs, terminated, truncated in steps:
        buf.add(obs, a, r, next_obs, terminated, truncated=truncated)


def key(obs: np.ndarray, action: int, next_obs: np.ndarray) -> bytes:
    return obs.tobytes() + bytes([action]) + next_obs.tobytes()


def expected_sampleable(steps: list[tuple], capacity: int) -> list[int]:
    """An independent model of the ring: which transitions still have all their frames."""
    written, first, alive, slots = 0, 0, [], []
    start = True
    for obs, *_rest, terminated, truncated in steps:
        if start:  # the reset observation (4 copies of one frame) takes one slot
            first, written, j = written, written + 1, 0
        newest = first + j
        slots.append((max(newest - 3, first), newest + 1))
        written += 1
        j += 1
        start = terminated or truncated
    for t, (oldest, _) in enumerate(slots):
        if oldest >= written - capacity:
            alive.append(t)
    return alive


def check_samples(buf: FrameReplayBuffer, steps: list[tuple], alive: list[int], draws: int) -> None:
    """Every sampled transition is one the env produced and is still alive; all alive ones come up."""
    table: dict[bytes, set] = {}
    for t in alive:
        obs, a, r, next_obs, terminated, _ = steps[t]
        table.setdefault(key(obs, a, next_obs), set()).add((r, float(terminated)))
    batch = buf.sample(draws)
    assert batch.obs.shape == (draws, 84, 84, 4) and batch.obs.dtype == np.uint8
    assert batch.next_obs.dtype == np.uint8 and batch.actions.dtype == np.int32
    assert batch.rewards.dtype == np.float32 and batch.terminated.dtype == np.float32
    seen = set()
    for i in range(draws):
        k = key(batch.obs[i], int(batch.actions[i]), batch.next_obs[i])
        assert k in table, f"sample {i} is not a stored transition"
        assert (float(batch.rewards[i]), float(batch.terminated[i])) in table[k]
        seen.add(k)
    assert seen == set(table), f"{len(table) - len(seen)} stored transitions never sampled"


def test_stacks_equal_the_envs_across_episode_boundaries(breakout):
    buf = FrameReplayBuffer(10_000, seed=0)
    store(buf, breakout)
    assert len(buf) == len(breakout)
    check_samples(buf, breakout, list(range(len(breakout))), draws=8000)
    # Right after each boundary the stored obs is the reset stack: 4 copies of its first frame.
    starts = [t + 1 for t, s in enumerate(breakout[:-1]) if s[4] or s[5]]
    for t in starts:
        obs = breakout[t][0]
        assert all(np.array_equal(obs[..., k], obs[..., 0]) for k in range(4))
    # One slot per step plus one per episode's first frame: frames are stored once.
    assert buf.size == len(breakout) + 1 + len(starts)


def test_ring_wraps_and_never_samples_overwritten_frames(breakout):
    capacity = 97  # odd, and smaller than one pass over the steps
    for n in (60, 150, 233, len(breakout)):  # before and after wrapping, several times
        buf = FrameReplayBuffer(capacity, seed=n)
        store(buf, breakout[:n])
        alive = expected_sampleable(breakout[:n], capacity)
        assert len(buf) == len(alive)
        check_samples(buf, breakout[:n], alive, draws=3000)


def test_sample_many_has_a_leading_batch_axis(breakout):
    buf = FrameReplayBuffer(1_000, seed=0)
    store(buf, breakout)
    batch = buf.sample_many(3, 16)
    assert batch.obs.shape == batch.next_obs.shape == (3, 16, 84, 84, 4)
    assert batch.actions.shape == batch.rewards.shape == batch.terminated.shape == (3, 16)


def test_terminated_vs_truncated_keeps_the_real_final_observation():
    steps = drive("eval", 160, seed=3, max_frames=240)  # eval: no life-loss terminals; 60-step games
    assert any(s[5] for s in steps), "expected a truncated game"
    buf = FrameReplayBuffer(1_000, seed=0)
    store(buf, steps)
    assert len(buf) == len(steps)
    check_samples(buf, steps, list(range(len(steps))), draws=4000)
    batch = buf.sample(4000)
    truncated_finals = {s[3].tobytes() for s in steps if s[5]}
    hits = [i for i in range(4000) if batch.next_obs[i].tobytes() in truncated_finals]
    assert hits and not batch.terminated[hits].any()  # a time limit is not terminal: bootstrap from it


def test_terminated_flag_is_stored(breakout):
    """Every transition, read back in the order it was stored, keeps its own terminated flag, action and reward."""
    buf = FrameReplayBuffer(1_000, seed=0)  # no wrap: slot order is step order
    store(buf, breakout)
    every = np.flatnonzero(buf._valid(np.arange(buf.size)))
    assert len(every) == len(breakout)
    batch = buf._gather(every)
    np.testing.assert_array_equal(batch.terminated, [float(s[4]) for s in breakout])
    assert int(batch.terminated.sum()) == sum(s[4] for s in breakout) >= 4  # the lost lives, exactly
    np.testing.assert_array_equal(batch.actions, [s[1] for s in breakout])
    np.testing.assert_array_equal(batch.rewards, [s[2] for s in breakout])
    for i in np.flatnonzero(batch.terminated):  # and each terminal row is the step that lost the life
        np.testing.assert_array_equal(batch.next_obs[i], breakout[i][3])


def random_stack_steps(n: int, seed: int = 0, episode_len: int = 50):
    rng = np.random.default_rng(seed)
    obs = np.repeat(rng.integers(0, 256, (84, 84, 1), dtype=np.uint8), 4, axis=-1)
    for t in range(n):
        next_obs = np.concatenate([obs[..., 1:], rng.integers(0, 256, (84, 84, 1), dtype=np.uint8)], axis=-1)
        done = t % episode_len == episode_len - 1
        yield obs, t % 4, 1.0, next_obs, done, False
        obs = np.repeat(rng.integers(0, 256, (84, 84, 1), dtype=np.uint8), 4, axis=-1) if done else next_obs


def test_joining_an_episode_midway_stores_the_frames_padding_cannot_rebuild():
    steps = list(random_stack_steps(20))[7:]  # the first obs has 4 different frames
    buf = FrameReplayBuffer(100, seed=0)
    store(buf, steps)
    assert len(buf) == len(steps)
    check_samples(buf, steps, list(range(len(steps))), draws=2000)


def test_episode_start_false_is_checked():
    steps = list(random_stack_steps(3))
    buf = FrameReplayBuffer(100)
    store(buf, steps[:1])
    with pytest.raises(ReplayMemoryError, match="episode_start=False"):
        buf.add(*steps[2][:5], episode_start=False)


def test_nbytes_is_exact_and_under_7200_bytes_per_frame():
    buf = FrameReplayBuffer(1_000)
    arrays = [v for v in vars(buf).values() if isinstance(v, np.ndarray)]
    assert buf.nbytes == sum(a.nbytes for a in arrays) == FrameReplayBuffer.expected_nbytes(1_000, (84, 84), 4)
    assert FrameReplayBuffer.expected_nbytes(1_000_000) / 1_000_000 <= 7_200


def test_refuses_a_capacity_that_does_not_fit(monkeypatch):
    monkeypatch.setattr(replay.base, "available_memory_bytes", lambda: 10 * 2**20)
    with pytest.raises(ReplayMemoryError, match="replay_capacity"):
        FrameReplayBuffer(1_000_000)
    with pytest.raises(ReplayMemoryError):
        FrameReplayBuffer(4)  # below stack + 1


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ReplayMemoryError):
        FrameReplayBuffer(10).sample(1)


def test_state_dict_round_trip_through_npz(tmp_path):
    steps = list(random_stack_steps(130))
    buf = FrameReplayBuffer(64, seed=7)
    store(buf, steps[:100])
    buf.sample(5)  # advance the RNG
    path = tmp_path / "replay.npz"
    np.savez(path, **buf.state_dict())
    with np.load(path, allow_pickle=False) as data:
        restored = FrameReplayBuffer(64, seed=0)
        restored.load_state_dict(dict(data))
    assert len(restored) == len(buf) and restored.nbytes == buf.nbytes
    for a, b in zip(buf.sample(32), restored.sample(32)):
        np.testing.assert_array_equal(a, b)
    store(buf, steps[100:])
    store(restored, steps[100:])  # continues the same episode after loading
    for a, b in zip(buf.sample_many(2, 32), restored.sample_many(2, 32)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ReplayMemoryError, match="capacity"):
        FrameReplayBuffer(65).load_state_dict(buf.state_dict())


@pytest.mark.parametrize("field, value, message", [
    ("pos", 64, "pos 64 outside 0..63"),
    ("size", 65, "size 65 outside 0..64"),
    ("pos", 3, "pos 3 with size 41"),
    ("num_links", 1, "num_links 1 where has_next marks"),
    ("back", None, "back holds 9, more than stack - 1 = 3"),
])
def test_inconsistent_counters_are_refused_before_anything_changes(field, value, message):
    buf = FrameReplayBuffer(64, seed=7)
    store(buf, list(random_stack_steps(40)))
    state = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in buf.state_dict().items()}
    if field == "back":
        state["back"][5] = 9
    else:
        state[field] = value
    fresh = FrameReplayBuffer(64, seed=0)
    before = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in fresh.state_dict().items()}
    with pytest.raises(ReplayMemoryError, match=message):
        fresh.load_state_dict(state)
    after = fresh.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # untouched
