"""The paired bootstrap over validation images and seeds, against known truth: a model against itself, a
synthetic pair whose true difference is known (its interval covers it at about the stated rate), the seed-only
and image-only cases, Holm's adjustment and the seeds-needed estimate."""

from __future__ import annotations

import numpy as np
import pytest

from utils.compare.bootstrap import POWER_Z, BootstrapDiff, Resamples, holm, paired_bootstrap, seeds_needed
from utils.validation.image_stats import ImageStats


def _synthetic(rng, n: int, p_tp: float, drop: np.ndarray | None = None) -> ImageStats:
    """One class, one label per image; a detection on the object (a true positive at every IoU) with probability
    p_tp, confidence U(0.4, 1), and one background detection, confidence U(0, 0.8). `drop` (n,) bool turns those
    images' true positives into misses (the same draws otherwise: a paired model)."""
    hit = rng.random(n) < p_tp
    conf_tp, conf_fp = rng.uniform(0.4, 1, n), rng.uniform(0, 0.8, n)
    if drop is not None:
        hit = hit & ~drop
    img = np.arange(n)
    pimg = np.concatenate([img[hit], img])
    conf = np.concatenate([conf_tp[hit], conf_fp]).astype(np.float32)
    correct = np.zeros((len(pimg), 10), bool)
    correct[: hit.sum()] = True
    return ImageStats(correct, conf, np.zeros(len(pimg), np.int32), pimg, np.zeros(n, np.int32), img,
                      [f"im{i}.jpg" for i in range(n)])


def _pair(seed: int, n: int, drop_rate: float = 0.2) -> tuple[ImageStats, ImageStats]:
    rng = np.random.default_rng(seed)
    state = rng.bit_generator.state
    a = _synthetic(rng, n, 0.9)
    drop = rng.random(n) < drop_rate
    rng.bit_generator.state = state  # the same images, the same detections
    return a, _synthetic(rng, n, 0.9, drop)


def test_a_model_against_itself_is_zero_with_zero_width():
    a, _ = _pair(0, 100)
    res = Resamples(a.files, 200, seed=1)
    for seeds in (1, 3):
        runs = {s: (("a", s), a) for s in range(seeds)}
        d = paired_bootstrap(runs, runs, res)["map"]
        assert (d.delta, d.lo, d.hi, d.se, d.p_value) == (0.0, 0.0, 0.0, 0.0, 1.0)


def test_interval_covers_the_true_difference_at_about_95_percent():
    """True difference: the two models on 40,000 images. Over 60 validation sets of 300 images each, the 95%
    interval of the one-seed (image-only) bootstrap covers it in 88-100% of the sets."""
    big_a, big_b = _pair(123, 40_000)
    truth = big_b.map()[1] - big_a.map()[1]
    assert truth < -0.1  # dropping a fifth of the hits costs AP
    covered = 0
    for k in range(60):
        a, b = _pair(1000 + k, 300)
        res = Resamples(a.files, 300, seed=k)
        d = paired_bootstrap({0: ((k, "a"), a)}, {0: ((k, "b"), b)}, res)["map"]
        assert d.lo <= d.delta <= d.hi and d.n_seeds == 1 and d.seed_var == 0.0
        covered += d.lo <= truth <= d.hi
    assert 0.88 <= covered / 60 <= 1.0, covered


def test_one_image_reduces_to_the_seed_bootstrap():
    """With a single validation image the images add no noise: the interval is the bootstrap of the per-seed
    differences alone."""
    runs_a, runs_b, full = {}, {}, []
    for s in range(4):
        a, b = _pair(50 + s, 1, drop_rate=0.5)
        b = ImageStats(b.correct, b.conf * (0.5 + 0.1 * s), b.pcls, b.pimg, b.tcls, b.timg, a.files)
        runs_a[s], runs_b[s] = ((s, "a"), a), ((s, "b"), b)
        full.append(b.map()[1] - a.map()[1])
    res = Resamples(runs_a[0][1].files, 400, seed=2)
    d = paired_bootstrap(runs_a, runs_b, res)["map"]
    assert d.image_var == pytest.approx(0.0, abs=1e-20) and d.delta == pytest.approx(np.mean(full))
    pick = np.random.default_rng(res.b + 4).integers(0, 4, (res.b, 4))
    seed_boot = np.asarray(full)[pick].mean(1)
    assert (d.lo, d.hi) == pytest.approx(tuple(np.percentile(seed_boot, [2.5, 97.5])))
    assert d.seed_var == pytest.approx(np.var(full, ddof=1))


