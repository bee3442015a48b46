"""`python -m agent.sweep --suite atari100k` and `python -m agent.plot stats`: a benchmark suite as one sweep, its per-game,
per-seed scores.csv, and the comparison with the papers' published means (docs/results/atari100k-published.csv).

The fast tier runs the suite's machinery for real on two games for 300 agent steps (one seed each, the two trials side
by side on the two cores: ~45 s, most of it starting Ray and TensorFlow and the final games), checks the CSV against the
runs' eval.json and the comparison against a small published-score fixture (tests/data/atari100k-published-fixture.csv);
the rest (the plan, bad input, the published file, the statistics) needs no Ray and takes seconds.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.plot import benchmark, stats
from agent.sweep import cli as sweep_cli
from agent.sweep.plan import SweepSpec, plan
from agent.sweep.suite import SCORE_FIELDS, SUITES, suite_spec

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "atari100k-published-fixture.csv"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install '.[cluster]')")

# Two games whose untrained agent loses its lives quickly (short final games), and a tiny but real run of each.
TINY = ["--env", "Breakout", "--env", "Qbert", "--seeds", "1", "--steps", "300", "--set", "learning_starts=100", "--set", "replay_capacity=1000",
        "--set", "eval_every=0", "--set", "eval_episodes=1", "--set", "final_eval_episodes=1", "--set", "checkpoint_every=0",
        "--set", "log_every=100"]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def stats_cli(*args):
    result = CliRunner().invoke(benchmark.main, [str(a) for a in args])
    return result.exit_code, result.output


# --------------------------------------------------------------------------- fast: one real run of the suite's machinery


@needs_ray
def test_the_suite_runs_two_games_writes_scores_csv_and_compares_with_published_scores(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, "-m", "agent.sweep", "--suite", "atari100k", "--out", str(out), *TINY], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == list(SCORE_FIELDS)
    assert [(r["game"], r["seed"], r["run_dir"]) for r in rows] == [("Breakout", "0", "Breakout-seed0"), ("Qbert", "0", "Qbert-seed0")]
    for row in rows:
        final = json.loads((out / row["run_dir"] / "eval.json").read_text())
        random, human = benchmark.REFERENCE[row["game"]]
        assert (int(row["env_steps"]), int(row["episodes"]), float(row["eval_epsilon"])) == (300, 1, 0.001)
        assert float(row["final_score"]) == pytest.approx(final["mean"], abs=0.005)
        assert (float(row["random"]), float(row["human"])) == (random, human)
        assert float(row["hns"]) == pytest.approx((final["mean"] - random) / (human - random), abs=1e-4)
        assert row["env_id"] == f"ALE/{row['game']}-v5" and row["notes"] == ""
    assert "final score (human-normalised) after 300 agent steps, the mean of 1 full game(s) at epsilon 0.001" in proc.stdout
    assert f"python -m agent.plot stats {out / 'scores.csv'}" in proc.stdout
    assert (out / "summary.csv").is_file() and json.loads((out / "sweep.json").read_text())["spec"]["suite"] == "atari100k"

    code, output = stats_cli(out / "scores.csv", "--published", FIXTURE)
    assert code == 0, output
    hns = {r["game"]: (float(r["final_score"]) - benchmark.REFERENCE[r["game"]][0]) / (benchmark.REFERENCE[r["game"]][1]
                                                                                      - benchmark.REFERENCE[r["game"]][0]) for r in rows}
    expected = stats.summarize([[hns["Breakout"], hns["Qbert"]]])
    assert re.search(rf"^ours\s+{expected.iqm:.3f} \[", output, re.M), output
    assert re.search(r"^A\s+0\.375\s+0\.375\s+0\.375$", output, re.M), output  # Breakout 0.5, Qbert 0.25; Pong (1.0) is left out
    assert "B: no published mean for Qbert, so no aggregate" in output
    assert "these runs trained 300, so they are not Atari-100k results" in output
    assert "point values computed from the means" in output


# --------------------------------------------------------------------------- fast: the plan and bad input, no Ray


def test_the_suite_plans_its_seven_games_with_the_benchmark_preset_and_protocol():
    spec = suite_spec("atari100k", (), None, None, None, ())
    trials = plan(spec)
    games = SUITES["atari100k"].games
    assert games == ("Breakout", "Pong", "Boxing", "Freeway", "Seaquest", "MsPacman", "Qbert")
    assert [t.name for t in trials] == [f"{g}-seed{s}" for g in games for s in (0, 1, 2)]
    for t in trials:
        c = t.config
        assert c["env_id"] == f"ALE/{t.env_id}-v5" and c["total_steps"] == 100_000 and c["seed"] == t.seed
        assert (c["final_eval_episodes"], c["eval_epsilon"], c["network"]) == (100, 0.001, "nature_cnn")
        assert (c["learning_starts"], c["epsilon_decay"], c["n_steps_decay"]) == (2_000, 6_000, 20_000)  # breakout.toml's x 1/5
    assert spec.to_json()["suite"] == "atari100k"
    assert "suite" not in SweepSpec(envs=("CartPole-v1",), seeds=(0,)).to_json()  # sweeps made before suites still resume


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("Ray was started for bad input")

    monkeypatch.setattr(sweep_cli, "start_ray", refuse)
    monkeypatch.setattr(sweep_cli, "run_sweep", refuse)


@pytest.mark.parametrize("args, message", [
    (["--suite", "atari26"], "unknown suite 'atari26'; available: atari100k"),
    (["--suite", "atari100k", "--env", "Alien"], "--env Alien: not a game of the atari100k suite"),
    (["--suite", "atari100k", "--env", "Pong", "--env", "ALE/Pong-v5"], "--env lists Pong twice"),
    (["--suite", "atari100k", "--grid", "n_steps=3,10"], "it takes no --grid"),
    (["--suite", "atari100k", "--preset", "breakout"], "it takes no --preset"),
    (["--suite", "atari100k", "--search", "--budget", "2"], "it takes no --search"),
    (["--suite", "atari100k", "--seeds", "0"], "--seeds must be >= 1"),
    (["--suite", "atari100k", "--set", "lerning_rate=1e-3"], "unknown config field 'lerning_rate'"),
    (["--suite", "atari100k", "--set", "total_steps=5"], "use --steps"),
])
def test_bad_suite_input_is_one_line_and_exit_2_with_nothing_written(tmp_path, no_ray, args, message):
    out = tmp_path / "suite"
    result = CliRunner().invoke(sweep_cli.main, ["--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1, result.output
    assert not out.exists()


def test_a_suite_directory_resumes_only_the_same_suite(tmp_path, no_ray):
    pytest.importorskip("ray")
    out = tmp_path / "suite"
    from agent.sweep.state import prepare_out

    spec = suite_spec("atari100k", ("Breakout",), 1, None, 300, ())
    prepare_out(out, spec, plan(spec))
    result = CliRunner().invoke(sweep_cli.main, ["--out", str(out), "--suite", "atari100k", "--env", "Pong", "--seeds", "1", "--steps", "300"])
    assert result.exit_code == 2 and "holds a sweep with other envs" in result.output, result.output


# --------------------------------------------------------------------------- fast: the published scores and the comparison


def test_the_published_file_cites_every_value_and_uses_the_standard_reference_scores():
    rows = read_csv(benchmark.DEFAULT_PUBLISHED)
    assert all(r["source"].strip() for r in rows), "every value needs its source"
    published = benchmark.read_published()
    games = SUITES["atari100k"].games
    assert set(published.reference) == set(games)
    assert {g: published.reference[g] for g in games} == {g: benchmark.REFERENCE[g] for g in games}
    assert list(published.methods) == ["DER", "SPR", "DrQ(eps)", "CURL"]
    assert all(published.methods[m][g] is not None for m in published.methods for g in games)
    assert published.methods["SPR"]["Breakout"] == 17.1 and published.methods["DER"]["Pong"] == -19.3


def write_scores(path: Path, finals: dict[tuple[str, int], float | None], env_steps: int = 100_000) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SCORE_FIELDS)
        writer.writeheader()
        for (game, seed), final in finals.items():
            writer.writerow({"game": game, "seed": seed, "env_steps": env_steps, "final_score": "" if final is None else final})
    return path


def test_the_comparison_normalises_aggregates_the_shared_games_and_says_what_is_left_out(tmp_path):
    finals = {("Breakout", 0): 30.5, ("Breakout", 1): 1.7, ("Breakout", 2): 16.1, ("Qbert", 0): 163.9, ("Qbert", 1): 13455.0,
              ("Qbert", 2): None, ("Alien", 0): 500.0}
    runs = benchmark.read_scores(write_scores(tmp_path / "scores.csv", finals))
    c = benchmark.compare(runs, benchmark.read_published(FIXTURE))
    assert c.games == ["Breakout", "Qbert"] and c.seeds == [0, 1]
    assert c.ours == {"Breakout": pytest.approx([1.0, 0.0, 0.5]), "Qbert": [0.0, 1.0]}
    matrix = [[1.0, 0.0], [0.0, 1.0]]  # seeds 0 and 1 x (Breakout, Qbert): seed 2 has no Qbert final
    assert c.aggregates["ours"]["IQM"] == (stats.iqm(matrix), *stats.iqm_ci(matrix))
    assert c.aggregates["ours"]["median"][0] == stats.median(matrix) and c.aggregates["ours"]["mean"][0] == stats.mean(matrix)
    assert c.aggregates["A"] == {s: (pytest.approx(0.375), None, None) for s in benchmark.STATISTICS}
    assert "B" not in c.aggregates
    assert any("Alien: no reference scores" in n for n in c.left_out)
    assert any("the 2 seed(s) finished on every game (0, 1)" in n for n in c.left_out)
    text = benchmark.format_comparison(c, runs)
    assert "warning" not in text  # 100,000 agent steps: the benchmark's budget


def test_the_stats_command_draws_and_refuses_bad_files_in_one_line(tmp_path):
    scores = write_scores(tmp_path / "scores.csv", {("Breakout", 0): 10.0, ("Qbert", 0): 500.0}, env_steps=300)
    code, output = stats_cli(scores, "--published", FIXTURE, "--out", tmp_path / "cmp.png")
    assert code == 0 and (tmp_path / "cmp.png").stat().st_size > 10_000, output
    no_human = tmp_path / "no-human.csv"
    no_human.write_text("game,method,score,source\nBreakout,random,1.7,x\nBreakout,A,3,x\n")
    empty = write_scores(tmp_path / "empty.csv", {("Breakout", 0): None})
    bad_column = tmp_path / "bad.csv"
    bad_column.write_text("game,seed,score\nBreakout,0,3\n")
    for args, message in [((tmp_path / "missing.csv",), "does not exist"),
                          ((bad_column,), "has no env_steps column"),
                          ((empty,), "holds no finished run"),
                          ((scores, "--published", no_human), "Breakout needs a random and a human row")]:
        code, output = stats_cli(*args)
        assert code == 2 and output.startswith("error: ") and message in output and output.count("\n") == 1, output


def test_python_m_agent_plot_stats_reaches_the_command_and_curves_stay_the_default():
    out = subprocess.run([sys.executable, "-m", "agent.plot", "stats", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Usage: python -m agent.plot stats [OPTIONS] SCORES" in out.stdout, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "agent.plot", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--iqm" in out.stdout
