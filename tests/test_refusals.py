"""Every entry point refuses bad input the same way, as a user's shell runs it (issue 35).

Each case runs the real program in a fresh process with a clean environment (no TF_CPP_MIN_LOG_LEVEL, nothing of ours
set), in an empty working directory: stderr is exactly one `error: ...` line, the exit status is 2, nothing is printed
to stdout before it (a refusal comes before a run announces itself), and the working directory is left as it was.
The fast tier takes the refusals that load TensorFlow first and one refusal of every other program; the slow tier
adds the rest (each console script, each kind of input).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "DISPLAY", "XAUTHORITY")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["SDL_VIDEODRIVER"] = "dummy"  # a refusal never opens a window; no X server needed
    env["SDL_AUDIODRIVER"] = "dummy"
    return env


def snapshot(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in directory.rglob("*")}


def make_inputs(where: Path) -> None:
    """Bad files a careless user could hand over: a text file named like data, a zip that is no Keras model, a fake run."""
    (where / "garbage.npz").write_text("not numpy\n")
    with zipfile.ZipFile(where / "garbage.keras", "w") as z:
        z.writestr("notes.txt", "not a model")
    run = where / "fake-run"
    run.mkdir()
    (run / "config.toml").write_text('env_id = "CartPole-v1"\n')
    (run / "meta.json").write_text('{"format_version": 1, "env_id": "CartPole-v1"}\n')
    (run / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    (run / "progress.csv").write_text("env_step,eval_return_mean\n")


def program(name: str) -> list[str]:
    """How a user starts it: the scripts with python, the packages with -m, the console scripts by name."""
    if name.startswith("tfdqn-"):
        return [str(BIN / name)]
    if name.endswith(".py"):
        return [sys.executable, str(ROOT / name)]
    return [sys.executable, "-m", name]


# (program, arguments, what the line must say); the cases that import TensorFlow before refusing come first.
LOADS_TENSORFLOW = [
    ("train.py", ["--env", "CartPole-v1", "--init-from", "garbage.keras", "--run-dir", "new-run"], "--init-from"),
    ("play.py", ["fake-run", "--headless", "--episodes", "1"], "model.keras"),
    ("agent.export", ["fake-run", "--format", "saved_model", "--out", "exported"], "model.keras"),
    ("classic", ["pretrain", "garbage.npz", "--out", "torso.keras"], "garbage.npz"),
    ("train.py", ["--env", "CartPole-v1", "--demos", "garbage.npz", "--run-dir", "new-run"], "--demos"),
]
# One cheap refusal for each program the list above leaves out: in the fast tier too.
EVERY_PROGRAM = [
    ("tfdqn-train", ["--env", "CartPole-v1", "--set", "gamma=2", "--run-dir", "new-run"], "gamma"),
    ("agent.plot", ["no-such-run", "--out", "curve.png"], "no-such-run"),
    ("agent.sweep", ["--env", "NoSuchGame-v9", "--out", "sweep"], "NoSuchGame-v9"),
    ("bench/solve.py", ["--env", "NoSuchGame-v9", "--seeds", "1"], "NoSuchGame-v9"),
]
CHEAP = [
    ("train.py", ["--env", "NoSuchGame-v9", "--run-dir", "new-run"], "NoSuchGame-v9"),
    ("play.py", ["no-such-run"], "no-such-run"),
    ("tfdqn-play", ["--env", "CartPole-v1", "--agent", "random", "--record", "/proc/no/such/dir/x.mp4", "--headless"], "x.mp4"),
    ("tfdqn-plot", ["fake-run", "--iqm", "--out", "curve.png"], "--iqm"),
    ("agent.export", ["no-such-run", "--format", "onnx"], "no-such-run"),
    ("tfdqn-export", ["fake-run", "--format", "pdf"], "pdf"),
    ("tfdqn-sweep", ["--seeds", "0", "--out", "sweep"], "--seeds"),
    ("classic", ["mnist", "--data", "garbage.npz", "--epochs", "1"], "garbage.npz"),
    ("bench/update_flops.py", ["--batch", "0"], "--batch"),
]


def refuse(tmp_path: Path, name: str, args: list[str], says: str) -> None:
    make_inputs(tmp_path)
    before = snapshot(tmp_path)
    done = subprocess.run([*program(name), *args], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr[-2000:]
    assert "allow_pickle" not in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == "", done.stdout  # refused before announcing anything
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name, args, says", LOADS_TENSORFLOW + EVERY_PROGRAM, ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_a_refusal_after_tensorflow_loads_is_still_one_quiet_line(tmp_path, name, args, says):
    refuse(tmp_path, name, args, says)


@pytest.mark.slow
@pytest.mark.parametrize("name, args, says", CHEAP, ids=lambda v: v if isinstance(v, str) and " " not in v else None)
def test_every_entry_point_refuses_in_one_line(tmp_path, name, args, says):
    refuse(tmp_path, name, args, says)
