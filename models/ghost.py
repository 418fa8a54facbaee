"""Ghost blocks (GhostNet, Han et al. 2020) as YOLOv5's hub/yolov5s-ghost.yaml uses them, and DWConv.

A GhostConv makes half its output channels with an ordinary convolution and the other half from those with a
cheap 5x5 depthwise convolution ("ghost" features), so it costs about half a Conv. Layout and parameter names
are official YOLOv5's (cv1/cv2, conv/shortcut, C3's cv1/cv2/cv3/m), so `yolov5s-ghost.yaml` has YOLOv5s-ghost's
3,897,605 parameters and its state dicts load by name.

    [-1, 1, GhostConv, [128, 3, 2]]  # GhostConv(c1, c2, k, s)
    [-1, 3, C3Ghost, [128]]          # C3Ghost(c1, c2, n): n GhostBottlenecks inside
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.blocks import C3, Conv
from models.registry import register, scaled, scaled_repeated
from utils.errors import UserError

__all__ = ["DWConv", "GhostConv", "GhostBottleneck", "C3Ghost"]


@register(channels=scaled)
class DWConv(Conv):
    """Depthwise Conv: groups = gcd(c1, c2) (each input channel its own filters when c2 is a multiple of c1)."""

    def __init__(self, c1: int, c2: int, k=1, s=1, d: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


@register(channels=scaled)
class GhostConv(nn.Module):
    """cat(y, cv2(y)) with y = cv1(x): cv1 a k x k Conv to c2 // 2, cv2 a 5x5 depthwise Conv of y.

    (B, c1, H, W) -> (B, c2, H / s, W / s); c2 must be even (the two halves are equal).
    """

    def __init__(self, c1: int, c2: int, k=1, s=1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        if c2 < 2 or c2 % 2:
            raise UserError(f"GhostConv needs an even number of output channels >= 2, got c2={c2}")
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


@register(channels=scaled)
class GhostBottleneck(nn.Module):
    """GhostConv (pw) -> [depthwise k x k, stride 2, if s == 2] -> GhostConv (pw, linear), plus a shortcut.

    The shortcut is the identity for s == 1 (c1 must equal c2), else a depthwise k x k stride-2 Conv and a 1x1
    Conv (both linear). `conv` and `shortcut` are nn.Sequential as in YOLOv5, so parameter names match.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        if s not in (1, 2):
            raise UserError(f"GhostBottleneck takes stride 1 or 2, got s={s}")
        if s == 1 and c1 != c2:
            raise UserError(f"GhostBottleneck with stride 1 adds its input: c1 must equal c2, got {c1} and {c2}")
        c_ = c2 // 2
        self.conv = nn.Sequential(
            GhostConv(c1, c_, 1, 1),
            DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
            GhostConv(c_, c2, 1, 1, act=False),
        )
        self.shortcut = (nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False))
                         if s == 2 else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


@register(channels=scaled_repeated)
class C3Ghost(C3):
    """C3 with `m` = n GhostBottlenecks (c_, c_) in place of its n Bottlenecks, c_ = int(c2 * e).

    `shortcut` and `g` only shape the Bottlenecks that C3 builds and C3Ghost replaces (kept for YOLOv5's
    signature: GhostBottleneck always adds its input). Same channel rule as C3.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))
