"""The promotion gate: a pure decision over two models' per-item scores.

:func:`decide_promotion` touches no file, clock or database. It promotes the
challenger only if every check passes, and records every number in a
:class:`~daemon.verdicts.Decision` (the record types live in :mod:`daemon.verdicts`
and are re-exported here); the sentences come from :mod:`daemon.gate_reasons` and
the Markdown from :mod:`daemon.report.decision`. All tests run at ``alpha = 1 - confidence``.

1. **sanity**: both models were scored on the same categories and item ids
   under the same policy, and no score is NaN or outside [0, 1]. A mismatch is
   a hard reject (no statistics are computed).
2. **empty replies**: the challenger leaves more items empty than the champion
   by more than ``max_empty_increase`` AND the increase is significant (exact
   McNemar on the per-item empty/non-empty indicator, pooled over categories):
   one extra empty reply is noise, a real increase blocks.
3. **superiority**: the weighted composite over the categories of at least
   ``min_items`` items has a one-sided lower bound above ``min_gain``
   (stratified paired bootstrap with small-sample widening, see
   :func:`daemon.stats.stratified_paired_bootstrap`); with a single binary
   single-sample category, the exact McNemar test. Smaller categories cannot
   carry a promotion: they are guarded (4.) but not counted. The observed
   improvement must be strictly positive: ties never promote.
4. **non-inferiority** per category with the category's own paired spread: H0
   ``delta <= -guard`` must be rejected. ``guard`` is the category's margin.
   A category that does not show its margin although it cannot detect a drop of
   that size (the drop it detects with probability ``power``,
   :func:`daemon.stats.min_detectable_difference` at the observed SD of its
   item differences, pooled with a prior for tiny categories by
   :func:`daemon.stats.shrunk_sd`) is treated by the ``unguarded`` policy,
   never silently: ``widen`` (default) tests the drop it can detect instead and
   the decision names it; ``block`` rejects.
   Items scored as a mean over repeats are clusters, so their SD gives the
   clustered standard error (Miller 2024, arXiv:2411.00640, section 2.2).
   Every category must pass, so this is an intersection-union test: promoting a
   challenger with ANY category truly below its guard has probability at most
   alpha without a multiplicity adjustment (Berger 1982, Technometrics
   24(4):295-300; Berger & Hsu 1996, Statistical Science 11(4):283-319). Holm's
   adjustment would only lower the power of an all-must-pass rule.
5. **floors**: the challenger's mean reaches each category's ``floor``.
6. **knowledge preservation**: a ``preserve`` category passes when its drop is
   shown to be below ``tolerance`` (H0 ``delta <= -tolerance`` rejected), the
   tolerance widened like a margin when the category cannot guard it. Error
   rates: a true drop of the guarded size or more passes with probability at
   most alpha; no change passes with probability at least ``power``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from daemon import gate_reasons, stats
from daemon.config import PromotionConfig
from daemon.verdicts import (
    BLOCKING_VERDICTS,
    CategoryVerdict,
    CompositeResult,
    Decision,
    EmptyReplies,
    Verdict,
)

__all__ = [
    "BLOCKING_VERDICTS",
    "UNGUARDED_POLICIES",
    "CategoryPolicy",
    "CategoryScores",
    "CategoryVerdict",
    "CompositeResult",
    "Decision",
    "EmptyReplies",
    "GatePolicy",
    "ModelScores",
    "Verdict",
    "decide_promotion",
]

#: Scores this close to a floor boundary count as meeting it (float noise).
_TOL = 1e-12


#: What the gate does with a category whose items cannot guard its margin.
UNGUARDED_POLICIES = ("widen", "block")


@dataclass(frozen=True)
class CategoryPolicy:
    """What one category demands of the challenger (from the suite file).

    Attributes:
        margin: non-inferiority margin in score units (0..1); None = ``GatePolicy.default_margin``.
        floor: absolute minimum mean score for the challenger (0..1); None = no floor.
        preserve: a knowledge-preservation category: its mean may not drop by more than ``tolerance``.
        tolerance: allowed drop of the mean for ``preserve`` categories (score units).
    """

    margin: float | None = None
    floor: float | None = None
    preserve: bool = False
    tolerance: float = 0.0


@dataclass(frozen=True)
class CategoryScores:
    """One model's scores on one category.

    Attributes:
        item_scores: item id -> score in [0, 1] (the mean over repeats).
        binary: every score is a single 0/1 sample (enables the exact McNemar test).
        empty: number of empty (whitespace-only) replies, counted over repeats.
        unparsed: number of non-empty replies that could not be parsed/extracted.
        empty_items: ids of the items with at least one empty reply (the McNemar pairs).
        repeats: samples per item.
        within_var: mean over items of the sample variance (ddof=1) of one item's scores over
            its repeats; 0 with one sample.
    """

    name: str
    kind: str
    weight: float
    item_scores: dict[str, float]
    binary: bool
    empty: int
    unparsed: int
    policy: CategoryPolicy = field(default_factory=CategoryPolicy)
    empty_items: frozenset[str] = frozenset()
    repeats: int = 1
    within_var: float = 0.0


@dataclass(frozen=True)
class ModelScores:
    """All category scores of one model (``label``: e.g. ``champion``, ``base``, a run id)."""

    label: str
    categories: dict[str, CategoryScores]


@dataclass(frozen=True)
class GatePolicy:
    """The gate's numbers (see :class:`daemon.config.PromotionConfig`).

    Attributes:
        min_gain: the composite's one-sided lower bound must exceed this (score units).
        confidence: one-sided confidence of every bound; tests run at ``alpha = 1 - confidence``.
        resamples: bootstrap resamples (10,000 by default; tests may use fewer).
        seed: bootstrap seed.
        default_margin: non-inferiority margin for categories that set none.
        max_empty_increase: extra items with empty replies always allowed to the challenger.
        power: probability that an unchanged category passes a guard of its detectable size.
            0.65: at 100 yes/no items (paired SD about 0.5) no guard both passes an unchanged
            category 80% of the time and rejects a 10-point drop 90% of the time; 0.65 keeps a
            real 10-point regression near 8% promotions there, 0.7 near 10%
            (``benchmarks/gate_calibration.py``).
        min_items: categories with fewer items are guarded but do not count toward the composite.
        unguarded: ``widen`` or ``block`` (see the module docstring, rule 4).
    """

    min_gain: float = 0.0
    confidence: float = 0.95
    resamples: int = 10_000
    seed: int = 0
    default_margin: float = 0.05
    max_empty_increase: int = 0
    power: float = 0.65
    min_items: int = 10
    unguarded: str = "widen"

    @classmethod
    def from_config(cls, cfg: PromotionConfig) -> GatePolicy:
        """The gate policy of a config's ``promotion`` section."""
        return cls(
            min_gain=cfg.min_gain,
            confidence=cfg.confidence,
            resamples=cfg.bootstrap_resamples,
            seed=cfg.seed,
            default_margin=cfg.default_margin,
            max_empty_increase=cfg.max_empty_increase,
            power=cfg.guard_power,
            min_items=cfg.min_items,
            unguarded=cfg.unguarded,
        )


