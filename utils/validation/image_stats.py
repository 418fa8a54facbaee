"""What a validation's mAP is made of, kept per image, so that mAP can be recomputed on any resample of the
validation images without running the model again (the paired bootstrap of utils.compare.bootstrap).

    save_image_stats(run/"val"/IMAGE_STATS, stats, files)      # val.py --save-stats
    s = load_image_stats(run/"val"/IMAGE_STATS)
    s.map()                          # (mAP50, mAP50-95): val's figures, from the same matches
    s.resampled_maps(counts)         # (B, 2): the same on B resamples, counts (B, n_images) = copies of each image

A resample weights each image by its number of copies: its detections count that many times in the cumulative
true and false positives, its labels that many times in the recall's denominator, and a class with no label in
the resample drops out of the mean, as it does in val. On the identity resample (every image once) the figures
equal val's (to rounding, 1e-12); duplicated detections count as one point of the precision-recall curve with
their weight, where expanding the copies would add intermediate points: a difference in the interpolation only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.metrics import ap_per_class

__all__ = ["IMAGE_STATS", "ImageStats", "save_image_stats", "load_image_stats", "fp_runs"]

IMAGE_STATS = "image_stats.npz"
_X = np.linspace(0, 1, 101)  # COCO's 101 recall points, as utils.metrics.compute_ap


@dataclass
class ImageStats:
    """Matches of one validation: detection i of image pimg[i] is a true positive at IoU threshold j when
    correct[i, j]; label k of image timg[k] has class tcls[k]; files[n] is image n's path."""

    correct: np.ndarray  # (N, T) bool
    conf: np.ndarray  # (N,)
    pcls: np.ndarray  # (N,)
    pimg: np.ndarray  # (N,) int
    tcls: np.ndarray  # (M,)
    timg: np.ndarray  # (M,) int
    files: list[str]

    @property
    def n_images(self) -> int:
        return len(self.files)

    def map(self) -> tuple[float, float]:
        """(mAP50, mAP50-95) over every image once: utils.metrics.ap_per_class, as val computes them."""
        if not len(self.correct) or not self.correct.any():
            return 0.0, 0.0
        ap = ap_per_class(self.correct, self.conf, self.pcls, self.tcls).ap
        return float(ap[:, 0].mean()), float(ap.mean(1).mean())  # as val.py averages them

    def reordered(self, files: list[str]) -> "ImageStats":
        """The same stats with images numbered as in `files` (another model's validation of the same images);
        a missing or extra image is a ValueError naming it."""
        index = {f: i for i, f in enumerate(files)}
        if set(index) != set(self.files):
            odd = sorted(set(index) ^ set(self.files))
            raise ValueError(f"the validations saw different images, e.g. {odd[:3]}")
        new = np.array([index[f] for f in self.files], dtype=np.int64)
        return ImageStats(self.correct, self.conf, self.pcls, new[self.pimg], self.tcls, new[self.timg], list(files))

    def resampled_maps(self, counts: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(B, 2) mAP50 and mAP50-95 on each resample, counts (B, n_images): how often each image is drawn."""
        counts = np.asarray(counts, dtype=np.float64)
        b, t = counts.shape[0], self.correct.shape[1]
        out = np.zeros((b, 2))
        if not len(self.correct) or not self.correct.any():
            return out
        order = np.argsort(-self.conf, kind="stable")  # as ap_per_class sorts
        tp, pcls, pimg = self.correct[order].astype(np.float64), self.pcls[order], self.pimg[order]
        per_class = []  # (the class's labels per image, its points' tp, images' counts of its points): found once
        for c in np.unique(self.tcls):
            sel = np.flatnonzero(pcls == c)
            n_lab = np.bincount(self.timg[self.tcls == c], minlength=self.n_images).astype(np.float64)
            first, a = fp_runs(tp[sel].any(1), pimg[sel], self.n_images)
            per_class.append((n_lab, tp[sel[first]], a))
        for lo in range(0, b, chunk):
            k = counts[lo:lo + chunk]
            ap_sum, n_cls = np.zeros((len(k), t)), np.zeros(len(k))
            for n_lab, tp_c, a in per_class:
                n_l = k @ n_lab  # (b,) labels of the class in each resample
                present = n_l > 0
                n_cls += present
                if len(tp_c):
                    ap_sum += _weighted_ap(tp_c, k @ a, n_l) * present[:, None]
            out[lo:lo + chunk] = np.stack([ap_sum[:, 0], ap_sum.mean(1)], 1) / np.maximum(n_cls, 1)[:, None]
        return out


def fp_runs(kept: np.ndarray, img: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """One class's detections in ranking order, kept[i] where detection i is anything but a false positive at every
    IoU threshold: the points of its precision-recall curves. Each kept detection is a point of its own; each run
    of consecutive plain false positives is one point carrying the run's summed weight. Returns first (P,), the
    index of each point's first detection (its tp/fp row), and a (n_images, P), how many of the point's detections
    each image holds, so that counts @ a weighs the points on resamples.

    The AP is unchanged, exactly: a run adds no true positive, so its detections share the recall of the point
    before it; of a stretch of equal recall the interpolation reads only the first and the last point, COCO's read
    at its recall thresholds only the first; and each detection of a run, with the true positives of the one
    before it over at least as many detections seen, has no higher precision, so keeping only the run's last
    (which carries the run's summed weight) lowers no envelope. Counts are integers, so the sums are exact. At
    0.001 confidence most detections are such false positives."""
    n = len(kept)
    start = np.ones(n, dtype=bool)
    start[1:] = kept[1:] | kept[:-1]
    point = np.cumsum(start) - 1
    first = np.flatnonzero(start)
    a = np.zeros((n_images, len(first)))
    np.add.at(a, (np.asarray(img, dtype=np.int64), point), 1.0)
    return first, a


def _weighted_ap(tp: np.ndarray, w: np.ndarray, n_l: np.ndarray, eps: float = 1e-16) -> np.ndarray:
    """(b, T) AP of one class on b resamples: tp (n, T) of its detections sorted by confidence, w (b, n) their
    weights, n_l (b,) its labels. compute_ap's envelope and 101-point interpolation, every (resample, threshold)
    row at once: rows are shifted apart by 2 on the recall axis, so one np.interp serves them all."""
    b, (n, t) = w.shape[0], tp.shape
    tpc = np.cumsum(w[:, None, :] * tp.T[None], axis=2)  # (b, T, n), contiguous along the detections
    seen = np.cumsum(w, axis=1)[:, None, :]
    mrec = np.empty((b, t, n + 2))
    mpre = np.empty((b, t, n + 2))
    mrec[..., 0], mrec[..., -1], mpre[..., 0], mpre[..., -1] = 0.0, 1.0, 1.0, 0.0
    np.divide(tpc, n_l[:, None, None] + eps, out=mrec[..., 1:-1])
    mpre[..., 1:-1] = 0.0
    np.divide(tpc, seen, out=mpre[..., 1:-1], where=seen > 0)
    rev = mpre[..., ::-1]
    np.maximum.accumulate(rev, axis=2, out=rev)  # precision envelope: max precision at recall >= r
    shift = 2.0 * np.arange(b * t)[:, None]
    rows = (mrec.reshape(b * t, n + 2) + shift).ravel()
    y = np.interp((_X[None] + shift).ravel(), rows, mpre.reshape(-1)).reshape(b * t, len(_X))
    ap = ((y[:, 1:] + y[:, :-1]) / 2 * np.diff(_X)).sum(1)  # trapezoid, as compute_ap
    return ap.reshape(b, t)


def save_image_stats(path: str | Path, stats: list, files: list[str]) -> Path:
    """Write val's per-image stats [(correct (n, T), conf, cls, label cls), ...] (tensors) and their images'
    files as a compressed npz."""
    path = Path(path)
    parts = [[x.cpu().numpy() for x in s] for s in stats]
    t = parts[0][0].shape[1] if parts else 10
    cat = lambda i, dtype, shape=(0,): (np.concatenate([p[i] for p in parts]).astype(dtype)  # noqa: E731
                                        if parts else np.zeros(shape, dtype))
    np.savez_compressed(
        path, correct=cat(0, bool, (0, t)), conf=cat(1, np.float32), pcls=cat(2, np.int32),
        pimg=np.concatenate([np.full(len(p[1]), i) for i, p in enumerate(parts)] or [np.zeros(0)]).astype(np.int32),
        tcls=cat(3, np.int32),
        timg=np.concatenate([np.full(len(p[3]), i) for i, p in enumerate(parts)] or [np.zeros(0)]).astype(np.int32),
        files=np.array(files, dtype=str))
    return path


def load_image_stats(path: str | Path) -> ImageStats:
    with np.load(path) as z:
        return ImageStats(z["correct"], z["conf"], z["pcls"], z["pimg"].astype(np.int64), z["tcls"],
                          z["timg"].astype(np.int64), [str(f) for f in z["files"]])
