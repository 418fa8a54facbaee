"""Run folders and project paths."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ROOT", "increment_path"]

ROOT = Path(__file__).resolve().parent.parent  # the project root


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """runs/train/exp -> runs/train/exp2, exp3, ... unless `exist_ok`; never reuses an existing folder otherwise."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem = re.sub(r"\d+$", "", path.name) if path.is_dir() else path.stem
        suffix = "" if path.is_dir() else path.suffix
        n = 2
        while (candidate := path.with_name(f"{stem}{n}{suffix}")).exists():
            n += 1
        path = candidate
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path
