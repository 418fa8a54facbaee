"""YOLOv5 building blocks (v6/v7 layout, so official weights load by name), the attention plug-ins and controls.

    from models.common import Conv, C3, SPPF, C3TR, BiLevelRoutingAttention
"""

from __future__ import annotations

import torch
import torch.nn as nn

from models.registry import LayerSpec, concat, inserts_dim, lookup, register, scaled, scaled_repeated
from utils.errors import UserError

__all__ = ["autopad", "Conv", "Bottleneck", "C3", "SPPF", "Concat", "Residual"]


def autopad(k: int | tuple, p: int | None = None, d: int = 1):
    """'same' padding for kernel k and dilation d."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


@register(channels=scaled)
class Conv(nn.Module):
    """Conv2d (no bias) + BatchNorm2d + SiLU. After `fuse()` the BN is folded into the convolution."""

    default_act = nn.SiLU()  # one shared instance, as in YOLOv5 (so layer counts match its summary)

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g: int = 1, d: int = 1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


@register(channels=scaled)
class Bottleneck(nn.Module):
    """1x1 then 3x3 Conv, with a residual when the widths match and `shortcut` is on."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


@register(channels=scaled_repeated)
class C3(nn.Module):
    """CSP bottleneck with three convolutions: cv3(cat(m(cv1(x)), cv2(x)))."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


@register(channels=scaled)
class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools, equal to SPP(k=(5, 9, 13)) for k=5."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


@register(channels=concat)
class Concat(nn.Module):
    """Concatenate a list of tensors along `dimension` (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


def _residual_channels(spec: LayerSpec):
    """Residual(c, name, *args): the wrapped block must be a channel-preserving plug-in (rule inserts_dim)."""
    if not spec.args or not isinstance(spec.args[0], str):
        raise UserError(f"Residual needs the name of the block it wraps as its first argument, got {spec.args}")
    if lookup(spec.args[0]).channels is not inserts_dim:
        raise UserError(f"Residual can wrap channel-preserving plug-ins only (input channels first), "
                         f"not {spec.args[0]!r}")
    return inserts_dim(spec)


@register(channels=_residual_channels)
class Residual(nn.Module):
    """x + gamma * block(x), gamma per channel and zero at the start: a plug-in that starts as the identity.

    YAML: `[-1, 1, Residual, [BiLevelRoutingAttention, 7, 8]]` wraps BiLevelRoutingAttention(c, 7, 8).
    Inserted into a pretrained network, the wrapped block first leaves every pretrained feature as it was
    (gamma = 0; the block still gets gradients through gamma once gamma moves), so fine-tuning starts from the
    pretrained model's own output instead of from features scrambled by a randomly initialised layer. This is
    the residual-with-layer-scale form attention takes inside transformer blocks (BiFormer, CaiT's LayerScale).
    """

    def __init__(self, c: int, block: str, *args):
        super().__init__()
        self.m = lookup(block).cls(c, *args)
        self.gamma = nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma.view(1, -1, 1, 1).to(x.dtype) * self.m(x)


# Attention plug-ins and the two controls of the comparison (C3TR, YOLOv5's own attention; ConvControl, BRA's
# capacity without attention), re-exported so YOLOv5-style code can import them from models.common.
from models.attention import *  # noqa: E402,F401,F403
from models.control import ConvControl  # noqa: E402,F401
from models.transformer import C3TR, TransformerBlock, TransformerLayer  # noqa: E402,F401
