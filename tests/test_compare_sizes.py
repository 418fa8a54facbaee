"""AP by object size (utils.compare.sizes) on hand-made ground truth and detections, against pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.coco_eval import coco_detections, yolo_to_coco_gt
from utils.compare.sizes import SizeGT, detections_from_txt, size_ap, size_counts
from utils.data.labels import save_one_txt

FILES = ["/data/a/000000000001.jpg", "/data/a/000000000002.jpg"]
SHAPES = [(200, 100), (300, 300)]  # (w, h)
# per image [cls, cx, cy, w, h] normalized: a 20x20 (small), a 50x50 (medium) and a 120x100 (large) box
LABELS = [np.array([[0, 0.20, 0.30, 20 / 200, 20 / 100], [1, 0.60, 0.50, 50 / 200, 50 / 100]]),
          np.array([[2, 0.50, 0.50, 120 / 300, 100 / 300], [0, 0.10, 0.10, 16 / 300, 24 / 300]])]
NAMES = ["a", "b", "c"]


def _gt() -> dict:
    return yolo_to_coco_gt(FILES, LABELS, SHAPES, NAMES)


def _pycocotools(gt: dict, dets: list[dict]) -> np.ndarray:
    """COCOeval's stats[0], [3], [4], [5] computed directly."""
    with contextlib.redirect_stdout(io.StringIO()):
        anno = COCO()
        anno.dataset = copy.deepcopy(gt)
        anno.createIndex()
        ev = COCOeval(anno, anno.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[[0, 3, 4, 5]]


def _dets() -> list[dict]:
    """Detections in original pixels: the small boxes found (one shifted), the medium one poorly, the large one
    well, plus a confident false positive."""
    img1 = torch.tensor([[30, 20, 50, 40, 0.9, 0],  # small, exact
                         [98, 28, 142, 72, 0.6, 1],  # medium, 44x44 inside 50x50: IoU 0.77
                         [150, 80, 190, 98, 0.95, 1]])  # false positive
    img2 = torch.tensor([[92, 100, 212, 200, 0.8, 2],  # large, shifted 2 px: IoU 0.97
                         [22, 18, 38, 42, 0.7, 0],  # small, exact
                         [10, 10, 40, 40, 0.3, 2]])  # false positive
    return coco_detections(img1, 1) + coco_detections(img2, 2)


def test_size_ap_equals_pycocotools():
    gt, dets = _gt(), _dets()
    got = size_ap(gt, dets)
    want = _pycocotools(gt, dets)
    assert [got.all, got.small, got.medium, got.large] == pytest.approx(want.tolist(), abs=1e-12)
    assert 0 < got.medium < got.large <= 1  # the figures discriminate: not all equal, not all 0 or 1


def test_size_ap_by_hand_and_sizes_without_objects():
    gt = _gt()
    perfect = [d for d in _dets() if d["category_id"] in (0, 2) and d["score"] in (0.9, 0.7)]
    perfect.append({"image_id": 2, "category_id": 2, "bbox": [90.0, 100.0, 120.0, 100.0], "score": 0.8})
    got = size_ap(gt, perfect)  # both small objects and the large one found exactly, the medium one missed
    assert (got.small, got.medium, got.large) == pytest.approx((1.0, 0.0, 1.0), abs=1e-12)
    no_small = copy.deepcopy(gt)
    no_small["annotations"] = [a for a in gt["annotations"] if a["area"] > 32 ** 2]
    assert _pycocotools(no_small, _dets())[1] == -1  # COCO's "no such object"
    got = size_ap(no_small, _dets())
    assert got.small is None and got.large == pytest.approx(_pycocotools(no_small, _dets())[3])


def test_size_ap_without_detections():
    got = size_ap(_gt(), [])  # pycocotools' loadRes cannot take an empty list
    assert (got.all, got.small, got.medium, got.large) == (0.0, 0.0, 0.0, 0.0)


def test_size_counts_use_cocos_inclusive_bounds():
    gt = _gt()
    assert [a["area"] for a in gt["annotations"]] == pytest.approx([400, 2500, 12000, 384])
    assert size_counts(gt) == {"small": 2, "medium": 1, "large": 1}
    gt["annotations"][0]["area"] = 32.0 ** 2  # on the boundary: COCOeval keeps it in both ranges
    assert size_counts(gt) == {"small": 2, "medium": 2, "large": 1}


def test_detections_from_val_txt_files_score_as_the_detections(tmp_path):
    """val.py --save-txt --save-conf writes normalized lines; read back, they score as the original detections."""
    gt = _gt()
    preds = {1: torch.tensor([[30, 20, 50, 40, 0.9, 0], [98, 28, 142, 72, 0.6, 1], [150, 80, 190, 98, 0.95, 1]]),
             2: torch.tensor([[92.4, 100.2, 212.7, 200.1, 0.81234, 2], [22, 18, 38, 42, 0.7, 0]])}
    for iid, (f, (w, h)) in enumerate(zip(FILES, SHAPES), 1):
        save_one_txt(preds[iid], True, (h, w), tmp_path / f"{f.rsplit('/', 1)[1][:-4]}.txt")
    size_gt = SizeGT(gt, {"000000000001": 1, "000000000002": 2}, {"000000000001": (200, 100),
                                                                  "000000000002": (300, 300)})
    rows = detections_from_txt(tmp_path, size_gt)
    direct = coco_detections(preds[1], 1) + coco_detections(preds[2], 2)
    assert len(rows) == len(direct) == 5
    for r, d in zip(rows, direct):
        assert (r["image_id"], r["category_id"], r["score"]) == (d["image_id"], d["category_id"], d["score"])
        assert r["bbox"] == pytest.approx(d["bbox"], abs=2e-3)  # %g keeps 6 digits of the normalized box
    assert size_ap(gt, rows) == size_ap(gt, direct)
    (tmp_path / "elsewhere.txt").write_text("0 0.5 0.5 0.1 0.1 0.9\n")
    with pytest.raises(ValueError, match="elsewhere"):
        detections_from_txt(tmp_path, size_gt)
