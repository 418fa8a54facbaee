"""The plumbing of the scripts' two entry points: the command line (cli_errors) and `run(**kwargs)`
(apply_options)."""

from __future__ import annotations

import sys

from utils.errors import UserError

__all__ = ["cli_errors", "apply_options"]


def cli_errors(main_fn):
    """For a script's command line only: run `main(opt)`; a user error (utils.errors.UserError: a bad value or
    file) or an error of the machine (OSError: a missing file, a full or read-only disk, an unreachable stream)
    prints `ERROR: ...` and exits with 2, with no traceback. Other exceptions are bugs: their traceback is wanted.
    Called from Python, `main()` raises instead."""
    def wrapped(*args, **kwargs):
        try:
            return main_fn(*args, **kwargs)
        except (UserError, OSError) as e:
            print(f"ERROR: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapped


def apply_options(opt, kwargs: dict, who: str):
    """Set `kwargs` on the parsed default options `opt` of a script's `run(**kwargs)`; unknown names raise a
    TypeError that lists the valid ones."""
    for k, v in kwargs.items():
        if not hasattr(opt, k):
            raise TypeError(f"{who}() got an unknown option {k!r}; options: {sorted(vars(opt))}")
        setattr(opt, k, v)
    return opt
