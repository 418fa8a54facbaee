"""The naive reference for Slide attention (`models/attention/slide.py`), for the tests and the benchmark.

`NaiveSlide` gathers every k x k neighbourhood with `F.unfold`, and each query attends to the k x k keys around it
(zero padding outside the image: a zero key and a zero value whose logit is the position bias alone, as in the
fast module with `mask_border=False`):
  q k v = 1x1 convolutions; keys and values unfolded to (B, heads, head_dim, k*k, H*W);
  logits = sum over head_dim of q * key * scale + relative_position_bias_table; softmax over the k*k offsets
  (with `mask_border=True`, offsets outside the image get -inf, from an explicit dense (k*k, H*W) mask);
  out = sum over the offsets of weight * value; output 1x1 convolution.
The learnable "deformed shifting" path is applied as what it is, a linear mix of each neighbourhood
(slot i += sum_j deform[c * k*k + i, j] * neighbour j).

It has the same parameter names as the fast module (`qkv`, `proj`, `deform.weight`, `relative_position_bias_table`),
so `load_state_dict(slide.state_dict())` gives the same numbers (not after `fuse()`). Unlike the fast module,
`unfold` copies every neighbourhood out (k*k copies of k and v).

`skip_zero_deform=True` skips the mix while its weights are all zero (a fresh module): the same outputs and input
gradients, but no gradient for `deform.weight`. `benchmarks/bench_attention.py` times it that way as
`slide-naive` (the tables in benchmarks/README.md were measured so); tests/test_slide.py checks the fast module
against the full computation (outputs, input and parameter gradients).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NaiveSlide"]


class NaiveSlide(nn.Module):
    """Same constructor as SlideAttention (dropout left out); (B, dim, H, W) in and out."""

    def __init__(self, dim: int, num_heads: int = 8, kernel_size: int = 3, qkv_bias: bool = True,
                 qk_scale: float | None = None, mask_border: bool = False, dim_reduction: int = 1,
                 skip_zero_deform: bool = False):
        super().__init__()
        self.num_heads, self.k = num_heads, kernel_size
        self.attn_dim = dim // dim_reduction
        self.head_dim = self.attn_dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.mask_border, self.skip_zero_deform = mask_border, skip_zero_deform
        k2, hd = kernel_size * kernel_size, self.head_dim
        self.qkv = nn.Conv2d(dim, 3 * self.attn_dim, 1, bias=qkv_bias)
        self.deform = nn.Conv2d(hd, hd * k2, kernel_size, padding=kernel_size // 2, groups=hd, bias=False)
        nn.init.zeros_(self.deform.weight)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_heads, k2))
        self.proj = nn.Conv2d(self.attn_dim, dim, 1)

    def neighbours(self, t: torch.Tensor) -> torch.Tensor:
        """t (B, heads, hd, H, W) -> (B, heads, hd, k*k, H*W), offsets in row-major order."""
        b, nh, hd, h, w = t.shape
        k2 = self.k * self.k
        cols = F.unfold(t.reshape(b * nh, hd, h, w), self.k, padding=self.k // 2).reshape(b, nh, hd, k2, h * w)
        if self.skip_zero_deform and not self.deform.weight.any():
            return cols
        mix = self.deform.weight.reshape(hd, k2, k2)  # [channel, slot i, neighbour j]
        return cols + torch.einsum("cij,bhcjn->bhcin", mix, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        nh, hd = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, 3, nh, hd, h, w).unbind(1)  # (B, heads, hd, H, W) each
        keys, values = self.neighbours(k), self.neighbours(v)  # (B, heads, hd, k*k, HW)
        logits = (q.reshape(b, nh, hd, 1, h * w) * self.scale * keys).sum(2)  # (B, heads, k*k, HW)
        logits = logits + self.relative_position_bias_table[None, :, :, None]
        if self.mask_border:  # offset j of pixel n lies inside the image where an unfolded map of ones is 1
            inside = F.unfold(torch.ones(1, 1, h, w, device=x.device), self.k, padding=self.k // 2)[0] > 0
            logits = logits.masked_fill(~inside, float("-inf"))  # (k*k, HW) mask, broadcast
        attn = logits.softmax(dim=2)
        out = (attn.unsqueeze(2) * values).sum(3)  # (B, heads, hd, HW)
        return self.proj(out.reshape(b, self.attn_dim, h, w))
