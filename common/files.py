"""Writing files so that a crash or a full disk never leaves half of one.

Every file the app writes whole (models, demos, plots, run files, trimmed
TensorBoard logs) goes through `atomic_path`: the writer fills a temporary
file beside the target, which replaces the target only once it is complete
and flushed. Readers see the old file or the new one, never a torn one.
Checkpoints are directories and seal themselves (agent/run/checkpoints.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any error it is removed.

    The temporary name keeps the target's suffix (`.x.tmp.keras`), since Keras
    and matplotlib pick the format from it.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it private; the file gets the mode a plain open() would give
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` so that readers see the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` so that readers see the old file or the whole new one."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