# ---------------------------------------------------------------- the decision


def decide_promotion(
    champion: ModelScores, challenger: ModelScores, policy: GatePolicy
) -> Decision:
    """Decide whether ``challenger`` replaces ``champion`` (see the module docstring for the rules).

    Args:
        champion: the served model's scores (the base model on the first night).
        challenger: tonight's adapter's scores on the same suite.
        policy: the gate's numbers.

    Returns:
        A :class:`Decision`; ``promote`` is True only if every check passed.

    Raises:
        ValueError: ``policy.unguarded`` is not one of :data:`UNGUARDED_POLICIES`.
    """
    if policy.unguarded not in UNGUARDED_POLICIES:
        raise ValueError(f"unguarded policy must be one of {UNGUARDED_POLICIES}, got {policy.unguarded!r}")
    base: dict[str, Any] = {
        "champion_label": champion.label,
        "challenger_label": challenger.label,
        "policy": dataclasses.asdict(policy),
    }
    problems = _sanity_problems(champion, challenger)
    if problems:
        return Decision(
            promote=False,
            reasons=[f"FAILED sanity: {p}" for p in problems],
            summary=gate_reasons.sanity_summary(problems),
            composite=None,
            categories=[],
            checks={"sanity": False},
            **base,
        )

    names = sorted(challenger.categories)
    ids = {nm: sorted(champion.categories[nm].item_scores) for nm in names}
    counted = [nm for nm in names if len(ids[nm]) >= policy.min_items]
    strata = [
        stats.Stratum(
            name=nm,
            champion=[champion.categories[nm].item_scores[i] for i in ids[nm]],
            challenger=[challenger.categories[nm].item_scores[i] for i in ids[nm]],
            # categories below min_items are resampled for their own bounds but weigh nothing
            weight=challenger.categories[nm].weight if (nm in counted or not counted) else 0.0,
        )
        for nm in names
    ]
    if sum(s.weight for s in strata) <= 0:  # every counted category has weight 0
        strata = [
            dataclasses.replace(s, weight=1.0 if (s.name in counted or not counted) else 0.0)
            for s in strata
        ]
    boot = stats.stratified_paired_bootstrap(
        strata, confidence=policy.confidence, resamples=policy.resamples, seed=policy.seed, expand=True
    )
    composite, superior = _superiority(champion, challenger, strata, boot, counted, policy)
    verdicts = [
        _category_verdict(champion.categories[s.name], challenger.categories[s.name], s, boot, policy)
        for s in strata
    ]
    verdicts = [dataclasses.replace(v, counted=v.name in counted) for v in verdicts]
    empty = _empty_replies(champion, challenger, names, policy)
    checks = {
        "sanity": True,
        "empty_replies": not empty.blocked,
        "superiority": superior,
        "non_inferiority": all(v.non_inferior for v in verdicts)
        and not any(v.verdict is Verdict.UNGUARDED for v in verdicts),
        "floors": not any(v.verdict is Verdict.FLOOR_BREACH for v in verdicts),
        "preservation": not any(
            v.preserve and (v.preserve_p is None or v.preserve_p >= 1 - policy.confidence)
            for v in verdicts
        ),
    }
    promote = all(checks.values())
    return Decision(
        promote=promote,
        reasons=gate_reasons.reasons(checks, composite, verdicts, empty, policy),
        summary=gate_reasons.summary(promote, checks, composite, champion.label, challenger.label, policy),
        composite=composite,
        categories=verdicts,
        checks=checks,
        headline=gate_reasons.headline(verdicts, composite, policy),
        empty=empty,
        **base,
    )


