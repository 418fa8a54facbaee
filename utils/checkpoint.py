"""Checkpoints as data: state dicts, the model YAML, class names and training state.

Two formats are read:
  * this project's: a dict of tensors and plain Python values, loaded with `torch.load(weights_only=True)`;
  * official YOLOv5 `.pt` files, which pickle whole modules (`models.yolo.Model`, `models.common.Conv`, ...).
    They are read through torch's weights-only unpickler with each known module class mapped to an inert
    record (`_PickledModule`) that only stores its attributes. Nothing of the file's is ever imported or
    called; any other global is refused with `UnsafeCheckpointError` naming it.
A file that cannot be used (empty, text, truncated, corrupt, refused, or without a key the caller needs) raises
`CheckpointError`, a ValueError whose one-line message names the file and what is wrong with it.
Writes are atomic: the file is written beside its target and renamed over it, so a kill mid-save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from utils.errors import UserError
from utils.files import atomic_write
from utils.log import LOGGER

__all__ = ["FORMAT", "CheckpointError", "UnsafeCheckpointError", "save_checkpoint", "load_checkpoint", "cast_state",
           "strip_optimizer", "training_checkpoint", "TrainingState", "training_state", "inference_weights",
           "Checkpoint", "names_list"]

FORMAT = "yolo-attention-checkpoint/1"
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"  # torch.save's zip format; the pre-1.6 plain pickle format
# what torch.load raises for a damaged file, found by feeding it truncated, bit-flipped and random files
_LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, OSError,
                struct.error, TypeError, AttributeError, MemoryError)


class CheckpointError(UserError):
    """A weights file that cannot be used; the message names it and says why."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
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
    # the hub models: yolov5s-transformer (C3TR), yolov5s-ghost, yolov3-tiny (ZeroPad2d)
    "models.common.C3TR", "models.common.TransformerBlock", "models.common.TransformerLayer",
    "torch.nn.modules.linear.Linear", "torch.nn.modules.linear.NonDynamicallyQuantizableLinear",
    "torch.nn.modules.activation.MultiheadAttention",
    "models.common.GhostConv", "models.common.GhostBottleneck", "models.common.C3Ghost", "models.common.DWConv",
    "torch.nn.modules.padding.ZeroPad2d",
]
_STAND_INS = [(_stand_in(q), q) for q in _LEGACY_CLASSES]


def _check_header(path: Path) -> None:
    """Refuse, before unpickling, a file that cannot be a torch checkpoint: empty, text, random bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file (0 bytes), not a checkpoint; was its download or copy cut short?")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (a .pt file is a zip archive; this one starts "
                              f"with {head!r})")


def _refused_global(e: pickle.UnpicklingError) -> str | None:
    found = re.search(r"GLOBAL ([\w.]+)", str(e))  # 'Unsupported global: GLOBAL x.y', 'unsupported GLOBAL x.y'
    return found[1] if found else None


def _detail(e: BaseException) -> str:
    """The informative line of torch.load's message, which wraps the cause in paragraphs of advice."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    cause = next((x for x in lines if x.startswith(("Unsupported", "WeightsUnpickler error: "))), None)
    if cause is None:
        cause = lines[0] if lines else type(e).__name__
    for noise in ("WeightsUnpickler error: ", "PytorchStreamReader failed reading zip archive: "):
        cause = cause.removeprefix(noise)
    cause = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", cause)  # c10's source location
    return cause.split(". This is an internal miniz error")[0]


def _load_error(path: Path, e: BaseException) -> CheckpointError:
    """The one-line error for a file torch.load failed on."""
    if isinstance(e, pickle.UnpicklingError) and (name := _refused_global(e)):
        return UnsafeCheckpointError(
            f"{path}: refused to load: its pickle refers to {name}, which is not one of the allowed YOLOv5 model "
            f"classes and tensors, so loading it could run arbitrary code. Convert it with a trusted copy of the code "
            f"that wrote it")
    if not isinstance(e, RuntimeError):  # torch's zip reader raises RuntimeError
        return CheckpointError(f"{path}: corrupt checkpoint ({_detail(e)}); download or copy it again")
    if zipfile.is_zipfile(path):  # an intact zip archive, not laid out as torch.save writes one
        return CheckpointError(f"{path}: a zip archive but not a PyTorch checkpoint ({_detail(e)})")
    return CheckpointError(f"{path}: truncated or damaged zip archive ({_detail(e)}); download or copy it again")


