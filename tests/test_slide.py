"""Slide attention against its naive reference in models/attention/reference/slide.py (an explicit unfold-based
neighbourhood attention; outputs, input and parameter gradients), fuse(), and in the detector."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.attention.reference.slide import NaiveSlide
from models.attention.slide import SlideAttention, shift_kernels
from models.yolo import Model

from .conftest import check_plugin_config
from .helpers import assert_plugin_params_get_grads, assert_same_param_grads, outputs_and_grads


# ---- naive reference --------------------------------------------------------------------------------------
def naive_slide(m: SlideAttention) -> NaiveSlide:
    """The reference with m's settings and weights, deform.weight included (its mix applied even while zero)."""
    ref = NaiveSlide(m.dim, m.num_heads, m.k, qkv_bias=m.qkv.bias is not None, qk_scale=m.scale,
                     mask_border=m.mask_border, dim_reduction=m.dim // m.attn_dim)
    ref.load_state_dict(m.state_dict(), strict=True)
    return ref


def _randomise(m: SlideAttention, std: float = 0.3) -> None:
    with torch.no_grad():
        m.deform.weight.normal_(0, std)
        m.relative_position_bias_table.normal_(0, 0.5)


SIZES = [(5, 7), (6, 6), (3, 1), (1, 1), (8, 5), (13, 22)]


# ---- against the reference --------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("mask_border", [False, True])
def test_equals_unfold_reference(hw, mask_border):
    torch.manual_seed(0)
    m = SlideAttention(32, 4, mask_border=mask_border)
    with torch.no_grad():
        m.relative_position_bias_table.normal_(0, 0.5)
    assert m.deform.weight.abs().sum() == 0  # the learnable path starts at zero
    x, g = torch.randn(2, 32, *hw), torch.randn(2, 32, *hw)
    y, gx, gp = outputs_and_grads(m, x, g)
    y_ref, gx_ref, gp_ref = outputs_and_grads(naive_slide(m), x, g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    assert_same_param_grads(gp, gp_ref)  # deform.weight's too, though it is zero


@pytest.mark.parametrize("k,heads,red,hw", [(5, 2, 1, (6, 7)), (1, 4, 1, (3, 4)), (3, 2, 2, (4, 5)), (7, 1, 1, (3, 9))])
def test_other_kernels_heads_and_reductions(k, heads, red, hw):
    torch.manual_seed(1)
    m = SlideAttention(16, heads, kernel_size=k, qkv_bias=False, qk_scale=0.7, dim_reduction=red)
    _randomise(m)
    x, g = torch.randn(1, 16, *hw), torch.randn(1, 16, *hw)
    y, gx, gp = outputs_and_grads(m, x, g)
    y_ref, gx_ref, gp_ref = outputs_and_grads(naive_slide(m), x, g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    assert_same_param_grads(gp, gp_ref)


@pytest.mark.parametrize("mask_border", [False, True])
def test_learnable_path_is_a_linear_mix_of_the_neighbourhood(mask_border):
    torch.manual_seed(2)
    m = SlideAttention(32, 4, mask_border=mask_border)
    _randomise(m)
    x, g = torch.randn(2, 32, 5, 6), torch.randn(2, 32, 5, 6)
    y, gx, gp = outputs_and_grads(m, x, g)
    y_ref, gx_ref, gp_ref = outputs_and_grads(naive_slide(m), x, g)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-5)
    assert_same_param_grads(gp, gp_ref)


def test_benchmark_shortcut_of_the_reference_changes_no_output():
    """bench_attention.py times NaiveSlide(skip_zero_deform=True): on a fresh module (deform zero) the same output
    and input gradient as the full reference, only deform.weight gets no gradient."""
    torch.manual_seed(5)
    m = SlideAttention(32, 4)
    full, short = naive_slide(m), NaiveSlide(32, 4, skip_zero_deform=True)
    short.load_state_dict(m.state_dict(), strict=True)
    x, g = torch.randn(2, 32, 13, 22), torch.randn(2, 32, 13, 22)
    y, gx, _ = outputs_and_grads(full, x, g)
    xs = x.clone().requires_grad_(True)
    ys = short(xs)
    ys.backward(g)
    torch.testing.assert_close(ys, y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xs.grad, gx, atol=1e-5, rtol=1e-5)
    assert short.deform.weight.grad is None


def test_shift_kernels_follow_unfold_order():
    t = torch.randn(3, 4, 5, 6)
    shifted = F.conv2d(t, shift_kernels(4, 3), padding=1, groups=4)
    torch.testing.assert_close(shifted.flatten(2), F.unfold(t, 3, padding=1).reshape(3, 36, 30), rtol=0, atol=0)


def test_border_mask_counts_neighbours():
    inside = SlideAttention(8, 1).border_mask(4, 5, torch.device("cpu")).sum(0).reshape(4, 5)
    expected = torch.tensor([[4, 6, 6, 6, 4], [6, 9, 9, 9, 6], [6, 9, 9, 9, 6], [4, 6, 6, 6, 4]])
    assert torch.equal(inside, expected)


def test_hand_computed_cases():
    torch.manual_seed(3)
    x = torch.randn(1, 8, 3, 4)
    m = SlideAttention(8, 2, kernel_size=1)  # one key: weight 1 on the pixel itself
    v = m.qkv(x)[:, 16:]
    torch.testing.assert_close(m(x), m.proj(v))
    m = SlideAttention(8, 2, mask_border=True)  # 1x1 image: only the centre is inside
    x = torch.randn(1, 8, 1, 1)
    torch.testing.assert_close(m(x), m.proj(m.qkv(x)[:, 16:]))
    m.mask_border = False  # 8 zero neighbours (logit b_i) now share the weight with the centre (s + b_4)
    b = m.relative_position_bias_table.detach()  # (heads, 9)
    q, k, v = m.qkv(x).reshape(3, 2, 4).detach()  # (heads, head_dim) each
    s = (q * k).sum(1) * m.scale
    centre = (s + b[:, 4]).exp() / ((s + b[:, 4]).exp() + b.exp().sum(1) - b[:, 4].exp())
    torch.testing.assert_close(m(x), m.proj((v * centre[:, None]).reshape(1, 8, 1, 1)))


# ---- fuse -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_border", [False, True])
def test_fused_equals_unfused(mask_border):
    torch.manual_seed(4)
    m = SlideAttention(32, 4, mask_border=mask_border).eval()
    _randomise(m)
    x = torch.randn(2, 32, 7, 5)
    with torch.no_grad():
        y = m(x)
        n_params = sum(p.numel() for p in m.parameters())
        m.fuse().fuse()  # idempotent
        torch.testing.assert_close(m(x), y, atol=1e-5, rtol=1e-5)
    assert m.fused and not hasattr(m, "deform")
    assert sum(p.numel() for p in m.parameters()) == n_params
    assert "fused_shift.weight" in m.state_dict() and "deform.weight" not in m.state_dict()


@pytest.mark.parametrize("kwargs", [
    {"dim": 30, "num_heads": 8}, {"dim": 32, "num_heads": 0}, {"dim": 32, "kernel_size": 4},
    {"dim": 32, "kernel_size": 0}, {"dim": 32, "dim_reduction": 3}, {"dim": 32, "num_heads": 8, "dim_reduction": 8},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SlideAttention(**kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match="expects"):
        SlideAttention(32, 4)(torch.randn(1, 16, 4, 4))


# ---- in the detector --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", "nsmlx")
def test_config_builds_and_runs_at_every_scale(scale):
    check_plugin_config(f"yolov5{scale}_slide.yaml", SlideAttention)


def test_parameter_counts_pinned():
    counts = {s: sum(p.numel() for p in Model(f"yolov5{s}_slide.yaml", verbose=False).parameters()) for s in "ns"}
    # YOLOv5n/s (1,872,157 / 7,235,389) plus two SlideAttention(d, 8 heads, k=3): qkv 3d^2 + 3d,
    # proj d^2 + d, deform (d/8)*9*9, position bias 8*9
    # plus the d gammas of the Residual wrapper
    slide = {d: 4 * d * d + 4 * d + d // 8 * 81 + 72 + d for d in (128, 256, 512)}
    assert counts == {"n": 2_205_789, "s": 8_557_869}
    assert counts == {"n": 1_872_157 + slide[128] + slide[256], "s": 7_235_389 + slide[256] + slide[512]}


def test_forward_backward_yolov5n():
    assert_plugin_params_get_grads("yolov5n_slide.yaml", SlideAttention)


def test_model_fuse_fuses_slide_attention():
    torch.manual_seed(0)
    model = Model("yolov5n_slide.yaml", verbose=False).eval()
    slides = [m for m in model.modules() if isinstance(m, SlideAttention)]
    for m in slides:
        _randomise(m, std=0.1)
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        pred, _ = model(x)
        model.fuse()
        pred_fused, _ = model(x)
    assert all(m.fused for m in slides)
    torch.testing.assert_close(pred_fused, pred, atol=1e-4, rtol=1e-4)
