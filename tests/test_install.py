"""The package as users install it: a wheel built from the repo, in a fresh venv, run from elsewhere.

An editable install or the checkout's own directory on sys.path can hide a
missing file (the presets once were not in the wheel, so `--env CartPole-v1`
silently fell back to generic defaults and `--env Breakout` failed).
Installing the dependencies takes a few minutes; pip's cache makes repeats faster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

# Installing TensorFlow into a fresh venv takes about 4 minutes here: this runs in `make test-all`
# (the slow tier), which keeps `make test` and CI well under their 15 minutes.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def sh(*args, cwd=None, timeout=900, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the wheel built from this checkout installed (with its dependencies)."""
    base = tmp_path_factory.mktemp("install")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", ROOT)
    wheels = list((base / "dist").glob("tfdqn-*.whl"))
    assert len(wheels) == 1, wheels
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / "bin"
    sh(bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", wheels[0])
    return bin_dir


def clean_env() -> dict[str, str]:
    """No PYTHONPATH pointing back at the checkout; headless SDL; quiet TensorFlow."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", TF_CPP_MIN_LOG_LEVEL="3")
    return env


def test_wheel_ships_every_preset_and_both_tools(installed, tmp_path):
    code = ("import agent.core.config as c, agent.core.presets as p, pathlib; "
            "print(pathlib.Path(c.__file__).parent); print(' '.join(p.available_presets()))")
    out = sh(installed / "python", "-c", code, cwd=tmp_path, env=clean_env()).stdout.split("\n")
    assert str(ROOT) not in out[0], "the checkout, not the installed package, was imported"
    assert out[1].split() == sorted(p.stem for p in (ROOT / "configs").glob("*.toml"))
    assert all((installed / f"tfdqn-{tool}").is_file() for tool in ("train", "play", "sweep", "export", "plot"))
    out = sh(installed / "tfdqn-sweep", "--help", cwd=tmp_path, env=clean_env()).stdout
    assert "--seeds" in out  # the help needs no Ray; a sweep without it is one line (tests/test_sweep.py)
    code = "import classic.corpora as c, gzip; print(len(gzip.open(c.shipped_text('pride-and-prejudice'), 'rt').read()))"
    assert sh(installed / "python", "-c", code, cwd=tmp_path, env=clean_env()).stdout.strip() == "684768"  # textgen's default text


def test_installed_tools_train_with_the_preset_and_play_from_another_directory(installed, tmp_path):
    env = clean_env()
    sh(installed / "tfdqn-train", "--env", "CartPole-v1", "--steps", "400", "--set", "learning_starts=100", "--eval-every", "0",
       "--eval-episodes", "1", "--run-dir", "run", "--no-progress", cwd=tmp_path, env=env)
    with (tmp_path / "run" / "config.toml").open("rb") as f:
        saved = tomllib.load(f)
    with (ROOT / "configs" / "cartpole.toml").open("rb") as f:
        preset = tomllib.load(f)
    assert saved["learning_rate"] == preset["learning"]["learning_rate"]  # the preset, not DQNConfig's generic defaults
    assert saved["train_freq"] == preset["replay"]["train_freq"]
    out = sh(installed / "tfdqn-play", "run", "--headless", "--episodes", "1", "--record", "run/v.mp4", cwd=tmp_path, env=env).stdout
    assert "episode 1:" in out and (tmp_path / "run" / "v.mp4").stat().st_size > 0
    # An Atari preset resolves from its short name too (one env step is enough to prove the config and ROM load).
    sh(installed / "tfdqn-train", "--env", "Breakout", "--steps", "1", "--set", "replay_capacity=1000", "--set", "learning_starts=10",
       "--eval-episodes", "1", "--run-dir", "breakout", "--no-progress", cwd=tmp_path, env=env)
    with (tmp_path / "breakout" / "config.toml").open("rb") as f:
        assert tomllib.load(f)["env_id"] == "ALE/Breakout-v5"
