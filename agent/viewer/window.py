"""The viewer: watch an agent play in a pygame window, record it, or play yourself.

`play(ViewOptions(...))` is what `play.py` runs: it checks the options, builds
the env and the player (agent/dqn/policies.py), and drives the one episode runner
(agent/rollout/episodes.py) through the window loop or, with `headless`, a loop
without a window. Each state is drawn by agent/rollout/hud.py; what is recorded goes
to agent/rollout/video.py. The window adds only what a person needs on top: keys,
pause and single steps, speed, a status line, screenshots.

Keys: space (p while playing yourself) pause, `.` one step while paused,
`+`/`-` speed, `r` start/stop recording, `s` screenshot, `q`/Esc quit.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from common.errors import UserError

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # before anything imports pygame

if TYPE_CHECKING:
    from agent.rollout.episodes import EpisodeRunner, Policy


@dataclass(frozen=True)
class ViewOptions:
    """What to play and how to show it; the fields are play.py's options, and they are checked together here.

    Raises:
        UserError: for options that exclude each other or name nothing to play.
    """

    run_dir: str | None = None  # a run directory written by train.py: its env and network
    model: str | None = None  # or an exported .tflite / .onnx (python -m agent.export), played without TensorFlow
    pretrained: str | None = None  # or a shipped agent (agent/pretrained/NAME): its run directory becomes run_dir
    env_id: str | None = None  # or an env id (or alias such as Breakout) without a run
    agent: str | None = None  # "dqn" (the run's network) or "random"; None: dqn with run_dir
    best: bool = False  # play the run's best evaluated network (best_model.keras)
    human: bool = False  # play yourself with the keyboard
    episodes: int = 3  # episodes to play
    fps: float | None = None  # env steps per second; None: default_fps
    seed: int = 0  # episode i starts from seed seed + i; also seeds the policy's RNG
    epsilon: float | None = None  # probability of a random action; None: default_epsilon
    max_steps: int | None = None  # env steps after which an episode is cut
    scale: int | None = None  # integer upscaling of the game frame; None: hud.default_scale
    record_path: str | None = None  # record all episodes to this mp4
    record_dir: str | None = None  # or one mp4 per episode into this folder
    no_hud: bool = False  # record the game frame only (the window always shows the panel)
    headless: bool = False  # no window (SDL dummy video driver)
    save_demos: str | None = None  # save the transitions played to this .npz
    screenshot_dir: str = "."  # where `s` saves PNG screenshots

    def __post_init__(self) -> None:
        if self.model is not None:
            others = (("RUN_DIR", self.run_dir), ("--pretrained", getattr(self, "pretrained", None)), ("--env", self.env_id),
                      ("--best", self.best), ("--human", self.human), ("--agent", self.agent))
            extra = next((flag for flag, value in others if value), None)
            if extra:
                raise UserError(f"an exported model plays on its own (its .json file names the env); drop {extra}")
        if self.pretrained is not None:
            if self.run_dir is not None:
                raise UserError("pass either RUN_DIR or --pretrained NAME, not both")
            if self.env_id is not None:
                raise UserError("--pretrained NAME brings its own env; drop --env")
            if self.best:
                raise UserError("--best needs a RUN_DIR: a pretrained agent ships its final network only")
            from agent.export.pretrained import pretrained_dir

            object.__setattr__(self, "run_dir", str(pretrained_dir(self.pretrained)))  # frozen: set once, here
        if self.run_dir is not None and self.env_id is not None:
            raise UserError("pass either RUN_DIR (the env comes from its config) or --env, not both")
        if self.human and self.agent is not None:
            raise UserError("--human and --agent exclude each other: either you play or an agent does")
        if self.run_dir is None and self.model is None:
            if self.env_id is None:
                raise UserError("nothing to play: pass a RUN_DIR written by train.py, --pretrained NAME, or --env ID with --agent random or --human")
            if not self.human and self.agent != "random":
                raise UserError("watching a trained agent needs its RUN_DIR; with --env, pass --agent random or --human")
        if self.human and self.headless:
            raise UserError("--human needs a window; drop --headless")
        if self.record_path is not None and self.record_dir is not None:
            raise UserError("pass --record FILE or --record-dir DIR, not both")

    @property
    def player(self) -> str:
        """Who plays: "human", "random" or "dqn"."""
        return "human" if self.human else (self.agent or "dqn")


# --------------------------------------------------------------------------- setup


def resolve_env_id(env_id: str) -> str:
    """Aliases such as "Breakout" become the full ALE id, so titles and defaults see the real id."""
    import envs

    if envs.is_atari(env_id):
        from envs.atari import resolve_atari_id

        try:
            return resolve_atari_id(env_id)
        except envs.EnvError as e:
            raise UserError(str(e)) from None
    return env_id


def default_fps(env_id: str, human: bool) -> float:
    """CartPole's physics runs at 50 Hz; Atari steps are 4 emulator frames, so 15/s is real time."""
    from envs import is_atari

    if is_atari(env_id):
        return 15.0 if human else 30.0
    return 20.0 if human else 50.0


