"""Playing episodes for people to see: the HUD, mp4 videos and demonstrations.

One drawing path serves the pygame window of `play.py`, the videos that
`record_episodes` writes (also called from training) and the screenshots:
a game frame from `env.render()` (full resolution RGB, not the 84x84 network
input) is scaled up nearest-neighbour, a heads-up panel is drawn beside it
with pygame onto a Surface, and the same Surface goes to the window, to
the H.264 video writer (ffmpeg from imageio-ffmpeg) and to PNG files.

No TensorFlow is imported unless `keras_q_fn` is called, so watching a random
agent or playing yourself starts in a second.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import cv2  # noqa: E402
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402

from agent.errors import UserError  # noqa: E402
from agent.demos import DemoRecorder  # noqa: E402

QFn = Callable[[np.ndarray], np.ndarray]  # obs batch (B, *obs_shape) -> Q-values (B, num_actions)

PANEL_WIDTH = 280  # px; even, so video sizes stay even
MIN_HEIGHT = 320  # px; room for the HUD text under short frames
BACKGROUND = (24, 26, 32)
TEXT = (230, 230, 230)
DIM = (150, 155, 165)
BAR = (90, 110, 150)
CHOSEN = (255, 170, 40)


def default_epsilon(env_id: str) -> float:
    """0 for classic control; 0.05 on Atari, where a greedy agent can stall forever (Mnih et al. 2015)."""
    from envs import is_atari

    return 0.05 if is_atari(env_id) else 0.0


def default_scale(frame_shape: tuple[int, ...]) -> int:
    """Atari's 160x210 frames are tiny on a screen: 3x; CartPole's 600x400 stays native."""
    return 3 if frame_shape[0] < 300 else 1


# --------------------------------------------------------------------------- policies


def keras_q_fn(model) -> QFn:
    """A `q_fn` from a Keras Q-network: one traced `tf.function`, never `model.predict` per step."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], dtype=model.inputs[0].dtype)
    call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda obs_batch: call(obs_batch).numpy()


class QPolicy:
    """Greedy on the Q-values, random with probability `epsilon`."""

    def __init__(self, q_fn: QFn, num_actions: int, epsilon: float = 0.0, seed: int | None = None):
        self.q_fn, self.num_actions, self.epsilon = q_fn, num_actions, epsilon
        self.rng = np.random.default_rng(seed)

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.q_fn(obs[None]))[0]

    def __call__(self, obs: np.ndarray) -> tuple[int, np.ndarray | None, bool]:
        """Returns (action, Q-values of `obs`, whether the action was a random one)."""
        q = self.q_values(obs)
        if self.epsilon > 0 and self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.num_actions)), q, True
        return int(np.argmax(q)), q, False


class RandomPolicy:
    """Uniformly random actions; it has no Q-values to show."""

    def __init__(self, num_actions: int, seed: int | None = None):
        self.num_actions = num_actions
        self.rng = np.random.default_rng(seed)

    def q_values(self, obs: np.ndarray) -> None:
        return None

    def __call__(self, obs: np.ndarray) -> tuple[int, None, bool]:
        return int(self.rng.integers(self.num_actions)), None, False  # "(random)" marks epsilon moves only


# --------------------------------------------------------------------------- episodes


@dataclass
class StepView:
    """One state as a person sees it: the frame, the score so far, and what the agent does next."""

    episode: int  # 1-based
    episodes: int  # how many will be played
    step: int  # env steps taken so far in this episode
    score: float  # undiscounted return so far (real rewards, not clipped)
    obs: np.ndarray  # the observation as the network sees it
    frame: np.ndarray  # env.render(): full-resolution RGB uint8 (H, W, 3)
    q_values: np.ndarray | None  # Q(obs, .) of the network, None for random/human play
    action: int | None  # the action about to be taken; None once the episode is over
    explored: bool  # the action was random (epsilon) rather than greedy
    done: bool  # the episode has ended; this is its last frame


