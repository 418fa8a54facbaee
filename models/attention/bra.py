"""Bi-Level Routing Attention (BiFormer, Zhu et al., CVPR 2023) as an NCHW plug-in for the neck.

Region-to-region routing keeps, for each of the n_win x n_win regions, the `topk` regions with the highest
affinity (scaled dot product of its mean query with their mean keys); token-to-token attention then runs over
the tokens of those regions only.
The routed regions are picked with one `index_select` on the flattened regions (no expanded copy of every
region per query region, whose backward would zero-fill and scatter into p^2 copies), and the token
attention runs through `F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.registry import inserts_dim, register
from models.tracing import shapes_in_graph
from utils.errors import UserError

__all__ = ["BiLevelRoutingAttention", "region_rect"]

KV_DOWNSAMPLE_MODES = ("identity", "avgpool", "maxpool", "ada_avgpool", "ada_maxpool")


def region_rect(region: int, n_win: int, window: tuple[int, int], size: tuple[int, int],
                stride: int = 1) -> tuple[int, int, int, int]:
    """Pixel rectangle (x0, y0, x1, y1), end exclusive, of region `region` (row-major in the n_win x n_win grid).

    `window` is the region's (height, width) in feature-map cells, `size` the real (H, W) of the map; the
    rectangle is clipped to the map (a region made only of padding comes back empty, x0 == x1 or y0 == y1)
    and multiplied by `stride` to give input-image pixels.
    """
    if not 0 <= region < n_win * n_win:
        raise UserError(f"region {region} is outside 0..{n_win * n_win - 1} for n_win={n_win}")
    j, i = divmod(region, n_win)
    (h, w), (H, W) = window, size
    y0, x0 = min(j * h, H), min(i * w, W)
    y1, x1 = min(y0 + h, H), min(x0 + w, W)
    return x0 * stride, y0 * stride, x1 * stride, y1 * stride


class _QKVLinear(nn.Module):
    """The joint q, k, v projection, named `qkv.qkv.*` as in the original code, applied one part at a time."""

    def __init__(self, dim: int, qk_dim: int):
        super().__init__()
        self.qk_dim = qk_dim
        self.qkv = nn.Linear(dim, 2 * qk_dim + dim)

    def project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """x W^T + b with the rows of part 0 (q), 1 (k) or 2 (v): a contiguous output per part, no slicing."""
        lo, hi = (0, self.qk_dim, 2 * self.qk_dim, None)[part: part + 2]
        return F.linear(x, self.qkv.weight[lo:hi], self.qkv.bias[lo:hi])

    def project_parts(self, x: torch.Tensor, parts: int = 3) -> tuple[torch.Tensor, ...]:
        """project(x, i) for i < parts. Under torch.export one linear with the whole weight, split after: a
        sliced weight is computed in the graph, and ExecuTorch's XNNPACK delegate takes only constant weights
        (sliced, the projections ran in its portable kernels, 4x slower). The same figures up to rounding."""
        if not torch.compiler.is_exporting():
            return tuple(self.project(x, i) for i in range(parts))
        sizes = (self.qk_dim, self.qk_dim, self.qkv.out_features - 2 * self.qk_dim)
        return F.linear(x, self.qkv.weight, self.qkv.bias).split(sizes, dim=-1)[:parts]


class _Router(nn.Module):
    """The region-to-region routing step (the original code's TopkRouting), a submodule so it can be observed.

    Holds the optional routing embedding, named `router.emb.*` as in the original code (without it the router has
    no parameters and adds no state-dict key). forward(q_r, k_r, scale, topk, region_real) takes the region-level
    queries and keys (N, p2, qk_dim) and returns (weight, index), each Tensor[N, p2, topk]: for every query region
    the `topk` regions of highest affinity (emb(q_r) * scale) emb(k_r)^T, best first, and the softmax of their
    affinities. region_real: None, or (p2,) bool, True where a region holds a real token (the others are never
    routed to).

    The module keeps nothing: whoever wants the routing (models/attention/routing.py) registers a forward hook on
    `router` and removes it when done.
    """

    def __init__(self, qk_dim: int, param_routing: bool):
        super().__init__()
        self.emb = nn.Linear(qk_dim, qk_dim) if param_routing else nn.Identity()

    def forward(self, q_r: torch.Tensor, k_r: torch.Tensor, scale: float, topk: int,
                region_real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logit = (self.emb(q_r) * scale) @ self.emb(k_r).transpose(-1, -2)  # (N, p2, p2) region affinity
        if region_real is not None:
            logit = logit.masked_fill(~region_real, float("-inf"))  # never route to a region of padding only
        top, index = torch.topk(logit, topk, dim=-1)
        return torch.softmax(top, dim=-1), index


def _check_args(*, dim, n_win, num_heads, qk_dim, topk, param_attention, param_routing, diff_routing,
                kv_downsample_mode, kv_per_win, kv_downsample_ratio, side_dwconv):
    if n_win < 1 or num_heads < 1:
        raise UserError(f"n_win and num_heads must be >= 1, got n_win={n_win}, num_heads={num_heads}")
    if dim % num_heads or qk_dim % num_heads:
        raise UserError(f"dim ({dim}) and qk_dim ({qk_dim}) must be divisible by num_heads ({num_heads})")
    if not 1 <= topk <= n_win * n_win:
        raise UserError(f"topk must be in 1..n_win^2 = {n_win * n_win} regions, got topk={topk}")
    if param_attention not in ("qkvo", "qkv"):
        raise UserError(f"param_attention must be 'qkvo' or 'qkv', got {param_attention!r}")
    if param_routing and not diff_routing:
        raise UserError("param_routing=True needs diff_routing=True: a routing embedding learns nothing "
                         "through a non-differentiable routing")
    if kv_downsample_mode in ("fracpool", "conv"):
        raise NotImplementedError(f"kv_downsample_mode {kv_downsample_mode!r} is not implemented (nor is it in "
                                  f"the original code); use one of {KV_DOWNSAMPLE_MODES}")
    if kv_downsample_mode not in KV_DOWNSAMPLE_MODES:
        raise UserError(f"kv_downsample_mode must be one of {KV_DOWNSAMPLE_MODES}, got {kv_downsample_mode!r}")
    if kv_downsample_mode.startswith("ada") and not (isinstance(kv_per_win, int) and kv_per_win >= 1):
        raise UserError(f"kv_downsample_mode {kv_downsample_mode!r} needs kv_per_win >= 1, got {kv_per_win!r}")
    if kv_downsample_mode in ("avgpool", "maxpool") and not (isinstance(kv_downsample_ratio, int)
                                                             and kv_downsample_ratio >= 1):
        raise UserError(f"kv_downsample_mode {kv_downsample_mode!r} needs kv_downsample_ratio >= 1, "
                         f"got {kv_downsample_ratio!r}")
    if side_dwconv < 0 or (side_dwconv and side_dwconv % 2 == 0):
        raise UserError(f"side_dwconv must be 0 (no LePE) or an odd kernel size, got {side_dwconv}")


@register("BiLevelRoutingAttention", channels=inserts_dim)
class BiLevelRoutingAttention(nn.Module):
    """Bi-Level Routing Attention on a feature map: (N, dim, H, W) in, (N, dim, H, W) out, any H, W >= 1.

    Args (names, order and defaults of the original BiFormer code, so its YAML rows work unchanged):
        dim: input (= output) channels, inserted by parse_model; divisible by num_heads.
        n_win: regions per side; the map is split into n_win x n_win regions of (H/n_win) x (W/n_win) tokens.
        num_heads: attention heads; qk_dim is split among them as well.
        qk_dim: query/key channels (default dim). qk_scale: logit scale (default qk_dim ** -0.5, for the
            region affinity and, as in the original code, for every head's token attention too).
        kv_per_win: keys per region side for kv_downsample_mode 'ada_avgpool'/'ada_maxpool'.
        kv_downsample_ratio: pooling kernel and stride for 'avgpool'/'maxpool'.
        kv_downsample_kernel: accepted and unused, as in the original code.
        kv_downsample_mode: 'identity' (every token is a key), 'avgpool', 'maxpool', 'ada_avgpool',
            'ada_maxpool'; pooling runs inside each region. 'fracpool'/'conv' raise NotImplementedError.
        topk: regions each query region attends to, 1..n_win^2.
        param_attention: 'qkvo' (output projection `wo`) or 'qkv' (none).
        param_routing: a linear embedding before the region affinity; requires diff_routing.
        diff_routing: let gradients flow through the routing. soft_routing: scale each routed region's keys and
            values by its routing weight.
        side_dwconv: kernel of LePE, a depthwise conv on V added to the attention output (0: none).
        auto_pad: zero-pad the bottom/right up to multiples of n_win (False: H, W must be multiples).
        mask_padding: (last, not in the original; a YAML row sets it as its 16th arg) make the padding invisible
            to real tokens; see below.

    Shapes: the padded map (Hp, Wp) = H, W rounded up to multiples of n_win; a region holds h x w = Hp/n_win x
    Wp/n_win tokens and a query attends to topk * (keys per region) tokens. The routing step is the submodule
    `router` (forward returns (weight, index), each Tensor[N, n_win^2, topk]); the module keeps no routing after
    forward, and a reader such as models/attention/routing.py registers a forward hook on `router` for as long as it
    needs.

    Padding. With mask_padding=False (default) the padded zeros behave as in the original code: they enter the
    region means, become keys/values (equal to the projection biases), and LePE reads them; at 20x20 with
    n_win=7, real queries put about 6% of their attention on them at initialisation (up to 25%). With
    mask_padding=True and a padded map: region means average real tokens only; a region of padding only is
    never routed to (its affinity is -inf); padded tokens are masked out of the keys (a pooled key averages /
    maxes over the real tokens of its pooling cell, and a cell without any is masked); LePE reads zeros instead
    of padded V. So the output at real tokens does not depend on anything at padded positions. On maps n_win
    divides it changes nothing.

    Deviations from the original code, none of which changes its numbers where it runs:
      * Routed regions are picked with `index_select` on the flattened regions instead of `gather` on a
        (N, p^2, p^2, ...) expanded view; token attention runs in `F.scaled_dot_product_attention`, in up to
        `chunks` (4) pieces of images or query regions where the selection exceeds `piece_bytes` (32 MiB).
      * The region-level query/key is the projection of the region's mean input token, which equals the mean
        of the projected tokens (the projection is affine) up to rounding; q, k, v are projected separately
        with the three row blocks of `qkv.qkv`.
      * 'avgpool'/'maxpool' on regions smaller than kv_downsample_ratio (where the original fails) pool with
        the kernel shrunk to the region, i.e. one key per region side.
      * Bad arguments raise ValueError (the original asserts or fails later): topk outside 1..n_win^2, an even
        side_dwconv, param_routing without diff_routing, auto_pad=False on a size n_win does not divide.
      * diff_routing=True with soft_routing=False is the original's 'hard' differentiable routing, which it
        leaves unimplemented: it builds, and every forward raises NotImplementedError, as the original does.
      * forward(x) has no `ret_attn_mask`; the routing is read through a forward hook on `router` (see above).
      * Under autocast the soft routing weights are cast to the keys' dtype.
    """

    def __init__(self, dim: int, n_win: int = 7, num_heads: int = 8, qk_dim: int | None = None,
                 qk_scale: float | None = None, kv_per_win: int = 4, kv_downsample_ratio: int = 4,
                 kv_downsample_kernel=None, kv_downsample_mode: str = "identity", topk: int = 4,
                 param_attention: str = "qkvo", param_routing: bool = False, diff_routing: bool = False,
                 soft_routing: bool = False, side_dwconv: int = 3, auto_pad: bool = True,
                 mask_padding: bool = False):
        super().__init__()
        qk_dim = qk_dim or dim
        _check_args(dim=dim, n_win=n_win, num_heads=num_heads, qk_dim=qk_dim, topk=topk,
                    param_attention=param_attention, param_routing=param_routing, diff_routing=diff_routing,
                    kv_downsample_mode=kv_downsample_mode, kv_per_win=kv_per_win,
                    kv_downsample_ratio=kv_downsample_ratio, side_dwconv=side_dwconv)
        self.dim, self.n_win, self.num_heads, self.qk_dim = dim, n_win, num_heads, qk_dim
        self.scale = qk_scale or qk_dim ** -0.5
        self.topk, self.param_attention = topk, param_attention
        self.param_routing, self.diff_routing, self.soft_routing = param_routing, diff_routing, soft_routing
        self.kv_downsample_mode, self.kv_per_win = kv_downsample_mode, kv_per_win
        self.kv_downsample_ratio, self.kv_downsample_kernel = kv_downsample_ratio, kv_downsample_kernel
        self.auto_pad, self.mask_padding = auto_pad, mask_padding
        self.lepe = nn.Conv2d(dim, dim, side_dwconv, padding=side_dwconv // 2, groups=dim) if side_dwconv else None
        self.router = _Router(qk_dim, param_routing)
        self.qkv = _QKVLinear(dim, qk_dim)
        self.wo = nn.Linear(dim, dim) if param_attention == "qkvo" else nn.Identity()
        self.chunks, self.piece_bytes = 4, 32 * 2**20  # attention in pieces (see _attend): less peak memory

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise UserError(f"BiLevelRoutingAttention(dim={self.dim}) expects (N, {self.dim}, H, W), "
                             f"got {tuple(x.shape)}")
        if self.diff_routing and not self.soft_routing:
            raise NotImplementedError("diff_routing=True with soft_routing=False ('hard' differentiable routing) "
                                      "is not implemented, as in the original code; set soft_routing=True or "
                                      "diff_routing=False")
        N, C, H, W = x.shape
        n = self.n_win
        Hp, Wp = self._padded_size(H, W)
        h, w = Hp // n, Wp // n
        padded = (Hp, Wp) != (H, W) or shapes_in_graph()  # a traced graph pads (maybe by 0) at every size
        if padded:
            x = F.pad(x, (0, Wp - W, 0, Hp - H))
        real = _real_tokens(H, W, n, h, w, x.device) if self.mask_padding and padded else None
        # (N, C, Hp, Wp) -> (N*p2, h*w, C): regions row-major, tokens row-major inside each region (no tensor of
        # rank > 5 on the way: CoreML's limit)
        tokens = x.permute(0, 2, 3, 1).reshape(N * n, h, n, w, C).transpose(1, 2).reshape(N * n * n, h * w, C)
        weight, index = self._route(tokens, real, N)  # (N, p2, topk) each
        q, k, v = self.qkv.project_parts(tokens)  # (N*p2, h*w, c) each
        keys, values, key_real = self._downsample(k, v, h, w, real)
        out = self._attend(q, keys, values, key_real, index, weight)  # (N*p2, h*w, dim)
        out = out.view(N * n, n, h, w, self.dim).transpose(1, 2)  # (N*n, h, n, w, dim): image order
        if self.lepe is not None:
            out = self._lepe(v, N, h, w, real) + out  # takes LePE's channels-last layout
        return self._project_out(out.reshape(N, Hp * Wp, self.dim), (Hp, Wp), (H, W))

    def _padded_size(self, H: int, W: int) -> tuple[int, int]:
        n = self.n_win
        if self.auto_pad:
            return H + (-H) % n, W + (-W) % n
        if H % n or W % n:
            raise UserError(f"auto_pad=False needs H and W divisible by n_win={n}, got {H}x{W}; "
                             f"set auto_pad=True to pad")
        return H, W

    def _route(self, tokens, real, N: int):
        """Region-level routing: (weight, index), each Tensor[N, p2, topk]; tokens is (N*p2, h*w, C)."""
        with torch.set_grad_enabled(self.diff_routing and torch.is_grad_enabled()):
            # region means of q and k = projections of the region means of the tokens (the projection is affine)
            if real is None:
                x_r = tokens.mean(1)
            else:  # mean over the real tokens only
                share = (real / real.sum(1, keepdim=True).clamp_min(1)).to(tokens.dtype).unsqueeze(1)  # (p2,1,hw)
                x_r = torch.matmul(share, tokens.view(N, -1, *tokens.shape[1:])).flatten(0, 2)
            p2 = self.n_win ** 2
            q_r, k_r = (t.reshape(N, p2, -1) for t in self.qkv.project_parts(x_r, 2))
            return self.router(q_r, k_r, self.scale, self.topk, None if real is None else real.any(1))

    def _downsample(self, k, v, h: int, w: int, real):
        """Keys and values per region, (N*p2, L, c) each, and which of the L are real ((p2, L) bool or None)."""
        mode, r = self.kv_downsample_mode, self.kv_downsample_ratio
        if mode == "identity" or (mode in ("avgpool", "maxpool") and r == 1):
            return k, v, real
        if mode == "avgpool":
            pool = lambda t: F.avg_pool2d(t, (min(r, h), min(r, w)))  # noqa: E731
        elif mode == "maxpool":
            pool = lambda t: F.max_pool2d(t, (min(r, h), min(r, w)))  # noqa: E731
        elif mode == "ada_avgpool":
            pool = lambda t: F.adaptive_avg_pool2d(t, self.kv_per_win)  # noqa: E731
        else:
            pool = lambda t: F.adaptive_max_pool2d(t, self.kv_per_win)  # noqa: E731
        real_map = None if real is None else real.view(-1, 1, h, w)
        key_real = None if real is None else (pool(real_map.to(k.dtype)) > 0).flatten(1)
        k, v = (_pool_region(pool, t, h, w, real_map, mode.endswith("avgpool")) for t in (k, v))
        return k, v, key_real

    def _attend(self, q, keys, values, key_real, index, weight):
        """Token attention of each region's queries over its routed regions' keys; (N*p2, h*w, dim).

        Where the selected keys/values would exceed `piece_bytes`, it runs in up to `chunks` pieces (whole images,
        or groups of query regions of one image), so that only one piece's selection and its gradients are
        alive at a time.
        """
        N, p2, topk = index.shape
        selected = q.shape[0] * topk * keys.shape[1] * (keys.shape[2] + values.shape[2]) * q.element_size()
        pieces = min(self.chunks, -(-selected // self.piece_bytes))
        if pieces <= 1:
            return self._attend_piece(q, keys, values, key_real, index, weight)
        if N > 1:  # pieces of whole images: each selects from its own images' regions
            step = -(-N // pieces)
            rows = step * p2
            parts = zip(q.split(rows), keys.split(rows), values.split(rows), index.split(step), weight.split(step))
        else:  # one image: pieces of its query regions, all selecting from the same regions
            step = -(-p2 // pieces)
            parts = ((qc, keys, values, ic, wc) for qc, ic, wc in zip(q.split(step), index.split(step, 1),
                                                                       weight.split(step, 1)))
        out = [self._attend_piece(qc, kc, vc, key_real, ic, wc) for qc, kc, vc, ic, wc in parts]
        return torch.cat(out) if len(out) > 1 else out[0]

    def _attend_piece(self, q, keys, values, key_real, index, weight):
        B, Lq, _ = q.shape
        N, _, topk = index.shape
        per_image = keys.shape[0] // N  # regions per image
        flat = (index + per_image * torch.arange(N, device=index.device).view(N, 1, 1)).view(-1)  # (B*topk,)
        # a region is one row of a 2-D view, so index_select copies whole regions (backward: a row index_add)
        k_sel, v_sel = (t.reshape(t.shape[0], -1).index_select(0, flat) for t in (keys, values))  # (B*topk, Lk*c)
        if self.soft_routing:
            wt = weight.reshape(-1, 1).to(k_sel.dtype)
            k_sel, v_sel = k_sel * wt, v_sel * wt
        L, m = topk * keys.shape[1], self.num_heads
        qh = q.view(B, Lq, m, -1).transpose(1, 2)  # (B, m, Lq, qk_dim/m)
        kh = k_sel.view(B, L, m, -1).transpose(1, 2)  # (B, m, L, qk_dim/m)
        vh = v_sel.view(B, L, m, -1).transpose(1, 2)  # (B, m, L, dim/m)
        mask = None if key_real is None else key_real[index].view(B, 1, 1, L)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=self.scale)
        return out.transpose(1, 2).reshape(B, Lq, self.dim)

    def _lepe(self, v, N: int, h: int, w: int, real):
        """LePE on the padded map, (N*n, h, n, w, dim) in image order; padded V reads as 0 when masked."""
        n = self.n_win
        img = v.view(N * n, n, h, w, self.dim).transpose(1, 2).reshape(N, n * h, n * w, self.dim)
        if real is not None:
            img = img * real.view(n, n, h, w, 1).transpose(1, 2).reshape(n * h, n * w, 1).to(img.dtype)
        lepe = self.lepe(img.permute(0, 3, 1, 2))  # depthwise conv on a channels-last map
        return lepe.permute(0, 2, 3, 1).reshape(N * n, h, n, w, self.dim)

    def _project_out(self, s, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """Output projection written straight in NCHW, then the crop: (N, Hp*Wp, dim) -> (N, dim, H, W)."""
        (Hp, Wp), (H, W), N = padded, size, s.shape[0]
        if isinstance(self.wo, nn.Linear):
            y = torch.baddbmm(self.wo.bias.view(1, -1, 1), self.wo.weight.expand(N, -1, -1), s.transpose(1, 2))
        else:
            y = s.transpose(1, 2).contiguous()
        y = y.view(N, self.dim, Hp, Wp)
        if shapes_in_graph():  # a traced graph of any size crops with negative pads (maybe by 0)
            return F.pad(y, (0, W - Wp, 0, H - Hp))
        return y[:, :, :H, :W] if (Hp, Wp) != (H, W) else y  # a slice: ExecuTorch refuses negative pads


def _real_tokens(H: int, W: int, n: int, h: int, w: int, device) -> torch.Tensor:
    """Bool (n*n, h*w): which tokens of each region lie inside the real H x W map."""
    rows = torch.arange(n * h, device=device) < H
    cols = torch.arange(n * w, device=device) < W
    return (rows.view(n, 1, h, 1) & cols.view(1, n, 1, w)).reshape(n * n, h * w)


def _pool_region(pool, t, h: int, w: int, real_map, average: bool):
    """Pool (B, h*w, c) tokens of each region to (B, L, c); with real_map (p2, 1, h, w) only real tokens count."""
    B, _, c = t.shape
    img = t.view(B, h, w, c).permute(0, 3, 1, 2)  # (B, c, h, w)
    if real_map is None:
        return pool(img).flatten(2).transpose(1, 2)
    p2 = real_map.shape[0]
    grid = img.view(B // p2, p2, c, h, w)
    m = real_map.to(t.dtype)
    if average:  # mean over the real tokens of each cell: pool(x * m) / pool(m)
        out = pool((grid * m).view(B, c, h, w))
        share = pool(m)
        out = out.view(B // p2, p2, c, *share.shape[-2:]) / torch.where(share > 0, share, torch.ones_like(share))
    else:  # max over the real tokens; a cell without any gives 0 (and is masked out of the keys)
        out = pool(grid.masked_fill(~real_map, float("-inf")).view(B, c, h, w))
        out = out.view(B // p2, p2, c, *out.shape[-2:]).masked_fill(pool(m) <= 0, 0.0)
    return out.reshape(B, c, -1).transpose(1, 2)