def check_display(headless: bool, human: bool = False) -> None:
    """Fail with one line, before any slow loading, when no window can be opened (`human`: one is needed to play).

    Raises:
        UserError: on Linux without DISPLAY / WAYLAND_DISPLAY (unless SDL_VIDEODRIVER is set).
    """
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame's display is initialised
        return
    if os.environ.get("SDL_VIDEODRIVER"):
        return
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        way_out = "--human needs a window: play in a desktop session" if human else "pass --headless with --record or --record-dir"
        raise UserError(f"no display available (DISPLAY and WAYLAND_DISPLAY are unset); {way_out}, or run under xvfb-run")


def load_agent(run_dir: str, env, which: str = "final"):
    """The run's network as a `q_fn`, checked against the env it will play.

    Raises:
        UserError: for a missing or corrupt model, or one made for another env.
    """
    from agent.dqn.policies import keras_q_fn
    from agent.dqn.recurrent import q_network_signature
    from agent.run.run_dir import RunDirectory

    model = RunDirectory(run_dir).load_model(which)
    obs_shape, n = tuple(env.observation_space.shape), int(env.action_space.n)
    takes, gives = q_network_signature(model)
    if takes != obs_shape or gives != n:
        raise UserError(
            f"the model in {run_dir!r} takes {takes} and gives {gives} Q-values, "
            f"but the env gives observations {obs_shape} and has {n} actions; the run directory is damaged"
        )
    return keras_q_fn(model)


def exported_runtime(model_path: str) -> str:
    """The format of an exported model file ("tflite" or "onnx"), once its runtime is known to be installed.

    Raises:
        UserError: for another kind of file, or a runtime that is not installed.
    """
    from agent.export.runtimes import file_format, runtime_missing

    fmt = file_format(model_path)
    if fmt is None:
        raise UserError(f"{model_path!r} is neither a .tflite nor a .onnx file; export one with python -m agent.export RUN --format tflite")
    reason = runtime_missing(fmt)
    if reason:
        raise UserError(reason)
    return fmt


def load_exported(model_path: str, meta: dict, env):
    """An exported model (agent/export/runtimes.py) as a `q_fn` run by LiteRT or ONNX Runtime; TensorFlow is not imported.

    Raises:
        UserError: for an unreadable file, or metadata that does not fit the env it names.
    """
    from agent.export.runtimes import check_against_env, load_q_fn

    check_against_env(meta, env, model_path)
    return load_q_fn(model_path, exported_runtime(model_path))


# --------------------------------------------------------------------------- recording


