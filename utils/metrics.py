"""Detection metrics as YOLOv5 computes them: matching at 10 IoU thresholds, AP per class, confusion matrix.

They compute and return; utils.plots draws them (pr_curves -> plot_metric_curves, ConfusionMatrix.matrix ->
plot_confusion_matrix), so this module imports no plotting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from utils.boxes import box_iou

__all__ = ["IOU_THRESHOLDS", "fitness", "smooth", "compute_ap", "APStats", "PRCurves", "pr_curves", "ap_per_class",
           "match_predictions", "ConfusionMatrix"]

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # COCO's mAP@0.5:0.95 thresholds

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed trapz


def fitness(x: np.ndarray) -> np.ndarray:
    """Model fitness as YOLOv5 selects best.pt: 0.1 mAP50 + 0.9 mAP50-95 of rows [P, R, mAP50, mAP50-95, ...]."""
    w = np.array([0.0, 0.0, 0.1, 0.9])
    return (np.asarray(x)[:, :4] * w).sum(1)


def smooth(y: np.ndarray, f: float = 0.05) -> np.ndarray:
    """Box filter of width 2 * round(len(y) * f) + 1, the ends padded with the edge values (YOLOv5's smooth)."""
    nf = round(len(y) * f * 2) // 2 + 1  # odd number of points
    p = np.ones(nf // 2)
    yp = np.concatenate((p * y[0], y, p * y[-1]), 0)
    return np.convolve(yp, np.ones(nf) / nf, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one class at one IoU threshold: area under the precision envelope sampled at 101 recall points.

    Args:
        recall, precision: (n,) cumulative values over detections sorted by decreasing confidence.
    Returns:
        (ap, precision envelope, recall) with the sentinels (0, 1) and (1, 0) added.
    """
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # precision envelope: max precision at recall >= r
    x = np.linspace(0, 1, 101)  # COCO's 101-point interpolation
    ap = float(_trapezoid(np.interp(x, mrec, mpre), x))
    return ap, mpre, mrec


class APStats(NamedTuple):
    """ap_per_class's result, a 7-tuple as YOLOv5's: tp, fp, p, r, f1 (each (k,), at the confidence where the
    mean F1 over classes is highest, after a 0.1-wide smoothing), ap (k, t) and classes (k,) int, for the k
    classes present in the labels."""

    tp: np.ndarray
    fp: np.ndarray
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    ap: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class PRCurves:
    """The curves behind AP, per class present in the labels (k of them), at IoU 0.5 unless said otherwise.

    px: (1000,) grid on [0, 1]: the recall axis of `pr`, the confidence axis of `p`, `r` and `f1`.
    pr: (k, 1000) precision envelope against recall (utils.plots.plot_pr_curve).
    p, r, f1: (k, 1000) precision, recall and F1 against confidence (utils.plots.plot_mc_curve).
    ap: (k, t) AP at each IoU threshold. classes: (k,) int. nt: (k,) labels of each class.
    """

    px: np.ndarray
    pr: np.ndarray
    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    ap: np.ndarray
    classes: np.ndarray
    nt: np.ndarray

    def stats(self, eps: float = 1e-16) -> APStats:
        """P, R, F1, true and false positives per class at the best mean-F1 confidence, with AP and classes."""
        i = smooth(self.f1.mean(0), 0.1).argmax() if len(self.classes) else 0
        p, r, f1 = self.p[:, i], self.r[:, i], self.f1[:, i]
        tp = (r * self.nt).round()
        fp = (tp / (p + eps) - tp).round()
        return APStats(tp, fp, p, r, f1, self.ap, self.classes)


def pr_curves(tp, conf, pred_cls, target_cls, eps: float = 1e-16) -> PRCurves:
    """AP per class and the precision-recall, P, R and F1 curves it comes with (nothing is drawn: val.py plots
    them with utils.plots.plot_metric_curves).

    Args:
        tp: (n, t) bool, detection i is a true positive at IoU threshold j.
        conf: (n,) detection confidences. pred_cls: (n,) detection classes. target_cls: (m,) label classes.
    """
    tp, conf, pred_cls, target_cls = (np.asarray(a) for a in (tp, conf, pred_cls, target_cls))
    i = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[i], conf[i], pred_cls[i]
    unique_classes, nt = np.unique(target_cls, return_counts=True)
    nc = unique_classes.shape[0]
    px, py = np.linspace(0, 1, 1000), []  # confidence grid; PR curves at IoU 0.5
    ap, p, r = np.zeros((nc, tp.shape[1])), np.zeros((nc, 1000)), np.zeros((nc, 1000))
    for ci, c in enumerate(unique_classes):
        i = pred_cls == c
        n_l, n_p = nt[ci], i.sum()
        if n_p == 0 or n_l == 0:
            py.append(np.zeros(1000))
            continue
        fpc = (1 - tp[i]).cumsum(0)
        tpc = tp[i].cumsum(0)
        recall = tpc / (n_l + eps)  # (n_p, t)
        precision = tpc / (tpc + fpc)
        r[ci] = np.interp(-px, -conf[i], recall[:, 0], left=0)  # -x because xp must increase
        p[ci] = np.interp(-px, -conf[i], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j], mpre, mrec = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                py.append(np.interp(px, mrec, mpre))
    f1 = 2 * p * r / (p + r + eps)
    pr = np.stack(py) if py else np.zeros((0, len(px)))
    return PRCurves(px, pr, p, r, f1, ap, unique_classes.astype(int), nt)


def ap_per_class(tp, conf, pred_cls, target_cls, eps: float = 1e-16) -> APStats:
    """Precision, recall, F1 and AP per class, as YOLOv5 reports them (pr_curves(...).stats(); for the curves
    themselves, and to plot them, call pr_curves).

    Args:
        tp: (n, t) bool, detection i is a true positive at IoU threshold j.
        conf: (n,) detection confidences. pred_cls: (n,) detection classes. target_cls: (m,) label classes.
    Returns:
        APStats, a 7-tuple: tp, fp, p, r, f1 (each (k,), at the confidence where the mean F1 over classes is
        highest, after a 0.1-wide smoothing), ap (k, t), classes (k,) int: k = the classes present in `target_cls`.
    """
    return pr_curves(tp, conf, pred_cls, target_cls, eps).stats(eps)


def _unique_matches(iou: torch.Tensor, mask: torch.Tensor, resort: bool = False) -> np.ndarray:
    """(k, 3) rows [label, detection, iou] where `mask`, each label and detection used once.

    Pairs are sorted by decreasing IoU, each detection keeps its best label, then each label keeps the first
    of its remaining pairs: with `resort` its best IoU (the confusion matrix), without it the one with the lowest
    detection index, i.e. the most confident as NMS orders them (YOLOv5's val matching, kept for identical mAP).
    """
    x = torch.where(mask)
    matches = torch.cat((torch.stack(x, 1), iou[x[0], x[1]][:, None]), 1).cpu().numpy()
    if len(matches) > 1:
        matches = matches[matches[:, 2].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 1], return_index=True)[1]]
        if resort:
            matches = matches[matches[:, 2].argsort()[::-1]]
        matches = matches[np.unique(matches[:, 0], return_index=True)[1]]
    return matches


def match_predictions(detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor) -> torch.Tensor:
    """Which detections are true positives at each IoU threshold (YOLOv5's process_batch).

    Args:
        detections: (n, 6) [x1, y1, x2, y2, conf, cls]. labels: (m, 5) [cls, x1, y1, x2, y2], same space.
        iouv: (t,) IoU thresholds.
    Returns:
        (n, t) bool. At each threshold, pairs with IoU >= threshold and the same class are matched greedily by
        decreasing IoU, each detection and each label at most once.
    """
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    iou = box_iou(labels[:, 1:], detections[:, :4])  # (m, n)
    same_class = labels[:, 0:1] == detections[:, 5]
    for i, thr in enumerate(iouv.tolist()):
        mask = (iou >= thr) & same_class
        if mask.any():
            matches = _unique_matches(iou, mask)
            correct[matches[:, 1].astype(int), i] = True
    return torch.tensor(correct, dtype=torch.bool, device=detections.device)


class ConfusionMatrix:
    """(nc + 1) x (nc + 1) counts: rows predicted class, columns true class; index nc is background.

    Detections below `conf` are ignored; a label and a detection match when IoU > `iou_thres` (any class).
    Unlike YOLOv5 7.0, unmatched detections count as background false positives also in images where nothing
    matched (YOLOv5 skips them there).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45):
        self.matrix = np.zeros((nc + 1, nc + 1))
        self.nc, self.conf, self.iou_thres = nc, conf, iou_thres

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """detections (n, 6) [x1, y1, x2, y2, conf, cls] or None; labels (m, 5) [cls, x1, y1, x2, y2]
        (or (m,) classes when detections is None)."""
        if detections is None:
            for gc in labels.int().view(-1).tolist():
                self.matrix[self.nc, gc] += 1  # missed: background predicted
            return
        detections = detections[detections[:, 4] > self.conf]
        gt_classes = labels[:, 0].int().tolist()
        det_classes = detections[:, 5].int().tolist()
        iou = box_iou(labels[:, 1:], detections[:, :4])
        matches = _unique_matches(iou, iou > self.iou_thres, resort=True) if len(gt_classes) and len(det_classes) else \
            np.zeros((0, 3))
        m0, m1 = matches[:, 0].astype(int), matches[:, 1].astype(int)
        for i, gc in enumerate(gt_classes):
            j = m0 == i
            if j.sum() == 1:
                self.matrix[det_classes[m1[j][0]], gc] += 1
            else:
                self.matrix[self.nc, gc] += 1
        for i, dc in enumerate(det_classes):
            if not (m1 == i).any():
                self.matrix[dc, self.nc] += 1  # background predicted as dc

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]
