"""play.py and the viewer (agent/viewer/window.py, hud.py, policies.py, episodes.py, recording.py): real pygame (SDL dummy driver), real mp4 files read back with cv2.

One tiny CartPole run is trained in-process per module (TensorFlow loads once);
the CLI is driven through click's CliRunner in the same process, and a
subprocess only where a real SIGINT is the point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame's display is initialised anywhere
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import play  # noqa: E402
from agent.rollout import hud
from agent.viewer import window as viewer  # noqa: E402
from agent.rollout.episodes import EpisodeRunner  # noqa: E402
from agent.dqn.policies import QPolicy, keras_q_fn, keyboard_mapping  # noqa: E402
from agent.rollout.recording import record_episodes  # noqa: E402
from agent.viewer.window import ViewOptions  # noqa: E402
from videos import read_video  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CARTPOLE_HUD_SIZE = (600 + hud.PANEL_WIDTH, 400)  # (width, height) of a CartPole frame with the HUD


@pytest.fixture(autouse=True)
def _dummy_video(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real (barely trained) CartPole run directory, made by agent.training.train in-process."""
    from agent.core.presets import resolve_config
    from agent.run.trainer import train

    path = tmp_path_factory.mktemp("run")
    cfg = resolve_config(env_id="CartPole-v1", overrides={
        "total_steps": 1200, "learning_starts": 500, "eval_every": 0, "eval_episodes": 1, "final_eval_episodes": 1,
        "checkpoint_every": 0, "log_every": 400, "jit_compile": False,
    })
    train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def model(run_dir):
    from agent.run.run_dir import RunDirectory

    return RunDirectory(run_dir).load_model()