def _superiority(
    champion: ModelScores,
    challenger: ModelScores,
    strata: list[stats.Stratum],
    boot: stats.StratifiedBootstrap,
    counted: list[str],
    policy: GatePolicy,
) -> tuple[CompositeResult, bool]:
    """The composite's result and whether it clears ``min_gain`` (rule 3)."""
    alpha = 1.0 - policy.confidence
    only = strata[0] if len(strata) == 1 and counted else None
    if (
        only is not None
        and champion.categories[only.name].binary
        and challenger.categories[only.name].binary
    ):
        mc = stats.mcnemar_exact(only.champion, only.challenger, confidence=policy.confidence)
        comp = CompositeResult(
            champion=boot.composite.champion_mean,
            challenger=boot.composite.challenger_mean,
            delta=mc.delta,
            lower_bound=mc.lower_bound,
            method="mcnemar-exact",
            p_value=mc.p_greater,
            min_gain=policy.min_gain,
            confidence=policy.confidence,
            resamples=0,
            counted=list(counted),
        )
        return comp, mc.delta > 0 and mc.p_greater < alpha and mc.lower_bound > policy.min_gain
    cb = boot.composite
    comp = CompositeResult(
        champion=cb.champion_mean,
        challenger=cb.challenger_mean,
        delta=cb.delta,
        lower_bound=cb.lower,
        method="stratified-bootstrap",
        p_value=cb.p_greater(policy.min_gain),
        min_gain=policy.min_gain,
        confidence=policy.confidence,
        resamples=cb.resamples,
        counted=list(counted),
    )
    return comp, bool(counted) and cb.delta > 0 and cb.lower > policy.min_gain


