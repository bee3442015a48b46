"""The sweep directory's own files and what a rerun resumes from.

    DIR/sweep.json   what the sweep runs; a rerun must ask for the same (that is how "the same command" resumes)
    DIR/tune/        Tune's experiment state (restored by agent.sweep.tuner)
    DIR/<trial>/     a run directory, finished when its eval.json is at its total_steps
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from agent.sweep.plan import SweepSpec, Trial
from common.errors import UserError

EXPERIMENT = "tune"  # Tune's experiment directory under DIR
SPEC_FILE = "sweep.json"


def prepare_out(out: str | Path, spec: SweepSpec, trials: list[Trial]) -> tuple[Path, bool]:
    """Create DIR and write sweep.json, or accept DIR of the same sweep to resume it.

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
            raise UserError(f"{str(out)!r} holds a sweep with other {', '.join(diff)}; resume it with the command that started it "
                            "(its sweep.json), or choose another --out")
        return out, True
    if out.is_dir() and any(out.iterdir()):
        raise UserError(f"{str(out)!r} is not empty and holds no sweep; choose a new or empty --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(saved, {**wanted, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    except OSError as e:
        raise UserError(f"cannot write the sweep directory {str(out)!r}: {e.strerror or e}") from None
    return out, False


def final_eval(run_dir: Path, total_steps: int) -> dict | None:
    """eval.json of a run that finished its total_steps, else None."""
    from agent.run.run_dir import RunDirectory

    final = RunDirectory(run_dir).final_eval()
    if final is None:
        return None
    mean = final.get("mean")
    finite = isinstance(mean, (int, float)) and not isinstance(mean, bool) and abs(mean) <= sys.float_info.max  # not nan, inf, 10**400
    return final if final.get("env_step") == total_steps and finite else None
