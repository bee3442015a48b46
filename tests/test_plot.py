"""agent.plot: learning curves from the progress.csv of real (tiny) runs."""

from __future__ import annotations

import math
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from agent.plot import curves as plot


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two tiny CartPole runs with evaluations, trained in-process (TensorFlow loads once)."""
    from agent.core.presets import resolve_config
    from agent.run.trainer import train

    paths = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp(f"run{seed}")
        cfg = resolve_config(env_id="CartPole-v1", overrides={
            "seed": seed, "total_steps": 1500, "learning_starts": 500, "eval_every": 500, "eval_episodes": 2, "final_eval_episodes": 5,
            "checkpoint_every": 0, "log_every": 250, "jit_compile": False,
        })
        train(cfg, path, progress=False)
        paths.append(path)
    return paths


def test_read_progress_keeps_the_evaluation_rows(runs):
    data = plot.read_progress(runs[0])
    evaluated = np.isfinite(data["eval_return_mean"])
    assert data["env_step"][evaluated].tolist() == [500, 1000, 1500]
    assert np.isfinite(data["train_return_mean"]).sum() >= 3


def test_smooth_is_a_trailing_mean_that_skips_gaps():
    out = plot.smooth(np.array([1.0, math.nan, 3.0, 5.0, 7.0]), window=2)
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2, 3, 4]], [1.0, 2.0, 4.0, 6.0])


def saved_figures(monkeypatch) -> list:
    """The matplotlib figures `savefig` is called on from now on (the list fills as they are saved)."""
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return figures


def test_cli_draws_each_runs_curves_into_a_png(runs, tmp_path, monkeypatch):
    """Each run gets its colour: its evaluations as points on a line at exactly the logged values (with a +/- std band),
    its training return smoothed as a faint line; the legend names the runs; the PNG shows both colours."""
    import matplotlib.colors
    import matplotlib.figure

    figures = saved_figures(monkeypatch)
    out = tmp_path / "figs" / "curve.png"
    result = CliRunner().invoke(plot.main, [*map(str, runs), "--out", str(out), "--label", "seed 0", "--label", "seed 1", "--smooth", "3"])
    assert result.exit_code == 0, result.output
    assert result.output == f"saved {out}\n"
    (ax,) = figures[0].axes
    assert ax.get_title() == "CartPole-v1" and ax.get_xlabel() == "env steps" and ax.get_ylabel() == "return"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "seed 0", "seed 1", "training return (mean of last episodes, smoothed over 3 rows)", "evaluation return (greedy, +/- std)",
        "final evaluation (eval.json, +/- std)"]  # these runs' final evaluations have more episodes than the logged ones
    for i, run in enumerate(runs):
        data = plot.read_progress(run)
        colour = matplotlib.colors.to_hex(f"C{i}")
        lines = [line for line in ax.lines if line.get_xydata().size and matplotlib.colors.to_hex(line.get_color()) == colour]
        evals = [line for line in lines if line.get_marker() == "o"]
        trains = [line for line in lines if line.get_marker() in ("None", "", None)]
        finals = [line for line in lines if line.get_marker() == "*"]
        assert len(evals) == len(trains) == len(finals) == 1
        final = json.loads((run / "eval.json").read_text())
        assert finals[0].get_xdata().tolist() == [final["env_step"]] and finals[0].get_ydata().tolist() == [final["mean"]]
        assert evals[0].get_label() == f"seed {i}"
        assert evals[0].get_xdata().tolist() == [500, 1000, 1500]
        evaluated = np.isfinite(data["eval_return_mean"])
        np.testing.assert_array_equal(evals[0].get_ydata(), data["eval_return_mean"][evaluated])
        trained = np.isfinite(data["train_return_mean"])
        np.testing.assert_array_equal(trains[0].get_xdata(), data["env_step"][trained])
        np.testing.assert_allclose(trains[0].get_ydata(), plot.smooth(data["train_return_mean"], 3)[trained])
        assert trains[0].get_alpha() == 0.35
    assert len([c for c in ax.collections if type(c).__name__ != "LineCollection"]) == 2  # one std band per run (the final's error bars are lines)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(out))
    assert image.shape == (450, 800, 3)
    for colour in ("C0", "C1"):  # the evaluation markers are drawn in the runs' colours, opaque
        r, g, b = (round(255 * c) for c in matplotlib.colors.to_rgb(colour))
        assert (image.reshape(-1, 3) == (b, g, r)).all(axis=1).sum() >= 20, colour
    assert not list(out.parent.glob(".*")), "no temp file is left behind"


def test_cli_errors_are_one_line(runs, tmp_path):
    result = CliRunner().invoke(plot.main, [str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: run directory {str(tmp_path / 'nope')!r} does not exist"]
    result = CliRunner().invoke(plot.main, [str(runs[0]), "--label", "a", "--label", "b"])
    assert result.exit_code == 2 and "one per run" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(plot.main, [str(runs[0]), "--out", str(blocker / "c.png")])
    assert result.exit_code == 2 and result.stderr.startswith("error: cannot write")


def fake_run(path: Path, evals: dict[int, float], env_id: str = "CartPole-v1") -> Path:
    """A run directory as train.py leaves it, as far as the plot reads it: config.toml and progress.csv, with
    training-only rows between the evaluation rows (written by hand, no training)."""
    from agent.core.presets import resolve_config
    from agent.run.run_dir import RunDirectory

    path.mkdir(parents=True)
    RunDirectory(path).save_config(resolve_config(env_id=env_id))
    lines = ["env_step,episodes,train_return_mean,eval_return_mean,eval_return_std"]
    for step, value in evals.items():
        lines += [f"{step - 50},3,21.5,,", f"{step},4,22.0,{value},1.5"]
    (path / "progress.csv").write_text("\n".join(lines) + "\n")
    return path


def test_iqm_draws_one_curve_at_the_iqm_of_the_runs_with_a_shaded_interval(tmp_path, monkeypatch):
    """Four seeds: at each evaluation step all of them have, the point is the mean of the middle two returns, inside a band
    that is the bootstrap interval of agent.plot.stats (collapsed where the seeds agree); a step only one run has is left out."""

    from agent.plot import stats

    returns = {100: [10, 20, 30, 1000], 200: [0, 500, 0, 500], 300: [500, 500, 500, 500]}  # IQM: (20+30)/2, (0+500)/2, 500
    runs = [fake_run(tmp_path / f"seed{i}", {step: values[i] for step, values in returns.items()} | ({400: 9.0} if i == 3 else {}))
            for i in range(4)]
    figures = saved_figures(monkeypatch)
    out = tmp_path / "iqm.png"
    result = CliRunner().invoke(plot.main, [*map(str, runs), "--iqm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == f"saved {out}\n" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = figures[0].axes
    assert ax.get_title() == "CartPole-v1"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["evaluation return: IQM of 4 runs", "95% stratified bootstrap CI"]
    (line,) = ax.lines  # one curve, not one per run
    assert line.get_xdata().tolist() == [100, 200, 300]
    np.testing.assert_allclose(line.get_ydata(), [25.0, 250.0, 500.0])
    (band,) = ax.collections
    corners = {tuple(v) for v in band.get_paths()[0].vertices.round(6).tolist()}
    for step, values in returns.items():
        low, high = stats.iqm_ci(values)
        assert low <= stats.iqm(values) <= high
        assert {(step, round(low, 6)), (step, round(high, 6))} <= corners
    assert stats.iqm_ci(returns[100])[0] < 25 < stats.iqm_ci(returns[100])[1]
    assert stats.iqm_ci(returns[300]) == (500.0, 500.0)
    result = CliRunner().invoke(plot.main, [*map(str, runs), "--iqm", "--label", "cartpole preset", "--out", str(out)])
    assert result.exit_code == 0 and figures[-1].axes[0].lines[0].get_label() == "cartpole preset: IQM of 4 runs"


def test_iqm_refuses_mismatched_runs_in_one_line(tmp_path):
    a = fake_run(tmp_path / "a", {100: 1.0, 200: 2.0})
    b = fake_run(tmp_path / "b", {100: 1.0, 200: 2.0}, env_id="Acrobot-v1")
    c = fake_run(tmp_path / "c", {150: 1.0})
    d = fake_run(tmp_path / "d", {})
    out = str(tmp_path / "c.png")
    cases = [
        ([a, b], "error: --iqm aggregates runs of one env; got Acrobot-v1: b; CartPole-v1: a"),
        ([a], "error: --iqm needs at least 2 runs (seeds) of one env; got 1"),
        ([a, c], "error: the runs share no evaluation step; --iqm needs runs evaluated at the same env steps (the same eval_every)"),
        ([a, d], f"error: {str(d)!r} has no evaluation rows (eval_return_mean); --iqm draws the evaluation return"),
    ]
    for dirs, message in cases:
        result = CliRunner().invoke(plot.main, [*map(str, dirs), "--iqm", "--out", out])
        assert result.exit_code == 2 and result.stderr.strip().splitlines() == [message]
    result = CliRunner().invoke(plot.main, [str(a), str(a), "--iqm", "--label", "x", "--label", "y", "--out", out])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --iqm draws one curve; give at most one --label (got 2)"
    assert not (tmp_path / "c.png").exists()
