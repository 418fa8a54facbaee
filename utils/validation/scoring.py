"""val.py's scoring: per image, predictions matched with the labels in the original image's pixels; per split,
the `all` row and the rows by class; the result types `val.run` returns."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from utils.boxes import scale_boxes, xywh2xyxy
from utils.data.config import DataConfig, load_data_config
from utils.log import LOGGER
from utils.metrics import match_predictions, pr_curves
from utils.plots import plot_metric_curves

__all__ = ["HEADER", "ROW", "Metrics", "Times", "ValResult", "data_info", "image_stats", "summarize"]

HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


class Metrics(NamedTuple):
    """The first item of run's result, YOLOv5's 7-tuple: mean precision and recall over the classes present (at
    the confidence of best mean F1), mAP50, mAP50-95, and the box, objectness and class losses averaged over the
    batches (0 without `compute_loss`)."""

    mp: float
    mr: float
    map50: float
    map: float
    box: float
    obj: float
    cls: float


class Times(NamedTuple):
    """Milliseconds per image: pre-processing, inference, NMS."""

    preprocess: float
    inference: float
    nms: float


class ValResult(NamedTuple):
    """What run returns; unpacks as YOLOv5's `results, maps, times = val.run(...)`."""

    results: Metrics
    maps: np.ndarray  # (nc,) mAP50-95 per class; classes without labels get the overall mAP50-95
    times: Times


class Summary(NamedTuple):
    """The `all` row's figures and mAP50-95 by class."""

    mp: float
    mr: float
    map50: float
    map: float
    maps: np.ndarray


def data_info(data, single_cls: bool, model) -> tuple[object, int, list[str]]:
    """(DataConfig or None, nc, names) from a DataConfig, a data YAML path/name, a YOLOv5-style dict or None."""
    if isinstance(data, (str, Path)):
        data = load_data_config(data, single_cls=single_cls)
    if isinstance(data, DataConfig):
        nc, names = data.nc, list(data.names)
    elif isinstance(data, dict):
        names = data["names"]
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
        nc = int(data.get("nc", len(names)))
    else:
        names = list(getattr(model, "names", []))
        nc = len(names)
    if single_cls:
        nc, names = 1, names if len(names) == 1 else ["item"]
    return data, nc, names


def image_stats(pred, labels, im_shape, shapes, iouv, single_cls):
    """One image: (correct (n, t), conf, cls, label classes) and the detections and labels in original pixels.

    pred (n, 6) in letterboxed pixels; labels (m, 5) [cls, cx, cy, w, h] in letterboxed pixels; shapes: the
    loader's (original shape, ratio_pad).
    """
    shape0, ratio_pad = shapes
    if single_cls:
        pred[:, 5] = 0
    predn = pred.clone()
    scale_boxes(im_shape, predn[:, :4], shape0, ratio_pad)  # to the original image
    correct = torch.zeros(len(pred), len(iouv), dtype=torch.bool, device=pred.device)
    labelsn = None
    if len(labels):
        tbox = xywh2xyxy(labels[:, 1:5])
        scale_boxes(im_shape, tbox, shape0, ratio_pad)
        labelsn = torch.cat((labels[:, 0:1], tbox), 1)
        if len(pred):
            correct = match_predictions(predn, labelsn, iouv)
    return (correct, pred[:, 4], pred[:, 5], labels[:, 0]), predn, labelsn


def summarize(stats, nc: int, names: list[str], seen: int, save_dir: Path | None, by_class: bool) -> Summary:
    """Log the `all` row (and, with `by_class`, a row per class present); with `save_dir`, plot the P, R, F1 and
    PR curves there."""
    stats = [torch.cat(x, 0).cpu().numpy() for x in zip(*stats)] if stats else []
    mp = mr = map50 = map_ = 0.0
    ap_class, p, r, ap50, ap = np.zeros(0, int), [], [], [], np.zeros(0)
    if len(stats) and stats[0].any():
        curves = pr_curves(*stats)
        if save_dir is not None:
            plot_metric_curves(curves, save_dir, names)
        _, _, p, r, _, ap, ap_class = curves.stats()
        ap50, ap = ap[:, 0], ap.mean(1)  # AP at IoU 0.5, AP at 0.5:0.95
        mp, mr, map50, map_ = p.mean(), r.mean(), ap50.mean(), ap.mean()
    nt = np.bincount(stats[3].astype(int), minlength=nc) if len(stats) else np.zeros(nc, int)
    LOGGER.info(ROW % ("all", seen, nt.sum(), mp, mr, map50, map_))
    if nt.sum() == 0:
        LOGGER.warning("WARNING: no labels found in the validation set; metrics need labels")
    if by_class and nc > 1 and len(stats):
        for i, c in enumerate(ap_class):
            LOGGER.info(ROW % (names[c], seen, nt[c], p[i], r[i], ap50[i], ap[i]))
    maps = np.zeros(nc) + map_
    for i, c in enumerate(ap_class):
        maps[c] = ap[i]
    return Summary(float(mp), float(mr), float(map50), float(map_), maps)
