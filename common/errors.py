"""The errors the command-line tools turn into a single clear line, and the one wrapper that does it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input a person can fix: printed as one line, exit status 2, no traceback."""


class CheckpointError(UserError):
    """A checkpoint that cannot be written or loaded; the message is one line a person can act on."""


def command(tool: str) -> str:
    """How to run one of our tools (`train` or `play`) the way this process was started.

    From a checkout it is `python train.py`; from an installed wheel the
    console scripts `tfdqn-train` / `tfdqn-play`, so the hints we print work as written.
    """
    from pathlib import Path

    if Path(sys.argv[0]).name.startswith("tfdqn-"):
        return f"tfdqn-{tool}"
    return f"python {tool}.py"


def cli_errors(interrupt_hint: Callable[[dict], str] | None = None, *, also: tuple[type[Exception], ...] = ()):
    """Decorate a command's function: bad input -> `error: ...` on stderr and exit 2; Ctrl-C -> exit 130.

    Every command line of ours (train.py, play.py, `python -m classic`,
    `python -m agent.plot`, the benches) goes through this one wrapper, so
    they all answer a mistake the same way.

    Args:
        interrupt_hint: given the command's keyword arguments, the text after
            `interrupted` (e.g. how to resume); None prints `interrupted` alone.
        also: more exception types that are a user's mistake (e.g. `EnvError`).
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            import click

            try:
                return fn(*args, **kwargs)
            except (UserError, *also) as e:
                click.echo(f"error: {e}", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo(f"\ninterrupted{interrupt_hint(kwargs) if interrupt_hint else ''}", err=True)
                sys.exit(130)

        return wrapper

    return decorate
