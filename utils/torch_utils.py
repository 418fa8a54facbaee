"""PyTorch helpers: device selection, model summary, timing.

BatchNorm fusion is model code and lives in models/fuse.py: nothing here imports models.
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn as nn

from utils.errors import UserError
from utils.flops import gflops
from utils.log import LOGGER

__all__ = ["select_device", "model_info", "de_parallel", "time_sync", "parameter_counts"]


def select_device(device: str | int | torch.device = "") -> torch.device:
    """'' picks cuda:0 when available else cpu; 'cpu', '0', '0,1', 'cuda:1' and 'mps' as YOLOv5 accepts them."""
    if isinstance(device, torch.device):
        return device
    spec = str(device).strip().lower().replace("cuda:", "").replace("none", "")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError("--device mps requested but MPS is not available on this machine")
        return torch.device("mps")
    if spec == "":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    ids = [s for s in spec.split(",") if s]
    if not all(s.isdigit() for s in ids):
        raise UserError(f"invalid --device {device!r}; use 'cpu', 'mps', a CUDA index such as '0', or '0,1'")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device!r} requested but CUDA is not available; use --device cpu")
    n = torch.cuda.device_count()
    bad = [s for s in ids if int(s) >= n]
    if bad:
        raise UserError(f"--device {device!r}: CUDA device {bad[0]} does not exist; this machine has {n}")
    local_rank = int(os.environ.get("LOCAL_RANK", -1))
    return torch.device(f"cuda:{ids[local_rank] if 0 <= local_rank < len(ids) else ids[0]}")


def de_parallel(model: nn.Module) -> nn.Module:
    """The module inside DataParallel/DistributedDataParallel, or the model itself."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


def time_sync() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.time()


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, parameters that require gradients)."""
    n_p = sum(x.numel() for x in model.parameters())
    n_g = sum(x.numel() for x in model.parameters() if x.requires_grad)
    return n_p, n_g


def model_info(model: nn.Module, verbose: bool = False, imgsz: int | tuple[int, int] = 640) -> str:
    """YOLOv5's summary line, with GFLOPs counted at `imgsz` (see utils.flops). Logged and returned."""
    n_p, n_g = parameter_counts(model)
    if verbose:
        LOGGER.info(f"{'layer':>5} {'name':>40} {'gradient':>9} {'parameters':>12} {'shape':>20} {'mu':>10} "
                    f"{'sigma':>10}")
        for i, (name, p) in enumerate(model.named_parameters()):
            LOGGER.info(f"{i:5g} {name:>40} {str(p.requires_grad):>9} {p.numel():12g} {str(list(p.shape)):>20} "
                        f"{p.mean():10.3g} {p.std() if p.numel() > 1 else 0:10.3g}")
    try:
        size = imgsz if isinstance(imgsz, int) else "x".join(str(s) for s in imgsz)
        fs = f", {gflops(model, imgsz):.1f} GFLOPs at {size}"
    except Exception as e:  # the summary must still print; the reason is reported, not hidden
        fs = f", GFLOPs not counted ({type(e).__name__}: {e})"
        LOGGER.warning(f"WARNING: GFLOPs could not be counted: {type(e).__name__}: {e}")
    name = type(model).__name__
    yaml_file = getattr(model, "yaml", {}).get("yaml_file") if isinstance(getattr(model, "yaml", None), dict) else None
    if yaml_file:
        name = yaml_file.rsplit(".", 1)[0].replace("yolov5", "YOLOv5")
    line = f"{name} summary: {len(list(model.modules()))} layers, {n_p:,} parameters, {n_g:,} gradients{fs}"
    LOGGER.info(line)
    return line
