"""The network as YOLOv5 builds it: configs, registry, parameter counts, strides, Detect layout, fuse, GFLOPs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from models.config import list_configs, load_model_config, resolve_config_path
from models.registry import inserts_dim, lookup, register
from models.yolo import Detect, Model, parse_model
from utils.flops import gflops

# Official YOLOv5 v6/v7 parameter counts with nc=80.
YOLOV5_PARAMS = {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557, "l": 46_563_709, "x": 86_749_405}


def scaled_names(scale: str = "n") -> list[str]:
    return [f"{p.stem[:6]}{scale}{p.stem[6:]}.yaml" for p in list_configs()]


@pytest.mark.parametrize("scale,params", YOLOV5_PARAMS.items())
def test_yolov5_parameter_counts(scale, params):
    model = Model(f"yolov5{scale}.yaml", verbose=False)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


def test_yolov5l_layer_count_matches_yolov5_summary():
    # YOLOv5 prints "YOLOv5l summary: 368 layers, 46563709 parameters" (one shared SiLU instance)
    assert len(list(Model("yolov5l.yaml", verbose=False).modules())) == 368


@pytest.mark.parametrize("name", scaled_names("n"))
@pytest.mark.parametrize("hw", [(64, 64), (640, 640), (320, 480)])
def test_every_config_builds_and_runs(name, hw):
    model = Model(name, verbose=False).eval()
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    with torch.no_grad():
        pred, maps = model(torch.rand(1, 3, *hw))
    h, w = hw
    cells = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert pred.shape == (1, 3 * cells, 85)
    assert [m.shape[2:4] for m in maps] == [(h // s, w // s) for s in (8, 16, 32)]


@pytest.mark.parametrize("scale", "smlx")
def test_every_config_builds_at_every_scale(scale):
    for name in scaled_names(scale):
        model = Model(name, verbose=False)
        assert model.yaml["scale"] == scale
        assert model.stride.tolist() == [8.0, 16.0, 32.0]


def test_config_resolution(tmp_path):
    path, scale = resolve_config_path("yolov5s.yaml")
    assert path.name == "yolov5.yaml" and scale == "s"
    path, scale = resolve_config_path("configs/yolov5m_biformer.yaml")
    assert path.name == "yolov5_biformer.yaml" and scale == "m"
    d = load_model_config("yolov5x.yaml")
    assert (d["depth_multiple"], d["width_multiple"]) == (1.33, 1.25)
    own = tmp_path / "mine.yaml"
    own.write_text((list_configs()[0]).read_text().replace("nc: 80", "nc: 3"))
    assert load_model_config(str(own))["nc"] == 3
    with pytest.raises(FileNotFoundError, match="yolov5q.yaml.*yolov5.yaml"):
        resolve_config_path("yolov5q.yaml")


def test_unknown_module_lists_known_names():
    d = load_model_config("yolov5n.yaml")
    d["head"][0] = [-1, 1, "NoSuchBlock", [512, 1, 1]]
    with pytest.raises(KeyError) as e:
        parse_model(d, ch=[3], verbose=False)
    msg = str(e.value)
    assert "NoSuchBlock" in msg and "C3" in msg and "Detect" in msg and "Conv" in msg


def test_new_block_is_one_class_and_one_line():
    @register("TestGate", channels=inserts_dim)
    class TestGate(nn.Module):
        def __init__(self, c, scale=0.5):
            super().__init__()
            self.w = nn.Parameter(torch.full((c,), scale))

        def forward(self, x):
            return x * self.w.view(1, -1, 1, 1)

    d = load_model_config("yolov5n.yaml")
    d["head"].insert(3, [-1, 1, "TestGate", [0.25]])  # after the first neck concat (layer 12)
    d["head"][-1][0] = [18, 21, 24]
    model = Model(d, verbose=False)
    gate = model.model[13]
    assert isinstance(gate, TestGate) and gate.w.shape == (256,) and float(gate.w[0].detach()) == 0.25
    assert lookup("TestGate").cls is TestGate


def test_detect_output_order_is_level_anchor_y_x():
    model = Model("yolov5n.yaml", verbose=False).eval()
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        pred, maps = model(x)
    det: Detect = model.model[-1]
    rows = []
    for i, p in enumerate(maps):  # p: (b, na, ny, nx, no)
        b, na, ny, nx, no = p.shape
        s = det.stride[i]
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        y = p.sigmoid()
        cx = (y[..., 0] * 2 - 0.5 + xv) * s
        cy = (y[..., 1] * 2 - 0.5 + yv) * s
        anchors = det.anchors[i] * s  # pixels, (na, 2)
        w = (y[..., 2] * 2) ** 2 * anchors[:, 0].view(1, na, 1, 1)
        h = (y[..., 3] * 2) ** 2 * anchors[:, 1].view(1, na, 1, 1)
        dec = torch.cat([torch.stack([cx, cy, w, h], -1), y[..., 4:]], -1)
        rows.append(dec.reshape(b, -1, no))
    torch.testing.assert_close(pred, torch.cat(rows, 1), rtol=1e-5, atol=1e-4)


def test_fuse_keeps_outputs():
    torch.manual_seed(0)
    model = Model("yolov5n.yaml", verbose=False)
    model.train()
    with torch.no_grad():  # non-trivial BN statistics
        for _ in range(3):
            model(torch.rand(2, 3, 128, 128))
    model.eval()
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        before = model(x)[0]
        n_before = len(list(model.modules()))
        model.fuse()
        after = model(x)[0]
    assert len(list(model.modules())) < n_before
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert (before - after).abs().max() < 1e-4 * max(1.0, before.abs().max())


def test_gflops_are_counted_at_the_real_size():
    model = Model("yolov5n.yaml", verbose=False)
    g640 = gflops(model, 640)
    assert abs(g640 - 4.5) < 0.1  # YOLOv5n's published 4.5 GFLOPs at 640
    # convolutions scale with the pixel count, so for a plain CNN the two ways agree
    assert abs(gflops(model, 320) * 4 - g640) / g640 < 0.02
    assert gflops(model, (320, 480)) == pytest.approx(g640 * 320 * 480 / 640**2, rel=0.02)


def test_summary_line(caplog):
    model = Model("yolov5s.yaml", verbose=False)
    line = model.info(imgsz=320)
    assert line.startswith("YOLOv5s summary: ")
    assert "7,235,389 parameters, 7,235,389 gradients" in line and "GFLOPs at 320" in line


def test_summary_reports_why_flops_failed():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("cannot run at this size")

    from utils.torch_utils import model_info

    line = model_info(Broken())
    assert "GFLOPs not counted (RuntimeError: cannot run at this size)" in line


def test_attention_flops_are_counted_on_cpu():
    import torch.nn.functional as F

    from utils.flops import count_flops

    class Attend(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.rand(2, 4, 100, 16), torch.rand(2, 4, 30, 16), torch.rand(2, 4, 30, 8)
    # q @ k^T: 2*b*h*Lq*Lk*d, attn @ v: 2*b*h*Lq*Lk*dv
    assert count_flops(Attend(), q, k, v) == 2 * 2 * 4 * 100 * 30 * 16 + 2 * 2 * 4 * 100 * 30 * 8


def test_residual_plugins_start_as_the_pretrained_model():
    """Weights carried into a plug-in config give exactly the pretrained model's output before any training."""
    from models import load_model
    from utils.checkpoint import load_checkpoint
    from models import resolve_weights
    from utils.transfer import transfer_weights

    base = load_model("yolov5n.pt")
    x = torch.rand(1, 3, 160, 224)
    with torch.no_grad():
        want = base(x)[0]
    ckpt = load_checkpoint(resolve_weights("yolov5n.pt"))
    ckpt["model"] = {k: v.float() for k, v in ckpt["model"].items()}
    for cfg in ("yolov5n_biformer.yaml", "yolov5n_hilo.yaml", "yolov5n_slide.yaml"):
        model = Model(cfg, verbose=False)
        report = transfer_weights(model, ckpt)
        assert len(report.mapping) == 349
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x)[0], want, rtol=0, atol=0)


