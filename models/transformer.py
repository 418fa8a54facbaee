"""YOLOv5's own attention: C3TR, a C3 whose bottleneck stack is a small transformer over the pixels.

Layout, parameter names and shapes are official YOLOv5's (models/common.py of ultralytics/yolov5 v6/v7), so
`yolov5s_transformer.yaml` has YOLOv5s-transformer's 7,235,645 parameters and a C3TR takes a C3's cv1, cv2 and
cv3 unchanged (utils/transfer.py pairs the two types).

    [-1, 3, C3TR, [1024]]  # in a YAML: C3TR(c1, c2, n) with n TransformerLayers of 4 heads inside
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.blocks import C3, Conv
from models.registry import register, scaled_repeated
from utils.errors import UserError

__all__ = ["TransformerLayer", "TransformerBlock", "C3TR"]


class TransformerLayer(nn.Module):
    """One ViT layer without LayerNorm (as YOLOv5 writes it): tokens (L, B, c) in, (L, B, c) out.

        x = ma(q(x), k(x), v(x)) + x
        x = fc2(fc1(x)) + x

    q, k, v, fc1 and fc2 are bias-free c x c Linears; `ma` is nn.MultiheadAttention(c, num_heads), sequence
    first, with its own input and output projections (so q/k/v are each projected twice, as in YOLOv5). There
    is no activation between fc1 and fc2: YOLOv5's MLP is linear.
    """

    def __init__(self, c: int, num_heads: int):
        super().__init__()
        if c < 1 or num_heads < 1 or c % num_heads:
            raise UserError(f"TransformerLayer needs channels divisible by num_heads, got c={c}, "
                             f"num_heads={num_heads}")
        self.q = nn.Linear(c, c, bias=False)
        self.k = nn.Linear(c, c, bias=False)
        self.v = nn.Linear(c, c, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=c, num_heads=num_heads)
        self.fc1 = nn.Linear(c, c, bias=False)
        self.fc2 = nn.Linear(c, c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # need_weights=False lets nn.MultiheadAttention use scaled_dot_product_attention; the output is the same
        x = self.ma(self.q(x), self.k(x), self.v(x), need_weights=False)[0] + x
        return self.fc2(self.fc1(x)) + x


class TransformerBlock(nn.Module):
    """Conv (only when c1 != c2), a learnable position term, then `num_layers` TransformerLayers.

    x (Tensor[B, c1, H, W]) -> Tensor[B, c2, H, W], any H and W. The H*W pixels become tokens p (H*W, B, c2);
    the position term is `linear(p)`, a c2 x c2 Linear of the tokens themselves (YOLOv5's "learnable position
    embedding"; it carries no coordinates, so the block sees the pixels as an unordered set).
    """

    def __init__(self, c1: int, c2: int, num_heads: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise UserError(f"TransformerBlock needs num_layers >= 1, got {num_layers}")
        self.conv = Conv(c1, c2) if c1 != c2 else None
        self.linear = nn.Linear(c2, c2)
        self.tr = nn.Sequential(*(TransformerLayer(c2, num_heads) for _ in range(num_layers)))
        self.c2 = c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        b, _, h, w = x.shape
        p = x.flatten(2).permute(2, 0, 1)  # (H*W, B, c2)
        return self.tr(p + self.linear(p)).permute(1, 2, 0).reshape(b, self.c2, h, w)


@register(channels=scaled_repeated)
class C3TR(C3):
    """C3 with `m` = TransformerBlock(c_, c_, 4 heads, n layers) in place of n Bottlenecks, c_ = int(c2 * e).

    (B, c1, H, W) -> (B, c2, H, W); c_ must be divisible by 4. `shortcut` and `g` only shape the Bottlenecks
    that C3 builds and C3TR replaces (kept for YOLOv5's signature). Same channel rule as C3.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = TransformerBlock(c_, c_, 4, n)
