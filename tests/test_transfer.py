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


def test_c3ghost_takes_c3_convs(official):
    """Official yolov5s-ghost.yaml at n size: each C3Ghost is a C3 whose Bottlenecks became GhostBottlenecks (as
    official YOLOv5's C3Ghost(C3)), so yolov5n's C3 cv1/cv2/cv3 carry into it; GhostConv layers (where yolov5n has
    Conv) and the GhostBottleneck stacks start fresh and are reported."""
    import yaml

    d = yaml.safe_load((ROOT / "tests" / "fixtures" / "official_yamls" / "yolov5s-ghost.yaml").read_text())
    d = dict(d, width_multiple=0.25, depth_multiple=0.33)
    torch.manual_seed(0)
    model = Model(d, verbose=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, official)
    c3ghost = [i for i, m in enumerate(model.model) if m.type == "C3Ghost"]
    ghostconv = [i for i, m in enumerate(model.model) if m.type == "GhostConv"]
    assert c3ghost == [2, 4, 6, 8, 13, 17, 20, 23] and ghostconv == [1, 3, 5, 7, 10, 14, 18, 21]
    convs = {k: v for k, v in report.mapping.items() if int(k.split(".")[1]) in c3ghost}
    assert len(convs) == 8 * 3 * 6  # cv1, cv2, cv3 of each: conv.weight and 5 BatchNorm tensors
    assert all(k == v and k.split(".")[2] in ("cv1", "cv2", "cv3") for k, v in convs.items())
    state = model.state_dict()
    assert all(torch.equal(state[k], official["model"][v].float()) for k, v in report.mapping.items())
    # 144 C3Ghost tensors + Conv 0 (6), SPPF 9 (12) and Detect 24 (7) of equal signature
    assert len(report.mapping) == 169 and {k.split(".")[1] for k in report.mapping} == {
        str(i) for i in (0, *c3ghost, 9, 24)}
    assert report.new == [(i, "GhostConv") for i in ghostconv]
    assert report.fresh and all(k.split(".")[2] == "m" and int(k.split(".")[1]) in c3ghost for k in report.fresh)
    assert all(torch.equal(state[k], before[k]) for k in before if k not in report.mapping)  # fresh stays fresh
    s = report.summary("yolov5n.pt")
    assert s.startswith("Transferred 169/349 tensors from yolov5n.pt; new: model.1 GhostConv, model.3 GhostConv")
    assert "fresh (no counterpart): model.2.m (24 tensors)" in s and "not used: model.1 Conv" in s
