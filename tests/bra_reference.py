"""Plain references for the BiLevelRoutingAttention tests: a padding-free BRA written with loops, and FLOPs by hand.

`padding_free_bra` is what `mask_padding=True` promises: the map is never padded. Region (j, i) is the rectangle
rows [j*h, (j+1)*h) x cols [i*w, (i+1)*w) clipped to the map, with h = ceil(H / n_win), w = ceil(W / n_win); a
region left empty by the clipping does not exist. Region means, keys and LePE see real tokens only; a pooled key
is the mean (max) of the real tokens of its pooling cell, the cells being laid out on the h x w region grid as
the pooling layers lay them out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["padding_free_bra", "hand_flops"]


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
