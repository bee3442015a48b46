"""Checkpoints that survive SIGKILL, disk-full errors and hostile files; exact resume.

Layout of `RUN_DIR/checkpoints/`:

    step-000001000/                 one complete checkpoint (the env step is in the name)
        networks.index              tf.train.Checkpoint of the online and target networks and the
        networks.data-00000-of-00001    optimizer (slots and iteration count included)
        state.json                  counters, episode statistics, every RNG state, the live env
                                    state and current observation, the config it was made with
        replay/<field>.npy          the replay memory, one plain .npy per array (no pickle)
        manifest.json               written last: format version, step, size and sha256 of every file
    .tmp-step-000002000-XXXX/       a checkpoint being written (or left by a killed run)

A checkpoint is written into a `.tmp-*` directory, every file is fsynced, the
manifest goes in last, and the directory is renamed to `step-NNNNNNNNN`: a
directory of that name exists only once complete. A run killed at any moment
leaves at worst a `.tmp-*` directory, which a resume removes. Pruning renames
a checkpoint to `.tmp-*` before deleting it, so a half-deleted checkpoint never
looks complete either.

Loading trusts nothing: every file is checked against the manifest (size, then
sha256), arrays are read with `allow_pickle=False`, JSON values are checked by
type, the env and network shape are compared with the run's, and a newer
format version is refused, each with one line naming the problem.
"""

from __future__ import annotations

import base64
import collections
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import tensorflow as tf
from tensorflow.core.util import event_pb2

from agent.config import DQNConfig
from agent.errors import UserError, command
from agent.files import atomic_path
from replay import ReplayMemory, ReplayMemoryError

CHECKPOINT_FORMAT = 1
MANIFEST = "manifest.json"
STATE = "state.json"
NETWORKS = "networks"  # tf.train.Checkpoint prefix: networks.index, networks.data-*
REPLAY = "replay"
RECENT_RETURNS = 20  # training returns averaged in progress.csv
_STEP_DIR = re.compile(r"^step-(\d{9})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
# Testing hook: seconds to sleep between the parts of a checkpoint, so a test can kill a run mid-write.
_DELAY_ENV = "DQN_CHECKPOINT_WRITE_DELAY_S"
# Architecture and env fields a checkpoint must share with the run that loads it.
_SAME_FIELDS = ("env_id", "pixels", "network", "hidden_sizes", "dueling", "optimizer", "replay_capacity")


class CheckpointError(UserError):
    """A checkpoint that cannot be written or loaded; the message is one line a person can act on."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


# ---------------------------------------------------------------- the loop's state


@dataclass
class LoopState:
    """What the training loop carries from one env step to the next (besides networks, env and replay).

    Attributes:
        step: env steps taken.
        episodes: real episodes finished (an Atari game, not a lost life).
        recent_returns: the last training returns, for progress.csv.
        metrics: the latest learner metrics (`loss`, `q_mean`).
        evaluations: every evaluation so far `{"env_step", "mean", "std", "train_seconds"}`.
        solved_at: env step of the first evaluation at or above the solve threshold.
        last_eval: the latest evaluation result; last_eval_step its env step (-1: none).
        wall_seconds: wall-clock seconds of the run so far (all sessions).
        eval_seconds: of which spent evaluating.
    """

    step: int = 0
    episodes: int = 0
    recent_returns: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT_RETURNS))
    metrics: dict = field(default_factory=lambda: {"loss": float("nan"), "q_mean": float("nan")})
    evaluations: list = field(default_factory=list)
    solved_at: int | None = None
    last_eval: dict | None = None
    last_eval_step: int = -1
    wall_seconds: float = 0.0
    eval_seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "step": self.step, "episodes": self.episodes, "recent_returns": list(self.recent_returns),
            "metrics": dict(self.metrics), "evaluations": self.evaluations, "solved_at": self.solved_at,
            "last_eval": self.last_eval, "last_eval_step": self.last_eval_step,
            "wall_seconds": self.wall_seconds, "eval_seconds": self.eval_seconds,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> LoopState:
        """Rebuild from `to_json()`, checking every field's type.

        Raises:
            CheckpointError: naming the first bad field.
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: 'loop' must be an object")

        def get(name, kinds, *, optional=False):
            value = data.get(name)
            if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
                return value
            raise CheckpointError(f"{where}: loop field {name!r} has a wrong type ({type(value).__name__})")

        returns = get("recent_returns", list)
        metrics = get("metrics", dict)
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in returns) or not all(
            isinstance(metrics.get(k), (int, float)) for k in ("loss", "q_mean")
        ):
            raise CheckpointError(f"{where}: loop fields 'recent_returns'/'metrics' must hold numbers")
        state = cls(
            step=get("step", int), episodes=get("episodes", int),
            metrics={"loss": float(metrics["loss"]), "q_mean": float(metrics["q_mean"])},
            evaluations=get("evaluations", list), solved_at=get("solved_at", int, optional=True),
            last_eval=get("last_eval", dict, optional=True), last_eval_step=get("last_eval_step", int),
            wall_seconds=float(get("wall_seconds", (int, float))), eval_seconds=float(get("eval_seconds", (int, float))),
        )
        state.recent_returns.extend(float(r) for r in returns)
        if state.step < 0 or state.episodes < 0:
            raise CheckpointError(f"{where}: negative counters")
        evals = state.evaluations + ([state.last_eval] if state.last_eval is not None else [])
        if not all(isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in ("mean", "std")) for e in evals):
            raise CheckpointError(f"{where}: the saved evaluations are malformed")
        return state


