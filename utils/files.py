"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import yaml

__all__ = ["atomic_write", "yaml_save"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], fsync: bool = False) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then move it onto `path` in one step (readable as
    any other output, mode 0644). A failure leaves `path` as it was and no temporary file behind; OSError from
    creating the temporary file (a read-only or full folder) reaches the caller."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def yaml_save(path: str | Path, d: dict) -> None:
    """`d` as YAML in key order, Path values as strings (hyp.yaml, opt.yaml of a run)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in d.items()}, f, sort_keys=False)
