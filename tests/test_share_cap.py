"""The plug-in share cap (hyp plugin_share_max, utils/training/share_cap.py): exact on the batches it measured,
inert below the cap and in eval mode, the same on every process, and reached from a hyp file on the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from models.blocks import Residual
from models.yolo import Model
from tests.conftest import ROOT
from utils.training.share_cap import ShareCap


def _branch_share(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Each Residual's rms(gamma * block(x)) / rms(x) on `x` in the model's current mode, computed plainly."""
    out, handles = {}, []
    for name, m in model.named_modules():
        if isinstance(m, Residual):
            def hook(mod, inp, y, name=name, m=m):
                b = (m.gamma.view(1, -1, 1, 1) * m.m(inp[0])).double()
                out[name] = float(b.square().mean().sqrt() / inp[0].double().square().mean().sqrt())
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def _model(gamma: float) -> Model:
    torch.manual_seed(0)
    model = Model("yolov5n_biformer.yaml", verbose=False)
    for m in model.modules():
        if isinstance(m, Residual):
            with torch.no_grad():
                m.gamma.copy_(torch.linspace(0.5, 1.5, m.gamma.numel()) * gamma)
    return model.train()


def test_cap_puts_the_first_layer_exactly_at_the_cap_and_leaves_layers_below_alone():
    x = torch.rand(2, 3, 96, 160)  # non-square; P4 and P5 maps 6x10 and 3x5
    model = _model(1.0)
    before = _branch_share(model, x)
    cap_value = 0.5 * min(before.values())  # both layers above it
    cap = ShareCap(model, cap_value)
    model(x)
    held = cap.step()
    assert set(held) == {"model.20", "model.24"}
    for name, s in held.items():
        assert s == pytest.approx(before[name], rel=1e-5)  # the share it measured is the plain one
    after = _branch_share(model, x)
    # layer 20's input is unchanged, so its share on the same batch is now the cap; layer 24's input moved with
    # layer 20's output, so its share is only near the cap
    assert after["model.20"] == pytest.approx(cap_value, rel=1e-5)
    assert after["model.24"] == pytest.approx(cap_value, rel=0.05)
    assert cap.summary() == {"model.20": 1.0, "model.24": 1.0}

    # below the cap: nothing changes, bit for bit
    gammas = {n: m.gamma.detach().clone() for n, m in model.named_modules() if isinstance(m, Residual)}
    loose = ShareCap(model, 10 * max(before.values()))
    model(x)
    assert loose.step() == {}
    for n, m in model.named_modules():
        if isinstance(m, Residual):
            assert torch.equal(m.gamma, gammas[n])
    cap.remove()
    loose.remove()


def test_cap_sums_accumulated_batches_skips_eval_and_zero_means_off():
    x1, x2 = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    model = _model(1.0)
    s1, s2 = _branch_share(model, x1), _branch_share(model, x2)
    cap = ShareCap(model, 1e-6)
    model(x1)
    model(x2)  # two accumulated batches before one optimizer step
    model.eval()
    model(torch.rand(1, 3, 64, 96))  # a validation pass in between is not a training batch
    model.train()
    held = cap.step()
    # the measured share pools the two batches' sums of squares (equal-sized maps): between the two shares
    lo, hi = sorted((s1["model.20"], s2["model.20"]))
    assert lo <= held["model.20"] <= hi
    assert cap.step() == {}  # the sums start again after a step
    cap.remove()
    off = ShareCap(model, 0.0)
    assert off.layers == {} and off._handles == []


def test_cap_is_the_same_on_every_process(tmp_path):
    # with a process group the sums are all-reduced before the decision: with one process the result equals the
    # local one, and the all-reduce path runs
    import torch.distributed as dist

    x = torch.rand(2, 3, 64, 96)
    local, grouped = _model(1.0), _model(1.0)
    c1 = ShareCap(local, 0.01)
    local(x)
    h1 = c1.step()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        c2 = ShareCap(grouped, 0.01)
        grouped(x)
        h2 = c2.step()
    finally:
        dist.destroy_process_group()
    assert h1 == pytest.approx(h2, rel=1e-6) and h1
    for (n1, m1), (_, m2) in zip(local.named_modules(), grouped.named_modules()):
        if isinstance(m1, Residual):
            torch.testing.assert_close(m1.gamma, m2.gamma, rtol=1e-6, atol=0, msg=n1)


def _train_cmd(tmp_path, hyp_file, name: str) -> list[str]:
    from tests.test_train import _data_yaml

    return [sys.executable, str(ROOT / "train.py"), "--data", str(_data_yaml(tmp_path, 4)), "--epochs", "2",
            "--imgsz", "96", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--noplots",
            "--noautoanchor", "--weights", "yolov5n.pt", "--cfg", "yolov5n_biformer.yaml", "--seed", "1",
            "--project", str(tmp_path / "runs"), "--name", name, "--hyp", str(hyp_file)]


def test_cap_from_a_hyp_file_on_the_command_line(tmp_path):
    """A cap that never binds trains bit for bit as no cap; a tiny one holds the share down and says so."""
    from utils.checkpoint import load_checkpoint

    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, cap in (("off", 0.0), ("loose", 100.0), ("tight", 1e-4)):
        f = tmp_path / f"{name}.yaml"
        f.write_text(yaml.safe_dump({**hyp, "plugin_share_max": cap}))
        r = subprocess.run(_train_cmd(tmp_path, f, name), capture_output=True, text=True, timeout=600, env=env,
                           cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = (r.stderr + r.stdout, load_checkpoint(tmp_path / "runs" / name / "weights" / "last.pt"))
    (log_off, ck_off), (log_loose, ck_loose), (log_tight, ck_tight) = runs["off"], runs["loose"], runs["tight"]
    for k, v in ck_off["model"].items():
        assert torch.equal(ck_loose["model"][k], v), k
    assert "held at plugin_share_max" not in log_off + log_loose
    assert re.search(r"Plug-in share held at plugin_share_max 0\.0001 \(hyp\) in model\.20 \d+%, model\.24 \d+% "
                     r"of this epoch's steps", log_tight), log_tight[-3000:]
    def final_share(log: str) -> float:  # best.pt's layer-20 share on the val images, in percent
        return float(re.findall(r"rms\(x\): model\.20 ([\d.e-]+)%", log.split("Validating")[-1])[-1])

    # the cap is 0.01% on the (mosaic, train-mode) training batches; on val images in eval mode it reads a few
    # times that, and well under the uncapped run's share
    assert final_share(log_tight) < final_share(log_off) / 3
    gamma = {k: v for k, v in ck_tight["model"].items() if k.endswith("gamma")}
    gamma_off = {k: v for k, v in ck_off["model"].items() if k.endswith("gamma")}
    assert all(gamma[k].abs().mean() < gamma_off[k].abs().mean() for k in gamma)
