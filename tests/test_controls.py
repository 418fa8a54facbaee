"""The two controls of the plug-in comparison: C3TR (YOLOv5's own attention) and ConvControl (BRA's capacity
without attention). Parameter counts pinned, sizes against BRA, weight transfer, start at the baseline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.control import ConvControl
from models.transformer import C3TR, TransformerLayer
from models.yolo import Model
from tests.conftest import ROOT
from utils.checkpoint import load_checkpoint
from utils.flops import gflops
from utils.transfer import transfer_weights

PARAMS = {
    "yolov5s_transformer.yaml": 7_235_645,  # official YOLOv5s-transformer (models/hub/yolov5s-transformer.yaml)
    "yolov5n_transformer.yaml": 1_872_285,  # yolov5n + 128: the TransformerBlock has c_ more biases than C3's m
    "yolov5n_control.yaml": 2_210_973,
    "yolov5n_biformer.yaml": 2_205_597,
}


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def official():
    ckpt = load_checkpoint(ROOT / "weights" / "yolov5n.pt")
    ckpt["model"] = {k: v.float() for k, v in ckpt["model"].items()}
    return ckpt


@pytest.mark.parametrize("cfg,params", PARAMS.items())
def test_parameter_counts(cfg, params):
    assert _params(Model(cfg, verbose=False)) == params


def test_c3tr_has_official_names_and_shapes():
    c3tr = Model("yolov5s_transformer.yaml", verbose=False).model[8]
    assert isinstance(c3tr, C3TR) and c3tr.type == "C3TR"
    m = {k: tuple(v.shape) for k, v in c3tr.state_dict().items() if k.startswith("m.")}
    c = 256  # c_ = 512 * 0.5 at scale s
    assert m == {
        "m.linear.weight": (c, c), "m.linear.bias": (c,),
        "m.tr.0.q.weight": (c, c), "m.tr.0.k.weight": (c, c), "m.tr.0.v.weight": (c, c),
        "m.tr.0.ma.in_proj_weight": (3 * c, c), "m.tr.0.ma.in_proj_bias": (3 * c,),
        "m.tr.0.ma.out_proj.weight": (c, c), "m.tr.0.ma.out_proj.bias": (c,),
        "m.tr.0.fc1.weight": (c, c), "m.tr.0.fc2.weight": (c, c),
    }
    assert c3tr.m.conv is None and c3tr.m.tr[0].ma.num_heads == 4


def test_transformer_layer_against_naive_attention():
    """nn.MultiheadAttention (fused path) against the formula written out, outputs and gradients."""
    torch.manual_seed(0)
    layer = TransformerLayer(16, 4)
    x = torch.randn(7, 2, 16, requires_grad=True)  # (L, B, c)
    out = layer(x)

    def naive(x):
        ma = layer.ma
        wq, wk, wv = ma.in_proj_weight.chunk(3)
        bq, bk, bv = ma.in_proj_bias.chunk(3)
        q = F.linear(layer.q(x), wq, bq).view(7, 2, 4, 4).permute(1, 2, 0, 3)  # (B, heads, L, d)
        k = F.linear(layer.k(x), wk, bk).view(7, 2, 4, 4).permute(1, 2, 0, 3)
        v = F.linear(layer.v(x), wv, bv).view(7, 2, 4, 4).permute(1, 2, 0, 3)
        a = (q @ k.transpose(-1, -2) / 2.0).softmax(-1) @ v  # scale 1/sqrt(d), d = 4
        y = ma.out_proj(a.permute(2, 0, 1, 3).reshape(7, 2, 16)) + x
        return layer.fc2(layer.fc1(y)) + y

    x2 = x.detach().clone().requires_grad_(True)
    want = naive(x2)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    want.square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)


def test_c3tr_keeps_any_map_size_and_rejects_bad_widths():
    block = C3TR(32, 48, n=2).eval()
    with torch.no_grad():
        assert block(torch.rand(2, 32, 5, 7)).shape == (2, 48, 5, 7)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        C3TR(16, 12)  # c_ = 6 is not divisible by 4 heads


def test_transfer_into_c3tr_keeps_c3_convs(official):
    model = Model("yolov5n_transformer.yaml", verbose=False)
    fresh_m = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("model.8.m.")}
    report = transfer_weights(model, official)
    assert report.summary("yolov5n.pt") == ("Transferred 337/349 tensors from yolov5n.pt; fresh (no counterpart): "
                                            "model.8.m (11 tensors); not used: model.8.m (12 tensors)")
    state = model.state_dict()
    for cv in ("cv1", "cv2", "cv3"):
        for p in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
            key = f"model.8.{cv}.{p}"
            assert report.mapping[key] == key
            assert torch.equal(state[key], official["model"][key])
    assert all(torch.equal(state[k], v) for k, v in fresh_m.items())  # the TransformerBlock was not touched
    assert sorted(report.fresh) == sorted(fresh_m) and not report.new and not report.dropped
    assert all(torch.equal(state[k], official["model"][v]) for k, v in report.mapping.items())


def test_control_matches_bra_in_size():
    control, bra = Model("yolov5n_control.yaml", verbose=False), Model("yolov5n_biformer.yaml", verbose=False)
    assert abs(_params(control) / _params(bra) - 1) < 0.10
    for i in (20, 24):  # per layer too: 69,248 vs 67,456 and 269,568 vs 265,984
        assert isinstance(control.model[i].m, ConvControl)
        assert abs(_params(control.model[i]) / _params(bra.model[i]) - 1) < 0.05
    for size in (640, 320):
        g_control, g_bra = gflops(control, size), gflops(bra, size)
        assert abs(g_control / g_bra - 1) < 0.10, (size, g_control, g_bra)


def test_conv_control_shapes_and_errors():
    block = ConvControl(24).eval()
    assert _params(block) == 2 * 24 * 48 + 48 * 9 + 2 * (48 + 48 + 24)  # 1x1 in, 3x3 depthwise, 1x1 out, BNs
    with torch.no_grad():
        assert block(torch.rand(1, 24, 3, 5)).shape == (1, 24, 3, 5)
    with pytest.raises(ValueError, match="odd kernel"):
        ConvControl(24, k=2)


def test_control_starts_exactly_at_the_baseline(official):
    base = Model(official["yaml"], verbose=False)
    base.load_state_dict(official["model"])
    torch.manual_seed(0)
    model = Model("yolov5n_control.yaml", verbose=False)
    report = transfer_weights(model, official)
    assert report.summary("yolov5n.pt") == ("Transferred 349/349 tensors from yolov5n.pt; "
                                            "new: model.20 ConvControl, model.24 ConvControl")
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], base.eval()(x)[0], rtol=0, atol=0)
