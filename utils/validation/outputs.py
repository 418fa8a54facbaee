"""What val.py writes: YOLO txt labels and COCO JSON rows per image, the first batches as mosaics, and the
pycocotools evaluation of the JSON."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from utils.boxes import xyxy2xywh
from utils.coco_eval import coco_detections, coco_map, image_ids, yolo_to_coco_gt
from utils.data.labels import save_one_txt
from utils.log import LOGGER
from utils.paths import UniqueStems
from utils.plots import plot_images

__all__ = ["Outputs", "coco_annotation_file", "coco_eval", "to_targets"]


class Outputs:
    """What is written per image: YOLO txt labels, COCO JSON rows, the first batches as mosaics. `opt`: the
    validation's options (save_txt, save_conf, save_json, plots); `class_map`: class index -> COCO id, or None."""

    def __init__(self, save_dir: Path, opt, names: list[str], dataset, class_map):
        self.save_dir, self.save_txt, self.save_conf = save_dir, opt.save_txt, opt.save_conf
        self.save_json, self.plots = opt.save_json, opt.plots
        self.names, self.class_map, self.jdict = names, class_map, []
        self.stem = UniqueStems()  # a/img.jpg and b/img.jpg: labels img.txt and img_1.txt
        self.ids = image_ids(getattr(dataset, "im_files", [])) if self.save_json else {}

    def image(self, path: Path, predn: torch.Tensor, shape0) -> None:
        if self.save_txt:
            save_one_txt(predn, self.save_conf, shape0, file=self.save_dir / "labels" / f"{self.stem(path)}.txt")
        if self.save_json:
            iid = self.ids[str(path)]
            self.jdict += coco_detections(predn, iid, self.class_map)

    def batch(self, batch_i: int, im, targets, paths, preds) -> None:
        if self.plots and batch_i < 3:
            plot_images(im, targets, paths, self.save_dir / f"val_batch{batch_i}_labels.jpg", self.names)
            plot_images(im, to_targets(preds), paths, self.save_dir / f"val_batch{batch_i}_pred.jpg", self.names)


def to_targets(preds: list[torch.Tensor]) -> torch.Tensor:
    """NMS output -> (n, 7) [img_idx, cls, cx, cy, w, h, conf] in pixels, for plot_images."""
    rows = [torch.cat((torch.full_like(p[:, :1], i), p[:, 5:6], xyxy2xywh(p[:, :4]), p[:, 4:5]), 1)
            for i, p in enumerate(preds)]
    return torch.cat(rows, 0).cpu() if rows else torch.zeros(0, 7)


def coco_eval(out: Outputs, dataset, data, weights, split: str) -> tuple[float, float] | None:
    """Write the detections JSON and return pycocotools' (mAP50-95, mAP50) for it, converting the YOLO labels to
    COCO ground truth when the dataset ships no annotation file."""
    w = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else "model"
    pred_json = out.save_dir / f"{w}_predictions.json"
    pred_json.write_text(json.dumps(out.jdict))
    anno = coco_annotation_file(data, split)
    if anno is None:
        gt = yolo_to_coco_gt(dataset.im_files, dataset.labels, dataset.shapes, out.names)
        anno = out.save_dir / "instances_gt.json"
        anno.write_text(json.dumps(gt))
    LOGGER.info(f"\nEvaluating pycocotools mAP... saving {pred_json} (ground truth {anno})")
    return coco_map(anno, out.jdict, img_ids=sorted(image_ids(dataset.im_files).values()))


def coco_annotation_file(data, split: str) -> Path | None:
    """annotations/instances_<folder>.json beside the images when the dataset ships COCO's own JSON."""
    entries = data.split(split) if hasattr(data, "split") else []
    for e in entries:
        f = Path(data.path) / "annotations" / f"instances_{Path(e).name}.json"
        if f.is_file():
            return f
    return None
