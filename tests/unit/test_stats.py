"""Paired bootstrap, McNemar, Holm and the power rule, checked against scipy and worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from daemon import stats

RNG = np.random.default_rng(12345)
N = 300
CHAMP = (RNG.random(N) < 0.6).astype(float)
CHALL = np.where(RNG.random(N) < 0.2, 1.0, CHAMP)  # the challenger fixes ~20% of items


# ---------------------------------------------------------------- paired bootstrap


def test_bootstrap_observed_delta_and_bounds_order() -> None:
    r = stats.paired_bootstrap(CHAMP, CHALL, resamples=4000, seed=1)
    assert r.delta == pytest.approx(CHALL.mean() - CHAMP.mean())
    assert (r.champion_mean, r.challenger_mean) == (
        pytest.approx(CHAMP.mean()),
        pytest.approx(CHALL.mean()),
    )
    assert r.lower < r.delta < r.upper
    assert r.champion_ci[0] < r.champion_mean < r.champion_ci[1]
    assert r.resamples == 4000 and r.distribution.shape == (4000,)


def test_bootstrap_is_seeded_and_default_is_10000() -> None:
    a = stats.paired_bootstrap(CHAMP, CHALL, resamples=2000, seed=7)
    b = stats.paired_bootstrap(CHAMP, CHALL, resamples=2000, seed=7)
    c = stats.paired_bootstrap(CHAMP, CHALL, resamples=2000, seed=8)
    assert (a.lower, a.upper) == (b.lower, b.upper)
    assert not np.array_equal(a.distribution, c.distribution)
    assert stats.paired_bootstrap(CHAMP[:20], CHALL[:20]).resamples == 10_000
    assert stats.DEFAULT_RESAMPLES == 10_000


def test_bootstrap_matches_scipy_paired_percentile_interval() -> None:
    # scipy.stats.bootstrap(paired=True, method="percentile") resamples the same item indices
    # for both samples; its two-sided 90% interval is our pair of one-sided 95% bounds.
    ours = stats.paired_bootstrap(CHAMP, CHALL, confidence=0.95, resamples=20_000, seed=3)
    ref = sps.bootstrap(
        (CHAMP, CHALL),
        lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=0.90,
        method="percentile",
        n_resamples=20_000,
        random_state=np.random.default_rng(4),
    ).confidence_interval
    # Monte Carlo error of a 5% quantile with 20,000 resamples is ~0.002 here.
    assert ours.lower == pytest.approx(ref.low, abs=0.006)
    assert ours.upper == pytest.approx(ref.high, abs=0.006)


def test_bootstrap_bounds_match_normal_theory_for_large_n() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(2000)
    b = np.clip(a + rng.normal(0.02, 0.1, 2000), 0, 1)
    d = b - a
    r = stats.paired_bootstrap(a, b, resamples=10_000, seed=0)
    se = d.std(ddof=1) / math.sqrt(d.size)
    z = sps.norm.ppf(0.95)
    assert r.lower == pytest.approx(d.mean() - z * se, abs=0.0015)
    assert r.upper == pytest.approx(d.mean() + z * se, abs=0.0015)


def test_identical_scores_give_a_degenerate_zero_interval() -> None:
    r = stats.paired_bootstrap(CHAMP, CHAMP, resamples=1000)
    assert (r.delta, r.lower, r.upper) == (0.0, 0.0, 0.0)
    # H0 delta <= 0 can never be rejected by a tie; H0 delta <= -0.05 always is.
    assert r.p_greater(0.0) == 1.0
    assert r.p_greater(-0.05) == pytest.approx(1 / 1001)


def test_bootstrap_p_value_agrees_with_the_bound() -> None:
    r = stats.paired_bootstrap(CHAMP, CHALL, resamples=5000, seed=2)
    for threshold in np.linspace(r.lower - 0.05, r.upper + 0.05, 21):
        p = r.p_greater(float(threshold))
        # Percentile-interval duality: the lower bound exceeds t iff p < alpha (up to ties).
        if r.lower > threshold + 1e-9:
            assert p <= 0.05 + 1 / 5001
        if r.lower < threshold - 1e-3:
            assert p > 0.05
    assert r.p_less(r.upper + 0.05) < 0.01 and r.p_less(r.lower) > 0.9


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([], [], "at least one item"),
        ([1.0, 0.0], [1.0], "equal 1-D shapes"),
        ([1.0, math.nan], [1.0, 0.0], "NaN or infinity"),
    ],
)
def test_bootstrap_rejects_bad_input(a: list[float], b: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stats.paired_bootstrap(a, b, resamples=10)


def test_bootstrap_rejects_bad_confidence() -> None:
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_bootstrap([1.0], [1.0], confidence=1.0)


# ---------------------------------------------------------------- stratified


def test_single_unnamed_stratum_equals_the_plain_paired_bootstrap() -> None:
    plain = stats.paired_bootstrap(CHAMP, CHALL, resamples=3000, seed=5)
    strat = stats.stratified_paired_bootstrap(
        [stats.Stratum("", list(CHAMP), list(CHALL), 2.0)], resamples=3000, seed=5
    )
    np.testing.assert_allclose(strat.composite.distribution, plain.distribution)
    assert strat.composite.lower == pytest.approx(plain.lower)


def test_stratified_resampling_never_mixes_strata() -> None:
    # Stratum x: every item improves by 1; stratum y: nothing changes. Resampling within
    # strata keeps the composite at exactly (1 * 1 + 3 * 0) / 4 in every resample; pooled
    # resampling would not.
    x = stats.Stratum("x", [0.0] * 10, [1.0] * 10, weight=1.0)
    y = stats.Stratum("y", [0.5] * 40, [0.5] * 40, weight=3.0)
    r = stats.stratified_paired_bootstrap([x, y], resamples=500)
    assert r.composite.delta == pytest.approx(0.25)
    assert r.composite.lower == pytest.approx(0.25) and r.composite.upper == pytest.approx(0.25)
    assert r.composite.champion_mean == pytest.approx(0.375)
    assert r.strata["x"].delta == 1.0 and r.strata["y"].delta == 0.0


def test_stratified_composite_is_weighted_mean_of_category_deltas() -> None:
    a = stats.Stratum("a", list(CHAMP[:100]), list(CHALL[:100]), weight=2.0)
    b = stats.Stratum("b", list(CHAMP[100:]), list(CHAMP[100:] * 0.5), weight=1.0)
    r = stats.stratified_paired_bootstrap([a, b], resamples=2000, seed=9)
    da, db = r.strata["a"].delta, r.strata["b"].delta
    assert r.composite.delta == pytest.approx((2 * da + db) / 3)
    np.testing.assert_allclose(
        r.composite.distribution, (2 * r.strata["a"].distribution + r.strata["b"].distribution) / 3
    )


def test_a_stratum_result_does_not_depend_on_the_other_strata() -> None:
    a = stats.Stratum("a", list(CHAMP[:100]), list(CHALL[:100]))
    b = stats.Stratum("b", list(CHAMP[100:]), list(CHALL[100:]))
    alone = stats.stratified_paired_bootstrap([a], resamples=1000, seed=1)
    both = stats.stratified_paired_bootstrap([b, a], resamples=1000, seed=1)
    np.testing.assert_array_equal(alone.strata["a"].distribution, both.strata["a"].distribution)


def test_stratified_rejects_bad_weights_and_names() -> None:
    s = stats.Stratum("a", [1.0], [1.0], weight=0.0)
    with pytest.raises(ValueError, match="sum to > 0"):
        stats.stratified_paired_bootstrap([s], resamples=10)
    with pytest.raises(ValueError, match="unique"):
        stats.stratified_paired_bootstrap([stats.Stratum("a", [1.0], [1.0])] * 2, resamples=10)
    with pytest.raises(ValueError, match="at least one stratum"):
        stats.stratified_paired_bootstrap([], resamples=10)


# ---------------------------------------------------------------- binomial and McNemar


@pytest.mark.parametrize(
    ("k", "n", "p"), [(0, 10, 0.3), (3, 10, 0.5), (10, 10, 0.5), (40, 100, 0.31), (5, 3000, 0.001)]
)
def test_binom_tails_match_scipy(k: int, n: int, p: float) -> None:
    assert stats.binom_sf(k, n, p) == pytest.approx(sps.binom.sf(k - 1, n, p), rel=1e-9, abs=1e-300)
    assert stats.binom_cdf(k, n, p) == pytest.approx(sps.binom.cdf(k, n, p), rel=1e-9, abs=1e-300)


def pairs(b: int, c: int, both: int = 5, neither: int = 5) -> tuple[list[float], list[float]]:
    """Champion/challenger outcomes with b challenger-only and c champion-only wins."""
    champ = [0.0] * b + [1.0] * c + [1.0] * both + [0.0] * neither
    chall = [1.0] * b + [0.0] * c + [1.0] * both + [0.0] * neither
    return champ, chall


@pytest.mark.parametrize(("b", "c"), [(8, 1), (1, 8), (5, 5), (12, 3), (0, 4), (30, 18), (150, 86)])
def test_mcnemar_matches_scipy_binomtest(b: int, c: int) -> None:
    r = stats.mcnemar_exact(*pairs(b, c))
    assert (r.b, r.c, r.n) == (b, c, b + c + 10)
    assert r.delta == pytest.approx((b - c) / (b + c + 10))
    assert r.p_greater == pytest.approx(
        sps.binomtest(b, b + c, 0.5, alternative="greater").pvalue, rel=1e-9
    )
    assert r.p_less == pytest.approx(
        sps.binomtest(b, b + c, 0.5, alternative="less").pvalue, rel=1e-9
    )
    assert r.p_two_sided == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_mcnemar_worked_example_by_hand() -> None:
    # b = 8, c = 1: P(X >= 8 | Bin(9, 1/2)) = (C(9,8) + C(9,9)) / 2^9 = 10/512.
    r = stats.mcnemar_exact(*pairs(8, 1))
    assert r.p_greater == pytest.approx(10 / 512)
    assert r.p_two_sided == pytest.approx(20 / 512)
    # Large sample: McNemar's (1947) statistic z = (b - c) / sqrt(b + c) = (86 - 150) / sqrt(236)
    # = -4.17, normal two-sided p = 3.1e-5; the exact test agrees to within a factor of 2.
    r = stats.mcnemar_exact(*pairs(86, 150))
    z = (86 - 150) / math.sqrt(236)
    assert z == pytest.approx(-4.166, abs=1e-3)
    normal_p = 2 * sps.norm.sf(abs(z))
    assert normal_p / 2 < r.p_two_sided < normal_p * 2


def test_mcnemar_without_discordant_pairs_is_a_tie() -> None:
    r = stats.mcnemar_exact([1.0, 0.0, 1.0], [1.0, 0.0, 1.0])
    assert (r.p_greater, r.p_less, r.p_two_sided, r.lower_bound, r.delta) == (
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
    )


def test_mcnemar_lower_bound_is_dual_to_the_one_sided_test() -> None:
    for b, c in [(8, 1), (7, 2), (6, 2), (20, 10), (3, 0), (2, 0)]:
        r = stats.mcnemar_exact(*pairs(b, c), confidence=0.95)
        assert (r.lower_bound > 0) == (r.p_greater < 0.05), (b, c)


def test_clopper_pearson_matches_scipy() -> None:
    for k, n in [(1, 10), (8, 9), (50, 100), (0, 5), (5, 5)]:
        ref = sps.binomtest(k, n, alternative="greater").proportion_ci(0.95, method="exact").low
        assert stats.clopper_pearson_lower(k, n, 0.95) == pytest.approx(ref, abs=1e-9)


def test_mcnemar_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="binary"):
        stats.mcnemar_exact([0.5], [1.0])


# ---------------------------------------------------------------- small samples and power


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 29, 99, 200, 201, 1000, 123.7])
@pytest.mark.parametrize("q", [0.5, 0.65, 0.8, 0.95, 0.975, 0.999, 0.05])
def test_t_quantile_matches_scipy(q: float, df: float) -> None:
    # fractional df are rounded down (a wider bound)
    assert stats.t_quantile(q, df) == pytest.approx(sps.t.ppf(q, math.floor(df)), abs=2e-6)
    assert stats.t_quantile(q, math.inf) == pytest.approx(sps.norm.ppf(q), abs=1e-9)


def test_welch_satterthwaite_worked_example() -> None:
    # Two terms with variances 0.01 (9 df) and 0.04 (4 df): (0.05)^2 / (0.01^2/9 + 0.04^2/4)
    # = 0.0025 / (1.111e-5 + 4e-4) = 6.081.
    assert stats.welch_satterthwaite_df([(0.01, 10), (0.04, 5)]) == pytest.approx(6.0811, abs=1e-4)
    assert stats.welch_satterthwaite_df([(0.0, 10), (0.02, 1)]) == math.inf


def test_expanded_bootstrap_matches_the_paired_t_interval() -> None:
    # Continuous scores: the expanded percentile bounds equal the paired t bounds of
    # scipy.stats.ttest_rel up to Monte Carlo error; the plain percentile bounds are narrower.
    rng = np.random.default_rng(3)
    a = rng.random(30)
    b = np.clip(a + rng.normal(0.03, 0.15, 30), 0, 1)
    ref = sps.ttest_rel(b, a).confidence_interval(confidence_level=0.90)
    s = [stats.Stratum("x", a, b)]
    wide = stats.stratified_paired_bootstrap(s, resamples=20_000, seed=1, expand=True)
    plain = stats.stratified_paired_bootstrap(s, resamples=20_000, seed=1)
    for r in (wide.strata["x"], wide.composite):
        assert r.lower == pytest.approx(ref.low, abs=0.004)
        assert r.upper == pytest.approx(ref.high, abs=0.004)
    assert plain.strata["x"].upper - plain.strata["x"].lower < 0.96 * (ref.high - ref.low)


def test_expanded_single_item_stratum_spans_every_difference() -> None:
    r = stats.stratified_paired_bootstrap(
        [stats.Stratum("one", [0.0], [1.0]), stats.Stratum("many", [0.0] * 20, [1.0] * 20)],
        resamples=1000,
        expand=True,
    )
    one = r.strata["one"]
    assert one.lower < -0.85 and one.upper > 0.85 and one.p_greater(-0.05) > 0.4


def test_grouped_resampling_draws_the_same_bootstrap_as_item_draws() -> None:
    # 0/1 pairs take 4 values (counts path); the same data plus tiny jitter has 300 distinct
    # pairs (item-draw path): the two bootstrap distributions agree in mean and spread.
    jitter = np.linspace(0, 1e-9, N)
    grouped = stats.paired_bootstrap(CHAMP, CHALL, resamples=10_000, seed=1)
    drawn = stats.paired_bootstrap(CHAMP + jitter, CHALL + jitter, resamples=10_000, seed=1)
    for r in (grouped, drawn):
        d = CHALL - CHAMP
        assert r.distribution.mean() == pytest.approx(d.mean(), abs=0.001)
        assert r.distribution.std() == pytest.approx(d.std() / math.sqrt(N), rel=0.03)
    assert grouped.lower == pytest.approx(drawn.lower, abs=0.004)


def test_shrunk_sd_pools_a_prior_worth_one_item() -> None:
    assert stats.shrunk_sd(0.0, 1) == pytest.approx(0.5)
    assert stats.shrunk_sd(0.0, 10) == pytest.approx(math.sqrt(0.25 / 10))
    # (99 * 0.14^2 + 0.25) / 100 = 0.021904
    assert stats.shrunk_sd(0.14, 100) == pytest.approx(math.sqrt(0.021904))
    with pytest.raises(ValueError):
        stats.shrunk_sd(0.1, 0)


def test_paired_sd_is_the_sd_of_item_differences() -> None:
    assert stats.paired_sd(CHAMP, CHALL) == pytest.approx(np.std(CHALL - CHAMP, ddof=1))
    assert stats.paired_sd([0.0], [1.0]) == 0.0


def test_min_detectable_difference_and_required_items() -> None:
    z = sps.norm.ppf(0.95) + sps.norm.ppf(0.8)
    assert stats.min_detectable_difference(100) == pytest.approx(z * 0.5 / 10)
    assert stats.min_detectable_difference(100) == pytest.approx(0.12432, abs=1e-5)
    assert stats.required_items(0.05) == 619  # ceil((2.4865 * 0.5 / 0.05)^2) = ceil(618.3)
    assert stats.required_items(0.1) == 155
    n = stats.required_items(0.07)
    assert stats.min_detectable_difference(n) <= 0.07 < stats.min_detectable_difference(n - 1)
    assert stats.required_items(0.0) > 10**9
    assert stats.required_items(0.05, sd=0.14) == 49  # ceil((2.4865 * 0.14 / 0.05)^2) = ceil(48.5)


def test_required_repeats_worked_example() -> None:
    # 100 items, 1 sample, SD of differences 0.3 of which within-item SD 0.25: between-item
    # variance 0.09 - 0.0625 = 0.0275. Margin 0.05 at 95%/80%: target per-item variance
    # 100 * (0.05 / 2.4865)^2 = 0.04044; K = ceil(0.0625 / (0.04044 - 0.0275)) = ceil(4.83) = 5.
    assert stats.required_repeats(0.3, 0.25, 1, 100, 0.05) == 5
    # the between-item variance alone exceeds the target: only more items help
    assert stats.required_repeats(0.3, 0.1, 1, 100, 0.05) is None
    assert stats.required_repeats(0.1, 0.05, 3, 100, 0.05) == 1
