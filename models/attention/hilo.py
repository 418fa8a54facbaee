"""HiLo attention (LITv2, "Fast Vision Transformers with HiLo Attention", arXiv:2205.13213) as an NCHW plug-in.

The heads are split in two groups. Hi-Fi heads attend inside non-overlapping `window_size` x `window_size`
windows (high frequencies); Lo-Fi heads let every pixel attend to the window-averaged map (low frequencies).
The two outputs are concatenated on channels, Hi-Fi first, as in the reference code.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import inserts_dim, register
from models.tracing import shapes_in_graph
from utils.errors import UserError

__all__ = ["HiLo", "masked_avg_pool"]


def masked_avg_pool(x: torch.Tensor, ws: int) -> torch.Tensor:
    """Average over `ws` x `ws` windows of real pixels only.

    x (Tensor[B, C, H, W]) -> Tensor[B, C, ceil(H / ws), ceil(W / ws)]. Where `ws` does not divide H or W the map
    is zero-padded at the bottom/right and each window's sum is divided by its count of real pixels, so the
    padding never dilutes an average.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % ws, (-w) % ws
    if not (ph or pw or shapes_in_graph()):  # a traced graph keeps the padding for every size
        return F.avg_pool2d(x, ws)
    x = F.pad(x, (0, pw, 0, ph))
    count = F.avg_pool2d(F.pad(x.new_ones(1, 1, h, w), (0, pw, 0, ph)), ws)  # real pixels / ws^2
    return F.avg_pool2d(x, ws) / count


