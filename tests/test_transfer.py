"""Weight transfer by structure: official yolov5n into configs with inserted layers and another nc."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from models.config import load_model_config
from models.registry import inserts_dim, lookup, register_module
from models.yolo import Model
from utils.checkpoint import load_checkpoint
from tests.conftest import ROOT
from utils.transfer import transfer_weights


class ZeroGateBlock(nn.Module):
    """A channel-preserving plug-in that starts as the identity: x + gamma * proj(x) with gamma = 0."""

    def __init__(self, c: int):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)
        self.norm = nn.BatchNorm2d(c)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x + self.gamma * self.norm(self.proj(x))


def _register():
    try:
        lookup("ZeroGateBlock")
    except KeyError:
        register_module("ZeroGateBlock", ZeroGateBlock, inserts_dim)


@pytest.fixture(scope="module")
def official():
    return load_checkpoint(ROOT / "weights" / "yolov5n.pt")


def _inserted_cfg(name="ZeroGateBlock", nc=None):
    """yolov5n_biformer's layout (plug-ins at 20 and 24) with `name` in place of the BiFormer block."""
    d = load_model_config("yolov5n_biformer.yaml")
    for row in d["head"]:
        if row[2] == "Residual" and row[3] == ["BiLevelRoutingAttention"]:
            row[2], row[3] = name, []
    if nc:
        d["nc"] = nc
    return d


def test_inserted_layers_carry_everything_and_keep_the_outputs(official):
    _register()
    torch.manual_seed(0)
    model = Model(_inserted_cfg(), verbose=False)
    report = transfer_weights(model, official)
    assert report.summary("yolov5n.pt") == (
        "Transferred 349/349 tensors from yolov5n.pt; new: model.20 ZeroGateBlock, model.24 ZeroGateBlock")
    # the shift: old 20 -> 21, old 23 -> 25, Detect 24 -> 26; layers before 20 keep their index
    assert report.mapping["model.21.cv1.conv.weight"] == "model.20.cv1.conv.weight"
    assert report.mapping["model.25.m.0.cv2.bn.running_var"] == "model.23.m.0.cv2.bn.running_var"
    assert report.mapping["model.26.anchors"] == "model.24.anchors"
    state = model.state_dict()
    assert all(torch.equal(state[k], official["model"][v].float()) for k, v in report.mapping.items())
    # with the plug-ins at identity, the transferred model predicts exactly what yolov5n predicts
    ref = Model(official["yaml"], verbose=False)
    ref.load_state_dict({k: v.float() for k, v in official["model"].items()})
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[0], ref.eval()(x)[0], rtol=1e-5, atol=1e-4)


def test_name_matching_would_lose_most_of_the_neck(official):
    """What YOLOv5's intersect_dicts (same name and shape) would carry here: nothing after the insertion."""
    _register()
    model = Model(_inserted_cfg(), verbose=False)
    by_name = [k for k, v in model.state_dict().items()
               if k in official["model"] and official["model"][k].shape == v.shape]
    assert len(by_name) < 300
    assert not any(k.startswith(("model.21.", "model.25.", "model.26.")) for k in by_name)


def test_other_nc_keeps_the_body_and_reports_the_head(official):
    _register()
    model = Model(_inserted_cfg(nc=3), verbose=False)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("model.26.m.")}
    report = transfer_weights(model, official)
    s = report.summary("yolov5n.pt")
    assert s.startswith("Transferred 343/349 tensors from yolov5n.pt; new: model.20 ZeroGateBlock, model.24 "
                        "ZeroGateBlock; fresh (shape differs): model.26.m.0.weight 255x64x1x1->24x64x1x1")
    assert len(report.mismatched) == 6 and "model.26.anchors" in report.mapping
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # the new head was not touched


def test_same_architecture_is_a_plain_copy(official):
    model = Model("yolov5n.yaml", verbose=False)
    report = transfer_weights(model, official, exclude=("anchors",))
    assert len(report.mapping) == 348 and report.excluded == ["model.24.anchors"] and not report.new
    assert all(k == v for k, v in report.mapping.items())


def test_biformer_config_report(official):
    """The shipped BiFormer neck: everything of yolov5n carried over, the two BRA blocks new."""
    model = Model("yolov5n_biformer.yaml", verbose=False)
    report = transfer_weights(model, official)
    assert report.summary("yolov5n.pt") == ("Transferred 349/349 tensors from yolov5n.pt; "
                                            "new: model.20 BiLevelRoutingAttention, model.24 BiLevelRoutingAttention")
    state = model.state_dict()
    assert all(torch.equal(state[k], official["model"][v].float()) for k, v in report.mapping.items())
    assert not any(k.startswith(("model.20.", "model.24.")) for k in report.mapping)
