"""Heatmaps through the grad-cam package (utils/heatmaps.py): the map's range and size, Grad-CAM lighting the objects
of the class it explains, frozen weights making no difference, the overlay's letterbox geometry, and detect.py
--heatmap from the command line."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from models import load_model
from tests.conftest import ROOT
from utils.data.augment import letterbox
from utils.detection.options import DetectOptions
from utils.errors import UserError
from utils.heatmaps import DetectionScore, heatmap, overlay

BUS = ROOT / "data" / "images" / "bus.jpg"


def _input(size: int = 320):
    photo = cv2.imread(str(BUS))
    im, ratio, pad = letterbox(photo, size, auto=False)
    x = torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    return photo, x, ratio[0], pad


def test_detection_score_is_the_best_objectness_times_class():
    out = torch.tensor([[0, 0, 1, 1, 0.5, 0.2, 0.9], [0, 0, 1, 1, 0.9, 0.8, 0.1], [0, 0, 1, 1, 0.1, 0.1, 0.1]])
    assert DetectionScore([0])(out).item() == pytest.approx(0.72)  # 0.9 x 0.8
    assert DetectionScore([1, 0, 1])(out).item() == pytest.approx(0.72 + 0.45)  # each class once


def test_gradcam_lights_the_objects_of_the_class_it_explains_and_frozen_weights_change_nothing():
    """Grad-CAM for 'person' and for 'bus' on bus.jpg: each map is higher inside that class's boxes than on the rest
    of the photo (measured: person 0.26 against 0.18, bus 0.131 against 0.006 at 320)."""
    model = load_model("yolov5n.pt")
    photo, x, ratio, (dw, dh) = _input()

    def mask(boxes):  # boxes in pixels of the 810x1080 photo (YOLOv5n's own detections), on the letterboxed map
        m = np.zeros((320, 320), bool)
        for x1, y1, x2, y2 in boxes:
            m[int(y1 * ratio + dh):int(y2 * ratio + dh), int(x1 * ratio + dw):int(x2 * ratio + dw)] = True
        return m

    on_photo = mask([(0, 0, 810, 1080)])
    people = [(48, 398, 245, 902), (222, 406, 345, 857), (671, 390, 810, 880)]
    for cls, boxes in ((0, people), (5, [(17, 230, 801, 768)])):
        cam = heatmap(model, x, "gradcam", classes=[cls])
        assert cam.shape == (320, 320) and cam.min() >= 0 and 0.9 < cam.max() <= 1 + 1e-6
        inside = mask(boxes)
        assert cam[inside].mean() > 1.25 * cam[on_photo & ~inside].mean(), cls
    person = heatmap(model, x, "gradcam", classes=[0])
    for p in model.parameters():
        p.requires_grad_(False)  # as a deployed model: the gradient flows from the input
    np.testing.assert_allclose(heatmap(model, x, "gradcam", classes=[0]), person, atol=1e-5)
    eigen = heatmap(model, x, "eigencam")
    assert eigen.shape == (320, 320) and 0.9 < eigen.max() <= 1 + 1e-6
    with pytest.raises(UserError, match="heatmap method 'cam': choose one of eigencam, gradcam"):
        heatmap(model, x, "cam")


def test_overlay_crops_the_letterbox_padding():
    """A map that is 1 on the photo and 0 on the padding lays one colour over the whole photo: the padding is cut
    off and the rest stretched back onto the photo exactly."""
    photo = np.full((300, 500, 3), 128, np.uint8)
    _, ratio, (dw, dh) = letterbox(photo, 320, auto=False)
    cam = np.zeros((320, 320), np.float32)
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    cam[top:top + round(300 * ratio[0]), left:left + round(500 * ratio[0])] = 1
    out = overlay(photo, cam, (dw, dh), ratio[0])
    assert out.shape == photo.shape
    assert (out.reshape(-1, 3) == out[150, 250]).all()  # every pixel the same colour: no padding stripe


def test_detect_heatmap_from_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "detect.py"), "--source", str(BUS), "--heatmap", "gradcam", "--img",
                        "256", "--nosave", "--project", str(tmp_path), "--device", "cpu"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    im = cv2.imread(str(tmp_path / "exp" / "heatmaps" / "bus.jpg"))
    assert im is not None and im.shape == cv2.imread(str(BUS)).shape
    assert "Heatmaps (gradcam): 1 saved to" in r.stdout + r.stderr
    with pytest.raises(UserError, match="--heatmap needs the PyTorch checkpoint"):
        DetectOptions(weights="m.onnx", heatmap="gradcam").check()
    with pytest.raises(UserError, match="--heatmap 'cam': valid are eigencam and gradcam"):
        DetectOptions(heatmap="cam").check()
