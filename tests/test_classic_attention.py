"""The classic attention comparators (SE, ECA, CBAM, CoordAtt in models/attention/classic.py) against their plain
references in models/attention/reference/classic.py (outputs, input and parameter gradients; odd, non-square and
1x1 maps; train and eval mode), and in the detector: built at the plug-ins' places, trained, starting as the
baseline, exported, and left out of compare.py's default configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import compare
from models.attention.classic import CBAM, ECA, SE, CoordAtt, eca_kernel_size
from models.attention.reference.classic import cbam_reference, coordatt_reference, eca_reference, se_reference
from models.config import CLASSIC_CONFIGS
from models.yolo import Model
from utils.checkpoint import load_checkpoint
from utils.transfer import transfer_weights

from .conftest import ROOT, check_plugin_config
from .helpers import assert_plugin_params_get_grads, assert_same_param_grads, outputs_and_grads

MODULES = {"SE": (SE, se_reference), "ECA": (ECA, eca_reference), "CBAM": (CBAM, cbam_reference),
           "CoordAtt": (CoordAtt, coordatt_reference)}
CONFIGS = {"SE": "yolov5n_se.yaml", "ECA": "yolov5n_eca.yaml", "CBAM": "yolov5n_cbam.yaml",
           "CoordAtt": "yolov5n_coordatt.yaml"}


def _module(name: str, dim: int, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    m = MODULES[name][0](dim, **kw)
    with torch.no_grad():  # biases and BatchNorm away from their initial 0 / 1, so a mix-up shows
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for b in m.buffers():
            if b.is_floating_point():
                b.copy_(torch.rand_like(b) + 0.5)
    return m


def transferred_model(cfg: str) -> Model:
    """`cfg` with the bundled yolov5n.pt carried in by structure, as train.py fine-tunes it."""
    torch.manual_seed(0)
    model = Model(cfg, verbose=False)
    transfer_weights(model, load_checkpoint(ROOT / "weights" / "yolov5n.pt"))
    return model


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("dim,hw,kw", [
    (32, (8, 8), {}),
    (32, (5, 7), {}),  # odd, non-square
    (48, (13, 22), {}),
    (17, (1, 1), {}),  # one pixel; 17 channels: SE/CBAM keep one hidden channel, CoordAtt eight
    (64, (3, 10), {"reduction": 4}),
])
@pytest.mark.parametrize("train", [True, False])
def test_equals_reference(name, dim, hw, kw, train):
    if name == "ECA":
        kw = {}
    """In float64, so that what differs is the computation, not rounding (BatchNorm over the 2 x 2 values of a 1x1
    map in training cancels almost everything)."""
    m = _module(name, dim, **kw).double().train(train)
    ref = MODULES[name][1]
    x = torch.randn(2, dim, *hw, dtype=torch.float64)
    g = torch.randn(2, dim, *hw, dtype=torch.float64)
    y, gx, gp = outputs_and_grads(m, x, g)
    m.load_state_dict(_module(name, dim, **kw).double().state_dict())  # BatchNorm's running statistics as before
    y_ref, gx_ref, gp_ref = outputs_and_grads(lambda t: ref(m, t), x, g, module=m)
    torch.testing.assert_close(y, y_ref, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(gx, gx_ref, atol=1e-10, rtol=1e-10)
    if name == "CoordAtt" and train:  # BatchNorm on batch statistics cancels conv1's bias: its gradient is 0,
        top = max(t.abs().max().item() for t in gp_ref.values())  # computed as rounding noise by both sides
        assert max(gp.pop("conv1.bias").abs().max(), gp_ref.pop("conv1.bias").abs().max()) < 1e-5 * top
    assert_same_param_grads(gp, gp_ref)


def test_eca_kernel_size_follows_the_paper():
    """|(log2 C + 1) / 2| to the next odd number: C = 64 -> 3, 128..1024 -> 5, 2048 -> 7 (ECA-Net Eq. 12)."""
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    assert ECA(256).conv.kernel_size == (5,) and ECA(256, k_size=3).conv.kernel_size == (3,)


def test_sizes_of_the_hidden_layers():
    assert (SE(128).fc1.out_channels, CBAM(256).mlp[0].out_channels) == (8, 16)
    assert (CoordAtt(128).conv1.out_channels, CoordAtt(512).conv1.out_channels) == (8, 16)  # max(8, C / 32)


@pytest.mark.parametrize("make, message", [
    (lambda: ECA(64, k_size=4), "ECA k_size must be odd and >= 1, got 4"),
    (lambda: CBAM(64, kernel_size=6), "CBAM kernel_size must be odd and >= 1, got 6"),
    (lambda: SE(64, reduction=0), "reduction must be >= 1, got 0"),
])
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", MODULES)
def test_in_the_detector(name):
    """At layers 20 and 24, every size and scale runs, and every parameter of the module gets a gradient."""
    check_plugin_config(CONFIGS[name], MODULES[name][0])
    assert_plugin_params_get_grads(CONFIGS[name], MODULES[name][0])


def test_they_start_as_the_baseline_and_cost_little():
    """Fine-tuned from yolov5n.pt, each model predicts exactly what yolov5n predicts at the start (gamma = 0), and
    adds under 1% of yolov5n's parameters (BRA adds 4%)."""
    x = torch.rand(1, 3, 96, 160)
    base = transferred_model("yolov5n.yaml").eval()
    n_base = sum(p.numel() for p in base.parameters())
    with torch.no_grad():
        want = base(x)[0]
        for cfg in CONFIGS.values():
            m = transferred_model(cfg).eval()
            assert torch.equal(m(x)[0], want), cfg
            assert 0 < sum(p.numel() for p in m.parameters()) - n_base < 0.01 * n_base, cfg


def test_not_in_the_default_configs_but_named_by_cfgs():
    defaults = compare.default_cfgs()
    assert not any(c.startswith(("yolov5n_se", "yolov5n_eca", "yolov5n_cbam", "yolov5n_coordatt")) for c in defaults)
    assert len(CLASSIC_CONFIGS) == 4 and "yolov5n_hilo.yaml" in defaults
    opt = compare.parse_opt(args=["--cfgs", "yolov5n.yaml", "yolov5n_eca.yaml", "yolov5n_cbam.yaml"])
    assert opt.cfgs == ["yolov5n.yaml", "yolov5n_eca.yaml", "yolov5n_cbam.yaml"]


@pytest.mark.runtime
def test_exports_equal_pytorch(tmp_path):
    """Each comparator's model (gates open) exported to ONNX with dynamic sizes runs in ONNX Runtime as in PyTorch,
    at its export size and at an odd, non-square one."""
    import onnxruntime as ort

    import export
    from utils.checkpoint import save_checkpoint
    from tests.conftest import open_residuals

    for cfg in CONFIGS.values():
        torch.manual_seed(0)
        model = Model(cfg, verbose=False)
        open_residuals(model, 0.5)
        pt = save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": model.names},
                             tmp_path / f"{cfg[:-5]}.pt")
        f = export.run(weights=str(pt), imgsz=160, include=("onnx",), dynamic=True, check=False)["onnx"]
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        model.eval()
        for h, w in ((160, 160), (96, 224)):
            x = torch.rand(1, 3, h, w)
            with torch.no_grad():
                want = model(x)[0].numpy()
            got = sess.run(None, {"images": x.numpy()})[0]
            assert float(np.abs(got - want).max() / np.abs(want).max()) <= 1e-4, (cfg, h, w)
