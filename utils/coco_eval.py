"""COCO-format evaluation through pycocotools: ground truth from YOLO labels, detections JSON, COCOeval mAP."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from utils.boxes import xywhn2xyxy, xyxy2xywh
from utils.log import LOGGER

__all__ = ["COCO80_TO_91", "image_ids", "yolo_to_coco_gt", "coco_detections", "coco_map"]

# the 80 YOLO class indices -> COCO's original 91 category ids, for scoring against COCO's own JSON
COCO80_TO_91 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
                32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
                58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
                88, 89, 90]


def image_ids(files) -> dict[str, int]:
    """COCO image id per image file: the numeric stems when every stem is a distinct number (as COCO names its
    files, so ids match COCO's own JSON), else the position in `files`."""
    stems = [Path(f).stem for f in files]
    numeric = all(s.isnumeric() for s in stems) and len({int(s) for s in stems}) == len(stems)
    return {str(f): int(s) if numeric else i for i, (f, s) in enumerate(zip(files, stems))}


def yolo_to_coco_gt(im_files, labels, shapes, names, class_map=None) -> dict:
    """A COCO ground-truth dict from YOLO labels.

    Args:
        im_files: image paths. labels: per image (n, 5) [cls, cx, cy, w, h] normalized.
        shapes: per image (width, height) in pixels. names: class names (list or dict id -> name).
        class_map: YOLO class -> COCO category id (default: the identity).
    Returns:
        {'images', 'annotations', 'categories'}; boxes as pixel [x, y, w, h], area = box area, iscrowd 0.
    """
    names = dict(enumerate(names)) if not isinstance(names, dict) else names
    cmap = class_map or list(range(max(names, default=-1) + 1))
    images, annotations, ids = [], [], image_ids(im_files)
    for f, lb, (w, h) in zip(im_files, labels, shapes):
        iid = ids[str(f)]
        images.append({"id": iid, "file_name": Path(f).name, "width": int(w), "height": int(h)})
        lb = np.asarray(lb, dtype=np.float64).reshape(-1, 5)
        xyxy = xywhn2xyxy(lb[:, 1:5], w=w, h=h)
        for c, (x1, y1, x2, y2) in zip(lb[:, 0].astype(int), xyxy.tolist()):
            bw, bh = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": iid, "category_id": cmap[c],
                                "bbox": [x1, y1, bw, bh], "area": bw * bh, "iscrowd": 0})
    categories = [{"id": cmap[k], "name": str(v)} for k, v in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_detections(predn, iid: int, class_map=None) -> list[dict]:
    """COCO result rows of one image's detections (n, 6) [x1, y1, x2, y2, conf, cls] in original pixels."""
    predn = predn.cpu().numpy() if hasattr(predn, "cpu") else np.asarray(predn)
    box = xyxy2xywh(predn[:, :4].astype(np.float64))
    box[:, :2] -= box[:, 2:] / 2  # centre -> top-left corner
    rows = []
    for p, b in zip(predn.tolist(), box.tolist()):
        c = int(p[5])
        rows.append({"image_id": iid, "category_id": class_map[c] if class_map else c,
                     "bbox": [round(x, 3) for x in b], "score": round(p[4], 5)})
    return rows


def _load_coco(gt: dict | str | Path):
    from pycocotools.coco import COCO  # lazy: pycocotools is loaded only when COCO metrics are computed

    coco = COCO()
    coco.dataset = json.loads(Path(gt).read_text()) if isinstance(gt, (str, Path)) else gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_map(gt: dict | str | Path, detections: list[dict] | str | Path, img_ids=None,
             verbose: bool = True) -> tuple[float, float]:
    """(mAP50-95, mAP50) of `detections` (COCO result rows, or a JSON file of them) by pycocotools' COCOeval.

    The images evaluated are `img_ids` (default: all of the ground truth); COCOeval keeps at most 100
    detections per image.
    With `verbose` the 12-line COCO summary is logged.
    """
    from pycocotools.cocoeval import COCOeval  # lazy: pycocotools is loaded only when COCO metrics are computed

    dets = json.loads(Path(detections).read_text()) if isinstance(detections, (str, Path)) else detections
    if not dets:
        return 0.0, 0.0
    anno = _load_coco(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        pred = anno.loadRes(dets)
    ev = COCOeval(anno, pred, "bbox")
    ev.params.imgIds = sorted(img_ids) if img_ids is not None else sorted(anno.getImgIds())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        LOGGER.info(out.getvalue().rstrip())
    return float(ev.stats[0]), float(ev.stats[1])
