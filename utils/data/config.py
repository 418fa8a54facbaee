"""Dataset YAML files in YOLOv5's format, read into a typed `DataConfig`.

    path: ../datasets/coco128   # dataset root; relative to this YAML's folder (see below)
    train: images/train2017     # a folder of images, a .txt list of image paths, or a list of either
    val: images/val2017
    test:                       # optional
    nc: 80                      # optional; must agree with names
    names: {0: person, 1: bicycle, ...}   # or a list [person, bicycle, ...]

A relative `path` is looked up beside the YAML file first; YOLOv5's own files write it relative to the
YOLOv5 folder, so the project root and the working directory are tried next. Without `path`, the splits are
relative to the YAML's folder. Other keys (`download`, ...) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.data.images import IMG_FORMATS
from utils.errors import UserError
from utils.files import read_yaml
from utils.log import LOGGER
from utils.paths import ROOT

__all__ = ["DataConfig", "load_data_config", "resolve_data_yaml", "DATA_DIR", "MAX_CLASSES"]

MAX_CLASSES = 100_000  # LVIS has 1,203; more is a typo, and a detection head that wide would not fit in memory

DATA_DIR = ROOT / "data"
_SPLIT_HELP = "a split is a folder of images, a .txt file listing image paths, or a list of those"


@dataclass
class DataConfig:
    """A dataset as a data YAML describes it; split entries are absolute paths that exist (test may not)."""

    path: Path
    train: list[Path]
    val: list[Path]
    test: list[Path] | None
    names: list[str]
    nc: int
    yaml_file: Path | None

    def split(self, task: str) -> list[Path]:
        """The entries of split 'train', 'val' or 'test'."""
        if task not in ("train", "val", "test"):
            raise UserError(f"unknown split {task!r}; valid: 'train', 'val', 'test'")
        entries = getattr(self, task)
        if not entries:
            raise UserError(f"{self.yaml_file}: no {task!r} split defined")
        return entries


def resolve_data_yaml(data: str | Path) -> Path:
    """The data YAML file for a path or a bare name such as 'coco128.yaml' (looked up in data/)."""
    path = Path(data)
    candidates = [path]
    if path.suffix not in (".yaml", ".yml"):
        candidates.append(path.with_suffix(".yaml"))
    if not path.is_absolute():
        candidates += [DATA_DIR / c.name for c in list(candidates)]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    bundled = ", ".join(p.name for p in sorted(DATA_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"data file {str(data)!r} not found (also looked in {DATA_DIR}); bundled: {bundled}")


def _read_yaml(file: Path) -> dict:
    d = read_yaml(file)
    if not isinstance(d, dict):
        raise UserError(f"{file}: a data YAML must be a mapping with keys path, train, val, names; "
                         f"got {type(d).__name__}")
    return d


def _parse_names(d: dict, where: str) -> list[str]:
    names, nc = d.get("names"), d.get("nc")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or not 1 <= nc <= MAX_CLASSES):
        raise UserError(f"{where}: 'nc' must be an integer 1..{MAX_CLASSES}, got {nc!r}")
    if names is None:
        if nc is None:
            raise UserError(f"{where}: 'names' is missing; give class names as a list or a dict {{id: name}}")
        return [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        ints = all(isinstance(k, int) and not isinstance(k, bool) for k in names)
        if not ints or sorted(names) != list(range(len(names))):
            raise UserError(f"{where}: 'names' dict keys must be the integers 0..{len(names) - 1}, "
                             f"got {list(names)}")
        names = [names[i] for i in range(len(names))]
    elif not isinstance(names, (list, tuple)):
        raise UserError(f"{where}: 'names' must be a list or a dict {{id: name}}, got {type(names).__name__}")
    if not names:
        raise UserError(f"{where}: 'names' is empty")
    names = [str(n) for n in names]
    if nc is not None and nc != len(names):
        raise UserError(f"{where}: nc={nc} disagrees with the {len(names)} names; drop 'nc' or make them agree")
    return names


def _dataset_root(d: dict, yaml_dir: Path, where: str) -> Path:
    root = d.get("path")
    if root in (None, ""):
        return yaml_dir
    if not isinstance(root, (str, Path)):
        raise UserError(f"{where}: 'path' must be a folder path, got {root!r}")
    root = Path(root).expanduser()
    if root.is_absolute():
        return root
    tried = [yaml_dir / root, Path.cwd() / root, ROOT / root]
    for t in tried:
        if t.is_dir():
            return t.resolve()
    return tried[0].resolve()  # splits below will report what is missing


def _resolve_split(d: dict, key: str, root: Path, where: str, required: bool) -> list[Path] | None:
    value = d.get(key)
    if value in (None, "", []):
        if required:
            raise UserError(f"{where}: '{key}' split is missing; {_SPLIT_HELP}")
        return None
    entries = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for e in entries:
        if not isinstance(e, (str, Path)):
            raise UserError(f"{where}: '{key}' entry {e!r} is not a path; {_SPLIT_HELP}")
        p = Path(e).expanduser()
        p = p if p.is_absolute() else (root / p)
        p = p.resolve()
        if not p.exists():
            msg = f"{where}: '{key}' entry {str(e)!r} -> {p} does not exist (dataset root: {root}); {_SPLIT_HELP}"
            if required:
                raise FileNotFoundError(msg)
            LOGGER.warning(f"WARNING: {msg}")
        elif p.is_file() and p.suffix.lower() != ".txt":
            if p.suffix[1:].lower() not in IMG_FORMATS:  # a single image file is accepted as a split
                raise UserError(f"{where}: '{key}' entry {p} is neither a folder, a .txt list nor an image; "
                                 f"{_SPLIT_HELP}")
        out.append(p)
    return out


def data_names(data: str | Path) -> list[str]:
    """The class names of a data YAML (a path or a bare name in data/), read without its image folders."""
    file = resolve_data_yaml(data)
    return _parse_names(_read_yaml(file), str(file))


def load_data_config(data: str | Path | dict[str, Any], single_cls: bool = False) -> DataConfig:
    """Read and check a data YAML (a path, a bare name in data/, or an already loaded dict).

    `single_cls` gives one class: names become ['item'] unless the dataset already has a single name.
    """
    if isinstance(data, dict):
        yaml_file, d, yaml_dir = None, dict(data), Path.cwd()
        where = "data dict"
    else:
        yaml_file = resolve_data_yaml(data)
        d, yaml_dir, where = _read_yaml(yaml_file), yaml_file.parent, str(yaml_file)
    names = _parse_names(d, where)
    root = _dataset_root(d, yaml_dir, where)
    train = _resolve_split(d, "train", root, where, required=True)
    val = _resolve_split(d, "val", root, where, required=True)
    test = _resolve_split(d, "test", root, where, required=False)
    if single_cls:
        names = names if len(names) == 1 else ["item"]
    return DataConfig(path=root, train=train, val=val, test=test, names=names, nc=len(names), yaml_file=yaml_file)
