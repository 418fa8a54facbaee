"""Slide attention (Slide-Transformer, CVPR 2023) as an NCHW plug-in.

Each query attends to the k x k neighbourhood around it. The neighbourhood's keys and values are gathered by a
depthwise convolution with fixed one-hot kernels (one output channel per offset: the "shift as depthwise
convolution" view of Im2Col) plus a parallel learnable depthwise convolution (the "deformed shifting" module).
`fuse()` folds both into a single convolution for inference.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import inserts_dim, register
from utils.errors import UserError

__all__ = ["SlideAttention", "shift_kernels"]


def shift_kernels(channels: int, k: int) -> torch.Tensor:
    """One-hot depthwise kernels (channels * k * k, 1, k, k) for `groups=channels`.

    Output channel c * k*k + i copies input channel c from offset (i // k - k // 2, i % k - k // 2), the row-major
    order of `F.unfold`.
    """
    eye = torch.eye(k * k).reshape(k * k, 1, k, k)
    return eye.repeat(channels, 1, 1, 1)


@register("SlideAttention", channels=inserts_dim)
class SlideAttention(nn.Module):
    """Local k x k neighbourhood attention: (B, dim, H, W) in, (B, dim, H, W) out, any H and W >= 1.

    Args:
        dim: input (= output) channels.
        num_heads: attention heads; `dim // dim_reduction` must be divisible by it.
        kernel_size: neighbourhood size k, odd (the query sits at the centre).
        qkv_bias: bias in the 1x1 q/k/v projection.
        qk_scale: logit scale; None means head_dim ** -0.5.
        attn_drop: dropout on the attention weights; proj_drop: dropout after the output projection.
        mask_border: see "Borders".
        dim_reduction: attention runs in dim // dim_reduction channels (the official code's option; its
            default is 4, here 1).

    Borders: keys and values are gathered with zero padding, so a neighbour outside the image is a zero key
    and a zero value. By default it still takes softmax weight (its logit is just its position bias); the
    official code pads with zeros the same way. With `mask_border=True` the offsets that fall outside the image
    get no weight; this is decided by geometry alone, so once the learnable path is non-zero a masked slot's
    (partly in-image) mixture is dropped too. The centre offset is always inside, so no query is left without keys.

    Parameters: qkv and proj (1x1 convolutions), `deform.weight` (the learnable shift path, shape
    (head_dim * k*k, 1, k, k), shared by all heads and by keys and values as in the official default) and
    `relative_position_bias_table` (num_heads, k*k). The one-hot kernels are a non-persistent buffer.

    Deviations from the paper and the official code:
      * The learnable path starts at zero (the paper initialises it randomly), so a fresh module is exact
        neighbourhood attention; training moves it away from there.
      * The shift convolutions have no bias (the official ones do).
      * The relative position bias is added to the logits, one scalar per head and offset; the official code
        adds it to every channel of the shifted keys, which makes it a query-dependent bias.
      * 1x1 convolutions instead of linear layers over NHWC (the same arithmetic, no permutes).
      * `fuse()` (re-parameterisation, described in the paper but not released) is implemented. Before it,
        the forward already runs one convolution with the summed kernels (same result, half the work).

    Cost: torch's FLOP counter sees the 1x1 projections and the shift convolution (counted densely, one-hot
    zeros included), not the two elementwise contractions (4 * B * attn_dim * k*k * H * W FLOPs, a few
    per cent of the block).
    """

    def __init__(self, dim: int, num_heads: int = 8, kernel_size: int = 3, qkv_bias: bool = True,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 mask_border: bool = False, dim_reduction: int = 1):
        super().__init__()
        _check_args(dim, num_heads, kernel_size, dim_reduction)
        self.dim, self.num_heads, self.k = dim, num_heads, kernel_size
        self.attn_dim = dim // dim_reduction
        self.head_dim = self.attn_dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.mask_border = mask_border
        self.fused = False
        k2, hd = kernel_size * kernel_size, self.head_dim
        self.qkv = nn.Conv2d(dim, 3 * self.attn_dim, 1, bias=qkv_bias)
        self.register_buffer("shift_weight", shift_kernels(hd, kernel_size), persistent=False)
        self.deform = nn.Conv2d(hd, hd * k2, kernel_size, padding=kernel_size // 2, groups=hd, bias=False)
        nn.init.zeros_(self.deform.weight)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, k2))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(self.attn_dim, dim, 1)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, kernel_size={self.k}, "
                f"mask_border={self.mask_border}, fused={self.fused}")

    def shift(self, t: torch.Tensor) -> torch.Tensor:
        """Gather neighbourhoods: t (N, head_dim, H, W) -> (N, head_dim * k*k, H, W), channel c*k*k + offset.

        The fixed and the learnable path are convolutions of the same input with the same zero padding, so
        their sum is computed as one convolution with the summed kernels; gradients reach `deform.weight`
        unchanged. (Two convolutions and an add give the same numbers at twice the cost.)
        """
        if self.fused:
            weight = self.fused_shift.weight
        else:
            weight = self.shift_weight.to(self.deform.weight.dtype) + self.deform.weight
        return F.conv2d(t, weight.to(t.dtype), padding=self.k // 2, groups=self.head_dim)

    @torch.no_grad()
    def fuse(self) -> "SlideAttention":
        """Fold the fixed one-hot path and the learnable one into a single depthwise conv; same output. In place.

        Both paths are zero-padded convolutions of the same input, so their sum is one convolution with the
        summed kernels. The result replaces `deform` as `fused_shift` (no gradients), so a fused state dict
        cannot be loaded into an unfused module by mistake.
        """
        if not self.fused:
            conv = self.deform
            conv.weight.add_(self.shift_weight.to(conv.weight.dtype))
            conv.weight.requires_grad_(False)
            del self.deform
            self.fused_shift = conv
            self.fused = True
        return self

    def border_mask(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Bool (k*k, H*W): True where the offset's neighbour lies inside the image."""
        ones = torch.ones(1, 1, h, w, device=device)
        inside = F.conv2d(ones, shift_kernels(1, self.k).to(device), padding=self.k // 2)
        return inside.reshape(self.k * self.k, h * w) > 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise UserError(f"SlideAttention(dim={self.dim}) expects (B, {self.dim}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        nh, hd, k2, n = self.num_heads, self.head_dim, self.k * self.k, h * w
        qkv = self.qkv(x).reshape(b, 3, nh * hd, h, w)  # rank 5 at most: CoreML's limit
        q = (qkv[:, 0] * self.scale).reshape(b, nh, hd, n)
        # keys and values (B, nh, hd, k*k, HW) are gathered apart: one call for both would make backward hold
        # the gradient of both k*k-fold tensors at once
        keys = self.shift(qkv[:, 1].reshape(b * nh, hd, h, w)).reshape(b, nh, hd, k2, n)
        values = self.shift(qkv[:, 2].reshape(b * nh, hd, h, w)).reshape(b, nh, hd, k2, n)
        # the two contractions are elementwise products summed over one axis: on CPU several times faster
        # than einsum (whose batched matrices are 1 x head_dim), but not seen by torch's FLOP counter
        logits = (q.unsqueeze(3) * keys).sum(2)  # (B, nh, k*k, HW)
        logits = logits + self.relative_position_bias_table.to(logits.dtype)[None, :, :, None]
        if self.mask_border:
            logits = logits.masked_fill(~self.border_mask(h, w, x.device), float("-inf"))
        attn = self.attn_drop(logits.softmax(dim=2))
        out = (attn.unsqueeze(2) * values).sum(3).reshape(b, self.attn_dim, h, w)
        return self.proj_drop(self.proj(out))


def _check_args(dim: int, num_heads: int, kernel_size: int, dim_reduction: int) -> None:
    if dim_reduction < 1 or dim % dim_reduction:
        raise UserError(f"SlideAttention: dim={dim} must be divisible by dim_reduction={dim_reduction} (>= 1)")
    if num_heads < 1 or (dim // dim_reduction) % num_heads:
        raise UserError(f"SlideAttention: dim // dim_reduction = {dim // dim_reduction} must be divisible by "
                         f"num_heads={num_heads}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UserError(f"SlideAttention: kernel_size={kernel_size} must be odd and >= 1 (e.g. 3, 5, 7)")
