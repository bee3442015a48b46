"""The sequence memory of the recurrent Q-network (replay/sequences.py): where sequences start and end, the burn-in
mask, n-step targets inside a sequence, the stored recurrent state, priorities, and the round trip through a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from replay import ReplayMemoryError, SequenceReplay
from replay.sequences import LAST, sequence_targets

UNITS = 3


def memory(capacity=200, sequence_length=6, burn_in=2, n_steps=1, gamma=0.9, prioritized=False, seed=0) -> SequenceReplay:
    return SequenceReplay(capacity, (2,), np.float32, (2, UNITS), sequence_length=sequence_length, burn_in=burn_in, seed=seed,
                          n_steps=n_steps, gamma=gamma, prioritized=prioritized)


def obs_of(episode: int, step: int) -> np.ndarray:
    """An observation that says where it came from: (episode, step)."""
    return np.array([episode, step], np.float32)


def carry_of(episode: int, step: int) -> np.ndarray:
    return np.full((2, UNITS), 1000 * episode + step, np.float32)


def play(mem: SequenceReplay, episode: int, length: int, terminated: bool = True) -> None:
    """One episode of `length` agent steps; the reward of step t is t + 1; it ends terminated or truncated."""
    for t in range(length):
        last = t == length - 1
        mem.add(obs_of(episode, t), t % 2, t + 1.0, obs_of(episode, t + 1), terminated and last, truncated=last and not terminated,
                carry=carry_of(episode, t))


def test_sequences_start_every_stride_steps_of_an_episode_and_never_cross_into_another():
    mem = memory(sequence_length=6, burn_in=2)  # stride 4: starts at episode steps 0, 4, 8, ...
    play(mem, 1, 11)
    play(mem, 2, 5)
    starts = np.flatnonzero(mem.sampleable)
    assert [tuple(mem.obs[s]) for s in starts] == [(1, 0), (1, 4), (1, 8), (2, 0), (2, 4)]
    batch = mem._gather(starts)
    for i, start in enumerate(starts):
        episode, first = mem.obs[start]
        length = {1: 11, 2: 5}[int(episode)]
        rows = min(7, length - int(first) + 1)  # the window's own rows: steps, then the episode's last observation
        np.testing.assert_array_equal(batch.obs[i, :rows, 0], episode)  # all from one episode
        np.testing.assert_array_equal(batch.obs[i, :rows, 1], np.arange(first, first + rows))
        assert not batch.mask[i, rows - 1:].any()  # no loss on the last observation or the padding after it
        np.testing.assert_array_equal(batch.carry[i], carry_of(int(episode), int(first)))  # the state stored at the start


def test_a_sequence_is_drawn_only_once_complete():
    mem = memory(sequence_length=6, burn_in=2)
    play_steps = [(obs_of(1, t), 0, 1.0, obs_of(1, t + 1), False) for t in range(9)]
    for i, (o, a, r, n, d) in enumerate(play_steps):
        mem.add(o, a, r, n, d, carry=carry_of(1, i))
        complete = [tuple(mem.obs[s]) for s in np.flatnonzero(mem.sampleable)]
        # the sequence from step 0 covers rows of steps 0..6 (7 rows): complete once step 6 is stored
        assert complete == ([(1, 0)] if i >= 6 else [])
    assert len(mem) == 1
    with pytest.raises(ReplayMemoryError, match="carry"):
        mem.add(obs_of(1, 9), 0, 1.0, obs_of(1, 10), False)


def test_burn_in_steps_get_no_loss_except_at_an_episode_start():
    mem = memory(sequence_length=6, burn_in=2)
    play(mem, 1, 30)
    starts = np.flatnonzero(mem.sampleable)
    batch = mem._gather(starts)
    first = [i for i, s in enumerate(starts) if mem.obs[s][1] == 0]
    later = [i for i, s in enumerate(starts) if mem.obs[s][1] > 0 and mem.obs[s][1] + 7 <= 30]
    assert first and later
    for i in first:  # the true (zero) state: every step with a target trains
        assert batch.burn_in_state[i] == 1 and batch.mask[i, :6].all() and batch.mask[i, 6] == 0
    for i in later:
        assert batch.burn_in_state[i] == 0
        np.testing.assert_array_equal(batch.mask[i], [0, 0, 1, 1, 1, 1, 0])
    # every step of the episode is trained by exactly one sequence (the first burn_in of each later one overlap the one before)
    trained = sorted(int(mem.obs[s][1]) + t for i, s in enumerate(starts) for t in np.flatnonzero(batch.mask[i]))
    assert trained == list(range(30))


def brute_force_targets(rewards, terminated, last_obs, n, gamma):
    w = len(rewards)
    out = []
    for t in range(w):
        if t >= last_obs:
            out.append(None)
            continue
        total, m, ended = 0.0, 0, False
        while m < n and t + m < last_obs and not ended:
            total += gamma**m * rewards[t + m]
            ended = terminated[t + m] > 0
            m += 1
        out.append((total, 0.0 if ended else gamma**m, t + m if t + m < w else w - 1))
    return out


@pytest.mark.parametrize("n", [1, 3, 5])
def test_n_step_targets_inside_a_sequence_match_a_brute_force_sum(n):
    rng = np.random.default_rng(n)
    rewards = rng.normal(size=(50, 9)).astype(np.float32)
    terminated = (rng.random((50, 9)) < 0.15).astype(np.float32)
    last_obs = rng.integers(1, 9, size=50)
    returns, discounts, bootstrap, has_target = sequence_targets(rewards, terminated, last_obs, n, 0.9)
    for i in range(50):
        expected = brute_force_targets(rewards[i], terminated[i], last_obs[i], n, 0.9)
        for t, e in enumerate(expected):
            assert has_target[i, t] == (e is not None)
            if e is not None:
                assert returns[i, t] == pytest.approx(e[0], rel=1e-5, abs=1e-5)
                assert discounts[i, t] == pytest.approx(e[1], rel=1e-6)
                assert bootstrap[i, t] == e[2]


def test_a_time_limit_bootstraps_from_the_real_last_observation_and_a_terminal_does_not():
    mem = memory(sequence_length=6, burn_in=0, n_steps=1, gamma=0.5)
    play(mem, 1, 3, terminated=False)  # truncated after 3 steps
    play(mem, 2, 3, terminated=True)
    batch = mem._gather(np.flatnonzero(mem.sampleable))
    assert tuple(batch.obs[0, 3]) == (1, 3) and mem.kinds[3] == LAST  # the real final observation is stored
    assert batch.discounts[0, 2] == 0.5 and batch.bootstrap[0, 2] == 3  # bootstraps from it
    assert batch.discounts[1, 2] == 0.0  # a terminal step does not


def test_the_ring_wraps_dropping_the_oldest_sequences_and_keeping_windows_whole():
    mem = memory(capacity=40, sequence_length=6, burn_in=2)
    for episode in range(1, 12):
        play(mem, episode, 9)  # 10 rows each: 110 rows through a ring of 40
        assert len(mem) == int(mem.sampleable.sum())
    starts = np.flatnonzero(mem.sampleable)
    batch = mem._gather(starts)
    for i, start in enumerate(starts):
        episode, first = mem.obs[start]
        valid = int(batch.mask[i].sum()) + (2 if first > 0 else 0)
        np.testing.assert_array_equal(batch.obs[i, :valid, 0], episode)
        np.testing.assert_array_equal(batch.obs[i, :valid, 1], np.arange(first, first + valid))
    episodes_left = {int(mem.obs[s][0]) for s in starts}
    assert min(episodes_left) >= 8 and max(episodes_left) == 11  # the oldest went with their rows
    draws = mem.sample_many(4, 16)
    assert draws.obs.shape == (4, 16, 7, 2) and draws.carry.shape == (4, 16, 2, UNITS)


def test_the_state_dict_round_trip_gives_the_same_draws_and_the_same_bookkeeping():
    a = memory(capacity=60, prioritized=True, seed=3)
    play(a, 1, 20)
    for t in range(5):  # an open episode: its sequence is pending
        a.add(obs_of(2, t), 0, 1.0, obs_of(2, t + 1), False, carry=carry_of(2, t))
    drawn = a.sample_prioritized(1, 4, beta=0.5)
    a.update_priorities(drawn.indices, np.arange(4, dtype=np.float32).reshape(1, 4))
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in a.state_dict().items()}
    b = memory(capacity=60, prioritized=True, seed=99)
    b.load_state_dict(state)
    assert (b.pos, b.size, b.open, b.episode_step, list(b.pending), len(b)) == (a.pos, a.size, a.open, a.episode_step, list(a.pending), len(a))
    for x, y in zip(a.sample_prioritized(2, 8, beta=0.5), b.sample_prioritized(2, 8, beta=0.5)):
        for u, v in zip(x if isinstance(x, tuple) else [x], y if isinstance(y, tuple) else [y]):
            np.testing.assert_array_equal(u, v)
    for m in (a, b):  # the open episode goes on alike
        for t in range(5, 12):
            m.add(obs_of(2, t), 0, 1.0, obs_of(2, t + 1), t == 11, carry=carry_of(2, t))
    np.testing.assert_array_equal(a.sampleable, b.sampleable)
    with pytest.raises(ReplayMemoryError, match="sequence_length"):
        memory(capacity=60, sequence_length=8, prioritized=True).load_state_dict(state)


def test_priorities_steer_the_draws():
    mem = memory(capacity=400, prioritized=True)
    for episode in range(1, 6):
        play(mem, episode, 20)
    starts = np.flatnonzero(mem.sampleable)
    favourite = starts[3]
    mem.update_priorities(starts[None], np.where(starts == favourite, 100.0, 0.01)[None].astype(np.float32))
    drawn = mem.sample_prioritized(1, 200, beta=1.0)
    assert (drawn.indices == favourite).mean() > 0.9
    assert drawn.batch.obs.shape == (1, 200, 7, 2)


def test_a_memory_too_small_for_one_sequence_is_refused():
    with pytest.raises(ReplayMemoryError, match="sequence_length"):
        memory(capacity=7, sequence_length=6)
    with pytest.raises(ReplayMemoryError, match="burn_in"):
        memory(sequence_length=6, burn_in=6)


def test_a_ring_of_few_stored_states_keeps_the_newest_starts_and_stops_drawing_the_others():
    mem = SequenceReplay(200, (2,), np.float32, (2, UNITS), sequence_length=4, burn_in=1, seed=0, carry_slots=3, carry_dtype=np.float16)
    play(mem, 1, 20)  # stride 3: starts at steps 0, 3, ..., 18; only the last 3 keep their state
    assert [tuple(mem.obs[s]) for s in np.flatnonzero(mem.sampleable)] == [(1, 12), (1, 15), (1, 18)]
    batch = mem.sample(50)
    firsts = batch.obs[:, 0, 1].astype(int)
    assert set(firsts) == {12, 15, 18}
    np.testing.assert_array_equal(batch.carry, np.stack([carry_of(1, f) for f in firsts]))  # exact in float16 (small integers)
    assert batch.carry.dtype == np.float32


def test_a_frame_memory_of_a_million_rows_stays_under_7300_bytes_per_row():
    """An 84x84 frame per row (7,056 bytes), 256-unit stored states in float16 on 1.25 slots per stride of 10 rows, priorities."""
    capacity = 1_000_000
    nbytes = SequenceReplay.expected_nbytes(capacity, (84, 84, 1), np.uint8, (2, 256), prioritized=True,
                                            carry_slots=capacity * 5 // 40, carry_dtype=np.float16)
    assert 7_056 < nbytes / capacity < 7_300
    small = SequenceReplay(1_000, (84, 84, 1), np.uint8, (2, 256), sequence_length=20, burn_in=10, prioritized=True,
                           carry_slots=1_000 * 5 // 40, carry_dtype=np.float16)
    assert small.nbytes == SequenceReplay.expected_nbytes(1_000, (84, 84, 1), np.uint8, (2, 256), prioritized=True,
                                                          carry_slots=1_000 * 5 // 40, carry_dtype=np.float16)


def test_a_state_saved_with_one_stored_state_per_row_loads_into_slots():
    """Checkpoints of the first recurrent runs kept `carries[row]`; they resume with the same draws."""
    mem = memory(sequence_length=6, burn_in=2, seed=5)
    play(mem, 1, 11)
    play(mem, 2, 9, terminated=False)
    mem.add(obs_of(3, 0), 0, 1.0, obs_of(3, 1), False, carry=carry_of(3, 0))  # an open episode: a pending start
    state = mem.state_dict()
    per_row = np.zeros((mem.capacity, 2, UNITS), np.float32)
    per_row[state["slot_of_row"] >= 0] = state["carries"][state["slot_of_row"][state["slot_of_row"] >= 0]]
    old = {k: v for k, v in state.items() if k not in ("slot_of_row", "row_of_slot", "next_slot", "carry_slots", "carry_dtype")}
    old["carries"] = per_row
    loaded = memory(sequence_length=6, burn_in=2, seed=99)
    loaded.load_state_dict(old)
    for a, b in zip(mem.sample(16), loaded.sample(16)):
        np.testing.assert_array_equal(a, b)
    for m in (mem, loaded):
        play(m, 3, 7)
    for a, b in zip(mem.sample(16), loaded.sample(16)):
        np.testing.assert_array_equal(a, b)
