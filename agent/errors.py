"""The one error type the command-line tools turn into a single clear line."""


class UserError(Exception):
    """Bad input a person can fix: printed as one line, exit status 2, no traceback."""


def command(tool: str) -> str:
    """How to run one of our tools (`train` or `play`) the way this process was started.

    From a checkout it is `python train.py`; from an installed wheel the
    console scripts `tfdqn-train` / `tfdqn-play`, so the hints we print work as written.
    """
    import sys
    from pathlib import Path

    if Path(sys.argv[0]).name.startswith("tfdqn-"):
        return f"tfdqn-{tool}"
    return f"python {tool}.py"
