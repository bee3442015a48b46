"""The run directory: everything needed to resume, evaluate or replay a run, owned by one object.

    config.toml      the resolved configuration
    meta.json        format version, env id, observation/action signature, counters
    model.keras      the online Q-network (Keras format, loadable in safe mode)
    best_model.keras the online Q-network at its best evaluation so far
    checkpoints/     step-NNNNNNNNN/ directories, one subdirectory per part (agent/run/run_state.py:
                     run, agent, loop, rngs, replay, env) and a manifest written last
                     (agent/run/checkpoints.py); `train.py --resume` continues from the newest complete one
    progress.csv     one row per log interval and evaluation
    tb/              TensorBoard event files
    eval.json        the final evaluation
    videos/          step-NNNNNNNNN.mp4 recorded during training (`record_every`)
    export/          what `python -m agent.export` writes by default
    .lock            the OS lock of the process that trains the run

`RunDirectory` is the only code that names these files: the loop, the API,
train.py, play.py, exports, plots and sweeps ask it. Every file is written to
a temporary name and renamed into place (a checkpoint: a temporary
directory, renamed once complete).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from agent.core import config as config_lib
from agent.core.config import DQNConfig
from agent.run.checkpoints import CheckpointStore
from common.errors import UserError, command
from common.files import atomic_path, atomic_write_json, atomic_write_text

FORMAT_VERSION = 1


class RunDirectory:
    """A run's directory: its layout, its lock, creating it (and replacing one with `--force`), and its files.

    Args:
        path: the directory (it need not exist yet; `create` makes it).
    """

    CONFIG = "config.toml"
    META = "meta.json"
    MODELS = {"final": "model.keras", "best": "best_model.keras"}
    CHECKPOINTS = "checkpoints"
    PROGRESS = "progress.csv"
    TENSORBOARD = "tb"
    EVAL = "eval.json"
    VIDEOS = "videos"
    EXPORT = "export"
    LOCK = ".lock"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.replaced: Path | None = None  # where the run that `create(force=True)` moved aside waits

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # ----- paths the logs and side jobs write to

    @property
    def progress_csv(self) -> Path:
        return self.path / self.PROGRESS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / self.TENSORBOARD

    def video_path(self, env_step: int) -> Path:
        """Where the video recorded at `env_step` during training goes."""
        return self.path / self.VIDEOS / f"step-{env_step:09d}.mp4"

    def export_path(self, which: str, suffix: str) -> Path:
        """Where an export of the `which` ("final" or "best") network goes by default (`suffix` "" for a SavedModel)."""
        if not suffix:
            return self.path / self.EXPORT / ("best_saved_model" if which == "best" else "saved_model")
        return self.path / self.EXPORT / f"{Path(self.MODELS[which]).stem}{suffix}"

    def model_path(self, which: str = "final") -> Path:
        return self.path / self.MODELS[which]

    def resume_command(self) -> str:
        """The command that continues this run, as this process was started (`python train.py` or `tfdqn-train`)."""
        return f"{command('train')} --resume {self.path}"

    def restart_command(self) -> str:
        """The command that trains this run again from its first step: its own saved config, in its own directory."""
        return f"{command('train')} --config {self.path / self.CONFIG} --run-dir {self.path} --force"

    # ----- creating, replacing and locking

    def holds_run(self) -> bool:
        return self.path.is_dir() and any((self.path / name).exists()
                                          for name in (self.CONFIG, self.META, self.MODELS["final"], self.CHECKPOINTS, self.PROGRESS))

    @classmethod
    def create(cls, path: str | Path, force: bool = False) -> RunDirectory:
        """Create the run directory, refusing to overwrite an existing run unless `force`.

        With `force`, the old run is not deleted here: it is renamed aside (a
        hidden sibling, `replaced`) and `settle_replaced` later deletes it once the new run
        holds a complete checkpoint, or puts it back if the new run was refused
        or failed before that. So a refusal never costs the old run.

        Raises:
            UserError: if it holds a run and `force` is false, or cannot be written.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise UserError(f"run directory {str(run.path)!r} is a file; choose another --run-dir")
        if run.holds_run():
            if not force:
                raise UserError(f"{str(run.path)!r} already holds a run; choose another --run-dir or pass --force to replace it")
            run.check_not_in_use()  # never move a run away from under the process training it
            aside = run.path.with_name(f".{run.path.name}.replaced-{os.getpid()}")
            try:
                os.rename(run.path, aside)
            except OSError as e:
                raise UserError(f"cannot replace the run in {str(run.path)!r}: {e.strerror}") from None
            run.replaced = aside
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            run.settle_replaced()
            raise UserError(f"cannot write the run directory {str(run.path)!r}: {e.strerror}") from None
        return run

    def settle_replaced(self) -> None:
        """After a `--force` start: drop the old run if the new one has a complete checkpoint, else restore it."""
        aside, self.replaced = self.replaced, None
        if aside is None or not aside.exists():
            return
        if self.path.is_dir() and self.has_checkpoint():
            shutil.rmtree(aside)
            return
        shutil.rmtree(self.path, ignore_errors=True)
        os.rename(aside, self.path)

    def holds_only_its_lock(self) -> bool:
        """Whether nothing but the lock file was written (a run refused before it began)."""
        return self.path.is_dir() and all(p.name == self.LOCK for p in self.path.iterdir())

    def remove_if_unused(self) -> None:
        """Remove a directory this process created but never wrote a run into."""
        if self.holds_only_its_lock():
            shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory for this process: one process trains or resumes a run at a time.

        An OS lock (`flock`) on `.lock`, which also records the holder's
        process id. The kernel drops the lock when the process ends, however it
        ends, so a lock left by a killed process never blocks a resume.

        Raises:
            UserError: another live process holds the run (its pid named).
        """
        fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock_or_refuse(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _lock_or_refuse(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(f"{str(self.path)!r} is in use by another process (pid {holder}); "
                            "wait for it to finish or stop it, then try again") from None

    def check_not_in_use(self) -> None:
        """Refuse at once if a live process holds the run (see `locked`); nothing is written."""
        path = self.path / self.LOCK
        if not path.is_file():
            return  # nobody ever held it (a holder creates the file first)
        fd = os.open(path, os.O_RDWR)  # Linux NFS clients emulate flock with POSIX locks: an exclusive one needs write access
        try:
            self._lock_or_refuse(fd)
        finally:
            os.close(fd)

    def remove_stale_temporaries(self) -> None:
        """Delete the temporaries of `atomic_path` writes that a killed process left (`.NAME.XXXX.tmp.SUFFIX`), in the run
        directory and its TensorBoard folder; call it only while holding the lock."""
        for folder in (self.path, self.tensorboard_dir):
            for path in folder.glob(".*.tmp*"):
                if path.is_file():
                    path.unlink(missing_ok=True)

    def copy_to(self, target: Path) -> None:
        """Copy the run's files (not its lock, nor half-written temporaries) into the existing directory `target`."""
        shutil.copytree(self.path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(self.LOCK, ".tmp-*"))

    # ----- checkpoints

    def checkpoint_store(self, keep: int = 3) -> CheckpointStore:
        """The store of this run's checkpoints, keeping the newest `keep` complete ones."""
        return CheckpointStore(self.path / self.CHECKPOINTS, keep=keep, resume_hint=self.resume_command(),
                               restart_hint=self.restart_command())

    def has_checkpoint(self) -> bool:
        """Whether the run holds at least one complete (sealed) checkpoint."""
        return any((self.path / self.CHECKPOINTS).glob("step-*/manifest.json"))

    def newest_checkpoint_dir(self) -> Path | None:
        """The newest checkpoint's directory (complete or not), for tools that read a part of it."""
        found = sorted((self.path / self.CHECKPOINTS).glob("step-*"))
        return found[-1] if found else None

    # ----- the run's files

    def save_config(self, cfg: DQNConfig) -> None:
        atomic_write_text(self.path / self.CONFIG, config_lib.to_toml(cfg))

    def load_config(self) -> DQNConfig:
        """Read and validate the run's `config.toml`.

        Raises:
            UserError: if the directory or file is missing or invalid.
        """
        if not self.path.is_dir():
            raise UserError(f"run directory {str(self.path)!r} does not exist")
        path = self.path / self.CONFIG
        if not path.is_file():
            raise UserError(f"{str(self.path)!r} holds no run ({self.CONFIG} is missing); pass a directory written by train.py")
        return config_lib.from_dict(config_lib.load_toml(path), source=str(path))

    def env_id(self) -> str | None:
        """The env id of the run's config, None without a readable one."""
        try:
            return self.load_config().env_id
        except UserError:
            return None

    def has_model(self, which: str = "final") -> bool:
        return self.model_path(which).is_file()

    def save_model(self, model, which: str = "final") -> None:
        """Save the Keras model atomically (Keras wants a `.keras` suffix, so the temp name keeps it).

        `which="best"` writes `best_model.keras`, the network of the best evaluation so far.
        """
        with atomic_path(self.model_path(which)) as tmp:
            model.save(tmp)

    def load_model(self, which: str = "final"):
        """Load `model.keras` (or `best_model.keras` with `which="best"`) in Keras safe mode (no arbitrary code).

        Raises:
            UserError: if the model is missing or cannot be read.
        """
        import keras

        import agent.dqn.networks  # noqa: F401  (registers DuelingHead)

        path = self.model_path(which)
        if not path.is_file():
            raise UserError(f"{str(self.path)!r} holds no model ({path.name} is missing); was training interrupted before the first save?")
        try:
            return keras.saving.load_model(path, safe_mode=True, compile=False)
        except Exception as e:  # Keras raises many types for a damaged zip/h5
            raise UserError(f"{str(path)!r} is not a readable Keras model ({type(e).__name__}); re-train or restore it") from None

    def save_meta(self, meta: dict) -> None:
        atomic_write_json(self.path / self.META, {"format_version": FORMAT_VERSION, **meta})

    def load_meta(self) -> dict:
        """Read `meta.json`.

        Raises:
            UserError: missing, not JSON, or written by a newer version.
        """
        path = self.path / self.META
        if not path.is_file():
            raise UserError(f"{str(self.path)!r} holds no run ({self.META} is missing)")
        try:
            meta = json.loads(path.read_text())
        except (ValueError, RecursionError):  # bad UTF-8 or JSON, an int of thousands of digits, nesting too deep
            raise UserError(f"{str(path)!r} is not valid JSON; the run directory is damaged") from None
        if not isinstance(meta, dict):
            raise UserError(f"{str(path)!r} is not a JSON object; the run directory is damaged")
        version = meta.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise UserError(f"{str(path)!r} has a format_version that is not an integer; the run directory is damaged")
        if version > FORMAT_VERSION:
            raise UserError(f"{str(path)!r} was written by a newer version (format {version}); update this tool")
        return meta

    def meta_or_none(self) -> dict | None:
        """`meta.json` if it is there and readable, else None (a run killed before its first save)."""
        try:
            return self.load_meta()
        except UserError:
            return None

    def save_final_eval(self, final: dict) -> None:
        atomic_write_json(self.path / self.EVAL, final)

    def final_eval(self) -> dict | None:
        """`eval.json` (the final evaluation) if it is there and readable, else None."""
        try:
            final = json.loads((self.path / self.EVAL).read_text())
        except (OSError, ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            return None
        return final if isinstance(final, dict) else None

    def final_eval_at(self, env_step: int) -> dict | None:
        """`eval.json` if the run's final evaluation was written at `env_step` (an older one, or none: None)."""
        final = self.final_eval()
        return final if final is not None and final.get("env_step") == env_step else None