def check_writable_file(path: str | Path, what: str) -> Path:
    """Create the parent folder and prove it can be written before any episode is played.

    Raises:
        UserError: if the folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {str(path)!r} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {what} {str(path)!r}: {e.strerror or e}") from None
    return path


def check_writable_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    check_writable_file(path / "probe", what)
    return path


class EpisodeRunner:
    """Plays episodes and yields a `StepView` per state; the consumer decides the pace.

    A window pauses by not asking for the next view; a video asks as fast as it
    can. Each episode gives `length + 1` views: the first state, the state
    after each step, the last one with `done=True`. Episode i resets with seed
    `seed + i`, so the same seed replays the same episodes.
    """

    def __init__(
        self,
        env: gym.Env,
        policy: Callable[[np.ndarray], tuple[int, np.ndarray | None, bool]],
        *,
        episodes: int = 1,
        seed: int | None = 0,
        max_steps: int | None = None,
        demos: DemoRecorder | None = None,
    ):
        self.env, self.policy = env, policy
        self.episodes, self.seed, self.max_steps, self.demos = episodes, seed, max_steps, demos
        self.scores: list[float] = []  # returns of the finished episodes
        self.lengths: list[int] = []
        self.current: StepView | None = None  # the last view handed out

    def __iter__(self) -> Iterator[StepView]:
        env = self.env
        for i in range(self.episodes):
            obs, _ = env.reset(seed=None if self.seed is None else self.seed + i)
            score, step, done = 0.0, 0, False
            while True:
                capped = self.max_steps is not None and step >= self.max_steps
                if done or capped:
                    q = self.policy.q_values(obs) if hasattr(self.policy, "q_values") else None
                    self.current = StepView(i + 1, self.episodes, step, score, obs, env.render(), q, None, False, True)
                    if self.demos is not None:
                        self.demos.cut()
                    self.scores.append(score)
                    self.lengths.append(step)
                    yield self.current
                    break
                if getattr(self.policy, "chooses_when_stepping", False):
                    # A person decides after seeing the state: read the keys when the step is taken.
                    self.current = StepView(i + 1, self.episodes, step, score, obs, env.render(), None, None, False, False)
                    yield self.current
                    action, q, explored = self.policy(obs)
                else:
                    # An agent's choice is shown with the state it was made in.
                    action, q, explored = self.policy(obs)
                    self.current = StepView(i + 1, self.episodes, step, score, obs, env.render(), q, action, explored, False)
                    yield self.current
                next_obs, reward, terminated, truncated, info = env.step(action)
                if self.demos is not None:
                    self.demos.add(obs, action, float(reward), terminated, truncated, info.get("lives"))
                obs, score, step = next_obs, score + float(reward), step + 1
                done = terminated or truncated

    def stop(self) -> None:
        """The player quit mid-episode: the demonstrations end truncated there."""
        if self.demos is not None:
            self.demos.cut()


# --------------------------------------------------------------------------- drawing


@dataclass(frozen=True)
class HudBar:
    name: str
    value: float
    chosen: bool


@dataclass(frozen=True)
class HudContent:
    """Exactly what the heads-up panel shows; tests compare these numbers with the network."""

    lines: list[tuple[str, str]]  # (label, value)
    bars: list[HudBar]  # one per action, empty without Q-values


def hud_content(view: StepView, action_names: list[str], title: str = "") -> HudContent:
    """The text lines and the Q-value bars for one state."""
    if view.action is None:
        action = "episode over"
    else:
        action = action_names[view.action] + (" (random)" if view.explored else "")
    lines = [
        ("", title),
        ("episode", f"{view.episode} / {view.episodes}"),
        ("step", f"{view.step}"),
        ("score", f"{view.score:g}"),
        ("action", action),
    ]
    bars = []
    if view.q_values is not None:
        q = np.asarray(view.q_values, dtype=np.float64)
        chosen = view.action if view.action is not None else int(np.argmax(q))
        bars = [HudBar(action_names[a], float(q[a]), a == chosen) for a in range(len(q))]
    return HudContent(lines, bars)


_fonts: dict[int, pygame.font.Font] = {}
pygame.register_quit(_fonts.clear)  # gymnasium's classic envs call pygame.quit() on close; using a dead Font segfaults


def _font(size: int) -> pygame.font.Font:
    if not pygame.font.get_init():
        _fonts.clear()
        pygame.font.init()
    if size not in _fonts:
        _fonts[size] = pygame.font.Font(None, size)  # pygame's bundled font: no system fonts needed
    return _fonts[size]


def draw_hud(surface: pygame.Surface, rect: pygame.Rect, content: HudContent) -> None:
    """Draw the panel: labelled lines, then one bar per action around a zero line."""
    surface.fill(BACKGROUND, rect)
    x, y = rect.x + 14, rect.y + 12
    width = rect.width - 28
    big, small = _font(26), _font(20)
    for label, value in content.lines:
        if not label:
            surface.blit(big.render(value, True, TEXT), (x, y))
            y += 30
            continue
        surface.blit(small.render(label, True, DIM), (x, y))
        surface.blit(big.render(value, True, TEXT), (x + 70, y - 3))
        y += 26
    if not content.bars:
        return
    # Q-values of one state are often close (45.75 vs 45.70): bars from zero would all look equal, so the
    # bars show each value minus their mean around a centre line, and the numbers give the values themselves.
    y += 8
    surface.blit(small.render("Q-values  (bars: Q - mean Q)", True, DIM), (x, y))
    y += 22
    values = np.array([b.value for b in content.bars])
    centred = values - values.mean()
    half = float(np.abs(centred).max()) or 1.0
    row = max(10, min(34, (rect.bottom - 34 - y) // len(content.bars)))  # the window's status line sits below
    bar_x, bar_w = x + 78, width - 78 - 64
    mid_x = bar_x + bar_w // 2
    top = y
    for bar, offset in zip(content.bars, centred):
        color = CHOSEN if bar.chosen else BAR
        font = _font(min(20, row + 4))
        surface.blit(font.render(bar.name[:10], True, CHOSEN if bar.chosen else TEXT), (x, y + 2))
        end_x = mid_x + round(offset / half * (bar_w // 2))
        left, right = sorted((mid_x, end_x))
        pygame.draw.rect(surface, color, pygame.Rect(left, y + 2, max(2, right - left), max(4, row - 8)))
        surface.blit(font.render(f"{bar.value:.2f}", True, color), (bar_x + bar_w + 6, y + 2))
        y += row
    pygame.draw.line(surface, DIM, (mid_x, top), (mid_x, y - 6))


def game_surface(frame: np.ndarray, scale: int) -> pygame.Surface:
    """The RGB frame as a Surface, scaled by an integer factor without smoothing (crisp pixels)."""
    surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
    if scale != 1:
        surf = pygame.transform.scale(surf, (surf.get_width() * scale, surf.get_height() * scale))
    return surf


def compose(view: StepView, action_names: list[str], *, scale: int, hud: bool = True, title: str = "") -> pygame.Surface:
    """The picture for one state: the scaled game, and the HUD panel to its right if `hud`."""
    game = game_surface(view.frame, scale)
    if not hud:
        return game
    width = game.get_width() + PANEL_WIDTH
    height = max(game.get_height(), MIN_HEIGHT)
    canvas = pygame.Surface((width, height))
    canvas.fill(BACKGROUND)
    canvas.blit(game, (0, (height - game.get_height()) // 2))
    draw_hud(canvas, pygame.Rect(game.get_width(), 0, PANEL_WIDTH, height), hud_content(view, action_names, title))
    return canvas


def surface_to_rgb(surface: pygame.Surface) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a Surface (pygame arrays are indexed x first)."""
    return np.ascontiguousarray(pygame.surfarray.array3d(surface).transpose(1, 0, 2))


