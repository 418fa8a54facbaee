"""The plug-in optimizer's settings: the gates and the blocks at rates of their own (hyp.plugin_block_lr), and the
warmup ramp (hyp.plugin_warmup); by default the gates at plugin_lr, the blocks at 0.7 of it and no ramp, and
plugin_block_lr 1 keeps one group at plugin_lr."""

from __future__ import annotations

import pytest
import torch

from models.yolo import Model
from utils.errors import UserError
from utils.hyp import Hyp
from utils.training.plugin_optim import plugin_optimizer, plugin_parameter_names, plugin_warmup


@pytest.fixture(scope="module")
def bra():
    torch.manual_seed(0)
    model = Model("yolov5n_biformer.yaml", verbose=False)
    return model, plugin_parameter_names(model, None)


def test_defaults_gates_at_plugin_lr_blocks_at_0_7_of_it(bra):
    model, names = bra
    assert Hyp().plugin_block_lr == 0.7 and Hyp().plugin_warmup == 0  # chosen in benchmarks/README.md
    gates, blocks = plugin_optimizer(model, names, Hyp()).param_groups
    assert gates["lr"] == 0.003 and blocks["lr"] == pytest.approx(0.0021)
    assert len(gates["params"]) + len(blocks["params"]) == len(names)


def test_block_lr_one_keeps_one_group_at_plugin_lr(bra):
    model, names = bra
    opt = plugin_optimizer(model, names, Hyp(plugin_block_lr=1.0))
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == opt.param_groups[0]["initial_lr"] == 0.003
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(
        p.numel() for n, p in model.named_parameters() if n in set(names))


def test_block_lr_splits_gates_from_blocks(bra):
    model, names = bra
    opt = plugin_optimizer(model, names, Hyp(plugin_block_lr=0.1))
    gates, blocks = opt.param_groups
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert all(by_id[id(p)].endswith(".gamma") for p in gates["params"]) and len(gates["params"]) == 2
    assert not any(by_id[id(p)].endswith(".gamma") for p in blocks["params"])
    assert len(gates["params"]) + len(blocks["params"]) == len(names)
    assert gates["lr"] == gates["initial_lr"] == 0.003
    assert blocks["lr"] == pytest.approx(0.0003) and blocks["initial_lr"] == pytest.approx(0.0003)


def test_warmup_ramps_each_group_linearly_then_leaves_it(bra):
    model, names = bra
    hyp = Hyp(plugin_block_lr=0.5, plugin_warmup=1.0)
    opt = plugin_optimizer(model, names, hyp)
    for ni, want in ((0, 0.0), (25, 0.25), (100, 1.0)):
        plugin_warmup(opt, ni, 100, hyp, lf_epoch=0.8)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.003 * 0.8 * want, 0.0015 * 0.8 * want])
    for g in opt.param_groups:
        g["lr"] = 0.123
    plugin_warmup(opt, 101, 100, hyp, lf_epoch=0.8)  # after warmup: untouched
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.123]
    plain = plugin_optimizer(model, names, Hyp())
    plugin_warmup(plain, 10, 100, Hyp(), lf_epoch=1.0)  # no ramp by default
    assert plain.param_groups[0]["lr"] == 0.003
    plugin_warmup(None, 10, 100, hyp, 1.0)  # no plug-in optimizer: nothing to do


@pytest.mark.parametrize("key,value", [("plugin_block_lr", 0.0), ("plugin_block_lr", 1.5), ("plugin_warmup", -1.0)])
def test_out_of_range_settings_are_refused_by_name(key, value):
    with pytest.raises(UserError, match=key):
        Hyp.from_dict({key: value})
