"""AP by object size, kept per image, so that COCO's AP_small, AP_medium and AP_large can be recomputed on any
resample of the validation images (the paired bootstrap of utils.compare.bootstrap), as ImageStats does for mAP.

    s = SizeStats.from_coco(size_gt, detections)       # COCOeval's per-image matches, one pass
    s.map()                                             # (small, medium, large): COCOeval's stats[3:6] (NaN: none)
    s.resampled_maps(counts)                            # (B, 3): the same on B resamples of the images

COCOeval.evaluate() matches each image's detections to its ground truth once per size range; what `accumulate`
makes of those matches is repeated here with a weight per image (how often a resample drew it): the weighted
cumulative true and false positives, recall over the weighted count of the range's objects, COCO's precision
envelope read at its 101 recall thresholds (every (resample, IoU threshold) row at once: one exact
`searchsorted` of the recalls against the thresholds, then a count per row), with each run of plain false
positives one point of summed weight (utils.validation.image_stats.fp_runs). On the identity resample the
figures are COCOeval's to rounding. A detection COCOeval ignores at every IoU threshold (outside the range and
unmatched) changes no cumulative sum and is dropped; a class with no object of the range in a resample drops out
of its mean, as in COCOeval, and a resample with no object of the range at all gives NaN.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.validation.image_stats import fp_runs

__all__ = ["SizeStats", "SIZE_METRICS", "evaluated"]

SIZE_METRICS = ("ap_small", "ap_medium", "ap_large")  # column order of SizeStats.map and .resampled_maps
_AREAS = ("small", "medium", "large")


def evaluated(gt: dict, detections: list[dict], areas: tuple[str, ...] | None = None):
    """pycocotools' COCOeval (bbox, every image of `gt`) after evaluate(): the per-image matches; `areas` (names
    of COCO's size ranges) limits them to those ranges (the others' matching is skipped)."""
    from pycocotools.coco import COCO  # lazy: pycocotools only where sizes are scored
    from pycocotools.cocoeval import COCOeval

    anno, pred = COCO(), COCO()
    anno.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        anno.createIndex()
        if detections:
            pred = anno.loadRes(detections)
        else:  # loadRes cannot take an empty list; no detection scores 0 wherever there is ground truth
            pred.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            pred.createIndex()
        ev = COCOeval(anno, pred, "bbox")
        ev.params.imgIds = sorted(anno.getImgIds())
        if areas is not None:
            keep = [ev.params.areaRngLbl.index(a) for a in areas]
            ev.params.areaRng = [ev.params.areaRng[i] for i in keep]
            ev.params.areaRngLbl = list(areas)
        ev.evaluate()
    return ev


@dataclass
class _Range:
    """One size range's matches: detection i (class cls[i], image img[i], score[i]) is a true or a false positive
    at IoU threshold j (tp[i, j], fp[i, j]; neither where COCOeval ignores it); n_obj[k, n] objects of class
    classes[k] in the range in image n."""

    cls: np.ndarray
    img: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    classes: np.ndarray
    n_obj: np.ndarray


@dataclass
class SizeStats:
    ranges: dict  # 'small' | 'medium' | 'large' -> _Range
    stems: list[str]  # image n's file stem
    rec_thrs: np.ndarray

    @property
    def n_images(self) -> int:
        return len(self.stems)

    @classmethod
    def from_coco(cls, size_gt, detections: list[dict]) -> "SizeStats":
        """From a split's SizeGT (utils.compare.sizes) and COCO result rows of one validation."""
        ev = evaluated(size_gt.gt, detections, _AREAS)  # 'all' is not needed here
        p = ev.params
        max_det = p.maxDets[-1]
        stem_of = {i: s for s, i in size_gt.ids.items()}
        img_ids = list(p.imgIds)
        stems = [stem_of[i] for i in img_ids]
        n_img, n_a, t = len(img_ids), len(p.areaRng), len(p.iouThrs)
        ranges = {}
        for name in _AREAS:
            a = p.areaRngLbl.index(name)
            cls_, img_, score, tp, fp, n_obj = [], [], [], [], [], np.zeros((len(p.catIds), n_img))
            for k, cat in enumerate(p.catIds):  # evalImgs is laid out [category][area range][image]
                for n in range(n_img):
                    e = ev.evalImgs[(k * n_a + a) * n_img + n]
                    if e is None:
                        continue
                    n_obj[k, n] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
                    matched = np.asarray(e["dtMatches"])[:, :max_det] > 0
                    ignored = np.asarray(e["dtIgnore"])[:, :max_det].astype(bool)
                    keep = ~ignored.all(0)
                    cls_ += [cat] * int(keep.sum())
                    img_ += [n] * int(keep.sum())
                    score.append(np.asarray(e["dtScores"][:max_det], dtype=np.float64)[keep])
                    tp.append((matched & ~ignored)[:, keep].T)
                    fp.append((~matched & ~ignored)[:, keep].T)
            cat = lambda x, shape: np.concatenate(x) if x else np.zeros(shape)  # noqa: E731
            ranges[name] = _Range(np.array(cls_, np.int64), np.array(img_, np.int64), cat(score, (0,)),
                                  cat(tp, (0, t)).astype(bool), cat(fp, (0, t)).astype(bool),
                                  np.asarray(p.catIds), n_obj)
        return cls(ranges, stems, np.asarray(p.recThrs, dtype=np.float64))

    def reordered(self, files: list[str]) -> "SizeStats":
        """The same matches with images numbered as in `files` (paths; matched by file stem)."""
        index = {Path(f).stem: i for i, f in enumerate(files)}
        if set(index) != set(self.stems):
            odd = sorted(set(index) ^ set(self.stems))
            raise ValueError(f"the validations saw different images, e.g. {odd[:3]}")
        new = np.array([index[s] for s in self.stems], dtype=np.int64)
        ranges = {}
        for name, r in self.ranges.items():
            n_obj = np.zeros_like(r.n_obj)
            n_obj[:, new] = r.n_obj
            ranges[name] = _Range(r.cls, new[r.img] if len(r.img) else r.img, r.score, r.tp, r.fp, r.classes, n_obj)
        return SizeStats(ranges, [Path(f).stem for f in files], self.rec_thrs)

    def map(self) -> tuple[float, ...]:
        """(AP small, AP medium, AP large) with every image once: COCOeval's stats[3:6], NaN for -1."""
        return tuple(float(x) for x in self.resampled_maps(np.ones((1, self.n_images)))[0])

    def resampled_maps(self, counts: np.ndarray, chunk: int = 256) -> np.ndarray:
        """(B, 3) AP small, medium and large on each resample, counts (B, n_images): copies of each image."""
        counts = np.asarray(counts, dtype=np.float64)
        out = np.full((len(counts), len(_AREAS)), np.nan)
        for j, name in enumerate(_AREAS):
            r = self.ranges[name]
            points = []  # each class's detections in COCOeval.accumulate's order as points (fp_runs), found once
            for c in r.classes:
                sel = np.flatnonzero(r.cls == c)
                sel = sel[np.argsort(-r.score[sel], kind="mergesort")]
                first, a = fp_runs(r.tp[sel].any(1) | ~r.fp[sel].all(1), r.img[sel], self.n_images)
                points.append((r.tp[sel[first]], r.fp[sel[first]], a))
            for lo in range(0, len(counts), chunk):
                w = counts[lo:lo + chunk]
                ap_sum, n_cls = np.zeros(len(w)), np.zeros(len(w))
                for k, (tp, fp, a) in enumerate(points):
                    n_obj = w @ r.n_obj[k]  # (b,) weighted objects of class k in the range
                    present = n_obj > 0
                    if not present.any():
                        continue
                    n_cls += present
                    if len(tp):
                        ap = _weighted_coco_ap(tp, fp, w @ a, n_obj, self.rec_thrs)
                        ap_sum += np.where(present, ap, 0.0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[lo:lo + chunk, j] = np.where(n_cls > 0, ap_sum / np.maximum(n_cls, 1), np.nan)
        return out


def _weighted_coco_ap(tp: np.ndarray, fp: np.ndarray, w: np.ndarray, n_obj: np.ndarray,
                      rec_thrs: np.ndarray) -> np.ndarray:
    """(b,) COCO AP of one class and range, mean over IoU thresholds and recall thresholds, on b resamples: tp, fp
    (n, T) of its detections in COCOeval's order, w (b, n) their images' weights, n_obj (b,) its objects."""
    b, (n, t) = w.shape[0], tp.shape
    tps = np.cumsum(w[:, None, :] * tp.T[None], axis=2)  # (b, T, n)
    fps = np.cumsum(w[:, None, :] * fp.T[None], axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = tps / n_obj[:, None, None]
    pr = tps / (fps + tps + np.spacing(1))
    env = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]  # COCO's envelope: max precision at >= recall
    # first detection reaching each recall threshold, per row: with c = the thresholds at or below each recall
    # (one exact searchsorted against the sorted thresholds), it is the number of the row's detections with c <= r
    r = len(rec_thrs)
    c = np.searchsorted(rec_thrs, rc.reshape(-1), side="right").reshape(b * t, n)
    c += (np.arange(b * t) * (r + 1))[:, None]
    idx = np.cumsum(np.bincount(c.reshape(-1), minlength=b * t * (r + 1)).reshape(b * t, r + 1), 1)[:, :r]
    padded = np.concatenate([env.reshape(b * t, n), np.zeros((b * t, 1))], 1)  # beyond the last: precision 0
    q = np.take_along_axis(padded, idx, 1)
    return q.mean(1).reshape(b, t).mean(1)