# ---------------------------------------------------------------- JSON encoding of numpy values

_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "Philox": np.random.Philox,
                   "SFC64": np.random.SFC64, "MT19937": np.random.MT19937}


class _NotEncodable(Exception):
    pass


def encode(value: Any) -> Any:
    """A JSON-able, tagged form of plain values, numeric arrays, tuples, deques and numpy generators."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise _NotEncodable(value.dtype)
        data = np.ascontiguousarray(value)
        return {"__ndarray__": base64.b64encode(data.tobytes()).decode("ascii"), "dtype": data.dtype.str, "shape": list(data.shape)}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return {"__npscalar__": value.dtype.str, "value": value.item()}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, collections.deque):
        return {"__deque__": [encode(v) for v in value], "maxlen": value.maxlen}
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    raise _NotEncodable(type(value))


def decode(value: Any) -> Any:
    """Inverse of `encode`; raises ValueError/TypeError/KeyError on anything it did not write."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict) or len(value) == 0:
        raise TypeError(f"unexpected {type(value).__name__}")
    if "__ndarray__" in value:
        dtype = np.dtype(str(value["dtype"]))
        shape = tuple(int(d) for d in value["shape"])
        if dtype.kind not in "biuf":
            raise TypeError(f"dtype {dtype} is not numeric")
        data = base64.b64decode(value["__ndarray__"], validate=True)
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if "__npscalar__" in value:
        dtype = np.dtype(str(value["__npscalar__"]))
        if dtype.kind not in "biuf":
            raise TypeError(f"dtype {dtype} is not numeric")
        return dtype.type(value["value"])
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__deque__" in value:
        maxlen = value["maxlen"]
        return collections.deque((decode(v) for v in value["__deque__"]), maxlen=None if maxlen is None else int(maxlen))
    if "__generator__" in value:
        return generator_from_state(value["__generator__"])
    raise TypeError(f"unknown tag {sorted(value)[:1]}")


def generator_from_state(state: Any) -> np.random.Generator:
    """A numpy Generator from `bit_generator.state` (only numpy's own bit generators)."""
    if not isinstance(state, dict) or state.get("bit_generator") not in _BIT_GENERATORS:
        raise TypeError("not a numpy bit generator state")
    bit_generator = _BIT_GENERATORS[state["bit_generator"]]()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


# ---------------------------------------------------------------- the live env


