"""agent.plot: learning curves from the progress.csv of real (tiny) runs."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from agent import plot


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two tiny CartPole runs with evaluations, trained in-process (TensorFlow loads once)."""
    from agent.presets import resolve_config
    from agent.training import train

    paths = []
    for seed in (0, 1):
        path = tmp_path_factory.mktemp(f"run{seed}")
        cfg = resolve_config(env_id="CartPole-v1", overrides={
            "seed": seed, "total_steps": 1500, "learning_starts": 500, "eval_every": 500, "eval_episodes": 2,
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


def test_cli_writes_a_png_with_several_runs(runs, tmp_path):
    out = tmp_path / "figs" / "curve.png"
    result = CliRunner().invoke(plot.main, [*map(str, runs), "--out", str(out), "--label", "seed 0", "--label", "seed 1"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(out))
    assert image.shape == (450, 800, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20, "something was drawn"
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
