"""play.py's window on a real X server (Xvfb), with TensorFlow loaded, driven by real X key events.

Every other window test uses SDL's dummy driver, which once hid a crash that
every user with Mesa's software OpenGL met: with TensorFlow in the process,
SDL's accelerated window framebuffer went through Mesa's llvmpipe, whose LLVM
calls resolved into the LLVM copy inside libtensorflow_framework.so
(segmentation fault in `pygame.display.set_mode`). These tests open the window
the way a user does: `python play.py ...` as a process on an X display, keys
typed with xdotool (the XTEST extension, as a keyboard would).

Xvfb and xdotool come from Debian's packages (`xvfb`, `xdotool`); `make test`
installs them when missing. Without them these tests are skipped with that
reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 120  # a hang fails the test instead of the suite

pytestmark = pytest.mark.skipif(
    shutil.which("Xvfb") is None or shutil.which("xdotool") is None,
    reason="Xvfb and xdotool are not installed (apt-get install xvfb xdotool; `make test` does it)",
)


@pytest.fixture(scope="module")
def display():
    """A private Xvfb display; `-displayfd` makes the server pick a free number and tell us."""
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    assert number, "Xvfb did not start"
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def x_env(display: str) -> dict[str, str]:
    """The user's environment: a real X display and no SDL driver forced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDL_")}
    env.update(DISPLAY=display, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("WAYLAND_DISPLAY", None)
    return env


def run_play(display: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "play.py"), *map(str, args)], env=x_env(display), cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def start_play(display: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "play.py"), *map(str, args)], env=x_env(display), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def type_keys(display: str, proc: subprocess.Popen, keys: list[str]) -> tuple[str, str]:
    """Wait for play.py's window, focus it, type `keys` (xdotool key names), and wait for the process to end."""
    env = {"DISPLAY": display, "PATH": os.environ.get("PATH", "")}
    try:
        found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--classname", "play.py"],
                               env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        assert found.returncode == 0 and found.stdout.split(), f"play.py's window never appeared: {found.stderr}"
        window = found.stdout.split()[0]
        subprocess.run(["xdotool", "windowfocus", "--sync", window], env=env, check=True, timeout=30)
        # A window can be focused a moment before its first key event is delivered: a leading Shift, which play.py ignores,
        # takes that moment, so the first key that matters (often `p`) is never the one lost (seen once in ~6 CI runs).
        subprocess.run(["xdotool", "key", "--delay", "40", "shift", *keys], env=env, check=True, timeout=60)
        out, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out, err


def crashed(returncode: int) -> str:
    return f"play.py died with signal {-returncode}" if returncode < 0 else f"play.py exited {returncode}"


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    """A CartPole run trained in-process for a few thousand env steps."""
    from agent.core.presets import resolve_config
    from agent.run.trainer import train

    path = tmp_path_factory.mktemp("cartpole")
    cfg = resolve_config(env_id="CartPole-v1", overrides={"total_steps": 3000, "eval_every": 0, "eval_episodes": 1, "final_eval_episodes": 1, "checkpoint_every": 0})
    train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def breakout_run(tmp_path_factory) -> Path:
    """A tiny Breakout run on the real ROM (a Nature CNN that has seen 300 env steps)."""
    from agent.core.presets import resolve_config
    from agent.run.trainer import train

    path = tmp_path_factory.mktemp("breakout")
    cfg = resolve_config(env_id="Breakout", overrides={
        "total_steps": 300, "replay_capacity": 2000, "learning_starts": 200, "train_freq": 16, "gradient_steps": 2,
        "eval_every": 0, "eval_episodes": 1, "eval_epsilon": 1.0, "checkpoint_every": 0})
    train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def recurrent_run(tmp_path_factory) -> Path:
    """A recurrent Q-network on CartPole with its velocities hidden, trained in-process for a few hundred env steps."""
    from agent.core.presets import resolve_config
    from agent.run.trainer import train

    path = tmp_path_factory.mktemp("recurrent")
    cfg = resolve_config(env_id="CartPole-v1", preset="cartpole-recurrent", overrides={
        "total_steps": 600, "learning_starts": 200, "lstm_units": 16, "gradient_steps": 16, "jit_compile": False, "eval_every": 0,
        "eval_episodes": 1, "final_eval_episodes": 1,
        "checkpoint_every": 0})
    train(cfg, path, progress=False)
    return path