# Wrapper attributes that hold construction arguments, caches or process-local values (a perf_counter
# reading), never episode state.
_ENV_SKIP = {"env", "episode_start_time", "_saved_kwargs", "_ezpickle_args", "_ezpickle_kwargs", "_previous_data", "_action_space",
             "_observation_space", "_metadata", "_cached_spec", "spec", "action_space", "observation_space"}


def _env_layers(env: gym.Env) -> list:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _supported_base(base) -> str | None:
    """How the innermost env's state can be captured: "classic" (plain attributes), "ale", or None."""
    module = type(base).__module__
    if module.startswith("gymnasium.envs.classic_control"):
        return "classic"
    if module.startswith("ale_py") and hasattr(base, "ale"):
        return "ale"
    return None


def capture_env(env: gym.Env) -> dict | None:
    """The state of a live env, wrapper by wrapper: plain attributes (counters, frame stacks, RNGs) and
    the emulator state for ALE games. None for envs whose core state we cannot capture (e.g. Box2D)."""
    layers = _env_layers(env)
    kind = _supported_base(layers[-1])
    if kind is None:
        return None
    out = []
    for layer in layers:
        attrs = {}
        for key, value in vars(layer).items():
            if key in _ENV_SKIP:
                continue
            try:
                attrs[key] = encode(value)
            except _NotEncodable:
                continue
        out.append({"class": type(layer).__qualname__, "attrs": attrs})
    state = {"kind": kind, "layers": out}
    if kind == "ale":
        ale_state = layers[-1].ale.cloneState(include_rng=True)
        state["ale"] = base64.b64encode(ale_state.serialize()).decode("ascii")
    return state


def restore_env(env: gym.Env, state: dict, where: str) -> None:
    """Put a live env back in the state `capture_env` saw.

    Raises:
        CheckpointError: when the wrappers differ or a value is malformed.
    """
    layers = _env_layers(env)
    try:
        saved = state["layers"]
        names = [layer["class"] for layer in saved]
    except (KeyError, TypeError):
        raise CheckpointError(f"{where}: the env state is malformed") from None
    ours = [type(layer).__qualname__ for layer in layers]
    if names != ours or state.get("kind") != _supported_base(layers[-1]):
        raise CheckpointError(f"{where}: the env's wrappers {names} differ from this run's {ours}")
    try:
        for layer, entry in zip(layers, saved):
            for key, value in entry["attrs"].items():
                if key in _ENV_SKIP or not hasattr(layer, key):
                    raise TypeError(f"unexpected attribute {key!r}")
                setattr(layer, key, decode(value))
        if state["kind"] == "ale":
            import ale_py

            layers[-1].ale.restoreState(ale_py.ALEState(base64.b64decode(state["ale"], validate=True)))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: the env state cannot be restored ({e})") from None


# ---------------------------------------------------------------- files


def _delay() -> None:
    seconds = os.environ.get(_DELAY_ENV)
    if seconds:
        time.sleep(float(seconds))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as .npy straight from its memory (no copy for a contiguous array), never pickled."""
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: Path, chunk: int = 1 << 23) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints `(step, path)`, oldest first (a `step-*` directory holding a manifest)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / MANIFEST).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def remove_incomplete(root: str | Path) -> list[str]:
    """Delete what killed writers left behind (`.tmp-*` directories); returns their names."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                removed.append(path.name)
    return removed


def prune(root: Path, keep: int) -> None:
    """Delete the oldest complete checkpoints beyond `keep` (the newest always stays)."""
    found = list_checkpoints(root)
    for _, path in found[: max(len(found) - max(keep, 1), 0)]:
        doomed = root / f".tmp-delete-{path.name}-{os.getpid()}"
        os.rename(path, doomed)  # gone from the list at once; a kill mid-delete leaves only a .tmp-*
        shutil.rmtree(doomed, ignore_errors=True)