def _unpickle(path: Path, legacy: bool) -> Any:
    try:
        if legacy:
            with torch.serialization.safe_globals(_STAND_INS + [set]):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as e:
        if isinstance(e, CheckpointError):
            raise
        raise _load_error(path, e) from None


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


def names_list(names: Any) -> list[str]:
    """Class names as a list: a list or tuple as it is, a dict {0: 'person', ...} ordered by key."""
    if isinstance(names, dict):  # keys may be ints or, from JSON/YAML, digit strings: '10' after '9'
        return [str(names[k]) for k in sorted(names, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))]
    return [str(n) for n in names or []]


class Checkpoint(dict):
    """A loaded checkpoint in this project's layout, whichever format it came from. A missing key raises a
    CheckpointError naming the file and the key, not a bare KeyError."""

    path: Path = Path("?")

    @property
    def legacy(self) -> bool:
        return self.get("format") != FORMAT

    def __missing__(self, key):
        raise CheckpointError(f"{self.path}: no {key!r} in this checkpoint (it has {sorted(map(str, self))}); "
                              f"it was not written by this project's train.py or is damaged")


def _checked(ckpt: Checkpoint, path: Path) -> Checkpoint:
    """Name the file, check the types of the keys a model is built from, give names as a list."""
    ckpt.path = path
    if "yaml" in ckpt and not isinstance(ckpt["yaml"], dict):
        raise CheckpointError(f"{path}: 'yaml' is a {type(ckpt['yaml']).__name__}, expected the model's YAML dict")
    for key in ("model", "ema"):
        sd = ckpt.get(key)
        if sd is not None and not (isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())):
            raise CheckpointError(f"{path}: {key!r} is not a state dict (names to tensors)")
    if "names" in ckpt:
        ckpt["names"] = names_list(ckpt["names"])
    return ckpt


def _from_legacy(raw: dict, path: Path) -> Checkpoint:
    model = raw.get("ema") or raw.get("model")
    if not isinstance(model, _PickledModule) or "yaml" not in model.state:
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint (no pickled model with a yaml attribute)")
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    _module_state(model, "", sd)
    return Checkpoint(
        format="yolov5-legacy", model=sd, yaml=dict(model.state["yaml"]), names=model.state.get("names", []),
        epoch=raw.get("epoch", -1), best_fitness=raw.get("best_fitness"), date=raw.get("date"),
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read either checkpoint format into a `Checkpoint` with keys model (state dict), yaml, names, ...

    Raises FileNotFoundError for a missing file and CheckpointError for one that cannot be used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    _check_header(path)
    try:
        raw = _unpickle(path, legacy=False)
    except UnsafeCheckpointError:
        raw = _unpickle(path, legacy=True)
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(raw).__name__}") from None
        return _checked(_from_legacy(raw, path), path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        what = f"keys: {sorted(map(str, raw))[:8]}" if isinstance(raw, dict) else f"a {type(raw).__name__}"
        raise CheckpointError(f"{path}: not a checkpoint of this project nor of YOLOv5 ({what})")
    return _checked(Checkpoint(raw), path)


def save_checkpoint(ckpt: dict, path: str | Path) -> Path:
    """Write `ckpt` (state dicts and plain values only) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, **ckpt}
    try:
        return atomic_write(path, lambda f: torch.save(data, f), fsync=True)
    except (OSError, RuntimeError) as e:
        # torch's zip writer reports a failed write (a full disk, `ulimit -f`) as a RuntimeError from its
        # container code; any other RuntimeError is a bug and keeps its traceback
        if isinstance(e, RuntimeError) and "inline_container" not in str(e):
            raise
        raise OSError(f"checkpoint {path} could not be written ({' '.join(str(e).split())[:160]}): the disk is "
                      "full or a file size limit (ulimit -f) was reached; the previous file there is kept") from None


def cast_state(state: dict, dtype: torch.dtype = torch.float32) -> dict:
    """A state dict with its floating-point tensors in `dtype` (fp16 checkpoints load into fp32 models)."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def training_checkpoint(model: torch.nn.Module, ema, names: list[str], epoch: int, best_fitness: float,
                        optimizer: torch.optim.Optimizer, last_opt_step: int,
                        plugin_optimizer: torch.optim.Optimizer | None, plugin_params: list[str],
                        scaler: torch.amp.GradScaler | None, opt: dict, hyp: dict) -> dict:
    """The layout of a training checkpoint (full precision, so that --resume continues exactly):

    model, ema (state dicts; ema is utils.training.optim.ModelEMA), updates (EMA updates so far), yaml (the model's
    dict), names, epoch (the last finished), best_fitness, optimizer, last_opt_step, plugin_optimizer and
    plugin_params (utils.training.plugin_optim), scaler (AMP), opt (the run's options), hyp (as given), date.
    `model` is the bare model (not a DDP wrapper). strip_optimizer turns it into a finished one."""
    return {
        "model": model.state_dict(), "ema": ema.ema.state_dict(), "updates": ema.updates,
        "yaml": model.yaml, "names": list(names), "epoch": epoch, "best_fitness": best_fitness,
        "optimizer": optimizer.state_dict(), "last_opt_step": last_opt_step,
        "plugin_optimizer": plugin_optimizer.state_dict() if plugin_optimizer is not None else None,
        "plugin_params": list(plugin_params), "scaler": scaler.state_dict() if scaler is not None else None,
        "opt": opt, "hyp": hyp, "date": datetime.now().isoformat(),
    }


