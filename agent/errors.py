"""The one error type the command-line tools turn into a single clear line."""


class UserError(Exception):
    """Bad input a person can fix: printed as one line, exit status 2, no traceback."""
