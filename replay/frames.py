"""A replay ring that stores each Atari frame once and rebuilds stacks at sample time.

A stacked observation `(84, 84, 4)` shares three of its four frames with the
next one, so storing `obs` and `next_obs` whole (as `ReplayBuffer` does)
keeps every frame eight times: 56 GB for a million transitions. Like
Dopamine's `circular_replay_buffer.py` we keep one ring of single frames,
one frame per env step, and gather the stacks when sampling: about 7 GB.

Layout: slot `i` holds one frame plus the transition that leaves the state
whose newest frame it is (`actions[i]`, `rewards[i]`, `terminated[i]`); the
next state's newest frame is slot `i + 1`. Per slot we also keep `back[i]`,
how many earlier frames of the same episode precede it (capped at
`stack - 1`), and `has_next[i]`, whether slot `i + 1` holds the next frame of
the same episode. The stack of slot `i` is the frames at
`i - min(k, back[i])` for `k = stack-1 .. 0`: frames from before the
episode's first frame are replaced by copies of it, exactly what the env's
`FrameStack` shows after a reset. The last frame of every episode gets a slot
of its own (the real final observation, which a truncated episode needs), so
a ring of `capacity` frames holds `capacity` minus the stored episodes'
count transitions.

A slot is sampleable when it has a next frame and none of the frames its two
stacks use has been overwritten by the ring's write position.

With `prioritized=True` the sum tree holds a positive priority exactly on the
sampleable slots (`_valid`), so prioritized draws skip the same slots as the
uniform rejection sampling: a slot enters the tree at the largest priority
seen so far when its next frame is written, leaves it when it is overwritten,
and, once the ring is full, leaves it when the write position comes within
`back[i]` slots of it (its stack would reach into overwritten frames). The
newest slot of an unfinished episode and the last slot of every episode (no
next frame) never enter it.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np

from replay.base import Batch, PrioritizedSampling, Priorities, ReplayMemoryError, check_fits_in_memory, rng_from_words, rng_to_words
from replay.nstep import n_step_returns


class FrameReplayBuffer(PrioritizedSampling):
    """Replay over a ring of single frames (Mnih et al. 2015; Dopamine's layout), uniform or prioritized
    (Schaul et al. 2016).

    Args:
        capacity: frames kept (one per env step, plus one per episode end).
        frame_shape: shape of one frame.
        stack: frames per observation (the last axis of `obs`).
        seed: seed of the sampling RNG.
        n_steps: steps summed into each sampled return (1 = one-step Q-learning).
        gamma: discount per env step used for the sums and `Batch.discounts`.
        prioritized: keep priorities for `sample_prioritized` (`sample`/`sample_many` stay uniform).
        priority_alpha, priority_eps: the priority exponent and the constant added to |TD error| (`Priorities`).

    Raises:
        ReplayMemoryError: for a capacity below `stack + 1` or one whose
            arrays would not fit in the free memory.
    """

    kind: ClassVar[str] = "frames"

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int] = (84, 84),
        stack: int = 4,
        seed: int | None = None,
        *,
        n_steps: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        priority_alpha: float = 0.6,
        priority_eps: float = 1e-6,
    ) -> None:
        if n_steps < 1:
            raise ReplayMemoryError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        if not 1 <= stack <= 255:
            raise ReplayMemoryError(f"stack must be in 1..255, got {stack}")
        if capacity < stack + 1:
            raise ReplayMemoryError(f"frame replay capacity must be >= stack + 1 = {stack + 1}, got {capacity}")
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.stack = int(stack)
        check_fits_in_memory(self.expected_nbytes(capacity, frame_shape, stack, prioritized=prioritized), "The frame replay buffer")
        self.priorities = Priorities(self.capacity, priority_alpha, priority_eps) if prioritized else None
        self.frames = np.zeros((self.capacity, *self.frame_shape), dtype=np.uint8)
        self.actions = np.zeros(self.capacity, dtype=np.int32)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.bool_)
        self.back = np.zeros(self.capacity, dtype=np.uint8)
        self.has_next = np.zeros(self.capacity, dtype=np.bool_)
        self.pos = 0  # next slot to write
        self.size = 0  # slots holding frames
        self.num_links = 0  # slots with has_next set
        self.open = False  # the newest slot is the current state of an unfinished episode
        # A copy of the last next_obs: one contiguous compare tells a continuing step from a new episode.
        self.last_next_obs = np.zeros((*self.frame_shape, self.stack), dtype=np.uint8)
        self.rng = np.random.default_rng(seed)

    # ------------------------------------------------------------ layout

    @staticmethod
    def expected_nbytes(capacity: int, frame_shape: tuple[int, int] = (84, 84), stack: int = 4, *, prioritized: bool = False) -> int:
        """Bytes of all arrays: per slot a frame, an int32 action, a float32 reward and 3 one-byte
        flags; once, the last `next_obs`; with priorities, the sum tree (16 bytes per slot, rounded
        up to a power of two slots)."""
        frame = int(np.prod(frame_shape))
        tree = Priorities.expected_nbytes(capacity) if prioritized else 0
        return int(capacity) * (frame + 4 + 4 + 1 + 1 + 1) + frame * stack + tree

    @property
    def nbytes(self) -> int:
        """Exact bytes held by the stored arrays."""
        arrays = (self.frames, self.actions, self.rewards, self.terminated, self.back, self.has_next, self.last_next_obs)
        tree = self.priorities.nbytes if self.priorities is not None else 0
        return sum(a.nbytes for a in arrays) + tree

    def __len__(self) -> int:
        """Transitions that can be sampled now."""
        if self.size < self.capacity:
            return self.num_links
        # Only the stack-1 oldest slots can have lost frames their stacks reach back to.
        seam = (self.pos + np.arange(self.stack - 1)) % self.capacity
        return self.num_links - int(np.count_nonzero(self.has_next[seam] & ~self._valid(seam)))

    # ------------------------------------------------------------ writing

    def _write(self, frame: np.ndarray, *, start: bool, link: bool) -> None:
        """Put one frame at `pos`; `start`: an episode's first frame; `link`: the previous slot's transition leads here."""
        i = self.pos
        if self.has_next[i]:
            self.num_links -= 1
        prev = (i - 1) % self.capacity
        self.frames[i] = frame
        self.has_next[i] = False
        self.terminated[i] = False
        self.actions[i] = 0
        self.rewards[i] = 0.0
        self.back[i] = 0 if start else min(int(self.back[prev]) + 1, self.stack - 1)
        if link:
            self.has_next[prev] = True
            self.num_links += 1
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        if self.priorities is not None:
            self._track_priorities(i, prev if link else None)

    def _track_priorities(self, written: int, linked: int | None) -> None:
        """Keep the tree's positive leaves on exactly the `_valid` slots after a write at `written`."""
        self.priorities.remove(written)  # overwritten: no next frame yet
        if linked is not None:
            self.priorities.add(linked)  # a complete transition (its stack is the newest, so it is whole)
        if self.size == self.capacity:
            for ahead in range(self.stack - 1):  # the slot `ahead` places past the oldest can reach back that far only
                slot = (self.pos + ahead) % self.capacity
                if self.back[slot] > ahead:
                    self.priorities.remove(slot)

    def _continues(self, obs: np.ndarray) -> bool:
        """Whether `obs` is exactly the newest stored state, so this step extends its episode."""
        return self.open and np.array_equal(obs, self.last_next_obs)

    def add(
        self,
        obs: np.ndarray,
        action: int,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        *,
        truncated: bool = False,
        episode_start: bool | None = None,
        carry: np.ndarray | None = None,
    ) -> None:
        """Store one env step given the full stacked observations `(H, W, stack)` (`carry` is not stored here).

        Only `next_obs[..., -1]` is written on a step that continues the
        episode. A new episode (detected, or forced with `episode_start=True`)
        first writes the frames of `obs` that its padding cannot rebuild: one
        frame after a reset (all copies of the first frame), more if the
        episode was joined midway.

        Args:
            terminated: the episode truly ended (no bootstrap). Must not
                include truncation.
            truncated: the episode was cut (time limit); `next_obs` is its
                real last observation and is kept, the target still bootstraps.
            episode_start: None detects the start: the previous step ended
                the episode, or `obs` differs from the previous `next_obs`.
                True forces one; False is checked and refused when `obs` is
                not the previous `next_obs`.

        Raises:
            ReplayMemoryError: for observations of another shape, or a
                refused `episode_start=False`.
        """
        obs = np.asarray(obs)
        next_obs = np.asarray(next_obs)
        expected = (*self.frame_shape, self.stack)
        if obs.shape != expected or next_obs.shape != expected:
            raise ReplayMemoryError(f"frame replay expects observations of shape {expected}, got {obs.shape} and {next_obs.shape}")
        if episode_start is None:
            episode_start = not self._continues(obs)
        elif not episode_start and not self._continues(obs):
            raise ReplayMemoryError("episode_start=False, but obs is not the previous step's next_obs")
        if episode_start:
            # Leading copies of the oldest frame are what the padding rebuilds; write the rest.
            same = (obs == obs[..., :1]).all(axis=(0, 1))  # per frame: a copy of the oldest one?
            first = 0
            while first + 1 < self.stack and same[first + 1]:
                first += 1
            for k in range(first, self.stack):
                self._write(obs[..., k], start=k == first, link=False)
        i = (self.pos - 1) % self.capacity
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = bool(terminated)
        self._write(next_obs[..., -1], start=False, link=True)
        self.last_next_obs[...] = next_obs
        self.open = not (terminated or truncated)

    # ------------------------------------------------------------ sampling

    def _stack_indices(self, idx: np.ndarray) -> np.ndarray:
        """Slots of the stack whose newest frame is at `idx`: shape (*idx.shape, stack), oldest first."""
        offsets = np.arange(self.stack - 1, -1, -1)  # stack-1, ..., 0
        back = np.minimum(offsets, self.back[idx][..., None])
        return (idx[..., None] - back) % self.capacity

    def _valid(self, idx: np.ndarray) -> np.ndarray:
        """Slots with a next frame whose stacks do not reach into overwritten slots."""
        ok = self.has_next[idx]
        if self.size == self.capacity:
            # Slots pos, pos+1, ... are the oldest; a stack may reach back only to pos.
            age_from_oldest = (idx - self.pos) % self.capacity
            ok &= age_from_oldest >= self.back[idx]
        return ok

    def sample_indices(self, n: int) -> np.ndarray:
        """`n` sampleable slots, uniformly with replacement (rejection sampling over the ring)."""
        if len(self) == 0:
            raise ReplayMemoryError("cannot sample from a frame replay buffer without a complete transition")
        idx = self.rng.integers(0, self.size, size=n)
        for _ in range(32):  # invalid slots are rare: one per episode end and a few at the ring's seam
            bad = ~self._valid(idx)
            if not bad.any():
                return idx
            idx[bad] = self.rng.integers(0, self.size, size=int(bad.sum()))
        bad = ~self._valid(idx)
        if bad.any():  # a nearly empty ring: draw from the explicit list instead
            candidates = np.flatnonzero(self._valid(np.arange(self.size)))
            idx[bad] = self.rng.choice(candidates, size=int(bad.sum()))
        return idx

    def sample(self, batch_size: int) -> Batch:
        """Draw `batch_size` transitions uniformly, with replacement."""
        return self._gather(self.sample_indices(batch_size))

    def sample_many(self, num_batches: int, batch_size: int) -> Batch:
        """Draw `num_batches` batches at once, stacked on a leading axis `(K, B, ...)`."""
        return self._gather(self.sample_indices(num_batches * batch_size).reshape(num_batches, batch_size))

    def _sampleable(self) -> np.ndarray:
        """Per slot, whether it can be sampled (`_valid`)."""
        return self._valid(np.arange(self.capacity))

    def _gather(self, idx: np.ndarray) -> Batch:
        returns, discounts, ended, last = n_step_returns(
            idx, self.n_steps, self.gamma, self.rewards, self.terminated,
            lambda s: self.has_next[(s + 1) % self.capacity], self.capacity,
        )
        if self.n_steps == 1:
            # The next stack is the stack shifted by one plus slot idx + 1 (the padding shifts
            # with it), so stack + 1 planes give both.
            flat = idx.reshape(-1)
            slots = np.concatenate([self._stack_indices(flat), ((flat + 1) % self.capacity)[:, None]], axis=1)
            planes = [self.frames[slots[:, k]] for k in range(self.stack + 1)]
            obs, next_obs = self._channels_last(planes[:-1], idx.shape), self._channels_last(planes[1:], idx.shape)
        else:
            obs, next_obs = self._stacks(idx), self._stacks((last + 1) % self.capacity)
        return Batch(
            obs=obs,
            actions=self.actions[idx],
            rewards=returns,
            next_obs=next_obs,
            terminated=ended,
            discounts=discounts,
        )

    def _stacks(self, idx: np.ndarray) -> np.ndarray:
        """uint8 `(*idx.shape, H, W, stack)` channels-last, as the env hands them out."""
        slots = self._stack_indices(idx.reshape(-1))
        return self._channels_last([self.frames[slots[:, k]] for k in range(self.stack)], idx.shape)

    def _channels_last(self, planes: list[np.ndarray], batch_shape: tuple[int, ...]) -> np.ndarray:
        """Interleave `stack` planes of shape (N, H, W) into (*batch_shape, H, W, stack)."""
        h, w = self.frame_shape
        if self.stack == 1:
            return planes[0].reshape(*batch_shape, h, w, 1)
        # cv2.merge interleaves about 4x faster than numpy's strided writes
        # (measured with bench/replay_memory.py); each plane is passed as one tall image.
        merged = cv2.merge([p.reshape(-1, w) for p in planes])
        return merged.reshape(*batch_shape, h, w, self.stack)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Everything needed to resume, as numpy arrays and ints (`np.savez` needs no pickle)."""
        state = {
            "capacity": self.capacity,
            "stack": self.stack,
            "frame_shape": np.asarray(self.frame_shape, dtype=np.int64),
            "frames": self.frames,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminated": self.terminated,
            "back": self.back,
            "has_next": self.has_next,
            "pos": self.pos,
            "size": self.size,
            "num_links": self.num_links,
            "open": int(self.open),
            "rng": rng_to_words(self.rng),
        }
        if self.priorities is not None:
            state.update(self.priorities.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore from `state_dict()` (or the arrays `np.load` gives back for it).

        Raises:
            ReplayMemoryError: when the state was made for another capacity,
                frame shape or stack, or its counters contradict each other or
                the arrays (checked before anything changes).
        """
        layout = (int(state["capacity"]), tuple(int(d) for d in np.asarray(state["frame_shape"])), int(state["stack"]))
        if layout != (self.capacity, self.frame_shape, self.stack):
            raise ReplayMemoryError(
                f"replay state is for capacity/frame_shape/stack {layout}, this buffer is "
                f"{(self.capacity, self.frame_shape, self.stack)}"
            )
        pos, size, num_links = int(state["pos"]), int(state["size"]), int(state["num_links"])
        back, has_next = np.asarray(state["back"]), np.asarray(state["has_next"])
        problems = [
            f"pos {pos} outside 0..{self.capacity - 1}" if not 0 <= pos < self.capacity else None,
            f"size {size} outside 0..{self.capacity}" if not 0 <= size <= self.capacity else None,
            f"pos {pos} with size {size} (a ring that is not full fills from slot 0)" if size < self.capacity and pos != size % self.capacity else None,
            f"num_links {num_links} where has_next marks {int(np.count_nonzero(has_next))}" if num_links != int(np.count_nonzero(has_next)) else None,
            f"back holds {int(back.max())}, more than stack - 1 = {self.stack - 1}" if back.size and int(back.max()) > self.stack - 1 else None,
        ]
        problems += [f"{name} has shape {np.shape(state[name])}, this buffer's is {getattr(self, name).shape}"
                     for name in ("frames", "actions", "rewards", "terminated", "back", "has_next") if np.shape(state[name]) != getattr(self, name).shape]
        if any(problems):
            raise ReplayMemoryError("replay state is inconsistent: " + "; ".join(p for p in problems if p))
        for name in ("frames", "actions", "rewards", "terminated", "back", "has_next"):
            getattr(self, name)[...] = state[name]
        self.pos = pos
        self.size = size
        self.num_links = num_links
        self.open = bool(int(state["open"]))
        if self.size:  # rebuilt from the ring rather than saved twice
            self.last_next_obs[...] = self._stacks(np.array([(self.pos - 1) % self.capacity]))[0]
        self.rng = rng_from_words(np.asarray(state["rng"]))
        if self.priorities is not None:
            self.priorities.load_state_dict(state, self._sampleable())
