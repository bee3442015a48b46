"""The Makefile's targets: what each runs, that `make test` leaves the slow tier out and `make test-all` takes it in,
and (slow tier) `make train` end to end: a trained CartPole run and the video of its agent.

The install step (`$(STAMP)`: a venv and `pip install -e .[test]`) is held back with `make -o`: these tests run in the
environment it made, and tests/test_install.py installs the package into a fresh venv (slow tier).
"""

from __future__ import annotations

import json
import re
import shlex
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAMP = ".venv/.installed-test-export"  # the default EXTRAS


def make(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    # Under `make test` itself the parent's MAKEFLAGS/MAKELEVEL would make this a sub-make that
    # prints "Entering/Leaving directory" lines; run it as a user would, from a plain shell.
    return subprocess.run(["make", "--no-print-directory", "-o", STAMP, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=plain_env())


def plain_env() -> dict[str, str]:
    """This environment without what a parent make or pytest run passes down (MAKEFLAGS, PYTEST_ADDOPTS, ...), and
    without the Makefile's own variables, which a parent `make test EXTRAS=...` exports to its commands."""
    passed_down = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTEST_ADDOPTS", "EXTRAS", "TEST_WORKERS", "RUN", "PY", "PYTHON")
    return {k: v for k, v in os.environ.items() if k not in passed_down}


def dry_run(target: str, *variables: str) -> list[str]:
    """The commands `make TARGET` would run (the x11-tools helper left out)."""
    result = make("-n", "-o", "x11-tools", target, *variables)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_targets_run_the_documented_commands(tmp_path):
    py = ".venv/bin/python"
    run = tmp_path / "run"
    assert dry_run("train", f"RUN={run}")[:2] == [
        f"{py} train.py --env CartPole-v1 --run-dir {run}",
        f"{py} play.py {run} --headless --episodes 1 --record {run}/cartpole.mp4",
    ]
    assert re.fullmatch(rf"{re.escape(py)} train\.py --env CartPole-v1 --run-dir runs/cartpole-\d{{8}}-\d{{6}}", dry_run("train")[0])
    # two processes, each taking whole test files; the slowest tests named in the log
    assert dry_run("test") == [f"{py} -m ruff check .", f"{py} -m pytest -q -n 2 --dist loadfile --durations=25"]
    assert dry_run("test", "TEST_WORKERS=4")[-1] == f"{py} -m pytest -q -n 4 --dist loadfile --durations=25"
    assert dry_run("test-all") == [f"{py} -m pytest -q -m ''"]
    for extras in (None, "test,export,cluster"):  # CI's extras: the Ray sweep tests run there too
        stamp = f".venv/.installed-{extras.replace(',', '-')}" if extras else STAMP  # other extras, another stamp: a reinstall
        install = subprocess.run(["make", "--no-print-directory", "-n", "-B", stamp, *([f"EXTRAS={extras}"] if extras else [])], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60, env=plain_env())
        assert f"{py} -m pip install -q -e '.[{extras or 'test,export'}]'" in install.stdout.splitlines(), install.stdout
    assert dry_run("bench") == [f"{py} bench/solve.py --seeds 5"]


@pytest.mark.parametrize("target, selected", [("test", 0), ("test-all", 2)])
def test_test_leaves_the_slow_tier_out_and_test_all_takes_it_in(target, selected):
    """The pytest command of each target, asked what it would run of tests/test_install.py (two slow tests; without
    conftest.py, which would import TensorFlow, nothing there needs it)."""
    command = shlex.split(dry_run(target)[-1])
    assert command[1:4] == ["-m", "pytest", "-q"]
    result = subprocess.run([sys.executable, *command[1:], "--collect-only", "--noconftest", "-p", "no:cacheprovider", "tests/test_install.py"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=plain_env())
    assert result.returncode == (0 if selected else 5), result.stdout[-2000:]  # 5: pytest collected nothing to run
    assert len([line for line in result.stdout.splitlines() if line.startswith("tests/test_install.py::")]) == selected, result.stdout[-2000:]


@pytest.mark.slow
def test_make_train_end_to_end(tmp_path):
    """A fresh user's first command: a CartPole run with the default preset, then a video of its agent."""
    from agent.run.run_dir import RunDirectory
    from agent.core.presets import resolve_config
    from videos import read_video

    run = tmp_path / "run"
    result = make("train", f"RUN={run}", f"PY={sys.executable}", timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"run saved in {run}; video: {run}/cartpole.mp4; watch it: {sys.executable} play.py {run}"
    cfg = RunDirectory(run).load_config()
    assert cfg == resolve_config(env_id="CartPole-v1")  # configs/cartpole.toml as it is, seed 0
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["env_step"] == cfg.total_steps and len(evaluation["returns"]) == cfg.final_eval_episodes
    assert evaluation["solved"], evaluation["mean"]  # the README's promise for seed 0: mean >= 475 over 100 greedy episodes
    assert RunDirectory(run).load_meta()["env_step"] == cfg.total_steps
    score = float(re.search(r"^episode 1: (\S+)$", result.stdout, re.MULTILINE).group(1))
    frames = read_video(run / "cartpole.mp4")
    assert len(frames) == score + 1  # each step of the episode play.py reported, and the first state
