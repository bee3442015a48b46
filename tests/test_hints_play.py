"""Every hint a refusal of play.py prints is advice that works (issue 35, item 3): each test makes the state, reads the
one `error:` line, does what it says, and play.py then plays (exit 0, the scores, the file asked for).

In-process (CliRunner, SDL's dummy video driver from conftest, so a window "opens" without a display) where the state
allows; the states about the display and about a missing runtime run play.py in a subprocess as a user's shell does.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import play as play_cli
from hint_tools import assert_pip_hint_installs, python_command, refusal, refused, run, succeeded, tiny_run, user_env, without

QUICK = ["--episodes", "1", "--max-steps", "20", "--fps", "1000"]


def play(*args) -> object:
    return CliRunner().invoke(play_cli.main, [str(a) for a in args])


def plays(*args) -> str:
    """play.py with `args` (and QUICK) exits 0 having played its episode; returns stdout."""
    result = play(*args, *QUICK)
    assert result.exit_code == 0, result.output
    assert "episode 1:" in result.stdout and "mean" in result.stdout, result.stdout
    return result.stdout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> dict[str, Path]:
    """The tiny run exported as .tflite and .onnx (python -m agent.export), each with its .json."""
    from agent.export.convert import export

    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install '.[export]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[export]')")
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install '.[export]')")
    where = tmp_path_factory.mktemp("exported")
    return {fmt: export(run_dir, fmt, where / f"q.{fmt}").path for fmt in ("tflite", "onnx")}


# (what is passed, what the line says, each way of doing what it says); RUN is the tiny run's directory.
FLAG_HINTS = [
    (["RUN", "--pretrained", "cartpole"], "pass either RUN_DIR or --pretrained NAME, not both", [["--pretrained", "cartpole"], ["RUN"]]),
    (["--pretrained", "cartpole", "--env", "CartPole-v1"], "--pretrained NAME brings its own env; drop --env", [["--pretrained", "cartpole"]]),
    (["--pretrained", "cartpole", "--best"], "--best needs a RUN_DIR", [["RUN", "--best"]]),
    (["RUN", "--env", "CartPole-v1"], "pass either RUN_DIR (the env comes from its config) or --env, not both", [["RUN"]]),
    (["--pretrained", "no-such-agent"], "available: cartpole", [["--pretrained", "cartpole"]]),
    ([], "nothing to play: pass a RUN_DIR written by train.py, --pretrained NAME, or --env ID with --agent random or --human",
     [["RUN"], ["--pretrained", "cartpole"], ["--env", "CartPole-v1", "--agent", "random"], ["--env", "CartPole-v1", "--human", "WINDOW"]]),
    (["--env", "CartPole-v1"], "with --env, pass --agent random or --human",
     [["--env", "CartPole-v1", "--agent", "random"], ["--env", "CartPole-v1", "--human", "WINDOW"]]),
    (["--env", "CartPole-v1", "--human"], "--human needs a window; drop --headless", [["--env", "CartPole-v1", "--human", "WINDOW"]]),
]


@pytest.mark.parametrize("before, says, ways", FLAG_HINTS, ids=[says.split(";")[0][:40] for _, says, _ in FLAG_HINTS])
def test_a_flag_hint_followed_plays(run_dir, before, says, ways):
    """Each refusal is made headless (a user recording on a server); WINDOW: the way that drops --headless, as the hint says."""
    def args(given: list[str]) -> list[str]:
        window = "WINDOW" in given
        return [str(run_dir) if a == "RUN" else a for a in given if a != "WINDOW"] + ([] if window else ["--headless"])

    line = refusal(play(*args(before), *QUICK))
    assert says in line, line
    for way in ways:
        plays(*args(way))


def test_a_directory_that_holds_no_run_told_to_pass_one_written_by_train_plays_it(run_dir, tmp_path):
    line = refusal(play(tmp_path, "--headless", *QUICK))
    assert "pass a directory written by train.py" in line, line
    plays(run_dir, "--headless")


def test_record_and_record_dir_told_to_pass_one_record_either(tmp_path):
    both = ["--env", "CartPole-v1", "--agent", "random", "--headless", "--record", tmp_path / "all.mp4", "--record-dir", tmp_path / "videos"]
    line = refusal(play(*both, *QUICK))
    assert "pass --record FILE or --record-dir DIR, not both" in line, line
    plays(*both[:-2])
    plays(*both[:-4], *both[-2:])
    assert (tmp_path / "all.mp4").stat().st_size > 0 and len(list((tmp_path / "videos").glob("*.mp4"))) == 1


# --------------------------------------------------------------------------- exported models


def test_an_exported_model_with_an_env_told_to_drop_it_plays(exported):
    line = refusal(play(exported["tflite"], "--env", "CartPole-v1", "--headless", *QUICK))
    assert line.endswith("drop --env"), line
    plays(exported["tflite"], "--headless")


@pytest.mark.parametrize("damage", ["no metadata", "not JSON", "another env's metadata"])
def test_an_exported_model_whose_metadata_is_damaged_told_to_export_it_again_plays(run_dir, exported, tmp_path, damage):
    """The line names `python -m agent.export RUN --out MODEL --force`; RUN is the run it came from."""
    from agent.export.convert import main as export_main

    model = tmp_path / "q.tflite"
    shutil.copy(exported["tflite"], model)
    meta = json.loads(exported["tflite"].with_name("q.tflite.json").read_text())
    if damage == "not JSON":
        (tmp_path / "q.tflite.json").write_text("{")
    elif damage == "another env's metadata":
        (tmp_path / "q.tflite.json").write_text(json.dumps({**meta, "num_actions": 3}))
    line = refusal(play(model, "--headless", *QUICK))
    command = python_command(line, "export it again with")
    assert command[:3] == ["python", "-m", "agent.export"] and command[3] == "RUN", line
    result = CliRunner().invoke(export_main, [str(run_dir), *command[4:]])
    assert result.exit_code == 0, result.output
    plays(model, "--headless")


@pytest.mark.parametrize("fmt, module", [("tflite", "ai_edge_litert"), ("onnx", "onnxruntime")])
def test_a_missing_runtime_told_what_to_pip_install_plays_once_it_is_there(exported, tmp_path, fmt, module):
    """Without the runtime (an import refused as for a package not installed) the line names `pip install PACKAGE` and
    the export extra; PACKAGE is the distribution that brings the module, and the extra lists it; with it, the model plays."""
    command = ["python", "play.py", str(exported[fmt]), "--headless", *QUICK]
    line = refused(run(command, env=without((module,), tmp_path / "site")))
    assert f"running a .{fmt} model needs" in line, line
    assert_pip_hint_installs(line, module)
    assert "episode 1:" in succeeded(run(command)).stdout


# --------------------------------------------------------------------------- no display


def no_display() -> dict[str, str]:
    return user_env(DISPLAY=None, WAYLAND_DISPLAY=None, SDL_VIDEODRIVER=None)


def test_no_display_told_to_pass_headless_with_record_records(tmp_path):
    command = ["python", "play.py", "--env", "CartPole-v1", "--agent", "random", *QUICK]
    line = refused(run(command, env=no_display()))
    assert "pass --headless with --record or --record-dir" in line, line
    succeeded(run([*command, "--headless", "--record", str(tmp_path / "out.mp4")], env=no_display()))
    succeeded(run([*command, "--headless", "--record-dir", str(tmp_path / "videos")], env=no_display()))
    assert (tmp_path / "out.mp4").stat().st_size > 0 and len(list((tmp_path / "videos").glob("*.mp4"))) == 1


@pytest.mark.parametrize("who", [["--agent", "random"], ["--human"]])
def test_no_display_told_to_run_under_xvfb_run_plays_there(who):
    if shutil.which("xvfb-run") is None:
        pytest.skip("xvfb-run is not installed (apt-get install xvfb)")
    command = ["python", "play.py", "--env", "CartPole-v1", *who, *QUICK]
    line = refused(run(command, env=no_display()))
    way_out = "--human needs a window: play in a desktop session" if "--human" in who else "pass --headless with --record or --record-dir"
    assert line.endswith(f"; {way_out}, or run under xvfb-run"), line  # --human never told to pass --headless, which it refuses
    done = succeeded(run(["xvfb-run", "-a", sys.executable, *command[1:]], env=no_display()))
    assert "episode 1:" in done.stdout


# --------------------------------------------------------------------------- env ids (envs.make_env's line, said by play.py and train.py alike)
# In a fresh process each: which ids the registry holds depends on what the process imported before (ale-py adds its own).


def random_play(env_id: str) -> list[str]:
    return ["python", "play.py", "--env", env_id, "--agent", "random", "--headless", *QUICK]


def suggested(line: str) -> list[str]:
    return re.search(r"did you mean (.+)\?$", line).group(1).split(", ")


def test_a_misspelled_env_id_told_what_it_may_mean_plays_the_first():
    line = refused(run(random_play("CartPole-v9")))
    assert suggested(line)[0] == "CartPole-v1", line
    assert "episode 1:" in succeeded(run(random_play(suggested(line)[0]))).stdout


@pytest.mark.parametrize("misspelled, first", [("CartPole-v9", "CartPole-v1"), ("Breakoutt", "Breakout"), ("ALE/Breakout-v9", "ALE/Breakout-v5")])
def test_a_misspelled_env_id_told_what_it_may_mean_plays_each(misspelled, first):
    """Only ids make_env takes are named: not ale-py's legacy Breakout-v4 (no Atari id to envs.is_atari) nor
    phys2d/CartPole-v1 (it needs jax, not installed here)."""
    line = refused(run(random_play(misspelled)))
    assert suggested(line)[0] == first, line
    for env_id in suggested(line):
        done = run(random_play(env_id))
        assert done.returncode == 0, (env_id, done.stderr[-500:])


def test_an_unknown_env_id_told_how_to_list_them_lists_them():
    line = refused(run(random_play("NoSuchGame-v9")))
    command = python_command(line, "NoSuchGame-v9'; ")
    assert command[:2] == ["python", "-c"], line
    listed = succeeded(run(command)).stdout.split()
    assert "CartPole-v1" in listed and "ALE/Breakout-v5" in listed  # the command registers ale-py's games first
    assert "episode 1:" in succeeded(run(random_play("CartPole-v1"))).stdout


def test_an_env_needing_a_module_gymnasium_does_not_name_is_refused_in_one_line(tmp_path):
    """phys2d/CartPole-v1 without jax: gym.make raises a bare ModuleNotFoundError, said as the missing module."""
    line = refused(run(random_play("phys2d/CartPole-v1"), env=without(("jax",), tmp_path / "site")))
    assert line.endswith("needs an extra package: the module 'jax' is not installed"), line


def test_an_env_needing_a_gymnasium_extra_names_one_gymnasium_has(tmp_path):
    """LunarLander without Box2D: the line passes on gymnasium's own `pip install "gymnasium[box2d]"`; that extra is
    one gymnasium declares, and it requires the box2d package (not installed here, so not followed)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    line = refused(run(random_play("LunarLander-v3"), env=without(("Box2D",), tmp_path / "site")))
    extra = re.search(r"pip install \"gymnasium\[(\w+)\]\"", line)
    assert extra and "needs an extra package" in line, line
    wanted = [Requirement(r) for r in importlib.metadata.requires("gymnasium")]
    assert any(r.name.startswith("box2d") and r.marker and r.marker.evaluate({"extra": extra.group(1)}) for r in wanted), line
