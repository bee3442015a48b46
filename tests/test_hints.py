"""Every hint a refusal of train.py prints is advice that works: each test makes the state, reads the refusal's line, does
what it says, and the run then goes on (issue 35, item 3). The full-disk and no-checkpoint hints are followed in
tests/test_resume.py, the restart after a kill in tests/test_crash_safety.py; the other programs' hints in
tests/test_hints_play.py, test_hints_export.py (and agent.plot), test_hints_classic.py and test_hints_sweep.py."""

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


# --------------------------------------------------------------------------- --demos recorded another way


TINY_PIXELS = ["--env", "CartPole-v1", "--pixels", "--steps", "300", "--checkpoint-every", "300", "--eval-every", "300", "--eval-episodes", "1",
               "--set", "learning_starts=100", "--set", "final_eval_episodes=1", "--set", "replay_capacity=1000", "--no-progress"]
TINY_ATARI = ["--env", "ALE/Breakout-v5", "--steps", "300", "--checkpoint-every", "300", "--eval-every", "300", "--eval-episodes", "1",
              "--set", "learning_starts=100", "--set", "final_eval_episodes=1", "--set", "replay_capacity=1000", "--no-progress"]


def record_seen_as(path: Path, steps: int = 60, **seen) -> Path:
    """Random CartPole play saved as play.py saves it for a run that sees the env with `seen` (make_env's options)."""
    from agent.core.config import DQNConfig, env_options
    from classic.demos import DemoRecorder
    from envs import make_env

    seen_as = env_options(DQNConfig(env_id="CartPole-v1", **seen))
    env = make_env("CartPole-v1", seed=0, mode="play", **seen_as)
    recorder = DemoRecorder("CartPole-v1", seen_as)
    obs, _ = env.reset(seed=0)
    for t in range(steps):
        next_obs, reward, terminated, truncated, _ = env.step(t % 2)
        recorder.add(obs, t % 2, reward, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else next_obs
    recorder.cut()
    recorder.save(path, env.observation_space.shape, env.observation_space.dtype)
    env.close()
    return path


def trains_with_demos(*args: str) -> None:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "demonstration transitions from" in result.stderr, result.stderr


def record_again(line: str, run: Path, demos: Path) -> None:
    """Do what the line's `python play.py RUN_DIR ... --save-demos FILE` says, with `run` a run seen as the refused one."""
    import play as play_cli

    command = re.search(r"or record again with `python play.py (RUN_DIR [^`]*--save-demos FILE)`", line)
    assert command, line
    args = command.group(1).replace("RUN_DIR", str(run)).replace("FILE", str(demos)).split()
    result = CliRunner().invoke(play_cli.main, [*args, "--episodes", "1", "--max-steps", "40"])
    assert result.exit_code == 0, result.output
    assert demos.is_file()


SEEN_ANOTHER_WAY = {  # what the demos were recorded with, the run refused, what the line says
    "pixel_view": ({"pixels": True, "pixel_view": "cart", "action_repeat": 2}, TINY_PIXELS,
                   "this run's is 'cart_track'; train with --set pixel_view=cart, or record again"),
    "action_repeat": ({"action_repeat": 2}, TINY, "this run's is 1; train with --set action_repeat=2, or record again"),
}


def refused_demos(tmp_path: Path, case: str) -> tuple[str, list[str]]:
    """The line refusing demos recorded as SEEN_ANOTHER_WAY[case] says, and the refused run's arguments."""
    recorded, run_with, says = SEEN_ANOTHER_WAY[case]
    demos = record_seen_as(tmp_path / "demos.npz", **recorded)
    line = refusal(cli(*run_with, "--demos", str(demos), "--run-dir", str(tmp_path / "run")))
    assert says in line, line
    return line, run_with


@pytest.mark.parametrize("case", SEEN_ANOTHER_WAY)
def test_demos_seen_another_way_told_to_train_as_they_were_seen_train(tmp_path, case):
    line, run_with = refused_demos(tmp_path, case)
    seen_as = re.search(r"train with --set (\w+=\w+), or record again", line).group(1)
    trains_with_demos(*run_with, "--set", seen_as, "--demos", str(tmp_path / "demos.npz"), "--run-dir", str(tmp_path / "run"))


def test_demos_seen_another_way_told_to_record_again_from_a_run_seen_as_this_one_train(finished, tmp_path):
    """`finished` is a run seen as this one (TINY, without demos): the line's play.py command records from it."""
    line, run_with = refused_demos(tmp_path, "action_repeat")
    assert line.endswith("RUN_DIR a run seen as this one (action_repeat=1)"), line
    record_again(line, finished, tmp_path / "again.npz")
    trains_with_demos(*run_with, "--demos", str(tmp_path / "again.npz"), "--run-dir", str(tmp_path / "run"))


@pytest.mark.slow
def test_pixel_demos_seen_another_way_told_to_record_again_from_a_run_seen_as_this_one_train(tmp_path):
    """The pixel run seen as this one is trained first, without demos (three pixel runs in all)."""
    line, run_with = refused_demos(tmp_path, "pixel_view")
    assert line.endswith("RUN_DIR a run seen as this one (pixel_view='cart_track', action_repeat=2)"), line
    assert cli(*run_with, "--run-dir", str(tmp_path / "seen-as-this")).exit_code == 0
    record_again(line, tmp_path / "seen-as-this", tmp_path / "again.npz")
    trains_with_demos(*run_with, "--demos", str(tmp_path / "again.npz"), "--run-dir", str(tmp_path / "run"))


@pytest.mark.slow
def test_atari_demos_without_lives_told_to_record_again_with_play_train(tmp_path):
    """Demos of a file format from before lives were kept: the line's play.py command records them again (played
    in a window: SDL's dummy driver here); training takes those."""
    import numpy as np

    import play as play_cli
    from test_demos import record_breakout

    old = record_breakout(tmp_path / "old.npz", 40)
    del old["lives"]
    np.savez(tmp_path / "old.npz", **old)
    line = refusal(cli(*TINY_ATARI, "--demos", str(tmp_path / "old.npz"), "--run-dir", str(tmp_path / "run")))
    command = re.search(r"record it again with `python play.py ([^`]+)`", line)
    assert command and "--human" in command.group(1), line
    args = command.group(1).replace("FILE", str(tmp_path / "again.npz")).split()
    played = CliRunner().invoke(play_cli.main, [*args, "--episodes", "1", "--max-steps", "60", "--fps", "1000"])
    assert played.exit_code == 0, played.output
    trains_with_demos(*TINY_ATARI, "--demos", str(tmp_path / "again.npz"), "--run-dir", str(tmp_path / "run"))
