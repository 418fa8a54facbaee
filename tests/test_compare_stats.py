"""Seed statistics of the comparison on hand-made values: mean/std, Welch's t-test, the within-noise rule."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from utils.compare_stats import noise_check, summarize, welch_t


def test_summarize_by_hand():
    s = summarize([0.30, 0.32, 0.34])
    assert s.mean == pytest.approx(0.32)
    assert s.std == pytest.approx(0.02)  # sqrt(((-.02)^2 + 0 + .02^2) / 2)
    assert s.n == 3
    one = summarize([0.5])
    assert (one.mean, one.std, one.n) == (0.5, 0.0, 1)


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")]])
def test_summarize_rejects_empty_and_nan(bad):
    with pytest.raises(ValueError):
        summarize(bad)


def test_welch_matches_the_formula():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    va, vb = 1.0, 5 / 3  # sample variances
    se2 = va / 3 + vb / 4
    t = (5.5 - 2.0) / math.sqrt(se2)
    df = se2**2 / ((va / 3) ** 2 / 2 + (vb / 4) ** 2 / 3)  # Welch-Satterthwaite
    p = 2 * stats.t.sf(t, df)
    t_got, p_got = welch_t(a, b)
    assert t_got == pytest.approx(t, rel=1e-9)
    assert t == pytest.approx(4.0415, abs=1e-4)
    assert p_got == pytest.approx(p, rel=1e-9)
    with pytest.raises(ValueError, match=">= 2 values"):
        welch_t([1.0], b)


def test_noise_check_welch_both_ways():
    base = [0.300, 0.310, 0.305]
    far = noise_check(base, [0.400, 0.410, 0.405])
    assert far.method == "welch" and far.within_noise is False and far.mark == "*"
    assert far.delta == pytest.approx(0.1)
    near = noise_check(base, [0.302, 0.312, 0.296])
    assert near.method == "welch" and near.within_noise is True and near.mark == "≈"
    assert near.p_value > 0.5


def test_noise_check_one_seed_on_one_side_uses_the_other_spread():
    base = [0.30, 0.32]  # s = 0.014142
    s = 0.02 / math.sqrt(2)
    limit = 1.959963984540054 * s * math.sqrt(1 / 2 + 1 / 1)  # 0.03395
    inside = noise_check(base, [0.31 + limit - 1e-4])
    outside = noise_check(base, [0.31 + limit + 1e-4])
    assert inside.method == outside.method == "z-known-std"
    assert inside.within_noise is True and outside.within_noise is False
    assert inside.p_value == pytest.approx(2 * stats.norm.sf((limit - 1e-4) / (s * math.sqrt(1.5))))


def test_noise_check_unknown_and_exact():
    unknown = noise_check([0.3], [0.5])
    assert unknown.within_noise is None and unknown.mark == "?" and unknown.delta == pytest.approx(0.2)
    same = noise_check([0.0, 0.0], [0.0, 0.0])  # e.g. every run at mAP 0: no spread, no difference
    assert same.method == "exact" and same.within_noise is True
    diff = noise_check([0.1, 0.1], [0.2, 0.2])
    assert diff.method == "exact" and diff.within_noise is False
