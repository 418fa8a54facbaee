"""BiLevelRoutingAttention in the detector: configs at every scale, a BiFormer YAML as users write it, training
step at 640, stride probe, fuse, checkpoints, and GFLOPs that include BRA's attention."""

from __future__ import annotations

import pytest
import torch

from models import load_model
from models.attention.bra import BiLevelRoutingAttention
from models.attention.reference.bra import hand_flops
from models.yolo import Model
from utils.checkpoint import save_checkpoint
from utils.flops import count_flops
from utils.torch_utils import parameter_counts

from .conftest import open_residuals, plugin_layers

# configs/yolov5_biformer.yaml: YOLOv5 plus 2 x (4 C^2 + 14 C) for BRA at C = P4 and P5 concat widths, plus
# the C gammas of each Residual wrapper
PARAMS = {"n": 2_205_597, "s": 8_557_629, "m": 24_156_957, "l": 51_829_629, "x": 94_970_205}
YOLOV5_PARAMS = {"n": 1_872_157, "s": 7_235_389, "m": 21_190_557, "l": 46_563_709, "x": 86_749_405}

# A BiFormer YOLOv5 YAML as it is published for YOLOv5 v6.1 (upstream module names, BRA rows with no args).
BIFORMER_YAML = """\
# YOLOv5 🚀 by Ultralytics, GPL-3.0 license

# Parameters
nc: 80  # number of classes
depth_multiple: 1.0  # model depth multiple
width_multiple: 1.0  # layer channel multiple
anchors:
  - [10,13, 16,30, 33,23]  # P3/8
  - [30,61, 62,45, 59,119]  # P4/16
  - [116,90, 156,198, 373,326]  # P5/32

# YOLOv5 v6.0 backbone
backbone:
  # [from, number, module, args]
  [[-1, 1, Conv, [64, 6, 2, 2]],  # 0-P1/2
   [-1, 1, Conv, [128, 3, 2]],  # 1-P2/4
   [-1, 3, C3, [128]],
   [-1, 1, Conv, [256, 3, 2]],  # 3-P3/8
   [-1, 6, C3, [256]],
   [-1, 1, Conv, [512, 3, 2]],  # 5-P4/16
   [-1, 9, C3, [512]],
   [-1, 1, Conv, [1024, 3, 2]],  # 7-P5/32
   [-1, 3, C3, [1024]],
   [-1, 1, SPPF, [1024, 5]],  # 9
  ]

# YOLOv5 v6.0 head
head:
  [[-1, 1, Conv, [512, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 6], 1, Concat, [1]],  # cat backbone P4
   [-1, 3, C3, [512, False]],  # 13

   [-1, 1, Conv, [256, 1, 1]],
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],
   [[-1, 4], 1, Concat, [1]],  # cat backbone P3
   [-1, 3, C3, [256, False]],  # 17 (P3/8-small)

   [-1, 1, Conv, [256, 3, 2]],
   [[-1, 14], 1, Concat, [1]],  # cat head P4
   [-1, 1, BiLevelRoutingAttention, []],
   [-1, 3, C3, [512, False]],  # 20 (P4/16-medium)

   [-1, 1, Conv, [512, 3, 2]],
   [[-1, 10], 1, Concat, [1]],  # cat head P5
   [-1, 1, BiLevelRoutingAttention, []],
   [-1, 3, C3, [1024, False]],  # 23 (P5/32-large)

   [[17, 21, 25], 1, Detect, [nc, anchors]],  # Detect(P3, P4, P5)
  ]
"""


def _bras(model) -> list[BiLevelRoutingAttention]:
    return [m for _, m in plugin_layers(model, BiLevelRoutingAttention)]


