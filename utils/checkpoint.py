"""Checkpoints as data: state dicts, the model YAML, class names and training state.

Two formats are read:
  * this project's: a dict of tensors and plain Python values, loaded with `torch.load(weights_only=True)`;
  * official YOLOv5 `.pt` files, which pickle whole modules (`models.yolo.Model`, `models.common.Conv`, ...).
    They are read through torch's weights-only unpickler with each known module class mapped to an inert
    record (`_PickledModule`) that only stores its attributes. Nothing of the file's is ever imported or
    called; any other global is refused with `UnsafeCheckpointError` naming it.
Writes are atomic: the file is written beside its target and renamed over it, so a kill mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT", "UnsafeCheckpointError", "save_checkpoint", "load_checkpoint", "Checkpoint"]

FORMAT = "yolo-attention-checkpoint/1"


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint names code this loader will not run."""


class _PickledModule:
    """An inert stand-in for a pickled nn.Module: it keeps the pickled attribute dict and nothing else."""

    type_name = "?"

    def __setstate__(self, state: dict) -> None:
        self.state = state


def _stand_in(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[-1], (_PickledModule,), {"type_name": qualname})


# Every class the official YOLOv5 v6/v7 checkpoints pickle, under the names they pickle them by.
_LEGACY_CLASSES = [
    "models.yolo.Model", "models.yolo.DetectionModel", "models.yolo.Detect",
    "models.common.Conv", "models.common.C3", "models.common.Bottleneck", "models.common.SPPF",
    "models.common.SPP", "models.common.Concat", "models.common.Focus", "models.common.BottleneckCSP",
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.conv.Conv2d", "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.activation.SiLU", "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.activation.Hardswish", "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample", "torch.nn.modules.linear.Identity",
]
_STAND_INS = [(_stand_in(q), q) for q in _LEGACY_CLASSES]


def _unpickle(path: Path, legacy: bool) -> Any:
    try:
        if legacy:
            with torch.serialization.safe_globals(_STAND_INS + [set]):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if isinstance(e, UnsafeCheckpointError):
            raise
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"names {found[1]!r}, which is" if found else "names code"
        raise UnsafeCheckpointError(
            f"{path}: refused to load; its pickle {what} outside the allowed YOLOv5 model classes and tensors, "
            f"so loading it could run arbitrary code. Convert it with a trusted copy of the code that wrote it."
        ) from None


def _module_state(obj: _PickledModule, prefix: str, out: "OrderedDict[str, torch.Tensor]") -> None:
    """Flatten a pickled module tree into a state dict (parameters and persistent buffers)."""
    st = obj.state
    for name, p in st.get("_parameters", {}).items():
        if p is not None:
            out[prefix + name] = p.detach() if isinstance(p, torch.Tensor) else p
    non_persistent = st.get("_non_persistent_buffers_set", set())
    for name, b in st.get("_buffers", {}).items():
        if b is not None and name not in non_persistent:
            out[prefix + name] = b
    for name, child in st.get("_modules", {}).items():
        if child is not None:
            _module_state(child, f"{prefix}{name}.", out)


class Checkpoint(dict):
    """A loaded checkpoint in this project's layout, whichever format it came from."""

    @property
    def legacy(self) -> bool:
        return self.get("format") != FORMAT


def _from_legacy(raw: dict, path: Path) -> Checkpoint:
    model = raw.get("ema") or raw.get("model")
    if not isinstance(model, _PickledModule) or "yaml" not in model.state:
        raise ValueError(f"{path}: not a YOLOv5 checkpoint (no pickled model with a yaml attribute)")
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    _module_state(model, "", sd)
    names = model.state.get("names", [])
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return Checkpoint(
        format="yolov5-legacy", model=sd, yaml=dict(model.state["yaml"]), names=list(names),
        epoch=raw.get("epoch", -1), best_fitness=raw.get("best_fitness"), date=raw.get("date"),
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read either checkpoint format into a `Checkpoint` with keys model (state dict), yaml, names, ..."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        raw = _unpickle(path, legacy=False)
    except UnsafeCheckpointError:
        raw = _unpickle(path, legacy=True)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a checkpoint dict, got {type(raw).__name__}") from None
        return _from_legacy(raw, path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError(f"{path}: not a checkpoint of this project nor of YOLOv5 (keys: {sorted(raw)[:8]})")
    return Checkpoint(raw)


def save_checkpoint(ckpt: dict, path: str | Path) -> Path:
    """Write `ckpt` (state dicts and plain values only) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, **ckpt}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is as readable as any other output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
