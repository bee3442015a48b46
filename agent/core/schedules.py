"""Schedules (exploration, step size, n-step horizon) as pure functions of a counter (env steps or episodes)."""

from __future__ import annotations

from collections.abc import Callable


def linear(start: float, end: float, duration: int) -> Callable[[int], float]:
    """A value that moves linearly from `start` to `end` over `duration` counts, then stays at `end`.

    Used by env step (the default, as in Mnih et al. 2015) or by episode (the
    chapter's `max(initial * (N - episode) / N, final)`). Counts below zero
    clamp to `start`.
    """
    if duration <= 0:
        return lambda t: end

    def value(t: int) -> float:
        fraction = min(max(t, 0) / duration, 1.0)
        return start + fraction * (end - start)

    return value


def chapter_episode_epsilon(start: float, end: float, episodes: int) -> Callable[[int], float]:
    """The chapter's schedule exactly: `max(start * (episodes - episode) / episodes, end)`.

    It differs from `linear` in that it decays towards 0 and is floored at
    `end`, so it reaches `end` slightly before `episodes`.
    """
    if episodes <= 0:
        return lambda episode: end
    return lambda episode: max(start * (episodes - max(episode, 0)) / episodes, end)


def n_steps_schedule(start: int, end: int | None, duration: int) -> Callable[[int], int]:
    """The n of n-step returns at an env step: `start` throughout, or linear from `start` to `end` over `duration`, rounded.

    Long returns carry a reward back fast while the values are poor; short ones
    are less biased by the older, worse policies in the replay once they are
    good. BBF (Schwarzer et al. 2023) anneals n from 10 to 3 for that reason.
    """
    if end is None:
        return lambda t: start
    value = linear(float(start), float(end), duration)
    return lambda t: int(round(value(t)))
