"""Test-time augmentation (TTA) as YOLOv5's `Model._forward_augment`: val.py / detect.py --augment.

    pred = augmented_forward(model, im, gs=32, nl=3)   # im (B, 3, H, W) in 0..1; pred (B, n, 5 + nc) for NMS

Each batch runs three times: at scale 1, at 0.83 mirrored left-right, and at 0.67 (TTA_SCALES, TTA_FLIPS). A
scaled batch is resized bilinearly to int(H * s) x int(W * s) and padded on the right and bottom to a multiple
of the grid `gs` with the grey 0.447 (scale_img). Each pass's decoded boxes (pixel cx, cy, w, h) are divided by
the scale and mirrored back (descale_pred) into the input's pixels; then, as YOLOv5 does, the first pass drops
its largest-stride (large object) predictions and the last pass drops its smallest-stride (small object) ones
(clip_augmented), and the passes are concatenated for one NMS. `forward` may be any callable returning
(decoded, raw maps or None): a Model, a DetectBackend (a .pt or an export that takes any input size).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from utils.errors import UserError

__all__ = ["TTA_SCALES", "TTA_FLIPS", "PAD_VALUE", "scale_img", "descale_pred", "clip_augmented", "augmented_passes",
           "augmented_forward"]

TTA_SCALES = (1.0, 0.83, 0.67)  # YOLOv5's scales
TTA_FLIPS = (None, 3, None)  # per scale: None, or the flipped dimension (2 up-down, 3 left-right)
PAD_VALUE = 0.447  # YOLOv5's padding of a scaled image (about the ImageNet mean)

Forward = Callable[[torch.Tensor], tuple]


def scale_img(img: torch.Tensor, ratio: float = 1.0, same_shape: bool = False, gs: int = 32) -> torch.Tensor:
    """img (B, 3, H, W) resized by `ratio` (bilinear) to int(H * ratio) x int(W * ratio), then padded on the right
    and bottom with PAD_VALUE to a multiple of `gs` (or back to H x W with `same_shape`); ratio 1 returns `img`."""
    if ratio == 1.0:
        return img
    h, w = img.shape[2:]
    s = (int(h * ratio), int(w * ratio))
    if min(s) < 1:
        raise UserError(f"TTA scale {ratio}: a {h}x{w} input would shrink to {s[0]}x{s[1]} pixels")
    img = F.interpolate(img, size=s, mode="bilinear", align_corners=False)
    if not same_shape:
        h, w = (math.ceil(x * ratio / gs) * gs for x in (h, w))
    return F.pad(img, [0, w - s[1], 0, h - s[0]], value=PAD_VALUE)


def descale_pred(p: torch.Tensor, flip: int | None, scale: float, img_size: tuple[int, int]) -> torch.Tensor:
    """Decoded predictions (B, n, 5 + nc) of a scaled (and flipped) input mapped back to the pixels of the input
    of size img_size (h, w); a new tensor."""
    xy, wh, rest = p[..., 0:2] / scale, p[..., 2:4] / scale, p[..., 4:]
    x, y = xy[..., 0:1], xy[..., 1:2]
    if flip == 2:
        y = img_size[0] - y  # up-down
    elif flip == 3:
        x = img_size[1] - x  # left-right
    return torch.cat((x, y, wh, rest), -1)


def _tail_counts(n: int, nl: int) -> tuple[int, int]:
    """YOLOv5's (largest-level, smallest-level) prediction counts of a pass with n predictions over nl levels
    whose cells grow 4x per level (an input of a multiple of the largest stride)."""
    g = sum(4 ** x for x in range(nl))  # cells of all levels, in units of the coarsest level's
    return n // g, (n // g) * 4 ** (nl - 1)


def clip_augmented(y: list[torch.Tensor], nl: int, levels: Sequence[Sequence[int] | None] | None = None
                   ) -> list[torch.Tensor]:
    """YOLOv5's clipping of the augmented tails: the first pass loses its last level's predictions (the largest
    stride: large objects), the last pass its first level's (small objects). `levels[i]`, where known, gives pass
    i's prediction count per level (from its raw maps); otherwise YOLOv5's formula, which assumes an input of a
    multiple of the largest stride."""
    y = list(y)
    if len(y) < 2 or nl < 2:
        return y
    first = levels[0] if levels and levels[0] else None
    last = levels[-1] if levels and levels[-1] else None
    large = first[-1] if first else _tail_counts(y[0].shape[1], nl)[0]
    small = last[0] if last else _tail_counts(y[-1].shape[1], nl)[1]
    y[0] = y[0][:, : y[0].shape[1] - large]
    y[-1] = y[-1][:, small:]
    return y


def _level_counts(raw) -> list[int] | None:
    """Predictions per level from a model's raw maps (B, na, ny, nx, no), or None where there are none."""
    if not isinstance(raw, (list, tuple)) or not raw or not all(torch.is_tensor(r) and r.ndim == 5 for r in raw):
        return None
    return [r.shape[1] * r.shape[2] * r.shape[3] for r in raw]


def augmented_passes(forward: Forward, x: torch.Tensor, gs: int, scales: Sequence[float] = TTA_SCALES,
                     flips: Sequence[int | None] = TTA_FLIPS) -> tuple[list[torch.Tensor], list[list[int] | None]]:
    """Each (scale, flip) pass over x: (de-scaled decoded predictions per pass, per-level counts per pass or None).

    A pass at scale 1 without a flip is `forward(x)[0]` itself."""
    if len(scales) != len(flips):
        raise UserError(f"TTA: {len(scales)} scales but {len(flips)} flips; give one flip (None, 2 or 3) per scale")
    img_size = tuple(x.shape[-2:])
    ys, levels = [], []
    for s, f in zip(scales, flips):
        if f not in (None, 2, 3):
            raise UserError(f"TTA flip {f!r}: valid are None, 2 (up-down) and 3 (left-right)")
        xi = scale_img(x.flip(f) if f else x, s, gs=int(gs))
        out = forward(xi)
        yi = out[0] if isinstance(out, (list, tuple)) else out
        raw = out[1] if isinstance(out, (list, tuple)) and len(out) > 1 else None
        ys.append(yi if s == 1.0 and f is None else descale_pred(yi, f, s, img_size))
        levels.append(_level_counts(raw))
    return ys, levels


def augmented_forward(forward: Forward, x: torch.Tensor, gs: int, nl: int, scales: Sequence[float] = TTA_SCALES,
                      flips: Sequence[int | None] = TTA_FLIPS) -> torch.Tensor:
    """YOLOv5's augmented inference: the passes de-scaled, their tails clipped, concatenated (B, n, 5 + nc)."""
    ys, levels = augmented_passes(forward, x, gs, scales, flips)
    return torch.cat(clip_augmented(ys, nl, levels), 1)