def _category_verdict(
    ch: CategoryScores,
    cl: CategoryScores,
    s: stats.Stratum,
    boot: stats.StratifiedBootstrap,
    policy: GatePolicy,
) -> CategoryVerdict:
    """One category's guard, preservation test and floor (rules 4-6)."""
    alpha = 1.0 - policy.confidence
    b = boot.strata[s.name]
    pol = cl.policy
    n = len(s.champion)
    margin = policy.default_margin if pol.margin is None else pol.margin
    sd = stats.paired_sd(s.champion, s.challenger)
    sd_guard = stats.shrunk_sd(sd, n)
    detectable = stats.min_detectable_difference(
        n, confidence=policy.confidence, power=policy.power, sd=sd_guard
    )
    widen = policy.unguarded == "widen"
    guard, p, widened = _guard(b, margin, detectable, widen, alpha)
    non_inferior = p < alpha
    keep_guard, keep_p_value, _ = _guard(b, pol.tolerance, detectable, widen, alpha)
    keep_p = keep_p_value if pol.preserve else None
    within_sd = math.sqrt(max(0.0, ch.within_var + cl.within_var))
    limit = min(margin, pol.tolerance) if pol.preserve else margin  # what the operator asked
    if pol.floor is not None and b.challenger_mean < pol.floor - _TOL:
        verdict = Verdict.FLOOR_BREACH
    elif keep_p is not None and not keep_p < alpha:
        verdict = Verdict.PRESERVE_BREACH
    elif not widen and not non_inferior and detectable > margin + _TOL:
        verdict = Verdict.UNGUARDED
    elif not non_inferior:
        verdict = Verdict.REGRESSED if b.delta < 0 else Verdict.INCONCLUSIVE
    elif b.lower > 0:
        verdict = Verdict.BETTER
    else:
        verdict = Verdict.NON_INFERIOR
    return CategoryVerdict(
        name=s.name,
        kind=cl.kind,
        n_items=n,
        weight=cl.weight,
        champion_mean=b.champion_mean,
        challenger_mean=b.challenger_mean,
        delta=b.delta,
        lo=b.lower,
        hi=b.upper,
        p_value=p,
        verdict=verdict,
        margin=margin,
        guard=guard,
        widened=widened,
        non_inferior=non_inferior,
        sd=sd,
        detectable=detectable,
        n_required=stats.required_items(
            limit, confidence=policy.confidence, power=policy.power, sd=sd_guard
        ),
        repeats=cl.repeats,
        within_sd=within_sd,
        repeats_required=stats.required_repeats(
            sd_guard, within_sd, cl.repeats, n, limit, confidence=policy.confidence, power=policy.power
        )
        if cl.repeats > 1
        else None,
        champion_ci=_clip01(b.champion_ci),
        challenger_ci=_clip01(b.challenger_ci),
        mcnemar_p=stats.mcnemar_exact(s.champion, s.challenger, bound=False).p_two_sided
        if ch.binary and cl.binary
        else None,
        floor=pol.floor,
        preserve=pol.preserve,
        tolerance=pol.tolerance,
        preserve_guard=keep_guard if pol.preserve else 0.0,
        preserve_p=keep_p,
        champion_empty=ch.empty,
        challenger_empty=cl.empty,
        champion_unparsed=ch.unparsed,
        challenger_unparsed=cl.unparsed,
    )


def _clip01(ci: tuple[float, float]) -> tuple[float, float]:
    """A mean of [0, 1] scores lies in [0, 1]; small-sample widening may overshoot."""
    return (min(1.0, max(0.0, ci[0])), min(1.0, max(0.0, ci[1])))


def _guard(
    b: stats.BootstrapResult, limit: float, detectable: float, widen: bool, alpha: float
) -> tuple[float, float, bool]:
    """``(guard, p, widened)`` for H0 ``delta <= -guard``.

    The limit itself when the category shows it (``p < alpha``); otherwise, under ``widen``
    and when the category cannot detect a drop of ``limit``, the drop it can detect. The
    decision equals testing ``max(limit, detectable)``; the guard says which drop was shown.
    """
    p = b.p_greater(-limit)
    if p < alpha or not widen or detectable <= limit + _TOL:
        return limit, p, False
    return detectable, b.p_greater(-detectable), True


