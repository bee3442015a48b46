"""Reading `.npz` archives safely: every array whole, pickled objects refused (a data file must never run code)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from classic.errors import ClassicError, first_line


def load_npz(path: str | os.PathLike, keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """Every key of an `.npz` as plain arrays, refusing pickled objects (a file must not run code)."""
    path = Path(path)
    if not path.is_file():
        raise ClassicError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise ClassicError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":  # neither a zip archive (.npz) nor one array (.npy)
        raise ClassicError(f"{path}: cannot read {what}: not an .npz archive (one written by numpy.savez)")
    try:
        with open(path, "rb") as fh:  # ours to close: np.load leaves its own file open when the zip is unreadable
            loaded = np.load(fh, allow_pickle=False)
            if not hasattr(loaded, "files"):  # a single .npy array (no context manager to enter)
                raise ClassicError(f"{path}: expected an .npz archive ({what}), got a single array")
            with loaded as f:
                missing = [k for k in keys if k not in f.files]
                if missing:
                    has = ", ".join(k if k.isprintable() else repr(k) for k in f.files)  # a damaged member name stays on the line
                    raise ClassicError(f"{path}: not {what}: missing {', '.join(missing)} (has {has or 'nothing'})")
                return {k: f[k] for k in f.files}
    except ClassicError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # numpy's "Object arrays cannot be loaded ..." goes on to advise unpickling: never pass that on
            raise ClassicError(f"{path}: cannot read {what}: it holds Python objects, which are never loaded "
                               "(arrays must be numeric, saved without pickle)") from None
        raise ClassicError(f"{path}: cannot read {what}: {first_line(e)}") from None
    except Exception as e:  # zipfile.BadZipFile, OSError, EOFError: a truncated or foreign file
        raise ClassicError(f"{path}: cannot read {what}: {first_line(e)}") from None
