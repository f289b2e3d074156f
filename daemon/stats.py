"""Paired statistics for comparing two models on the same eval items.

* Paired (and stratified paired) percentile bootstrap over items, with one-sided
  confidence bounds and bootstrap p-values (Efron & Tibshirani 1993, *An
  Introduction to the Bootstrap*, ch. 13; Miller 2024, "Adding Error Bars to
  Evals", arXiv:2411.00640, on paired differences and clustered/stratified evals).
* The exact McNemar test for paired binary outcomes (McNemar 1947,
  Psychometrika 12:153-157): a binomial test on the discordant pairs.
* Holm's step-down adjustment (Holm 1979, Scand. J. Statist. 6:65-70).
* The power rule that decides when a category is too small for its margin.

numpy only; scipy is a test dependency used to check these numbers.
"""

from __future__ import annotations

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


def _resample_means(
    a: FloatArray, b: FloatArray, resamples: int, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Bootstrap means of ``a`` and ``b`` under the SAME item draws (paired), shape ``(resamples,)``."""
    n = a.size
    out_a = np.empty(resamples)
    out_b = np.empty(resamples)
    rows = max(1, _MAX_DRAW_CELLS // n)
    for start in range(0, resamples, rows):
        stop = min(resamples, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out_a[start:stop] = a[idx].mean(axis=1)
        out_b[start:stop] = b[idx].mean(axis=1)
    return out_a, out_b


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
) -> StratifiedBootstrap:
    """Stratified paired bootstrap of the weighted composite ``sum_c w_c * delta_c / sum_c w_c``.

    Items are resampled within each stratum (category), never across, so each category keeps
    its size and weight in every resample: the composite's sampling distribution is that of a
    stratified mean (Miller 2024, arXiv:2411.00640, on clustered/grouped questions; Davison &
    Hinkley 1997, *Bootstrap Methods and their Application*, ch. 3, several samples resampled
    independently).
    Each stratum's own result comes from the same draws.

    Args:
        strata: at least one stratum, names unique, weights >= 0 with a positive sum.
        confidence, resamples, seed: as for :func:`paired_bootstrap`.

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
    comp_a = np.zeros(resamples)
    comp_b = np.zeros(resamples)
    obs_a = obs_b = 0.0
    per: dict[str, BootstrapResult] = {}
    for s, w in zip(strata, weights, strict=True):
        a, b = _as_pair(s.champion, s.challenger)
        am, bm = _resample_means(a, b, resamples, _rng(seed, s.name))
        per[s.name] = _result(
            float(b.mean() - a.mean()),
            bm - am,
            confidence,
            am,
            bm,
            float(a.mean()),
            float(b.mean()),
        )
        comp_a += (w / total) * am
        comp_b += (w / total) * bm
        obs_a += (w / total) * float(a.mean())
        obs_b += (w / total) * float(b.mean())
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
    champion: Scores, challenger: Scores, *, confidence: float = 0.95
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
        lower = (m / n) * (2.0 * clopper_pearson_lower(b, m, confidence) - 1.0)
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


# ---------------------------------------------------------------- multiplicity and power


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    With the m p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j) * p(j))``
    (0-based j); rejecting where ``p_adj < alpha`` controls the family-wise error rate at
    alpha under any dependence (Holm 1979, Scand. J. Statist. 6:65-70).

    Raises:
        ValueError: a p-value outside [0, 1] or NaN.
    """
    ps = [float(p) for p in p_values]
    if any(not 0.0 <= p <= 1.0 for p in ps):
        raise ValueError(f"p-values must be in [0, 1], got {ps}")
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


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
