"""A preallocated numpy ring buffer of transitions, sampled uniformly or by priority.

The layout follows Stable-Baselines3's `ReplayBuffer`: one array per field,
allocated once, written at `pos`, wrapping when full. Each row stores the
transition's own `next_obs` (the real final observation of a truncated
episode included), so a time limit never leaks a reset observation into a
bootstrap target. Every stored row can be sampled; with `prioritized=True`
each row written enters the sum tree at the largest priority seen so far.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from replay.base import Batch, PrioritizedSampling, Priorities, ReplayMemoryError, check_fits_in_memory, rng_from_words, rng_to_words
from replay.nstep import n_step_returns


class ReplayBuffer(PrioritizedSampling):
    """Replay over a fixed-capacity ring of transitions, uniform or prioritized (Schaul et al. 2016).

    Args:
        capacity: number of transitions kept (the oldest are overwritten).
        obs_shape: shape of one observation.
        obs_dtype: dtype observations are stored (and sampled) in.
        seed: seed of the sampling RNG.
        n_steps: steps summed into each sampled return (1 = one-step Q-learning).
        gamma: discount per env step used for the sums and `Batch.discounts`.
        prioritized: keep priorities for `sample_prioritized` (`sample`/`sample_many` stay uniform).
        priority_alpha, priority_eps: the priority exponent and the constant added to |TD error| (`Priorities`).
    """

    kind: ClassVar[str] = "uniform"

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: np.dtype | type = np.float32,
        seed: int | None = None,
        *,
        n_steps: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        priority_alpha: float = 0.6,
        priority_eps: float = 1e-6,
    ) -> None:
        if capacity < 1:
            raise ReplayMemoryError(f"replay capacity must be >= 1, got {capacity}")
        if n_steps < 1:
            raise ReplayMemoryError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        self.capacity = int(capacity)
        self.obs_shape = tuple(obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        check_fits_in_memory(self.expected_nbytes(capacity, obs_shape, obs_dtype, prioritized=prioritized), "The replay buffer")
        self.priorities = Priorities(capacity, priority_alpha, priority_eps) if prioritized else None
        self.obs = np.zeros((capacity, *obs_shape), dtype=self.obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=self.obs_dtype)
        self.actions = np.zeros(capacity, dtype=np.int32)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.links = np.zeros(capacity, dtype=np.bool_)  # row i + 1 holds the next step of row i's episode
        self.pos = 0  # next row to write
        self.size = 0  # rows holding data
        self.open = False  # the newest row's episode goes on (its next_obs is the next row's obs)
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def expected_nbytes(capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | type, *, prioritized: bool = False) -> int:
        """Bytes the buffer's arrays take, computed before allocating them."""
        obs_bytes = int(np.prod(obs_shape)) * np.dtype(obs_dtype).itemsize
        tree = Priorities.expected_nbytes(capacity) if prioritized else 0
        return capacity * (2 * obs_bytes + 4 + 4 + 4 + 1) + tree

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Exact bytes held by the stored arrays."""
        tree = self.priorities.nbytes if self.priorities is not None else 0
        return sum(a.nbytes for a in (self.obs, self.next_obs, self.actions, self.rewards, self.terminated, self.links)) + tree

    def add(self, obs, action: int, reward: float, next_obs, terminated: bool, *, truncated: bool = False, carry=None) -> None:
        """Store one transition. `terminated` must not include truncation; `carry` (a recurrent agent's state) is
        for the sequence memory (replay/sequences.py) and not stored here.

        `truncated` is accepted for the frame memory's sake; here every row
        keeps its own `next_obs`, so a truncated step needs nothing more.
        """
        i = self.pos
        prev = (i - 1) % self.capacity
        if self.open and np.array_equal(np.asarray(obs, self.obs_dtype), self.next_obs[prev]):
            self.links[prev] = True  # this step continues the newest row's episode
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = float(terminated)
        self.links[i] = False
        if self.priorities is not None:
            self.priorities.add(i)
        self.open = not (terminated or truncated)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_batch(self, obs, actions, rewards, next_obs, terminated) -> None:
        """Store one transition per env of a vector env (rows in env order).

        Rows of different envs interleave, so they are not linked: n-step
        sums over them stop after one step.
        """
        n = len(actions)
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        self.terminated[idx] = terminated
        self.links[idx] = False
        if self.priorities is not None:
            self.priorities.add(idx)
        self.open = False
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample_indices(self, n: int) -> np.ndarray:
        if self.size == 0:
            raise ReplayMemoryError("cannot sample from an empty replay buffer")
        return self.rng.integers(0, self.size, size=n)

    def sample(self, batch_size: int) -> Batch:
        """Draw `batch_size` transitions uniformly, with replacement."""
        return self._gather(self.sample_indices(batch_size))

    def sample_many(self, num_batches: int, batch_size: int) -> Batch:
        """Draw `num_batches` batches at once, stacked on a leading axis.

        One gather instead of `num_batches` keeps the per-update Python cost
        out of the learner's hot path.
        """
        idx = self.sample_indices(num_batches * batch_size).reshape(num_batches, batch_size)
        return self._gather(idx)

    def _sampleable(self) -> np.ndarray:
        """Per row, whether it can be sampled: every row written so far."""
        return np.arange(self.capacity) < self.size

    def _gather(self, idx: np.ndarray) -> Batch:
        returns, discounts, ended, last = n_step_returns(
            idx, self.n_steps, self.gamma, self.rewards, self.terminated, lambda s: self.links[s], self.capacity
        )
        return Batch(
            obs=self.obs[idx],
            actions=self.actions[idx],
            rewards=returns,
            next_obs=self.next_obs[last],
            terminated=ended,
            discounts=discounts,
        )

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, np.ndarray | int | str]:
        """Everything needed to resume, as numpy arrays, ints and strings (saved without pickle)."""
        state = {
            "capacity": self.capacity,
            "obs_shape": np.asarray(self.obs_shape, dtype=np.int64),
            "obs_dtype": self.obs_dtype.str,
            "obs": self.obs,
            "next_obs": self.next_obs,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminated": self.terminated,
            "links": self.links,
            "pos": self.pos,
            "size": self.size,
            "open": int(self.open),
            "rng": rng_to_words(self.rng),
        }
        if self.priorities is not None:
            state.update(self.priorities.state_dict())
        return state

    # Fields that checkpoints written before n-step returns lack; load_state_dict rebuilds them.
    REBUILT_IF_MISSING = ("links", "open")

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()` (or the arrays `np.load` gives back for it).

        Raises:
            ReplayMemoryError: when the state was made for another capacity,
                observation shape or dtype, or its counters are out of range.
        """
        layout = (int(state["capacity"]), tuple(int(d) for d in np.asarray(state["obs_shape"])), np.dtype(str(state["obs_dtype"])))
        if layout != (self.capacity, self.obs_shape, self.obs_dtype):
            raise ReplayMemoryError(
                f"replay state is for capacity/obs_shape/obs_dtype {layout}, this buffer is "
                f"{(self.capacity, self.obs_shape, self.obs_dtype)}"
            )
        pos, size = int(state["pos"]), int(state["size"])
        if not (0 <= pos < self.capacity and 0 <= size <= self.capacity):
            raise ReplayMemoryError(f"replay state has pos={pos}, size={size} for capacity {self.capacity}")
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[...] = state[name]
        self.pos, self.size = pos, size
        if "links" in state:
            self.links[...] = state["links"]
        else:  # saved before rows were linked: rebuild the links from the rows themselves
            self.links[...] = False
            rows = np.arange(size)
            rows = rows[rows != (pos - 1) % self.capacity]  # the newest row has no successor yet
            after = (rows + 1) % self.capacity
            same = (self.next_obs[rows] == self.obs[after]).reshape(len(rows), -1).all(axis=1)
            self.links[rows] = same & (self.terminated[rows] == 0)
        self.open = bool(int(state.get("open", 0)))
        self.rng = rng_from_words(np.asarray(state["rng"]))
        if self.priorities is not None:
            self.priorities.load_state_dict(state, self._sampleable())
