"""The error a user can fix: a bad option, path, YAML value or file. Scripts' entry points print it as one line
(`ERROR: ...`, exit status 2, utils.cli.cli_errors); any other exception is a bug and keeps its traceback.

    raise UserError(f"--epochs {v}: must be an integer >= 1")

It is a ValueError, so `except ValueError` and code written against earlier versions still catch it.
"""

from __future__ import annotations

__all__ = ["UserError", "UnknownName"]


class UserError(ValueError):
    """What the user gave cannot be used; the message names the value and what would be valid."""


class UnknownName(UserError, KeyError):
    """A name that is not in a registry (a model YAML's module): a UserError (one line on the command line) that
    `except KeyError` also catches, as a lookup error."""

    def __str__(self) -> str:  # KeyError's would quote the message
        return str(self.args[0]) if self.args else ""