@dataclass(frozen=True)
class TrainingState:
    """What --resume restores from a training checkpoint (the keys training_checkpoint writes)."""

    model: dict  # state dict, full precision
    ema: dict | None
    updates: int  # EMA updates so far
    optimizer: dict
    plugin_optimizer: dict | None
    plugin_params: list[str]
    scaler: dict | None
    epoch: int  # the last finished epoch
    best_fitness: float
    last_opt_step: int
    opt: dict | None  # the run's options
    hyp: dict | None  # the run's hyperparameters, as given


def training_state(ckpt: Checkpoint) -> TrainingState | None:
    """The resumable state of a training checkpoint; None for a finished (stripped) or a YOLOv5 one."""
    if ckpt.get("optimizer") is None:
        return None
    return TrainingState(
        model=ckpt["model"], ema=ckpt.get("ema"), updates=int(ckpt.get("updates") or 0), optimizer=ckpt["optimizer"],
        plugin_optimizer=ckpt.get("plugin_optimizer"), plugin_params=list(ckpt.get("plugin_params") or []),
        scaler=ckpt.get("scaler"), epoch=int(ckpt["epoch"]), best_fitness=float(ckpt.get("best_fitness") or 0.0),
        last_opt_step=int(ckpt.get("last_opt_step", -1)), opt=ckpt.get("opt"), hyp=ckpt.get("hyp"))


def inference_weights(ckpt: Checkpoint) -> tuple[dict, list[str], dict]:
    """(model YAML dict, class names, fp32 state dict) to build the model a checkpoint describes: the EMA
    weights where there are any (as YOLOv5 deploys them), else the model's."""
    return ckpt["yaml"], names_list(ckpt.get("names")), cast_state(ckpt.get("ema") or ckpt["model"])


def strip_optimizer(f: Path) -> None:
    """Keep only the EMA weights (fp16) in a finished checkpoint, as YOLOv5 does; no longer resumable."""
    x = load_checkpoint(f)
    if x.get("ema"):
        x["model"] = x["ema"]
    x["model"] = cast_state(x["model"], torch.float16)
    for k in ("optimizer", "plugin_optimizer", "best_fitness", "ema", "updates", "scaler", "last_opt_step"):
        x[k] = None
    x["epoch"] = -1
    x.pop("format", None)
    save_checkpoint(dict(x), f)
    LOGGER.info(f"Optimizer stripped from {f}, {f.stat().st_size / 1e6:.1f}MB")
