#!/usr/bin/env python
"""Watch an agent play in a pygame window, record videos, or play yourself.

    python play.py RUN_DIR                       watch the trained agent of a run
    python play.py RUN_DIR --record out.mp4      ... and record it (HUD burned in)
    python play.py RUN_DIR --headless --record-dir videos/   one mp4 per episode, no window
    python play.py --env ALE/Breakout-v5 --agent random
    python play.py --env CartPole-v1 --human     arrows; --env Breakout --human: arrows + space

Keys: space (p while playing yourself) pause, `.` one step while paused,
`+`/`-` speed, `r` start/stop recording, `s` screenshot, `q`/Esc quit.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from agent.errors import UserError, cli_errors

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # before anything imports pygame


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", required=False, type=click.Path())
@click.option("--env", "env_id", default=None, help="Env id (or alias such as Breakout) to play without a run directory.")
@click.option("--agent", type=click.Choice(["dqn", "random"]), default=None, help="Who plays: the run's network (dqn) or random actions.  [default: dqn with RUN_DIR]")
@click.option("--best", is_flag=True, help="Play the run's best evaluated network (best_model.keras) instead of its final one.")
@click.option("--human", is_flag=True, help="Play yourself with the keyboard (arrows; space fires on Atari).")
@click.option("--episodes", type=click.IntRange(min=1), default=3, show_default=True, help="Episodes to play.")
@click.option("--fps", type=click.FloatRange(min=0.1), default=None, help="Frames (env steps) per second.  [default: 50 CartPole, 30 Atari; 20/15 when playing yourself]")
@click.option("--seed", type=int, default=0, show_default=True, help="Episode i starts from seed SEED+i.")
@click.option("--epsilon", type=click.FloatRange(0.0, 1.0), default=None, help="Probability of a random action.  [default: 0; 0.05 on Atari]")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cut each episode after this many env steps.")
@click.option("--scale", type=click.IntRange(1, 8), default=None, help="Integer upscaling of the game frame.  [default: 3 on Atari, 1 otherwise]")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None, help="Record all episodes to this mp4.")
@click.option("--record-dir", type=click.Path(file_okay=False), default=None, help="Record one mp4 per episode into this folder.")
@click.option("--no-hud", is_flag=True, help="Record the game frame only, without the heads-up panel.")
@click.option("--headless", is_flag=True, help="No window (SDL dummy video driver); for recording on servers.")
@click.option("--save-demos", type=click.Path(dir_okay=False), default=None, help="Save the transitions played to this .npz (for pretraining).")
@click.option("--screenshot-dir", type=click.Path(file_okay=False), default=".", show_default=True, help="Where `s` saves PNG screenshots.")
@cli_errors()
def main(**options) -> None:
    """Watch a trained DQN agent (RUN_DIR), a random agent, or play yourself."""
    import tfquiet

    tfquiet.setup()
    scores, stopped = play(**options)
    print_scores(scores, stopped)


def print_scores(scores: list[float], stopped: float | None) -> None:
    for i, score in enumerate(scores, 1):
        click.echo(f"episode {i}: {score:g}")
    if stopped is not None:
        click.echo(f"episode {len(scores) + 1}: {stopped:g} (stopped early, not counted)")
    if scores:
        click.echo(f"mean {sum(scores) / len(scores):.2f} over {len(scores)} episode{'s' * (len(scores) != 1)}")


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


def check_display(headless: bool) -> None:
    """Fail with one line, before any slow loading, when no window can be opened.

    Raises:
        UserError: on Linux without DISPLAY / WAYLAND_DISPLAY (unless SDL_VIDEODRIVER is set).
    """
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame's display is initialised
        return
    if os.environ.get("SDL_VIDEODRIVER"):
        return
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("no display available (DISPLAY and WAYLAND_DISPLAY are unset); pass --headless with --record or --record-dir, or run under xvfb-run")


def load_agent(run_dir: str, env, which: str = "final"):
    """The run's network as a `q_fn`, checked against the env it will play.

    Raises:
        UserError: for a missing or corrupt model, or one made for another env.
    """
    from agent import run_dir as run_files
    from agent.recording import keras_q_fn

    model = run_files.load_model(run_dir, which)
    obs_shape, n = tuple(env.observation_space.shape), int(env.action_space.n)
    if tuple(model.input_shape[1:]) != obs_shape or model.output_shape[-1] != n:
        raise UserError(
            f"the model in {run_dir!r} takes {tuple(model.input_shape[1:])} and gives {model.output_shape[-1]} Q-values, "
            f"but the env gives observations {obs_shape} and has {n} actions; the run directory is damaged"
        )
    return keras_q_fn(model)


# --------------------------------------------------------------------------- playing yourself

HUMAN_KEYS = ("left", "right", "up", "down", "fire")


def keyboard_mapping(env, env_id: str) -> Callable[[set[str]], int] | None:
    """How held keys ({"left", "fire", ...}) choose an action, or None for an env without one."""
    base = env.unwrapped
    if hasattr(base, "get_action_meanings"):  # every ALE game: compose e.g. "UPRIGHTFIRE"
        index = {name: i for i, name in enumerate(base.get_action_meanings())}

        def ale(held: set[str]) -> int:
            v = "UP" if "up" in held and "down" not in held else "DOWN" if "down" in held and "up" not in held else ""
            h = "LEFT" if "left" in held and "right" not in held else "RIGHT" if "right" in held and "left" not in held else ""
            f = "FIRE" if "fire" in held else ""
            # the full combination, then smaller ones; without a combined action, moving wins over firing
            for name in (v + h + f, h and h + f, v and v + f, v + h, h, v, f):
                if name and name in index:
                    return index[name]
            return index.get("NOOP", 0)

        return ale
    if env_id.startswith("CartPole"):
        # CartPole has no "do nothing": with no arrow held, alternate pushes so the cart roughly holds still.
        tick = [0]

        def cartpole(held: set[str]) -> int:
            if "left" in held and "right" not in held:
                return 0
            if "right" in held and "left" not in held:
                return 1
            tick[0] ^= 1
            return tick[0]

        return cartpole
    if env_id.startswith("MountainCar-"):
        return lambda held: 0 if "left" in held and "right" not in held else 2 if "right" in held and "left" not in held else 1
    return None


class HumanPolicy:
    """Reads the keyboard when an action is due; taps shorter than a frame still count."""

    chooses_when_stepping = True  # the keys held when the step is taken decide it, not those of the frame before

    def __init__(self, mapping: Callable[[set[str]], int]):
        import pygame

        self.mapping = mapping
        self.codes = {
            "left": (pygame.K_LEFT, pygame.K_a),
            "right": (pygame.K_RIGHT, pygame.K_d),
            "up": (pygame.K_UP, pygame.K_w),
            "down": (pygame.K_DOWN,),
            "fire": (pygame.K_SPACE,),
        }
        self.tapped: set[str] = set()

    def key_down(self, key: int) -> None:
        for name, codes in self.codes.items():
            if key in codes:
                self.tapped.add(name)

    def q_values(self, obs):
        return None

    def __call__(self, obs):
        import pygame

        pressed = pygame.key.get_pressed()
        held = {name for name, codes in self.codes.items() if any(pressed[c] for c in codes)} | self.tapped
        self.tapped.clear()
        return self.mapping(held), None, False


# --------------------------------------------------------------------------- recording


class Recordings:
    """What gets recorded: one file (`--record`), one per episode (`--record-dir`), or `r` on demand."""

    def __init__(self, record_path: str | None, record_dir: str | None, fps: float, slug: str):
        from agent.recording import check_writable_dir, check_writable_file

        self.fps, self.slug = fps, slug
        self.single = check_writable_file(record_path, "video") if record_path else None
        self.dir = check_writable_dir(record_dir, "--record-dir") if record_dir else None
        self.on = bool(record_path or record_dir)  # `r` toggles this
        self.recorder = None
        self.episode = None  # the episode the per-episode recorder belongs to
        self.saved: list[Path] = []

    def _open(self, path: Path) -> None:
        from agent.recording import VideoRecorder

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


# --------------------------------------------------------------------------- the loop


def play(
    run_dir: str | None = None,
    env_id: str | None = None,
    agent: str | None = None,
    best: bool = False,
    human: bool = False,
    episodes: int = 3,
    fps: float | None = None,
    seed: int = 0,
    epsilon: float | None = None,
    max_steps: int | None = None,
    scale: int | None = None,
    record_path: str | None = None,
    record_dir: str | None = None,
    no_hud: bool = False,
    headless: bool = False,
    save_demos: str | None = None,
    screenshot_dir: str = ".",
    on_view: Callable | None = None,
) -> tuple[list[float], float | None]:
    """Play, show, record; returns (finished episode scores, score of an episode stopped midway or None).

    `on_view(view, events)` is called once per new state, before keys are read:
    tests and the screenshot script use it to post real pygame key events.

    Raises:
        UserError: for any input a person can fix.
    """
    # 1. what plays which env; cheap checks first, before TensorFlow loads
    if run_dir is not None and env_id is not None:
        raise UserError("pass either RUN_DIR (the env comes from its config) or --env, not both")
    if human and agent is not None:
        raise UserError("--human and --agent exclude each other: either you play or an agent does")
    if run_dir is None:
        if env_id is None:
            raise UserError("nothing to play: pass a RUN_DIR written by train.py, or --env ID with --agent random or --human")
        if not human and agent != "random":
            raise UserError("watching a trained agent needs its RUN_DIR; with --env, pass --agent random or --human")
    if human and headless:
        raise UserError("--human needs a window; drop --headless")
    if record_path is not None and record_dir is not None:
        raise UserError("pass --record FILE or --record-dir DIR, not both")
    pixels, pixel_view = False, "full"
    if run_dir is not None:
        from agent.run_dir import load_config

        run_config = load_config(run_dir)
        env_id, pixels, pixel_view = run_config.env_id, run_config.pixels, run_config.pixel_view
    agent = "human" if human else (agent or "dqn")
    env_id = resolve_env_id(env_id)
    check_display(headless)
    fps = fps or default_fps(env_id, human)
    slug = env_id.replace("/", "-")
    from agent.recording import check_writable_file

    if save_demos is not None:
        check_writable_file(save_demos, "--save-demos file")
    recordings = Recordings(record_path, record_dir, fps, slug)

    # 2. env and player
    from agent import recording as rec
    from agent.demos import DemoRecorder
    from envs import EnvError, action_names, make_env

    try:
        env = make_env(env_id, seed=seed, mode="play", render_mode="rgb_array", pixels=pixels, pixel_view=pixel_view)
    except EnvError as e:
        raise UserError(str(e)) from None
    try:
        names = action_names(env)
        num_actions = int(env.action_space.n)
        if human:
            mapping = keyboard_mapping(env, env_id)
            if mapping is None:
                raise UserError(f"no keyboard mapping for {env_id}; --human works with CartPole, MountainCar and Atari games")
            policy = HumanPolicy(mapping)
        elif agent == "random":
            policy = rec.RandomPolicy(num_actions, seed)
        else:
            eps = rec.default_epsilon(env_id) if epsilon is None else epsilon
            policy = rec.QPolicy(load_agent(run_dir, env, "best" if best else "final"), num_actions, eps, seed)
        demos = DemoRecorder(env_id) if save_demos is not None else None
        runner = rec.EpisodeRunner(env, policy, episodes=episodes, seed=seed, max_steps=max_steps, demos=demos)
        title = f"{env_id} - {agent}"
        try:
            if headless:
                _run_headless(runner, names, recordings, scale, not no_hud, title, on_view)
            else:
                _run_window(runner, policy, names, recordings, scale, not no_hud, title, fps, Path(screenshot_dir), slug, on_view)
        finally:
            recordings.close()
            if demos is not None:
                runner.stop()
                obs_space = env.observation_space
                path = demos.save(save_demos, tuple(obs_space.shape), obs_space.dtype)
                click.echo(f"saved {len(demos)} transitions to {path}", err=True)
    finally:
        env.close()
    current = runner.current
    stopped = current.score if current is not None and not current.done else None
    return runner.scores, stopped


def _run_headless(runner, names, recordings, scale, hud, title, on_view) -> None:
    from agent import recording as rec

    for view in runner:
        scale = scale or rec.default_scale(view.frame.shape)
        if recordings.on:
            recordings.write(view.episode, rec.compose(view, names, scale=scale, hud=hud, title=title))
        if on_view is not None:
            on_view(view, None)


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


def _run_window(runner, policy, names, recordings, scale, hud, title, fps, shot_dir, slug, on_view) -> None:
    import pygame

    from agent import recording as rec

    pause_keys = (pygame.K_p,) if isinstance(policy, HumanPolicy) else (pygame.K_SPACE, pygame.K_p)
    keep_sdl_off_opengl()
    pygame.display.init()
    pending: list = []  # events not handled yet: keys act in the order they were typed, even after a `.` step
    try:
        views = iter(runner)
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
                scale = scale or rec.default_scale(view.frame.shape)
                frame = rec.compose(view, names, scale=scale, hud=True, title=title)
                if recordings.on:
                    recordings.write(view.episode, frame if hud else rec.game_surface(view.frame, scale))
                if screen is None:
                    try:
                        screen = pygame.display.set_mode(frame.get_size())
                    except pygame.error as e:
                        raise UserError(f"cannot open a window ({e}); pass --headless to record without one") from None
                    pygame.display.set_caption(f"play.py - {title}")
                if on_view is not None:
                    on_view(view, pygame.event)
            screen.blit(frame, (0, 0))
            _draw_status(screen, paused, recordings.on, fps)
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
                    recordings.toggle()
                elif key == pygame.K_s:
                    _screenshot(frame, shot_dir, slug, view)
                if isinstance(policy, HumanPolicy):
                    policy.key_down(key)
            advance = step_once or not paused
            clock.tick(fps if advance else 30)
    finally:
        pygame.display.quit()


def _draw_status(screen, paused: bool, recording: bool, fps: float) -> None:
    """Window-only indicators, drawn after the frame went to the video."""
    import pygame

    from agent.recording import _font

    font = _font(20)
    parts = [f"{fps:.0f} fps"] + (["PAUSED"] if paused else []) + (["REC"] if recording else [])
    text = font.render("   ".join(parts), True, (255, 90, 90) if recording or paused else (150, 155, 165))
    screen.blit(text, (screen.get_width() - text.get_width() - 10, screen.get_height() - text.get_height() - 8))
    if recording:
        pygame.draw.circle(screen, (230, 40, 40), (screen.get_width() - text.get_width() - 22, screen.get_height() - 16), 6)


def _screenshot(frame, shot_dir: Path, slug: str, view) -> None:
    import pygame

    try:
        shot_dir.mkdir(parents=True, exist_ok=True)
        path = shot_dir / f"{slug}-ep{view.episode}-step{view.step}.png"
        pygame.image.save(frame, str(path))
        click.echo(f"saved screenshot {path}", err=True)
    except (OSError, pygame.error) as e:  # a failed screenshot should not end the game
        click.echo(f"warning: screenshot not saved: {e}", err=True)


if __name__ == "__main__":
    main()
