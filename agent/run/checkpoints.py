"""The checkpoint store: writes, seals and finds complete checkpoints, without knowing what is inside.

Layout of `RUN_DIR/checkpoints/`:

    step-000001000/                 one complete checkpoint (the env step is in the name)
        <part>/...                  one directory per part, written by the part itself
                                    (agent/run/run_state.py lists a training run's parts)
        manifest.json               written last: format version, step, parts, library
                                    versions, size and sha256 of every file
    .tmp-step-000002000-XXXX/       a checkpoint being written (or left by a killed run)

A part is any object with `save_state(directory)` and `load_state(directory,
where)`; each owns its file format. The store gives each part an empty
directory, then fsyncs every file, writes the manifest last and renames the
directory to `step-NNNNNNNNN`: a directory of that name exists only once
complete. A run killed at any moment leaves at worst a `.tmp-*` directory,
which a resume removes. Pruning renames a checkpoint to `.tmp-*` before
deleting it, so a half-deleted checkpoint never looks complete either.

Loading trusts nothing: every file is checked against the manifest (size, then
sha256) before any part reads it, and a format other than this one is refused
with one line. The parts then check their own contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from common.errors import CheckpointError
from agent.core.state_files import fsync_path, write_bytes

__all__ = ["CheckpointError", "CheckpointStore", "Part", "list_checkpoints", "latest_checkpoint", "verify"]

CHECKPOINT_FORMAT = 2  # 1: before the parts (one state.json for everything); refused with a line saying so
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d{9})$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
# Testing hook: seconds to sleep between the parts of a checkpoint, so a test can kill a run mid-write.
_DELAY_ENV = "DQN_CHECKPOINT_WRITE_DELAY_S"
LIBRARIES = ("tensorflow", "keras", "gymnasium", "ale-py", "numpy")  # what decides whether a resume continues bit for bit


class Part(Protocol):
    """Something a checkpoint holds; it writes and reads its own directory."""

    def save_state(self, directory: Path) -> None: ...

    def load_state(self, directory: Path, where: str) -> None: ...


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def _delay() -> None:
    seconds = os.environ.get(_DELAY_ENV)
    if seconds:
        time.sleep(float(seconds))


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


def verify(path: Path, restart_hint: str = "") -> dict:
    """Check a checkpoint directory against its manifest (names, sizes, sha256); return the manifest.

    Raises:
        CheckpointError: naming the first missing, truncated or altered file, or another format.
    """

    def damaged(detail: str) -> CheckpointError:
        earlier = [p.name for _, p in list_checkpoints(path.parent) if p != path]
        restart = f"start again with: {restart_hint}" if restart_hint else "start over with --force"
        hint = f"delete {path} to resume from {earlier[-1]}" if earlier else f"no earlier checkpoint exists; {restart}"
        return CheckpointError(f"checkpoint {path.name} is damaged: {detail}; {hint}")

    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError, RecursionError):  # ValueError: bad UTF-8 or JSON, an int of thousands of digits; nesting too deep
        raise damaged(f"{MANIFEST} is not readable JSON") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format_version"), int) or not isinstance(manifest.get("files"), dict):
        raise damaged(f"{MANIFEST} lacks format_version or files")
    if manifest["format_version"] > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path.name} was written by a newer version (checkpoint format {manifest['format_version']}, "
            f"this one reads {CHECKPOINT_FORMAT}); update this tool"
        )
    if manifest["format_version"] < CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path.name} was written by an older version (checkpoint format {manifest['format_version']}, "
            f"this one reads {CHECKPOINT_FORMAT}) and cannot continue exactly; finish that run with the version that wrote it, "
            f"or start a new one (its model.keras still plays)"
        )
    files = manifest["files"]
    if not isinstance(manifest.get("parts"), list) or not all(isinstance(p, str) and "/" not in p for p in manifest["parts"]):
        raise damaged(f"{MANIFEST} lacks the list of parts")
    for name, entry in files.items():
        if not isinstance(name, str) or not _SAFE_NAME.match(name) or not isinstance(entry, dict):
            raise damaged(f"the manifest lists a bad file name {name!r}")
        if name.split("/")[0] not in manifest["parts"]:
            raise damaged(f"the manifest lists {name!r} outside its parts")
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


class CheckpointStore:
    """One run's checkpoints under `root`: each written whole or not at all, verified before use.

    Args:
        root: the `checkpoints/` directory (created on the first save).
        keep: complete checkpoints kept (at least 1; the newest is never deleted).
        resume_hint: the command that continues the run, named when a write fails after a complete checkpoint.
        restart_hint: the command that starts the run again, named when its first checkpoint cannot be written
            (with none complete there is nothing to resume from).
    """

    def __init__(self, root: str | Path, *, keep: int = 3, resume_hint: str = "", restart_hint: str = ""):
        self.root = Path(root)
        self.keep = max(int(keep), 1)
        self.resume_hint = resume_hint
        self.restart_hint = restart_hint
        self.last_step: int | None = None  # env step of the newest checkpoint this process wrote or read

    @property
    def last_name(self) -> str | None:
        return None if self.last_step is None else checkpoint_name(self.last_step)

    def save(self, step: int, parts: Mapping[str, Part]) -> Path:
        """Write `step-NNNNNNNNN/` (each part into its own directory), seal it, then prune old ones.

        Raises:
            CheckpointError: when a file cannot be written (e.g. a full disk); earlier checkpoints are kept.
        """
        name = checkpoint_name(step)
        final = self.root / name
        tmp = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if final.exists():  # written for this very step already (same state)
                self.last_step = step
                return final
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{name}-"))
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is as readable as the rest of the run
            for part_name, part in parts.items():
                (tmp / part_name).mkdir()
                part.save_state(tmp / part_name)
                _delay()
            files = {}
            for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
                fsync_path(file)
                files[file.relative_to(tmp).as_posix()] = {"size": file.stat().st_size, "sha256": sha256_file(file)}
            for directory in (p for p in tmp.rglob("*") if p.is_dir()):
                fsync_path(directory)
            manifest = {"format_version": CHECKPOINT_FORMAT, "step": step, "parts": list(parts),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions(), "files": files}
            write_bytes(tmp / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
            fsync_path(tmp)
            os.rename(tmp, final)  # the checkpoint becomes visible, whole
            fsync_path(self.root)
            tmp = None
        except OSError as e:
            raise self._write_failed(name, getattr(e, "strerror", None) or str(e)) from None
        except Exception as e:  # TensorFlow's own I/O errors (tf.errors.OpError) come through a part
            if type(e).__module__.startswith("tensorflow"):
                raise self._write_failed(name, getattr(e, "message", None) or str(e)) from None
            raise
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        self.last_step = step
        try:
            prune(self.root, self.keep)
        except OSError:
            pass  # an old checkpoint that cannot be deleted now is deleted next time
        return final

    def _write_failed(self, name: str, reason: str) -> CheckpointError:
        if self.last_name:
            previous = f"the previous checkpoint ({self.last_name}) is kept"
            hint = f"; free some space and continue with: {self.resume_hint}" if self.resume_hint else ""
        else:  # nothing complete to resume from: the advice must be a command that works in this state
            previous = "no earlier checkpoint exists"
            hint = f"; free some space and start again with: {self.restart_hint}" if self.restart_hint else ""
        return CheckpointError(f"cannot write checkpoint {name} in {self.root}: {reason}; {previous}{hint}")

    def latest(self) -> Path:
        """The newest complete checkpoint.

        Raises:
            CheckpointError: when there is none (or only the unresumable ckpt-N files of early versions).
        """
        path = latest_checkpoint(self.root)
        if path is None:
            run_dir = self.root.parent
            if list(self.root.glob("ckpt-*.index")):
                raise CheckpointError(f"{run_dir} holds checkpoints of an older version (ckpt-N, without replay, RNG or env state), "
                                      "which cannot resume exactly; start a new run")
            restart = f"start again with: {self.restart_hint}" if self.restart_hint else "start over with --force"
            raise CheckpointError(f"{run_dir} has no complete checkpoint to resume from; {restart}")
        return path

    def load(self, path: Path, parts: Mapping[str, Part], optional: Iterable[str] = ()) -> list[str]:
        """Verify `path`, then let each part read its directory, in the order given.

        Nothing on disk is changed. A part listed in `optional` may be absent
        from the checkpoint (e.g. a replay memory left out); every other part
        must be there, and the checkpoint may hold no part that is not asked for.

        Returns:
            The names of the parts loaded.

        Raises:
            CheckpointError: one line naming the checkpoint and what is wrong with it.
        """
        where = f"checkpoint {path.name}"
        manifest = verify(path, self.restart_hint)
        warn_other_versions(manifest.get("versions"), where)
        saved = manifest["parts"]
        missing = [name for name in parts if name not in saved and name not in set(optional)]
        unknown = [name for name in saved if name not in parts]
        if missing or unknown:
            raise CheckpointError(f"{where} holds the parts {saved}, this run needs {list(parts)}")
        loaded = []
        for name, part in parts.items():
            if name in saved:
                part.load_state(path / name, where)
                loaded.append(name)
        if manifest.get("step") != int(_STEP_DIR.match(path.name).group(1)):
            raise CheckpointError(f"{where}: the step counters disagree")
        self.last_step = manifest["step"]
        return loaded