def _window_key_mask(h: int, w: int, ws: int, batch: int, device: torch.device) -> torch.Tensor:
    """Bool mask (B * windows, 1, 1, ws * ws): True for keys that are real pixels, False for padding."""
    hp, wp = h + (-h) % ws, w + (-w) % ws
    rows = torch.arange(hp, device=device) < h  # comparisons, not slice assignment: traceable at any size
    cols = torch.arange(wp, device=device) < w
    real = (rows.view(-1, 1) & cols.view(1, -1)).reshape(hp // ws, ws, wp // ws, ws)
    real = real.transpose(1, 2).reshape(1, -1, ws * ws)  # (1, windows, ws*ws)
    return real.expand(batch, -1, -1).reshape(-1, 1, 1, ws * ws)


@register("HiLo", channels=inserts_dim)
class HiLo(nn.Module):
    """HiLo attention on a feature map: (B, dim, H, W) in, (B, dim, H, W) out, any H and W >= 1.

    Args:
        dim: input (= output) channels; must be divisible by `num_heads`.
        num_heads: heads in total; `int(num_heads * alpha)` of them go to Lo-Fi, the rest to Hi-Fi.
        qkv_bias: bias in the q/k/v projections.
        qk_scale: logit scale; None (or 0, as in the reference) means head_dim ** -0.5.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout on the concatenated output.
        window_size: Hi-Fi window and Lo-Fi pooling size `s`. 1 gives plain multi-head self-attention: all
            heads go to Lo-Fi with no pooling, whatever `alpha` is (the reference does the same).
        alpha: share of heads in Lo-Fi, in [0, 1]. A branch with no heads is not built.

    The head split mirrors the reference arithmetic exactly: head_dim = dim // num_heads,
    l_heads = int(num_heads * alpha), l_dim = l_heads * head_dim, h_heads = num_heads - l_heads,
    h_dim = h_heads * head_dim. Parameter names are the reference's (l_q, l_kv, l_proj, h_qkv, h_proj), so
    a reference state dict loads unchanged.

    Deviations from the reference code (which takes (B, N, C) tokens with H = W = sqrt(N)):
      * NCHW in and out; any H and W. Where `window_size` does not divide them, the map is zero-padded at the
        bottom/right (as LITv2 does for detection), but: Hi-Fi masks the padded keys out of every window (a
        window always holds at least one real pixel) and padded queries are cropped before `h_proj`; Lo-Fi
        averages only real pixels into each pooled token (see `masked_avg_pool`), so no zero token is a key.
        On maps that `window_size` divides, the result equals the reference.
      * Attention runs through `F.scaled_dot_product_attention`.
      * The reference accepts `attn_drop` and `proj_drop` but never applies them; here they are applied.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, window_size: int = 2, alpha: float = 0.5):
        super().__init__()
        _check_args(dim, num_heads, window_size, alpha)
        head_dim = dim // num_heads
        self.dim, self.head_dim, self.ws = dim, head_dim, window_size
        self.l_heads = int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        if window_size == 1:  # plain MHSA: everything in Lo-Fi, no pooling
            self.l_heads, self.h_heads = num_heads, 0
        self.l_dim, self.h_dim = self.l_heads * head_dim, self.h_heads * head_dim
        self.scale = qk_scale or head_dim**-0.5
        self.attn_drop = float(attn_drop)
        if self.l_heads > 0:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, self.l_dim * 2, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = nn.Linear(dim, self.h_dim * 3, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, h_heads={self.h_heads}, l_heads={self.l_heads}, window_size={self.ws}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise UserError(f"HiLo(dim={self.dim}) expects (B, {self.dim}, H, W), got {tuple(x.shape)}")
        xl = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        outs = []
        if self.h_heads > 0:
            outs.append(self.hifi(xl))
        if self.l_heads > 0:
            outs.append(self.lofi(x, xl))
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (B, H, W, h_dim + l_dim)
        return self.proj_drop(y).permute(0, 3, 1, 2).contiguous()

    def _sdpa(self, q, k, v, mask=None):
        p = self.attn_drop if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=self.scale)

    def hifi(self, xl: torch.Tensor) -> torch.Tensor:
        """Window attention of the Hi-Fi heads. xl (B, H, W, C) -> (B, H, W, h_dim)."""
        b, h, w, c = xl.shape
        ws, nh, hd = self.ws, self.h_heads, self.head_dim
        ph, pw = (-h) % ws, (-w) % ws
        padded = bool(ph or pw) or shapes_in_graph()  # a traced graph pads (maybe by 0) at every size
        if padded:
            xl = F.pad(xl, (0, 0, 0, pw, 0, ph))
        hg, wg = (h + ph) // ws, (w + pw) // ws
        win = xl.reshape(b * hg, ws, wg, ws, c).transpose(1, 2).reshape(b * hg * wg, ws * ws, c)  # rank <= 5
        # q, k, v each (B*win, nh, ws*ws, hd): sliced off h_qkv's last dimension and reshaped one by one. (A 5-D
        # permute of the stacked qkv indexed afterwards computes the same, but OpenVINO's CPU plugin miscomputes
        # that graph in a fixed-size export with 4 heads: a relative error of ~1 in this branch.)
        q, k, v = (t.reshape(-1, ws * ws, nh, hd).transpose(1, 2) for t in self.h_qkv(win).chunk(3, dim=-1))
        mask = _window_key_mask(h, w, ws, b, xl.device) if padded else None
        o = self._sdpa(q, k, v, mask)  # (B*win, nh, ws*ws, hd)
        o = o.transpose(1, 2).reshape(b * hg, wg, ws, ws, self.h_dim).transpose(1, 2)
        o = o.reshape(b, hg * ws, wg * ws, self.h_dim)
        return self.h_proj(o[:, :h, :w] if padded else o)

    def lofi(self, x: torch.Tensor, xl: torch.Tensor) -> torch.Tensor:
        """Every pixel attends to the pooled map. x (B, C, H, W) and its NHWC view xl -> (B, H, W, l_dim)."""
        b, h, w, _ = xl.shape
        nh, hd = self.l_heads, self.head_dim
        q = self.l_q(xl).reshape(b, h * w, nh, hd).transpose(1, 2)  # (B, nh, HW, hd)
        src = masked_avg_pool(x, self.ws) if self.ws > 1 else x
        src = src.flatten(2).transpose(1, 2)  # (B, h'w', C)
        k, v = (t.reshape(b, -1, nh, hd).transpose(1, 2) for t in self.l_kv(src).chunk(2, dim=-1))  # (B, nh, h'w', hd)
        o = self._sdpa(q, k, v)  # (B, nh, HW, hd)
        return self.l_proj(o.transpose(1, 2).reshape(b, h, w, self.l_dim))


def _check_args(dim: int, num_heads: int, window_size: int, alpha: float) -> None:
    if num_heads < 1 or dim % num_heads:
        raise UserError(f"HiLo: dim={dim} must be divisible by num_heads={num_heads} (num_heads >= 1)")
    if window_size < 1:
        raise UserError(f"HiLo: window_size={window_size} must be >= 1")
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"HiLo: alpha={alpha} must be in [0, 1] (the share of heads in Lo-Fi)")
