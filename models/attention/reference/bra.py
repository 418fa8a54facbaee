"""The naive references for Bi-Level Routing Attention (`models/attention/bra.py`), for the tests and the benchmark.

`NaiveBRA` computes the way the original BiFormer code does. It follows the paper's steps literally (Zhu et al.,
"BiFormer", CVPR 2023, Sec. 3.2):
  1. zero-pad the map at the bottom/right to a multiple of `n_win`, split it into n_win x n_win regions;
  2. linear q, k, v for every token;
  3. region-level query and key = mean over each region's tokens; affinity A = (Q_r * scale) K_r^T;
  4. keep the top-k regions of each row of A (softmax over the kept logits gives the routing weights);
  5. gather the (optionally pooled) keys/values of those regions by expanding the whole key/value tensor to
     one copy per query region and `torch.gather`-ing from it (memory-hungry, like the original code);
  6. token-to-token multi-head attention with an explicit softmax, plus LePE (a depthwise conv on V),
     then the output projection, then the crop back to the input size.
Parameter names match the original code's and the fast module's, so state dicts move between the two with
`strict=True`.

`padding_free_bra(m, x)` is what `mask_padding=True` promises, written with loops over images, regions and pooling
cells and reading module `m`'s own parameters: the map is never padded. Region (j, i) is the rectangle
rows [j*h, (j+1)*h) x cols [i*w, (i+1)*w) clipped to the map, with h = ceil(H / n_win), w = ceil(W / n_win); a
region left empty by the clipping does not exist. Region means, keys and LePE see real tokens only; a pooled key
is the mean (max) of the real tokens of its pooling cell, the cells being laid out on the h x w region grid as
the pooling layers lay them out.

`hand_flops(m, N, H, W)` counts one forward's FLOPs by hand (identity keys/values).

tests/test_bra.py checks the fast module against `NaiveBRA` (every option, tiny/odd/non-square maps) and against
`padding_free_bra` (mask_padding), outputs, input gradients and parameter gradients; `benchmarks/bench_attention.py`
times `NaiveBRA` as `bra-naive`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NaiveBRA", "padding_free_bra", "hand_flops"]


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


# ---- padding-free reference (mask_padding=True), with loops -----------------------------------------------
def _cells(m, h: int, w: int) -> list[tuple[range, range]]:
    """Pooling cells of one h x w region, as (rows, cols) inside the region."""
    mode, r, P = m.kv_downsample_mode, m.kv_downsample_ratio, m.kv_per_win
    if mode == "identity" or (mode in ("avgpool", "maxpool") and r == 1):
        return [(range(a, a + 1), range(c, c + 1)) for a in range(h) for c in range(w)]
    if mode in ("avgpool", "maxpool"):
        kh, kw = min(r, h), min(r, w)
        return [(range(a * kh, a * kh + kh), range(c * kw, c * kw + kw))
                for a in range(h // kh) for c in range(w // kw)]
    bins = lambda n: [range(a * n // P, math.ceil((a + 1) * n / P)) for a in range(P)]  # noqa: E731 (adaptive)
    return [(ra, rc) for ra in bins(h) for rc in bins(w)]


def _region_keys(m, k, v, rows: range, cols: range, h: int, w: int):
    """Pooled keys and values of one region from its real tokens: (n_keys, c) each."""
    keys, vals = [], []
    for ra, rc in _cells(m, h, w):
        rr = [rows.start + a for a in ra if rows.start + a in rows]
        cc = [cols.start + c for c in rc if cols.start + c in cols]
        if not rr or not cc:
            continue  # a cell of padding only is no key
        kt, vt = k[rr][:, cc].flatten(0, 1), v[rr][:, cc].flatten(0, 1)  # (tokens, c)
        if m.kv_downsample_mode.endswith("maxpool"):
            keys.append(kt.amax(0)), vals.append(vt.amax(0))
        else:
            keys.append(kt.mean(0)), vals.append(vt.mean(0))
    return torch.stack(keys), torch.stack(vals)


def _attention(m, q, k, v):
    """Multi-head attention of q (nq, cq) over k (nk, cq), v (nk, C) with the module's scale."""
    heads = m.num_heads
    qh, kh, vh = (t.reshape(t.shape[0], heads, -1).transpose(0, 1) for t in (q, k, v))
    a = torch.softmax(qh @ kh.transpose(1, 2) * m.scale, dim=-1)
    return (a @ vh).transpose(0, 1).reshape(q.shape[0], -1)


def padding_free_bra(m, x: torch.Tensor) -> torch.Tensor:
    """BRA of module `m`'s weights on x (N, C, H, W) without any padding; (N, C, H, W)."""
    N, C, H, W = x.shape
    n, cq = m.n_win, m.qk_dim
    h, w = math.ceil(H / n), math.ceil(W / n)
    q, k, v = F.linear(x.permute(0, 2, 3, 1), m.qkv.qkv.weight, m.qkv.qkv.bias).split([cq, cq, C], -1)
    rects = [(range(j * h, min(j * h + h, H)), range(i * w, min(i * w + w, W))) for j in range(n) for i in range(n)]
    rects = [(rr, cc) for rr, cc in rects if len(rr) and len(cc)]
    out = torch.zeros_like(v)
    for b in range(N):
        qd, kd = (q[b], k[b]) if m.diff_routing else (q[b].detach(), k[b].detach())
        q_r = m.router.emb(torch.stack([qd[rr][:, cc].mean((0, 1)) for rr, cc in rects]))
        k_r = m.router.emb(torch.stack([kd[rr][:, cc].mean((0, 1)) for rr, cc in rects]))
        top, idx = ((q_r * m.scale) @ k_r.T).topk(min(m.topk, len(rects)), dim=-1)
        weight = top.softmax(-1)
        for a, (rr, cc) in enumerate(rects):
            keys, vals = [], []
            for s, wt in zip(idx[a].tolist(), weight[a]):
                ks, vs = _region_keys(m, k[b], v[b], *rects[s], h, w)
                keys.append(ks * wt if m.soft_routing else ks)
                vals.append(vs * wt if m.soft_routing else vs)
            res = _attention(m, q[b][rr][:, cc].flatten(0, 1), torch.cat(keys), torch.cat(vals))
            out[b, rr.start:rr.stop, cc.start:cc.stop] = res.view(len(rr), len(cc), C)
    if m.lepe is not None:
        out = out + m.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return m.wo(out).permute(0, 3, 1, 2)


def hand_flops(m, N: int, H: int, W: int) -> int:
    """FLOPs of one forward (2 per multiply-add), identity kv: projections, routing, attention, LePE, output."""
    n, C, cq = m.n_win, m.dim, m.qk_dim
    Hp, Wp = math.ceil(H / n) * n, math.ceil(W / n) * n
    T, R = N * Hp * Wp, N * n * n  # tokens, regions
    L = m.topk * (Hp // n) * (Wp // n)  # keys per query
    f = 2 * T * C * (2 * cq + C)  # q, k, v
    f += 2 * R * C * 2 * cq + 2 * N * (n * n) ** 2 * cq  # region q, k (projected region means), affinity
    if m.param_routing:
        f += 2 * 2 * R * cq * cq
    f += 2 * T * L * cq + 2 * T * L * C  # q k^T, attention @ v
    if m.lepe is not None:
        f += 2 * T * C * m.lepe.kernel_size[0] ** 2
    if m.param_attention == "qkvo":
        f += 2 * T * C * C
    return f
