"""What every replay memory shares: the batch type, the interface, errors, the RNG codec,
and prioritized sampling (a sum tree of priorities).

`ReplayBuffer` (uniform.py) and `FrameReplayBuffer` (frames.py) both follow
`ReplayMemory`; callers (the training loop, checkpoints, benches) program
against it and tell the memories apart by `kind`, never by `isinstance`.
Both memories import this module and nothing imports back.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import numpy as np

RNG_WORDS = 6  # PCG64 state as uint64 words: state hi/lo, inc hi/lo, has_uint32, uinteger


class ReplayMemoryError(ValueError):
    """The requested replay memory cannot be built (bad size, no memory)."""


class Batch(NamedTuple):
    """A batch of transitions; dtypes are those of the stored data.

    Attributes:
        obs: observations, shape `(B, *obs_shape)`, the env's dtype.
        actions: int32 `(B,)`.
        rewards: float32 `(B,)`.
        next_obs: observations after the action, like `obs`.
        terminated: float32 `(B,)`, 1.0 where the episode truly ended, so the
            target does not bootstrap. A truncated (time-limit) step is 0.0.
        discounts: float32 `(B,)`, the factor of the bootstrap value:
            `gamma^m` for an m-step return, 0.0 after a terminal step. None
            (a hand-made batch) means one-step: `gamma * (1 - terminated)`.

    With `n_steps > 1`, `rewards` are the discounted n-step sums, `next_obs`
    is the state n steps on, and `terminated` says the episode ended within them.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    discounts: np.ndarray | None = None


class PrioritizedBatch(NamedTuple):
    """What `sample_prioritized` draws: the batches, their importance-sampling weights, and where they came from.

    Attributes:
        batch: the transitions, stacked `(K, B, ...)` as `sample_many` gives them.
        weights: float32 `(K, B)`, `(N P(i))^-beta` divided by the largest of each batch (so at most 1).
        indices: int64 `(K, B)`, the slots drawn, to hand back to `update_priorities` with their TD errors.
    """

    batch: Batch
    weights: np.ndarray
    indices: np.ndarray


