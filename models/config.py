"""Model YAML lookup: bare names resolve in `configs/`, a scale letter in the name picks from `scales:`.

`yolov5n.yaml` reads `configs/yolov5.yaml` with scale n; `yolov5s_biformer.yaml` reads
`configs/yolov5_biformer.yaml` with scale s. A path that exists is read as it is. A YAML that already has
`depth_multiple`/`width_multiple` (YOLOv5's own files) is used unchanged.
"""

from __future__ import annotations

import re
from copy import deepcopy
from pathlib import Path

from utils.errors import UserError
from utils.files import read_yaml

__all__ = ["CONFIG_DIR", "SCALED_NAME", "CLASSIC_CONFIGS", "load_model_config", "resolve_config_path", "list_configs",
           "scale_of", "scaled_name"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
# yolov5s_biformer.yaml -> arch 'yolov5', scale 's', rest '_biformer'
# The classic attention modules at the plug-ins' places (models/attention/classic.py): comparators a user names
# with compare.py --cfgs, not part of its default configs (the main job).
CLASSIC_CONFIGS = ("yolov5_se.yaml", "yolov5_eca.yaml", "yolov5_cbam.yaml", "yolov5_coordatt.yaml")
SCALED_NAME = re.compile(r"^(?P<arch>yolov\d+)(?P<scale>[nsmlx])(?P<rest>(?:[_-].*)?)\.ya?ml$")


def list_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.yaml"))


def scale_of(name: str | Path) -> str | None:
    """The scale letter of a config or weights name: 's' for yolov5s_biformer.yaml, yolov5s.pt or
    my_yolov5s_best.pt; None when the name holds no yolovN plus scale letter."""
    m = re.search(r"yolov\d+(?P<scale>[nsmlx])(?:[_\-.]|$)", Path(str(name)).name)
    return m["scale"] if m else None


def scaled_name(config: str | Path, scale: str) -> str:
    """The name that reads `config` (a file in configs/, e.g. yolov5_biformer.yaml) at `scale`:
    yolov5s_biformer.yaml. A name without a yolovN prefix has no scale letter and is returned as it is."""
    name = Path(str(config)).name
    m = re.match(r"^(?P<arch>yolov\d+)(?P<rest>(?:[_-].*)?\.ya?ml)$", name)
    return f"{m['arch']}{scale}{m['rest']}" if m else name


def resolve_config_path(cfg: str | Path) -> tuple[Path, str | None]:
    """(file to read, scale letter or None) for a config name or path."""
    path = Path(cfg)
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_suffix(".yaml")
    for candidate in (path, CONFIG_DIR / path.name):
        if candidate.is_file():
            return candidate, None
    m = SCALED_NAME.match(path.name)
    if m:
        base = m["arch"] + m["rest"] + path.suffix
        for candidate in (path.with_name(base), CONFIG_DIR / base):
            if candidate.is_file():
                return candidate, m["scale"]
    known = ", ".join(p.name for p in list_configs())
    raise FileNotFoundError(
        f"model config {str(cfg)!r} not found; give a path to a YAML file or one of: {known} "
        f"(a scale letter n/s/m/l/x after 'yolov5' picks the size, e.g. yolov5s_biformer.yaml)"
    )


def _all_registered(d: dict) -> bool:
    """Whether every block the YAML's rows name (and each Residual's block) is registered already."""
    from models.registry import lookup

    names = set()
    for row in list(d.get("backbone") or []) + list(d.get("head") or []):
        if isinstance(row, (list, tuple)) and len(row) > 3:
            names.add(row[2])
            if row[2] == "Residual" and isinstance(row[3], list) and row[3] and isinstance(row[3][0], str):
                names.add(row[3][0])
    try:
        for name in names:
            lookup(name)
    except KeyError:
        return False
    return True


def load_model_config(cfg: str | Path | dict) -> dict:
    """The model dict with `depth_multiple` and `width_multiple` set, and `yaml_file` naming its source."""
    if isinstance(cfg, dict):
        d = deepcopy(cfg)
        path, scale = Path(d.get("yaml_file", "model.yaml")), d.get("scale")
    else:
        path, scale = resolve_config_path(cfg)
        d = read_yaml(path)
        if not isinstance(d, dict):
            raise UserError(f"{path}: a model YAML must be a mapping with backbone and head, got {type(d).__name__}")
        d["yaml_file"] = Path(cfg).name if scale else path.name
    if d.get("modules"):  # the user's files that register blocks the YAML names (models/user_modules.py)
        from models.user_modules import import_module_files

        base = None if isinstance(cfg, dict) else path.parent
        d["modules"] = [str(f) for f in import_module_files(d["modules"], base, needed_by=f"model YAML {path}",
                                                            missing_ok=_all_registered(d))]
    for key in ("backbone", "head"):
        if key not in d:
            raise UserError(f"{path}: model YAML has no {key!r} section; keys present: {sorted(d)}")
    scales = d.get("scales")
    if scales:
        if scale is None:
            scale = d.get("scale") or next(iter(scales))
        if scale not in scales:
            raise UserError(f"{path}: scale {scale!r} is not in its scales {sorted(scales)}")
        d["depth_multiple"], d["width_multiple"] = scales[scale][0], scales[scale][1]
        d["scale"] = scale
    d.setdefault("depth_multiple", 1.0)
    d.setdefault("width_multiple", 1.0)
    return d