def test_residual_rejects_blocks_that_change_channels():
    d = load_model_config("yolov5n.yaml")
    d["head"].insert(3, [-1, 1, "Residual", ["Conv", 64]])
    with pytest.raises(ValueError, match="channel-preserving"):
        parse_model(d, ch=[3], verbose=False)


def test_layers_shared_by_two_configs_start_from_the_same_weights():
    from models.yolo import Model

    def build(cfg: str, seed: int):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        m = Model(cfg, nc=3, verbose=False)
        assert torch.equal(torch.get_rng_state(), before)  # the build draws nothing from the default generator
        return m

    base, bra, bra_again, bra_other = (build("yolov5n.yaml", 7), build("yolov5n_biformer.yaml", 7),
                                       build("yolov5n_biformer.yaml", 7), build("yolov5n_biformer.yaml", 8))
    pairs = [(base.model[-1], bra.model[-1]), (base.model[20], bra.model[21]), (base.model[23], bra.model[25])]
    for a, b in pairs:  # the fresh 3-class head and the C3 blocks after the inserted plug-ins
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    qkv = [next(m.model[20].m.parameters()) for m in (bra, bra_again, bra_other)]
    assert torch.equal(qkv[0], qkv[1]) and not torch.equal(qkv[0], qkv[2])  # the plug-in follows the seed
