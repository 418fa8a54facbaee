"""The classic attention modules, as comparators for the efficient attention plug-ins: what a channel or coordinate
attention costing about 1% of BRA buys at the same places of the neck. NCHW in, NCHW out, input channels first
(inserted by parse_model), any H and W >= 1; each returns `x` reweighted, so inside a `Residual` wrapper the model
starts as the baseline (gamma = 0).

* `SE`: Squeeze-and-Excitation (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, Fig. 2): global
  average pool, FC C -> C/r, ReLU, FC C/r -> C, sigmoid, channel scale. r = 16; the FC layers are 1x1
  convolutions with bias (the same numbers, and channels_last/ONNX friendly); at least 1 hidden channel.
* `ECA`: Efficient Channel Attention (Wang et al., "ECA-Net", CVPR 2020, Eq. 12-13): global average pool, a 1D
  convolution across channels without bias, kernel k = |(log2 C + b) / gamma| rounded to the odd number at or
  above (gamma 2, b 1: k = 5 for 128 and 256 channels), sigmoid, channel scale.
* `CBAM`: Convolutional Block Attention Module (Woo et al., ECCV 2018, Eq. 2-3): channel attention (a shared MLP
  C -> C/r -> C with ReLU on the average- and the max-pooled vector, summed, sigmoid) then spatial attention
  (a 7x7 convolution over [channel max, channel mean], sigmoid). r = 16. Deviation: the authors' code puts a
  BatchNorm after the 7x7 convolution; the paper's Eq. 3 (followed here) has none.
* `CoordAtt`: Coordinate Attention (Hou, Zhou, Feng, CVPR 2021, Sec. 3.2 and the authors' code): average pools
  along W (one vector per row) and along H (one per column), concatenated, 1x1 conv C -> mip (mip = max(8, C /
  32)) with BatchNorm and h-swish, split back, one 1x1 conv and sigmoid per direction, x * a_h * a_w.

The plain references, each written out from the paper's equations (explicit pooling sums, kernels as shifted
sums, BatchNorm by its formula), are in models/attention/reference/classic.py; tests/test_classic_attention.py
holds the modules to them (outputs, input and parameter gradients; odd and non-square maps).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from models.registry import inserts_dim, register

__all__ = ["SE", "ECA", "CBAM", "CoordAtt", "eca_kernel_size"]


def _hidden(dim: int, reduction: int) -> int:
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    return max(1, dim // reduction)


@register("SE", channels=inserts_dim)
class SE(nn.Module):
    """Squeeze-and-Excitation: x * sigmoid(W2 relu(W1 avgpool(x) + b1) + b2), one weight per channel."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        hidden = _hidden(dim, reduction)
        self.dim, self.reduction = dim, reduction
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


def eca_kernel_size(dim: int, gamma: float = 2, b: float = 1) -> int:
    """ECA-Net's adaptive kernel size: |(log2(dim) + b) / gamma| to the odd number at or above it."""
    t = int(abs((math.log2(dim) + b) / gamma))
    return t if t % 2 else t + 1


@register("ECA", channels=inserts_dim)
class ECA(nn.Module):
    """Efficient Channel Attention: x * sigmoid(conv1d_k(avgpool(x))), k from the channel count unless given."""

    def __init__(self, dim: int, k_size: int | None = None, gamma: float = 2, b: float = 1):
        super().__init__()
        k = eca_kernel_size(dim, gamma, b) if k_size is None else int(k_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA k_size must be odd and >= 1, got {k}")
        self.dim, self.k = dim, k
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3)).unsqueeze(1)  # (B, 1, C): the channels are the sequence the 1D kernel slides over
        a = torch.sigmoid(self.conv(s)).squeeze(1)
        return x * a[:, :, None, None]


@register("CBAM", channels=inserts_dim)
class CBAM(nn.Module):
    """CBAM: channel attention (shared MLP on the average- and max-pooled vectors) then spatial attention (a
    `kernel_size` convolution over the channel max and mean maps)."""

    def __init__(self, dim: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CBAM kernel_size must be odd and >= 1, got {kernel_size}")
        hidden = _hidden(dim, reduction)
        self.dim, self.reduction = dim, reduction
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, dim, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        x = x * ca
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


@register("CoordAtt", channels=inserts_dim)
class CoordAtt(nn.Module):
    """Coordinate attention: x * sigmoid(conv_h(f_h)) * sigmoid(conv_w(f_w)), where [f_h, f_w] = h_swish(BN(conv1(
    [mean over W, mean over H]))) split back into rows and columns."""

    def __init__(self, dim: int, reduction: int = 32):
        super().__init__()
        mip = max(8, _hidden(dim, reduction))
        self.dim, self.reduction = dim, reduction
        self.conv1 = nn.Conv2d(dim, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()  # h_swish(x) = x * relu6(x + 3) / 6
        self.conv_h = nn.Conv2d(mip, dim, 1)
        self.conv_w = nn.Conv2d(mip, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        x_h = x.mean(3, keepdim=True)  # (B, C, H, 1)
        x_w = x.mean(2, keepdim=True).transpose(2, 3)  # (B, C, W, 1)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], 2))))
        a_h = torch.sigmoid(self.conv_h(y[:, :, :h]))  # (B, C, H, 1)
        a_w = torch.sigmoid(self.conv_w(y[:, :, h:].transpose(2, 3)))  # (B, C, 1, W)
        return x * a_h * a_w
