"""Agents trained with train.py that ship inside the package: `play.py --pretrained NAME`.

Each is a tiny run directory (config.toml, meta.json, model.keras: the final
network of a real run, untouched) plus a README.md saying how it was trained
and how well it plays, so the viewer plays it like any RUN_DIR. They are
package data, so an installed wheel has them too.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    """The names of the shipped agents (the folders here that hold a model.keras)."""
    from agent.run.run_dir import RunDirectory

    return sorted(p.name for p in HERE.iterdir() if RunDirectory(p).has_model())


def pretrained_dir(name: str) -> Path:
    """The run directory of the shipped agent `name`.

    Raises:
        UserError: for a name that is not shipped (the line lists those that are).
    """
    names = available()
    if name not in names:
        raise UserError(f"no pretrained agent {name!r}; available: {', '.join(names) or 'none'}")
    return HERE / name