# --------------------------------------------------------------------------- video


class VideoRecorder:
    """An H.264 (yuv420p) mp4 that browsers play, streamed to ffmpeg and finalized even when play is interrupted.

    Frames are piped one by one (never a whole episode in memory) to the ffmpeg
    binary that the `imageio-ffmpeg` wheel ships, which encodes them with
    libx264 into a hidden temp file next to `path`. A small writer thread
    feeds the pipe, so a Ctrl-C in the main thread can never land inside a
    pipe write (imageio-ffmpeg kills ffmpeg then, leaving a file without its
    index). `close()` (call it in a `finally`, or use `with`) ends the stream,
    waits for ffmpeg to write the index (moved to the front, `+faststart`, so
    a browser can start playing before the download ends) and renames the
    file into place. A file is created only once a frame has been written.
    yuv420p needs an even width and height: odd sizes are padded with black.

    Without imageio-ffmpeg, or when its ffmpeg cannot start or lacks libx264,
    `cv2.VideoWriter` writes MPEG-4 Part 2 (fourcc mp4v) instead, which
    desktop players play but browsers do not; one warning line on stderr says
    so and why.
    """

    QUEUE_FRAMES = 4  # frames waiting for ffmpeg at most: bounds memory, lets encoding overlap play
    _libx264: dict[str, bool] = {}  # ffmpeg executable -> has the libx264 encoder (asked once per process)

    def __init__(self, path: str | Path, fps: float):
        self.path = check_writable_file(path, "video")
        self.fps = float(fps)
        self.tmp = self.path.with_name(f".{self.path.stem}.part{self.path.suffix or '.mp4'}")
        self.writer: cv2.VideoWriter | None = None  # the mp4v fallback
        self.size: tuple[int, int] | None = None  # (width, height) as written
        self.frames = 0
        self.codec: str | None = None  # "h264" or "mp4v" once the first frame opened a writer
        self._queue: queue.Queue[bytes | None] | None = None  # frames for the ffmpeg writer thread
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # what stopped the writer thread

    def write(self, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"a video frame is (H, W, 3) uint8 RGB, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        if self._thread is None and self.writer is None:
            self.size = (w + w % 2, h + h % 2)  # yuv420p and mp4v want even sizes; pad, never crop
            self._open()
        if (w, h) != self.size:
            rgb = cv2.copyMakeBorder(rgb, 0, self.size[1] - h, 0, self.size[0] - w, cv2.BORDER_CONSTANT, value=0)
        if self._thread is not None:
            if self._error is not None:
                raise self._fail()
            self._queue.put(np.ascontiguousarray(rgb).tobytes())  # a copy: the caller may reuse its buffer
        else:
            self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def write_surface(self, surface: pygame.Surface) -> None:
        self.write(surface_to_rgb(surface))

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None if no frame was written.

        Raises:
            UserError: if ffmpeg failed and there is no playable file.
        """
        if self._thread is not None:
            error = self._stop_thread()
            if error is None and not (self.tmp.is_file() and self.tmp.stat().st_size > 0):
                error = RuntimeError("it wrote no file")
            if error is not None:
                raise self._fail(error)
        elif self.writer is not None:
            self.writer.release()
            self.writer = None
        else:
            return None
        os.replace(self.tmp, self.path)
        return self.path

    def __enter__(self) -> VideoRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _open(self) -> None:
        reason = self._open_h264()
        if reason is None:
            self.codec = "h264"
            return
        print(f"warning: video {str(self.path)!r} is MPEG-4 Part 2 (mp4v), which browsers do not play: {reason}", file=sys.stderr)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self.writer.isOpened():
            self.writer = None
            raise UserError(f"cannot open a video writer for {str(self.path)!r} ({reason}, and opencv has no mp4v encoder or the path is not writable)")
        self.codec = "mp4v"

    def _open_h264(self) -> str | None:
        """Start ffmpeg and the thread that feeds it; None, or why H.264 cannot be written."""
        try:
            import imageio_ffmpeg
        except ImportError:
            return "imageio-ffmpeg is not installed (pip install imageio-ffmpeg)"
        try:
            exe = imageio_ffmpeg.get_ffmpeg_exe()
            if exe not in VideoRecorder._libx264:
                encoders = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60).stdout
                VideoRecorder._libx264[exe] = " libx264 " in encoders
            if not VideoRecorder._libx264[exe]:
                return f"the ffmpeg at {exe} has no libx264 encoder"
            faststart = ["-movflags", "+faststart"] if self.tmp.suffix.lower() in (".mp4", ".m4v", ".mov") else []
            gen = imageio_ffmpeg.write_frames(
                str(self.tmp), self.size, fps=self.fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=None,  # libx264's own default (crf 23) keeps the HUD text crisp
                macro_block_size=2,  # the size is already even: no rescaling by ffmpeg
                ffmpeg_log_level="error", output_params=faststart,
            )
            gen.send(None)  # runs up to the first `yield`: ffmpeg is started
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            return f"imageio-ffmpeg's ffmpeg cannot start ({e})"
        self._queue = queue.Queue(maxsize=self.QUEUE_FRAMES)
        self._error = None
        self._thread = threading.Thread(target=self._feed, args=(gen,), name=f"ffmpeg {self.path.name}", daemon=True)
        self._thread.start()
        return None

    def _feed(self, gen) -> None:
        """The writer thread: frames from the queue to ffmpeg's stdin until None; then ffmpeg finishes the file."""
        try:
            while (frame := self._queue.get()) is not None:
                gen.send(frame)
        except BaseException as e:  # ffmpeg died (its own message went to stderr)
            self._error = e
            while self._queue.get() is not None:  # keep taking frames so write() never blocks
                pass
        finally:
            gen.close()  # closes ffmpeg's stdin and waits while it writes the index

    def _stop_thread(self) -> BaseException | None:
        self._queue.put(None)
        self._thread.join()
        self._thread = self._queue = None
        return self._error

    def _fail(self, error: BaseException | None = None) -> UserError:
        """Stop the writer, drop the temp file; the one-line error to raise."""
        if self._thread is not None:
            error = self._stop_thread() or error
        self.tmp.unlink(missing_ok=True)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return UserError(f"ffmpeg failed writing video {str(self.path)!r}: {first_line}")


def record_episodes(
    q_fn: QFn | None,
    env_id: str,
    out_path: str | Path,
    *,
    episodes: int = 1,
    seed: int = 0,
    epsilon: float = 0.0,
    fps: float = 30,
    hud: bool = True,
    max_steps: int | None = None,
    scale: int | None = None,
    on_view: Callable[[StepView], None] | None = None,
    pixels: bool = False,
    pixel_view: str = "full",
) -> list[float]:
    """Play `episodes` episodes headless and write them to one mp4; returns their scores.

    Args:
        q_fn: maps an observation batch to Q-values (B, num_actions); None plays randomly.
        env_id: built with `make_env(env_id, mode="play", render_mode="rgb_array")`.
        out_path: the mp4 file; its folder is created.
        episodes: episode i resets with seed `seed + i`.
        epsilon: probability of a random action.
        fps: frame rate of the video (one frame per env step).
        hud: burn the heads-up panel (score, action, Q-value bars) into the video.
        max_steps: cut episodes after this many env steps (None: play them out).
        scale: integer upscaling of the frame; default 3 for Atari, 1 otherwise.
        on_view: called with each state after its frame is written (progress, tests).
        pixels: the agent observes rendered frames (a `--pixels` run).
        pixel_view: which part of the frame it observes (the run's `pixel_view`).

    Returns:
        The score (undiscounted return) of each episode; a cut episode counts what it got.

    Raises:
        UserError: if the video cannot be written or the env id is unknown.
    """
    from envs import EnvError, action_names, make_env

    recorder = VideoRecorder(out_path, fps)  # fails on an unwritable path before any play
    try:
        env = make_env(env_id, seed=seed, mode="play", render_mode="rgb_array", pixels=pixels, pixel_view=pixel_view)
    except EnvError as e:
        raise UserError(str(e)) from None
    names = action_names(env)
    num_actions = int(env.action_space.n)
    policy = RandomPolicy(num_actions, seed) if q_fn is None else QPolicy(q_fn, num_actions, epsilon, seed)
    runner = EpisodeRunner(env, policy, episodes=episodes, seed=seed, max_steps=max_steps)
    try:
        for view in runner:
            if scale is None:
                scale = default_scale(view.frame.shape)
            recorder.write_surface(compose(view, names, scale=scale, hud=hud, title=env_id))
            if on_view is not None:
                on_view(view)
    finally:
        recorder.close()
        env.close()
    return runner.scores
