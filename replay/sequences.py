"""Sequence replay for a recurrent Q-network (R2D2, Kapturowski et al. 2019): stored state, burn-in, overlap.

The memory is a ring of rows, one per agent step (the observation, the action
taken from it, its reward and whether it ended the episode), plus one row per
episode end holding the episode's last observation (the real one at a time
limit, so a truncated episode bootstraps from it). A sequence starts every
`stride = sequence_length - burn_in` agent steps of an episode, at step 0,
stride, 2 * stride, ...; it covers `sequence_length + 1` rows (the last one only
gives the bootstrap observation of the step before it) and never crosses into
another episode (rows past an episode's end are padding, masked out). The
recurrent state acting had before a start row's observation is stored with it,
so training unrolls from where acting was (R2D2's "stored state").

Each sequence trains its last `stride` steps; its first `burn_in` steps only
rebuild the state. Consecutive sequences of an episode overlap by `burn_in`
steps, so every step but the first `burn_in` of an episode is trained exactly
once per draw of its sequence; the first sequence of an episode starts from
the true (zero) state and trains from its first step on.

With prioritized replay a sequence's priority is `eta * max |TD| + (1 - eta) *
mean |TD|` over its trained steps (R2D2's mix; the agent computes it), drawn as
in `Priorities`. A sequence can be drawn once it is complete: all its rows
written, or its episode over.

Stored states live in a ring of `carry_slots` slots, one taken per sequence
start. With the default, one slot per row, no start loses its state before its
row is overwritten. A memory of Atari frames takes fewer slots (1.25 per
`stride` rows) in float16, so that a row stays under 7,300 bytes at a million
rows (an 84x84 frame is 7,056 of them); a start whose slot is taken again
before its row is overwritten (only when many episodes are shorter than
`stride`) stops being drawn.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar, NamedTuple

import numpy as np

from replay.base import PrioritizedSampling, Priorities, ReplayMemoryError, SumTree, check_fits_in_memory
from replay.base import rng_from_words, rng_to_words

STEP, LAST = 0, 1  # row kinds: an agent step (an action was taken from its observation), an episode's last observation


class SequenceBatch(NamedTuple):
    """Replayed sequences, stacked `(K, B, W, ...)` with `W = sequence_length + 1` rows each.

    Attributes:
        obs: observations `(K, B, W, *obs_shape)`, the stored dtype.
        actions: int32 `(K, B, W)`; 0 where no action was taken (masked).
        returns: float32 `(K, B, W)`: the discounted n-step reward sums from each row, cut at the sequence's end.
        discounts: float32 `(K, B, W)`: `gamma^m` for an m-step sum, 0 where the episode ended inside it.
        bootstrap: int32 `(K, B, W)`: the row whose Q-values the target bootstraps from (`row + m`).
        mask: float32 `(K, B, W)`: 1 on the rows that get a loss (trained, with a target), 0 elsewhere.
        burn_in_state: float32 `(K, B)`: 1 where the first `burn_in` rows are trained too (the sequence starts an
            episode: its stored state is the true one), 0 where they only rebuild the state (no gradient through them).
        carry: float32 `(K, B, 2, units)`: the stored recurrent state `h, c` before the first row.
    """

    obs: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    discounts: np.ndarray
    bootstrap: np.ndarray
    mask: np.ndarray
    burn_in_state: np.ndarray
    carry: np.ndarray


def sequence_targets(rewards: np.ndarray, terminated: np.ndarray, last_obs: np.ndarray, n_steps: int, gamma: float):
    """n-step returns inside sequences, each cut where its sequence's observations end.

    Args:
        rewards, terminated: `(N, W)` per row (the step from that row to the next).
        last_obs: `(N,)` the index of each sequence's last usable observation (its episode's last row, or W - 1).

    Returns:
        `(returns, discounts, bootstrap, has_target)`, each `(N, W)`; `has_target` is False on rows at or past `last_obs`.
    """
    n, w = rewards.shape
    rows = np.arange(w)[None, :]
    span = np.clip(last_obs[:, None] - rows, 0, n_steps)  # steps summed from each row: up to n, never past last_obs
    returns = np.zeros((n, w), np.float32)
    taken = np.zeros((n, w), np.int64)
    ended = np.zeros((n, w), bool)
    for k in range(n_steps):
        alive = (span > k) & ~ended
        at = np.minimum(rows + k, w - 1)
        returns += np.where(alive, np.float32(gamma**k) * np.take_along_axis(rewards, np.broadcast_to(at, (n, w)), axis=1), 0)
        ended |= alive & (np.take_along_axis(terminated, np.broadcast_to(at, (n, w)), axis=1) > 0)
        taken += alive
    discounts = np.where(ended, 0.0, np.float32(gamma) ** taken).astype(np.float32)
    bootstrap = np.minimum(rows + taken, w - 1).astype(np.int32)
    return returns, discounts, bootstrap, span > 0


class SequenceReplay(PrioritizedSampling):
    """Replay of sequences for a recurrent Q-network (R2D2's replay; see the module).

    Args:
        capacity: rows kept (agent steps plus one per episode end); the oldest are overwritten.
        obs_shape, obs_dtype: one observation's.
        carry_shape: one recurrent state's, `(2, units)`.
        sequence_length: agent steps per sequence, burn-in included.
        burn_in: first steps of a sequence that only rebuild the state.
        seed: of the sampling RNG.
        n_steps, gamma: the returns summed inside a sequence.
        prioritized, priority_alpha, priority_eps: as `Priorities`.
        carry_slots: stored states kept (default: one per row); carry_dtype: theirs (float32, or float16 to save memory).
    """

    kind: ClassVar[str] = "sequences"

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype, carry_shape: tuple[int, int], *, sequence_length: int,
                 burn_in: int, seed: int | None = None, n_steps: int = 1, gamma: float = 0.99, prioritized: bool = False,
                 priority_alpha: float = 0.6, priority_eps: float = 1e-6, carry_slots: int | None = None, carry_dtype=np.float32) -> None:
        if not 0 <= burn_in < sequence_length:
            raise ReplayMemoryError(f"burn_in must be in 0..{sequence_length - 1}, got {burn_in}")
        if capacity < sequence_length + 2:
            raise ReplayMemoryError(f"a sequence replay needs a capacity >= sequence_length + 2 = {sequence_length + 2} rows, got {capacity}")
        self.capacity, self.obs_shape, self.obs_dtype = int(capacity), tuple(obs_shape), np.dtype(obs_dtype)
        self.carry_shape = tuple(int(d) for d in carry_shape)
        self.sequence_length, self.burn_in = int(sequence_length), int(burn_in)
        self.stride = self.sequence_length - self.burn_in  # agent steps between two sequence starts of an episode
        self.window = self.sequence_length + 1  # rows a sequence covers
        self.n_steps, self.gamma = int(n_steps), float(gamma)
        self.carry_slots = self.capacity if carry_slots is None else int(carry_slots)
        if self.carry_slots < 1:
            raise ReplayMemoryError(f"carry_slots must be >= 1, got {self.carry_slots}")
        self.carry_dtype = np.dtype(carry_dtype)
        check_fits_in_memory(self.expected_nbytes(capacity, obs_shape, obs_dtype, carry_shape, prioritized=prioritized,
                                                  carry_slots=self.carry_slots, carry_dtype=self.carry_dtype), "The sequence replay")
        self.obs = np.zeros((capacity, *obs_shape), self.obs_dtype)
        self.actions = np.zeros(capacity, np.int32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.kinds = np.zeros(capacity, np.uint8)  # STEP or LAST
        self.episode_starts = np.zeros(capacity, bool)  # the row is its episode's first
        self.carries = np.zeros((self.carry_slots, *self.carry_shape), self.carry_dtype)  # a ring: the state before a start row
        self.slot_of_row = np.full(capacity, -1, np.int32)  # on sequence starts: the slot holding their state
        self.row_of_slot = np.full(self.carry_slots, -1, np.int32)  # the start row a slot was last given to
        self.next_slot = 0
        self.priorities = Priorities(capacity, priority_alpha, priority_eps) if prioritized else None
        self._uniform = None if prioritized else SumTree(capacity)  # 1 on every sequence that can be drawn
        self.sampleable = np.zeros(capacity, bool)  # complete sequences, by start row
        self._count = 0  # of them
        self.pos = 0  # next row to write
        self.size = 0  # rows holding data
        self.open = False  # an episode is being written
        self.episode_step = 0  # agent steps of the open episode written so far
        self.pending: deque[int] = deque()  # start rows of the open episode whose sequences are not complete yet
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def expected_nbytes(capacity: int, obs_shape, obs_dtype, carry_shape, *, prioritized: bool = False, carry_slots: int | None = None,
                        carry_dtype=np.float32) -> int:
        row = int(np.prod(obs_shape)) * np.dtype(obs_dtype).itemsize + 4 + 4 + 4 + 1 + 1 + 1 + 4  # ... and slot_of_row
        slot = int(np.prod(carry_shape)) * np.dtype(carry_dtype).itemsize + 4  # the state and row_of_slot
        slots = capacity if carry_slots is None else carry_slots
        return capacity * row + slots * slot + (Priorities.expected_nbytes(capacity) if prioritized else SumTree.expected_nbytes(capacity))

    def __len__(self) -> int:
        """Sequences that can be drawn."""
        return self._count

    @property
    def nbytes(self) -> int:
        tree = self.priorities.nbytes if self.priorities is not None else self._uniform.nodes.nbytes
        arrays = (self.obs, self.actions, self.rewards, self.terminated, self.kinds, self.episode_starts, self.carries, self.sampleable,
                  self.slot_of_row, self.row_of_slot)
        return sum(a.nbytes for a in arrays) + tree

    # ------------------------------------------------------------ writing

    def add(self, obs, action: int, reward: float, next_obs, terminated: bool, *, truncated: bool = False, carry=None) -> None:
        """Store one agent step; `carry` is the recurrent state acting had before `obs` (`(2, units)`).

        Raises:
            ReplayMemoryError: no `carry` (it is stored with every sequence start).
        """
        if carry is None:
            raise ReplayMemoryError("a sequence replay stores the recurrent state with each step: pass carry=(h, c)")
        if not self.open:
            self.open, self.episode_step = True, 0
        row = self._write_row(obs, STEP, self.episode_step == 0)
        self.actions[row], self.rewards[row], self.terminated[row] = action, reward, float(terminated)
        if self.episode_step % self.stride == 0:
            self._store_carry(row, carry)
            self.pending.append(row)
        self.episode_step += 1
        if terminated or truncated:
            self._write_row(next_obs, LAST, False)
            while self.pending:  # the episode is over: its open sequences end here
                self._set_sampleable(self.pending.popleft(), True)
            self.open = False
        else:
            while self.pending and (self.pos - self.pending[0]) % self.capacity >= self.window:
                self._set_sampleable(self.pending.popleft(), True)

    def _store_carry(self, row: int, carry) -> None:
        """Give the start `row` the next slot of the ring; the start that slot held stops being drawn."""
        slot = self.next_slot
        self.next_slot = (slot + 1) % self.carry_slots
        older = int(self.row_of_slot[slot])
        if older >= 0 and self.slot_of_row[older] == slot:
            self.slot_of_row[older] = -1
            if self.sampleable[older]:
                self._set_sampleable(older, False)
            if older in self.pending:
                self.pending.remove(older)
        self.carries[slot] = carry
        self.row_of_slot[slot], self.slot_of_row[row] = row, slot

    def _write_row(self, obs, kind: int, episode_start: bool) -> int:
        row = self.pos
        if self.sampleable[row]:  # the oldest sequence starts here: it goes
            self._set_sampleable(row, False)
        self.slot_of_row[row] = -1
        self.obs[row], self.kinds[row], self.episode_starts[row] = obs, kind, episode_start
        self.actions[row], self.rewards[row], self.terminated[row] = 0, 0.0, 0.0
        self.pos = (row + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return row

    def _set_sampleable(self, row: int, on: bool) -> None:
        self.sampleable[row] = on
        self._count += 1 if on else -1
        if self.priorities is not None:
            self.priorities.add(row) if on else self.priorities.remove(row)
        else:
            self._uniform.set_one(row, 1.0 if on else 0.0)

    # ------------------------------------------------------------ sampling

    def sample_many(self, num_batches: int, batch_size: int) -> SequenceBatch:
        """`num_batches` batches of `batch_size` sequences, uniformly with replacement, stacked `(K, B, W, ...)`."""
        if len(self) == 0:
            raise ReplayMemoryError("cannot sample from a sequence replay without a complete sequence")
        mass = self.rng.random(num_batches * batch_size) * self._uniform.total
        return self._gather(self._uniform.find(mass).reshape(num_batches, batch_size))

    def sample(self, batch_size: int) -> SequenceBatch:
        batch = self.sample_many(1, batch_size)
        return SequenceBatch(*(x[0] for x in batch))

    def _gather(self, starts: np.ndarray) -> SequenceBatch:
        shape = starts.shape
        starts = starts.reshape(-1)
        rows = (starts[:, None] + np.arange(self.window)[None, :]) % self.capacity  # (N, W)
        kinds = self.kinds[rows]
        # A sequence's rows end at its episode's last observation (the first LAST row) or at the window's end.
        is_last = kinds == LAST
        last_obs = np.where(is_last.any(axis=1), is_last.argmax(axis=1), self.window - 1)
        rewards = self.rewards[rows]
        terminated = self.terminated[rows]
        returns, discounts, bootstrap, has_target = sequence_targets(rewards, terminated, last_obs, self.n_steps, self.gamma)
        trained = np.arange(self.window)[None, :] >= self.burn_in
        burn_in_state = self.episode_starts[starts]
        mask = has_target & (trained | burn_in_state[:, None])
        actions = np.where(has_target, self.actions[rows], 0)
        return SequenceBatch(
            obs=self.obs[rows].reshape(*shape, self.window, *self.obs_shape),
            actions=actions.astype(np.int32).reshape(*shape, self.window),
            returns=returns.reshape(*shape, self.window),
            discounts=discounts.reshape(*shape, self.window),
            bootstrap=bootstrap.reshape(*shape, self.window),
            mask=mask.astype(np.float32).reshape(*shape, self.window),
            burn_in_state=burn_in_state.astype(np.float32).reshape(shape),
            carry=self.carries[self.slot_of_row[starts]].astype(np.float32).reshape(*shape, *self.carry_shape),
        )

    # ------------------------------------------------------------ checkpoints

    ARRAYS = ("obs", "actions", "rewards", "terminated", "kinds", "episode_starts", "carries", "sampleable", "slot_of_row", "row_of_slot")

    def state_dict(self) -> dict:
        """Rows, counters, the open episode's bookkeeping and the RNG, as arrays and ints (saved without pickle)."""
        state = {
            "capacity": self.capacity, "obs_shape": np.asarray(self.obs_shape, np.int64), "obs_dtype": self.obs_dtype.str,
            "carry_shape": np.asarray(self.carry_shape, np.int64), "sequence_length": self.sequence_length, "burn_in": self.burn_in,
            "carry_slots": self.carry_slots, "carry_dtype": self.carry_dtype.str,
            **{name: getattr(self, name) for name in self.ARRAYS},
            "next_slot": self.next_slot, "pos": self.pos, "size": self.size, "open": int(self.open), "episode_step": self.episode_step,
            "pending": [int(r) for r in self.pending], "rng": rng_to_words(self.rng),  # a JSON list: its length varies
        }
        if self.priorities is not None:
            state.update(self.priorities.state_dict())
        return state

    def _with_slots(self, state: dict) -> dict:
        """A state saved before stored states had slots (one per row, `carries[row]`): the same, in slots."""
        if "slot_of_row" in state:
            return state
        starts = np.zeros(self.capacity, bool)
        sampleable, pending = np.asarray(state["sampleable"]), state["pending"]
        if sampleable.shape == starts.shape:  # else the checks after this refuse the field
            starts |= sampleable.astype(bool)
        if isinstance(pending, (list, np.ndarray)):
            starts[[int(r) for r in pending if isinstance(r, (int, np.integer)) and 0 <= int(r) < self.capacity]] = True
        identity = np.where(starts, np.arange(self.capacity), -1).astype(np.int32)
        pos = state["pos"]
        # The next slot is the next row's: the slots after it belong to rows that are overwritten before the ring reaches them.
        try:
            next_slot = int(pos) if 0 <= int(pos) < self.capacity else 0
        except (TypeError, ValueError, OverflowError):
            next_slot = 0  # the checks after this refuse the field
        return {**state, "carry_slots": self.capacity, "carry_dtype": np.dtype(np.float32).str, "slot_of_row": identity,
                "row_of_slot": identity, "next_slot": next_slot}

    def load_state_dict(self, state: dict) -> None:
        """Take back `state_dict()`.

        Raises:
            ReplayMemoryError: another layout, counters out of range, or bookkeeping that does not fit the rows.
        """
        state = self._with_slots(state)
        layout = (int(state["capacity"]), tuple(int(d) for d in np.asarray(state["obs_shape"])), np.dtype(str(state["obs_dtype"])),
                  tuple(int(d) for d in np.asarray(state["carry_shape"])), int(state["sequence_length"]), int(state["burn_in"]),
                  int(state["carry_slots"]), np.dtype(str(state["carry_dtype"])))
        mine = (self.capacity, self.obs_shape, self.obs_dtype, self.carry_shape, self.sequence_length, self.burn_in, self.carry_slots,
                self.carry_dtype)
        if layout != mine:
            raise ReplayMemoryError(f"replay state is for capacity/obs_shape/obs_dtype/carry_shape/sequence_length/burn_in/carry_slots/"
                                    f"carry_dtype {layout}, this memory is {mine}")
        pos, size, episode_step, next_slot = int(state["pos"]), int(state["size"]), int(state["episode_step"]), int(state["next_slot"])
        pending = state["pending"]
        if not isinstance(pending, (list, np.ndarray)) or not all(isinstance(r, (int, np.integer)) and not isinstance(r, bool) for r in pending):
            raise ReplayMemoryError("replay field 'pending' must be a list of row numbers")
        pending = [int(r) for r in pending]
        if not (0 <= pos < self.capacity and 0 <= size <= self.capacity and episode_step >= 0 and 0 <= next_slot < self.carry_slots
                and all(0 <= r < self.capacity for r in pending)):
            raise ReplayMemoryError(f"replay state has pos={pos}, size={size}, episode_step={episode_step}, next_slot={next_slot} "
                                    "or pending rows out of range")
        arrays = {name: np.asarray(state[name]) for name in self.ARRAYS}
        for name, value in arrays.items():
            if value.shape != getattr(self, name).shape:
                raise ReplayMemoryError(f"replay field {name!r} has shape {value.shape}, expected {getattr(self, name).shape}")
        if not np.isin(arrays["kinds"], (STEP, LAST)).all():
            raise ReplayMemoryError("replay row kinds must be 0 (a step) or 1 (an episode's last observation)")
        slots, rows = arrays["slot_of_row"], arrays["row_of_slot"]
        if not ((-1 <= slots) & (slots < self.carry_slots)).all() or not ((-1 <= rows) & (rows < self.capacity)).all():
            raise ReplayMemoryError("replay fields 'slot_of_row' / 'row_of_slot' hold slots or rows out of range")
        starts = np.flatnonzero(arrays["sampleable"].astype(bool)).tolist() + pending
        if (slots[starts] < 0).any():
            raise ReplayMemoryError("replay state has sequence starts without a stored recurrent state")
        for name, value in arrays.items():
            getattr(self, name)[...] = value
        self.pos, self.size, self.episode_step, self.next_slot = pos, size, episode_step, next_slot
        self.open, self.pending = bool(int(state["open"])), deque(pending)
        self._count = int(self.sampleable.sum())
        self.rng = rng_from_words(np.asarray(state["rng"]))
        if self.priorities is not None:
            self.priorities.load_state_dict(state, self.sampleable)
        else:
            self._uniform.nodes[...] = 0.0
            self._uniform.nodes[self._uniform.leaf_count:self._uniform.leaf_count + self.capacity] = self.sampleable
            self._uniform.rebuild()
