"""BiLevelRoutingAttention against its naive references in models/attention/reference/bra.py: option-by-option
equality with NaiveBRA (outputs, input and parameter gradients), padding masking against the padding-free loop
reference (the same), tiny/odd/non-square sizes, dtypes, the routing read through a hook on `router`, FLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.attention.bra import BiLevelRoutingAttention, region_rect
from models.attention.reference.bra import NaiveBRA, hand_flops, padding_free_bra
from models.attention.routing import RoutingRecord, recording_routing

TOL = dict(atol=1e-5, rtol=1e-5)


def _pair(dim: int, seed: int = 0, mask_padding: bool = False, **kw):
    torch.manual_seed(seed)
    ref = NaiveBRA(dim, **kw)
    for p in ref.parameters():  # non-default values, so that a swapped bias or scale would show
        p.data.normal_(0, 0.3)
    fast = BiLevelRoutingAttention(dim, **kw, mask_padding=mask_padding)
    fast.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(fast.state_dict(), strict=True)
    return ref, fast


def _grads(mod, x, g, params=None):
    """Output and the gradients of <output, g> for x and every parameter of `params` (default: mod), by name."""
    params = [p for _, p in sorted((mod if params is None else params).named_parameters())]
    y = mod(x)
    return y, torch.autograd.grad(y, [x, *params], g)


def assert_same_as_naive(shape, dim=16, seed=0, piece_bytes=None, **kw):
    ref, fast = _pair(dim, seed, **kw)
    fast.piece_bytes = piece_bytes or fast.piece_bytes
    x = torch.randn(shape, requires_grad=True)
    y_ref, g_ref = _grads(ref, x, g := torch.randn(shape[0], dim, *shape[2:]))
    y, gr = _grads(fast, x, g)
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(gr[0], g_ref[0], **TOL)  # input gradient
    for a, b in zip(gr[1:], g_ref[1:]):  # parameter gradients are sums over every token: relative to their size
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-5)


OPTIONS = [
    dict(),
    dict(kv_downsample_mode="avgpool", kv_downsample_ratio=2),
    dict(kv_downsample_mode="avgpool", kv_downsample_ratio=3),  # 4x4 regions: floor pooling drops a row/column
    dict(kv_downsample_mode="maxpool", kv_downsample_ratio=2),
    dict(kv_downsample_mode="avgpool", kv_downsample_ratio=1),
    dict(kv_downsample_mode="ada_avgpool", kv_per_win=2),
    dict(kv_downsample_mode="ada_maxpool", kv_per_win=3),
    dict(kv_downsample_mode="ada_avgpool", kv_per_win=6),  # more pooled keys than tokens per region
    dict(param_attention="qkv"),
    dict(param_routing=True, diff_routing=True, soft_routing=True),
    dict(diff_routing=True, soft_routing=True),
    dict(soft_routing=True),
    dict(side_dwconv=0),
    dict(side_dwconv=5),
    dict(qk_dim=8, qk_scale=0.2),
    dict(num_heads=4, qk_dim=32),
    dict(num_heads=1),
]


@pytest.mark.parametrize("kw", OPTIONS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
def test_same_as_naive_for_every_option(kw):
    kw = {"n_win": 3, "num_heads": 2, "topk": 3, **kw}
    assert_same_as_naive((2, 16, 12, 12), **kw)  # 4x4 tokens per region
    assert_same_as_naive((1, 16, 7, 10), seed=1, **kw)  # padded to 9x12


@pytest.mark.parametrize("topk", [1, 2, 3, 4])
def test_same_as_naive_for_every_topk(topk):
    assert_same_as_naive((2, 16, 6, 8), n_win=2, num_heads=2, topk=topk)
    assert_same_as_naive((1, 16, 5, 3), n_win=2, num_heads=2, topk=topk, soft_routing=True)


@pytest.mark.parametrize("hw", [(1, 1), (1, 9), (2, 3), (13, 4), (11, 5), (3, 17), (13, 22)])
def test_same_as_naive_on_tiny_odd_and_non_square_maps(hw):
    assert_same_as_naive((2, 16, *hw), n_win=3, num_heads=2, topk=4)
    assert_same_as_naive((1, 16, *hw), n_win=3, num_heads=2, topk=9, kv_downsample_mode="ada_avgpool", kv_per_win=2)


@pytest.mark.parametrize("n", [1, 3])  # pieces of one image's query regions; pieces of whole images
def test_attention_in_pieces_gives_the_same_numbers(n):
    assert_same_as_naive((n, 16, 8, 7), n_win=3, num_heads=2, soft_routing=True, piece_bytes=1)
    assert_same_as_naive((n, 16, 5, 5), n_win=2, num_heads=2, topk=3, piece_bytes=1)


def test_detector_settings_on_stride_probe_and_640_sizes():
    for hw in [(16, 16), (8, 8), (40, 40), (20, 20), (12, 20)]:  # P4/P5 at 256, 640 and a 320x192 letterbox
        assert_same_as_naive((1, 32, *hw), dim=32)


def test_channels_last_and_strided_inputs():
    _, m = _pair(16, n_win=3, num_heads=2)
    x = torch.randn(2, 16, 9, 12)
    y = m(x)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), y, **TOL)
    strided = torch.stack([x, -x], -1).flatten(-2)[..., ::2]  # x again, every other element of a wider map
    assert not strided.is_contiguous()
    torch.testing.assert_close(m(strided), y, **TOL)
    assert y.is_contiguous()


def test_no_auto_pad_equals_naive_where_divisible_and_refuses_otherwise():
    assert_same_as_naive((1, 16, 6, 9), n_win=3, num_heads=2, auto_pad=False)
    m = BiLevelRoutingAttention(16, n_win=3, num_heads=2, auto_pad=False)
    with pytest.raises(ValueError, match="auto_pad=False needs H and W divisible by n_win=3, got 7x9"):
        m(torch.randn(1, 16, 7, 9))


def test_pooling_on_regions_smaller_than_the_ratio_shrinks_the_kernel():
    x = torch.randn(1, 16, 9, 9)  # 3x3 regions, kv_downsample_ratio 4: the original code fails here
    ref, _ = _pair(16, n_win=3, num_heads=2, kv_downsample_mode="avgpool", kv_downsample_ratio=4)
    with pytest.raises(RuntimeError):
        ref(x)
    for mode in ("avgpool", "maxpool"):  # equals pooling with the kernel of the region, 3x3
        assert_same_as_naive((1, 16, 9, 9), n_win=3, num_heads=2, kv_downsample_mode=mode, kv_downsample_ratio=3)
        ref, fast = _pair(16, n_win=3, num_heads=2, kv_downsample_mode=mode, kv_downsample_ratio=4)
        ref3, _ = _pair(16, n_win=3, num_heads=2, kv_downsample_mode=mode, kv_downsample_ratio=3)
        ref3.load_state_dict(fast.state_dict())
        torch.testing.assert_close(fast(x), ref3(x), **TOL)


def test_state_dict_names_and_shapes_are_the_originals():
    m = BiLevelRoutingAttention(64, num_heads=8, qk_dim=32, param_routing=True, diff_routing=True)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"lepe.weight": (64, 1, 3, 3), "lepe.bias": (64,), "router.emb.weight": (32, 32),
                      "router.emb.bias": (32,), "qkv.qkv.weight": (128, 64), "qkv.qkv.bias": (128,),
                      "wo.weight": (64, 64), "wo.bias": (64,)}
    plain = BiLevelRoutingAttention(64, param_attention="qkv", side_dwconv=0)
    assert sorted(plain.state_dict()) == ["qkv.qkv.bias", "qkv.qkv.weight"]


def test_importable_from_common_and_registered():
    from models.common import BiLevelRoutingAttention as FromCommon
    from models.registry import lookup

    assert FromCommon is BiLevelRoutingAttention and lookup("BiLevelRoutingAttention").cls is BiLevelRoutingAttention


def test_hard_differentiable_routing_raises_like_the_original():
    for cls in (NaiveBRA, BiLevelRoutingAttention):  # both build; every forward raises NotImplementedError
        m = cls(16, n_win=2, num_heads=2, diff_routing=True, param_routing=cls is BiLevelRoutingAttention)
        with pytest.raises(NotImplementedError):
            m(torch.randn(1, 16, 4, 4))


@pytest.mark.parametrize("kw, err, msg", [
    (dict(param_routing=True), ValueError, "param_routing=True needs diff_routing=True"),
    (dict(kv_downsample_mode="bilinear"), ValueError, "kv_downsample_mode must be one of"),
    (dict(kv_downsample_mode="fracpool"), NotImplementedError, "'fracpool' is not implemented"),
    (dict(kv_downsample_mode="conv"), NotImplementedError, "'conv' is not implemented"),
    (dict(topk=50), ValueError, "topk must be in 1..n_win"),
    (dict(num_heads=3), ValueError, "divisible by num_heads"),
    (dict(side_dwconv=4), ValueError, "odd kernel size"),
    (dict(param_attention="none"), ValueError, "param_attention must be"),
])
def test_bad_arguments_say_what_is_valid(kw, err, msg):
    with pytest.raises(err, match=msg):
        BiLevelRoutingAttention(40, **kw)


def test_wrong_channels_are_refused():
    with pytest.raises(ValueError, match=r"expects \(N, 16, H, W\), got \(1, 8, 4, 4\)"):
        BiLevelRoutingAttention(16, n_win=2, num_heads=2)(torch.randn(1, 8, 4, 4))


# ---- mask_padding -------------------------------------------------------------------------------------------
MASK_OPTIONS = [
    dict(),
    dict(kv_downsample_mode="avgpool", kv_downsample_ratio=2),
    dict(kv_downsample_mode="maxpool", kv_downsample_ratio=2),
    dict(kv_downsample_mode="ada_avgpool", kv_per_win=2),
    dict(kv_downsample_mode="ada_maxpool", kv_per_win=2),
    dict(param_routing=True, diff_routing=True, soft_routing=True, side_dwconv=5),
]


@pytest.mark.parametrize("kw", MASK_OPTIONS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
@pytest.mark.parametrize("hw", [(5, 7), (4, 2), (1, 1)])
def test_mask_padding_equals_a_padding_free_computation(kw, hw):
    """Regions are the n_win x n_win grid of ceil-sized rectangles clipped to the map; nothing else exists."""
    _, m = _pair(8, n_win=3, num_heads=2, topk=4, mask_padding=True, **kw)
    x = torch.randn(2, 8, *hw, requires_grad=True)
    g = torch.randn(2, 8, *hw)
    y, gx = _grads(m, x, g)
    y_ref, gx_ref = _grads(lambda t: padding_free_bra(m, t), x, g, params=m)  # the same parameters
    torch.testing.assert_close(y, y_ref, **TOL)
    torch.testing.assert_close(gx[0], gx_ref[0], **TOL)
    for a, b in zip(gx[1:], gx_ref[1:]):  # parameter gradients, relative to their size as above
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("mode", ["identity", "avgpool", "ada_maxpool"])
def test_padded_content_never_reaches_real_tokens(mode, monkeypatch):
    """Whatever the padded canvas holds, real outputs stay the same with mask_padding (and change without)."""
    real_pad = F.pad

    def noisy_pad(t, pad, *args, **kwargs):  # fill the bottom/right padding with noise instead of zeros
        out = real_pad(t, pad, *args, **kwargs)
        if min(pad) >= 0 and t.dim() == 4:
            noise = torch.randn_like(out) * 3
            noise[..., : t.shape[-2], : t.shape[-1]] = 0
            out = out + noise
        return out

    x = torch.randn(1, 16, 20, 19)
    for mask in (True, False):
        _, m = _pair(16, n_win=7, num_heads=2, kv_downsample_mode=mode, kv_downsample_ratio=2, mask_padding=mask)
        clean = m(x)
        monkeypatch.setattr(F, "pad", noisy_pad)
        noisy = m(x)
        monkeypatch.setattr(F, "pad", real_pad)
        if mask:
            torch.testing.assert_close(noisy, clean, **TOL)
        else:
            assert (noisy - clean).abs().max() > 1e-2


def test_mask_padding_changes_nothing_without_padding_and_never_routes_to_padding():
    x = torch.randn(2, 16, 12, 12)
    _, a = _pair(16, n_win=3, num_heads=2)
    _, b = _pair(16, n_win=3, num_heads=2, mask_padding=True)
    assert torch.equal(a(x), b(x))
    with recording_routing([b]) as recs:
        b(torch.randn(1, 16, 1, 1))  # one real region out of 9
    rec = recs[0]
    assert rec.index.shape == (1, 9, 4) and (rec.index[..., 0] == 0).all()
    torch.testing.assert_close(rec.weight, torch.tensor([1.0, 0, 0, 0]).expand(1, 9, 4))


# ---- dtypes, determinism, routing readout, FLOPs -----------------------------------------------------------
def test_autocast_bf16_and_half_on_cpu():
    _, m = _pair(32, n_win=7, num_heads=4, soft_routing=True, mask_padding=True)
    x = torch.randn(2, 32, 20, 18, requires_grad=True)
    y32 = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (y.float() - y32).abs().max() < 0.05 * y32.abs().max()
    h = m.half()(x.detach().half())
    assert h.dtype == torch.float16 and (h.float() - y32).abs().max() < 0.01 * y32.abs().max()


def test_deterministic_mode_gives_identical_runs():
    _, m = _pair(16, n_win=3, num_heads=2, soft_routing=True, diff_routing=True)
    x = torch.randn(2, 16, 10, 11, requires_grad=True)
    torch.use_deterministic_algorithms(True)
    try:
        runs = [_grads(m, x, torch.ones(2, 16, 10, 11)) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(runs[0][0], runs[1][0]) and all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def _routing_state(m):
    """Hooks on the module or its router, and tensors the module holds besides its parameters and buffers."""
    hooks = [len(h) for mod in (m, m.router) for h in (mod._forward_hooks, mod._forward_pre_hooks)]
    return sum(hooks), [k for mod in m.modules() for k, v in vars(mod).items() if isinstance(v, torch.Tensor)]


def test_routing_readout_matches_the_naive_routing_and_costs_nothing_when_off():
    ref, m = _pair(16, n_win=3, num_heads=2, topk=2)
    x = torch.randn(2, 16, 8, 7)
    m(x)
    assert _routing_state(m) == (0, [])  # the module keeps nothing after forward
    with recording_routing([m]) as recs:
        assert _routing_state(m)[0] == 2
        m(x)
    assert _routing_state(m) == (0, [])  # hooks removed on leaving
    rec = recs[0]
    assert isinstance(rec, RoutingRecord) and rec.index.shape == (2, 9, 2) and not rec.weight.requires_grad
    xp = F.pad(x, (0, 2, 0, 1)).view(2, 16, 3, 3, 3, 3).mean((3, 5)).flatten(2).transpose(1, 2)  # region means
    w, b = ref.qkv.qkv.weight, ref.qkv.qkv.bias
    logit = (F.linear(xp, w[:16], b[:16]) * 16 ** -0.5) @ F.linear(xp, w[16:32], b[16:32]).transpose(1, 2)
    top, idx = logit.topk(2)
    assert torch.equal(rec.index, idx)
    torch.testing.assert_close(rec.weight, top.softmax(-1))
    assert rec.window == (3, 3) and rec.size == (8, 7) and rec.rect(8) == (6, 6, 7, 8)


def test_router_is_the_hookable_routing_step_and_adds_no_state():
    """The router's forward returns (weight, index) of the forward in progress; without a routing embedding it has
    no parameters, so the state dict is the original code's (`router.emb.*` only with param_routing)."""
    _, m = _pair(16, n_win=3, num_heads=2, topk=3)
    assert not list(m.router.parameters()) and not m.router.state_dict()
    seen = []
    handle = m.router.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        m(torch.randn(1, 16, 7, 10))
    finally:
        handle.remove()
    (weight, index), = seen
    assert weight.shape == index.shape == (1, 9, 3) and index.dtype == torch.int64
    torch.testing.assert_close(weight.sum(-1), torch.ones(1, 9))
    assert (weight[..., :-1] >= weight[..., 1:]).all()  # best first


def test_region_rect():
    assert region_rect(0, 7, (3, 3), (20, 20)) == (0, 0, 3, 3)
    assert region_rect(6, 7, (3, 3), (20, 20)) == (18, 0, 20, 3)
    assert region_rect(48, 7, (3, 3), (20, 20), stride=32) == (576, 576, 640, 640)
    assert region_rect(1, 7, (1, 1), (1, 1)) == (1, 0, 1, 1)  # padding only: empty
    with pytest.raises(ValueError, match="region 49 is outside 0..48"):
        region_rect(49, 7, (3, 3), (20, 20))


@pytest.mark.parametrize("kw", [dict(), dict(qk_dim=16, topk=2, side_dwconv=5), dict(param_attention="qkv")])
def test_flop_count_includes_the_attention_matmuls(kw):
    from utils.flops import count_flops

    m = BiLevelRoutingAttention(32, n_win=7, num_heads=4, **kw)
    assert count_flops(m, torch.randn(2, 32, 20, 17)) == hand_flops(m, 2, 20, 17)
