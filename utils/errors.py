"""The error a user can fix: a bad option, path, YAML value or file. Scripts' entry points print it as one line
(`ERROR: ...`, exit status 2, utils.cli.cli_errors); any other exception is a bug and keeps its traceback.

    raise UserError(f"--epochs {v}: must be an integer >= 1")

It is a ValueError, so `except ValueError` and code written against earlier versions still catch it.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """What the user gave cannot be used; the message names the value and what would be valid."""
