"""A user's own modules from a Python file of their own, without editing this package.

A file that registers its blocks (`@register("MyAttention", channels=inserts_dim)`, see models/registry.py) is
imported by `--modules my_attention.py` on train.py, val.py, detect.py, export.py and compare.py, or named in a
model YAML (`modules: [my_attention.py]`, a path relative to the YAML's folder). A model built with one of its blocks
records the file's absolute path in its YAML dict (`modules`), which every checkpoint stores, so val, detect,
export, compare and torch.hub import it again when they load the checkpoint; a file that is no longer there is a
clear error naming it and the checkpoint's need.

Importing a file runs its code, as `python my_attention.py` would: name only files you trust.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import torch.nn as nn

from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["import_module_files", "module_files_of"]

_IMPORTED: dict[str, Path] = {}  # Python module name given to a user file -> its absolute path


def _module_name(path: Path) -> str:
    return f"user_modules.{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def import_module_files(paths, base: str | Path | None = None, needed_by: str = "--modules",
                        missing_ok: bool = False) -> list[Path]:
    """Import each Python file of `paths` once (relative paths from `base`, default the working folder); the
    absolute paths. A missing file or one that fails to import is a UserError naming it and `needed_by`; with
    `missing_ok` (what it registers is there already, e.g. from --modules at its new place) a missing file is
    skipped with a warning."""
    out = []
    for p in [paths] if isinstance(paths, (str, Path)) else list(paths or []):
        path = Path(p).expanduser()
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        path = path.resolve()
        if path.suffix != ".py":
            raise UserError(f"{needed_by}: {p!r} is not a Python file (.py) that registers modules")
        if not path.is_file() and missing_ok:
            LOGGER.warning(f"WARNING: {needed_by}: module file {path} is gone; its blocks are registered already")
            continue
        if not path.is_file():
            raise UserError(f"{needed_by}: module file {str(path)!r} not found; it registers blocks the model "
                            "uses (give its path with --modules, or put it back)")
        name = _module_name(path)
        if name not in _IMPORTED:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise UserError(f"{needed_by}: importing {path} failed: {type(e).__name__}: {e}") from None
            _IMPORTED[name] = path
            LOGGER.info(f"modules: imported {path}")
        out.append(path)
    return out


def module_files_of(model: nn.Module) -> list[str]:
    """Absolute paths of the imported user files whose classes `model` holds, in first-use order."""
    files = []
    for m in model.modules():
        path = _IMPORTED.get(type(m).__module__)
        if path is not None and str(path) not in files:
            files.append(str(path))
    return files
