"""n-step returns gathered at sample time (Sutton 1988; Mnih et al. 2016; Hessel et al. 2018).

Both replay memories keep one transition per env step, in the order the env
produced them, and know whether a stored transition is followed by the next
one of the same episode. So an n-step target can be built when sampling,
without storing anything extra:

    R = r_t + gamma r_{t+1} + ... + gamma^(m-1) r_{t+m-1},   y = R + gamma^m max_a Q(s_{t+m}, a)

with `m <= n`: the sum stops early at a terminal step (no bootstrap), at a
truncated episode's last step (bootstrap from its real last observation), and
at the newest stored step (the return is simply shorter there). Storing the
one-step data keeps `n_steps` a sampling choice, like Dopamine's replay.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def n_step_returns(
    idx: np.ndarray,
    n_steps: int,
    gamma: float,
    rewards: np.ndarray,
    terminated: np.ndarray,
    followed: Callable[[np.ndarray], np.ndarray],
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Discounted n-step sums for the transitions at slots `idx`.

    Args:
        idx: slots of the first transitions (any shape).
        rewards, terminated: the memory's per-slot arrays.
        followed: for slots `s`, whether slot `s + 1` holds the next
            transition of the same episode.
        capacity: ring size (slots wrap).

    Returns:
        `(returns, discounts, terminated, last)`: float32 sums; float32
        factors for the bootstrap value (`gamma^m`, 0 after a terminal step);
        float32 1.0 where the episode ended within the window; and the slot
        of the window's last transition, whose next state is the bootstrap state.
    """
    shape = np.shape(idx)
    cur = np.asarray(idx).reshape(-1).copy()
    total = np.zeros(cur.shape, np.float64)
    scale = np.ones(cur.shape, np.float64)  # gamma^k for step k of the window
    last = cur.copy()
    ended = np.zeros(cur.shape, np.bool_)
    alive = np.ones(cur.shape, np.bool_)
    for k in range(n_steps):
        total[alive] += scale[alive] * rewards[cur[alive]]
        last[alive] = cur[alive]
        scale[alive] *= gamma
        stop = terminated[cur].astype(np.bool_)
        ended |= alive & stop
        if k + 1 == n_steps:
            break
        alive &= ~stop & followed(cur)
        if not alive.any():
            break
        cur = np.where(alive, (cur + 1) % capacity, cur)
    discounts = np.where(ended, 0.0, scale)
    as_f32 = lambda a: a.astype(np.float32).reshape(shape)  # noqa: E731
    return as_f32(total), as_f32(discounts), as_f32(ended), last.reshape(shape)
