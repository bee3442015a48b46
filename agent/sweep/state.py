"""The sweep directory's own files and what a rerun resumes from.

    DIR/sweep.json   what the sweep runs; a rerun must ask for the same (that is how "the same command" resumes); also the
                     command line that started it and its directory, which a refusal names (absent in older ones)
    DIR/tune/        Tune's experiment state (restored by agent.sweep.tuner)
    DIR/<trial>/     a run directory, finished when its eval.json is at its total_steps
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from agent.sweep.plan import SweepSpec, Trial
from common.errors import UserError

EXPERIMENT = "tune"  # Tune's experiment directory under DIR
SPEC_FILE = "sweep.json"


def prepare_out(out: str | Path, spec: SweepSpec, trials: list[Trial], command: str | None = None) -> tuple[Path, bool]:
    """Create DIR and write sweep.json, or accept DIR of the same sweep to resume it.

    `command` (`python -m agent.sweep ...`, as typed) is kept in a new sweep.json with the directory it ran in, so that a
    rerun asking for other settings is told the command that resumes this sweep.

    Returns:
        (DIR as an absolute path, whether it already held this sweep).

    Raises:
        UserError: DIR is a file, unwritable, holds other files, or a sweep of other settings.
    """
    from common.files import atomic_write_json

    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a directory")
    saved = out / SPEC_FILE
    wanted = {"spec": spec.to_json(), "trials": [t.name for t in trials]}
    if saved.is_file():
        try:
            old = json.loads(saved.read_text())
        except (ValueError, RecursionError, OSError):  # ValueError: bad UTF-8 or JSON, an int of thousands of digits
            raise UserError(f"{str(saved)!r} is damaged; start the sweep in another --out") from None
        if not isinstance(old, dict) or not isinstance(old.get("spec"), dict):
            raise UserError(f"{str(saved)!r} is damaged (no spec); start the sweep in another --out")
        if old["spec"] != wanted["spec"]:
            diff = [k for k in wanted["spec"] if old["spec"].get(k) != wanted["spec"][k]] or ["settings"]
            raise UserError(f"{str(out)!r} holds a sweep with other {', '.join(diff)}; resume it with the command that started it"
                            f"{started_by(old)}, or choose another --out")
        return out, True
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{str(out)!r} is not empty and holds no sweep; choose a new or empty --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        started = {"command": command, "cwd": _cwd()} if command else {}
        atomic_write_json(saved, {**wanted, **started, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    except OSError as e:
        raise UserError(f"cannot write the sweep directory {str(out)!r}: {e.strerror or e}") from None
    return out, False


def started_by(saved: dict) -> str:
    """": `python -m agent.sweep ...`" as sweep.json keeps it (prefixed by `cd DIR &&` when it ran elsewhere, its paths
    may be relative); " (its sweep.json)" for a sweep.json written before the command was kept, or with a damaged one."""
    command, cwd = saved.get("command"), saved.get("cwd")
    if not isinstance(command, str) or not command.startswith("python -m agent.sweep ") or any(c in command for c in "`\n\r"):
        return " (its sweep.json)"
    if isinstance(cwd, str) and os.path.isabs(cwd) and not any(c in cwd for c in "`\n\r") and cwd != _cwd():
        command = f"cd {shlex.quote(cwd)} && {command}"
    return f": `{command}`"


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory it was started in is gone
        return None


def final_eval(run_dir: Path, total_steps: int) -> dict | None:
    """eval.json of a run that finished its total_steps, else None."""
    from agent.run.run_dir import RunDirectory

    final = RunDirectory(run_dir).final_eval()
    if final is None:
        return None
    mean = final.get("mean")
    finite = isinstance(mean, (int, float)) and not isinstance(mean, bool) and abs(mean) <= sys.float_info.max  # not nan, inf, 10**400
    return final if final.get("env_step") == total_steps and finite else None
