"""The run directory: everything needed to resume, evaluate or replay a run.

    config.toml      the resolved configuration
    meta.json        format version, env id, observation/action signature, counters
    model.keras      the online Q-network (Keras format, loadable in safe mode)
    best_model.keras the online Q-network at its best evaluation so far
    checkpoints/     step-NNNNNNNNN/ directories, one subdirectory per part (agent/run_state.py:
                     run, agent, loop, rngs, replay, env) and a manifest written last
                     (agent/checkpoints.py); `train.py --resume` continues from the newest complete one
    progress.csv     one row per log interval and evaluation
    tb/              TensorBoard event files
    eval.json        the final evaluation

Every file is written to a temporary name and renamed into place (a
checkpoint: a temporary directory, renamed once complete).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.core import config as config_lib
from agent.core.config import DQNConfig
from common.errors import UserError
from common.files import atomic_path, atomic_write_bytes

FORMAT_VERSION = 1
RUN_FILES = ("config.toml", "meta.json", "model.keras")


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in (*RUN_FILES, "checkpoints", "progress.csv"))


def prepare_run_dir(path: str | Path, force: bool = False) -> tuple[Path, Path | None]:
    """Create the run directory, refusing to overwrite an existing run unless `force`.

    With `force`, the old run is not deleted here: it is renamed aside (a
    hidden sibling) and `settle_replaced` later deletes it once the new run
    holds a complete checkpoint, or puts it back if the new run was refused
    or failed before that. So a refusal never costs the old run.

    Returns:
        The run directory, and where the old run waits (None if there was none).

    Raises:
        UserError: if it holds a run and `force` is false, or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"run directory {str(path)!r} is a file; choose another --run-dir")
    aside = None
    if holds_run(path):
        if not force:
            raise UserError(f"{str(path)!r} already holds a run; choose another --run-dir or pass --force to replace it")
        check_not_in_use(path)  # never move a run away from under the process training it
        aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
        try:
            os.rename(path, aside)
        except OSError as e:
            raise UserError(f"cannot replace the run in {str(path)!r}: {e.strerror}") from None
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        settle_replaced(path, aside)
        raise UserError(f"cannot write the run directory {str(path)!r}: {e.strerror}") from None
    return path, aside


LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory for this process: one process trains or resumes a run at a time.

    An OS lock (`flock`) on `run_dir/.lock`, which also records the holder's
    process id. The kernel drops the lock when the process ends, however it
    ends, so a lock left by a killed process never blocks a resume.

    Raises:
        UserError: another live process holds the run (its pid named).
    """
    fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_or_refuse(fd, run_dir)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _lock_or_refuse(fd: int, run_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        raise UserError(f"{str(run_dir)!r} is in use by another process (pid {holder}); "
                        "wait for it to finish or stop it, then try again") from None


def check_not_in_use(run_dir: Path) -> None:
    """Refuse at once if a live process holds `run_dir` (see `locked`); nothing is written."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return  # nobody ever held it (a holder creates the file first)
    fd = os.open(path, os.O_RDWR)  # Linux NFS clients emulate flock with POSIX locks: an exclusive one needs write access
    try:
        _lock_or_refuse(fd, run_dir)
    finally:
        os.close(fd)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run holds at least one complete (sealed) checkpoint."""
    return any((run_dir / "checkpoints").glob("step-*/manifest.json"))


def settle_replaced(path: Path, aside: Path | None) -> None:
    """After a `--force` start: drop the old run if the new one has a complete checkpoint, else restore it."""
    if aside is None or not aside.exists():
        return
    import shutil

    if path.is_dir() and has_checkpoint(path):
        shutil.rmtree(aside)
        return
    shutil.rmtree(path, ignore_errors=True)
    os.rename(aside, path)


def save_config(run_dir: Path, cfg: DQNConfig) -> None:
    atomic_write_text(run_dir / "config.toml", config_lib.to_toml(cfg))


def load_config(run_dir: str | Path) -> DQNConfig:
    """Read and validate a run's `config.toml`.

    Raises:
        UserError: if the directory or file is missing or invalid.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {str(run_dir)!r} does not exist")
    path = run_dir / "config.toml"
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} holds no run (config.toml is missing); pass a directory written by train.py")
    return config_lib.from_dict(config_lib.load_toml(path), source=str(path))


MODEL_FILES = {"final": "model.keras", "best": "best_model.keras"}


def save_model(run_dir: Path, model, which: str = "final") -> None:
    """Save the Keras model atomically (Keras wants a `.keras` suffix, so the temp name keeps it).

    `which="best"` writes `best_model.keras`, the network of the best evaluation so far.
    """
    with atomic_path(run_dir / MODEL_FILES[which]) as tmp:
        model.save(tmp)


def load_model(run_dir: str | Path, which: str = "final"):
    """Load `model.keras` (or `best_model.keras` with `which="best"`) in Keras safe mode (no arbitrary code).

    Raises:
        UserError: if the model is missing or cannot be read.
    """
    import keras

    import agent.dqn.networks  # noqa: F401  (registers DuelingHead)

    name = MODEL_FILES[which]
    path = Path(run_dir) / name
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} holds no model ({name} is missing); was training interrupted before the first save?")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a damaged zip/h5
        raise UserError(f"{str(path)!r} is not a readable Keras model ({type(e).__name__}); re-train or restore it") from None


def save_meta(run_dir: Path, meta: dict) -> None:
    atomic_write_json(run_dir / "meta.json", {"format_version": FORMAT_VERSION, **meta})


def load_meta(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "meta.json"
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} holds no run (meta.json is missing)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(path)!r} is not valid JSON; the run directory is damaged") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{str(run_dir)!r} was written by a newer version (format {meta['format_version']}); update this tool")
    return meta