class Recordings:
    """What gets recorded: one file (`--record`), one per episode (`--record-dir`), or `r` on demand."""

    def __init__(self, record_path: str | None, record_dir: str | None, fps: float, slug: str):
        from agent.rollout.video import check_writable_dir, check_writable_file

        self.fps, self.slug = fps, slug
        self.single = check_writable_file(record_path, "video") if record_path else None
        self.dir = check_writable_dir(record_dir, "--record-dir") if record_dir else None
        self.on = bool(record_path or record_dir)  # `r` toggles this
        self.recorder = None
        self.episode = None  # the episode the per-episode recorder belongs to
        self.saved: list[Path] = []

    def _open(self, path: Path) -> None:
        from agent.rollout.video import VideoRecorder

        self.recorder = VideoRecorder(path, self.fps)

    def _close(self) -> None:
        if self.recorder is not None:
            path = self.recorder.close()
            self.recorder = None
            if path is not None:
                self.saved.append(path)
                click.echo(f"saved video {path}", err=True)

    def write(self, episode: int, surface) -> None:
        if not self.on:
            return
        if self.dir is not None and self.episode != episode:
            self._close()
        if self.recorder is None:
            if self.single is not None:
                self._open(self.single)
            elif self.dir is not None:
                self._open(self.dir / f"{self.slug}-episode{episode:03d}.mp4")
            else:
                self._open(Path("recordings") / f"{self.slug}-{time.strftime('%Y%m%d-%H%M%S')}.mp4")
            self.episode = episode
        self.recorder.write_surface(surface)

    def toggle(self) -> None:
        """`r`: with --record the file stays one and only pauses; otherwise each start is a new file."""
        self.on = not self.on
        if not self.on and self.single is None:
            self._close()

    def close(self) -> None:
        self._close()


# --------------------------------------------------------------------------- a session


@dataclass
class Session:
    """One play session as the loops see it: the runner and its player, and how to show and record it."""

    options: ViewOptions
    runner: EpisodeRunner
    policy: Policy  # the runner's policy (a HumanPolicy also hears key presses)
    names: list[str]  # action names, for the HUD
    recordings: Recordings
    title: str  # "<env id> - <player>"
    slug: str  # the env id as a file name
    fps: float  # env steps per second; `+`/`-` change it
    on_view: Callable | None = None  # on_view(view, pygame.event or None), once per new state


def play(options: ViewOptions, on_view: Callable | None = None) -> tuple[list[float], float | None]:
    """Play, show, record; returns (finished episode scores, score of an episode stopped midway or None).

    `on_view(view, events)` is called once per new state, before keys are read:
    tests use it to post real pygame key events (`events` is None headless).

    Raises:
        UserError: for any input a person can fix.
    """
    # 1. what plays which env; cheap checks first (ViewOptions checked the options together), before TensorFlow loads
    o = options
    env_id, seen_as = o.env_id, {}  # seen_as: make_env's pixels, pixel_view and action_repeat for the agent's run
    if o.run_dir is not None:
        from agent.core.config import env_options
        from agent.run.run_dir import RunDirectory

        run_config = RunDirectory(o.run_dir).load_config()

        env_id, seen_as = run_config.env_id, env_options(run_config)
    elif o.model is not None:
        from agent.export.runtimes import read_metadata

        model_meta = read_metadata(o.model)
        env_id = model_meta["env_id"]
        seen_as = {"pixels": bool(model_meta.get("pixels")), "pixel_view": model_meta.get("pixel_view", "full"),
                   "action_repeat": int(model_meta.get("action_repeat", 1))}
        if model_meta.get("observe", "full") != "full":  # exports made before these fields saw the full state, unstacked
            seen_as["observe"] = model_meta["observe"]
        if model_meta.get("frame_stack") is not None:
            seen_as["frame_stack"] = model_meta["frame_stack"]
        exported_runtime(o.model)  # a missing runtime is said before the env and the window start
    env_id = resolve_env_id(env_id)
    check_display(o.headless, o.human)
    fps = o.fps or default_fps(env_id, o.human) / seen_as.get("action_repeat", 1)  # one frame per agent step, at the env's pace
    slug = env_id.replace("/", "-")
    from agent.rollout.video import check_writable_file

    if o.save_demos is not None:
        check_writable_file(o.save_demos, "--save-demos file")
    recordings = Recordings(o.record_path, o.record_dir, fps, slug)

    # 2. env and player
    from classic.demos import DemoRecorder
    from agent.rollout.episodes import EpisodeRunner
    from envs import EnvError, action_names, make_env

    try:
        env = make_env(env_id, seed=o.seed, mode="play", render_mode="rgb_array", **seen_as)
    except EnvError as e:
        raise UserError(str(e)) from None
    try:
        names = action_names(env)
        policy = make_player(o, env, env_id, model_meta if o.model is not None else None)
        demos = DemoRecorder(env_id, seen_as) if o.save_demos is not None else None
        runner = EpisodeRunner(env, policy, episodes=o.episodes, seed=o.seed, max_steps=o.max_steps, demos=demos)
        session = Session(o, runner, policy, names, recordings, f"{env_id} - {o.player}", slug, fps, on_view)
        try:
            if o.headless:
                run_headless(session)
            else:
                run_window(session)
        finally:
            recordings.close()
            if demos is not None:
                runner.stop()
                obs_space = env.observation_space
                path = demos.save(o.save_demos, tuple(obs_space.shape), obs_space.dtype)
                click.echo(f"saved {len(demos)} transitions to {path}", err=True)
    finally:
        env.close()
    current = runner.current
    stopped = current.score if current is not None and not current.done else None
    return runner.scores, stopped


