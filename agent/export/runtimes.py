"""Exported Q-networks: the metadata file beside each, and running a .tflite or .onnx one without TensorFlow.

`python -m agent.export` (agent/export/convert.py) writes a model and, beside it,
`<model>.json`: what the model eats and what it gives back, so that whoever
runs it (play.py, a C++ program, a phone app) knows what to feed it:

    env_id, pixels, pixel_view,  the env to build with envs.make_env (play.py does)
    action_repeat
    input                        {"shape": [null, ...], "dtype": "float32" | "uint8"}, batch first
    output                       {"shape": [null, num_actions], "dtype": "float32"}: one Q-value per action
    action_meanings              the name of each action, in order
    preprocessing                a sentence on what an observation is
    observe, frame_stack         what of the env's state is seen, and how many observations are stacked (envs.make_env)
    recurrent                    a recurrent network's step function (obs, h, c) -> (q, h', c'): {"units", "state",
                                 "inputs", "outputs"}; absent for a feed-forward network

This module imports no TensorFlow: play.py plays a .tflite file through the
LiteRT interpreter (the `ai-edge-litert` package) and a .onnx file through
ONNX Runtime, both optional (`pip install '.[export]'`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from common.files import atomic_write_bytes

METADATA_VERSION = 1
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}  # the formats a file suffix names; a SavedModel is a directory


def install_hint(*packages: str) -> str:
    """How to install what is missing: the packages themselves, or the whole export extra from a checkout."""
    return f"pip install {' '.join(packages)} (or pip install '.[export]' in a checkout)"

RUNTIMES = {"tflite": ("ai_edge_litert", "ai-edge-litert"), "onnx": ("onnxruntime", "onnxruntime")}  # format -> (module, package)


def metadata_path(model_path: str | Path) -> Path:
    """`model.tflite` -> `model.tflite.json` (a SavedModel directory `dir` -> `dir.json`)."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def file_format(path: str | Path) -> str | None:
    """"tflite" or "onnx" for a path with that suffix, else None."""
    suffix = Path(path).suffix.lower()
    return next((fmt for fmt, s in SUFFIXES.items() if s == suffix), None)


def write_metadata(model_path: str | Path, meta: dict[str, Any]) -> Path:
    """Write `<model>.json` atomically; returns its path."""
    path = metadata_path(model_path)
    atomic_write_bytes(path, (json.dumps({"format_version": METADATA_VERSION, **meta}, indent=2) + "\n").encode("utf-8"))
    return path


def export_again(model_path: str | Path) -> str:
    """The command that writes `model_path` and its metadata anew (RUN: the run directory it was exported from)."""
    return f"export it again with `python -m agent.export RUN --out {shlex.quote(str(model_path))} --force`"


def read_metadata(model_path: str | Path) -> dict[str, Any]:
    """Read and check `<model>.json`.

    Raises:
        UserError: if the model or its metadata is missing, unreadable or from a newer version.
    """
    model_path = Path(model_path)
    if not model_path.exists():
        raise UserError(f"{str(model_path)!r} does not exist")
    path = metadata_path(model_path)
    if not path.is_file():
        raise UserError(f"{str(model_path)!r} has no {path.name} beside it (what it eats and which env it plays); {export_again(model_path)}")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, RecursionError):  # bad UTF-8 or JSON, an int of thousands of digits, nesting too deep
        raise UserError(f"{str(path)!r} is not valid JSON; {export_again(model_path)}") from None
    if not isinstance(meta, dict):
        raise UserError(f"{str(path)!r} is not an export's metadata; {export_again(model_path)}")
    version = meta.get("format_version", 0)
    if not _is_int(version):
        raise UserError(f"{str(path)!r} has a format_version that is not an integer; {export_again(model_path)}")
    if version > METADATA_VERSION:
        raise UserError(f"{str(path)!r} was written by a newer version (format {version}); update this tool")
    missing = [key for key in ("env_id", "input", "num_actions") if key not in meta]
    if missing:
        raise UserError(f"{str(path)!r} lacks {', '.join(missing)}; {export_again(model_path)}")
    wrong = _wrong_field(meta)
    if wrong:
        raise UserError(f"{str(path)!r}: {wrong}; {export_again(model_path)}")
    return meta


