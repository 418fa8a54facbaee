"""Pieces shared by val.py and detect.py: image size checks, YOLO txt output, CLI error reporting."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from utils.boxes import xyxy2xywh
from utils.log import LOGGER
from utils.errors import UserError

__all__ = ["MAX_IMG_SIZE", "check_img_size", "check_finite", "check_finite_outputs", "save_one_txt", "cli_errors",
           "apply_options"]

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


def check_finite(model: torch.nn.Module, weights: str | Path) -> None:
    """Raise a CheckpointError naming `weights` when the model's parameters or buffers hold NaN or inf."""
    from utils.checkpoint import CheckpointError

    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{weights}: {len(bad)} weight tensors hold NaN or inf values (first: {bad[0]}); the "
                              f"training that wrote it diverged. Use an earlier checkpoint")


def check_finite_outputs(pred: torch.Tensor, weights: str | Path, what: str) -> None:
    """Raise a CheckpointError naming `weights` when the model's raw predictions on `what` are NaN or inf."""
    from utils.checkpoint import CheckpointError

    if not torch.isfinite(pred).all():
        raise CheckpointError(f"{weights}: the model's outputs on {what} are NaN or inf (its weights are finite: "
                              f"an overflow, e.g. in --half); no detections would be reported")


def save_one_txt(predn: torch.Tensor, save_conf: bool, shape: tuple[int, int], file: str | Path) -> None:
    """Write detections (n, 6) [x1, y1, x2, y2, conf, cls] in pixels of an image of `shape` (h, w) to `file`
    as YOLO lines `cls cx cy w h [conf]`, normalized. The file is written afresh: a run rewrites the labels an
    earlier run (--exist-ok) left there."""
    gn = torch.tensor(shape, dtype=torch.float32)[[1, 0, 1, 0]]
    lines = []
    for *xyxy, conf, cls in predn.tolist():
        xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
        line = (cls, *xywh, conf) if save_conf else (cls, *xywh)
        lines.append(("%g " * len(line)).rstrip() % line + "\n")
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    with open(file, "w") as f:
        f.writelines(lines)


def cli_errors(main_fn):
    """For a script's command line only: run `main(opt)`; a user error (utils.errors.UserError: a bad value or
    file) or an error of the machine (OSError: a missing file, a full or read-only disk, an unreachable stream)
    prints `ERROR: ...` and exits with 2, with no traceback. Other exceptions are bugs: their traceback is wanted.
    Called from Python, `main()` raises instead."""
    def wrapped(*args, **kwargs):
        try:
            return main_fn(*args, **kwargs)
        except (UserError, OSError) as e:
            print(f"ERROR: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapped


def apply_options(opt, kwargs: dict, who: str):
    """Set `kwargs` on the parsed default options `opt` of a script's `run(**kwargs)`; unknown names raise a
    TypeError that lists the valid ones."""
    for k, v in kwargs.items():
        if not hasattr(opt, k):
            raise TypeError(f"{who}() got an unknown option {k!r}; options: {sorted(vars(opt))}")
        setattr(opt, k, v)
    return opt
