"""A plain HiLo attention that computes the way the LITv2 reference code does, for the benchmark.

Steps (Pan et al., "Fast Vision Transformers with HiLo Attention", Sec. 3.2), on tokens of a square map that
`window_size` divides (the reference's own assumptions):
  * Hi-Fi heads: split the map into ws x ws windows, q k v per window, explicit softmax(q k^T * scale) v,
    windows back to the map, `h_proj`;
  * Lo-Fi heads: q from every pixel, k v from the ws x ws average-pooled map, explicit softmax, `l_proj`;
  * concatenate Hi-Fi then Lo-Fi on channels.

It is the yardstick for `models/attention/hilo.py` in `benchmarks/bench_attention.py`: the same parameter names
(`h_qkv`, `h_proj`, `l_q`, `l_kv`, `l_proj`), so `load_state_dict(hilo.state_dict())` gives the same numbers.
Unlike the fast module it materialises every (query, key) logit and its softmax, and it has no padding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NaiveHiLo"]


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1) @ v


class NaiveHiLo(nn.Module):
    """Same constructor as HiLo (dropout left out); (B, dim, H, W) in and out, H = W, window_size | H."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 window_size: int = 2, alpha: float = 0.5):
        super().__init__()
        self.hd, self.ws = dim // num_heads, window_size
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * self.hd, self.h_heads * self.hd
        self.scale = qk_scale or self.hd**-0.5
        if self.l_heads:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) -> (B, H, W, h_dim): attention inside each ws x ws window."""
        b, h, w, c = x.shape
        ws, hg, wg = self.ws, h // self.ws, w // self.ws
        win = x.reshape(b, hg, ws, wg, ws, c).transpose(2, 3)  # (B, hg, wg, ws, ws, C)
        qkv = self.h_qkv(win).reshape(b, hg * wg, ws * ws, 3, self.h_heads, self.hd)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # (B, windows, heads, ws*ws, hd) each
        o = _explicit_attention(q, k, v, self.scale).transpose(2, 3)  # (B, windows, ws*ws, heads, hd)
        o = o.reshape(b, hg, wg, ws, ws, self.h_dim).transpose(2, 3).reshape(b, h, w, self.h_dim)
        return self.h_proj(o)

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) -> (B, H, W, l_dim): every pixel attends to the pooled map."""
        b, h, w, c = x.shape
        q = self.l_q(x).reshape(b, h * w, self.l_heads, self.hd).transpose(1, 2)  # (B, heads, HW, hd)
        src = x
        if self.ws > 1:
            src = F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
        k, v = self.l_kv(src).reshape(b, -1, 2, self.l_heads, self.hd).permute(2, 0, 3, 1, 4)  # (B, heads, M, hd)
        o = _explicit_attention(q, k, v, self.scale).transpose(1, 2).reshape(b, h, w, self.l_dim)
        return self.l_proj(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h != w or h % self.ws:
            raise ValueError(f"NaiveHiLo needs a square map that window_size={self.ws} divides, got {h}x{w}")
        xl = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        outs = ([self.hifi(xl)] if self.h_heads else []) + ([self.lofi(xl)] if self.l_heads else [])
        return torch.cat(outs, dim=-1).permute(0, 3, 1, 2).contiguous()
