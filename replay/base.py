"""What every replay memory shares: the batch type, the interface, errors, the RNG codec.

`ReplayBuffer` (uniform.py) and `FrameReplayBuffer` (frames.py) both follow
`ReplayMemory`; callers (the training loop, checkpoints, benches) program
against it and tell the memories apart by `kind`, never by `isinstance`.
Both memories import this module and nothing imports back.
"""

from __future__ import annotations

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
    "frames"); `state_dict()` returns numpy arrays, ints and strings only
    (saved with `np.savez`, no pickle) and `load_state_dict` takes them back,
    refusing another layout with `ReplayMemoryError`.
    """

    kind: ClassVar[str]
    capacity: int
    rng: np.random.Generator

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def add(self, obs, action: int, reward: float, next_obs, terminated: bool, *, truncated: bool = False) -> None: ...

    def sample(self, batch_size: int) -> Batch: ...

    def sample_many(self, num_batches: int, batch_size: int) -> Batch: ...

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
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return np.random.Generator(bg)
