"""Run folders and project paths."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ROOT", "increment_path", "safe_name", "UniqueStems"]

ROOT = Path(__file__).resolve().parent.parent  # the project root
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')  # separators, control and Windows-reserved characters


def safe_name(name: object, max_len: int = 100) -> str:
    """`name` (a class name from a checkpoint or data YAML: data, not trusted) as one file or folder name that
    stays where it is joined: separators and reserved characters become '_', leading dots (`..`, hidden files)
    and trailing dots and spaces go, and the length is capped. '../../tmp/x' -> '_.._tmp_x'; '' -> '_'."""
    s = _UNSAFE.sub("_", str(name)).lstrip(". ").rstrip(". ")
    return s[:max_len] or "_"


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


class UniqueStems:
    """Output stems for the sources of one run: a source's own stem, or stem_1, stem_2, ... when an earlier
    source of the run had it (a/img.jpg -> img, b/img.jpg -> img_1), so no output overwrites or merges another."""

    def __init__(self):
        self.stems: dict[str, str] = {}
        self.taken: set[str] = set()

    def __call__(self, source: str | Path) -> str:
        key = str(source)
        if key not in self.stems:
            stem, n = Path(key).stem, 0
            while (candidate := f"{stem}_{n}" if n else stem) in self.taken:
                n += 1
            self.stems[key] = candidate
            self.taken.add(candidate)
        return self.stems[key]
