"""What each eval-suite category can guard, known before the night (``nightshift suite check``).

The gate (:mod:`daemon.gate`) tests every category against its margin (a ``preserve``
category against its tolerance, when smaller) with the category's own paired spread.
A category whose items cannot guard that limit is tested against the drop it can
detect instead. :func:`plan_guards` computes, per category, that smallest drop the
gate can catch, from the last decided night's observed paired SD when the suite had
the category then, else from the conservative prior :data:`daemon.stats.PRIOR_SD`,
and how many items (or samples per item) would guard the limit.
:func:`last_decision` reads that night from the registry. Both the CLI command and
the preflight check call :func:`check_suite_guards`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from daemon import stats
from daemon.config import Config
from daemon.gate import Decision, GatePolicy
from daemon.registry.engine import REGISTRY_FILENAME
from daemon.suite import Suite, load_suite

#: Runs looked back for a stored decision.
_LOOKBACK_RUNS = 50


@dataclass(frozen=True)
class GuardPlan:
    """One category's guard before the night (score units, 0..1).

    Attributes:
        limit, limit_name: the drop the operator asked to guard: the ``margin``, or a smaller
            ``preserve`` ``tolerance``.
        sd: the per-item paired SD assumed; ``sd_source`` says where it came from.
        guard: the smallest drop the gate can catch: ``max(limit, detectable)``.
        detectable: the drop caught with probability ``power`` at ``confidence``
            (:func:`daemon.stats.min_detectable_difference`).
        items_needed: items that would guard ``limit`` at this SD.
        repeats_needed: samples per item that would guard it with today's items (None:
            unknown without a measured within-item spread, or no number of repeats can).
        counted: at least ``min_items`` items, so the category can count toward a promotion.
    """

    name: str
    kind: str
    items: int
    repeats: int
    preserve: bool
    limit_name: str
    limit: float
    sd: float
    sd_source: str
    guard: float
    detectable: float
    items_needed: int
    repeats_needed: int | None
    counted: bool

    @property
    def can_guard(self) -> bool:
        """The category's items can guard its limit."""
        return self.detectable <= self.limit + 1e-12


def plan_guards(suite: Suite, policy: GatePolicy, last: Decision | None = None) -> list[GuardPlan]:
    """Each category's guard, in suite order.

    Args:
        suite: the loaded eval suite.
        policy: the gate's numbers (confidence, power, default margin, min_items).
        last: the last decided night, whose per-category paired SD (and within-item SD for
            repeated categories) replaces the prior; None: the prior for every category.
    """
    seen = {v.name: v for v in last.categories} if last is not None else {}
    out = []
    for cat in suite.categories:
        n = len(cat.items)
        margin = policy.default_margin if cat.margin is None else cat.margin
        limit = min(margin, cat.tolerance) if cat.preserve else margin
        repeats = cat.repeats if cat.generates else 1
        prev = seen.get(cat.name)
        if prev is not None and prev.n_items > 1 and prev.repeats == repeats:
            sd = stats.shrunk_sd(prev.sd, prev.n_items)
            source, within = "last night", prev.within_sd
        else:
            sd, source, within = stats.PRIOR_SD, "prior", 0.0
        detectable = stats.min_detectable_difference(
            n, confidence=policy.confidence, power=policy.power, sd=sd
        )
        out.append(
            GuardPlan(
                name=cat.name,
                kind=cat.kind,
                items=n,
                repeats=repeats,
                preserve=cat.preserve,
                limit_name="tolerance" if cat.preserve and cat.tolerance < margin else "margin",
                limit=limit,
                sd=sd,
                sd_source=source,
                guard=max(limit, detectable),
                detectable=detectable,
                items_needed=stats.required_items(
                    limit, confidence=policy.confidence, power=policy.power, sd=sd
                ),
                repeats_needed=stats.required_repeats(
                    sd, within, repeats, n, limit, confidence=policy.confidence, power=policy.power
                )
                if within > 0
                else None,
                counted=n >= policy.min_items,
            )
        )
    return out


