"""Seed statistics for the model comparison: mean and spread of a metric, and whether a difference is noise.

The rule (stated in every report):

* the model and the baseline both finished >= 2 runs with the same seed: the *paired* t-test decides. Runs with
  the same seed start from the same weights (for every layer the two share) and see the same batches and
  augmentations, so their difference cancels much of the seed noise: `scipy.stats.ttest_rel` on the per-seed
  differences, within noise when p >= alpha; when every paired difference is the same number, within noise
  only if it is 0. The mean difference gets a 95% confidence interval from the t distribution (n - 1 dof).
* otherwise the *unpaired* rule below decides, on all finished seeds of each model.

The unpaired rule:

* both models have n >= 2 seeds: Welch's t-test (unequal variances, `scipy.stats.ttest_ind(equal_var=False)`);
  the difference is *within noise* when p >= alpha (0.05). With 2-3 seeds the test has little power: "within
  noise" then means "these runs cannot tell the two apart", not "the two are equal".
* only one side has n >= 2 seeds: its sample std s stands in for the seed noise of both; the difference is
  within noise when |delta| <= z * s * sqrt(1/n_a + 1/n_b), z = 1.96 (a two-sided z-test at the same alpha).
* neither side has two seeds: the noise cannot be estimated and the difference is marked unknown ("?").
* both sides have no spread at all (every seed gave the same value): within noise only if delta is exactly 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from utils.errors import UserError

__all__ = ["Summary", "NoiseCheck", "PairedDiff", "Verdict", "summarize", "welch_t", "noise_check", "paired_diff",
           "verdict", "NOISE_RULE", "ALPHA"]

ALPHA = 0.05
_Z = 1.959963984540054  # two-sided 95% normal quantile

NOISE_RULE = (
    "A difference from the baseline is marked `≈` (within seed noise) or `*` (outside it). When the model and the "
    "baseline both finished >= 2 runs with the same seed, the paired t-test decides (`scipy.stats.ttest_rel` on "
    "the per-seed differences; a seed's two runs start from the same weights for every shared layer and see the "
    f"same batches and augmentations): within noise when p >= {ALPHA}, or, when every difference is the same "
    "number, only if it is 0. Otherwise the unpaired rule decides, on all finished seeds: with >= 2 seeds per "
    f"model, Welch's t-test over the seeds, within noise when p >= {ALPHA}; with one seed on one side, within "
    "noise when |delta| <= 1.96 * s * sqrt(1/n_a + 1/n_b), s the other side's seed std; with one seed on both "
    "sides the noise is unknown (`?`). With several models against one baseline, the deciding test's p of the mAP50 "
    "and mAP50-95 marks is Holm-adjusted over them (results.csv keeps the raw p beside `*_p_holm`). With 2-3 seeds "
    "either test is weak: `≈` means the runs cannot tell the models apart, not that they are equal."
)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; 0.0 for a single value) and count of a metric over seeds."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class NoiseCheck:
    """A difference `other - base` and whether it is within seed noise (None: cannot be told)."""

    delta: float
    within_noise: bool | None
    p_value: float | None
    method: str  # 'welch', 'z-known-std', 'exact', 'unknown'

    @property
    def mark(self) -> str:
        """'≈' within noise, '*' outside it, '?' unknown."""
        return _mark(self.within_noise)


def _mark(within_noise: bool | None) -> str:
    return "?" if within_noise is None else ("≈" if within_noise else "*")


@dataclass(frozen=True)
class PairedDiff:
    """Per-seed differences `other - base` over the seeds both models finished.

    delta is their mean (None when no seed is shared); ci_low/ci_high its 95% confidence interval from the t
    distribution with n - 1 dof and p_value the paired t-test's (both None with fewer than 2 pairs, p_value also
    None when every difference is the same number).
    """

    n: int
    seeds: tuple[int, ...]
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    within_noise: bool | None
    method: str  # 'paired-t', 'exact' (no spread), 'single' (one pair), 'none' (no pair)

    @property
    def mark(self) -> str:
        return _mark(self.within_noise)


@dataclass(frozen=True)
class Verdict:
    """A model's difference from the baseline on one metric: both tests, and which one set the mark."""

    unpaired: NoiseCheck
    paired: PairedDiff
    p_holm: float | None = None  # the deciding test's p, Holm-adjusted over the models against one baseline

    @property
    def decided_by(self) -> str:
        """'paired' with >= 2 paired seeds, else 'unpaired'."""
        return "paired" if self.paired.n >= 2 else "unpaired"

    @property
    def p_value(self) -> float | None:
        """The deciding test's p (None where it has none: no spread, one seed)."""
        return self.paired.p_value if self.decided_by == "paired" else self.unpaired.p_value

    @property
    def mark(self) -> str:
        """The deciding test's mark; where that test has a p and the family was adjusted, from Holm's p."""
        if self.p_holm is not None and self.p_value is not None:
            return _mark(self.p_holm >= ALPHA)
        return self.paired.mark if self.decided_by == "paired" else self.unpaired.mark


