"""Seed statistics for the model comparison: mean and spread of a metric, and whether a difference is noise.

The rule (stated in every report):

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
from typing import Sequence

import numpy as np

__all__ = ["Summary", "NoiseCheck", "summarize", "welch_t", "noise_check", "NOISE_RULE", "ALPHA"]

ALPHA = 0.05
_Z = 1.959963984540054  # two-sided 95% normal quantile

NOISE_RULE = (
    "A difference from the baseline is marked `≈` (within seed noise) or `*` (outside it). With >= 2 seeds per "
    f"model: Welch's t-test over the seeds, within noise when p >= {ALPHA}. With one seed on one side: within noise "
    "when |delta| <= 1.96 * s * sqrt(1/n_a + 1/n_b), s the other side's seed std. With one seed on both sides "
    "the noise is unknown (`?`). With 2-3 seeds the test is weak: `≈` means the runs cannot tell the models "
    "apart, not that they are equal."
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
        return "?" if self.within_noise is None else ("≈" if self.within_noise else "*")


def _values(values: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{what}: no values (each model needs at least one seed)")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: values must be finite, got {a.tolist()}")
    return a


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample std (ddof=1) of seed values; std is 0.0 for one value."""
    a = _values(values, "summarize")
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return Summary(mean=float(a.mean()), std=std, n=int(a.size))


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of Welch's t-test of mean(b) - mean(a); both need >= 2 values and some spread."""
    from scipy import stats

    x, y = _values(a, "welch_t a"), _values(b, "welch_t b")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Welch's t-test needs >= 2 values per side, got {x.size} and {y.size}")
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
