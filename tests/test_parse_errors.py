"""parse_model's errors name the YAML row they come from."""

from __future__ import annotations

import pytest

from models.config import load_model_config
from models.yolo import Model
from utils.errors import UserError


def _cfg(edit):
    d = load_model_config("yolov5n.yaml")
    edit(d)
    return d


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["head"].__setitem__(2, [[-1, 60], 1, "Concat", [1]]),
     r"model YAML layer 12 \[\[-1, 60\], 1, 'Concat', \[1\]\]: from index 60 is out of range; valid: -1 or a "
     r"layer index 0..11"),
    (lambda d: d["backbone"].__setitem__(0, [-2, 1, "Conv", [64, 6, 2, 2]]),
     r"model YAML layer 0 .*: from index -2 is out of range; valid: -1 \(the previous layer\)"),
    (lambda d: d["backbone"].__setitem__(1, [-1, 1, "Conv", [128, 3, 2, 1, 1, 1, True, 7, 8, 9]]),
     r"model YAML layer 1 \[-1, 1, 'Conv', .*\]: TypeError: .*positional argument"),
    (lambda d: d["head"].insert(4, [-1, 1, "BiLevelRoutingAttention", [7, 8, None, None, 4, 4, None,
                                                                      "identity", 99]]),
     r"model YAML layer 14 .*: topk must be in 1..n_win\^2 = 49 regions, got topk=99"),
])
def test_errors_name_the_row(edit, message):
    with pytest.raises(UserError, match=message):
        Model(_cfg(edit), verbose=False)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["backbone"].__setitem__(0, [-1, 1, "Conv", [10**9, 6, 2, 2]]),
     r"layer 0 .*: 250000000 output channels \(after width_multiple 0.25\); valid: 1..16384"),
    (lambda d: d["backbone"].__setitem__(0, [-1, 1, "Conv", [-64, 6, 2, 2]]),
     r"layer 0 .*: -16 output channels"),
    (lambda d: d.update(depth_multiple=10**6, scales={}), r"depth_multiple: 1000000; valid: a number in \(0, 100\]"),
    (lambda d: d["backbone"].__setitem__(2, [-1, 10**6, "C3", [128]]), r"layer 2 .*: 330000 repeats .*at most 100"),
    (lambda d: d["backbone"].__setitem__(2, [-1, 0, "C3", [128]]), r"layer 2 .*: number 0; valid: an integer >= 1"),
    (lambda d: d.__setitem__("nc", 10**9), r"nc: 1000000000; valid: an integer 1..100000"),
    (lambda d: d.update(width_multiple="wide", scales={}), r"width_multiple: 'wide'"),
])
def test_sizes_no_model_can_have_are_refused_at_once(edit, message):
    """Channels, repeats and classes that no model can have are one-line errors before anything is allocated
    (10^9 channels asked for 108 GB, depth x10^6 built modules for ever, nc 10^9 ran out of memory)."""
    with pytest.raises(UserError, match=message):
        Model(_cfg(edit), verbose=False)


def test_unknown_module_is_a_user_error_with_close_matches(tmp_path):
    """A typo in a module name: a one-line error from the command line (exit 2) that suggests the close names."""
    import subprocess
    import sys

    import yaml

    from models.yolo import parse_model
    from tests.conftest import ROOT

    d = _cfg(lambda d: d["backbone"].__setitem__(1, [-1, 1, "Cnov", [128, 3, 2]]))
    with pytest.raises(KeyError, match=r"unknown module 'Cnov' in model YAML \(did you mean Conv"):
        parse_model(d, ch=[3], verbose=False)  # still a KeyError for code that catches one
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(d))
    data = tmp_path / "nc1e9.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images\nval: images\nnc: 1000000000\n")
    for args, want in ((["--cfg", str(tmp_path / "typo.yaml"), "--weights", ""],
                        "unknown module 'Cnov' in model YAML (did you mean Conv"),
                       (["--data", str(data)], "'nc' must be an integer 1..100000, got 1000000000")):
        r = subprocess.run([sys.executable, str(ROOT / "train.py"), *args, "--project", str(tmp_path / "runs"),
                            "--epochs", "1", "--device", "cpu"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert r.stderr.strip().count("\n") == 0 and want in r.stderr, r.stderr


def test_plugin_arguments_by_name(tmp_path):
    """A plug-in's arguments may be named in a mapping at the end of its args (BRA's topk was the 10th positional
    argument): the same module as the positional form, carried through a checkpoint; a wrong name is a one-line
    error naming the row."""
    import torch

    from models import load_model
    from models.attention.bra import BiLevelRoutingAttention
    from models.attention.hilo import HiLo
    from utils.checkpoint import save_checkpoint

    named = load_model_config("yolov5n_biformer.yaml")
    named["head"][10] = [-1, 1, "Residual", ["BiLevelRoutingAttention", {"topk": 8, "side_dwconv": 5}]]
    named["head"][14] = [-1, 1, "HiLo", {"window_size": 4}]
    positional = load_model_config("yolov5n_biformer.yaml")
    positional["head"][10] = [-1, 1, "Residual", ["BiLevelRoutingAttention", 7, 8, None, None, 4, 4, None,
                                                 "identity", 8, "qkvo", False, False, False, 5]]
    positional["head"][14] = [-1, 1, "HiLo", [8, False, None, 0.0, 0.0, 4]]
    torch.manual_seed(0)
    a = Model(named, verbose=False)
    torch.manual_seed(0)
    b = Model(positional, verbose=False)
    bra = a.model[20].m
    assert isinstance(bra, BiLevelRoutingAttention) and bra.topk == 8 and isinstance(a.model[24], HiLo)
    assert a.model[24].ws == 4
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    pt = save_checkpoint({"model": a.state_dict(), "yaml": a.yaml, "names": [str(i) for i in range(80)]},
                         tmp_path / "named.pt")
    assert load_model(pt).model[20].m.topk == 8
    for row, match in (([-1, 1, "Residual", ["BiLevelRoutingAttention", {"top_k": 8}]], r"layer 20 .*top_k"),
                       ([-1, 1, "Residual", ["BiLevelRoutingAttention", {"topk": 8}, 3]], r"layer 20 .*one mapping"),
                       ([-1, 1, "Residual", ["BiLevelRoutingAttention", {8: 8}]], r"layer 20 .*names as keys")):
        d = load_model_config("yolov5n_biformer.yaml")
        d["head"][10] = row
        with pytest.raises(UserError, match=match):
            Model(d, verbose=False)