def _empty_replies(
    champion: ModelScores, challenger: ModelScores, names: list[str], policy: GatePolicy
) -> EmptyReplies:
    """Rule 2: exact McNemar on the per-item empty indicator, pooled over categories.

    Scores built without ``empty_items`` (counts only) are treated as if no item were empty for
    both models, which makes every empty reply discordant (the test then has more pairs).
    """
    only_cl = only_ch = n_ch = n_cl = 0
    for nm in names:
        ch, cl = champion.categories[nm], challenger.categories[nm]
        e_ch = ch.empty_items if ch.empty_items or not ch.empty else None
        e_cl = cl.empty_items if cl.empty_items or not cl.empty else None
        if e_ch is None or e_cl is None:
            a, b = min(ch.empty, len(ch.item_scores)), min(cl.empty, len(cl.item_scores))
            only_ch, only_cl, n_ch, n_cl = only_ch + a, only_cl + b, n_ch + a, n_cl + b
        else:
            only_ch += len(e_ch - e_cl)
            only_cl += len(e_cl - e_ch)
            n_ch, n_cl = n_ch + len(e_ch), n_cl + len(e_cl)
    m = only_ch + only_cl
    p = stats.binom_sf(only_cl, m, 0.5) if m else 1.0
    blocked = (n_cl - n_ch) > policy.max_empty_increase and p < 1.0 - policy.confidence
    return EmptyReplies(
        champion=n_ch,
        challenger=n_cl,
        only_challenger=only_cl,
        only_champion=only_ch,
        p_value=p,
        allowed=policy.max_empty_increase,
        blocked=blocked,
    )


def _sanity_problems(champion: ModelScores, challenger: ModelScores) -> list[str]:
    """Hard problems that make a comparison meaningless (each a full sentence)."""
    problems: list[str] = []
    a, b = set(champion.categories), set(challenger.categories)
    if not b:
        problems.append(f"{challenger.label} has no categories scored; nothing to compare")
    if a != b:
        only_a, only_b = sorted(a - b), sorted(b - a)
        problems.append(
            "category sets differ "
            + (f"(only {champion.label}: {', '.join(only_a)}) " if only_a else "")
            + (f"(only {challenger.label}: {', '.join(only_b)}) " if only_b else "")
            + "; both models must be scored on the same suite"
        )
    for name in sorted(a & b):
        ch, cl = champion.categories[name], challenger.categories[name]
        ia, ib = set(ch.item_scores), set(cl.item_scores)
        if ia != ib:
            miss_a, miss_b = sorted(ib - ia), sorted(ia - ib)
            problems.append(
                f"category {name}: item sets differ ({champion.label} {len(ia)} items, "
                f"{challenger.label} {len(ib)}; missing in {champion.label}: {_few(miss_a)}; "
                f"missing in {challenger.label}: {_few(miss_b)}); re-score both on the same suite"
            )
        if not ia and not ib:
            problems.append(f"category {name}: no items scored")
        if (ch.kind, ch.weight, ch.binary, ch.repeats, ch.policy) != (
            cl.kind,
            cl.weight,
            cl.binary,
            cl.repeats,
            cl.policy,
        ):
            problems.append(
                f"category {name}: kind/weight/sampling/policy differ between {champion.label} and "
                f"{challenger.label} (the suite changed?); re-score both on the same suite"
            )
        for label, cs in ((champion.label, ch), (challenger.label, cl)):
            bad = sorted(
                i
                for i, v in cs.item_scores.items()
                if not isinstance(v, int | float) or not math.isfinite(v) or not 0.0 <= v <= 1.0
            )
            if bad:
                problems.append(
                    f"category {name}: {label} has {len(bad)} score(s) that are NaN, infinite or "
                    f"outside [0, 1] (items {_few(bad)}); the evaluation is broken, check its log"
                )
    return problems


def _few(ids: list[str], limit: int = 5) -> str:
    if not ids:
        return "none"
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
