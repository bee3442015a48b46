"""The bench scripts run end to end on tiny budgets and end with a JSON line holding their keys (figures are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_solve_reports_the_first_solve_and_the_end_of_each_run():
    out = bench("solve.py", "--seeds", "2", "--steps", "1200", "--set", "learning_starts=200")
    assert {"seeds", "solved", "median_steps", "median_seconds", "final_solved", "median_final", "min_final", "cpu", "total_steps"} <= out.keys()
    assert out["total_steps"] == 1200 and [r["seed"] for r in out["seeds"]] == [0, 1]
    for row in out["seeds"]:
        assert {"steps", "train_seconds", "final", "final_min", "held_after_solve", "evals_after_solve"} <= row.keys()
        assert 8 <= row["final_min"] <= row["final"] <= 500  # a CartPole episode lasts 8 to 500 steps
    finals = sorted(r["final"] for r in out["seeds"])
    assert out["min_final"] == finals[0] and out["final_solved"] == sum(f >= 475 for f in finals)


def test_cartpole_collapse_looks_at_the_run_in_slices():
    out = bench("cartpole_collapse.py", "--seed", "0", "--every", "600", "--set", "total_steps=1200", "--set", "learning_starts=200")
    assert [r["env_step"] for r in out["rows"]] == [600, 1200]
    for row in out["rows"]:
        assert sum(row["ends"].values()) == 10  # ten greedy episodes, each ended one way
        assert 0.0 <= row["terminal_share"] <= 1.0 and row["gap"] >= 0.0