def _values(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise UserError(f"{what}: no values (each model needs at least one seed)")
    if not np.isfinite(a).all():
        raise UserError(f"{what}: values must be finite, got {a.tolist()}")
    return a


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample std (ddof=1) of seed values; std is 0.0 for one value."""
    a = _values(values, "summarize")
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return Summary(mean=float(a.mean()), std=std, n=int(a.size))


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of Welch's t-test of mean(b) - mean(a); both need >= 2 values and some spread."""
    from scipy import stats  # lazy: scipy is heavy; loaded only when a t-test runs

    x, y = _values(a, "welch_t a"), _values(b, "welch_t b")
    if x.size < 2 or y.size < 2:
        raise UserError(f"Welch's t-test needs >= 2 values per side, got {x.size} and {y.size}")
    res = stats.ttest_ind(y, x, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def noise_check(base: Sequence[float], other: Sequence[float], alpha: float = ALPHA) -> NoiseCheck:
    """Is mean(other) - mean(base) within the seed noise? See the module docstring for the rule."""
    a, b = _values(base, "baseline"), _values(other, "model")
    sa, sb = summarize(a), summarize(b)
    delta = sb.mean - sa.mean
    if sa.n >= 2 and sb.n >= 2:
        if sa.std == 0.0 and sb.std == 0.0:
            return NoiseCheck(delta, delta == 0.0, None, "exact")
        _, p = welch_t(a, b)
        return NoiseCheck(delta, p >= alpha, p, "welch")
    if sa.n >= 2 or sb.n >= 2:
        s = sa.std if sa.n >= 2 else sb.std
        if s == 0.0:
            return NoiseCheck(delta, delta == 0.0, None, "exact")
        se = s * math.sqrt(1 / sa.n + 1 / sb.n)
        p = float(math.erfc(abs(delta) / se / math.sqrt(2)))  # two-sided normal p-value
        return NoiseCheck(delta, abs(delta) <= _Z * se, p, "z-known-std")
    return NoiseCheck(delta, None, None, "unknown")


def _by_seed(values: Mapping[int, float], what: str) -> dict[int, float]:
    out = {int(k): float(v) for k, v in values.items()}
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise UserError(f"{what}: values must be finite, got {bad} (seed: value)")
    return out


def paired_diff(base: Mapping[int, float], other: Mapping[int, float], alpha: float = ALPHA,
                confidence: float = 0.95) -> PairedDiff:
    """Pair `other[seed] - base[seed]` over the seeds in both (seed -> metric); mean, t interval, paired t-test."""
    from scipy import stats  # lazy: scipy is heavy; loaded only when a t-test runs

    a, b = _by_seed(base, "paired baseline"), _by_seed(other, "paired model")
    seeds = tuple(sorted(set(a) & set(b)))
    d = np.array([b[k] - a[k] for k in seeds])  # (n,) per-seed differences
    n = int(d.size)
    if n == 0:
        return PairedDiff(0, seeds, None, None, None, None, None, "none")
    mean = float(d.mean())
    if n == 1:
        return PairedDiff(1, seeds, mean, None, None, None, None, "single")
    if np.ptp(d) == 0.0:  # every difference equal: no spread to test against
        return PairedDiff(n, seeds, mean, mean, mean, None, mean == 0.0, "exact")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    p = float(stats.ttest_rel([b[k] for k in seeds], [a[k] for k in seeds]).pvalue)
    return PairedDiff(n, seeds, mean, mean - half, mean + half, p, p >= alpha, "paired-t")


def verdict(base: Mapping[int, float], other: Mapping[int, float], alpha: float = ALPHA) -> Verdict:
    """Both tests of `other` against `base` (seed -> metric of each finished run); see the module docstring."""
    return Verdict(noise_check(list(base.values()), list(other.values()), alpha), paired_diff(base, other, alpha))