def test_watch_a_recurrent_agent_in_a_real_window_with_its_hud(display, recurrent_run, tmp_path):
    """The recurrent agent's step model plays in the window (its state carried step to step); keys work as for any agent."""
    proc = start_play(display, recurrent_run, "--episodes", "1000", "--fps", "5", "--screenshot-dir", tmp_path)
    out, err = type_keys(display, proc, ["space", "period", "s", "q"])  # pause, one step, screenshot (HUD on), quit
    assert proc.returncode == 0, f"{crashed(proc.returncode)}: {err[-2000:]}"
    assert len(screenshots(tmp_path)) == 1, err


def test_watch_trained_cartpole_agent_in_a_real_window(display, cartpole_run):
    result = run_play(display, cartpole_run, "--episodes", "2", "--max-steps", "60", "--fps", "1000")
    assert result.returncode == 0, f"{crashed(result.returncode)}: {result.stderr[-2000:]}"
    assert re.search(r"^episode 2: \d+", result.stdout, re.M), result.stdout


def test_watch_breakout_agent_in_a_real_window_while_recording(display, breakout_run, tmp_path):
    video = tmp_path / "breakout.mp4"
    result = run_play(display, breakout_run, "--episodes", "1", "--max-steps", "40", "--fps", "1000", "--record", video)
    assert result.returncode == 0, f"{crashed(result.returncode)}: {result.stderr[-2000:]}"
    assert video.stat().st_size > 0


def screenshots(folder: Path) -> list[tuple[int, int, Path]]:
    """(episode, step, path) of each `s` screenshot, in play order."""
    shots = []
    for path in folder.glob("*.png"):
        m = re.search(r"-ep(\d+)-step(\d+)\.png$", path.name)
        assert m, path.name
        shots.append((int(m.group(1)), int(m.group(2)), path))
    return sorted(shots)


def test_keys_pause_step_screenshot_and_quit_on_a_real_window(display, cartpole_run, tmp_path):
    """Space pauses; each `.` advances exactly one env step; `s` saves what the window shows; `q` quits."""
    proc = start_play(display, cartpole_run, "--episodes", "1000", "--fps", "5", "--screenshot-dir", tmp_path)
    out, err = type_keys(display, proc, ["space", "s", "period", "s", "period", "s", "q"])
    assert proc.returncode == 0, f"{crashed(proc.returncode)}: {err[-2000:]}"
    shots = screenshots(tmp_path)
    assert len(shots) == 3, err
    (ep0, step0, _), (ep1, step1, _), (ep2, step2, _) = shots
    # While paused the game moves only on `.`, one env step each (a new episode starts at step 0).
    assert (ep1, step1) in ((ep0, step0 + 1), (ep0 + 1, 0))
    assert (ep2, step2) in ((ep1, step1 + 1), (ep1 + 1, 0))
    assert "stopped early" in out or ep0 == ep2

    import pygame

    from agent.rollout import hud

    image = pygame.surfarray.array3d(pygame.image.load(str(shots[-1][2]))).transpose(1, 0, 2)  # (H, W, RGB)
    assert image.shape == (400, 600 + hud.PANEL_WIDTH, 3)  # the CartPole frame and the HUD panel beside it
    game, panel = image[:, :600], image[:, 600:]
    assert (game == 255).all(axis=2).mean() > 0.5  # CartPole's white background
    assert (np.abs(game.astype(int) - (202, 152, 101)).sum(axis=2) < 30).any()  # the brown pole
    # The Q-value bars: one per action, drawn in the HUD's bar colours.
    bar_pixels = sum((panel == color).all(axis=2).sum() for color in (hud.BAR, hud.CHOSEN))
    assert bar_pixels > 200


def test_play_yourself_with_keys_on_a_real_window(display, tmp_path):
    """--human: `p` pauses, and an arrow tapped while paused is the action the next `.` takes.

    MountainCar, because its episodes cannot end early (200 env steps, 100 s at 2 fps):
    the three steps typed here always fall inside one episode.
    """
    demos = tmp_path / "demos.npz"
    proc = start_play(display, "--env", "MountainCar-v0", "--human", "--episodes", "100", "--fps", "2", "--save-demos", demos)
    out, err = type_keys(display, proc, ["p", "Right", "period", "Left", "period", "Right", "period", "q"])
    assert proc.returncode == 0, f"{crashed(proc.returncode)}: {err[-2000:]}"
    with np.load(demos) as data:
        actions, ended = data["actions"], data["terminated"] | data["truncated"]
    assert actions[-3:].tolist() == [2, 0, 2]  # MountainCar: 0 pushes left, 1 nothing, 2 right
    assert ended[-1] and not ended[:-1].any()  # quitting cuts the one episode at its last step