INPUT_DTYPES = ("float32", "float64", "float16", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "bool")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _wrong_field(meta: dict[str, Any]) -> str | None:
    """What is wrong with a field that play.py reads from the metadata, or None (the fields written by `write_metadata`)."""
    inp = meta["input"]
    if not isinstance(meta["env_id"], str):
        return "env_id is not a string"
    if not (isinstance(inp, dict) and isinstance(inp.get("shape"), list) and all(d is None or _is_int(d) for d in inp["shape"])):
        return "input lacks its shape, a list of sizes such as [null, 4]"
    if inp.get("dtype") not in INPUT_DTYPES:
        return f"input dtype {inp.get('dtype')!r} is not a numeric type such as 'float32' or 'uint8'"
    if not _is_int(meta["num_actions"]) or meta["num_actions"] < 1:
        return f"num_actions must be a positive integer, got {meta['num_actions']!r}"
    if not isinstance(meta.get("pixels", False), bool) or not isinstance(meta.get("pixel_view", "full"), str):
        return "pixels must be true/false and pixel_view a string"
    repeat = meta.get("action_repeat", 1)
    if not _is_int(repeat) or repeat < 1:
        return f"action_repeat must be an integer >= 1, got {repeat!r}"
    if not isinstance(meta.get("observe", "full"), str):
        return "observe must be a string such as 'full' or 'position'"
    stack = meta.get("frame_stack")
    if stack is not None and (not _is_int(stack) or stack < 1):
        return f"frame_stack must be an integer >= 1 or null, got {stack!r}"
    return None


def check_against_env(meta: dict[str, Any], env, model_path: str | Path) -> None:
    """Refuse a model whose input or action count differs from the env built from its metadata."""
    obs_shape, obs_dtype, n = tuple(env.observation_space.shape), np.dtype(env.observation_space.dtype), int(env.action_space.n)
    shape, dtype = tuple(meta["input"]["shape"][1:]), np.dtype(meta["input"]["dtype"])
    if shape != obs_shape or dtype != obs_dtype or int(meta["num_actions"]) != n:
        raise UserError(f"{str(model_path)!r} takes {dtype} {shape} and gives {meta['num_actions']} Q-values, but {meta['env_id']} gives "
                        f"{obs_dtype} {obs_shape} and has {n} actions; its metadata file does not belong to it: {export_again(model_path)}")


def runtime_missing(fmt: str) -> str | None:
    """The one-line reason a format's runtime cannot be imported, or None if it can."""
    module, package = RUNTIMES[fmt]
    if module_available(module):
        return None
    return f"running a .{fmt} model needs {package}, which is not installed: {install_hint(package)}"


