"""AP by object size on resamples of the validation images (utils.compare.size_stats): every image once equals
pycocotools' COCOeval, a 0/1 resample equals COCOeval on that subset, and compare's verdict carries the sizes."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from utils.coco_eval import coco_detections, yolo_to_coco_gt
from utils.compare.bootstrap import Resamples, paired_bootstrap
from utils.compare.size_stats import SIZE_METRICS, SizeStats
from utils.compare.sizes import SizeGT
from utils.data.labels import save_one_txt

NAMES = ["a", "b", "c", "d"]


def _scene(seed: int, n: int = 24, miss: float = 0.0, most_fp: int = 2):
    """n images of random size, 1-6 objects each of every COCO size (3-200 px), four classes; detections: each
    object found with probability 0.8 - miss, its box jittered by 0-15% of its size, plus 0-`most_fp` false
    positives, with scores on a coarse grid (ties across images and classes). Returns (SizeGT, detections per
    image (k, 6))."""
    rng = np.random.default_rng(seed)
    files, labels, shapes, preds = [], [], [], []
    for i in range(n):
        w, h = int(rng.integers(200, 640)), int(rng.integers(200, 640))
        k = int(rng.integers(1, 7))
        bw, bh = np.exp(rng.uniform(np.log(3), np.log(200), (2, k)))
        cx, cy = rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2)
        cls = rng.integers(0, len(NAMES), k)
        labels.append(np.stack([cls, cx / w, cy / h, bw / w, bh / h], 1))
        found = rng.random(k) < 0.8 - miss
        jit = rng.uniform(-0.15, 0.15, (4, k))
        x1, y1 = cx - bw / 2 + jit[0] * bw, cy - bh / 2 + jit[1] * bh
        det = np.stack([x1, y1, x1 + bw * (1 + jit[2]), y1 + bh * (1 + jit[3]), rng.integers(2, 20, k) / 20, cls], 1)
        fp = int(rng.integers(0, most_fp + 1))
        fx, fy = rng.uniform(0, w - 60, fp), rng.uniform(0, h - 60, fp)
        fs = rng.uniform(4, 60, fp)
        extra = np.stack([fx, fy, fx + fs, fy + fs, rng.integers(1, 20, fp) / 20, rng.integers(0, 4, fp)], 1)
        preds.append(np.concatenate([det[found], extra]))
        files.append(f"/val/im{i:03d}.jpg")
        shapes.append((w, h))
    gt = yolo_to_coco_gt(files, labels, shapes, NAMES)
    ids = {Path(f).stem: img["id"] for f, img in zip(files, gt["images"])}
    return SizeGT(gt, ids, {Path(f).stem: s for f, s in zip(files, shapes)}), preds


def _rows(size_gt: SizeGT, preds, keep=None) -> list[dict]:
    return [r for i, (stem, iid) in enumerate(size_gt.ids.items()) if keep is None or keep[i]
            for r in coco_detections(preds[i], iid)]


def _cocoeval(gt: dict, rows: list[dict], img_ids=None) -> np.ndarray:
    """stats[3:6] of pycocotools itself, -1 as NaN."""
    with contextlib.redirect_stdout(io.StringIO()):
        anno = COCO()
        anno.dataset = copy.deepcopy(gt)
        anno.createIndex()
        ev = COCOeval(anno, anno.loadRes(copy.deepcopy(rows)), "bbox")
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats[3:6].copy()
    s[s < 0] = np.nan
    return s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_image_once_equals_cocoeval(seed):
    size_gt, preds = _scene(seed)
    stats = SizeStats.from_coco(size_gt, _rows(size_gt, preds))
    want = _cocoeval(size_gt.gt, _rows(size_gt, preds))
    assert np.isfinite(want).all() and len(set(np.round(want, 6))) == 3  # every size present, figures distinct
    assert np.array(stats.map()) == pytest.approx(want, abs=1e-12)
    twice = stats.resampled_maps(np.full((1, stats.n_images), 2.0))[0]  # every image twice: the same curve
    assert twice == pytest.approx(want, abs=1e-12)


def test_a_zero_one_resample_equals_cocoeval_on_that_subset():
    size_gt, preds = _scene(3, n=30)
    stats = SizeStats.from_coco(size_gt, _rows(size_gt, preds))
    rng = np.random.default_rng(0)
    counts = (rng.random((4, stats.n_images)) < 0.5).astype(float)
    got = stats.resampled_maps(counts)
    ids = list(size_gt.ids.values())
    for row, c in zip(got, counts):
        subset = [i for i, k in zip(ids, c) if k]
        want = _cocoeval(size_gt.gt, _rows(size_gt, preds, c.astype(bool)), img_ids=subset)
        np.testing.assert_allclose(row, want, atol=1e-12)


def test_no_object_of_a_size_is_nan_and_the_bootstrap_leaves_it_out():
    size_gt, preds = _scene(4)
    gt = copy.deepcopy(size_gt.gt)
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] > 32 ** 2]
    no_small = SizeGT(gt, size_gt.ids, size_gt.shapes)
    stats = SizeStats.from_coco(no_small, _rows(no_small, preds))
    assert np.isnan(stats.map()[0]) and np.array(stats.map()[1:]) == pytest.approx(_cocoeval(gt, _rows(no_small,
                                                                                                      preds))[1:])
    files = [f"/val/{s}.jpg" for s in no_small.ids]
    res = Resamples(files, 100, seed=0)
    runs = {0: (("a", 0, "size"), stats)}
    d = paired_bootstrap(runs, runs, res, SIZE_METRICS)
    assert set(d) == {"ap_medium", "ap_large"}
    assert (d["ap_large"].delta, d["ap_large"].lo, d["ap_large"].hi) == (0.0, 0.0, 0.0)


def test_compare_verdict_by_size_from_run_folders(tmp_path):
    """bootstrap_all with the split's ground truth by size reads each run's val/labels (as compare's validation
    writes them): AP small/medium/large against the baseline in the bootstrap, the verdict and results.csv."""
    from utils.compare.results import ModelResult, SeedResult
    from utils.compare.verdict import bootstrap_all, bootstrap_cols, bootstrap_lines, verdict_lines
    from utils.validation.image_stats import ImageStats

    size_gt, _ = _scene(5, n=40)
    files = [f"/val/{s}.jpg" for s in size_gt.ids]
    models = []
    for name, miss in (("base", 0.0), ("worse", 0.5)):
        m = ModelResult(name, f"{name}.yaml", 1000, 1.0)
        for seed in (0, 1):
            _, preds = _scene(5, n=40, miss=miss)
            run = tmp_path / f"{name}_seed{seed}"
            (run / "val" / "labels").mkdir(parents=True)
            for stem, p in ((s, p) for s, p in zip(size_gt.ids, preds) if len(p)):
                w, h = size_gt.shapes[stem]
                save_one_txt(torch.tensor(p), True, (h, w), run / "val" / "labels" / f"{stem}.txt")
            one = ImageStats(np.ones((1, 10), bool), np.ones(1, np.float32), np.zeros(1, np.int32),
                             np.zeros(1, np.int64), np.zeros(1, np.int32), np.zeros(1, np.int64), files)
            np.savez_compressed(run / "val" / "image_stats.npz", correct=one.correct, conf=one.conf, pcls=one.pcls,
                                pimg=one.pimg, tcls=one.tcls, timg=one.timg, files=np.array(files))
            m.seeds.append(SeedResult(seed, 0.5, 0.5, 0.5, 0.5, [0.5], 1.0, run))
        models.append(m)
    bootstrap_all(models, 200, size_gt=size_gt)
    worse = models[1]
    assert set(SIZE_METRICS) <= set(worse.bootstrap)
    d = worse.bootstrap["ap_large"]
    want = _cocoeval(size_gt.gt, _rows(size_gt, _scene(5, n=40, miss=0.5)[1]))[2] - \
        _cocoeval(size_gt.gt, _rows(size_gt, _scene(5, n=40)[1]))[2]
    assert d.delta == pytest.approx(want, abs=1e-5) and d.delta < 0 and d.lo <= d.delta <= d.hi
    assert d.p_holm == pytest.approx(d.p_value)  # one model against the baseline: Holm changes nothing
    sentence = next(line for line in verdict_lines(models) if line.startswith("- worse:"))
    assert f"by object size (COCO AP) small {worse.bootstrap['ap_small'].delta:+.3f}" in sentence
    apart = [k[3:] for k in SIZE_METRICS if worse.bootstrap[k].p_holm < 0.05]
    assert apart and f"told apart: {', '.join(f'{k} worse' for k in apart)};" in sentence
    assert any(line.startswith("| worse | AP medium |") for line in bootstrap_lines(models))
    assert bootstrap_cols(worse, models[0])["boot_ap_large_delta"] == pytest.approx(d.delta, abs=1e-6)


def test_runs_of_false_positives_as_points_change_no_ap():
    """The bootstrap reads each run of plain false positives as one point of summed weight (fp_runs): on random
    resamples (0-3 copies of each image) of scenes with many false positives and tied scores, AP small/medium/large
    and mAP50/mAP50-95 equal those computed from every detection on its own, to 1e-12."""
    from utils.compare.size_stats import _weighted_coco_ap
    from utils.validation.image_stats import ImageStats, _weighted_ap, fp_runs

    size_gt, preds = _scene(4, n=20, most_fp=12)
    stats = SizeStats.from_coco(size_gt, _rows(size_gt, preds))
    counts = np.random.default_rng(1).integers(0, 4, (40, stats.n_images)).astype(float)
    want = np.full((len(counts), 3), np.nan)
    for j, r in enumerate(stats.ranges.values()):  # every detection a point, as COCOeval.accumulate reads them
        ap_sum, n_cls = np.zeros(len(counts)), np.zeros(len(counts))
        for k, c in enumerate(r.classes):
            sel = np.flatnonzero(r.cls == c)
            sel = sel[np.argsort(-r.score[sel], kind="mergesort")]
            n_obj = counts @ r.n_obj[k]
            n_cls += n_obj > 0
            if len(sel):
                ap = _weighted_coco_ap(r.tp[sel], r.fp[sel], counts[:, r.img[sel]], n_obj, stats.rec_thrs)
                ap_sum += np.where(n_obj > 0, ap, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            want[:, j] = np.where(n_cls > 0, ap_sum / n_cls, np.nan)
    np.testing.assert_allclose(stats.resampled_maps(counts), want, rtol=0, atol=1e-12)
    r = stats.ranges["small"]
    sel = np.flatnonzero(r.cls == r.classes[0])
    first, a = fp_runs(r.tp[sel].any(1) | ~r.fp[sel].all(1), r.img[sel], stats.n_images)
    assert len(first) < len(sel) and a.sum() == len(sel)  # runs were merged, every detection counted once

    rng = np.random.default_rng(2)  # mAP50/mAP50-95 (val's matches): 90 labels, 70% found, 480 false positives
    n_img, t, n_fp = 20, 10, 480
    tcls, timg = rng.integers(0, 3, 90), rng.integers(0, n_img, 90)
    found = np.flatnonzero(rng.random(90) < 0.7)  # each found label matched by one detection, at its IoU
    iou = np.r_[rng.uniform(0.5, 1.0, len(found)), np.zeros(n_fp)]
    correct = iou[:, None] >= np.linspace(0.5, 0.95, t)[None]
    n = len(iou)
    s = ImageStats(correct, rng.integers(1, 30, n) / 30, np.r_[tcls[found], rng.integers(0, 3, n_fp)],
                   np.r_[timg[found], rng.integers(0, n_img, n_fp)], tcls, timg, [f"im{i}.jpg" for i in range(n_img)])
    counts = rng.integers(0, 4, (40, n_img)).astype(float)
    order = np.argsort(-s.conf, kind="stable")
    tp, pcls, pimg = correct[order].astype(float), s.pcls[order], s.pimg[order]
    ap_sum, n_cls = np.zeros((len(counts), t)), np.zeros(len(counts))
    for c in np.unique(s.tcls):
        n_l = counts[:, s.timg[s.tcls == c]].sum(1)
        n_cls += n_l > 0
        sel = pcls == c
        ap_sum += _weighted_ap(tp[sel], counts[:, pimg[sel]], n_l) * (n_l > 0)[:, None]
    want = np.stack([ap_sum[:, 0], ap_sum.mean(1)], 1) / np.maximum(n_cls, 1)[:, None]
    np.testing.assert_allclose(s.resampled_maps(counts), want, rtol=0, atol=1e-12)