def last_decision(cfg: Config) -> tuple[int, Decision] | None:
    """The newest run with a stored decision (run id, decision), or None.

    Reads the registry only if it exists (a check never creates one).
    """
    if not (cfg.paths.state_dir / REGISTRY_FILENAME).is_file():
        return None
    from daemon.registry import Registry

    reg = Registry.open(cfg.paths.state_dir)
    try:
        for run in reg.runs(limit=_LOOKBACK_RUNS):
            if run.decision:
                try:
                    decision = Decision.from_dict(json.loads(run.decision))
                except (KeyError, TypeError, ValueError):
                    continue
                if decision.categories:
                    return run.id, decision
    finally:
        reg.close()
    return None


@dataclass(frozen=True)
class SuiteGuards:
    """The suite check's result: the plans and where their SDs came from."""

    suite: Suite
    policy: GatePolicy
    plans: list[GuardPlan]
    from_run: int | None

    @property
    def unguarded(self) -> list[GuardPlan]:
        """Categories whose items cannot guard their limit."""
        return [p for p in self.plans if not p.can_guard]

    @property
    def too_small(self) -> list[GuardPlan]:
        """Categories below ``min_items``: they cannot carry a promotion."""
        return [p for p in self.plans if not p.counted]


def check_suite_guards(cfg: Config) -> SuiteGuards:
    """Load the config's suite and plan every category's guard (the last night's SD when any).

    Raises:
        SuiteError: the suite file is missing or invalid.
        RegistryError: the registry exists but cannot be read.
    """
    suite = load_suite(cfg.paths.eval_suite)
    policy = GatePolicy.from_config(cfg.promotion)
    last = last_decision(cfg)
    plans = plan_guards(suite, policy, last[1] if last else None)
    return SuiteGuards(suite, policy, plans, last[0] if last else None)


def describe(p: GuardPlan) -> str:
    """One plain sentence on what the category can guard and what it would need."""
    what = p.limit_name
    if p.can_guard:
        text = f"guards its {what} {p.limit:.3f}"
    else:
        more = f"about {p.items_needed} items" if p.items_needed < 10**6 else "a larger limit"
        if p.repeats_needed is not None:
            more += f" or {p.repeats_needed} samples per item"
        text = f"cannot guard its {what} {p.limit:.3f}: catches a drop of {p.guard:.3f}; needs {more}"
    if not p.counted:
        text += "; too small to count toward a promotion"
    return text


def render_table(result: SuiteGuards) -> str:
    """The suite check as a plain-text table with one sentence per category."""
    pol = result.policy
    src = f"paired SDs from run {result.from_run}" if result.from_run else f"prior SD {stats.PRIOR_SD}"
    lines = [
        f"suite {result.suite.path} ({len(result.plans)} categories); confidence "
        f"{pol.confidence * 100:g}%, guard power {pol.power * 100:g}%, min_items {pol.min_items}, "
        f"unguarded: {pol.unguarded}; {src}",
        "",
        f"{'category':<24} {'kind':<12} {'items':>6} {'repeats':>7} {'limit':>6} {'SD':>6} {'guards':>7}  verdict",
    ]
    for p in result.plans:
        lines.append(
            f"{p.name[:24]:<24} {p.kind:<12} {p.items:>6} {p.repeats:>7} {p.limit:>6.3f} {p.sd:>6.3f} "
            f"{p.guard:>7.3f}  {describe(p)}"
        )
    n_bad = len(result.unguarded)
    lines += [
        "",
        f"{n_bad} of {len(result.plans)} categories cannot guard their limit"
        + (
            "; the gate tests the drop they can catch instead and says so in the report."
            if pol.unguarded == "widen"
            else "; with unguarded: block, every night will be rejected until they can."
        )
        if n_bad
        else "Every category can guard its limit.",
    ]
    return "\n".join(lines)