def make_player(o: ViewOptions, env, env_id: str, model_meta: dict | None):
    """Who plays: you at the keyboard (`--human`), a random player, or the agent (a run's network or an export).

    Raises:
        UserError: no keyboard mapping for the env, or a model that does not fit it.
    """
    from agent.dqn.policies import HumanPolicy, QPolicy, RandomPolicy, default_epsilon, keyboard_mapping

    num_actions = int(env.action_space.n)
    if o.human:
        mapping = keyboard_mapping(env, env_id)
        if mapping is None:
            raise UserError(f"no keyboard mapping for {env_id}; --human works with CartPole, MountainCar and Atari games")
        return HumanPolicy(mapping)
    if o.player == "random":
        return RandomPolicy(num_actions, o.seed)
    eps = default_epsilon(env_id) if o.epsilon is None else o.epsilon
    q_fn = load_exported(o.model, model_meta, env) if o.model is not None else load_agent(o.run_dir, env, "best" if o.best else "final")
    return QPolicy(q_fn, num_actions, eps, o.seed)


# --------------------------------------------------------------------------- the loops


def run_headless(s: Session) -> None:
    """Play every episode as fast as it goes, recording what `s.recordings` asks for."""
    from agent.rollout import hud

    scale = s.options.scale
    for view in s.runner:
        scale = scale or hud.default_scale(view.frame.shape)
        if s.recordings.on:
            s.recordings.write(view.episode, hud.compose(view, s.names, scale=scale, hud=not s.options.no_hud, title=s.title))
        if s.on_view is not None:
            s.on_view(view, None)


def keep_sdl_off_opengl() -> None:
    """Make SDL draw the window with its software framebuffer, never through OpenGL.

    With TensorFlow in the process, SDL's default accelerated framebuffer on X11
    goes through Mesa's OpenGL (llvmpipe on VMs, WSL, remote desktops, many
    desktops), whose LLVM calls resolve into the LLVM copy that
    libtensorflow_framework.so carries: a segmentation fault in
    `pygame.display.set_mode`. A 2D game view loses nothing without OpenGL.
    Call before pygame opens a window; a user's own setting of either
    variable is kept.
    """
    os.environ.setdefault("SDL_FRAMEBUFFER_ACCELERATION", "0")  # the window surface: X11 shared memory, no renderer
    os.environ.setdefault("SDL_RENDER_DRIVER", "software")  # should anything create an SDL renderer


