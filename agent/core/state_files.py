"""A component's state on disk: one `state.json` for plain values, one `.npy` per array, never pickled.

Each component that a checkpoint holds (the agent, a replay memory, the live
env, the loop's counters) says what its state is with `state_dict()` (a flat
dict of numpy arrays and JSON values) and takes it back with
`load_state_dict()`. This module is how such a dict lands in a directory and
comes back, checked against the live component's own dict so that a file made
for another layout is refused with one line before anything is changed:

    DIR/state.json      {"values": {name: JSON value}, "arrays": {name: {"dtype", "shape"}}}
    DIR/<name>.npy      each array, written straight from its memory (no copy, no pickle)

Arrays come back memory-mapped, so a replay memory of several GiB streams into
its ring through the page cache instead of being held twice.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import CheckpointError

STATE = "state.json"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def fsync_path(path: Path) -> None:
    """Flush a file's or directory's metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync one file (inside a checkpoint being built, which is sealed and renamed as a whole)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one array as .npy straight from its memory (no copy for a contiguous array), never pickled."""
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def write_state(directory: Path, state: Mapping[str, Any]) -> None:
    """Write a `state_dict()` into `directory` (created): arrays as .npy files, the rest as state.json."""
    directory.mkdir(parents=True, exist_ok=True)
    values, arrays = {}, {}
    for name, value in state.items():
        if not _NAME.match(name):
            raise ValueError(f"state field {name!r} is not a safe file name")
        if isinstance(value, np.ndarray):
            save_npy(directory / f"{name}.npy", value)
            arrays[name] = {"dtype": value.dtype.str, "shape": list(value.shape)}
        else:
            values[name] = value
    write_bytes(directory / STATE, (json.dumps({"values": values, "arrays": arrays}) + "\n").encode())


def read_state(directory: Path, where: str, like: Mapping[str, Any], optional: Iterable[str] = ()) -> dict[str, Any]:
    """Read what `write_state` wrote, refusing anything that does not fit the live component.

    Args:
        where: names the checkpoint in messages ("checkpoint step-000001000").
        like: the live component's own `state_dict()`: the saved fields must be
            the same names, arrays of the same dtype and shape, values of the
            same JSON type (a null on either side is left to the component).
        optional: fields that older files may lack (the component rebuilds them).

    Raises:
        CheckpointError: naming the file or field that is wrong.
    """
    part = directory.name
    try:
        saved = json.loads((directory / STATE).read_text())
    except (OSError, ValueError, RecursionError):  # ValueError: bad UTF-8 or JSON, an int of thousands of digits; nesting too deep
        raise CheckpointError(f"{where}: {part}/{STATE} is not readable JSON") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("values"), dict) or not isinstance(saved.get("arrays"), dict):
        raise CheckpointError(f"{where}: {part}/{STATE} lacks its values or arrays")
    names = set(saved["values"]) | set(saved["arrays"])
    optional = set(optional)
    if not (set(like) - optional <= names <= set(like)):
        raise CheckpointError(f"{where}: the {part} fields {sorted(names)} differ from this run's {sorted(like)}")
    state: dict[str, Any] = {}
    for name, value in saved["values"].items():
        live = like[name]
        if isinstance(live, np.ndarray) or None not in (value, live) and _json_type(value) != _json_type(live):
            raise CheckpointError(f"{where}: {part} field {name!r} has a wrong type")
        state[name] = value
    for name in saved["arrays"]:
        live = like[name]
        file = f"{part}/{name}.npy"
        try:  # memory-mapped: a copy into a ring streams through the page cache
            array = np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        except Exception as e:  # a damaged header: ValueError, SyntaxError, tokenize.TokenError, EOFError, OSError, ...
            why = "it holds pickled Python objects" if "pickle" in str(e) else (str(e).strip() or type(e).__name__).splitlines()[0]
            raise CheckpointError(f"{where}: {file} is not a plain numeric .npy array ({why}); refusing to load it") from None
        if not isinstance(array, np.ndarray) or array.dtype.hasobject or array.dtype.kind not in "biuf":
            raise CheckpointError(f"{where}: {file} is not a plain numeric .npy array; refusing to load it")
        if not isinstance(live, np.ndarray) or array.dtype != live.dtype or array.shape != live.shape:
            need = f"{live.dtype}{list(live.shape)}" if isinstance(live, np.ndarray) else type(live).__name__
            raise CheckpointError(f"{where}: {file} holds {array.dtype}{list(array.shape)}, this run needs {need}")
        state[name] = array
    return state


def _json_type(value: Any) -> str:
    """The JSON kind of a value (ints and floats are both numbers); the component checks finer types."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
