"""agent.plot.stats: the rliable definitions (Agarwal et al. 2021) against cases worked out by hand."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.plot import stats

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("scores", "expected"), [
    (list(range(1, 9)), 4.5),  # 8 scores: drop 2 each end, mean of 3, 4, 5, 6
    ([8, 1, 7, 2, 6, 3, 5, 4], 4.5),  # order does not matter
    ([1, 2, 3, 4, 100], 3.0),  # 5 scores: int(1.25) = 1 dropped each end, mean of 2, 3, 4; the outlier is gone
    ([1, 2, 30], 11.0),  # 3 scores: int(0.75) = 0 dropped, the plain mean
    ([0, 0, 0, 10, 10, 10, 10, 10], 7.5),  # ties: the middle four are 0, 10, 10, 10
    ([7.0], 7.0),  # a single run
    ([[1, 5], [2, 6], [3, 7], [4, 8]], 4.5),  # runs x tasks: pooled over both, the middle of 1..8
])
def test_iqm_is_the_25_percent_trimmed_mean_of_all_scores(scores, expected):
    assert stats.iqm(scores) == pytest.approx(expected)


def test_mean_and_median_follow_rliable_over_tasks_and_the_median_over_runs_for_one_task():
    assert stats.mean([1, 2, 100, 3]) == 26.5
    assert stats.median([1, 2, 100, 3]) == 2.5  # one task: the median of the runs
    scores = [[1, 10, 100], [3, 20, 300]]  # task means 2, 15, 200
    assert stats.mean(scores) == pytest.approx(217 / 3)
    assert stats.median(scores) == 15.0


@pytest.mark.parametrize(("x", "y", "expected"), [
    ([1, 2, 3], [2, 2], 3 / 6),  # pairs: 1<2 twice (0), 2=2 twice (1/2 each), 3>2 twice (1 each): 3 of 6
    ([3, 4], [1, 2, 3], 5.5 / 6),  # 3 beats 1, 2 and ties 3 (2.5); 4 beats all three (3)
    ([1, 2, 3], [3, 4], 0.5 / 6),  # the reverse: 1 - 5.5/6
    ([5, 5, 5], [5, 5, 5], 0.5),  # all ties
    ([1, 2], [1, 2], 0.5),  # the same runs: rliable's special case, and what the pair count gives
    ([10], [0, 20], 0.5),
])
def test_probability_of_improvement_counts_wins_and_half_ties_over_all_pairs(x, y, expected):
    assert stats.probability_of_improvement(x, y) == pytest.approx(expected)


def test_probability_of_improvement_is_averaged_over_tasks_and_complements():
    x = [[1, 0], [2, 0]]
    y = [[0, 1], [0, 2]]
    assert stats.probability_of_improvement(x, y) == pytest.approx(0.5)  # task 0: X always wins (1); task 1: always loses (0)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, size=(6, 3)), rng.integers(0, 5, size=(4, 3))
    assert stats.probability_of_improvement(a, b) + stats.probability_of_improvement(b, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement([[1, 2]], [[1, 2, 3]])


def test_the_interval_holds_the_estimate_and_collapses_for_constant_scores():
    rng = np.random.default_rng(0)
    for scores in (rng.normal(100, 30, size=10), rng.normal(0, 1, size=(5, 3)), [500, 500, 443.7, 491.2, 500]):
        low, high = stats.iqm_ci(scores)
        assert low <= stats.iqm(scores) <= high and low < high
    assert stats.iqm_ci([42.0] * 7) == (42.0, 42.0)
    assert stats.iqm_ci([3.0]) == (3.0, 3.0)  # a single run: every resample is that run
    assert stats.bootstrap_ci([42.0] * 7, stats.mean) == (42.0, 42.0)


def test_the_interval_of_two_runs_is_their_range():
    """Two runs 0 and 1: a resample's IQM (its mean) is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4, so the 2.5% and 97.5% quantiles are 0 and 1."""
    assert stats.iqm_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.iqm_ci([0.0, 1.0], confidence=0.2) == (0.5, 0.5)  # the 40% and 60% quantiles fall on the 1/2 half


def test_the_bootstrap_is_stratified_by_task():
    """Runs are resampled within each task: a task's resampled scores are always its own."""
    scores = np.array([[0.0, 100.0], [1.0, 101.0], [2.0, 102.0]])
    low, high = stats.bootstrap_ci(scores, lambda s: float(s[:, 1].min()), reps=500)
    assert 100 <= low <= high <= 102
    low, high = stats.bootstrap_ci(scores, lambda s: float(s[:, 0].max()), reps=500)
    assert 0 <= low <= high <= 2


def test_the_interval_is_reproducible_with_its_seed():
    scores = np.random.default_rng(1).normal(size=12)
    assert stats.iqm_ci(scores) == stats.iqm_ci(scores)
    assert stats.iqm_ci(scores, seed=5) == stats.iqm_ci(scores, seed=5)
    assert stats.iqm_ci(scores, seed=5) != stats.iqm_ci(scores, seed=6)
    assert stats.iqm_ci(scores, reps=300, seed=2) == stats.bootstrap_ci(scores, stats.iqm, reps=300, seed=2)  # the fast path is the same bootstrap
    narrow, wide = stats.iqm_ci(scores, confidence=0.5), stats.iqm_ci(scores, confidence=0.99)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]


def test_summarize():
    s = stats.summarize([500, 500, 443.7, 491.2, 500])
    assert (s.runs, s.median, s.confidence) == (5, 500.0, 0.95)
    assert s.mean == pytest.approx(486.98) and s.iqm == pytest.approx((491.2 + 500 + 500) / 3)
    assert s.iqm_ci == stats.iqm_ci([500, 500, 443.7, 491.2, 500])
    low, high = s.iqm_ci
    assert s.text() == f"IQM 497.1 (95% CI {low:.1f}-{high:.1f}), median 500.0, mean 487.0 over 5 runs"
    assert stats.summarize([1.0]).text(".0f") == "IQM 1 (95% CI 1-1), median 1, mean 1 over 1 run"


@pytest.mark.parametrize(("scores", "message"), [
    ([], "empty"),
    (np.zeros((0, 3)), "empty"),
    ([1.0, math.nan], "NaN"),
    ([1.0, math.inf], "infinite"),
    (np.zeros((2, 2, 2)), "1-D .* or 2-D"),
    (["a", "b"], "must be numbers"),
    ([[1, 2], [3]], "must be numbers"),
])
def test_bad_scores_are_a_clear_value_error(scores, message):
    for call in (stats.iqm, stats.mean, stats.median, stats.iqm_ci, stats.summarize, lambda s: stats.probability_of_improvement(s, [1.0])):
        with pytest.raises(ValueError, match=message):
            call(scores)


def test_bad_bootstrap_settings_are_a_clear_value_error():
    with pytest.raises(ValueError, match="reps must be a positive integer"):
        stats.iqm_ci([1, 2, 3], reps=0)
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        stats.iqm_ci([1, 2, 3], confidence=95)


def test_the_module_needs_numpy_only():
    code = "import sys, agent.plot.stats; bad = {'tensorflow', 'scipy', 'keras'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