def verify(path: Path) -> dict:
    """Check a checkpoint directory against its manifest (names, sizes, sha256); return the manifest.

    Raises:
        CheckpointError: naming the first missing, truncated or altered file, or a newer format.
    """

    def damaged(detail: str) -> CheckpointError:
        earlier = [p.name for _, p in list_checkpoints(path.parent) if p != path]
        hint = f"delete {path} to resume from {earlier[-1]}" if earlier else "no earlier checkpoint exists; start over with --force"
        return CheckpointError(f"checkpoint {path.name} is damaged: {detail}; {hint}")

    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise damaged(f"{MANIFEST} is not readable JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format_version"), int) or not isinstance(manifest.get("files"), dict):
        raise damaged(f"{MANIFEST} lacks format_version or files")
    if manifest["format_version"] > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path.name} was written by a newer version (checkpoint format {manifest['format_version']}, "
            f"this one reads {CHECKPOINT_FORMAT}); update this tool"
        )
    files = manifest["files"]
    for name in (STATE, f"{NETWORKS}.index"):
        if name not in files:
            raise damaged(f"the manifest does not list {name}")
    for name, entry in files.items():
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or not isinstance(entry, dict):
            raise damaged(f"the manifest lists a bad file name {name!r}")
        file = path / name
        if not file.is_file():
            raise damaged(f"{name} is missing")
        size = file.stat().st_size
        if size != entry.get("size"):
            raise damaged(f"{name} has {size:,} bytes, the manifest says {entry.get('size')}")
    for name, entry in files.items():
        if sha256_file(path / name) != entry.get("sha256"):
            raise damaged(f"{name} does not match its sha256 in the manifest")
    return manifest


# ---------------------------------------------------------------- saving and loading


def _networks(agent) -> tf.train.Checkpoint:
    parts = {"online": agent.online, "optimizer": agent.optimizer}
    if agent.target is not None:
        parts["target"] = agent.target
    return tf.train.Checkpoint(**parts)


def _replay_parts(replay: ReplayMemory) -> tuple[str, dict[str, np.ndarray], dict[str, Any]]:
    """(kind, arrays, scalars) of a replay memory's `state_dict()`."""
    state = replay.state_dict()
    kind = replay.kind
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    return kind, arrays, scalars


def write_replay(directory: Path, replay: ReplayMemory, arrays: bool = True) -> dict:
    """Save a replay memory as one .npy per array in `directory` (created), streamed from the ring
    itself (no concatenated copy, no pickle); returns the JSON description `read_replay` needs.

    Args:
        arrays: False saves only the description and RNG (`--no-save-replay`).
    """
    kind, parts, scalars = _replay_parts(replay)
    info = {"kind": kind, "saved": arrays, "scalars": scalars, "rng": encode(replay.rng), "arrays": sorted(parts) if arrays else []}
    if arrays:
        directory.mkdir()
        for key, array in parts.items():
            _save_npy(directory / f"{key}.npy", array)
            _delay()
        _fsync_path(directory)
    return info