def available_memory_bytes() -> int | None:
    """Memory the kernel says a new allocation can still get, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """Refuse up front when `nbytes` would not fit in the machine's free memory.

    Raises:
        ReplayMemoryError: naming the sizes and how to make the buffer fit.
    """
    available = available_memory_bytes()
    if available is not None and nbytes > 0.9 * available:
        raise ReplayMemoryError(
            f"{what} needs {nbytes / 2**30:.2f} GiB but only {available / 2**30:.2f} GiB "
            "of memory is available; lower replay_capacity (e.g. --set replay_capacity=...)"
        )


@runtime_checkable
class ReplayMemory(Protocol):
    """The interface the training loop and checkpoints use.

    `kind` names the memory's file format in checkpoints ("uniform",
    "frames", "sequences"); `add`'s `carry` is a recurrent agent's state before
    `obs`, stored by the sequence memory only; `state_dict()` returns numpy arrays, ints and strings only
    (saved with `np.savez`, no pickle) and `load_state_dict` takes them back,
    refusing another layout with `ReplayMemoryError`.
    """

    kind: ClassVar[str]
    capacity: int
    rng: np.random.Generator
    priorities: Priorities | None  # None: built without prioritized replay

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def add(self, obs, action: int, reward: float, next_obs, terminated: bool, *, truncated: bool = False, carry=None) -> None: ...

    def sample(self, batch_size: int) -> Batch: ...

    def sample_many(self, num_batches: int, batch_size: int) -> Batch: ...

    def sample_prioritized(self, num_batches: int, batch_size: int, beta: float, deferred: bool = False) -> PrioritizedBatch: ...

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None: ...

    def cancel_deferred_priorities(self) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def rng_to_words(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's exact state as 6 uint64 words (checkpoints hold no pickle)."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise ReplayMemoryError(f"cannot save a {s['bit_generator']} generator")
    mask = (1 << 64) - 1
    st, inc = s["state"]["state"], s["state"]["inc"]
    return np.array([st >> 64, st & mask, inc >> 64, inc & mask, s["has_uint32"], s["uinteger"]], dtype=np.uint64)


def rng_from_words(words: np.ndarray) -> np.random.Generator:
    """The generator `rng_to_words` saved, continuing where it stopped."""
    w = [int(x) for x in words]
    if len(w) != RNG_WORDS:
        raise ReplayMemoryError(f"replay RNG state needs {RNG_WORDS} words, got {len(w)}")
    if not all(0 <= x < 2**64 for x in w) or w[4] not in (0, 1) or w[5] >= 2**32:
        raise ReplayMemoryError("replay RNG state is malformed (64-bit words; has_uint32 0 or 1; uinteger a 32-bit word)")
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return np.random.Generator(bg)


# ---------------------------------------------------------------- prioritized replay (Schaul et al. 2016)


def _leaf_count(capacity: int) -> int:
    """The capacity rounded up to a power of two, so that every leaf of the tree is at the same depth."""
    return 1 << max(int(capacity) - 1, 0).bit_length()


class SumTree:
    """Sums of non-negative leaf values in a complete binary tree held in one float64 array.

    Layout (the sum tree of Schaul et al. 2016, Appendix B.2.1, as a heap):
    node 1 is the root, node `k` has the children `2k` and `2k + 1`, and the
    leaves are nodes `leaf_count .. 2 * leaf_count - 1`: leaf `i` holds slot
    `i`'s value, the padding leaves past the capacity hold 0, node 0 is
    unused. Every inner node is recomputed as the sum of its two children,
    never shifted by a difference, so no rounding drift builds up, a node is 0
    exactly when all its leaves are, and the inner nodes are a function of the
    leaves alone (`rebuild` gives back the same bits).

    An update or a search walks one root-to-leaf path per slot (`depth` =
    log2(leaf_count) steps), vectorised over all the slots of a batch.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ReplayMemoryError(f"a sum tree needs a capacity >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.leaf_count = _leaf_count(capacity)
        self.depth = self.leaf_count.bit_length() - 1
        self.nodes = np.zeros(2 * self.leaf_count, np.float64)
        self._siblings = self.nodes.reshape(-1, 2)  # row k: nodes 2k and 2k + 1, the children of node k
        self._cells = memoryview(self.nodes)  # Python floats in and out: 2x faster than numpy scalars for one path

    @staticmethod
    def expected_nbytes(capacity: int) -> int:
        """Bytes of the node array: 2 float64 per leaf, the leaves padded to a power of two."""
        return 2 * _leaf_count(capacity) * 8

    @property
    def total(self) -> float:
        """The sum of all leaves (the root)."""
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        """The slots' values: a read-only view of the tree (change them with `set`)."""
        view = self.nodes[self.leaf_count:self.leaf_count + self.capacity]
        view.flags.writeable = False
        return view

    def value(self, slot: int) -> float:
        """One slot's value."""
        return self._cells[self.leaf_count + slot]

    def set(self, slots, values) -> None:
        """Set the leaves of `slots` to `values` (>= 0, or one value for all) and every sum above them.

        For a slot given twice, the last value wins.
        """
        slots = np.asarray(slots, np.int64).reshape(-1)
        values = np.broadcast_to(np.asarray(values, np.float64), slots.shape)
        if slots.size > 1:  # keep each slot's last value: np.unique gives the first index of each in the reversed array
            slots, first = np.unique(slots[::-1], return_index=True)
            values = values[::-1][first]
        node = slots + self.leaf_count
        self.nodes[node] = values
        for _ in range(self.depth):
            node >>= 1  # a parent listed twice gets the same sum twice
            children = self._siblings[node]
            self.nodes[node] = children[:, 0] + children[:, 1]

    def set_one(self, slot: int, value: float) -> None:
        """`set` for one slot, in Python floats: the same sums, without a numpy call per level."""
        cells = self._cells
        k = self.leaf_count + slot
        cells[k] = value
        k >>= 1
        while k:
            cells[k] = cells[2 * k] + cells[2 * k + 1]
            k >>= 1

    def find(self, mass) -> np.ndarray:
        """For each prefix sum in `mass`, the slot it falls in: the first `i` with `leaves[:i + 1].sum() > mass`.

        Only slots with a positive value are ever found; a mass at or past the
        total ends in the last positive leaf. The tree must not be empty.
        """
        mass = np.array(mass, np.float64).reshape(-1)
        slots = self._descend(mass.copy(), skip_empty=False)
        stray = self.nodes[slots + self.leaf_count] == 0
        if stray.any():  # a mass at the total, or rounding past a subtree's sum, ran into a zero leaf: walk again
            slots[stray] = self._descend(mass[stray], skip_empty=True)
        return slots

    def _descend(self, mass: np.ndarray, skip_empty: bool) -> np.ndarray:
        """Walk down from the root: right (less the left sum) where the mass reaches the left child's sum, else left.

        With `skip_empty` an empty right subtree is never entered, so the walk
        ends on a positive leaf; it costs a third more, so `find` uses it only
        for the rare walks that end on a zero leaf without it.
        """
        node = np.ones(mass.shape, np.int64)
        for _ in range(self.depth):
            left_child = 2 * node
            left = self.nodes[left_child]
            go_right = mass >= left
            if skip_empty:
                go_right &= self.nodes[left_child + 1] > 0
            np.subtract(mass, left, out=mass, where=go_right)
            node = left_child + go_right
        return node - self.leaf_count

    def rebuild(self) -> None:
        """Recompute every inner node from the leaves, bottom level first (after the leaves were loaded)."""
        n = self.leaf_count
        while n > 1:
            self.nodes[n // 2:n] = self.nodes[n:2 * n:2] + self.nodes[n + 1:2 * n:2]
            n //= 2


def importance_weights(probs: np.ndarray, population: int, beta: float) -> np.ndarray:
    """Importance-sampling weights `(N P(i))^-beta`, divided by the largest of each batch (the last axis).

    The weights undo the bias of non-uniform sampling as beta goes to 1; the
    division makes them only ever scale an update down (Schaul et al. 2016,
    section 3.4). Normalising by the batch's largest weight rather than the
    memory's follows Dopamine's prioritized replay and needs no min-tree.

    Args:
        probs: the sampling probabilities `P(i)` of the drawn transitions, `(..., B)`.
        population: `N`, the transitions that could have been drawn.
        beta: 0 (no correction) to 1 (full correction).

    Returns:
        float32, the shape of `probs`.
    """
    w = (population * np.asarray(probs, np.float64)) ** -float(beta)
    return (w / w.max(axis=-1, keepdims=True)).astype(np.float32)


class Priorities:
    """Proportional prioritization (Schaul et al. 2016) over a replay memory's slots.

    Slot `i` is drawn with probability `P(i) = p_i^alpha / sum_k p_k^alpha`.
    Its priority `p_i` is `|TD error| + eps` from the last update that used
    it, and the largest priority seen so far when it is stored (the paper's
    `p_t = max_{i<t} p_i`, 1 before any update), so that every new transition
    is likely drawn soon. A slot that cannot be sampled holds 0 in the tree:
    its memory calls `add` when a slot becomes sampleable and `remove` when
    one stops being so.

    Args:
        capacity: slots of the memory.
        alpha: priority exponent in [0, 1]; 0 samples uniformly.
        eps: added to |TD error| (> 0), so that no sampleable transition gets probability 0.

    Raises:
        ReplayMemoryError: for an alpha or eps out of range.
    """

    def __init__(self, capacity: int, alpha: float = 0.6, eps: float = 1e-6) -> None:
        if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ReplayMemoryError(f"priority_alpha must be in [0, 1], got {alpha}")
        if not (math.isfinite(eps) and eps > 0.0):
            raise ReplayMemoryError(f"priority_eps must be > 0, got {eps}")
        self.tree = SumTree(capacity)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.max_priority = 1.0  # the largest |TD error| + eps seen so far
        self._written: list[np.ndarray] | None = None  # slots added or removed since a deferred draw (`defer_update`)

    @staticmethod
    def expected_nbytes(capacity: int) -> int:
        return SumTree.expected_nbytes(capacity)

    @property
    def nbytes(self) -> int:
        return self.tree.nodes.nbytes

    def add(self, slots: int | np.ndarray) -> None:
        """Slots that now hold a sampleable transition (one slot, or an array): the largest priority seen so far."""
        if self._written is not None:
            self._written.append(np.asarray(slots, np.int64).reshape(-1))
        if isinstance(slots, (int, np.integer)):
            self.tree.set_one(int(slots), self.max_priority**self.alpha)
        else:
            self.tree.set(slots, self.max_priority**self.alpha)

    def remove(self, slot: int) -> None:
        """A slot that can no longer be sampled: probability 0 (one at 0 already is left alone)."""
        if self._written is not None:
            self._written.append(np.asarray([slot], np.int64))
        if self.tree.value(slot) > 0:
            self.tree.set_one(slot, 0.0)

    def defer_update(self) -> None:
        """The next `update` belongs to the draw just made, though slots will be added and removed before it comes
        (an overlapped learner call, agent/run/learner.py): it then lands as it would have right after the draw.

        So the slots written in between are logged; `update` leaves their TD errors out (a removed or
        overwritten slot no longer holds the transition that was learned from) and gives the ones that are
        sampleable the largest priority as it stands after the update, which is what `add` would have given
        them had the update come first.

        Raises:
            ReplayMemoryError: a deferred update is already waiting.
        """
        if self._written is not None:
            raise ReplayMemoryError("a deferred priority update is already waiting: update_priorities first")
        self._written = []

    def sample(self, rng: np.random.Generator, num_batches: int, batch_size: int, beta: float,
               population: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw `(slots, weights)`, both `(num_batches, batch_size)`.

        Each batch is stratified (Schaul et al. 2016, Appendix B.2.1): the
        total priority is cut into `batch_size` equal ranges and one prefix
        sum is drawn uniformly in each, so a batch spreads over the memory.

        Raises:
            ReplayMemoryError: when no slot can be sampled.
        """
        total = self.tree.total
        if not total > 0:
            raise ReplayMemoryError("cannot sample: no transition has a priority")
        mass = (np.arange(batch_size) + rng.random((num_batches, batch_size))) * (total / batch_size)
        slots = self.tree.find(mass).reshape(num_batches, batch_size)
        return slots, importance_weights(self.tree.leaves[slots] / total, population, beta)

    def update(self, slots, td_errors) -> None:
        """Priorities `|TD error| + eps` for the slots learned from.

        A slot given twice keeps its last error. Slots that can no longer be
        sampled (overwritten since they were drawn) stay at 0.

        Raises:
            ReplayMemoryError: for TD errors that are not finite or not one per slot.
        """
        slots = np.asarray(slots, np.int64).reshape(-1)
        p = np.abs(np.asarray(td_errors, np.float64).reshape(-1)) + self.eps
        if p.shape != slots.shape:
            raise ReplayMemoryError(f"update_priorities needs one TD error per index, got {p.size} for {slots.size}")
        if not np.isfinite(p).all():
            raise ReplayMemoryError("update_priorities got a TD error that is NaN or infinite")
        written, self._written = self._written, None
        live = self.tree.leaves[slots] > 0
        if p.size:
            self.max_priority = max(self.max_priority, float(p.max()))
        if written is None:
            self.tree.set(slots[live], p[live] ** self.alpha)
            return
        written = np.unique(np.concatenate(written)) if written else np.zeros(0, np.int64)
        unchanged = live & ~np.isin(slots, written)
        self.tree.set(slots[unchanged], p[unchanged] ** self.alpha)
        added = written[self.tree.leaves[written] > 0]  # sampleable now: their last write was an `add`
        self.tree.set(added, self.max_priority**self.alpha)

    def cancel_deferred(self) -> None:
        """The deferred update will not come (its learner call failed): stop logging writes."""
        self._written = None

    def state_dict(self) -> dict[str, np.ndarray | float]:
        """The leaves (`p^alpha` per slot; the sums are rebuilt from them bit for bit) and the largest priority."""
        if self._written is not None:
            raise ReplayMemoryError("a deferred priority update is still waiting: update_priorities before saving")
        return {"priorities": self.tree.leaves, "max_priority": self.max_priority}

    def load_state_dict(self, state: dict, sampleable: np.ndarray) -> None:
        """Take back `state_dict()`, checked against which slots the memory can sample (`sampleable`, bool per slot).

        Raises:
            ReplayMemoryError: for priorities of another size, negative or not
                finite, positive on a slot that cannot be sampled or 0 on one
                that can, or a largest priority that is not a positive number.
        """
        leaves = np.asarray(state["priorities"], np.float64)
        if leaves.shape != (self.tree.capacity,):
            raise ReplayMemoryError(f"replay priorities hold {leaves.shape} values, this memory has {self.tree.capacity} slots")
        if not (np.isfinite(leaves).all() and (leaves >= 0).all()):
            raise ReplayMemoryError("replay priorities must be finite and >= 0")
        if not np.array_equal(leaves > 0, sampleable):
            raise ReplayMemoryError("replay priorities do not match the stored transitions (a priority on a slot that cannot be sampled, or none on one that can)")
        max_priority = float(state["max_priority"])
        if not (math.isfinite(max_priority) and max_priority > 0):
            raise ReplayMemoryError(f"replay max_priority must be a positive number, got {max_priority}")
        tree = self.tree
        tree.nodes[tree.leaf_count:tree.leaf_count + tree.capacity] = leaves
        tree.rebuild()
        self.max_priority = max_priority


class PrioritizedSampling:
    """`sample_prioritized` and `update_priorities` for a memory that keeps `priorities` in step with which of its
    slots can be sampled (`priorities` is None for a memory built without them). The memory provides `__len__`
    (the transitions that can be sampled) and `_gather(slots) -> Batch`."""

    priorities: Priorities | None
    rng: np.random.Generator

    def sample_prioritized(self, num_batches: int, batch_size: int, beta: float, deferred: bool = False) -> PrioritizedBatch:
        """Draw `num_batches` batches `(K, B, ...)` in proportion to the priorities, with their weights and slots.

        Args:
            beta: importance-sampling exponent, 0 (no correction) to 1 (full correction).
            deferred: transitions will be added before this draw's `update_priorities` comes (an overlapped
                learner call); it then lands as if it had come first (`Priorities.defer_update`).

        Raises:
            ReplayMemoryError: the memory was built without priorities, or holds no complete transition.
        """
        if self.priorities is None:
            raise ReplayMemoryError("this replay memory was built without priorities (prioritized=False)")
        population = len(self)
        if population == 0:
            raise ReplayMemoryError("cannot sample from a replay memory without a complete transition")
        slots, weights = self.priorities.sample(self.rng, num_batches, batch_size, beta, population)
        if deferred:
            self.priorities.defer_update()
        return PrioritizedBatch(self._gather(slots), weights, slots)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """New priorities from the |TD errors| of the transitions drawn at `indices` (`PrioritizedBatch.indices`)."""
        if self.priorities is None:
            raise ReplayMemoryError("this replay memory was built without priorities (prioritized=False)")
        self.priorities.update(indices, td_errors)

    def cancel_deferred_priorities(self) -> None:
        """A deferred draw's update will not come (its learner call failed); the priorities stay as they are."""
        if self.priorities is not None:
            self.priorities.cancel_deferred()
