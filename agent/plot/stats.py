"""Statistics over seeds: mean, median, interquartile mean (IQM) with a stratified bootstrap confidence interval, probability of improvement.

The definitions are those of Agarwal et al. 2021, "Deep Reinforcement Learning
at the Edge of the Statistical Precipice" (NeurIPS), as implemented by their
`rliable` library (`rliable/metrics.py`, `rliable/library.py`), written here in
numpy alone so that no scipy/arch dependency comes with them:

- scores are a matrix of `runs x tasks` (a 1-D array is one task: one score per run);
- IQM: the 25% trimmed mean of all runs and tasks pooled, as
  `scipy.stats.trim_mean(scores, proportiontocut=0.25, axis=None)`: sort the
  n scores, drop `int(0.25 * n)` from each end, average the rest;
- stratified bootstrap: each resample draws runs with replacement
  independently within each task (the tasks are kept); the interval is the
  percentile one, the (1 - c)/2 and (1 + c)/2 quantiles of the resampled statistic;
- probability of improvement P(X > Y): per task, the Mann-Whitney U statistic
  over all pairs, mean of 1[x > y] + 0.5 * 1[x == y], then averaged over tasks.

The bootstrap draws from a fixed seed (`SEED`), so a figure computed twice from
the same scores gives the same interval.

    >>> from agent import stats
    >>> s = stats.summarize([500, 500, 443.7, 491.2, 500])
    >>> s.iqm, s.median
    (497.06666666666666, 500.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numpy.typing import ArrayLike

REPS = 2_000
"""Bootstrap resamples by default: rliable's default for performance profiles; a 10-seed IQM interval takes milliseconds."""
SEED = 0
"""Seed of the bootstrap's generator, so intervals reproduce."""
CONFIDENCE = 0.95


def as_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """The scores as a float `runs x tasks` matrix (a 1-D sequence is one task).

    Raises:
        ValueError: for no runs, no tasks, more than 2 dimensions, or a NaN/infinite score.
    """
    try:
        array = np.array(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers: {e}") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be 1-D (runs) or 2-D (runs x tasks), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one run of at least one task, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; drop or fill them first")
    return array


def mean(scores: ArrayLike) -> float:
    """Mean over tasks of each task's mean over runs (rliable `aggregate_mean`; Agarwal et al. 2021)."""
    return float(np.mean(np.mean(as_scores(scores), axis=0)))


def median(scores: ArrayLike) -> float:
    """Median: for one task, the median over runs; for several, the median over tasks of each task's mean (rliable `aggregate_median`).

    rliable's definition reduces each task to its mean first, so for a single
    task it would equal the mean; the median over runs is the figure the
    project's benches report per seed, hence the one-task case.
    """
    array = as_scores(scores)
    if array.shape[1] == 1:
        return float(np.median(array[:, 0]))
    return float(np.median(np.mean(array, axis=0)))


def _iqm_rows(flat: np.ndarray) -> np.ndarray:
    """IQM of each row of a `k x n` matrix: sort, drop int(n / 4) from each end, average the rest (scipy's trim_mean at 0.25)."""
    n = flat.shape[1]
    cut = int(0.25 * n)
    return np.sort(flat, axis=1)[:, cut:n - cut].mean(axis=1)


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores pooled over runs and tasks (rliable `aggregate_iqm`; Agarwal et al. 2021).

    Exactly `scipy.stats.trim_mean(scores, 0.25, axis=None)`: with n scores,
    `int(n / 4)` are dropped from each end, so up to 3 scores it is the mean.
    """
    return float(_iqm_rows(as_scores(scores).reshape(1, -1))[0])


def _resample(array: np.ndarray, reps: int, seed: int) -> np.ndarray:
    """`reps x runs x tasks` stratified resamples: runs drawn with replacement within each task (rliable `StratifiedBootstrap`)."""
    runs, tasks = array.shape
    rows = np.random.default_rng(seed).integers(0, runs, size=(reps, runs, tasks))
    return array[rows, np.arange(tasks)]


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _check(reps: int, confidence: float) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")


def bootstrap_ci(scores: ArrayLike, statistic: Callable[[np.ndarray], float], *, reps: int = REPS, confidence: float = CONFIDENCE,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile confidence interval of `statistic` under the stratified bootstrap over runs (Agarwal et al. 2021; rliable `get_interval_estimates`).

    Args:
        scores: `runs x tasks` (or 1-D: one task).
        statistic: takes a `runs x tasks` matrix, returns a number (e.g. `mean`, `median`, `iqm`).
        reps: bootstrap resamples.
        confidence: coverage of the interval.
        seed: the generator's seed; the same seed gives the same interval.

    Returns:
        (low, high).
    """
    _check(reps, confidence)
    values = np.array([statistic(sample) for sample in _resample(as_scores(scores), reps, seed)])
    return _percentile_interval(values, confidence)


def iqm_ci(scores: ArrayLike, *, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float]:
    """Stratified bootstrap percentile interval of the IQM; `bootstrap_ci(scores, iqm, ...)` computed in one vectorised pass."""
    _check(reps, confidence)
    samples = _resample(as_scores(scores), reps, seed)
    return _percentile_interval(_iqm_rows(samples.reshape(reps, -1)), confidence)


def probability_of_improvement(scores_x: ArrayLike, scores_y: ArrayLike) -> float:
    """P(X > Y): the chance that a run of X beats a run of Y on the same task, averaged over tasks (Agarwal et al. 2021; rliable `probability_of_improvement`).

    Per task, the Mann-Whitney U statistic over all `runs_x * runs_y` pairs
    divided by their number: a win counts 1, a tie 1/2. X and Y may have
    different numbers of runs, not of tasks.

    Raises:
        ValueError: for bad scores or a different number of tasks.
    """
    x, y = as_scores(scores_x, "scores_x"), as_scores(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"scores_x has {x.shape[1]} task(s) and scores_y {y.shape[1]}; both need the same tasks")
    pairs_x, pairs_y = x[:, None, :], y[None, :, :]
    per_task = np.mean((pairs_x > pairs_y) + 0.5 * (pairs_x == pairs_y), axis=(0, 1))
    return float(np.mean(per_task))


@dataclass(frozen=True)
class Summary:
    """A set of runs in the figures Agarwal et al. 2021 recommend, next to the mean and median."""

    runs: int
    mean: float
    median: float
    iqm: float
    iqm_ci: tuple[float, float]
    confidence: float = CONFIDENCE

    def text(self, fmt: str = ".1f") -> str:
        """E.g. `IQM 497.1 (95% CI 459.5-500.0), median 500.0, mean 487.0 over 5 runs` for the scores of the module's example."""
        low, high = self.iqm_ci
        return (f"IQM {self.iqm:{fmt}} ({self.confidence:.0%} CI {low:{fmt}}-{high:{fmt}}), median {self.median:{fmt}}, "
                f"mean {self.mean:{fmt}} over {self.runs} run{'s' if self.runs != 1 else ''}")


def summarize(scores: ArrayLike, *, reps: int = REPS, confidence: float = CONFIDENCE, seed: int = SEED) -> Summary:
    """Mean, median, IQM and the IQM's stratified bootstrap interval of a set of runs (1-D: one score per run; 2-D: runs x tasks)."""
    array = as_scores(scores)
    return Summary(runs=array.shape[0], mean=mean(array), median=median(array), iqm=iqm(array),
                   iqm_ci=iqm_ci(array, reps=reps, confidence=confidence, seed=seed), confidence=confidence)
