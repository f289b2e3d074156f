"""Paired statistics for comparing two models on the same eval items.

* Paired (and stratified paired) percentile bootstrap over items, with one-sided
  confidence bounds and bootstrap p-values (Efron & Tibshirani 1993, *An
  Introduction to the Bootstrap*, ch. 13; Miller 2024, "Adding Error Bars to
  Evals", arXiv:2411.00640, on paired differences and clustered/stratified evals).
* The exact McNemar test for paired binary outcomes (McNemar 1947,
  Psychometrika 12:153-157): a binomial test on the discordant pairs.
* Small-sample widening of percentile bounds (Hesterberg 2015), Student t quantiles and
  Welch-Satterthwaite degrees of freedom, a prior-pooled SD for tiny categories.
* The power rule: the smallest drop a category can guard, and the items or repeats it needs.

numpy only; scipy is a test dependency used to check these numbers.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

#: Default number of bootstrap resamples (>= 10,000 keeps the Monte Carlo error of a 5% tail
#: quantile around +-0.2 percentage points of probability).
DEFAULT_RESAMPLES = 10_000
#: Bootstrap rows drawn at a time are capped so that rows * items stays below this (memory bound).
_MAX_DRAW_CELLS = 2_000_000

FloatArray = npt.NDArray[np.float64]
#: Per-item scores: a sequence of floats or a 1-D numpy array.
Scores = Sequence[float] | npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class BootstrapResult:
    """A paired bootstrap of ``mean(challenger) - mean(champion)``.

    Attributes:
        delta: the observed difference (score units).
        lower: one-sided ``confidence`` lower bound (the ``1 - confidence`` quantile).
        upper: one-sided ``confidence`` upper bound (the ``confidence`` quantile). Together,
            ``[lower, upper]`` is a two-sided ``2 * confidence - 1`` interval (90% for 0.95).
        champion_ci, challenger_ci: two-sided ``confidence`` percentile intervals of each mean.
        distribution: the ``resamples`` bootstrap differences (not compared or printed).
    """

    delta: float
    lower: float
    upper: float
    confidence: float
    resamples: int
    champion_mean: float = 0.0
    challenger_mean: float = 0.0
    champion_ci: tuple[float, float] = (0.0, 0.0)
    challenger_ci: tuple[float, float] = (0.0, 0.0)
    distribution: FloatArray = field(default_factory=lambda: np.zeros(0), compare=False, repr=False)

    def p_greater(self, threshold: float) -> float:
        """Bootstrap p-value for H0: true delta <= ``threshold`` (H1: delta > threshold).

        ``(1 + #{d* <= threshold}) / (B + 1)``: the percentile-interval inversion (the smallest
        alpha whose one-sided lower bound exceeds ``threshold``) with the +1 correction that keeps
        Monte Carlo p-values valid and never zero (Phipson & Smyth 2010, "Permutation P-values
        Should Never Be Zero", Stat. Appl. Genet. Mol. Biol. 9(1):39).
        """
        d = self.distribution
        return float((1 + np.count_nonzero(d <= threshold + _EPS)) / (d.size + 1))

    def p_less(self, threshold: float) -> float:
        """Bootstrap p-value for H0: true delta >= ``threshold`` (H1: delta < threshold)."""
        d = self.distribution
        return float((1 + np.count_nonzero(d >= threshold - _EPS)) / (d.size + 1))


#: Differences this close to a threshold count as equal (float noise in means of 0/1 scores).
_EPS = 1e-12


@dataclass(frozen=True)
class Stratum:
    """One category's paired scores for :func:`stratified_paired_bootstrap`.

    ``champion[i]`` and ``challenger[i]`` are the two models' scores on the same item.
    """

    name: str
    champion: Scores
    challenger: Scores
    weight: float = 1.0


@dataclass(frozen=True)
class StratifiedBootstrap:
    """The composite and per-stratum results of one stratified paired bootstrap.

    Attributes:
        composite: bootstrap of ``sum_c w_c * delta_c / sum_c w_c``.
        strata: name -> the stratum's own paired bootstrap (the same draws).
    """

    composite: BootstrapResult
    strata: dict[str, BootstrapResult]


def _as_pair(champion: Scores, challenger: Scores) -> tuple[FloatArray, FloatArray]:
    a = np.asarray(champion, dtype=np.float64)
    b = np.asarray(challenger, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired scores need equal 1-D shapes, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError("paired bootstrap needs at least one item")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("paired scores contain NaN or infinity")
    return a, b


def _check(confidence: float, resamples: int) -> None:
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")


#: Resample through per-value counts when the pairs take at most this many distinct values.
_MAX_GROUPS = 64


def _resample_means(
    a: FloatArray, b: FloatArray, resamples: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Bootstrap means of ``a`` and ``b`` under the SAME item draws (paired), shape ``(resamples,)``.

    Eval scores take few distinct values (0/1 answers, 1-5 judge grades, their means over a few
    repeats), so the ``n`` items usually form ``K << n`` groups of identical pairs. Drawing ``n``
    items uniformly with replacement puts ``Multinomial(n, m_k / n)`` of them in group k (``m_k``
    its size), so the resampled mean is ``counts @ values / n``: the same bootstrap distribution
    at O(K) instead of O(n) work per resample. More distinct pairs than :data:`_MAX_GROUPS`
    (continuous scores such as ``loss``) draw item indices instead.
    """
    n = a.size
    pairs, sizes = np.unique(np.stack([a, b], axis=1), axis=0, return_counts=True)
    if pairs.shape[0] <= _MAX_GROUPS:
        counts = rng.multinomial(n, sizes / n, size=resamples).astype(np.float64)
        means = counts @ pairs / n
        return np.ascontiguousarray(means[:, 0]), np.ascontiguousarray(means[:, 1])
    both = np.stack([a, b], axis=1)
    out = np.empty((resamples, 2))
    rows = max(1, _MAX_DRAW_CELLS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int32 if n < 2**31 else np.int64)
        out[start:stop] = both[idx].mean(axis=1)
    return np.ascontiguousarray(out[:, 0]), np.ascontiguousarray(out[:, 1])


def _result(
    delta: float,
    dist: FloatArray,
    confidence: float,
    a_means: FloatArray,
    b_means: FloatArray,
    a_mean: float,
    b_mean: float,
) -> BootstrapResult:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(dist, [alpha, confidence])
    two = [alpha / 2, 1 - alpha / 2]
    ca = np.quantile(a_means, two)
    cb = np.quantile(b_means, two)
    return BootstrapResult(
        delta=float(delta),
        lower=float(lo),
        upper=float(hi),
        confidence=confidence,
        resamples=int(dist.size),
        champion_mean=float(a_mean),
        challenger_mean=float(b_mean),
        champion_ci=(float(ca[0]), float(ca[1])),
        challenger_ci=(float(cb[0]), float(cb[1])),
        distribution=dist,
    )


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per (seed, stratum name): a category's interval does not change when
    # another category is added, removed or resized.
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8"))]))


def paired_bootstrap(
    champion: Scores,
    challenger: Scores,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BootstrapResult:
    """Paired percentile bootstrap of ``mean(challenger) - mean(champion)`` over items.

    Items are resampled with replacement and both models' scores move together, so the
    between-item variance shared by the two models cancels (Miller 2024, arXiv:2411.00640,
    "paired differences"). Bounds are percentile bounds (Efron & Tibshirani 1993, ch. 13).

    Args:
        champion, challenger: per-item scores, same length n >= 1, same item order.
        confidence: one-sided confidence level of ``lower`` and ``upper``, in [0.5, 1).
        resamples: bootstrap resamples B (default 10,000).
        seed: seeds a numpy ``Generator`` (PCG64); the same inputs and seed give the same result.

    Raises:
        ValueError: mismatched or empty inputs, NaN/inf scores, bad confidence or resamples.
    """
    _check(confidence, resamples)
    a, b = _as_pair(champion, challenger)
    am, bm = _resample_means(a, b, resamples, _rng(seed, ""))
    return _result(
        float(b.mean() - a.mean()), bm - am, confidence, am, bm, float(a.mean()), float(b.mean())
    )


def stratified_paired_bootstrap(
    strata: Sequence[Stratum],
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    expand: bool = False,
) -> StratifiedBootstrap:
    """Stratified paired bootstrap of the weighted composite ``sum_c w_c * delta_c / sum_c w_c``.

    Items are resampled within each stratum (category), never across, so each category keeps
    its size and weight in every resample: the composite's sampling distribution is that of a
    stratified mean (Miller 2024, arXiv:2411.00640, on clustered/grouped questions; Davison &
    Hinkley 1997, *Bootstrap Methods and their Application*, ch. 3, several samples resampled
    independently).
    Each stratum's own result comes from the same draws.

    With ``expand``, the percentile bounds are widened for small samples, as Hesterberg's
    *expanded percentile interval* does (Hesterberg 2015, "What Teachers Should Know About the
    Bootstrap", The American Statistician 69(4):371-386, section 5.2): the plain percentile
    interval of a mean is too narrow by ``sqrt((n - 1) / n)`` (the bootstrap variance divides
    by n) and by ``t_{n-1} / z`` (it ignores that the spread is estimated). Each stratum's
    resampled deviations from its observed means are scaled by ``sqrt(n / (n - 1)) *
    t(confidence, n - 1) / z(confidence)``; the composite's by ``sqrt(n_c / (n_c - 1))`` per
    stratum and ``t(confidence, df) / z(confidence)`` overall, with ``df`` the
    Welch-Satterthwaite degrees of freedom of the weighted stratum means (Satterthwaite 1946,
    Biometrics Bulletin 2(6):110-114). The bounds at ``confidence`` then equal the expanded
    interval's for a symmetric bootstrap distribution; p-values keep their duality with those
    bounds. A stratum of one item says nothing about its difference: expanded, its bounds span
    the whole range ``[-1, 1]`` of a difference of [0, 1] scores.

    Args:
        strata: at least one stratum, names unique, weights >= 0 with a positive sum.
        confidence, resamples, seed: as for :func:`paired_bootstrap`.
        expand: widen the bounds for small samples (see above).

    Raises:
        ValueError: no strata, duplicate names, negative weights or a zero weight sum, or
            any stratum's inputs invalid (see :func:`paired_bootstrap`).
    """
    _check(confidence, resamples)
    if not strata:
        raise ValueError("stratified bootstrap needs at least one stratum")
    names = [s.name for s in strata]
    if len(set(names)) != len(names):
        raise ValueError(f"stratum names must be unique, got {names}")
    weights = np.array([s.weight for s in strata], dtype=np.float64)
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and sum to > 0, got {weights.tolist()}")
    total = float(weights.sum())
    z = _z(confidence)
    comp_a = np.zeros(resamples)
    comp_b = np.zeros(resamples)
    obs_a = obs_b = 0.0
    var_terms: list[tuple[float, int]] = []
    per: dict[str, BootstrapResult] = {}
    for s, w in zip(strata, weights, strict=True):
        a, b = _as_pair(s.champion, s.challenger)
        a_mean, b_mean = float(a.mean()), float(b.mean())
        am, bm = _resample_means(a, b, resamples, _rng(seed, s.name))
        n = a.size
        if expand and n >= 2:
            root = math.sqrt(n / (n - 1))
            am = a_mean + root * (am - a_mean)
            bm = b_mean + root * (bm - b_mean)
            var_terms.append(((w / total) ** 2 * float(np.var(b - a, ddof=1)) / n, n))
            f = t_quantile(confidence, n - 1) / z
            sa, sb = a_mean + f * (am - a_mean), b_mean + f * (bm - b_mean)
            per[s.name] = _result(b_mean - a_mean, sb - sa, confidence, sa, sb, a_mean, b_mean)
        elif expand:
            span = np.linspace(0.0, 1.0, resamples)
            per[s.name] = _result(
                b_mean - a_mean, span[::-1] - span, confidence, span, span[::-1], a_mean, b_mean
            )
        else:
            per[s.name] = _result(b_mean - a_mean, bm - am, confidence, am, bm, a_mean, b_mean)
        comp_a += (w / total) * am
        comp_b += (w / total) * bm
        obs_a += (w / total) * a_mean
        obs_b += (w / total) * b_mean
    if expand:
        h = t_quantile(confidence, welch_satterthwaite_df(var_terms)) / z
        comp_a = obs_a + h * (comp_a - obs_a)
        comp_b = obs_b + h * (comp_b - obs_b)
    composite = _result(obs_b - obs_a, comp_b - comp_a, confidence, comp_a, comp_b, obs_a, obs_b)
    return StratifiedBootstrap(composite=composite, strata=per)


# ---------------------------------------------------------------- exact binomial / McNemar


def _log_binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``, summed in log space (exact up to rounding)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    logs = [_log_binom_pmf(j, n, p) for j in range(k, n + 1)]
    top = max(logs)
    if top == -math.inf:
        return 0.0
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    return binom_sf(n - k, n, 1.0 - p)


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """One-sided exact lower confidence bound for a binomial proportion.

    The p solving ``P(X >= successes | p) = 1 - confidence`` (Clopper & Pearson 1934,
    Biometrika 26:404-413), found by bisection (60 halvings, error < 1e-17); 0 when
    ``successes == 0``.
    """
    if successes <= 0:
        return 0.0
    alpha = 1.0 - confidence
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if binom_sf(successes, trials, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on paired binary outcomes.

    Attributes:
        b: items only the challenger got right (champion 0, challenger 1).
        c: items only the champion got right (champion 1, challenger 0).
        n: all items.
        delta: ``(b - c) / n``, the difference in accuracy.
        p_greater: one-sided p for H1: challenger better (``P(X >= b)``, ``X ~ Bin(b + c, 1/2)``).
        p_less: one-sided p for H1: challenger worse (``P(X <= b)``).
        p_two_sided: ``min(1, 2 * min(p_greater, p_less))`` (equal to the exact two-sided
            binomial test at p = 1/2, whose null is symmetric).
        lower_bound: one-sided ``confidence`` lower bound of ``delta`` conditional on the
            observed discordant count: ``((b + c) / n) * (2 * pi_L - 1)`` with ``pi_L`` the
            Clopper-Pearson lower bound of ``b / (b + c)``. It exceeds 0 exactly when
            ``p_greater < 1 - confidence`` (the test/interval duality).
    """

    b: int
    c: int
    n: int
    delta: float
    p_greater: float
    p_less: float
    p_two_sided: float
    lower_bound: float
    confidence: float


def mcnemar_exact(
    champion: Scores, challenger: Scores, *, confidence: float = 0.95, bound: bool = True
) -> McNemarResult:
    """Exact (conditional) McNemar test for paired 0/1 outcomes.

    Under H0 (equal accuracy) each discordant item is equally likely to favour either model,
    so ``b ~ Binomial(b + c, 1/2)`` (McNemar 1947; the exact form is the binomial sign test on
    discordant pairs, recommended for paired eval comparisons by Miller 2024,
    arXiv:2411.00640). The exact conditional test is conservative for few discordant pairs
    (Fagerland, Lydersen & Laake 2013, BMC Med. Res. Methodol. 13:91): it errs toward
    not promoting.

    Args:
        champion, challenger: per-item outcomes, each exactly 0 or 1, same length n >= 1.
        confidence: for ``lower_bound``.
        bound: compute ``lower_bound`` (a bisection); False leaves it NaN.

    Raises:
        ValueError: lengths differ, no items, or a value that is not 0/1.
    """
    a = np.asarray(champion, dtype=np.float64)
    x = np.asarray(challenger, dtype=np.float64)
    if a.shape != x.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"McNemar needs equal non-empty 1-D inputs, got {a.shape} and {x.shape}")
    if not (np.isin(a, (0.0, 1.0)).all() and np.isin(x, (0.0, 1.0)).all()):
        raise ValueError("McNemar needs binary (0/1) outcomes")
    b = int(np.count_nonzero((a == 0) & (x == 1)))
    c = int(np.count_nonzero((a == 1) & (x == 0)))
    n = int(a.size)
    m = b + c
    if m == 0:
        p_greater = p_less = p_two = 1.0
        lower = 0.0
    else:
        p_greater = binom_sf(b, m, 0.5)
        p_less = binom_cdf(b, m, 0.5)
        p_two = min(1.0, 2.0 * min(p_greater, p_less))
        lower = (m / n) * (2.0 * clopper_pearson_lower(b, m, confidence) - 1.0) if bound else math.nan
    return McNemarResult(
        b=b,
        c=c,
        n=n,
        delta=(b - c) / n,
        p_greater=p_greater,
        p_less=p_less,
        p_two_sided=p_two,
        lower_bound=lower,
        confidence=confidence,
    )


# ---------------------------------------------------------------- small samples and power


def _t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 1964, 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        term, acc = 1.0, 0.0
        if df > 1:
            acc = term = math.cos(theta)
            for k in range(3, df - 1, 2):
                term *= c2 * (k - 1) / k
                acc += term
        return min(1.0, 2.0 / math.pi * (theta + math.sin(theta) * acc))
    term = acc = 1.0
    for k in range(2, df - 1, 2):
        term *= c2 * (k - 1) / k
        acc += term
    return min(1.0, math.sin(theta) * acc)


#: Above this many degrees of freedom the Cornish-Fisher expansion is exact to < 1e-6.
_T_EXACT_MAX_DF = 200


@functools.lru_cache(maxsize=4096)
def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom.

    A fractional ``df`` (Welch-Satterthwaite) is rounded down, which widens the bound. Up to
    200 df the exact integer-df distribution (Abramowitz & Stegun 1964, *Handbook of
    Mathematical Functions*, 26.7.3-4) is inverted by bisection; above, the Cornish-Fisher
    expansion in ``1/df`` (A&S 26.7.5); the normal quantile for infinite or NaN ``df``.
    Checked against scipy in the tests.

    Raises:
        ValueError: q outside (0, 1) or df < 1.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    if not math.isfinite(df):
        return _z(q)
    if df < 1.0:
        raise ValueError(f"df must be >= 1, got {df}")
    nu = int(math.floor(df))
    if q < 0.5:
        return -t_quantile(1.0 - q, nu)
    if nu > _T_EXACT_MAX_DF:
        x = _z(q)
        g1 = (x**3 + x) / 4
        g2 = (5 * x**5 + 16 * x**3 + 3 * x) / 96
        g3 = (3 * x**7 + 19 * x**5 + 17 * x**3 - 15 * x) / 384
        return x + g1 / nu + g2 / nu**2 + g3 / nu**3
    target = 2.0 * q - 1.0
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, nu) < target:
        hi *= 2.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, nu) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def welch_satterthwaite_df(terms: Sequence[tuple[float, int]]) -> float:
    """Degrees of freedom of a sum of independent variance estimates.

    ``terms``: ``(v_c, n_c)`` pairs, ``v_c`` the estimated variance of the c-th term (e.g.
    ``w_c^2 * s_c^2 / n_c``) with ``n_c - 1`` degrees of freedom; ``df = (sum v_c)^2 /
    sum(v_c^2 / (n_c - 1))`` (Satterthwaite 1946, Biometrics Bulletin 2(6):110-114).
    Terms with ``n_c < 2`` or ``v_c <= 0`` carry no information and are skipped; infinity when
    nothing remains (no estimated spread to correct for).
    """
    used = [(v, n) for v, n in terms if n >= 2 and v > 0.0]
    if not used:
        return math.inf
    return sum(v for v, _ in used) ** 2 / sum(v * v / (n - 1) for v, n in used)


#: Planning SD of a per-item paired difference when nothing has been measured: 0.5, the largest
#: SD of one [0, 1] score (a fair coin), hence conservative for differences of 0/1 answers that
#: disagree on up to a quarter of items and for every graded kind measured so far (judge 0.14).
PRIOR_SD = 0.5
#: Weight, in degrees of freedom, of :data:`PRIOR_SD` when pooled with an observed SD.
PRIOR_DF = 1.0


def shrunk_sd(sd: float, n: int, *, prior_sd: float = PRIOR_SD, prior_df: float = PRIOR_DF) -> float:
    """An observed SD of ``n`` paired differences pooled with a prior SD worth ``prior_df`` items.

    ``sqrt(((n - 1) * sd^2 + prior_df * prior_sd^2) / (n - 1 + prior_df))``: the scale of the
    scaled-inverse-chi-square posterior of a normal variance (Gelman et al. 2013, *Bayesian Data
    Analysis*, 3rd ed., section 3.3). It is the observed SD for large n, but never 0 for a
    handful of identical differences (ten ties say little about 10,000 future items), and the
    prior alone for one item.

    Raises:
        ValueError: n < 1, or a negative SD.
    """
    if n < 1 or sd < 0 or prior_sd < 0 or prior_df <= 0:
        raise ValueError(f"need n >= 1 and SDs >= 0, got n={n}, sd={sd}, prior_sd={prior_sd}")
    return math.sqrt(((n - 1) * sd * sd + prior_df * prior_sd * prior_sd) / (n - 1 + prior_df))


def paired_sd(champion: Scores, challenger: Scores) -> float:
    """Sample SD (ddof=1) of the per-item differences ``challenger - champion``; 0 for one item.

    With items scored as the mean over repeats, this is the SD of cluster means: the clustered
    standard error of Miller 2024 (arXiv:2411.00640, section 2.2) for equal cluster sizes is this
    SD over ``sqrt(n)``.

    Raises:
        ValueError: as :func:`paired_bootstrap` for bad inputs.
    """
    a, b = _as_pair(champion, challenger)
    return float(np.std(b - a, ddof=1)) if a.size > 1 else 0.0


def _z(q: float) -> float:
    return NormalDist().inv_cdf(q)


def min_detectable_difference(
    n: int, *, confidence: float = 0.95, power: float = 0.8, sd: float = 0.5
) -> float:
    """Smallest true difference a one-sided level-``1 - confidence`` test on n paired items
    detects with probability ``power``: ``(z_conf + z_power) * sd / sqrt(n)``.

    The normal-approximation sample-size formula for a one-sided test of a mean difference
    (Chow, Shao & Wang 2008, *Sample Size Calculations in Clinical Research*, 2nd ed., ch. 3;
    the power analysis of Miller 2024, arXiv:2411.00640, uses the same form). ``sd`` is the
    assumed per-item SD of the paired difference; the default 0.5 is the largest SD of a
    single [0, 1] score (a fair coin), a planning value for paired 0/1 outcomes that
    disagree on about a quarter of items.

    Raises:
        ValueError: n < 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return (_z(confidence) + _z(power)) * sd / math.sqrt(n)


def required_items(
    margin: float, *, confidence: float = 0.95, power: float = 0.8, sd: float = 0.5
) -> int:
    """Items needed for :func:`min_detectable_difference` to reach ``margin``:
    ``ceil(((z_conf + z_power) * sd / margin) ** 2)``; a huge number for margin 0."""
    if margin <= 0:
        return 2**31 - 1
    return math.ceil(((_z(confidence) + _z(power)) * sd / margin) ** 2 - 1e-9)


def required_repeats(
    sd: float,
    within_sd: float,
    repeats: int,
    n: int,
    margin: float,
    *,
    confidence: float = 0.95,
    power: float = 0.8,
) -> int | None:
    """Samples per item that would let ``n`` items guard ``margin``; None when no number can.

    The variance of an item's difference averaged over K samples is ``s_b^2 + s_w^2 / K``
    (between-item plus within-item variance, Miller 2024, arXiv:2411.00640, section 2.3 on
    resampling): ``s_b^2 = sd^2 - within_sd^2 / repeats`` is estimated from tonight's ``sd`` at
    ``repeats`` samples, and K is the smallest count whose total variance is at most
    ``n * (margin / (z_conf + z_power))^2``. More samples cannot remove ``s_b^2``: None when it
    alone is too large (more items are then the only way).

    Args:
        sd: SD of the per-item differences of item means (``repeats`` samples each).
        within_sd: SD of one sample's difference around its item's mean (both models' within-item
            variances added).
        repeats, n: samples per item and items tonight.
        margin: the drop to guard (score units).
    """
    if margin <= 0 or n < 1 or repeats < 1:
        return None
    target = n * (margin / (_z(confidence) + _z(power))) ** 2
    between = max(0.0, sd * sd - within_sd * within_sd / repeats)
    if between >= target:
        return None
    if within_sd <= 0:
        return 1
    return max(1, math.ceil(within_sd * within_sd / (target - between) - 1e-9))
