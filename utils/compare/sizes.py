"""AP by object size for the comparison: COCO's AP_small, AP_medium and AP_large of one validation run.

compare.py validates each run with `val.run(save_txt=True, save_conf=True)`, which writes the detections of each
image as YOLO lines `cls cx cy w h conf` (normalized by the original image's size) to val/labels/<stem>.txt. This
module turns those lines back into COCO result rows in the original image's pixels and scores them with
pycocotools' COCOeval against ground truth built once from the split's YOLO labels (`yolo_to_coco_gt`, as val.py
builds it for data sets without a COCO annotation file). An object's size is its box area in the original
image's pixels, as COCO defines it: small <= 32^2 < medium <= 96^2 < large.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.boxes import xywhn2xyxy
from utils.coco_eval import coco_detections, image_ids, yolo_to_coco_gt
from utils.compare.size_stats import evaluated
from utils.data.dataset import LoadImagesAndLabels
from utils.errors import UserError
from utils.log import LOGGER

__all__ = ["SizeAP", "SizeGT", "SIZES", "build_size_gt", "size_counts", "detections_from_txt", "size_ap",
           "run_size_ap"]

SIZES = ("small", "medium", "large")


@dataclass(frozen=True)
class SizeAP:
    """COCOeval stats[0] (AP over all sizes) and stats[3:6]; None where COCO gives -1 (no such object)."""

    all: float | None
    small: float | None
    medium: float | None
    large: float | None


@dataclass(frozen=True)
class SizeGT:
    """COCO ground truth of a split, and how val.py's per-image label files map onto it."""

    gt: dict  # {'images', 'annotations', 'categories'}
    ids: dict[str, int]  # image file stem -> COCO image id
    shapes: dict[str, tuple[int, int]]  # image file stem -> (width, height) in pixels


def build_size_gt(split, names, nc: int) -> SizeGT | None:
    """Ground truth of `split` (as DataConfig gives it) from its YOLO labels, read as val.py reads them.

    None, with a warning, when two images share a file stem: val.py's label files are named by stem, so their
    detections could not be told apart.
    """
    ds = LoadImagesAndLabels(split, img_size=32, nc=nc, prefix="size AP: ")
    stems = [Path(f).stem for f in ds.im_files]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:3]
        LOGGER.warning(f"WARNING: AP by size skipped: images in {split} share file stems ({', '.join(dup)}), so "
                       "val.py's per-image label files cannot be told apart")
        return None
    ids = image_ids(ds.im_files)
    shapes = [(int(w), int(h)) for w, h in ds.shapes]
    gt = yolo_to_coco_gt(ds.im_files, ds.labels, shapes, names)
    return SizeGT(gt, {Path(f).stem: ids[str(f)] for f in ds.im_files},
                  {Path(f).stem: s for f, s in zip(ds.im_files, shapes)})


def _area_ranges() -> dict[str, list[float]]:
    from pycocotools.cocoeval import Params  # lazy: pycocotools only where sizes are scored

    p = Params(iouType="bbox")
    return dict(zip(p.areaRngLbl, p.areaRng))  # 'all', 'small', 'medium', 'large' -> [lo, hi], inclusive


def size_counts(gt: dict) -> dict[str, int]:
    """Ground-truth objects per COCO size range (bounds inclusive, as COCOeval applies them)."""
    rng = _area_ranges()
    areas = np.array([a["area"] for a in gt["annotations"] if not a.get("iscrowd", 0)], dtype=float)
    return {k: int(((areas >= rng[k][0]) & (areas <= rng[k][1])).sum()) for k in SIZES}


def detections_from_txt(labels_dir: Path, size_gt: SizeGT) -> list[dict]:
    """COCO result rows from val.py's `--save-txt --save-conf` files (one per image with detections)."""
    rows: list[dict] = []
    for f in sorted(Path(labels_dir).glob("*.txt")):
        if f.stem not in size_gt.ids:
            raise UserError(f"{f}: no image named {f.stem} in the validation split; delete the stale file")
        lines = np.loadtxt(f, ndmin=2, dtype=np.float64)  # (n, 6) cls cx cy w h conf, normalized
        if lines.size == 0:
            continue
        if lines.shape[1] != 6:
            raise UserError(f"{f}: expected 6 columns 'cls cx cy w h conf' (val.py --save-conf), got "
                             f"{lines.shape[1]}")
        w, h = size_gt.shapes[f.stem]
        predn = np.concatenate((xywhn2xyxy(lines[:, 1:5], w=w, h=h), lines[:, 5:6], lines[:, 0:1]), 1)
        rows += coco_detections(predn, size_gt.ids[f.stem])
    return rows


def _none_if_missing(x: float) -> float | None:
    return None if x < 0 else float(x)  # COCOeval writes -1 where a size has no ground truth


def size_ap(gt: dict, detections: list[dict]) -> SizeAP:
    """COCOeval (bbox, at most 100 detections per image) of `detections` on every image of `gt`."""
    ev = evaluated(gt, detections)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return SizeAP(_none_if_missing(s[0]), _none_if_missing(s[3]), _none_if_missing(s[4]), _none_if_missing(s[5]))


def run_size_ap(val_dir: Path, size_gt: SizeGT | None) -> SizeAP | None:
    """AP by size of one validation run (val.py's output folder); None when the split cannot be scored."""
    if size_gt is None:
        return None
    return size_ap(size_gt.gt, detections_from_txt(Path(val_dir) / "labels", size_gt))
