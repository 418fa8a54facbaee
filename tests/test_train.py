"""train.py end to end on a few coco128 images, resume after a simulated kill, and the optimisation pieces."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

import train
from tests.conftest import ROOT
from utils.checkpoint import load_checkpoint
from utils.training.loss import ComputeLoss
from utils.training.optim import EarlyStopping, ModelEMA, linear_lr, one_cycle, smart_optimizer
from utils.training.run_files import RESULTS_KEYS, ResultsLog

COCO = ROOT / "data" / "coco128"


def _data_yaml(tmp: Path, n: int) -> Path:
    """A data YAML whose train and val splits are the first n coco128 images."""
    ims = sorted((COCO / "images" / "train2017").glob("*.jpg"))[:n]
    (tmp / f"ims{n}.txt").write_text("".join(f"{p}\n" for p in ims))
    names = yaml.safe_load((ROOT / "data" / "coco128.yaml").read_text())["names"]
    f = tmp / f"coco{n}.yaml"
    f.write_text(yaml.safe_dump({"path": str(tmp), "train": f"ims{n}.txt", "val": f"ims{n}.txt", "names": names}))
    return f


def _opts(tmp: Path, **kw) -> dict:
    base = dict(data=str(_data_yaml(tmp, 4)), imgsz=96, batch_size=2, epochs=2, workers=0, device="cpu",
                project=str(tmp / "runs"), noplots=True, noautoanchor=True)
    return {**base, **kw}


class _Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch):
    saved = {}
    real_checkpoint = train._checkpoint

    def record(r, epoch):
        ckpt = real_checkpoint(r, epoch)
        saved[(r.save_dir.name, epoch)] = {k: ckpt[k] for k in ("model", "ema", "optimizer", "updates")}
        return ckpt

    monkeypatch.setattr(train, "_checkpoint", record)
    a = train.run(**_opts(tmp_path, name="full"))

    real_epoch = train._train_epoch

    def kill_at_epoch_1(r, epoch, nw, *rest):
        if epoch == 1:
            raise _Killed  # as if the process died after epoch 0 was saved
        return real_epoch(r, epoch, nw, *rest)

    monkeypatch.setattr(train, "_train_epoch", kill_at_epoch_1)
    with pytest.raises(_Killed):
        train.run(**_opts(tmp_path, name="killed"))
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
    last = tmp_path / "runs" / "killed" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0
    with pytest.raises(ValueError, match="not resumable"):  # a finished run's checkpoints are stripped
        train.run(resume=str(tmp_path / "runs" / "full" / "weights" / "last.pt"))
    b = train.run(resume=True, project=str(tmp_path / "runs"))  # bare --resume: the latest last.pt
    assert Path(b.save_dir) == last.parent.parent and b.opt.epochs == 2

    full, resumed = saved[("full", 1)], saved[("killed", 1)]
    assert resumed["updates"] == full["updates"] > 0
    for part in ("model", "ema"):
        for k, v in full[part].items():
            torch.testing.assert_close(resumed[part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part} {k}")
    for s_full, s_res in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        torch.testing.assert_close(s_res["momentum_buffer"], s_full["momentum_buffer"], rtol=1e-5, atol=1e-6)
    assert [g["lr"] for g in full["optimizer"]["param_groups"]] == pytest.approx(
        [g["lr"] for g in resumed["optimizer"]["param_groups"]])
    rows_a = ResultsLog(Path(a.save_dir) / "results.csv").read()
    rows_b = ResultsLog(Path(b.save_dir) / "results.csv").read()
    assert list(rows_b["epoch"]) == [0, 1]  # the resumed run appended to the killed run's log
    np.testing.assert_allclose(rows_b["train/box_loss"], rows_a["train/box_loss"], rtol=1e-4)


def test_smoke_train_then_val_and_detect(tmp_path):
    opt = train.run(**_opts(tmp_path, epochs=1, imgsz=128, noplots=False,
                            data=str(_data_yaml(tmp_path, 8)), batch_size=4))
    save_dir = Path(opt.save_dir)
    assert save_dir == tmp_path / "runs" / "exp"
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "labels.jpg",
              "train_batch0.jpg", "train_batch1.jpg", "hyp.yaml", "opt.yaml", "confusion_matrix.png"):
        assert (save_dir / f).is_file(), f
    header = (save_dir / "results.csv").read_text().splitlines()[0]
    assert [k.strip() for k in header.split(",")] == ["epoch", *RESULTS_KEYS]
    ck = load_checkpoint(save_dir / "weights" / "best.pt")
    assert ck["optimizer"] is None and ck["epoch"] == -1  # stripped
    assert all(v.dtype == torch.float16 for v in ck["model"].values() if v.is_floating_point())
    mp, mr, map50, map_ = opt.results[:4]
    assert 0.2 < map50 <= 1 and 0 < map_ < map50  # fine-tuned yolov5n still detects its training images

    import val

    results, maps, _ = val.run(data=opt.opt.data, weights=str(save_dir / "weights" / "best.pt"), imgsz=128,
                               batch_size=8, device="cpu", project=str(tmp_path / "val"), plots=False)
    assert results[2] == pytest.approx(map50, abs=0.02)  # the same weights, fp32 here as in the final check

    import detect

    im = sorted((COCO / "images" / "train2017").glob("*.jpg"))[0]
    det_dir, dets = detect.run(weights=str(save_dir / "weights" / "best.pt"), source=str(im), imgsz=128,
                               device="cpu", project=str(tmp_path / "detect"), conf_thres=0.1)
    assert (Path(det_dir) / im.name).is_file() and len(dets) == 1

    again = train.run(**_opts(tmp_path, epochs=1, noval=True, nosave=True))
    assert Path(again.save_dir) == tmp_path / "runs" / "exp2"  # never overwrites


def test_non_finite_loss_stops_with_losses_and_paths(tmp_path, monkeypatch):
    real = ComputeLoss.__call__

    def nan_loss(self, p, t):
        loss, items = real(self, p, t)
        return loss * float("nan"), items

    monkeypatch.setattr(ComputeLoss, "__call__", nan_loss)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 0, batch 0: box, obj, cls = .*images: "
                                                 r"\[.*\.jpg"):
        train.run(**_opts(tmp_path, epochs=1))


def test_unknown_option_and_missing_model_are_reported(tmp_path):
    with pytest.raises(TypeError, match="unknown option 'img_size'"):
        train.run(img_size=64)
    with pytest.raises(ValueError, match="give --weights"):
        train.run(**_opts(tmp_path, weights="", cfg=""))


# ---- optimisation pieces -----------------------------------------------------------------------------------
def test_param_groups_as_yolov5():
    from models.yolo import Model

    model = Model("yolov5n.yaml", verbose=False)
    opt = smart_optimizer(model, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    bias, decay, norm = (g["params"] for g in opt.param_groups)
    assert (len(norm), len(decay), len(bias)) == (57, 60, 60)  # YOLOv5 prints the same counts for yolov5n
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    assert opt.param_groups[0]["nesterov"]
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert all(p.dim() == 1 for p in norm) and all(p.dim() == 4 for p in decay)
    with pytest.raises(ValueError, match="choose one of SGD, Adam, AdamW"):
        smart_optimizer(model, "RMSProp")


def test_schedules():
    lin, cos = linear_lr(0.01, 10), one_cycle(1, 0.01, 10)
    assert (lin(0), lin(5), lin(10)) == pytest.approx((1.0, 0.505, 0.01))
    assert (cos(0), cos(5), cos(10)) == pytest.approx((1.0, 0.505, 0.01))
    assert cos(2) == pytest.approx(1 + (0.01 - 1) * (1 - math.cos(math.pi * 0.2)) / 2)


def test_ema_follows_the_decay_ramp():
    model = nn.Linear(3, 2)
    ema = ModelEMA(model)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    torch.testing.assert_close(ema.ema.weight, d * w0 + (1 - d) * (w0 + 1))
    assert ema.decay(10**6) == pytest.approx(0.9999)


def test_early_stopping():
    stop = EarlyStopping(patience=3)
    fits = [0.1, 0.2, 0.15, 0.19, 0.2, 0.1, 0.1, 0.1]
    out = [stop(epoch=i, fitness=f) for i, f in enumerate(fits)]
    assert out == [False] * 7 + [True]  # best (>=) at epoch 4, three more epochs without improvement
    assert EarlyStopping(patience=0)(epoch=10**6, fitness=0.0) is False


def test_autoanchor_replaces_poor_anchors():
    from models.yolo import Model
    from utils.training.autoanchor import anchor_metric, check_anchors

    rng = np.random.default_rng(0)

    class Boxes:  # what check_anchors reads of a dataset: image sizes and normalised labels
        shapes = np.full((40, 2), 640)
        labels = [np.c_[np.zeros(6), rng.uniform(0.2, 0.8, (6, 2)),
                        rng.uniform(0.5, 0.7, (6, 1)), rng.uniform(0.02, 0.03, (6, 1))] for _ in range(40)]

    model = Model("yolov5n.yaml", verbose=False)  # COCO anchors: no fit for 20:1 boxes
    det = model.model[-1]
    wh = torch.tensor(np.concatenate([lb[:, 3:5] for lb in Boxes.labels]) * 640).float()
    before = anchor_metric((det.anchors * det.stride.view(-1, 1, 1)).view(-1, 2), wh)[1]
    assert (before > 0.25).float().mean() < 0.98
    np.random.seed(0)
    assert check_anchors(Boxes(), model, thr=4.0, imgsz=640)
    after = anchor_metric((det.anchors * det.stride.view(-1, 1, 1)).view(-1, 2), wh)[1]
    assert (after > 0.25).float().mean() == 1.0
    areas = (det.anchors * det.stride.view(-1, 1, 1)).prod(-1).mean(-1)
    assert torch.all(areas[1:] >= areas[:-1])  # still small to large across levels


def test_options_freeze_single_cls_adamw_multiscale_cache(tmp_path):
    opt = train.run(**_opts(tmp_path, epochs=1, freeze=[10], single_cls=True, optimizer="AdamW", cos_lr=True,
                            multi_scale=True, cache="ram", label_smoothing=0.1, rect=True, noval=True))
    ck = load_checkpoint(Path(opt.save_dir) / "weights" / "last.pt")
    assert ck["names"] == ["item"] and ck["yaml"]["nc"] == 1
    official = load_checkpoint(ROOT / "weights" / "yolov5n.pt")["model"]
    for k, v in ck["model"].items():  # the stripped EMA: frozen backbone weights never moved
        if k.startswith("model.9.") and k.endswith(".weight"):
            torch.testing.assert_close(v.float(), official[k].float(), rtol=0, atol=1e-3)
        if k == "model.24.m.0.weight":
            assert v.shape[0] == 3 * 6  # single class head: 3 anchors x (5 + 1)
    assert "opt" in ck and ck["opt"]["optimizer"] == "AdamW"


def test_plugin_share_is_reported_for_plugin_models_only(tmp_path, log):
    from models.attention.share import SHARE_CSV, read_epoch_shares

    res = train.run(**_opts(tmp_path, epochs=2, weights="yolov5n.pt", cfg="yolov5n_hilo.yaml", name="hilo"))
    line = next(m for m in log if m.startswith("Plug-in share"))
    rows = read_epoch_shares(res.save_dir / SHARE_CSV)  # the share of each epoch, for compare's chart
    assert [(e, n) for e, n, _, _ in rows] == [(0, "model.20"), (0, "model.24"), (1, "model.20"), (1, "model.24")]
    assert all(0 <= s < 1 and g > 0 for _, _, s, g in rows)
    # one epoch of warmup moves gamma (zero at the start) very little: the plug-ins are still off
    assert re.fullmatch(r"Plug-in share on 4 val images, rms\(gamma\*block\(x\)\) / rms\(x\): "
                        r"model\.20 [\d.e+-]+%, model\.24 [\d.e+-]+%  \(near 0%: the plug-ins are still switched "
                        r"off; train longer or on more data\)", line), line
    log.clear()
    res = train.run(**_opts(tmp_path, epochs=1, weights="yolov5n.pt", name="base"))
    assert not any(m.startswith("Plug-in share") for m in log)
    assert not (res.save_dir / SHARE_CSV).exists()


def _raccoon_yaml(tmp: Path, n: int) -> Path:
    """A data YAML over the first n raccoon training photos (one class, far from COCO), from ../shared."""
    folder = ROOT.parent / "shared" / "datasets" / "raccoon" / "images" / "train"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not here (the raccoon data set sits beside the project in ../shared)")
    ims = sorted(folder.glob("*.jpg"))[:n]
    (tmp / "raccoon.txt").write_text("".join(f"{p}\n" for p in ims))
    f = tmp / "raccoon.yaml"
    f.write_text(yaml.safe_dump({"path": str(tmp), "train": "raccoon.txt", "val": "raccoon.txt", "names": ["raccoon"]}))
    return f


@pytest.mark.parametrize("data", ["coco128", "raccoon"])
def test_plugin_model_with_plugins_held_at_zero_trains_exactly_as_the_baseline(tmp_path, data):
    # paired runs: same seed, a fresh one-class head (the weights have 80 classes), the plug-ins frozen at
    # gamma = 0: every epoch's losses, metrics and learning rates equal the baseline's, bit for bit, on COCO128
    # images (single-class) and on raccoon photos
    common = _opts(tmp_path, epochs=2, weights="yolov5n.pt", single_cls=data == "coco128", seed=3,
                   noautoanchor=False)
    if data == "raccoon":
        common["data"] = str(_raccoon_yaml(tmp_path, 4))
    a = train.run(**common, name="base")
    b = train.run(**common, cfg="yolov5n_biformer.yaml", freeze=[20, 24], name="bra")
    assert load_checkpoint(Path(b.save_dir) / "weights" / "last.pt")["yaml"]["nc"] == 1
    rows_a = ResultsLog(Path(a.save_dir) / "results.csv").read()
    rows_b = ResultsLog(Path(b.save_dir) / "results.csv").read()
    assert rows_a.keys() == rows_b.keys() and len(rows_a["epoch"]) == 2
    for k in rows_a:
        np.testing.assert_array_equal(rows_b[k], rows_a[k], err_msg=k)
    assert b.results == a.results


def _gamma(save_dir) -> float:
    ck = load_checkpoint(Path(save_dir) / "weights" / "last.pt")
    return float(torch.cat([v.float().abs() for k, v in ck["model"].items() if k.endswith("gamma")]).mean())


def test_plugin_optimizer_switches_plugins_on_and_resumes(tmp_path, monkeypatch):
    base = _opts(tmp_path, epochs=2, weights="yolov5n.pt", cfg="yolov5n_biformer.yaml")
    sgd = train.run(**base, hyp={"plugin_lr": 0.0}, name="sgd")
    adamw = train.run(**base, name="adamw")  # the default hyp: AdamW for the plug-ins
    assert yaml.safe_load((Path(adamw.save_dir) / "hyp.yaml").read_text())["plugin_lr"] > 0
    assert _gamma(adamw.save_dir) > 20 * _gamma(sgd.save_dir) > 0
    # killed after epoch 0 and resumed: the plug-in optimizer's state comes back with the rest
    saved = {}
    real_checkpoint, real_epoch = train._checkpoint, train._train_epoch

    def record(r, epoch):
        ckpt = real_checkpoint(r, epoch)
        saved[(r.save_dir.name, epoch)] = ckpt
        return ckpt

    def kill_at_epoch_1(r, epoch, nw, *rest):
        if epoch == 1:
            raise _Killed
        return real_epoch(r, epoch, nw, *rest)

    monkeypatch.setattr(train, "_checkpoint", record)
    train.run(**base, name="full")
    monkeypatch.setattr(train, "_train_epoch", kill_at_epoch_1)
    with pytest.raises(_Killed):
        train.run(**base, name="killed")
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
    train.run(resume=str(tmp_path / "runs" / "killed" / "weights" / "last.pt"))
    full, resumed = saved[("full", 1)], saved[("killed", 1)]
    assert resumed["plugin_params"] == full["plugin_params"] and full["plugin_params"]
    for s_full, s_res in zip(full["plugin_optimizer"]["state"].values(), resumed["plugin_optimizer"]["state"].values()):
        torch.testing.assert_close(s_res["exp_avg_sq"], s_full["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    for k, v in full["model"].items():
        torch.testing.assert_close(resumed["model"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_diverged_training_fails_from_the_command_line(tmp_path):
    """`python train.py --hyp h.yaml` with lr0: 100000: weights or validation losses turn NaN; the run ends with one
    `ERROR: training diverged ...` line and exit status 1, and writes no checkpoint of a diverged epoch (no
    best.pt with NaN in it). lr0: .inf is refused before training (exit 2). (It used to exit 0 with a NaN best.pt.)"""
    import subprocess
    import sys

    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    cmd = [sys.executable, str(ROOT / "train.py"), "--data", str(_data_yaml(tmp_path, 4)), "--epochs", "2",
           "--imgsz", "64", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--project",
           str(tmp_path / "runs"), "--noplots", "--noautoanchor", "--hyp", str(tmp_path / "h.yaml")]
    (tmp_path / "h.yaml").write_text(yaml.safe_dump({**hyp, "lr0": 100000.0}))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stderr[-2000:]
    assert re.search(r"^ERROR: training diverged at epoch 0: .*(NaN or inf|validation losses box, obj, cls = \[nan)"
                     r".*lower lr0 \(now 100000\)", r.stderr, re.M), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "runs").rglob("*.pt"))

    (tmp_path / "h.yaml").write_text(yaml.safe_dump({**hyp, "lr0": float("inf")}))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "lr0=inf (valid: (0.0, inf))" in r.stderr, r.stderr[-2000:]
