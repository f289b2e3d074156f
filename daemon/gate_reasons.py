"""The sentences of a promotion decision: reasons, summary and headline, built from its numbers.

:func:`daemon.gate.decide_promotion` decides; this module only words what it decided (pure
functions, no statistics). The Markdown lives in :mod:`daemon.report.decision`. Names are
written as they are: whoever renders them escapes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from daemon.verdicts import CategoryVerdict, CompositeResult, EmptyReplies, Verdict

if TYPE_CHECKING:
    from daemon.gate import GatePolicy

#: The checks in reporting order.
CHECKS = ("sanity", "empty_replies", "superiority", "non_inferiority", "floors", "preservation")


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.4g}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def sanity_summary(problems: list[str]) -> str:
    """The one-line summary of a hard sanity reject."""
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"REJECT: {problems[0]}{more}"


def summary(
    promote: bool,
    checks: dict[str, bool],
    composite: CompositeResult,
    champion: str,
    challenger: str,
    policy: GatePolicy,
) -> str:
    """One line for logs and notifications."""
    if promote:
        return (
            f"PROMOTE: {challenger} beats {champion} by {composite.delta:+.4f} "
            f"({_pct(policy.confidence)} lower bound {composite.lower_bound:+.4f}); all checks passed"
        )
    failed = [c for c in CHECKS if not checks.get(c, True)]
    return (
        f"REJECT: {challenger} vs {champion}: failed {', '.join(failed)} "
        f"(composite delta {composite.delta:+.4f}, lower bound {composite.lower_bound:+.4f})"
    )


def reasons(
    checks: dict[str, bool],
    composite: CompositeResult,
    verdicts: list[CategoryVerdict],
    empty: EmptyReplies,
    policy: GatePolicy,
) -> list[str]:
    """One line per check, failed checks first: ``FAILED <check>: ...`` or ``passed <check>: ...``."""
    lines = {
        "sanity": f"sanity: same {len(verdicts)} categories and item ids, scores finite in [0, 1]",
        "empty_replies": _empty_line(empty, policy),
        "superiority": _superiority_line(composite, verdicts, policy),
        "non_inferiority": _non_inferiority_line(verdicts, policy),
        "floors": _floors_line(verdicts),
        "preservation": _preservation_line(verdicts, policy),
    }
    ordered = sorted(CHECKS, key=lambda c: checks.get(c, True))
    return [("passed " if checks.get(c, True) else "FAILED ") + lines[c] for c in ordered]


def _empty_line(e: EmptyReplies, policy: GatePolicy) -> str:
    line = (
        f"empty_replies: items with an empty reply {e.champion} -> {e.challenger} "
        f"({e.only_challenger} only the challenger's, {e.only_champion} only the champion's; "
        f"exact McNemar one-sided p={_p(e.p_value)}; {e.allowed} extra always allowed)"
    )
    if e.blocked:
        line += f"; the increase is real at {_pct(policy.confidence)}"
    return line


def _superiority_line(c: CompositeResult, verdicts: list[CategoryVerdict], policy: GatePolicy) -> str:
    small = [v for v in verdicts if not v.counted]
    not_counted = (
        f"; not counted (fewer than {policy.min_items} items): "
        + ", ".join(f"{v.name} (n={v.n_items})" for v in small)
        if small
        else ""
    )
    if not c.counted:
        return (
            f"superiority: no category has at least {policy.min_items} items, so none can carry "
            f"a promotion{not_counted}"
        )
    how = (
        f"exact McNemar, one-sided p={_p(c.p_value)}"
        if c.method == "mcnemar-exact"
        else f"stratified paired bootstrap, {c.resamples} resamples, p={_p(c.p_value)}"
    )
    line = (
        f"superiority: composite {c.champion:.4f} -> {c.challenger:.4f} (delta {c.delta:+.4f}), "
        f"one-sided {_pct(c.confidence)} lower bound {c.lower_bound:+.4f} "
        f"{'>' if c.lower_bound > c.min_gain else '<='} min_gain {c.min_gain:+.4f} ({how})"
    )
    if c.delta <= 0:
        line += "; no observed improvement (ties never promote)"
    return line + not_counted


def _guard_text(v: CategoryVerdict) -> str:
    if v.widened:
        return f"guard {v.guard:.4f} (widened: margin {v.margin:.4f} cannot be guarded with {v.n_items} items)"
    return f"margin {v.margin:.4f}"


def _non_inferiority_line(verdicts: list[CategoryVerdict], policy: GatePolicy) -> str:
    fail = [v for v in verdicts if not v.non_inferior or v.verdict is Verdict.UNGUARDED]
    widened = [v for v in verdicts if v.widened]
    if fail:
        parts = []
        for v in fail:
            if v.verdict is Verdict.UNGUARDED:
                parts.append(
                    f"{v.name} cannot guard its margin {v.margin:.4f} with {v.n_items} items "
                    f"(detects {v.detectable:.4f}; policy unguarded: block)"
                )
            else:
                parts.append(
                    f"{v.name} delta {v.delta:+.4f}, lower bound {v.lo:+.4f} vs {_guard_text(v)}, "
                    f"p={_p(v.p_value)}"
                )
        return (
            f"non_inferiority: {_plural(len(fail), 'category', 'categories')} not shown within "
            f"{'its' if len(fail) == 1 else 'their'} guard at {_pct(policy.confidence)} ({'; '.join(parts)})"
        )
    line = (
        f"non_inferiority: all {_plural(len(verdicts), 'category', 'categories')} shown within "
        f"their guard at {_pct(policy.confidence)} (intersection-union test)"
    )
    if widened:
        line += (
            "; guarded only the drop they can detect: "
            + ", ".join(f"{v.name} {v.guard:.4f} > margin {v.margin:.4f}" for v in widened)
        )
    return line


def _floors_line(verdicts: list[CategoryVerdict]) -> str:
    floors = [v for v in verdicts if v.floor is not None]
    if not floors:
        return "floors: none set"
    return "floors: " + "; ".join(
        f"{v.name} challenger mean {v.challenger_mean:.4f} "
        f"{'<' if v.challenger_mean < (v.floor or 0.0) - 1e-12 else '>='} floor {v.floor:.4f}"
        for v in floors
    )


def _preservation_line(verdicts: list[CategoryVerdict], policy: GatePolicy) -> str:
    keep = [v for v in verdicts if v.preserve]
    if not keep:
        return "preservation: no preserve categories"
    alpha = 1.0 - policy.confidence
    parts = []
    for v in keep:
        drop = v.champion_mean - v.challenger_mean
        shown = v.preserve_p is not None and v.preserve_p < alpha
        widened = v.preserve_guard > v.tolerance + 1e-12
        limit = (
            f"{v.preserve_guard:.4f} (tolerance {v.tolerance:.4f} cannot be guarded with {v.n_items} items)"
            if widened
            else f"tolerance {v.tolerance:.4f}"
        )
        parts.append(
            f"{v.name} drop {drop:+.4f}, {'shown' if shown else 'NOT shown'} below {limit} "
            f"(p={_p(v.preserve_p)})"
        )
    return "preservation: " + "; ".join(parts)


def headline(
    verdicts: list[CategoryVerdict], composite: CompositeResult, policy: GatePolicy
) -> list[str]:
    """What the report leads with, one sentence each: every category whose observed drop exceeds
    its margin (significant or not), every category that could not guard its margin or
    tolerance, and the categories too small to count."""
    out: list[str] = []
    for v in verdicts:
        drop = -v.delta
        if drop > v.margin + 1e-12 or (v.preserve and drop > v.tolerance + 1e-12):
            limit = min(v.margin, v.tolerance) if v.preserve else v.margin
            what = "tolerance" if v.preserve and v.tolerance < v.margin else "margin"
            tail = (
                "it blocks the promotion"
                if v.blocking
                else f"it did not block: with {v.n_items} items the gate can only rule out a drop of "
                f"{max(v.guard, v.preserve_guard if v.preserve else 0):.3f} or more"
            )
            out.append(
                f"{v.name} dropped {drop:.3f} ({v.champion_mean:.3f} -> {v.challenger_mean:.3f}), "
                f"more than its {what} {limit:.3f}; {tail}."
            )
    unguarded = [v for v in verdicts if v.widened or (v.preserve and v.preserve_guard > v.tolerance + 1e-12)]
    if unguarded:
        out.append(
            "Could not guard their limit at "
            f"{_pct(policy.confidence)}: "
            + "; ".join(
                f"{v.name} ({v.n_items} items, paired SD {v.sd:.3f}) can only guard a drop of "
                f"{max(v.guard, v.preserve_guard):.3f}, not {min(v.margin, v.tolerance) if v.preserve else v.margin:.3f}"
                + (f"; about {v.n_required} items would" if v.n_required < 10**6 else "")
                + (f" (or {v.repeats_required} samples per item)" if v.repeats_required else "")
                for v in unguarded
            )
            + "."
        )
    small = [v for v in verdicts if not v.counted]
    if small:
        out.append(
            f"Too small to count toward the composite (fewer than {policy.min_items} items): "
            + ", ".join(f"{v.name} ({v.n_items})" for v in small)
            + "."
        )
    return out
