"""Run folders and project paths."""

from __future__ import annotations

import itertools
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
    """runs/train/exp -> runs/train/exp2, exp3, ... unless `exist_ok`; never reuses an existing folder otherwise.

    A run folder (a path without a file suffix, or an existing folder) is claimed by creating it: the first free
    name is made with mkdir(exist_ok=False), and on a clash with another process the next number is tried, so
    processes asking at once never share a folder. It exists on return whatever `mkdir` says. A file path (with a
    suffix) is only numbered past existing files; `mkdir` then makes the path itself as a folder, as YOLOv5's does.
    """
    path = Path(path)
    if exist_ok:
        if mkdir:
            path.mkdir(parents=True, exist_ok=True)
        return path
    is_dir = path.is_dir() or not path.suffix
    stem = re.sub(r"\d+$", "", path.name) if is_dir else path.stem
    suffix = "" if is_dir else path.suffix
    candidates = itertools.chain([path], (path.with_name(f"{stem}{n}{suffix}") for n in itertools.count(2)))
    for candidate in candidates:
        if not is_dir:
            if not candidate.exists():
                if mkdir:
                    candidate.mkdir(parents=True, exist_ok=True)
                return candidate
            continue
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            candidate.mkdir(exist_ok=False)  # atomic: exactly one process creates it
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")  # itertools.count never ends


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