def test_holm_and_seeds_needed():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []
    d = BootstrapDiff("map", 0.0, 0, 0, 1, 0, 0, 2, 128, 1000, seed_var=0.01 ** 2, image_var=0.002 ** 2)
    n = seeds_needed(d, 0.01)
    assert POWER_Z * np.sqrt(d.seed_var / n + d.image_var) <= 0.01 < POWER_Z * np.sqrt(d.seed_var / (n - 1)
                                                                                           + d.image_var)
    assert seeds_needed(d, 0.005) is None or seeds_needed(d, 0.005) > n
    noisy = BootstrapDiff("map", 0.0, 0, 0, 1, 0, 0, 2, 128, 1000, seed_var=0.0, image_var=0.01 ** 2)
    assert seeds_needed(noisy, 0.01) is None  # the images' noise alone hides it: more seeds cannot help


def _save(stats: ImageStats, folder) -> None:
    folder.mkdir(parents=True)
    np.savez_compressed(folder / "image_stats.npz", correct=stats.correct, conf=stats.conf, pcls=stats.pcls,
                        pimg=stats.pimg, tcls=stats.tcls, timg=stats.timg, files=np.array(stats.files))


def test_compare_bootstrap_with_tta_and_the_verdict_sentence(tmp_path):
    """bootstrap_all over run folders: the plain and the TTA validations' matches, Holm over the models, the
    verdict sentence and results.csv columns from them."""
    from pathlib import Path

    from utils.compare.results import ModelResult, SeedResult
    from utils.compare.verdict import bootstrap_all, bootstrap_cols, bootstrap_lines, verdict_lines

    models = []
    for name, drop in (("base", 0.0), ("worse", 0.3), ("same", 0.0)):
        m = ModelResult(name, f"{name}.yaml", 1000 if name == "base" else 1500, 1.0 if name == "base" else 1.2)
        for seed in (0, 1):
            a, b = _pair(10 + seed, 200, drop_rate=drop)
            run = tmp_path / f"{name}_seed{seed}"
            _save(b, run / "val")
            _save(b, run / "val_tta")
            m.seeds.append(SeedResult(seed, 0.5, 0.5, b.map()[0], b.map()[1], [b.map()[1]], 1.0, Path(run)))
        models.append(m)
    bootstrap_all(models, 300)
    base, worse, same = models
    assert base.bootstrap == {} and set(worse.bootstrap) == {"map", "map50", "map_tta", "map50_tta"}
    d = worse.bootstrap["map"]
    assert d.n_seeds == 2 and d.n_images == 200 and d.hi < 0 and d.p_holm == pytest.approx(min(1, 2 * d.p_value))
    assert same.bootstrap["map"].delta == 0.0 and same.bootstrap["map"].p_value == 1.0
    sentence = next(line for line in verdict_lines(models) if line.startswith("- worse:"))
    assert sentence.startswith(f"- worse: mAP50-95 {d.delta:+.3f} [{d.lo:+.3f}, {d.hi:+.3f}], worse than the baseline")
    assert "(2 seeds, 200 images)" in sentence and "with test-time augmentation" in sentence
    assert "+50% parameters" in sentence and "+20% GFLOPs" in sentence
    cols = bootstrap_cols(worse, base)
    assert cols["boot_map_delta"] == pytest.approx(d.delta, abs=1e-6) and "boot_map_tta_delta" in cols
    assert any("mAP50-95 (TTA)" in line for line in bootstrap_lines(models))