@pytest.mark.parametrize("scale", "nsmlx")
def test_biformer_config_builds_at_every_scale_with_pinned_parameters(scale):
    model = Model(f"yolov5{scale}_biformer.yaml", verbose=False)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]  # the stride probe ran through both BRA layers
    assert parameter_counts(model)[0] == PARAMS[scale]
    bras = _bras(model)
    assert [i for i, _ in plugin_layers(model, BiLevelRoutingAttention)] == [20, 24]
    assert model.model[-1].f == [17, 21, 25]
    # each BRA: 4 C^2 + 14 C, plus the C gammas of its Residual wrapper
    assert sum(4 * m.dim**2 + 15 * m.dim for m in bras) == PARAMS[scale] - YOLOV5_PARAMS[scale]


def test_published_biformer_yaml_builds_and_runs(tmp_path):
    path = tmp_path / "yolov5_BiFormer.yaml"
    path.write_text(BIFORMER_YAML, encoding="utf-8")
    model = Model(str(path), verbose=False).eval()
    assert parameter_counts(model)[0] == PARAMS["l"] - 512 - 1024  # the l scale, bare BRA (no Residual gammas)
    assert [(m.dim, m.n_win, m.topk) for m in _bras(model)] == [(512, 7, 4), (1024, 7, 4)]
    with torch.no_grad():
        pred, maps = model(torch.rand(1, 3, 96, 64))
    assert pred.shape == (1, 3 * (12 * 8 + 6 * 4 + 3 * 2), 85)


def test_train_step_at_640_batch_2():
    model = Model("yolov5n_biformer.yaml", verbose=False).train()
    open_residuals(model)
    maps = model(torch.rand(2, 3, 640, 640))
    assert [tuple(m.shape[2:4]) for m in maps] == [(80, 80), (40, 40), (20, 20)]
    sum(m.float().square().mean() for m in maps).backward()
    for m in _bras(model):
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_fuse_and_checkpoint_round_trip(tmp_path):
    model = Model("yolov5n_biformer.yaml", verbose=False).eval()
    x = torch.rand(1, 3, 224, 320)  # letterbox-like: P4 14x20, P5 7x10
    with torch.no_grad():
        y = model(x)[0]
        path = save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": model.names},
                               tmp_path / "bra.pt")
        loaded = load_model(path)
        assert torch.equal(loaded(x)[0], y)
        torch.testing.assert_close(model.fuse()(x)[0], y, atol=1e-3, rtol=1e-4)


def test_summary_gflops_include_bra_attention():
    """The BiFormer model costs YOLOv5n plus both BRA layers counted by hand, at 640 (P4 40x40, P5 20x20)."""
    bra, base = Model("yolov5n_biformer.yaml", verbose=False), Model("yolov5n.yaml", verbose=False)
    x = torch.zeros(1, 3, 640, 640)
    p4, p5 = _bras(bra)
    assert count_flops(bra, x) - count_flops(base, x) == hand_flops(p4, 1, 40, 40) + hand_flops(p5, 1, 20, 20)
    tokens, keys, c = 42 * 42, 4 * 36, 128  # padded P4 map, top-4 regions of 6x6 tokens, channels
    qkvo_attention_lepe = 2 * tokens * (4 * c * c + keys * 2 * c + 9 * c)
    assert hand_flops(p4, 1, 40, 40) == qkvo_attention_lepe + 4 * 49 * c * c + 2 * 49 * 49 * c  # + routing
    assert "GFLOPs at 640" in bra.info()


def test_yaml_row_can_switch_on_mask_padding():
    from models.config import load_model_config

    d = load_model_config("yolov5n_biformer.yaml")
    args = [7, 8, None, None, 4, 4, None, "identity", 4, "qkvo", False, False, False, 3, True, True]
    for row in d["head"]:
        if row[2] == "Residual" and row[3] == ["BiLevelRoutingAttention"]:
            row[3] = ["BiLevelRoutingAttention", *args]
    model = Model(d, verbose=False)
    assert [m.mask_padding for m in _bras(model)] == [True, True]
    assert parameter_counts(model)[0] == PARAMS["n"]
