"""The naive references for HiLo attention (`models/attention/hilo.py`), for the tests and the benchmark.

`NaiveHiLo` computes the way the LITv2 reference code does (Pan et al., "Fast Vision Transformers with HiLo
Attention", Sec. 3.2), on a square map that `window_size` divides (the reference's own assumptions):
  * Hi-Fi heads: split the map into ws x ws windows, q k v per window, explicit softmax(q k^T * scale) v,
    windows back to the map, `h_proj`;
  * Lo-Fi heads: q from every pixel, k v from the ws x ws average-pooled map, explicit softmax, `l_proj`;
  * concatenate Hi-Fi then Lo-Fi on channels.
It has the same parameter names (`h_qkv`, `h_proj`, `l_q`, `l_kv`, `l_proj`), so `load_state_dict(hilo.state_dict())`
gives the same numbers. Unlike the fast module it materialises every (query, key) logit and its softmax, and it
has no padding.

`masked_hilo(m, x)` is the padding-free reference for any H x W, reading module `m`'s own parameters: Hi-Fi is
full attention over all H*W tokens with an explicit dense mask that keeps same-window pairs only, Lo-Fi's keys are
the windows averaged over their real pixels by an explicit loop. It is what the fast module promises where
`window_size` does not divide the map.

tests/test_hilo.py checks the fast module against both (outputs, input and parameter gradients, square and odd
non-square maps); `benchmarks/bench_attention.py` times `NaiveHiLo` as `hilo-naive`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NaiveHiLo", "masked_hilo"]


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                        allowed: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v written out; `allowed` (Lq, Lk) bool keeps only the True pairs."""
    logits = (q @ k.transpose(-2, -1)) * scale
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return logits.softmax(dim=-1) @ v


class NaiveHiLo(nn.Module):
    """Same constructor as HiLo (dropout left out); (B, dim, H, W) in and out, H = W, window_size | H."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 window_size: int = 2, alpha: float = 0.5):
        super().__init__()
        self.head_dim, self.ws = dim // num_heads, window_size
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.l_dim, self.h_dim = self.l_heads * self.head_dim, self.h_heads * self.head_dim
        self.scale = qk_scale or self.head_dim**-0.5
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
        ws, hg, wg, hd = self.ws, h // self.ws, w // self.ws, self.head_dim
        win = x.reshape(b, hg, ws, wg, ws, c).transpose(2, 3)  # (B, hg, wg, ws, ws, C)
        qkv = self.h_qkv(win).reshape(b, hg * wg, ws * ws, 3, self.h_heads, hd)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5)  # (B, windows, heads, ws*ws, hd) each
        o = _explicit_attention(q, k, v, self.scale).transpose(2, 3)  # (B, windows, ws*ws, heads, hd)
        o = o.reshape(b, hg, wg, ws, ws, self.h_dim).transpose(2, 3).reshape(b, h, w, self.h_dim)
        return self.h_proj(o)

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) -> (B, H, W, l_dim): every pixel attends to the pooled map."""
        b, h, w, c = x.shape
        hd = self.head_dim
        q = self.l_q(x).reshape(b, h * w, self.l_heads, hd).transpose(1, 2)  # (B, heads, HW, hd)
        src = x
        if self.ws > 1:
            src = F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
        k, v = self.l_kv(src).reshape(b, -1, 2, self.l_heads, hd).permute(2, 0, 3, 1, 4)  # (B, heads, M, hd)
        o = _explicit_attention(q, k, v, self.scale).transpose(1, 2).reshape(b, h, w, self.l_dim)
        return self.l_proj(o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h != w or h % self.ws:
            raise ValueError(f"NaiveHiLo needs a square map that window_size={self.ws} divides, got {h}x{w}")
        xl = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        outs = ([self.hifi(xl)] if self.h_heads else []) + ([self.lofi(xl)] if self.l_heads else [])
        return torch.cat(outs, dim=-1).permute(0, 3, 1, 2).contiguous()


# ---- padding-free reference for any size, with a dense mask and a loop ------------------------------------
def _pooled_by_loop(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, M, C): the mean of the real pixels of every ws x ws window, row-major."""
    h, w = x.shape[-2:]
    tokens = [x[:, :, i:i + ws, j:j + ws].mean(dim=(2, 3)) for i in range(0, h, ws) for j in range(0, w, ws)]
    return torch.stack(tokens, dim=1)


def masked_hilo(m, x: torch.Tensor) -> torch.Tensor:
    """HiLo of module `m`'s weights (a HiLo or a NaiveHiLo) on any x (B, C, H, W), without padding: Hi-Fi as full
    attention masked to same-window pairs, Lo-Fi keys from windows averaged over their real pixels by a loop."""
    b, c, h, w = x.shape
    n, hd, ws = h * w, m.head_dim, m.ws
    xt = x.permute(0, 2, 3, 1).reshape(b, n, c)
    outs = []
    if m.h_heads:
        rows, cols = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
        window = (rows // ws) * (w + ws) + cols // ws
        same = window[:, None] == window[None, :]
        qkv = m.h_qkv(xt).reshape(b, n, 3, m.h_heads, hd).permute(2, 0, 3, 1, 4)
        o = _explicit_attention(qkv[0], qkv[1], qkv[2], m.scale, same)
        outs.append(m.h_proj(o.transpose(1, 2).reshape(b, n, m.h_dim)))
    if m.l_heads:
        q = m.l_q(xt).reshape(b, n, m.l_heads, hd).transpose(1, 2)
        kv = m.l_kv(_pooled_by_loop(x, ws)).reshape(b, -1, 2, m.l_heads, hd).permute(2, 0, 3, 1, 4)
        o = _explicit_attention(q, kv[0], kv[1], m.scale)
        outs.append(m.l_proj(o.transpose(1, 2).reshape(b, n, m.l_dim)))
    return torch.cat(outs, dim=-1).reshape(b, h, w, c).permute(0, 3, 1, 2)