def invoke(*args: str):
    result = CliRunner().invoke(play.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def episode_scores(stdout: str) -> list[float]:
    return [float(line.split(":")[1]) for line in stdout.splitlines() if line.startswith("episode ") and "stopped" not in line]


def assert_not_blank(frame: np.ndarray) -> None:
    assert frame.std() > 10, "the frame is (nearly) one colour"
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 8


# --------------------------------------------------------------------------- recording


def test_record_mp4_frame_count_size_and_content(run_dir, tmp_path):
    out = tmp_path / "videos" / "cartpole.mp4"
    result = invoke(run_dir, "--headless", "--record", out, "--episodes", 2, "--max-steps", 40, "--fps", 25)
    assert result.exit_code == 0, result.output
    scores = episode_scores(result.stdout)
    assert len(scores) == 2 and "mean" in result.stdout
    frames = read_video(out)
    # CartPole pays 1 per step, so a score is a length; each episode shows length + 1 states
    assert len(frames) == sum(scores) + 2
    assert frames[0].shape == (CARTPOLE_HUD_SIZE[1], CARTPOLE_HUD_SIZE[0], 3)
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FPS) == pytest.approx(25)
    for frame in frames[:: max(1, len(frames) // 5)]:
        assert_not_blank(frame)
        game = frame[:, :600]
        assert game.mean() > 150, "CartPole's background is white"
    assert not list(out.parent.glob(".*")), "no temp file is left behind"


def test_no_hud_records_the_game_frame_only(run_dir, tmp_path):
    out = tmp_path / "plain.mp4"
    result = invoke(run_dir, "--headless", "--record", out, "--episodes", 1, "--max-steps", 10, "--no-hud")
    assert result.exit_code == 0, result.output
    frames = read_video(out)
    assert len(frames) == 11 and frames[0].shape == (400, 600, 3)


def test_record_dir_writes_one_file_per_episode(run_dir, tmp_path):
    out = tmp_path / "episodes"
    result = invoke(run_dir, "--headless", "--record-dir", out, "--episodes", 3, "--max-steps", 15)
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.mp4"))
    assert [f.name for f in files] == [f"CartPole-v1-episode{i:03d}.mp4" for i in (1, 2, 3)]
    for f, score in zip(files, episode_scores(result.stdout)):
        assert len(read_video(f)) == score + 1


def test_hud_shows_the_networks_q_values(model):
    """The bars the HUD draws are model(obs) for the observation on screen, the chosen one is the argmax."""
    from envs import action_names, make_env

    env = make_env("CartPole-v1", seed=5, mode="play", render_mode="rgb_array")
    names = action_names(env)
    policy = QPolicy(keras_q_fn(model), 2, epsilon=0.0, seed=5)
    checked = 0
    for view in EpisodeRunner(env, policy, episodes=1, seed=5, max_steps=12):
        content = hud.hud_content(view, names)
        expected = model(view.obs[None], training=False).numpy()[0]
        np.testing.assert_allclose([b.value for b in content.bars], expected, rtol=1e-5, atol=1e-6)
        assert [b.name for b in content.bars] == ["LEFT", "RIGHT"]
        assert [b.chosen for b in content.bars].index(True) == int(np.argmax(expected))
        if not view.done:
            assert view.action == int(np.argmax(expected))
            assert dict(content.lines)["action"] == names[view.action]
        hud.compose(view, names, scale=1)  # and it draws
        checked += 1
    env.close()
    assert checked == 13


def test_save_demos_round_trip(run_dir, tmp_path):
    path = tmp_path / "demos.npz"
    result = invoke(run_dir, "--headless", "--save-demos", path, "--episodes", 2, "--max-steps", 30)
    assert result.exit_code == 0, result.output
    scores = episode_scores(result.stdout)
    with np.load(path, allow_pickle=False) as d:
        assert set(d.files) == {"obs", "actions", "rewards", "terminated", "truncated", "env_id"}
        n = int(sum(scores))
        assert d["obs"].shape == (n, 4) and d["obs"].dtype == np.float32
        assert d["actions"].shape == (n,) and d["actions"].dtype == np.int64
        assert d["rewards"].dtype == np.float32 and d["rewards"].sum() == pytest.approx(sum(scores))
        assert d["terminated"].dtype == bool and d["truncated"].dtype == bool
        assert int((d["terminated"] | d["truncated"]).sum()) == 2, "each episode ends exactly once"
        assert d["env_id"].shape == () and str(d["env_id"]) == "CartPole-v1"
        assert set(np.unique(d["actions"])) <= {0, 1}


# --------------------------------------------------------------------------- --best, --epsilon, --scale


@pytest.fixture(scope="module")
def two_model_run(run_dir, tmp_path_factory) -> Path:
    """A copy of the run whose final network always pushes left (0) and whose best network always pushes right (1)."""
    from agent.run.run_dir import RunDirectory

    path = tmp_path_factory.mktemp("two-models")
    for name in ("config.toml", "meta.json"):
        (path / name).write_bytes((run_dir / name).read_bytes())
    for which, preferred in (("final", 0), ("best", 1)):
        model = RunDirectory(run_dir).load_model()
        kernel, bias = model.get_layer("q").get_weights()
        bias = np.zeros_like(bias)
        bias[preferred] = 1.0
        model.get_layer("q").set_weights([np.zeros_like(kernel), bias])
        RunDirectory(path).save_model(model, which=which)
    return path


def played_actions(run: Path, tmp_path: Path, *args) -> np.ndarray:
    demos = tmp_path / f"demos-{len(list(tmp_path.glob('demos-*')))}.npz"
    result = invoke(run, "--headless", "--save-demos", demos, "--episodes", 3, "--max-steps", 40, *args)
    assert result.exit_code == 0, result.output
    with np.load(demos) as d:
        return d["actions"]


def test_best_plays_the_best_network_and_epsilon_explores(two_model_run, tmp_path):
    assert set(played_actions(two_model_run, tmp_path).tolist()) == {0}  # model.keras, greedy (CartPole's default epsilon is 0)
    assert set(played_actions(two_model_run, tmp_path, "--best").tolist()) == {1}  # best_model.keras
    explored = played_actions(two_model_run, tmp_path, "--epsilon", 1.0)
    assert set(explored.tolist()) == {0, 1} and len(explored) > 20  # every action random: the network's 0 is not followed
    assert set(played_actions(two_model_run, tmp_path, "--best", "--epsilon", 0.0).tolist()) == {1}


def test_scale_enlarges_the_game_frame(run_dir, tmp_path):
    frames = {}
    for scale in (1, 2):
        out = tmp_path / f"x{scale}.mp4"
        result = invoke(run_dir, "--headless", "--record", out, "--episodes", 1, "--max-steps", 5, "--no-hud", "--scale", scale)
        assert result.exit_code == 0, result.output
        frames[scale] = read_video(out)
    assert len(frames[1]) == len(frames[2]) == 6
    assert frames[1][0].shape == (400, 600, 3) and frames[2][0].shape == (800, 1200, 3)
    for small, big in zip(frames[1], frames[2]):  # the same picture, twice as large (H.264 is lossy: compared on average)
        shrunk = cv2.resize(big, (600, 400), interpolation=cv2.INTER_AREA)
        # ~0.09 here; the neighbouring state's frame is ~0.3-0.4 away, the unscaled top-left corner ~3
        assert np.abs(shrunk.astype(int) - small.astype(int)).mean() < 0.25
    result = invoke(run_dir, "--headless", "--record", tmp_path / "hud.mp4", "--episodes", 1, "--max-steps", 2, "--scale", 2)
    assert result.exit_code == 0, result.output
    assert read_video(tmp_path / "hud.mp4")[0].shape == (800, 1200 + hud.PANEL_WIDTH, 3)


# --------------------------------------------------------------------------- interruption


def test_interrupted_recording_leaves_a_playable_file(tmp_path):
    out = tmp_path / "cut.mp4"
    views = []

    def stop(view):
        views.append(view)
        if len(views) == 30:  # Ctrl-C in the middle of the loop, after 30 frames were written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record_episodes(None, "CartPole-v1", out, episodes=50, seed=0, on_view=stop)
    frames = read_video(out)
    assert len(frames) == 30 and frames[0].shape == (400, CARTPOLE_HUD_SIZE[0], 3)
    assert_not_blank(frames[-1])


def test_random_play_starts_without_tensorflow():
    """No network plays, so TensorFlow (seconds to import) never loads: the random agent starts at once."""
    from entry_points import run_entry_point

    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = run_entry_point("play", "--env", "CartPole-v1", "--agent", "random", "--headless", "--episodes", 1, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "episode 1:" in proc.stdout and "heavy modules loaded: []" in proc.stdout, proc.stdout


def test_sigint_leaves_a_playable_file(tmp_path):
    """A real Ctrl-C to the real command: exit 130, the video is finalized."""
    out = tmp_path / "sigint.mp4"
    part = tmp_path / ".sigint.part.mp4"
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy"}
    proc = subprocess.Popen(
        [sys.executable, "play.py", "--env", "CartPole-v1", "--agent", "random", "--headless",
         "--record", str(out), "--episodes", "100000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job (CI, nohup) starts with SIGINT ignored, and Python then keeps ignoring it:
        # give the child the default disposition a terminal's foreground process has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    # Ctrl-C once frames are reaching the file (H.264 is compact: a few KB are many frames); a hang fails, it does not fire early.
    deadline = time.monotonic() + 180
    while not (part.exists() and part.stat().st_size > 2_000):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"play.py never started writing {part}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)  # finishing the H.264 file takes a moment on a busy machine
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    frames = read_video(out)
    assert len(frames) > 10
    assert_not_blank(frames[-1])


# --------------------------------------------------------------------------- the window (SDL dummy driver)


def post_key(events, key: int, char: str = "") -> None:
    import pygame

    events.post(pygame.event.Event(pygame.KEYDOWN, key=key, unicode=char, mod=0, scancode=0))


class FakeClock:
    """pygame's Clock without the sleep: the test runs at the speed of the machine, and ticks are recorded."""

    ticks: list[float] = []

    def tick(self, fps: float = 0) -> int:
        FakeClock.ticks.append(fps)
        return 0


def test_window_keys_screenshot_pause_step_speed_and_quit(run_dir, tmp_path, monkeypatch):
    """What each key does, frame by frame: space freezes the game, `.` moves it on by exactly one state and leaves it
    paused, space again resumes, `+`/`-` change the speed by 1.5x, `s` saves the frame on screen, `q` ends at once.
    A key that does nothing fails the frame bound here instead of hanging the suite."""
    import pygame

    FakeClock.ticks = []
    monkeypatch.setattr(pygame.time, "Clock", FakeClock)
    drawn = []  # (index of the state on screen, paused, fps) for every frame the window shows
    seen = []
    real_status = viewer.draw_status

    def status(screen, paused, recording, fps):
        drawn.append((len(seen) - 1, paused, fps))
        assert len(drawn) < 200, f"the window is stuck: {drawn[:20]}"
        frozen = [d for d in drawn if d[1]]
        # keys typed while paused: `.` after 3 frozen frames on state 3, space and `+` after 3 frozen frames on state 4
        if paused and len(frozen) == 3 and frozen[-1][0] == 3:
            post_key(pygame.event, pygame.K_PERIOD, ".")
        if paused and len(frozen) == 6 and frozen[-1][0] == 4:
            post_key(pygame.event, pygame.K_SPACE, " ")
            post_key(pygame.event, pygame.K_PLUS, "+")
        real_status(screen, paused, recording, fps)

    def keys(view, events):
        seen.append(view)
        if len(seen) == 4:
            post_key(events, pygame.K_s, "s")
            post_key(events, pygame.K_SPACE, " ")  # pause
        if len(seen) == 7:
            post_key(events, pygame.K_MINUS, "-")
        if len(seen) == 9:
            post_key(events, pygame.K_q, "q")

    monkeypatch.setattr(viewer, "draw_status", status)
    scores, stopped = viewer.play(ViewOptions(run_dir=str(run_dir), episodes=5, fps=200, max_steps=100, screenshot_dir=str(tmp_path)), on_view=keys)
    assert len(seen) == 9, "q ends the session at once"
    assert stopped == (None if seen[-1].done else seen[-1].score)
    # Frame by frame: states 0-2 running, state 3 shown running then frozen for 3 frames, `.` shows state 4, still
    # frozen (3 frames); space resumes and `+` speeds up to 300 fps; `-` at state 6 slows to 200 again.
    expected = [(0, False, 200), (1, False, 200), (2, False, 200), (3, False, 200), (3, True, 200), (3, True, 200), (3, True, 200),
                (4, True, 200), (4, True, 200), (4, True, 200), (5, False, 300), (6, False, 300), (7, False, 200), (8, False, 200)]
    assert drawn == expected
    # Paused, the window redraws at 30/s; the `.` step goes at the game's speed.
    assert FakeClock.ticks == [200, 200, 200, 30, 30, 30, 200, 30, 30, 300, 300, 200, 200]
    shot = tmp_path / f"CartPole-v1-ep{seen[3].episode}-step{seen[3].step}.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == [shot.name]
    image = cv2.imread(str(shot))
    assert image.shape == (400, CARTPOLE_HUD_SIZE[0], 3)
    assert_not_blank(image)


def test_closing_the_window_finishes_the_recording(run_dir, tmp_path):
    import pygame

    out = tmp_path / "closed.mp4"

    def close(view, events):
        if view.step == 15:
            events.post(pygame.event.Event(pygame.QUIT))

    scores, stopped = viewer.play(ViewOptions(run_dir=str(run_dir), episodes=1, fps=1000, record_path=str(out), max_steps=100), on_view=close)
    if stopped is None:  # the barely trained agent fell before step 15
        assert len(read_video(out)) == scores[0] + 1
    else:
        assert len(read_video(out)) == 16


def test_r_key_starts_and_stops_a_recording(tmp_path, monkeypatch):
    import pygame

    monkeypatch.chdir(tmp_path)

    seen = []

    def keys(view, events):
        seen.append(view)
        if len(seen) == 3:
            post_key(events, pygame.K_r, "r")
        if len(seen) == 8:
            post_key(events, pygame.K_r, "r")
            post_key(events, pygame.K_q, "q")

    viewer.play(ViewOptions(env_id="CartPole-v1", agent="random", episodes=5, fps=1000, seed=1), on_view=keys)
    files = list((tmp_path / "recordings").glob("*.mp4"))
    assert len(files) == 1 and len(read_video(files[0])) == 5  # the 4th to the 8th frame


def test_human_play_reads_keys_and_saves_demos(tmp_path):
    import pygame

    path = tmp_path / "human.npz"

    def keys(view, events):
        post_key(events, pygame.K_LEFT if view.step < 5 else pygame.K_RIGHT)
        if view.step == 9:
            post_key(events, pygame.K_ESCAPE)

    scores, stopped = viewer.play(ViewOptions(env_id="CartPole-v1", human=True, episodes=1, fps=1000, save_demos=str(path)), on_view=keys)
    with np.load(path, allow_pickle=False) as d:
        # the key pressed while frame k shows is the action taken from state k
        assert d["actions"].tolist() == [0] * 5 + [1] * 4
        assert d["truncated"].tolist() == [False] * 8 + [True], "quitting cuts the episode: truncated, not terminal"
        assert not d["terminated"].any()


def test_keyboard_mapping_cartpole():
    from envs import make_env

    env = make_env("CartPole-v1", seed=0, mode="play")
    mapping = keyboard_mapping(env, "CartPole-v1")
    assert mapping({"left"}) == 0 and mapping({"right"}) == 1
    assert {mapping(set()), mapping(set())} == {0, 1}, "no key: alternate pushes"


# --------------------------------------------------------------------------- bad input


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_missing_run_dir(tmp_path):
    assert "does not exist" in one_error_line(invoke(tmp_path / "nope", "--headless"))


def test_run_dir_without_model(run_dir, tmp_path):
    for name in ("config.toml", "meta.json"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    assert "model.keras is missing" in one_error_line(invoke(tmp_path, "--headless"))


def test_corrupt_model(run_dir, tmp_path):
    (tmp_path / "config.toml").write_bytes((run_dir / "config.toml").read_bytes())
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 this is not a keras file")
    assert "not a readable Keras model" in one_error_line(invoke(tmp_path, "--headless"))


def test_unwritable_video_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_error_line(invoke("--env", "CartPole-v1", "--agent", "random", "--headless", "--record", blocker / "out.mp4"))
    assert "cannot write video" in line
    line = one_error_line(invoke("--env", "CartPole-v1", "--agent", "random", "--headless", "--record-dir", blocker / "dir"))
    assert "--record-dir" in line


def test_no_display_without_headless(monkeypatch):
    for name in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    line = one_error_line(invoke("--env", "CartPole-v1", "--agent", "random"))
    assert "no display" in line and "--headless" in line


def test_human_without_keyboard_mapping():
    assert "no keyboard mapping for Acrobot-v1" in one_error_line(invoke("--env", "Acrobot-v1", "--human"))


@pytest.mark.parametrize("args, words", [
    ((), "nothing to play"),
    (("--env", "CartPole-v1"), "--agent random"),
    (("--env", "NoSuchEnv-v0", "--agent", "random", "--headless"), "unknown env id"),
])
def test_other_bad_combinations(args, words):
    assert words in one_error_line(invoke(*args))


# --------------------------------------------------------------------------- Atari


def test_breakout_recording_on_the_real_rom(tmp_path):
    """The Atari path end to end: 84x84x4 network input, 160x210 RGB frames shown at 3x, HUD Q-values."""
    import keras

    from agent.dqn.networks import build_q_network
    from envs import action_names, make_env

    keras.utils.set_random_seed(0)
    net = build_q_network((84, 84, 4), np.uint8, 4)
    q_fn = keras_q_fn(net)
    out = tmp_path / "breakout.mp4"
    seen = []
    scores = record_episodes(q_fn, "ALE/Breakout-v5", out, episodes=1, seed=0, epsilon=0.05, fps=30, max_steps=40, on_view=seen.append)
    assert len(scores) == 1
    assert seen[0].obs.shape == (84, 84, 4) and seen[0].obs.dtype == np.uint8
    assert seen[0].frame.shape == (210, 160, 3)
    frames = read_video(out)
    assert len(frames) == len(seen) == 41
    assert frames[0].shape == (630, 480 + hud.PANEL_WIDTH, 3)
    assert_not_blank(frames[-1][:, :480])

    env = make_env("ALE/Breakout-v5", seed=0, mode="play", render_mode="rgb_array")
    names = action_names(env)
    view = seen[10]
    np.testing.assert_allclose([b.value for b in hud.hud_content(view, names).bars], net(view.obs[None]).numpy()[0], rtol=1e-5, atol=1e-6)
    mapping = keyboard_mapping(env, "ALE/Breakout-v5")
    assert [names[mapping(k)] for k in ({"fire"}, {"left"}, {"right"}, set(), {"left", "fire"})] == ["FIRE", "LEFT", "RIGHT", "NOOP", "LEFT"]
    env.close()


def test_breakout_alias_random_agent_cli(tmp_path):
    out = tmp_path / "b.mp4"
    result = invoke("--env", "Breakout", "--agent", "random", "--headless", "--record", out, "--episodes", 1, "--max-steps", 30)
    assert result.exit_code == 0, result.output
    frames = read_video(out)
    assert len(frames) == 31  # a random Breakout game outlives 30 steps
    assert frames[0].shape == (630, 480 + hud.PANEL_WIDTH, 3)
