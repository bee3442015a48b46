"""The demos format, in one place: recording, reading, checking, and what training makes of it.

A demos file (`play.py --save-demos`) is an `.npz` without pickled objects:
`obs` (N, *obs_shape) as the network sees them, `actions` int64, `rewards`
float32 (the env's true rewards), `terminated` and `truncated` bool, a 0-d
unicode `env_id`, for Atari `lives` (int64, lives left after each step), and
how the env was seen when it was not seen plainly: `pixel_view` (0-d unicode,
pixel envs), `action_repeat` (0-d int64, when > 1), `observe` (0-d unicode,
when not "full": e.g. "position", velocities hidden) and `frame_stack` (0-d
int64, vector observations stacked). A run refuses demos whose view, repeat,
observation or stack is not its own: the inputs or the dynamics would differ.
`DemoRecorder` writes it, `load_demos` reads and checks it against its env,
`load_for_run` against a run's env, and `training_transitions` says what the
training env would have made of each step (Atari: clipped rewards and a
terminal at every lost life). `classic/pretrain.py` clones the actions;
`agent/run/demos.py` checks a file against a run and makes the training env's transitions of it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.files import atomic_path
from classic.errors import first_line
from classic.npz import load_npz
from classic.errors import ClassicError

DEMO_KEYS = ("obs", "actions", "rewards", "terminated", "truncated", "env_id")


@dataclass(frozen=True)
class Demos:
    """Checked demonstrations: observations, the action taken in each, and what followed."""

    env_id: str
    obs: np.ndarray  # [N, *obs_shape], float32 (vectors) or uint8 (frames)
    actions: np.ndarray  # [N] int64 in [0, num_actions)
    num_actions: int
    rewards: np.ndarray  # [N] float32, the env's reward for each step
    terminated: np.ndarray  # [N] bool, the episode truly ended after this step
    truncated: np.ndarray  # [N] bool, the episode was cut after this step (time limit, quit)
    lives: np.ndarray | None = None  # [N] int64, Atari lives left after each step (files from play.py)
    pixel_view: str | None = None  # the pixel window the frames were cut with (pixel envs; None: not recorded)
    action_repeat: int = 1  # env steps each recorded action was taken for (envs.ActionRepeat)
    observe: str = "full"  # what of the state vector was seen (envs/observe.py)
    frame_stack: int | None = None  # observations stacked per state, when recorded with a stack set (envs.make_env)


def env_spaces(env_id: str) -> tuple[tuple[int, ...], int]:
    """(observation shape, number of actions) of a gymnasium env, registering the ALE games first."""
    import gymnasium as gym

    try:  # the Atari ids only exist once ale_py has registered them
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:
        pass
    if env_id not in gym.registry:
        raise ClassicError(f"unknown env id {env_id!r} in the demos file")
    try:
        with warnings.catch_warnings():  # only its spaces are needed: no "out of date" advice printed for an old id
            warnings.simplefilter("ignore")
            env = gym.make(env_id)
    except Exception as e:
        raise ClassicError(f"cannot make env {env_id!r}: {first_line(e)}") from None
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ClassicError(f"{env_id} has a {type(env.action_space).__name__} action space; cloning needs discrete actions")
        return tuple(env.observation_space.shape), int(env.action_space.n)
    finally:
        env.close()


def load_demos(path: str | os.PathLike, obs_shape: Sequence[int] | None = None) -> Demos:
    """Read and check a demos file against its env.

    Args:
        path: the `.npz` file.
        obs_shape: the observation shape the network eats; default: the env's own
            `observation_space.shape` (for preprocessed Atari frames pass e.g. (84, 84, 4)).
    Raises:
        ClassicError: missing or pickled arrays, or shapes, dtypes or actions that do not fit the env.
    """
    arrays = load_npz(path, DEMO_KEYS, what="a demos file")
    env_id_arr = arrays["env_id"]
    if env_id_arr.shape != () or env_id_arr.dtype.kind != "U":
        raise ClassicError(
            f"{path}: env_id must be a 0-d string array such as np.array('CartPole-v1'), "
            f"got {env_id_arr.dtype} {env_id_arr.shape}"
        )
    env_id = str(env_id_arr)
    try:
        env_shape, num_actions = env_spaces(env_id)
    except ClassicError as e:
        raise ClassicError(f"{path}: {e}") from None
    expected = tuple(obs_shape) if obs_shape is not None else env_shape
    obs, actions = arrays["obs"], arrays["actions"]
    n = len(obs) if obs.ndim else 0
    if n == 0:
        raise ClassicError(f"{path}: holds no transitions")
    # Frames: the agent's wrappers resize and stack them (Atari's 210x160x3, or a vector env's
    # rendering with `--pixels`, -> 84x84x4), so any uint8 (H, W, C) stack is what a network may
    # eat (`load_for_run` checks the run's exact shape); vector observations must match exactly.
    preprocessed_frames = obs_shape is None and obs.ndim == 4 and obs.dtype == np.uint8
    # Vectors seen another way (some entries hidden, several stacked) have their own width: `load_for_run` checks it.
    seen_otherwise = obs_shape is None and obs.ndim == 2 and ("observe" in arrays or "frame_stack" in arrays)
    if obs.shape[1:] != expected and not (preprocessed_frames or seen_otherwise):
        raise ClassicError(f"{path}: obs have shape {obs.shape[1:]} but {env_id} observations are {expected}")
    if obs.dtype != np.uint8 and not np.issubdtype(obs.dtype, np.floating):
        raise ClassicError(f"{path}: obs must be float32 (vectors) or uint8 (frames), got {obs.dtype}")
    for key in ("actions", "rewards", "terminated", "truncated"):
        if arrays[key].shape != (n,):
            raise ClassicError(f"{path}: {key} must have shape ({n},) like obs, got {arrays[key].shape}")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ClassicError(f"{path}: actions must be integers, got {actions.dtype}")
    if actions.min() < 0 or actions.max() >= num_actions:
        raise ClassicError(
            f"{path}: actions run {actions.min()}..{actions.max()} but {env_id} has actions 0..{num_actions - 1}"
        )
    if obs.dtype != np.uint8:
        obs = obs.astype(np.float32)
    if not np.all(np.isfinite(arrays["rewards"])):
        raise ClassicError(f"{path}: rewards must be finite numbers")
    lives = arrays.get("lives")
    if lives is not None and (lives.shape != (n,) or not np.issubdtype(lives.dtype, np.integer)):
        raise ClassicError(f"{path}: lives must be {n} integers like obs, got {lives.dtype} {lives.shape}")
    pixel_view, observe = _text_field(arrays, "pixel_view", "cart", path), _text_field(arrays, "observe", "position", path)
    repeat, stack = _count_field(arrays, "action_repeat", path), _count_field(arrays, "frame_stack", path)
    return Demos(
        env_id=env_id, obs=obs, actions=actions.astype(np.int64), num_actions=num_actions,
        rewards=arrays["rewards"].astype(np.float32), terminated=arrays["terminated"].astype(bool),
        truncated=arrays["truncated"].astype(bool), lives=None if lives is None else lives.astype(np.int64),
        pixel_view=pixel_view, action_repeat=1 if repeat is None else repeat, observe="full" if observe is None else observe,
        frame_stack=stack,
    )


def _text_field(arrays: dict, name: str, example: str, path) -> str | None:
    """An optional 0-d string field of how the env was seen (None: not recorded).

    Raises:
        ClassicError: another shape or dtype.
    """
    value = arrays.get(name)
    if value is not None and (value.shape != () or value.dtype.kind != "U"):
        raise ClassicError(f"{path}: {name} must be a 0-d string array such as np.array({example!r}), got {value.dtype} {value.shape}")
    return None if value is None else str(value)


def _count_field(arrays: dict, name: str, path) -> int | None:
    """An optional 0-d integer >= 1 field of how the env was seen (None: not recorded).

    Raises:
        ClassicError: another shape or dtype, or a count below 1.
    """
    value = arrays.get(name)
    if value is not None and (value.shape != () or not np.issubdtype(value.dtype, np.integer) or int(value) < 1):
        got = f"{value.item()!r}" if value.shape == () else f"{value.dtype} {value.shape}"  # an array's repr runs over lines
        raise ClassicError(f"{path}: {name} must be a 0-d integer >= 1, got {got}")
    return None if value is None else int(value)


class DemoRecorder:
    """Transitions of human or agent play, saved for supervised pretraining (the format: this module's docstring)."""

    def __init__(self, env_id: str, seen_as: dict | None = None):
        """`seen_as`: the `envs.make_env` options the env was made with (`agent.core.config.env_options`)."""
        self.env_id = env_id
        seen_as = seen_as or {}
        self.pixel_view = seen_as.get("pixel_view") if seen_as.get("pixels") else None
        self.action_repeat = int(seen_as.get("action_repeat", 1))
        self.observe = str(seen_as.get("observe", "full"))
        self.frame_stack = seen_as.get("frame_stack")
        self.obs: list[np.ndarray] = []
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.lives: list[int | None] = []  # Atari: lives left after each step, so a replay can end training episodes there

    def __len__(self) -> int:
        return len(self.actions)

    def add(self, obs: np.ndarray, action: int, reward: float, terminated: bool, truncated: bool, lives: int | None = None) -> None:
        self.lives.append(None if lives is None else int(lives))
        self.obs.append(np.array(obs, copy=True))
        self.actions.append(int(action))
        self.rewards.append(float(reward))
        self.terminated.append(bool(terminated))
        self.truncated.append(bool(truncated))

    def cut(self) -> None:
        """An episode stopped early (quit, step cap) ends as truncated: it is not a terminal state."""
        if self.actions and not (self.terminated[-1] or self.truncated[-1]):
            self.truncated[-1] = True

    def save(self, path: str | Path, obs_shape: tuple[int, ...], obs_dtype: np.dtype) -> Path:
        """Write atomically (temp file, then rename), so an old file is never left half-written."""
        path = Path(path)
        obs = np.stack(self.obs) if self.obs else np.zeros((0, *obs_shape), dtype=obs_dtype)
        arrays = {
            "obs": obs.astype(obs_dtype, copy=False),
            "actions": np.asarray(self.actions, dtype=np.int64),
            "rewards": np.asarray(self.rewards, dtype=np.float32),
            "terminated": np.asarray(self.terminated, dtype=bool),
            "truncated": np.asarray(self.truncated, dtype=bool),
            "env_id": np.array(self.env_id),
        }
        if self.lives and all(n is not None for n in self.lives):
            arrays["lives"] = np.asarray(self.lives, dtype=np.int64)
        if self.pixel_view is not None:
            arrays["pixel_view"] = np.array(self.pixel_view)
        if self.action_repeat != 1:
            arrays["action_repeat"] = np.array(self.action_repeat, dtype=np.int64)
        if self.observe != "full":
            arrays["observe"] = np.array(self.observe)
        if self.frame_stack is not None:
            arrays["frame_stack"] = np.array(int(self.frame_stack), dtype=np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path
