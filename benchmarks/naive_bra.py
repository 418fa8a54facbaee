"""A plain Bi-Level Routing Attention that computes the way the original BiFormer code does.

It follows the paper's steps literally (Zhu et al., "BiFormer", CVPR 2023, Sec. 3.2):
  1. zero-pad the map at the bottom/right to a multiple of `n_win`, split it into n_win x n_win regions;
  2. linear q, k, v for every token;
  3. region-level query and key = mean over each region's tokens; affinity A = (Q_r * scale) K_r^T;
  4. keep the top-k regions of each row of A (softmax over the kept logits gives the routing weights);
  5. gather the (optionally pooled) keys/values of those regions by expanding the whole key/value tensor to
     one copy per query region and `torch.gather`-ing from it (memory-hungry, like the original code);
  6. token-to-token multi-head attention with an explicit softmax, plus LePE (a depthwise conv on V),
     then the output projection, then the crop back to the input size.

It is the yardstick for the fast module in `models/attention/bra.py`: the tests compare the two option by
option, and `benchmarks/bench_attention.py` times both. Parameter names match the original code's, so
state dicts move between the two with `strict=True`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NaiveBRA"]


class _QKV(nn.Module):
    def __init__(self, dim: int, qk_dim: int):
        super().__init__()
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)


class _Router(nn.Module):
    def __init__(self, qk_dim: int, param_routing: bool):
        super().__init__()
        self.emb = nn.Linear(qk_dim, qk_dim) if param_routing else nn.Identity()


class NaiveBRA(nn.Module):
    """Same constructor as the original BiLevelRoutingAttention; NCHW in and out."""

    def __init__(self, dim, n_win=7, num_heads=8, qk_dim=None, qk_scale=None, kv_per_win=4,
                 kv_downsample_ratio=4, kv_downsample_kernel=None, kv_downsample_mode="identity", topk=4,
                 param_attention="qkvo", param_routing=False, diff_routing=False, soft_routing=False,
                 side_dwconv=3, auto_pad=True):
        super().__init__()
        self.dim, self.n_win, self.num_heads = dim, n_win, num_heads
        self.qk_dim = qk_dim or dim
        self.scale = qk_scale or self.qk_dim ** -0.5
        self.topk, self.diff_routing, self.soft_routing, self.auto_pad = topk, diff_routing, soft_routing, auto_pad
        self.qkv = _QKV(dim, self.qk_dim)
        self.wo = nn.Linear(dim, dim) if param_attention == "qkvo" else nn.Identity()
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv else None
        self.router = _Router(self.qk_dim, param_routing)
        pools = {
            "identity": nn.Identity(),
            "avgpool": nn.AvgPool2d(kv_downsample_ratio) if kv_downsample_ratio > 1 else nn.Identity(),
            "maxpool": nn.MaxPool2d(kv_downsample_ratio) if kv_downsample_ratio > 1 else nn.Identity(),
            "ada_avgpool": nn.AdaptiveAvgPool2d(kv_per_win),
            "ada_maxpool": nn.AdaptiveMaxPool2d(kv_per_win),
        }
        self.kv_down = pools[kv_downsample_mode]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H0, W0 = x.shape
        p, cq = self.n_win, self.qk_dim
        x = x.permute(0, 2, 3, 1)  # NHWC
        if self.auto_pad:
            x = F.pad(x, (0, 0, 0, (-W0) % p, 0, (-H0) % p))
        H, W = x.shape[1:3]
        h, w = H // p, W // p
        # regions: (N, p*p, h, w, C), region index j*p + i for region row j, column i
        xr = x.reshape(N, p, h, p, w, C).transpose(2, 3).reshape(N, p * p, h, w, C)
        q, kv = self.qkv.qkv(xr).split([cq, cq + self.dim], dim=-1)

        # step 3-4: region-level routing
        q_r, k_r = q.mean((2, 3)), kv[..., :cq].mean((2, 3))  # (N, p2, cq)
        if not self.diff_routing:
            q_r, k_r = q_r.detach(), k_r.detach()
        q_r, k_r = self.router.emb(q_r), self.router.emb(k_r)
        affinity = (q_r * self.scale) @ k_r.transpose(-1, -2)  # (N, p2, p2)
        top_logit, idx = torch.topk(affinity, self.topk, dim=-1)  # (N, p2, k)
        r_weight = torch.softmax(top_logit, dim=-1)

        # step 5: pooled keys/values per region, gathered through a (N, p2, p2, ...) expanded view
        kv_p = self.kv_down(kv.reshape(N * p * p, h, w, -1).permute(0, 3, 1, 2))  # (N*p2, c, hk, wk)
        kv_p = kv_p.flatten(2).transpose(1, 2).reshape(N, p * p, -1, kv.shape[-1])  # (N, p2, hk*wk, c)
        L, ckv = kv_p.shape[2:]
        full = kv_p.unsqueeze(1).expand(-1, p * p, -1, -1, -1)
        sel = torch.gather(full, 2, idx.view(N, p * p, self.topk, 1, 1).expand(-1, -1, -1, L, ckv))
        if self.soft_routing:
            sel = sel * r_weight.view(N, p * p, self.topk, 1, 1)
        elif self.diff_routing:
            raise NotImplementedError("differentiable hard routing is not implemented in the original code")

        # step 6: token attention inside each query region over the gathered tokens
        m = self.num_heads
        qh = q.reshape(N * p * p, h * w, m, -1).transpose(1, 2)  # (N*p2, m, hw, cq/m)
        sel = sel.reshape(N * p * p, self.topk * L, ckv)
        kh = sel[..., :cq].reshape(N * p * p, -1, m, cq // m).permute(0, 2, 3, 1)  # (N*p2, m, cq/m, kL)
        vh = sel[..., cq:].reshape(N * p * p, -1, m, self.dim // m).transpose(1, 2)  # (N*p2, m, kL, c/m)
        attn = torch.softmax((qh * self.scale) @ kh, dim=-1)
        out = (attn @ vh).transpose(1, 2).reshape(N, p, p, h, w, self.dim)
        out = out.transpose(2, 3).reshape(N, H, W, self.dim)

        v_img = kv[..., cq:].reshape(N, p, p, h, w, self.dim).transpose(2, 3).reshape(N, H, W, self.dim)
        if self.lepe is not None:
            out = out + self.lepe(v_img.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        out = self.wo(out)[:, :H0, :W0]
        return out.permute(0, 3, 1, 2).contiguous()
