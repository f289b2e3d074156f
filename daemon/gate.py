"""The promotion gate: a pure decision over two models' per-item scores.

:func:`decide_promotion` touches no file, clock or database. It promotes the
challenger only if every check passes, and records every number and reason:

1. **sanity**: both models were scored on the same categories and item ids
   under the same policy, no score is NaN or outside [0, 1], and the
   challenger has at most ``max_empty_increase`` more empty replies.
   A mismatch or NaN is a hard reject (no statistics are computed).
2. **superiority**: the weighted composite's paired improvement has a
   one-sided ``confidence`` lower bound above ``min_gain`` (stratified paired
   bootstrap over items within categories); with a single binary
   single-sample category, the exact McNemar test is used instead. The
   observed improvement must also be strictly positive: ties never promote.
3. **non-inferiority** per category: H0 ``delta <= -margin`` must be rejected
   at ``1 - confidence`` after Holm's adjustment across the adequately
   powered categories. A category is *underpowered* when its minimal
   detectable difference exceeds its margin (see
   :func:`daemon.stats.min_detectable_difference`); its failure to show
   non-inferiority is informational, but a regression beyond the margin that
   is itself significant (one-sided upper bound of delta below ``-margin``)
   still blocks.
4. **floors**: the challenger's mean reaches each category's ``floor``.
5. **knowledge preservation**: on ``preserve`` categories the observed mean
   drops by at most ``tolerance`` (a point rule applied regardless of power;
   its bootstrap p-value is reported).

Statistics: :mod:`daemon.stats` (Miller 2024, arXiv:2411.00640; McNemar 1947;
Holm 1979).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from daemon import stats
from daemon.config import PromotionConfig

#: Scores this close to a floor/tolerance boundary count as meeting it (float noise).
_TOL = 1e-12
#: Verdicts that block promotion.
BLOCKING_VERDICTS = frozenset({"regressed", "inconclusive", "floor-breach", "preserve-breach"})


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
    """

    name: str
    kind: str
    weight: float
    item_scores: dict[str, float]
    binary: bool
    empty: int
    unparsed: int
    policy: CategoryPolicy = field(default_factory=CategoryPolicy)


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
        max_empty_increase: allowed extra empty replies of the challenger (over all categories).
        power: the power of the design rule for underpowered categories.
        assumed_sd: planning SD of per-item paired differences for that rule.
    """

    min_gain: float = 0.0
    confidence: float = 0.95
    resamples: int = 10_000
    seed: int = 0
    default_margin: float = 0.05
    max_empty_increase: int = 0
    power: float = 0.8
    assumed_sd: float = 0.5

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
        )


@dataclass(frozen=True)
class CompositeResult:
    """The weighted composite's paired comparison (``sum w_c * mean_c / sum w_c``).

    Attributes:
        method: ``stratified-bootstrap`` or ``mcnemar-exact``.
        lower_bound: one-sided ``confidence`` lower bound of ``delta``.
        p_value: p for H0 ``delta <= min_gain`` (bootstrap) or ``delta <= 0`` (McNemar).
    """

    champion: float
    challenger: float
    delta: float
    lower_bound: float
    method: str
    p_value: float | None = None
    min_gain: float = 0.0
    confidence: float = 0.95
    resamples: int = 0


@dataclass(frozen=True)
class CategoryVerdict:
    """The gate's finding on one category (numbers in score units, 0..1).

    Attributes:
        delta: ``challenger_mean - champion_mean``.
        lo, hi: one-sided ``confidence`` lower and upper bounds of delta (together a two-sided
            ``2 * confidence - 1`` interval).
        p_value: non-inferiority p for H0 ``delta <= -margin`` (paired bootstrap).
        p_adjusted: Holm-adjusted ``p_value`` across powered categories; None when underpowered.
        verdict: ``better``, ``non-inferior``, ``underpowered``, ``regressed``, ``inconclusive``
            (not shown non-inferior although delta >= 0), ``floor-breach`` or ``preserve-breach``.
        non_inferior: the non-inferiority result; None when underpowered and not deciding.
        min_detectable, n_required: the power rule's numbers (see module docstring).
        champion_ci, challenger_ci: two-sided ``confidence`` intervals of each model's mean.
        mcnemar_p: two-sided exact McNemar p (binary categories only).
        preserve_p: p for H0 ``delta <= -tolerance`` on ``preserve`` categories.
    """

    name: str
    kind: str
    n_items: int
    weight: float
    champion_mean: float
    challenger_mean: float
    delta: float
    lo: float
    hi: float
    p_value: float
    p_adjusted: float | None
    verdict: str
    underpowered: bool
    margin: float
    non_inferior: bool | None = None
    min_detectable: float = 0.0
    n_required: int = 0
    champion_ci: tuple[float, float] = (0.0, 0.0)
    challenger_ci: tuple[float, float] = (0.0, 0.0)
    mcnemar_p: float | None = None
    floor: float | None = None
    preserve: bool = False
    tolerance: float = 0.0
    preserve_p: float | None = None
    champion_empty: int = 0
    challenger_empty: int = 0
    champion_unparsed: int = 0
    challenger_unparsed: int = 0

    @property
    def blocking(self) -> bool:
        """This category alone prevents promotion."""
        return self.verdict in BLOCKING_VERDICTS


@dataclass(frozen=True)
class Decision:
    """The gate's verdict with every number behind it.

    Attributes:
        promote: every check passed.
        reasons: one line per check, failed checks first (``FAILED <check>: ...`` /
            ``passed <check>: ...``).
        summary: one line for logs and notifications.
        composite: None after a hard sanity reject (mismatched items, NaN).
        checks: check name (sanity, superiority, non_inferiority, floors, preservation) -> passed.
        policy: the :class:`GatePolicy` numbers used.
    """

    promote: bool
    reasons: list[str]
    summary: str
    composite: CompositeResult | None
    categories: list[CategoryVerdict]
    checks: dict[str, bool] = field(default_factory=dict)
    champion_label: str = ""
    challenger_label: str = ""
    policy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists; no NaN is ever stored)."""
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        """Rebuild a decision stored with :meth:`to_dict`.

        Raises:
            KeyError, TypeError: the dict is not a stored decision.
        """
        cats = []
        for c in data["categories"]:
            c = dict(c)
            c["champion_ci"] = tuple(c.get("champion_ci", (0.0, 0.0)))
            c["challenger_ci"] = tuple(c.get("challenger_ci", (0.0, 0.0)))
            cats.append(CategoryVerdict(**c))
        comp = data.get("composite")
        return cls(
            promote=bool(data["promote"]),
            reasons=list(data["reasons"]),
            summary=str(data["summary"]),
            composite=CompositeResult(**comp) if comp is not None else None,
            categories=cats,
            checks=dict(data.get("checks", {})),
            champion_label=str(data.get("champion_label", "")),
            challenger_label=str(data.get("challenger_label", "")),
            policy=dict(data.get("policy", {})),
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


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
    """
    base: dict[str, Any] = {
        "champion_label": champion.label,
        "challenger_label": challenger.label,
        "policy": dataclasses.asdict(policy),
    }
    problems = _sanity_problems(champion, challenger)
    if problems:
        reasons = [f"FAILED sanity: {p}" for p in problems]
        return Decision(
            promote=False,
            reasons=reasons,
            summary=f"REJECT: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
            composite=None,
            categories=[],
            checks={"sanity": False},
            **base,
        )

    alpha = 1.0 - policy.confidence
    names = sorted(challenger.categories)
    strata = []
    for name in names:
        ch, cl = champion.categories[name], challenger.categories[name]
        ids = sorted(ch.item_scores)
        strata.append(
            stats.Stratum(
                name=name,
                champion=[ch.item_scores[i] for i in ids],
                challenger=[cl.item_scores[i] for i in ids],
                weight=cl.weight,
            )
        )
    boot = stats.stratified_paired_bootstrap(
        strata, confidence=policy.confidence, resamples=policy.resamples, seed=policy.seed
    )

    # -- superiority
    only = challenger.categories[names[0]] if len(names) == 1 else None
    if only is not None and only.binary and champion.categories[only.name].binary:
        s = strata[0]
        mc = stats.mcnemar_exact(s.champion, s.challenger, confidence=policy.confidence)
        composite = CompositeResult(
            champion=boot.composite.champion_mean,
            challenger=boot.composite.challenger_mean,
            delta=mc.delta,
            lower_bound=mc.lower_bound,
            method="mcnemar-exact",
            p_value=mc.p_greater,
            min_gain=policy.min_gain,
            confidence=policy.confidence,
            resamples=0,
        )
        superior = mc.delta > 0 and mc.p_greater < alpha and mc.lower_bound > policy.min_gain
        how = f"exact McNemar, {mc.b} item(s) won vs {mc.c} lost, one-sided p={mc.p_greater:.4g}"
    else:
        cb = boot.composite
        composite = CompositeResult(
            champion=cb.champion_mean,
            challenger=cb.challenger_mean,
            delta=cb.delta,
            lower_bound=cb.lower,
            method="stratified-bootstrap",
            p_value=cb.p_greater(policy.min_gain),
            min_gain=policy.min_gain,
            confidence=policy.confidence,
            resamples=cb.resamples,
        )
        superior = cb.delta > 0 and cb.lower > policy.min_gain
        how = f"stratified paired bootstrap, {cb.resamples} resamples, p={composite.p_value:.4g}"
    conf_pct = f"{policy.confidence * 100:g}%"
    sup_line = (
        f"superiority: composite {composite.champion:.4f} -> {composite.challenger:.4f} "
        f"(delta {composite.delta:+.4f}), one-sided {conf_pct} lower bound {composite.lower_bound:+.4f} "
        f"{'>' if composite.lower_bound > policy.min_gain else '<='} min_gain {policy.min_gain:+.4f} ({how})"
    )
    if composite.delta <= 0:
        sup_line += "; no observed improvement (ties never promote)"

    # -- per category
    pre: dict[str, dict[str, Any]] = {}
    for s in strata:
        ch, cl = champion.categories[s.name], challenger.categories[s.name]
        pol = cl.policy
        margin = policy.default_margin if pol.margin is None else pol.margin
        b = boot.strata[s.name]
        n = len(s.champion)
        mdd = stats.min_detectable_difference(
            n, confidence=policy.confidence, power=policy.power, sd=policy.assumed_sd
        )
        binary = ch.binary and cl.binary
        pre[s.name] = {
            "b": b,
            "n": n,
            "margin": margin,
            "p": b.p_greater(-margin),
            "underpowered": mdd > margin,
            "mdd": mdd,
            "n_required": stats.required_items(
                margin, confidence=policy.confidence, power=policy.power, sd=policy.assumed_sd
            ),
            "mcnemar_p": stats.mcnemar_exact(s.champion, s.challenger).p_two_sided
            if binary
            else None,
            "preserve_p": b.p_greater(-pol.tolerance) if pol.preserve else None,
        }
    powered = [nm for nm in names if not pre[nm]["underpowered"]]
    adjusted = dict(zip(powered, stats.holm_adjust([pre[nm]["p"] for nm in powered]), strict=True))

    verdicts: list[CategoryVerdict] = []
    for name in names:
        ch, cl, d = champion.categories[name], challenger.categories[name], pre[name]
        b, pol = d["b"], cl.policy
        p_adj = adjusted.get(name)
        proven_regression = b.upper < -d["margin"]
        if d["underpowered"]:
            non_inferior: bool | None = False if proven_regression else None
        else:
            non_inferior = p_adj is not None and p_adj < alpha
        floor_breach = pol.floor is not None and b.challenger_mean < pol.floor - _TOL
        preserve_breach = (
            pol.preserve and (b.champion_mean - b.challenger_mean) > pol.tolerance + _TOL
        )
        if floor_breach:
            verdict = "floor-breach"
        elif preserve_breach:
            verdict = "preserve-breach"
        elif non_inferior is False:
            verdict = "regressed" if b.delta < 0 else "inconclusive"
        elif non_inferior is None and not d["p"] < alpha:
            verdict = "underpowered"
        elif b.lower > 0:
            verdict = "better"
        else:
            verdict = "non-inferior"
        verdicts.append(
            CategoryVerdict(
                name=name,
                kind=cl.kind,
                n_items=d["n"],
                weight=cl.weight,
                champion_mean=b.champion_mean,
                challenger_mean=b.challenger_mean,
                delta=b.delta,
                lo=b.lower,
                hi=b.upper,
                p_value=d["p"],
                p_adjusted=p_adj,
                verdict=verdict,
                underpowered=d["underpowered"],
                margin=d["margin"],
                non_inferior=non_inferior,
                min_detectable=d["mdd"],
                n_required=d["n_required"],
                champion_ci=b.champion_ci,
                challenger_ci=b.challenger_ci,
                mcnemar_p=d["mcnemar_p"],
                floor=pol.floor,
                preserve=pol.preserve,
                tolerance=pol.tolerance,
                preserve_p=d["preserve_p"],
                champion_empty=ch.empty,
                challenger_empty=cl.empty,
                champion_unparsed=ch.unparsed,
                challenger_unparsed=cl.unparsed,
            )
        )

    # -- checks
    lines: list[tuple[bool, str]] = []
    champ_empty = sum(c.empty for c in champion.categories.values())
    chall_empty = sum(c.empty for c in challenger.categories.values())
    empty_ok = chall_empty - champ_empty <= policy.max_empty_increase
    lines.append(
        (
            empty_ok,
            f"sanity: same {len(names)} categories and item ids, scores finite in [0, 1]; "
            f"empty replies {champ_empty} -> {chall_empty} (allowed increase {policy.max_empty_increase})",
        )
    )
    lines.append((superior, sup_line))

    ni_fail = [v for v in verdicts if v.non_inferior is False]
    under = [v for v in verdicts if v.underpowered]
    ni_text = "; ".join(
        f"{v.name} delta {v.delta:+.4f}, upper bound of regression {-v.lo:.4f} vs margin {v.margin:.4f}, "
        f"p={v.p_value:.4g}"
        + (f", Holm p={v.p_adjusted:.4g}" if v.p_adjusted is not None else ", proven regression")
        for v in ni_fail
    )
    ni_line = (
        f"non_inferiority: {len(ni_fail)} categor{'y' if len(ni_fail) == 1 else 'ies'} not non-inferior ({ni_text})"
        if ni_fail
        else f"non_inferiority: {len(powered)} powered categor{'y' if len(powered) == 1 else 'ies'} "
        f"non-inferior at {conf_pct} (Holm)"
    )
    if under:
        ni_line += "; underpowered (informational): " + ", ".join(
            f"{v.name} (n={v.n_items}, detectable {v.min_detectable:.3f} > margin {v.margin:.3f}, "
            f"needs {v.n_required} items)"
            for v in under
        )
    lines.append((not ni_fail, ni_line))

    floors = [v for v in verdicts if v.floor is not None]
    floor_fail = [v for v in floors if v.challenger_mean < (v.floor or 0.0) - _TOL]
    lines.append(
        (
            not floor_fail,
            "floors: "
            + (
                "; ".join(
                    f"{v.name} challenger mean {v.challenger_mean:.4f} {'<' if v in floor_fail else '>='} floor {v.floor:.4f}"
                    for v in floors
                )
                or "none set"
            ),
        )
    )

    keep = [v for v in verdicts if v.preserve]
    keep_fail = [v for v in keep if v.verdict == "preserve-breach"]
    lines.append(
        (
            not keep_fail,
            "preservation: "
            + (
                "; ".join(
                    f"{v.name} drop {v.champion_mean - v.challenger_mean:+.4f} "
                    f"{'>' if v in keep_fail else '<='} tolerance {v.tolerance:.4f} (p={v.preserve_p:.4g})"
                    for v in keep
                )
                or "no preserve categories"
            ),
        )
    )

    check_names = ["sanity", "superiority", "non_inferiority", "floors", "preservation"]
    checks = {nm: ok for nm, (ok, _) in zip(check_names, lines, strict=True)}
    promote = all(checks.values())
    reasons = [
        ("passed " if ok else "FAILED ") + ln for ok, ln in sorted(lines, key=lambda t: t[0])
    ]
    failed = [nm for nm in check_names if not checks[nm]]
    if promote:
        summary = (
            f"PROMOTE: {challenger.label} beats {champion.label} by {composite.delta:+.4f} "
            f"({conf_pct} lower bound {composite.lower_bound:+.4f}); all checks passed"
        )
    else:
        summary = (
            f"REJECT: {challenger.label} vs {champion.label}: failed {', '.join(failed)} "
            f"(composite delta {composite.delta:+.4f}, lower bound {composite.lower_bound:+.4f})"
        )
    return Decision(
        promote=promote,
        reasons=reasons,
        summary=summary,
        composite=composite,
        categories=verdicts,
        checks=checks,
        **base,
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
        if (ch.kind, ch.weight, ch.binary, ch.policy) != (cl.kind, cl.weight, cl.binary, cl.policy):
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