def read_replay(directory: Path, replay: ReplayMemory, info: Any, *, listed: set[str] | None = None, where: str = "replay") -> None:
    """Load what `write_replay` saved into `replay` (same kind and layout), trusting nothing.

    Arrays are memory-mapped and copied into the ring through the page cache, so
    loading needs no second copy in memory. Pickled (object) arrays are refused.

    Args:
        listed: file names the manifest vouches for (None: no manifest to check).

    Raises:
        CheckpointError: naming the file or field that is wrong.
    """
    kind, arrays, scalars = _replay_parts(replay)
    if not isinstance(info, dict) or info.get("kind") != kind or not isinstance(info.get("scalars"), dict):
        raise CheckpointError(f"{where}: the replay description is missing or for another kind of memory")
    try:
        rng = decode(info["rng"])
        assert isinstance(rng, np.random.Generator)
    except (KeyError, TypeError, ValueError, AssertionError):
        raise CheckpointError(f"{where}: the replay RNG state is malformed") from None
    if not info.get("saved"):
        replay.rng = rng
        print(f"warning: {where} was saved without its replay memory (--no-save-replay); "
              "learning restarts from an empty buffer", file=sys.stderr)
        return
    saved_scalars = info["scalars"]
    saved_arrays = set(info.get("arrays", []))
    optional = set(getattr(replay, "REBUILT_IF_MISSING", ()))  # older checkpoints lack these; the memory rebuilds them
    if not (set(scalars) - optional <= set(saved_scalars) <= set(scalars) and set(arrays) - optional <= saved_arrays <= set(arrays)):
        raise CheckpointError(f"{where}: the replay fields differ from this memory's")
    for key, value in saved_scalars.items():
        if type(value) is not type(scalars[key]):
            raise CheckpointError(f"{where}: replay field {key!r} has a wrong type")
    capacity = replay.capacity
    if not (0 <= saved_scalars["pos"] < capacity and 0 <= saved_scalars["size"] <= capacity):
        raise CheckpointError(f"{where}: replay pos/size out of range for capacity {capacity}")
    loaded = dict(saved_scalars)
    for key, current in arrays.items():
        if key not in saved_arrays:
            continue
        name = f"{key}.npy"
        if listed is not None and name not in listed:
            raise CheckpointError(f"{where}: the manifest does not list {REPLAY}/{name}")
        try:  # memory-mapped: the copy into the ring streams through the page cache
            array = np.load(directory / name, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise CheckpointError(f"{where}: {REPLAY}/{name} is not a plain numeric .npy array ({e}); refusing to load it") from None
        if not isinstance(array, np.ndarray) or array.dtype.hasobject or array.dtype != current.dtype or array.shape != current.shape:
            raise CheckpointError(f"{where}: {REPLAY}/{name} holds {array.dtype}{list(array.shape)}, this memory needs {current.dtype}{list(current.shape)}")
        loaded[key] = array
    try:
        replay.load_state_dict(loaded)
    except (ReplayMemoryError, ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: the replay memory cannot be restored ({e})") from None
    replay.rng = rng


def _python_rngs() -> dict:
    return {"python": encode(random.getstate()), "numpy_global": encode(np.random.get_state())}


LIBRARIES = ("tensorflow", "keras", "gymnasium", "ale-py", "numpy")  # what decides whether a resume continues bit for bit


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries a run's numbers depend on (recorded in each manifest)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def warn_other_versions(saved: Any, where: str) -> list[str]:
    """Warn (one line on stderr) when a checkpoint was written with other library versions; returns the differences."""
    if not isinstance(saved, dict):
        return []  # written before versions were recorded
    here = library_versions()
    differ = [f"{name} {saved[name]} -> {here[name]}" for name in LIBRARIES if name in saved and saved[name] != here[name]]
    if differ:
        print(f"warning: {where} was written with other library versions ({', '.join(differ)}); "
              "the run resumes, but not necessarily bit for bit as it would have gone on", file=sys.stderr)
    return differ


class Checkpoints:
    """Saves and restores one run's checkpoints under `run_dir/checkpoints`.

    Args:
        run_dir: the run directory.
        cfg: the run's configuration.
        agent: networks, optimizer, exploration RNG and update count.
        replay: the replay memory (any `ReplayMemory`).
        env: the training env, whose live state is saved.
        keep: complete checkpoints kept (at least 1; the newest is never deleted).
        save_replay: include the replay memory.
    """

    def __init__(self, run_dir: Path, cfg: DQNConfig, agent, replay: ReplayMemory, env: gym.Env, *, keep: int = 3, save_replay: bool = True):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / "checkpoints"
        self.cfg, self.agent, self.replay, self.env = cfg, agent, replay, env
        self.keep = max(int(keep), 1)
        self.save_replay = save_replay
        self.last_step: int | None = None  # env step of the newest checkpoint this process wrote or read

    @property
    def last_name(self) -> str | None:
        return None if self.last_step is None else checkpoint_name(self.last_step)

    def _signature(self) -> dict:
        return {"obs_shape": list(self.agent.obs_shape), "obs_dtype": str(self.agent.obs_dtype),
                "num_actions": self.agent.num_actions, "target": self.agent.target is not None}

    # ----- saving

    def save(self, loop: LoopState, obs: np.ndarray) -> Path:
        """Write `step-NNNNNNNNN/` for `loop.step` (complete or not at all), then prune old ones.

        Raises:
            CheckpointError: when a file cannot be written (e.g. a full disk); earlier checkpoints are kept.
        """
        name = checkpoint_name(loop.step)
        final = self.root / name
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if final.exists():  # written for this very step already (same state)
                self.last_step = loop.step
                return final
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{name}-"))
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is as readable as the rest of the run
            _networks(self.agent).write(str(tmp / NETWORKS))
            _delay()
            replay_info = write_replay(tmp / REPLAY, self.replay, arrays=self.save_replay)
            state = {
                "format_version": CHECKPOINT_FORMAT,
                "step": loop.step,
                "config": self.cfg.to_dict(),
                "signature": self._signature(),
                "loop": loop.to_json(),
                "updates": self.agent.num_updates,
                "rng": {"agent": encode(self.agent.rng), **_python_rngs()},
                "obs": encode(np.asarray(obs)),
                "env": capture_env(self.env),
                "replay": replay_info,
            }
            _write_bytes(tmp / STATE, (json.dumps(state) + "\n").encode())
            files = {}
            for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
                rel = file.relative_to(tmp).as_posix()
                _fsync_path(file)
                files[rel] = {"size": file.stat().st_size, "sha256": sha256_file(file)}
            _delay()
            manifest = {"format_version": CHECKPOINT_FORMAT, "step": loop.step, "env_id": self.cfg.env_id,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions(), "files": files}
            _write_bytes(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
            _fsync_path(tmp)
            os.rename(tmp, final)  # the checkpoint becomes visible, whole
            _fsync_path(self.root)
            tmp = None
        except (OSError, tf.errors.OpError) as e:
            reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
            previous = f"the previous checkpoint ({self.last_name}) is kept" if self.last_name else "no earlier checkpoint exists"
            raise CheckpointError(
                f"cannot write checkpoint {name} in {self.root}: {reason}; {previous}; "
                f"free some space and continue with: {command('train')} --resume {self.run_dir}"
            ) from None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.last_step = loop.step
        try:
            prune(self.root, self.keep)
        except OSError:
            pass  # an old checkpoint that cannot be deleted now is deleted next time
        return final

    # ----- loading

    def restore_latest(self) -> tuple[LoopState, np.ndarray]:
        """Load the newest complete checkpoint into the agent, replay and env.

        Nothing on disk is changed here; a checkpoint that fails any check is refused.

        Returns:
            The loop state and the current observation.

        Raises:
            CheckpointError: one line naming the checkpoint and what is wrong with it.
        """
        path = latest_checkpoint(self.root)
        if path is None:
            if list(self.root.glob("ckpt-*.index")):
                raise CheckpointError(f"{self.run_dir} holds checkpoints of an older version (ckpt-N, without replay, RNG or env state), "
                                      "which cannot resume exactly; start a new run")
            raise CheckpointError(f"{self.run_dir} has no complete checkpoint to resume from; start over with --force")
        return self.restore(path)

    def restore(self, path: Path) -> tuple[LoopState, np.ndarray]:
        where = f"checkpoint {path.name}"
        manifest = verify(path)
        warn_other_versions(manifest.get("versions"), where)
        try:
            state = json.loads((path / STATE).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{where}: {STATE} is not valid JSON") from None
        if not isinstance(state, dict) or state.get("format_version") != manifest["format_version"]:
            raise CheckpointError(f"{where}: {STATE} does not match its manifest")
        self._check_compatible(state, where)

        try:
            status = _networks(self.agent).read(str(path / NETWORKS))
            status.assert_existing_objects_matched()
            status.expect_partial()
        except Exception as e:  # TF raises several types for shape mismatches and damaged bundles
            raise CheckpointError(f"{where}: the networks do not fit this run ({type(e).__name__}); was it made with another config?") from None
        self.agent.refresh_acting_copy()

        loop = LoopState.from_json(state.get("loop"), where)
        if loop.step != state.get("step") or loop.step != manifest.get("step"):
            raise CheckpointError(f"{where}: the step counters disagree")
        updates = state.get("updates")
        if not isinstance(updates, int) or updates < 0:
            raise CheckpointError(f"{where}: 'updates' must be a non-negative integer")
        self.agent.num_updates = updates
        try:
            rngs = state["rng"]
            self.agent.rng = decode(rngs["agent"])
            random.setstate(decode(rngs["python"]))
            np.random.set_state(decode(rngs["numpy_global"]))
            obs = decode(state["obs"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: the RNG states or observation are malformed ({e})") from None
        if not isinstance(self.agent.rng, np.random.Generator) or not isinstance(obs, np.ndarray):
            raise CheckpointError(f"{where}: the RNG states or observation are malformed")
        if obs.shape != self.agent.obs_shape or obs.dtype != self.agent.obs_dtype:
            raise CheckpointError(f"{where}: the observation is {obs.dtype}{list(obs.shape)}, this env gives {self.agent.obs_dtype}{list(self.agent.obs_shape)}")

        listed = {name[len(REPLAY) + 1:] for name in manifest["files"] if name.startswith(REPLAY + "/")}
        read_replay(path / REPLAY, self.replay, state.get("replay"), listed=listed, where=where)
        if state.get("env") is None:
            print(f"warning: {where} holds no env state for {self.cfg.env_id}; the resumed run starts a new episode", file=sys.stderr)
            obs, _ = self.env.reset(seed=self.cfg.seed + loop.step)
        else:
            restore_env(self.env, state["env"], where)
        self.last_step = loop.step
        return loop, obs

    def _check_compatible(self, state: dict, where: str) -> None:
        from agent import config as config_lib

        try:
            saved = config_lib.from_dict(state.get("config") or {}, source=f"{where} config")
        except UserError as e:
            raise CheckpointError(str(e)) from None
        if saved.env_id != self.cfg.env_id:
            raise CheckpointError(f"{where} was made for {saved.env_id}, this run trains {self.cfg.env_id}; resume it in its own run directory")
        for name in _SAME_FIELDS:
            if getattr(saved, name) != getattr(self.cfg, name):
                raise CheckpointError(f"{where} has {name}={getattr(saved, name)!r}, this run's config.toml says {getattr(self.cfg, name)!r}; they must match to resume")
        if state.get("signature") != self._signature():
            raise CheckpointError(f"{where} was made for observations/actions {state.get('signature')}, this env has {self._signature()}")

# ---------------------------------------------------------------- logs written past the checkpoint


def trim_progress_csv(path: Path, step: int) -> int:
    """Drop rows after `step` (and a half-written last line) that a killed run left; returns rows dropped."""
    from agent import run_dir as run_files

    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    header = next(csv.reader([lines[0]]))
    kept = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        try:
            ok = line.endswith("\n") and len(row) == len(header) and int(row[0]) <= step
        except ValueError:
            ok = False
        if ok:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        run_files.atomic_write_text(path, "".join(kept))
    return dropped


def trim_tensorboard(tb_dir: Path, step: int) -> int:
    """Rewrite event files without the events after `step` (or a torn last record); returns events dropped."""
    dropped = 0
    if not tb_dir.is_dir():
        return 0
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        events, torn = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                events.append(event_pb2.Event.FromString(record.numpy()))
        except tf.errors.DataLossError:
            torn = True
        late = sum(1 for e in events if e.step > step)
        if not late and not torn:
            continue
        with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for event in events:
                if event.step <= step:
                    writer.write(event.SerializeToString())
        dropped += late
    return dropped


# ---------------------------------------------------------------- Ctrl-C and SIGTERM


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM become a request the loop honours after a whole env step, so the
    checkpoint it saves is exact. A second signal raises KeyboardInterrupt at once (no checkpoint;
    the last complete one stays). Only the main thread can install handlers; elsewhere this is inert."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name if self.signum else ""
