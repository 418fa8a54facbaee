"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import yaml

from utils.errors import UserError

__all__ = ["atomic_write", "atomic_output", "read_yaml", "yaml_save", "size_mb"]


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


@contextlib.contextmanager
def atomic_output(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """A temporary name beside `path` to write a file (or, with `folder`, a folder) under; when the block ends
    without an exception it is moved onto `path`, replacing what was there, else removed. A writer killed midway
    leaves the previous `path` as it was (a folder is swapped in with two renames, so only a kill between those
    two leaves it under its temporary name, `.NAME.old.*`, beside the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    target = tmp if folder else tmp / path.name  # a file keeps its own name (suffix) inside the temporary folder
    try:
        yield target
        if folder:
            os.chmod(tmp, 0o755)  # mkdtemp creates 0700
            old = None
            if path.exists():
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
                os.replace(path, old / path.name)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_yaml(path: str | Path):
    """The plain data in a YAML file (yaml.safe_load: tags such as !!python/object are refused, never run); a file
    that is not plain YAML is a one-line UserError naming it and where the parser stopped."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not plain YAML ({' '.join(str(e).split())[:300]})") from None


def yaml_save(path: str | Path, d: dict) -> None:
    """`d` as YAML in key order, Path values as strings (hyp.yaml, opt.yaml of a run)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({k: str(v) if isinstance(v, Path) else v for k, v in d.items()}, f, sort_keys=False)


def size_mb(path: str | Path) -> float:
    """The size of a file, or of every file under a folder (an exported model), in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20
