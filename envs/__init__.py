"""Environments as the network sees them: `make_env(env_id, *, seed, mode)`.

Vector-observation gymnasium envs (CartPole-v1, Acrobot-v1, MountainCar-v0,
LunarLander-v3 with box2d, ...) come back wrapped in
`RecordEpisodeStatistics`, so `info["episode"]` carries the true return and
length when an episode ends. No TensorFlow is imported here.
"""

from __future__ import annotations

import difflib
import os

import gymnasium as gym
import numpy as np

from envs.base import FRAME_STACK, MODES, OBSERVATIONS, PIXEL_VIEWS, EnvError  # MODES and EnvError stay importable from envs


def _suggestions(env_id: str, n: int = 3) -> list[str]:
    """Up to `n` ids close to `env_id` that `make_env` takes: ALE games by their short name or ALE/...-v5 id (not
    ale-py's legacy Breakout-v4, which `is_atari` leaves to the plain registry), other ids only if they build here
    (no missing package such as jax or Box2D) with discrete actions and a vector or image observation."""
    import warnings

    atari: set[str] = set()
    try:
        from envs.atari import atari_aliases  # registers ale-py's ids, so the suggestions do not hang on what was imported before

        atari = {name for alias, v5 in atari_aliases().items() for name in (alias, v5)}
    except ImportError:
        pass
    others = [k for k, spec in gym.registry.items() if not str(spec.entry_point).startswith("ale_py")]
    found: list[str] = []
    for candidate in difflib.get_close_matches(env_id, sorted(atari.union(others)), n=10, cutoff=0.6):
        if candidate not in atari:
            try:
                with warnings.catch_warnings():  # an old version's deprecation warning: the line stays one line
                    warnings.simplefilter("ignore")
                    env = gym.make(candidate, disable_env_checker=True)
            except Exception:  # a probe: whatever stops the build (a missing package, a bad spec) rules it out
                continue
            try:
                check_spaces(candidate, env)
            except EnvError:
                continue
            finally:
                env.close()
        found.append(candidate)
        if len(found) == n:
            break
    return found


def _unknown_id(env_id: str) -> EnvError:
    """The refusal of an id no registry holds: the close ids `make_env` takes, or the command that lists every id."""
    close = _suggestions(env_id)
    if close:
        return EnvError(f"unknown env id {env_id!r}; did you mean {', '.join(close)}?")
    import importlib.util

    ale = importlib.util.find_spec("ale_py") is not None  # ale-py registers its games only once imported
    listing = "import ale_py, gymnasium; gymnasium.register_envs(ale_py); " if ale else "import gymnasium; "
    return EnvError(f"unknown env id {env_id!r}; `python -c \"{listing}gymnasium.pprint_registry()\"` lists them")


def _missing_package(env_id: str, e: ImportError) -> EnvError:
    """gymnasium's DependencyNotInstalled says what to install; a bare ImportError (phys2d/CartPole-v1 without jax) is named."""
    missing = f"the module {e.name!r} is not installed" if e.name else (str(e).strip().splitlines() or [type(e).__name__])[0]
    return EnvError(f"env {env_id!r} needs an extra package: {missing}")


def is_atari(env_id: str) -> bool:
    """True for ALE ids ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4") and short names ("Breakout")."""
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
        return True
    if "-v" in env_id or env_id in gym.registry:
        return False
    from envs.atari import atari_aliases  # lazy: ale-py and cv2 load only for Atari

    return env_id.lower() in {name.lower() for name in atari_aliases()}


def same_env(a: str, b: str) -> bool:
    """Same id, or two ids of one Atari game (`make_atari_env` gives them the same emulator settings and wrappers)."""
    if a == b:
        return True
    if is_atari(a) and is_atari(b):
        from envs.atari import atari_game

        try:
            return atari_game(a) == atari_game(b)
        except EnvError:
            return False
    return False


