"""Every official YOLOv5 detection YAML builds unchanged, with official YOLOv5's parameter count and activation.

The YAMLs are official YOLOv5's own (the `yolov5` 7.0.14 package's models/*.yaml and models/hub/*.yaml, copied
unchanged into tests/fixtures/official_yamls; see tests/fixtures/README.md).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml

import models.blocks
import models.common
import models.ghost
import models.transformer
from models import model_from_checkpoint
from models.common import ACTIVATIONS, Conv, parse_activation
from models.registry import TORCH_NN_MODULES, lookup
from models.yolo import Model, parse_model
from utils.checkpoint import load_checkpoint
from utils.errors import UserError

OFFICIAL_YAMLS = Path(__file__).parent / "fixtures" / "official_yamls"

# Parameter counts of official YOLOv5 (nc=80), obtained by building each YAML once with official YOLOv5's own
# `models.yolo.Model` from the `yolov5==7.0.14` wheel (pip download yolov5==7.0.14 --no-deps, unzipped; its
# imports pandas/requests/seaborn/psutil installed to a side folder, `ultralytics` and `pkg_resources` stubbed)
# and summing `p.numel()` over `model.parameters()`; each matches the "summary: ... parameters" line it prints.
# State dict names and shapes and module counts were compared too and are identical for every new block.
OFFICIAL_PARAMS = {
    "yolov3-spp.yaml": 62_998_749,
    "yolov3-tiny.yaml": 8_852_366,
    "yolov3.yaml": 61_949_149,
    "yolov5-bifpn.yaml": 46_825_853,
    "yolov5-fpn.yaml": 41_117_565,
    "yolov5-p2.yaml": 47_493_372,
    "yolov5-p34.yaml": 5_331_518,
    "yolov5-p6.yaml": 76_770_172,
    "yolov5-p7.yaml": 144_281_723,
    "yolov5-panet.yaml": 46_563_709,
    "yolov5l.yaml": 46_563_709,
    "yolov5l6.yaml": 76_770_172,
    "yolov5m.yaml": 21_190_557,
    "yolov5m6.yaml": 35_731_932,
    "yolov5n.yaml": 1_872_157,
    "yolov5n6.yaml": 3_246_940,
    "yolov5s-LeakyReLU.yaml": 7_235_389,
    "yolov5s-ghost.yaml": 3_897_605,
    "yolov5s-transformer.yaml": 7_235_645,
    "yolov5s.yaml": 7_235_389,
    "yolov5s6.yaml": 12_626_620,
    "yolov5x.yaml": 86_749_405,
    "yolov5x6.yaml": 140_794_780,
}
LICENSE_LINE = "# YOLOv5 🚀 by Ultralytics, AGPL-3.0 license"


def conv_acts(model: nn.Module) -> list[nn.Module]:
    """The activation of every Conv (and Conv subclass) of `model`."""
    return [m.act for m in model.modules() if isinstance(m, Conv)]


def test_the_official_yamls_ship_unchanged():
    files = sorted(p.name for p in OFFICIAL_YAMLS.glob("*.yaml"))
    assert files == sorted(OFFICIAL_PARAMS)
    for name in files:
        assert (OFFICIAL_YAMLS / name).read_text(encoding="utf-8").splitlines()[0] == LICENSE_LINE, name


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_official_yaml_builds_with_official_parameter_count_and_runs(name):
    model = Model(OFFICIAL_YAMLS / name, verbose=False).eval()
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    acts = {type(a) for a in conv_acts(model)} - {nn.Identity}  # act=False inside Ghost blocks
    assert acts == ({nn.LeakyReLU} if "LeakyReLU" in name else {nn.SiLU})
    strides = [int(s) for s in model.stride]
    size = max(64, max(strides))  # P7 needs 128 so its deepest map has a cell
    with torch.no_grad():
        pred = model(torch.rand(1, 3, size, size))[0]
    na = model.model[-1].na
    assert pred.shape == (1, na * sum((size // s) ** 2 for s in strides), 85)
    assert torch.isfinite(pred).all()


def test_leaky_relu_applies_to_this_model_only():
    leaky = Model(OFFICIAL_YAMLS / "yolov5s-LeakyReLU.yaml", verbose=False)
    acts = conv_acts(leaky)
    assert len(acts) == 57 and all(isinstance(a, nn.LeakyReLU) and a.negative_slope == 0.1 for a in acts)
    assert len({id(a) for a in acts}) == 1  # one shared instance, as YOLOv5's Conv.default_act
    assert isinstance(Conv.default_act, nn.SiLU)
    after = Model(OFFICIAL_YAMLS / "yolov5s.yaml", verbose=False)
    assert all(isinstance(a, nn.SiLU) for a in conv_acts(after))
    assert all(isinstance(a, nn.SiLU) for a in conv_acts(Model("yolov5n_biformer.yaml", verbose=False)))
    # the activation travels with the model's YAML, so a checkpoint rebuilds it
    again = model_from_checkpoint({"model": leaky.state_dict(), "yaml": leaky.yaml, "names": []})
    assert all(isinstance(a, nn.LeakyReLU) and a.negative_slope == 0.1 for a in conv_acts(again))


def test_a_build_that_fails_leaves_the_default_activation():
    d = yaml.safe_load((OFFICIAL_YAMLS / "yolov5s-LeakyReLU.yaml").read_text(encoding="utf-8"))
    d["head"][2] = [[-1, 6], 1, "NoSuchBlock", [1]]
    with pytest.raises(KeyError):
        Model(d, verbose=False)
    assert isinstance(Conv.default_act, nn.SiLU)


@pytest.mark.parametrize("spec,cls,kwargs", [
    ("nn.LeakyReLU(0.1)", nn.LeakyReLU, {"negative_slope": 0.1}),
    ("nn.LeakyReLU(negative_slope=-0.2, inplace=True)", nn.LeakyReLU, {"negative_slope": -0.2, "inplace": True}),
    ("torch.nn.ReLU()", nn.ReLU, {}),
    (" nn.Hardswish() ", nn.Hardswish, {}),
    ("nn.Mish()", nn.Mish, {}),
    ("nn.SiLU", nn.SiLU, {}),
])
def test_allowed_activations_are_parsed_not_evaluated(spec, cls, kwargs):
    act = parse_activation(spec)
    assert type(act) is cls
    for k, v in kwargs.items():
        assert getattr(act, k) == v


@pytest.mark.parametrize("spec,lists_allowed", [
    ("nn.Softmax2d()", True),  # a torch.nn class, not an allow-listed activation
    ("nn.Conv2d(3, 3, 1)", True),
    ("__import__('os').system('touch /tmp/pwned')", True),
    ("eval('nn.ReLU()')", True),
    ("nn.ReLU().forward", True),
    ("nn.LeakyReLU(**{'negative_slope': 0.1})", True),
    ("nn.LeakyReLU(0.1", True),  # not Python
    ("", True),
    (0.1, True),
    ("nn.LeakyReLU(x)", False),  # a name, not a constant
    ("nn.LeakyReLU(0.1 * 2)", False),
    ("nn.LeakyReLU('0.1')", False),
    ("nn.LeakyReLU(0.1, True, 3)", False),  # too many arguments
])
def test_other_activations_are_refused_naming_the_value(spec, lists_allowed):
    d = yaml.safe_load((OFFICIAL_YAMLS / "yolov5n.yaml").read_text(encoding="utf-8"))
    d["activation"] = spec
    with pytest.raises(UserError) as e:
        parse_model(d, ch=[3], verbose=False)
    assert f"activation {spec!r}" in str(e.value)
    if lists_allowed:
        assert all(f"{name}()" in str(e.value) for name in ACTIVATIONS)
    assert not Path("/tmp/pwned").exists() and isinstance(Conv.default_act, nn.SiLU)


def test_yaml_torch_names_come_from_an_allow_list():
    for name, (cls, _) in TORCH_NN_MODULES.items():
        assert lookup(name).cls is cls and cls is getattr(nn, name.removeprefix("nn."))
    d = yaml.safe_load((OFFICIAL_YAMLS / "yolov3-tiny.yaml").read_text(encoding="utf-8"))
    d["backbone"][1] = [-1, 1, "nn.Module", []]  # a torch.nn attribute, but not a layer a YAML may name
    with pytest.raises(KeyError) as e:
        parse_model(d, ch=[3], verbose=False)
    msg = str(e.value)
    assert "layer 1" in msg and "'nn.Module'" in msg and "nn.MaxPool2d" in msg and "C3Ghost" in msg


def test_unknown_module_error_names_the_row():
    d = yaml.safe_load((OFFICIAL_YAMLS / "yolov5s.yaml").read_text(encoding="utf-8"))
    d["head"][3] = [-1, 3, "C3x", [512, False]]
    with pytest.raises(KeyError) as e:
        parse_model(d, ch=[3], verbose=False)
    assert "layer 13 [-1, 3, 'C3x', [512, False]]: unknown module 'C3x'" in str(e.value)


# A small model with every class the hub checkpoints pickle beyond yolov5s's.
_TINY = {
    "nc": 2, "depth_multiple": 1.0, "width_multiple": 0.125, "activation": "nn.LeakyReLU(0.1)",
    "anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]],
    "backbone": [
        [-1, 1, "Conv", [64, 6, 2, 2]],  # 0 /2
        [-1, 1, "GhostConv", [128, 3, 2]],  # 1 /4
        [-1, 1, "C3Ghost", [128]],
        [-1, 1, "nn.MaxPool2d", [2, 2, 0]],  # 3 /8
        [-1, 1, "C3TR", [128]],  # 4
        [-1, 1, "GhostBottleneck", [256, 3, 2]],  # 5 /16
        [-1, 1, "SPP", [256, [5, 9, 13]]],
        [-1, 1, "nn.ZeroPad2d", [[0, 1, 0, 1]]],
        [-1, 1, "nn.MaxPool2d", [2, 1, 0]],  # 8
    ],
    "head": [[[4, 8], 1, "Detect", ["nc", "anchors"]]],
}


def test_official_style_checkpoint_with_hub_blocks_loads(tmp_path, monkeypatch):
    """Official .pt files pickle whole modules under models.common.X; the restricted unpickler takes the hub
    models' blocks (C3TR with nn.Linear and nn.MultiheadAttention, Ghost blocks, nn.ZeroPad2d) by name."""
    torch.manual_seed(0)
    model = Model(_TINY, verbose=False).eval()
    blocks = (models.blocks.Conv, models.blocks.Bottleneck, models.blocks.C3, models.blocks.SPP, models.blocks.SPPF,
              models.blocks.Concat)
    for cls in blocks + (models.transformer.C3TR, models.transformer.TransformerBlock,
                         models.transformer.TransformerLayer, models.ghost.GhostConv, models.ghost.GhostBottleneck,
                         models.ghost.C3Ghost, models.ghost.DWConv):
        assert getattr(models.common, cls.__name__) is cls
        monkeypatch.setattr(cls, "__module__", "models.common")  # the names official YOLOv5 pickles them by
    path = tmp_path / "hub.pt"
    torch.save({"epoch": -1, "model": model, "ema": None, "optimizer": None}, path)
    monkeypatch.undo()
    with pytest.raises(pickle.UnpicklingError):  # what the file is: pickled modules, refused by torch's default
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path)
    assert ckpt.legacy and ckpt["model"].keys() == model.state_dict().keys()
    loaded = model_from_checkpoint(ckpt).eval()
    assert isinstance(loaded.model[7], nn.ZeroPad2d) and isinstance(conv_acts(loaded)[0], nn.LeakyReLU)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])
