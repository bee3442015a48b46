"""The error the `python -m classic` command line turns into one clear line."""

from __future__ import annotations

from common.errors import UserError


class ClassicError(UserError, ValueError):
    """Bad input a person can fix (a missing file, a demos file for another env, ...).

    A `ValueError` so library callers (e.g. `train.py --init-from`) can catch
    it with the rest of the value errors; `classic.__main__` prints it as
    `error: ...` and exits with status 2.
    """


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): an error stays one line."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
