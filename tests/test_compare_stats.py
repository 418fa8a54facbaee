"""Seed statistics of the comparison on hand-made values: mean/std, Welch's t-test, the within-noise rule."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from utils.compare.stats import NOISE_RULE, noise_check, paired_diff, summarize, verdict, welch_t


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


def test_paired_diff_matches_scipy_and_pairs_only_shared_seeds():
    base = {0: 0.300, 1: 0.320, 2: 0.310, 3: 0.290, 4: 0.500}  # seed 4 failed for the model
    other = {0: 0.310, 1: 0.335, 2: 0.318, 3: 0.296, 7: 0.100}  # seed 7 has no baseline run
    seeds = [0, 1, 2, 3]
    d = [other[k] - base[k] for k in seeds]
    p = paired_diff(base, other)
    ref = stats.ttest_rel([other[k] for k in seeds], [base[k] for k in seeds])
    ci = ref.confidence_interval(0.95)
    assert p.n == 4 and p.seeds == (0, 1, 2, 3) and p.method == "paired-t"
    assert p.delta == pytest.approx(sum(d) / 4, rel=1e-12)
    assert p.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert (p.ci_low, p.ci_high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))
    assert p.within_noise is False and ref.pvalue < 0.05  # a steady gain of about 0.01 on every seed


def test_paired_diff_by_hand():
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 2 sqrt 3 with 2 dof
    p = paired_diff({0: 0.30, 1: 0.30, 2: 0.30}, {0: 0.31, 1: 0.32, 2: 0.33})
    t = 2 * math.sqrt(3)
    assert p.delta == pytest.approx(0.02)
    assert p.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)  # 2 dof: F(t) = 1/2 + t/2/sqrt(2+t^2)
    assert p.p_value == pytest.approx(0.074180, abs=1e-6)
    half = 4.302652729749464 * 0.01 / math.sqrt(3)  # t_{0.975, 2 dof}
    assert p.ci_low == pytest.approx(0.02 - half, rel=1e-9) and p.ci_high == pytest.approx(0.02 + half, rel=1e-9)
    assert p.within_noise is True and p.mark == "≈"


def test_paired_diff_without_spread_single_and_none():
    same = paired_diff({0: 0.3, 1: 0.4}, {0: 0.3, 1: 0.4})  # e.g. plug-ins still switched off: equal runs
    assert same.method == "exact" and same.delta == 0.0 and same.within_noise is True and same.p_value is None
    assert (same.ci_low, same.ci_high) == (0.0, 0.0)
    shifted = paired_diff({0: 0.25, 1: 0.5}, {0: 0.5, 1: 0.75})  # every difference exactly +0.25
    assert shifted.method == "exact" and shifted.within_noise is False and shifted.mark == "*"
    one = paired_diff({0: 0.3, 1: 0.4}, {1: 0.45})
    assert (one.n, one.method, one.ci_low, one.p_value, one.mark) == (1, "single", None, None, "?")
    assert one.delta == pytest.approx(0.05)
    none = paired_diff({0: 0.3}, {1: 0.4})
    assert (none.n, none.delta, none.method) == (0, None, "none")
    with pytest.raises(ValueError, match="seed: value"):
        paired_diff({0: float("nan"), 1: 0.2}, {0: 0.1, 1: 0.2})


def test_verdict_paired_decides_with_two_pairs_else_unpaired():
    base = {0: 0.30, 1: 0.40, 2: 0.35}  # a large seed spread ...
    other = {0: 0.310, 1: 0.411, 2: 0.362}  # ... and a steady gain of about 0.011 on every seed
    v = verdict(base, other)
    assert v.unpaired.method == "welch" and v.unpaired.mark == "≈"  # Welch cannot see it through the spread
    assert v.paired.p_value < 0.05 and v.decided_by == "paired" and v.mark == "*"
    few = verdict({0: 0.30, 1: 0.32}, {1: 0.40})  # one paired seed: the unpaired rule decides
    assert few.decided_by == "unpaired" and few.mark == few.unpaired.mark == "*"
    assert few.unpaired.method == "z-known-std"
    assert "paired t-test decides" in NOISE_RULE and "Otherwise the unpaired rule decides" in NOISE_RULE
