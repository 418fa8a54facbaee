"""Checks of what a user supplies to train.py, val.py and detect.py: the image size, and weights whose values or
outputs are not finite."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from utils.checkpoint import CheckpointError
from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["MAX_IMG_SIZE", "check_img_size", "check_finite", "check_finite_outputs", "non_finite_tensors"]

MAX_IMG_SIZE = 8192  # --imgsz bound: an 8192x8192 input already needs tens of GB of activations in yolov5n


def check_img_size(imgsz: int | list[int] | tuple[int, ...], s: int = 32, floor: int = 0):
    """`imgsz` rounded up to a multiple of the stride `s` (a warning says so); an int or a list of them, each
    at most MAX_IMG_SIZE."""
    def up(x: int) -> int:
        if not isinstance(x, (int, float)) or x <= 0:
            raise UserError(f"--imgsz {x!r}: image sizes must be positive integers")
        if x > MAX_IMG_SIZE:
            raise UserError(f"--imgsz {x!r}: image sizes must be at most {MAX_IMG_SIZE} (more exhausts memory)")
        return max(int(math.ceil(x / s) * s), floor)

    if isinstance(imgsz, (int, float)):
        new, changed = up(imgsz), up(imgsz) != imgsz
    else:
        new = [up(x) for x in imgsz]
        changed = new != list(imgsz)
    if changed:
        LOGGER.warning(f"WARNING: --img-size {imgsz} must be a multiple of max stride {s}, updating to {new}")
    return new


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the model's parameters and buffers that hold NaN or inf."""
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]


def check_finite(model: torch.nn.Module, weights: str | Path) -> None:
    """Raise a CheckpointError naming `weights` when the model's parameters or buffers hold NaN or inf."""
    bad = non_finite_tensors(model)
    if bad:
        raise CheckpointError(f"{weights}: {len(bad)} weight tensors hold NaN or inf values (first: {bad[0]}); the "
                              f"training that wrote it diverged. Use an earlier checkpoint")


def check_finite_outputs(pred: torch.Tensor, weights: str | Path, what: str) -> None:
    """Raise a CheckpointError naming `weights` when the model's raw predictions on `what` are NaN or inf."""
    if not torch.isfinite(pred).all():
        raise CheckpointError(f"{weights}: the model's outputs on {what} are NaN or inf (its weights are finite: "
                              f"an overflow, e.g. in --half); no detections would be reported")
