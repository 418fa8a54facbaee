"""The paired bootstrap over validation images (and seeds): how far a plug-in model's mAP is from the baseline's
once the validation set's own sampling noise is counted, as the PASCAL VOC organisers compared entries
(Everingham et al., "Assessing the significance of performance differences on the PASCAL VOC challenges via
bootstrapping").

Each run's final validation keeps its per-image matches (val.py --save-stats, utils.validation.image_stats). One
set of B resamples of the images (seeded) serves every model and seed, so a model and the baseline are always
scored on the same draw. With >= 2 paired seeds each draw also resamples the seeds (two levels: seeds, then
images), so the interval carries both noises; with one seed it is the image noise alone.

    diffs = paired_bootstrap(base_runs, model_runs, cache, resamples=1000, seed=0)   # {"map": ..., "map50": ...}
    holm([p1, p2, p3])                                                                # Holm-adjusted p-values
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from utils.validation.image_stats import ImageStats

__all__ = ["BootstrapDiff", "Resamples", "paired_bootstrap", "holm", "seeds_needed", "POWER_Z", "METRICS"]

METRICS = ("map50", "map")  # column order of ImageStats.resampled_maps
POWER_Z = 1.959963984540054 + 0.8416212335729143  # two-sided 5% test at 80% power: z_0.975 + z_0.8


@dataclass
class BootstrapDiff:
    """model - baseline on one metric: the point difference (mean over paired seeds, every image once), the
    bootstrap's 95% percentile interval and two-sided p, its standard error, the minimum detectable effect at
    80% power (POWER_Z * se), and the variance parts the seeds-needed estimate uses."""

    metric: str
    delta: float
    lo: float
    hi: float
    p_value: float
    se: float
    mde: float
    n_seeds: int
    n_images: int
    resamples: int
    seed_var: float  # variance over seeds of the per-seed differences (0 with one seed)
    image_var: float  # variance over image resamples of the seed-mean difference (seeds fixed)
    p_holm: float | None = None  # set by the caller over the models compared with one baseline


class Resamples:
    """B resamples of n images (copies of each image, (B, n)) and of the seeds, drawn once from `seed`; each
    run's mAP on them is computed once and kept (`maps`)."""

    def __init__(self, files: Sequence[str], resamples: int = 1000, seed: int = 0):
        self.files, self.b = list(files), int(resamples)
        self.rng = np.random.default_rng(seed)
        n = len(self.files)
        idx = self.rng.integers(0, n, (self.b, n))
        self.counts = np.zeros((self.b, n))
        np.add.at(self.counts, (np.arange(self.b)[:, None], idx), 1)
        self._maps: dict[object, np.ndarray] = {}

    def maps(self, key: object, stats: ImageStats) -> np.ndarray:
        """(B, k) figures of one run on every resample (images matched by file name): mAP50, mAP50-95 of its
        ImageStats, or AP small, medium, large of its SizeStats (utils.compare.size_stats)."""
        if key not in self._maps:
            self._maps[key] = stats.reordered(self.files).resampled_maps(self.counts)
        return self._maps[key]


def paired_bootstrap(base: Mapping[int, tuple[object, ImageStats]], model: Mapping[int, tuple[object, ImageStats]],
                     res: Resamples, metrics: Sequence[str] = METRICS) -> dict[str, BootstrapDiff]:
    """{metric: BootstrapDiff} of `model` against `base` over the seeds both have; each maps seed -> (cache key,
    ImageStats of that run's validation, or its SizeStats with metrics=SIZE_METRICS). {} when they share no seed.
    A metric that is NaN on the full set (no object of a size) is left out; resamples where it is NaN (none drawn)
    are dropped from its interval."""
    seeds = sorted(set(base) & set(model))
    if not seeds:
        return {}
    full = np.array([[a - b for a, b in zip(model[s][1].map(), base[s][1].map())] for s in seeds])  # (n, k)
    draws = np.stack([res.maps(model[s][0], model[s][1]) - res.maps(base[s][0], base[s][1]) for s in seeds])
    n = len(seeds)
    image_only = draws.mean(0)  # (B, k): the seed-mean difference, seeds fixed
    if n >= 2:  # two levels: which seeds, then which images
        pick = np.random.default_rng(res.b + n).integers(0, n, (res.b, n))
        boot = draws[pick, np.arange(res.b)[:, None]].mean(1)  # (B, k)
    else:
        boot = image_only
    out = {}
    for j, metric in enumerate(metrics):
        d = boot[:, j][np.isfinite(boot[:, j])]
        if not np.isfinite(full[:, j]).all() or len(d) < res.b / 2:
            continue
        image_j = image_only[:, j][np.isfinite(image_only[:, j])]
        lo, hi = (float(x) for x in np.percentile(d, [2.5, 97.5]))
        p = float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
        se = float(d.std(ddof=1)) if len(d) > 1 else 0.0
        out[metric] = BootstrapDiff(metric, float(full[:, j].mean()), lo, hi, p, se, POWER_Z * se, n,
                                    len(res.files), res.b, float(full[:, j].var(ddof=1)) if n > 1 else 0.0,
                                    float(image_j.var(ddof=1)))
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of p-values from tests against one baseline (None stays None)."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def seeds_needed(d: BootstrapDiff, effect: float, most: int = 100) -> int | None:
    """Seeds this job would need to detect `effect` at 80% power with its images: the smallest n with
    POWER_Z * sqrt(seed_var / n + image_var) <= effect; None when the images' own noise alone is too large (more
    validation images are needed, not seeds) or more than `most` seeds would be."""
    if POWER_Z * math.sqrt(d.image_var) > effect:
        return None
    if d.seed_var <= 0:
        return max(d.n_seeds, 1)
    room = (effect / POWER_Z) ** 2 - d.image_var
    if room <= 0:
        return None
    n = math.ceil(d.seed_var / room)
    return n if n <= most else None