def module_available(name: str) -> bool:
    from importlib.util import find_spec

    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load_q_fn(model_path: str | Path, fmt: str | None = None):
    """A `q_fn` (obs batch -> Q-values, numpy in and out) running an exported model in its own runtime.

    Args:
        model_path: a `.tflite` file (the LiteRT interpreter) or a `.onnx` file (ONNX Runtime).
        fmt: "tflite" or "onnx"; None: from the suffix.

    Raises:
        UserError: for an unknown suffix, a missing runtime or a file the runtime cannot read.
    """
    fmt = fmt or file_format(model_path)
    if fmt not in RUNTIMES:
        raise UserError(f"{str(model_path)!r} is neither a .tflite nor a .onnx file")
    reason = runtime_missing(fmt)
    if reason:
        raise UserError(reason)
    return (_tflite_q_fn if fmt == "tflite" else _onnx_q_fn)(Path(model_path))


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """LiteRT's C++ logger announces its XNNPACK delegate on fd 2 ("INFO: Created ..."); errors still raise."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _tflite_q_fn(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as e:
        raise UserError(f"{str(path)!r} is not a readable TFLite model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if len(interpreter.get_input_details()) == 3:
        return _tflite_step_fn(interpreter)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    allocated = [None]  # the batch size the tensors are allocated for

    def q_fn(obs_batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(obs_batch, dtype=inp["dtype"])
        if allocated[0] != len(x):  # the input's batch dimension is dynamic (-1); size it to this batch
            interpreter.resize_tensor_input(inp["index"], x.shape)
            with quiet_stderr():
                interpreter.allocate_tensors()
            allocated[0] = len(x)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return q_fn


def _onnx_q_fn(path: Path):
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
        raise UserError(f"{str(path)!r} is not a readable ONNX model ({type(e).__name__})") from None
    if [i.name for i in session.get_inputs()] == list(STEP_INPUTS):
        return _onnx_step_fn(session)
    inp = session.get_inputs()[0]
    dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32

    def q_fn(obs_batch: np.ndarray) -> np.ndarray:
        return session.run(None, {inp.name: np.ascontiguousarray(obs_batch, dtype=dtype)})[0]

    return q_fn


# ---------------------------------------------------------------- a recurrent network's step function

STEP_INPUTS = ("obs", "h", "c")  # a recurrent export's inputs, and its outputs (q, h', c') in this order (agent/dqn/recurrent.py)


def _tflite_step_fn(interpreter):
    """A recurrent export in LiteRT as a stateful `q_fn` (`RecurrentQFn`): inputs found by their names (the converter
    orders them its own way), outputs in the model's order (q, h', c'), every tensor sized to the batch."""
    from agent.dqn.policies import RecurrentQFn

    by_name = {}
    for detail in interpreter.get_input_details():
        for name in STEP_INPUTS:
            if detail["name"].endswith(f"_{name}:0"):
                by_name[name] = detail
    if set(by_name) != set(STEP_INPUTS):
        raise UserError(f"a TFLite model with inputs {[d['name'] for d in interpreter.get_input_details()]} is not a recurrent step "
                        f"function (obs, h, c); export it again")
    outputs = sorted(interpreter.get_output_details(), key=lambda d: int(d["name"].rsplit(":", 1)[-1]))
    units = int(by_name["h"]["shape"][-1])
    allocated = [None]

    def step(obs_batch: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feeds = {"obs": np.ascontiguousarray(obs_batch, dtype=by_name["obs"]["dtype"]),
                 "h": np.ascontiguousarray(carry[:, 0], np.float32), "c": np.ascontiguousarray(carry[:, 1], np.float32)}
        if allocated[0] != len(obs_batch):
            for name, value in feeds.items():
                interpreter.resize_tensor_input(by_name[name]["index"], value.shape)
            with quiet_stderr():
                interpreter.allocate_tensors()
            allocated[0] = len(obs_batch)
        for name, value in feeds.items():
            interpreter.set_tensor(by_name[name]["index"], value)
        interpreter.invoke()
        q, h, c = (interpreter.get_tensor(d["index"]).copy() for d in outputs)
        return q, np.stack([h, c], axis=1)

    return RecurrentQFn(step, units)


def _onnx_step_fn(session):
    """A recurrent export in ONNX Runtime as a stateful `q_fn` (`RecurrentQFn`)."""
    from agent.dqn.policies import RecurrentQFn

    obs_input = session.get_inputs()[0]
    dtype = np.uint8 if obs_input.type == "tensor(uint8)" else np.float32
    units = int(session.get_inputs()[1].shape[-1])

    def step(obs_batch: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, h, c = session.run(None, {"obs": np.ascontiguousarray(obs_batch, dtype=dtype), "h": np.ascontiguousarray(carry[:, 0], np.float32),
                                     "c": np.ascontiguousarray(carry[:, 1], np.float32)})
        return q, np.stack([h, c], axis=1)

    return RecurrentQFn(step, units)
