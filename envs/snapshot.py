"""A live env's exact state, for resuming a run in the middle of an episode.

`capture(env)` walks the wrapper stack and keeps each wrapper's plain
attributes (counters, frame stacks, lives, RNGs) in a tagged, JSON-able form,
plus the emulator state for ALE games; `restore(env, state)` puts an env built
the same way back into that state. Envs whose core cannot be captured (Box2D,
MuJoCo) give None: a resume then starts a new episode.

The codec (`encode`/`decode`) writes numbers, numeric arrays, tuples, deques
and numpy generators as JSON and reads back only what it wrote, so a snapshot
file holds no pickle. No TensorFlow is imported here.
"""

from __future__ import annotations

import base64
import collections
from typing import Any

import gymnasium as gym
import numpy as np


class SnapshotError(ValueError):
    """A snapshot that does not fit this env or is malformed; the message names what differs."""


# ---------------------------------------------------------------- JSON encoding of numpy values

_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "Philox": np.random.Philox,
                   "SFC64": np.random.SFC64, "MT19937": np.random.MT19937}


class NotEncodable(TypeError):
    """A value the codec does not write (objects, strings arrays, ...)."""


def encode(value: Any) -> Any:
    """A JSON-able, tagged form of plain values, numeric arrays, tuples, deques and numpy generators."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise NotEncodable(value.dtype)
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
    raise NotEncodable(type(value))


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
_SKIP = {"env", "episode_start_time", "_saved_kwargs", "_ezpickle_args", "_ezpickle_kwargs", "_previous_data", "_action_space",
         "_observation_space", "_metadata", "_cached_spec", "spec", "action_space", "observation_space"}


def _layers(env: gym.Env) -> list:
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


def capture(env: gym.Env) -> dict | None:
    """The state of a live env, wrapper by wrapper: plain attributes (counters, frame stacks, RNGs) and
    the emulator state for ALE games (JSON-able). None for envs whose core state we cannot capture."""
    layers = _layers(env)
    kind = _supported_base(layers[-1])
    if kind is None:
        return None
    out = []
    for layer in layers:
        attrs = {}
        for key, value in vars(layer).items():
            if key in _SKIP:
                continue
            try:
                attrs[key] = encode(value)
            except NotEncodable:
                continue
        out.append({"class": type(layer).__qualname__, "attrs": attrs})
    state = {"kind": kind, "layers": out}
    if kind == "ale":
        ale_state = layers[-1].ale.cloneState(include_rng=True)
        state["ale"] = base64.b64encode(ale_state.serialize()).decode("ascii")
    return state


def restore(env: gym.Env, state: Any) -> None:
    """Put a live env back in the state `capture` saw.

    Raises:
        SnapshotError: when the wrappers differ or a value is malformed.
    """
    layers = _layers(env)
    try:
        saved = state["layers"]
        names = [layer["class"] for layer in saved]
    except (KeyError, TypeError):
        raise SnapshotError("the env state is malformed") from None
    ours = [type(layer).__qualname__ for layer in layers]
    if names != ours or state.get("kind") != _supported_base(layers[-1]):
        raise SnapshotError(f"the env's wrappers {names} differ from this run's {ours}")
    try:
        for layer, entry in zip(layers, saved):
            for key, value in entry["attrs"].items():
                if key in _SKIP or key not in vars(layer):
                    raise TypeError(f"unexpected attribute {key!r}")
                setattr(layer, key, decode(value))
        if state["kind"] == "ale":
            import ale_py

            layers[-1].ale.restoreState(ale_py.ALEState(base64.b64decode(state["ale"], validate=True)))
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, RuntimeError, SystemError) as e:  # SystemError: ale-py refusing a blob
        raise SnapshotError(f"the env state cannot be restored ({type(e).__name__}: {e})") from None