def make_env(
    env_id: str, *, seed: int | None = None, mode: str = "train", render_mode: str | None = None, pixels: bool = False,
    pixel_view: str = "full", action_repeat: int = 1, observe: str = "full",
    frame_stack: int | None = None,
) -> gym.Env:
    """Build the env for training, evaluation or play.

    Args:
        env_id: a gymnasium id such as "CartPole-v1".
        seed: seeds the env's first reset and its action space.
        mode: "train", "eval" or "play"; vector envs behave the same in all three.
        render_mode: passed to `gym.make` ("rgb_array" for videos and windows).
        pixels: observe rendered frames (gray 84x84, 4 stacked, uint8) instead
            of the state vector; for classic-control envs.
        pixel_view: "full" frame, "cart" (a window following CartPole's cart) or
            "cart_track" (that window over a strip of the whole track).
        action_repeat: env steps per agent step for a non-Atari env (`ActionRepeat`);
            ALE games repeat each action 4 frames already (`envs.atari.MaxAndSkip`).
        observe: "full" state vector, or "position": its velocities hidden (`envs.observe`), a POMDP.
        frame_stack: observations per agent state: frames stacked for pixels and Atari (None: 4, Mnih et
            al. 2015), vectors concatenated otherwise (None: 1, no stack). A recurrent Q-network takes 1.

    Raises:
        EnvError: for an unknown id, a continuous action space or an
            observation a Q-network here cannot take.
    """
    _check_options(env_id, mode, pixels, pixel_view, action_repeat, observe, frame_stack)
    if is_atari(env_id):  # ALE games get the Mnih et al. (2015) preprocessing of envs.atari
        from envs.atari import make_atari_env

        return make_atari_env(env_id, seed=seed, mode=mode, render_mode=render_mode, frame_stack=frame_stack or FRAME_STACK)
    if env_id not in gym.registry:
        raise _unknown_id(env_id)
    if (pixels or render_mode == "rgb_array") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # Classic-control envs render with pygame, whose video init on a machine with no
        # display prints "error: XDG_RUNTIME_DIR is invalid"; off-screen drawing needs no driver.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = gym.make(env_id, render_mode="rgb_array" if pixels else render_mode)
    except gym.error.DependencyNotInstalled as e:
        raise EnvError(f"env {env_id!r} needs an extra package: {e}") from None
    except ImportError as e:
        raise _missing_package(env_id, e) from None
    try:
        check_spaces(env_id, env)
    except EnvError:
        env.close()
        raise
    env = gym.wrappers.RecordEpisodeStatistics(env)  # below ActionRepeat: an episode's length counts env steps
    if action_repeat != 1:
        env = ActionRepeat(env, action_repeat)
    if observe == "position":
        from envs.observe import ObservePositions, position_entries

        try:
            env = ObservePositions(env, position_entries(env_id))
        except EnvError:
            env.close()
            raise
    if pixels:
        from envs.pixels import wrap_pixels

        env = wrap_pixels(env, frame_stack=frame_stack or FRAME_STACK, view=pixel_view)
    elif frame_stack not in (None, 1):
        from envs.observe import StackObservations

        env = StackObservations(env, frame_stack)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def _check_options(env_id: str, mode: str, pixels: bool, pixel_view: str, action_repeat: int, observe: str, frame_stack: int | None) -> None:
    """`make_env`'s options, each refused with what to use instead (`EnvError`)."""
    if mode not in MODES:
        raise EnvError(f"mode must be one of {MODES}, got {mode!r}")
    if pixel_view not in PIXEL_VIEWS:
        raise EnvError(f"pixel_view must be one of {', '.join(PIXEL_VIEWS)}, got {pixel_view!r}")
    if pixel_view != "full" and not (pixels and env_id == "CartPole-v1"):
        raise EnvError(f"pixel_view={pixel_view!r} is for CartPole-v1 with --pixels; use pixel_view=\"full\" here")
    if action_repeat < 1:
        raise EnvError(f"action_repeat must be >= 1 env step per agent step, got {action_repeat}")
    if action_repeat != 1 and is_atari(env_id):
        raise EnvError(f"{env_id} repeats each action 4 frames already (envs/atari.py); leave action_repeat at 1")
    if observe not in OBSERVATIONS:
        raise EnvError(f"observe must be one of {', '.join(OBSERVATIONS)}, got {observe!r}")
    if observe != "full" and (pixels or is_atari(env_id)):
        raise EnvError(f"observe={observe!r} hides entries of a state vector; {env_id} is seen in pixels: leave observe=\"full\"")
    if frame_stack is not None and frame_stack < 1:
        raise EnvError(f"frame_stack must be >= 1 observation per agent state, got {frame_stack}")


class ActionRepeat(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Take each action for `repeat` env steps and sum their rewards; an episode's end stops it early.

    Atari's frame skip (Mnih et al. 2015) for envs without one: the agent
    decides `repeat` times less often, so the same discount reaches `repeat`
    times further in env steps, and with pixels the frames in a stack lie
    further apart, so slow motion (CartPole's drifting cart) shows.
    Only the last step's observation is kept, so a pixel env renders once per
    agent step. Returns stay in env units: CartPole-v1 still ends at 500.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, repeat=repeat)
        gym.Wrapper.__init__(self, env)
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


def check_spaces(env_id: str, env: gym.Env) -> None:
    """A DQN needs discrete actions and a flat float vector (or an image) as observation."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise EnvError(
            f"{env_id} has a {type(env.action_space).__name__} action space; DQN needs discrete actions "
            "(try CartPole-v1, Acrobot-v1, MountainCar-v0 or an ALE game)"
        )
    space = env.observation_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) not in (1, 3):
        raise EnvError(f"{env_id} has observations {space}; a vector or an (H, W, C) image is needed")


def obs_signature(env: gym.Env) -> tuple[tuple[int, ...], np.dtype, int]:
    """(observation shape, observation dtype, number of actions) of an env."""
    return tuple(env.observation_space.shape), np.dtype(env.observation_space.dtype), int(env.action_space.n)


def reward_threshold(env_id: str) -> float | None:
    """The env's registered `reward_threshold` (475 for CartPole-v1), if any."""
    spec = gym.spec(env_id) if env_id in gym.registry else None
    return None if spec is None else spec.reward_threshold


def action_names(env: gym.Env) -> list[str]:
    """Human-readable names of the actions (ALE's meanings, or generic ones)."""
    base = env.unwrapped
    if hasattr(base, "get_action_meanings"):
        return list(base.get_action_meanings())
    if base.spec is not None and base.spec.id.startswith("CartPole"):
        return ["LEFT", "RIGHT"]
    return [f"action {i}" for i in range(env.action_space.n)]
