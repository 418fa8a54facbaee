"""HiLo attention against its two naive references in models/attention/reference/hilo.py (outputs, input and parameter
gradients) and in the detector."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.attention.hilo import HiLo, masked_avg_pool
from models.attention.reference.hilo import NaiveHiLo, masked_hilo
from models.yolo import Model

from .conftest import check_plugin_config
from .helpers import assert_plugin_params_get_grads, assert_same_param_grads, outputs_and_grads

# ---- against the reference computation --------------------------------------------------------------------
SEED_CASES = [  # (dim, num_heads, window_size, alpha, side, kwargs)
    (64, 8, 2, 0.5, 8, {}),
    (64, 8, 2, 0.5, 4, {"qkv_bias": True, "qk_scale": 0.3}),
    (64, 8, 4, 0.5, 8, {}),
    (64, 8, 1, 0.5, 5, {}),  # window 1: plain MHSA, all heads in Lo-Fi
    (64, 8, 2, 0.0, 6, {}),  # Hi-Fi only
    (64, 8, 2, 1.0, 6, {}),  # Lo-Fi only
    (64, 8, 2, 0.3, 4, {}),  # int(2.4) = 2 Lo-Fi heads
    (48, 3, 2, 0.5, 4, {}),  # l_dim 16, h_dim 32
    (16, 1, 2, 0.5, 4, {}),  # int(0.5) = 0: the Lo-Fi branch is empty
]


@pytest.mark.parametrize("dim,heads,ws,alpha,side,kw", SEED_CASES)
def test_equals_reference_on_square_maps(dim, heads, ws, alpha, side, kw):
    torch.manual_seed(0)
    m = HiLo(dim, heads, window_size=ws, alpha=alpha, **kw)
    ref = NaiveHiLo(dim, heads, window_size=ws, alpha=alpha, **kw)
    ref.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(2, dim, side, side)
    g = torch.randn(2, dim, side, side)
    y, gx, gp = outputs_and_grads(m, x, g)
    y_ref, gx_ref, gp_ref = outputs_and_grads(ref, x, g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    assert_same_param_grads(gp, gp_ref)


@pytest.mark.parametrize("dim,heads,ws,alpha,hw", [
    (32, 4, 2, 0.5, (5, 7)),
    (32, 4, 2, 0.5, (3, 3)),
    (32, 4, 2, 0.5, (1, 1)),
    (32, 4, 2, 0.5, (6, 4)),  # divisible, non-square
    (32, 4, 3, 0.5, (7, 5)),
    (32, 4, 4, 0.5, (6, 9)),
    (32, 4, 3, 0.0, (4, 5)),
    (32, 4, 3, 1.0, (4, 5)),
    (32, 4, 1, 0.5, (3, 5)),
    (48, 3, 2, 0.5, (5, 3)),
    (32, 4, 2, 0.5, (13, 22)),  # odd x even, non-square
    (32, 4, 3, 0.5, (22, 13)),
])
def test_equals_masked_reference_on_any_size(dim, heads, ws, alpha, hw):
    torch.manual_seed(1)
    m = HiLo(dim, heads, window_size=ws, alpha=alpha, qkv_bias=True)
    x, g = torch.randn(2, dim, *hw), torch.randn(2, dim, *hw)
    y, gx, gp = outputs_and_grads(m, x, g)
    y_ref, gx_ref, gp_ref = outputs_and_grads(lambda t: masked_hilo(m, t), x, g, m)  # m's own parameters
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    assert_same_param_grads(gp, gp_ref)


def test_masked_reference_agrees_with_reference_where_both_apply():
    torch.manual_seed(2)
    m = HiLo(32, 4, window_size=2)
    x = torch.randn(1, 32, 4, 4)
    naive = NaiveHiLo(32, 4, window_size=2)
    naive.load_state_dict(m.state_dict(), strict=True)
    ref = naive(x)
    torch.testing.assert_close(masked_hilo(m, x), ref, atol=1e-5, rtol=1e-5)


def test_masked_avg_pool_by_hand():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    p = masked_avg_pool(x, 2)
    assert p.shape == (1, 1, 3, 3)
    assert p[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 5 + 6) / 4)
    assert p[0, 0, 0, 2].item() == pytest.approx((4 + 9) / 2)  # right column: 2 real pixels
    assert p[0, 0, 2, 0].item() == pytest.approx((20 + 21) / 2)  # bottom row
    assert p[0, 0, 2, 2].item() == pytest.approx(24.0)  # corner: 1 real pixel, not 24 / 4


@pytest.mark.parametrize("dim,heads,ws,alpha,split,names", [
    (64, 8, 2, 0.5, (4, 4), {"l_q", "l_kv", "l_proj", "h_qkv", "h_proj"}),
    (64, 8, 2, 0.3, (2, 6), {"l_q", "l_kv", "l_proj", "h_qkv", "h_proj"}),
    (64, 8, 1, 0.0, (8, 0), {"l_q", "l_kv", "l_proj"}),
    (64, 8, 2, 0.0, (0, 8), {"h_qkv", "h_proj"}),
    (16, 1, 2, 0.5, (0, 1), {"h_qkv", "h_proj"}),
])
def test_head_split_and_parameter_names(dim, heads, ws, alpha, split, names):
    m = HiLo(dim, heads, window_size=ws, alpha=alpha)
    assert (m.l_heads, m.h_heads) == split
    assert (m.l_dim, m.h_dim) == (split[0] * dim // heads, split[1] * dim // heads)
    assert {k.split(".")[0] for k in m.state_dict()} == names


def test_uses_scaled_dot_product_attention(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("attn_mask") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    HiLo(32, 4)(torch.randn(1, 32, 5, 6))
    assert calls == [True, False]  # Hi-Fi masks padded keys (5 is odd), Lo-Fi needs no mask


def test_dropout_only_in_training():
    torch.manual_seed(3)
    m = HiLo(32, 4, attn_drop=0.5, proj_drop=0.5)
    x = torch.randn(1, 32, 4, 4)
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


@pytest.mark.parametrize("kwargs", [
    {"dim": 30, "num_heads": 8}, {"dim": 32, "num_heads": 0}, {"dim": 32, "window_size": 0},
    {"dim": 32, "alpha": 1.5}, {"dim": 32, "alpha": -0.1},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        HiLo(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="expects"):
        HiLo(32, 4)(torch.randn(1, 16, 4, 4))


# ---- in the detector --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", "nsmlx")
def test_config_builds_and_runs_at_every_scale(scale):
    check_plugin_config(f"yolov5{scale}_hilo.yaml", HiLo)


def test_parameter_counts_pinned():
    counts = {s: sum(p.numel() for p in Model(f"yolov5{s}_hilo.yaml", verbose=False).parameters()) for s in "ns"}
    # YOLOv5n/s (1,872,157 / 7,235,389) plus two HiLo blocks; HiLo(d) with alpha 0.5 holds
    # l_q d*d/2 + l_kv d*d + l_proj (d/2)^2 + d/2 + h_qkv 3d*d/2 + h_proj (d/2)^2 + d/2 = 3.5 d^2 + d
    # plus the d gammas of the Residual wrapper
    hilo = {d: 3.5 * d * d + d + d for d in (128, 256, 512)}
    assert counts == {"n": 2_159_645, "s": 8_383_805}
    assert counts == {"n": 1_872_157 + hilo[128] + hilo[256], "s": 7_235_389 + hilo[256] + hilo[512]}


def test_forward_backward_yolov5n():
    assert_plugin_params_get_grads("yolov5n_hilo.yaml", HiLo)
