"""Every hint a refusal of train.py prints is advice that works: each test makes the state, reads the refusal's line, does
what it says, and the run then goes on (issue 35, item 3). The full-disk and no-checkpoint hints are followed in
tests/test_resume.py, the restart after a kill in tests/test_crash_safety.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import train as train_cli

TINY = ["--env", "CartPole-v1", "--steps", "600", "--checkpoint-every", "300", "--eval-every", "300", "--eval-episodes", "2",
        "--set", "learning_starts=200", "--set", "final_eval_episodes=2", "--no-progress"]


def cli(*args: str):
    return CliRunner().invoke(train_cli.main, [*args, "--no-progress"] if "--no-progress" not in args else list(args))


def refusal(result) -> str:
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert cli(*TINY, "--run-dir", str(run)).exit_code == 0
    return run


def test_a_finished_run_told_to_pass_more_steps_trains_on(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    line = refusal(cli("--resume", str(run)))
    more_than = int(re.search(r"pass --steps N \(more than ([\d,]+)\)", line).group(1).replace(",", ""))
    assert cli("--resume", str(run), "--steps", str(more_than + 100)).exit_code == 0
    assert json.loads((run / "eval.json").read_text())["env_step"] == more_than + 100


def test_a_run_that_spent_its_minutes_told_to_pass_more_trains_on(tmp_path):
    run = tmp_path / "run"
    assert cli(*TINY, "--steps", "100000", "--minutes", "0.05", "--run-dir", str(run)).exit_code == 0
    line = refusal(cli("--resume", str(run)))
    trained = float(re.search(r"pass --minutes M \(more than ([\d.]+)\)", line).group(1))
    assert cli("--resume", str(run), "--minutes", f"{trained + 0.02:.2f}").exit_code == 0
    final = json.loads((run / "eval.json").read_text())
    assert final["train_seconds"] / 60 >= trained + 0.02 - 1e-6


def test_a_run_directory_that_holds_a_run_told_to_pass_force_is_replaced(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    line = refusal(cli(*TINY, "--run-dir", str(run)))
    assert "pass --force to replace it" in line
    assert cli(*TINY, "--run-dir", str(run), "--force").exit_code == 0
    assert json.loads((run / "eval.json").read_text())["env_step"] == 600 and not list(tmp_path.glob(".run.replaced-*"))


def test_a_damaged_newest_checkpoint_told_to_delete_it_resumes_from_the_one_before(tmp_path):
    run = tmp_path / "run"
    assert cli(*TINY, "--steps", "900", "--run-dir", str(run)).exit_code != 2  # trains to 900 (checkpoints 300, 600, 900)
    newest = run / "checkpoints" / "step-000000900"
    (newest / "loop" / "state.json").write_text("{}")  # damaged after sealing: the manifest no longer agrees
    line = refusal(cli("--resume", str(run), "--steps", "1200"))
    match = re.search(r"delete (\S+) to resume from (step-\d+)", line)
    assert match and Path(match.group(1)) == newest and match.group(2) == "step-000000600", line
    shutil.rmtree(match.group(1))
    assert cli("--resume", str(run), "--steps", "1200").exit_code == 0
    assert json.loads((run / "meta.json").read_text())["env_step"] == 1200


def test_a_missing_torso_told_how_to_make_one_trains_from_it(tmp_path):
    """`--init-from` a file that is not there: the hint names `python -m classic pretrain DEMOS.npz --out torso.keras` and,
    for the cartpole preset, --layer-norm; made that way from recorded play, the torso is taken."""
    import numpy as np

    from classic.__main__ import cli as classic_cli
    from test_demos import record

    line = refusal(cli(*TINY, "--init-from", str(tmp_path / "torso.keras"), "--run-dir", str(tmp_path / "run")))
    command = re.search(r"`python -m classic (pretrain DEMOS\.npz --out torso\.keras)` \((--layer-norm): cartpole preset\)", line)
    assert command, line
    record("CartPole-v1", tmp_path / "demos.npz", episodes=4, max_steps=100)
    args = command.group(1).replace("DEMOS.npz", str(tmp_path / "demos.npz")).replace("torso.keras", str(tmp_path / "torso.keras"))
    made = CliRunner().invoke(classic_cli, [*args.split(), command.group(2), "--epochs", "1"])
    assert made.exit_code == 0, made.output
    result = cli(*TINY, "--init-from", str(tmp_path / "torso.keras"), "--run-dir", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert np.isfinite(json.loads((tmp_path / "run" / "eval.json").read_text())["mean"])