def run_window(s: Session) -> None:
    """The window: one new state per frame at `fps`, keys between frames; returns when play ends or on quit."""
    import pygame

    from agent.rollout import hud
    from agent.dqn.policies import HumanPolicy

    human = isinstance(s.policy, HumanPolicy)
    pause_keys = (pygame.K_p,) if human else (pygame.K_SPACE, pygame.K_p)
    scale, fps = s.options.scale, s.fps
    keep_sdl_off_opengl()
    pygame.display.init()
    pending: list = []  # events not handled yet: keys act in the order they were typed, even after a `.` step
    try:
        views = iter(s.runner)
        screen = None
        paused, advance = False, True
        clock = pygame.time.Clock()
        frame = None
        view = None
        while True:
            if advance:
                view = next(views, None)
                if view is None:
                    return
                scale = scale or hud.default_scale(view.frame.shape)
                frame = hud.compose(view, s.names, scale=scale, hud=True, title=s.title)
                if s.recordings.on:
                    s.recordings.write(view.episode, hud.game_surface(view.frame, scale) if s.options.no_hud else frame)
                if screen is None:
                    try:
                        screen = pygame.display.set_mode(frame.get_size())
                    except pygame.error as e:
                        raise UserError(f"cannot open a window ({e}); pass --headless to record without one") from None
                    pygame.display.set_caption(f"play.py - {s.title}")
                if s.on_view is not None:
                    s.on_view(view, pygame.event)
            screen.blit(frame, (0, 0))
            draw_status(screen, paused, s.recordings.on, fps)
            pygame.display.flip()

            step_once = False
            pending.extend(pygame.event.get())
            while pending and not step_once:  # after `.`, later keys wait for the step to be shown
                event = pending.pop(0)
                if event.type == pygame.QUIT:
                    return
                if event.type != pygame.KEYDOWN:
                    continue
                key, char = event.key, getattr(event, "unicode", "")
                if key in (pygame.K_q, pygame.K_ESCAPE):
                    return
                if key in pause_keys:
                    paused = not paused
                elif key == pygame.K_PERIOD or char == ".":
                    step_once = paused
                elif char == "+" or key in (pygame.K_PLUS, pygame.K_EQUALS, pygame.K_KP_PLUS):
                    fps = min(fps * 1.5, 1000.0)
                elif char == "-" or key in (pygame.K_MINUS, pygame.K_KP_MINUS):
                    fps = max(fps / 1.5, 1.0)
                elif key == pygame.K_r:
                    s.recordings.toggle()
                elif key == pygame.K_s:
                    screenshot(frame, Path(s.options.screenshot_dir), s.slug, view)
                if human:
                    s.policy.key_down(key)
            advance = step_once or not paused
            clock.tick(fps if advance else 30)
    finally:
        pygame.display.quit()


def draw_status(screen, paused: bool, recording: bool, fps: float) -> None:
    """Window-only indicators, drawn after the frame went to the video."""
    import pygame

    from agent.rollout.hud import font

    parts = [f"{fps:.0f} fps"] + (["PAUSED"] if paused else []) + (["REC"] if recording else [])
    text = font(20).render("   ".join(parts), True, (255, 90, 90) if recording or paused else (150, 155, 165))
    screen.blit(text, (screen.get_width() - text.get_width() - 10, screen.get_height() - text.get_height() - 8))
    if recording:
        pygame.draw.circle(screen, (230, 40, 40), (screen.get_width() - text.get_width() - 22, screen.get_height() - 16), 6)


def screenshot(frame, shot_dir: Path, slug: str, view) -> None:
    """`s`: the picture on screen (game and HUD, without the status line) as a PNG; a failure only warns."""
    import pygame

    try:
        shot_dir.mkdir(parents=True, exist_ok=True)
        path = shot_dir / f"{slug}-ep{view.episode}-step{view.step}.png"
        pygame.image.save(frame, str(path))
        click.echo(f"saved screenshot {path}", err=True)
    except (OSError, pygame.error) as e:  # a failed screenshot should not end the game
        click.echo(f"warning: screenshot not saved: {e}", err=True)
