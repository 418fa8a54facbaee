"""Ensembles (models.ensemble) and test-time augmentation (models.tta) in val.py and detect.py, on 5 COCO128
images at 320: yolov5n.pt (A) and a copy whose head weights carry a little noise (B)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import detect
import val
from models.backends import DetectBackend
from models.ensemble import Ensemble, load_detector
from models.tta import PAD_VALUE, augmented_forward, augmented_passes, clip_augmented, scale_img
from utils.data.augment import letterbox
from utils.errors import UserError
from utils.metrics import box_iou
from utils.nms import non_max_suppression

from .conftest import LogCapture

ROOT = Path(__file__).resolve().parent.parent
IMGSZ = 320
BUS = ROOT / "data/images/bus.jpg"


def _yolov5n_ckpt() -> dict:
    from models import resolve_weights
    from utils.checkpoint import load_checkpoint

    ckpt = dict(load_checkpoint(resolve_weights("yolov5n.pt")))
    ckpt["model"] = dict(ckpt["model"])
    ckpt.pop("format", None)
    return ckpt


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory) -> Path:
    """yolov5n.pt with noise of 5% of each tensor's spread on the Detect head's weights: another model."""
    from utils.checkpoint import save_checkpoint

    ckpt = _yolov5n_ckpt()
    g = torch.Generator().manual_seed(0)
    for k, v in list(ckpt["model"].items()):
        if k.startswith("model.24.m.") and k.endswith("weight"):
            ckpt["model"][k] = v + 0.05 * v.std() * torch.randn(v.shape, generator=g)
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("b") / "b.pt")


def _val(data, weights, **kw) -> tuple[float, ...]:
    (mp, mr, map50, map_, *_), _, _ = val.run(data=data, weights=weights, batch_size=5, imgsz=IMGSZ, workers=0,
                                              project=kw.pop("project"), plots=False, **kw)
    return mp, mr, map50, map_


def _x(path: Path = BUS, size: int = IMGSZ) -> torch.Tensor:
    """An image letterboxed as detect.py does it (smallest 32-multiple rectangle), (1, 3, H, W) in 0..1."""
    import cv2

    im = letterbox(cv2.imread(str(path)), (size, size), stride=32, auto=True)[0]
    return torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255


def test_ensemble_map_in_val(tiny_data, perturbed, tmp_path):
    """[A, A] scores A exactly (NMS drops each duplicate: identical boxes, IoU 1); [A, B] scores neither A nor B,
    and the same as [B, A]."""
    a = _val(tiny_data, "yolov5n.pt", project=tmp_path)
    with LogCapture() as log:
        aa = _val(tiny_data, ["yolov5n.pt", "yolov5n.pt"], project=tmp_path)
    assert "Ensemble created with 2 models" in log.text
    assert aa == a
    b = _val(tiny_data, str(perturbed), project=tmp_path)
    ab = _val(tiny_data, ["yolov5n.pt", str(perturbed)], project=tmp_path)
    ba = _val(tiny_data, [str(perturbed), "yolov5n.pt"], project=tmp_path)
    assert b[3] != pytest.approx(a[3], abs=0.01)  # B is another model
    np.testing.assert_allclose(ab, ba, rtol=0, atol=1e-9)
    assert ab[3] != pytest.approx(a[3], abs=1e-4) and ab[3] != pytest.approx(b[3], abs=1e-4)
    assert min(a[3], b[3]) - 0.05 < ab[3] < max(a[3], b[3]) + 0.05  # a sane mix of the two


def test_ensemble_outputs_are_concatenated_and_duplicates_merged():
    """Ensemble([A, A]) gives A's decoded boxes twice along dim 1; after NMS exactly A's detections."""
    x = _x()
    a = DetectBackend("yolov5n.pt")
    with LogCapture():
        ens = load_detector(["yolov5n.pt", "yolov5n.pt"])
    assert isinstance(ens, Ensemble) and ens.stride == 32 and ens.nc == 80 and ens.names == a.names
    with torch.no_grad():
        pa, pe = a(x)[0], ens(x)[0]
    n = pa.shape[1]
    assert pe.shape == (1, 2 * n, 85) and torch.equal(pe[:, :n], pa) and torch.equal(pe[:, n:], pa)
    for multi_label in (False, True):
        da = non_max_suppression(pa, 0.001, 0.6, multi_label=multi_label, max_det=300)[0]
        de = non_max_suppression(pe, 0.001, 0.6, multi_label=multi_label, max_det=300)[0]
        assert torch.equal(da, de)
    assert isinstance(load_detector(["yolov5n.pt"]), DetectBackend)  # one file: no ensemble


def _nc3(tmp_path: Path) -> Path:
    from models.yolo import Model
    from utils.checkpoint import save_checkpoint

    ckpt = _yolov5n_ckpt()
    yaml = {**ckpt["yaml"], "nc": 3}
    model = Model(yaml, verbose=False)
    return save_checkpoint({"model": model.state_dict(), "yaml": model.yaml, "names": ["a", "b", "c"]},
                           tmp_path / "nc3.pt")


def test_ensemble_errors(tiny_data, tmp_path, capsys):
    nc3 = _nc3(tmp_path)
    msg = rf"same classes; got \S*yolov5n.pt \(80 classes\), {re.escape(str(nc3))} \(3 classes\)"
    with pytest.raises(UserError, match=msg):
        load_detector(["yolov5n.pt", nc3])
    for cli, extra in ((val.cli, ["--data", str(tiny_data)]), (detect.cli, ["--source", str(BUS)])):
        with pytest.raises(SystemExit) as e:
            cli(["--weights", "yolov5n.pt", str(nc3), "--project", str(tmp_path)] + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("ERROR: --weights: ensembled models must predict the same "
                                                    "classes") and str(nc3) in err
    with pytest.raises(UserError, match="DetectBackend takes one weights file, got 2"):
        DetectBackend(["yolov5n.pt", "yolov5n.pt"])
    with pytest.raises(UserError, match="--visualize draws one model; got an ensemble of 2"):
        detect.run(weights=["yolov5n.pt", "yolov5n.pt"], source=BUS, project=tmp_path, visualize=True)

    class Member(nn.Module):  # stands in for a DetectBackend: the attributes Ensemble checks
        def __init__(self, name, stride=32, fixed_shape=None):
            super().__init__()
            self.weights, self.stride, self.fixed_shape, self.nc = name, stride, fixed_shape, 80
            self.names, self.fixed_batch, self.fp16 = [str(i) for i in range(80)], None, False

    with pytest.raises(UserError, match=r"largest stride 48, which is not a multiple of the stride of a.pt "
                                        r"\(stride 32\)"):
        Ensemble([Member("a.pt", 32), Member("b.pt", 48)])
    with pytest.raises(UserError, match=r"must share their size \(h x w\); got a.onnx \(256x256\), b.onnx "
                                        r"\(320x320\)"):
        Ensemble([Member("a.onnx", fixed_shape=(256, 256)), Member("b.onnx", fixed_shape=(320, 320))])
    with LogCapture():
        ens = Ensemble([Member("a.pt", 32), Member("b.pt", 64), Member("c.onnx", fixed_shape=(256, 256))])
    assert ens.stride == 64 and ens.fixed_shape == (256, 256)  # YOLOv5: the largest stride


def test_scale_img():
    x = torch.rand(1, 3, 256, 320)
    assert scale_img(x, 1.0) is x
    y = scale_img(x, 0.83, gs=32)  # int(212.48) x int(265.6) = 212 x 265, padded to 224 x 288
    assert y.shape == (1, 3, 224, 288)
    assert (y[..., 212:, :] == PAD_VALUE).all() and (y[..., 265:] == PAD_VALUE).all()
    assert (y[..., :212, :265] != PAD_VALUE).float().mean() > 0.99
    assert scale_img(x, 0.67, same_shape=True).shape == x.shape


def test_tta_passes_descale_and_clip():
    """The scale-1 pass is the plain forward; a mirrored pass, mirrored back, finds the boxes of the unmirrored
    pass on a left-right symmetric input (an image beside its mirror); a scaled pass finds the scale-1 boxes;
    the first pass loses its P5 predictions and the last its P3 ones."""
    model = DetectBackend("yolov5n.pt")
    x = _x()  # 1x3x320x256
    with torch.no_grad():
        plain = model(x)[0]
        ys, levels = augmented_passes(model.forward, x, gs=32)
        assert torch.equal(ys[0], plain)
        tta = model(x, augment=True)[0]
    p3, p5 = 3 * 40 * 32, 3 * 10 * 8  # anchors x cells at stride 8 and 32 of 320x256
    assert levels[0] == [p3, 3 * 20 * 16, p5]
    assert tta.shape[1] == plain.shape[1] - p5 + ys[1].shape[1] + ys[2].shape[1] - levels[2][0]
    assert torch.equal(tta[:, :plain.shape[1] - p5], plain[:, :-p5])
    clipped = clip_augmented(ys, nl=3)  # YOLOv5's formula, for inputs of a multiple of the largest stride
    assert [c.shape[1] for c in clipped] == [c.shape[1] for c in clip_augmented(ys, 3, levels)]

    def boxes(p):
        d = non_max_suppression(p, 0.3, 0.45)[0]
        return d[:, :4], d[:, 5]

    def matched_iou(a, b):  # for each box of a: the best IoU with a box of b of the same class
        (ba, ca), (bb, cb) = a, b
        iou = box_iou(ba, bb) * (ca[:, None] == cb[None])
        return iou.max(1).values

    sym = torch.cat((x, x.flip(3)), 3)  # 320 x 512, its own mirror image
    with torch.no_grad():
        ys, _ = augmented_passes(model.forward, sym, gs=32, scales=(1.0, 0.83, 0.83), flips=(None, None, 3))
    full, scaled, mirrored = (boxes(y) for y in ys)
    assert len(full[0]) >= 6  # the bus and its persons, twice
    # the input is its own mirror image, so the mirrored pass's raw output is the unmirrored pass's: mirrored back,
    # each box is exactly the mirror image (about the input's width, 512) of the unmirrored pass's box
    assert len(mirrored[0]) == len(scaled[0]) and torch.equal(mirrored[1], scaled[1])
    b = scaled[0]
    torch.testing.assert_close(mirrored[0], torch.stack((512 - b[:, 2], b[:, 1], 512 - b[:, 0], b[:, 3]), 1),
                               atol=1e-3, rtol=0)
    # which land on the same objects (in the image's mirror half), as far as the model is mirror-symmetric
    ious = matched_iou(mirrored, scaled)
    assert ious.median() > 0.7 and (ious > 0.6).float().mean() >= 0.75
    assert matched_iou(scaled, full).median() > 0.85  # de-scaled onto the objects of the full-size pass
    shift = 512 * (1 - 0.83)  # mirrored back about the scaled width instead of the input's: 87 pixels off
    wrong = (mirrored[0] - torch.tensor([shift, 0, shift, 0]), mirrored[1])
    assert matched_iou(wrong, scaled).median() < 0.5


def test_tta_in_val_and_detect(tiny_data, tmp_path):
    """--augment: another mAP, within reach of the plain one; detect finds the bus and its persons."""
    plain = _val(tiny_data, "yolov5n.pt", project=tmp_path)
    tta = _val(tiny_data, "yolov5n.pt", project=tmp_path, augment=True)
    assert tta[3] != pytest.approx(plain[3], abs=1e-3)
    assert abs(tta[3] - plain[3]) < 0.15 and tta[2] > 0.5
    with LogCapture():
        _, rec = detect.run(source=BUS, imgsz=IMGSZ, project=tmp_path, nosave=True, augment=True)
        _, rec0 = detect.run(source=BUS, imgsz=IMGSZ, project=tmp_path, nosave=True)
    classes = rec[0].boxes[:, 5].astype(int).tolist()
    assert classes.count(0) >= 3 and classes.count(5) == 1  # persons, one bus
    assert rec[0].boxes.shape != rec0[0].boxes.shape or not np.allclose(rec[0].boxes, rec0[0].boxes)


def test_exports_in_ensembles_and_tta(tmp_path):
    """A dynamic TorchScript export does TTA as its .pt does and joins an ensemble with it; an export of fixed
    size cannot take TTA's rescaled inputs: a UserError."""
    import export

    pt = tmp_path / "yolov5n.pt"
    shutil.copy(ROOT / "weights/yolov5n.pt", pt)
    with LogCapture():
        ts = export.run(weights=str(pt), imgsz=(256, 256), device="cpu", include=("torchscript",), dynamic=True,
                        check=False)["torchscript"]
    x = _x(size=256)
    a, t = DetectBackend(pt), DetectBackend(ts)
    assert t.nl == a.nl == 3
    with torch.no_grad():
        ya, yt = a(x, augment=True)[0], t(x, augment=True)[0]
        with LogCapture():
            ens = load_detector([pt, ts])
        ye = ens(x, augment=True)[0]
    assert yt.shape == ya.shape and torch.allclose(yt, ya, atol=1e-3)
    assert torch.equal(ye[:, :ya.shape[1]], ya)
    t.fixed_shape = (256, 256)  # as an export without --dynamic reports it
    with pytest.raises(UserError, match=r"--augment runs the model on rescaled inputs, and \S+yolov5n.torchscript "
                                        r"was exported for 256x256 images only"):
        t(x, augment=True)


@pytest.mark.parametrize("cfg", ["yolov5n_biformer.yaml", "yolov5n_hilo.yaml"])
def test_tta_on_plugin_models(cfg):
    """BRA and HiLo models take TTA's scaled inputs (they pad internally); the tails are clipped per level."""
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model(cfg, verbose=False).eval()
    x = torch.rand(1, 3, 160, 96)
    with torch.no_grad():
        ys, levels = augmented_passes(model, x, gs=32)  # 160x96, 160x96 (132x79 padded), 128x64 (107x64 padded)
        y = augmented_forward(model, x, gs=32, nl=3)
    assert levels == [[720, 180, 45], [720, 180, 45], [576, 144, 36]]
    assert y.shape == (1, 945 - 45 + 945 + 756 - 576, 85) and torch.isfinite(y).all()
