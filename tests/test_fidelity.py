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


def test_detections_find_the_labelled_objects():
    """On real COCO128 images the bundled weights, after NMS, find most labelled objects with the right class."""
    from torchvision.ops import box_iou

    from utils.boxes import scale_boxes, xywhn2xyxy
    from utils.data.augment import letterbox
    from utils.nms import non_max_suppression

    model = load_model("yolov5n.pt")
    images = sorted((ROOT / "data" / "coco128" / "images" / "train2017").glob("*.jpg"))[:32]
    found = total = 0
    for path in images:
        label = ROOT / "data" / "coco128" / "labels" / "train2017" / f"{path.stem}.txt"
        if not label.exists():
            continue
        im0 = cv2.imread(str(path))
        im, _, _ = letterbox(im0, 640, auto=True)
        x = torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
        with torch.no_grad():
            det = non_max_suppression(model(x)[0], conf_thres=0.25, iou_thres=0.45)[0]
        det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], im0.shape[:2])
        gt = torch.from_numpy(np.loadtxt(label, ndmin=2)).float()
        gt_boxes = xywhn2xyxy(gt[:, 1:], im0.shape[1], im0.shape[0])
        iou = box_iou(gt_boxes, det[:, :4]) * (gt[:, :1] == det[:, 5][None])  # same class only
        found += int((iou.max(1).values >= 0.5).sum()) if len(det) else 0
        total += len(gt)
    assert total > 50
    assert found / total > 0.45  # 100 of 209 on these 32 images (recall at the F1-best conf over COCO128: 0.508)
