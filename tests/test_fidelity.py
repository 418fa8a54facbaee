"""The bundled weights reproduce official YOLOv5's decoded output, recorded from its own code (fixtures/README.md)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from models import load_model

from .conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "yolov5n_official_000000000009.npz"
IMAGE = ROOT / "data" / "coco128" / "images" / "train2017" / "000000000009.jpg"


def test_decoded_output_equals_official_yolov5():
    ref = np.load(FIXTURE)
    im = cv2.imread(str(IMAGE))  # 480x640: letterboxed at 640 it is itself
    assert tuple(ref["letterboxed_shape"]) == im.shape
    x = torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    model = load_model("yolov5n.pt")
    with torch.no_grad():
        y = model(x)[0][0].double().numpy()
    assert y.shape == tuple(ref["shape"])
    np.testing.assert_allclose(y[ref["rows"]], ref["values"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y.sum(0), ref["colsum"], rtol=1e-5)
