"""The promotion decision rendered as Markdown (the gate decides, the report renders).

:func:`render_decision_markdown` turns a :class:`daemon.gate.Decision` into the
decision section of the morning report.
"""

from __future__ import annotations

from daemon.gate import Decision


def render_decision_markdown(decision: Decision) -> str:
    """The decision as Markdown: verdict, per-category table, preservation rows, composite, why.

    Intervals in the table: each model's mean with its two-sided ``confidence`` interval; delta
    with its one-sided lower and upper bounds.
    """
    d = decision
    out = [f"## Promotion decision: {'PROMOTE' if d.promote else 'REJECT'}", "", d.summary, ""]
    conf = d.composite.confidence if d.composite else float(d.policy.get("confidence", 0.95))
    if d.categories:
        out += [
            "| category | kind | n | champion (CI) | challenger (CI) | delta [lo, hi] | margin | p (NI) | p (Holm) | verdict |",
            "|---|---|---:|---|---|---|---:|---:|---:|---|",
        ]
        for v in d.categories:
            flag = " (underpowered)" if v.underpowered and v.verdict != "underpowered" else ""
            out.append(
                f"| {v.name} | {v.kind} | {v.n_items} "
                f"| {v.champion_mean:.3f} [{v.champion_ci[0]:.3f}, {v.champion_ci[1]:.3f}] "
                f"| {v.challenger_mean:.3f} [{v.challenger_ci[0]:.3f}, {v.challenger_ci[1]:.3f}] "
                f"| {v.delta:+.3f} [{v.lo:+.3f}, {v.hi:+.3f}] | {v.margin:.3f} | {_p(v.p_value)} "
                f"| {_p(v.p_adjusted)} | {v.verdict}{flag} |"
            )
        out.append("")
        keep = [v for v in d.categories if v.preserve]
        if keep:
            out += [
                "### Knowledge preservation",
                "",
                "| category | champion | challenger | drop | tolerance | p (drop < tolerance) | result |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
            for v in keep:
                drop = v.champion_mean - v.challenger_mean
                ok = v.verdict != "preserve-breach"
                out.append(
                    f"| {v.name} | {v.champion_mean:.3f} | {v.challenger_mean:.3f} | {drop:+.3f} "
                    f"| {v.tolerance:.3f} | {_p(v.preserve_p)} | {'kept' if ok else 'LOST'} |"
                )
            out.append("")
    if d.composite is not None:
        c = d.composite
        out += [
            "### Composite",
            "",
            f"{c.champion:.4f} -> {c.challenger:.4f}, delta {c.delta:+.4f}, one-sided {conf * 100:g}% "
            f"lower bound {c.lower_bound:+.4f} vs min_gain {c.min_gain:+.4f} ({c.method}"
            + (f", {c.resamples} resamples" if c.resamples else "")
            + (f", p={_p(c.p_value)}" if c.p_value is not None else "")
            + ").",
            "",
        ]
    out += ["### Why", "", _why(d), "", *[f"- {r}" for r in d.reasons], ""]
    return "\n".join(out)


def _why(d: Decision) -> str:
    who = f"{d.challenger_label or 'The challenger'}"
    if d.composite is None:
        return (
            f"{who} was not compared with {d.champion_label or 'the champion'}: the two score sets "
            "cannot be paired (see the failed sanity check), so nothing was promoted."
        )
    c = d.composite
    if d.promote:
        return (
            f"{who} improves the weighted composite by {c.delta:+.4f}, and even the pessimistic "
            f"one-sided bound ({c.lower_bound:+.4f}) clears min_gain {c.min_gain:+.4f}; no category "
            "regressed beyond its margin, floors and knowledge-preservation limits hold, and replies "
            "are no emptier, so it is promoted."
        )
    parts = []
    if not d.checks.get("superiority", True):
        if c.delta <= 0:
            parts.append(
                f"it does not improve the composite (delta {c.delta:+.4f}; ties never promote)"
            )
        else:
            parts.append(
                f"its composite gain of {c.delta:+.4f} is within noise (lower bound {c.lower_bound:+.4f} "
                f"does not clear min_gain {c.min_gain:+.4f})"
            )
    bad = [v for v in d.categories if v.blocking]
    if bad:
        parts.append(
            "categories " + ", ".join(f"{v.name} ({v.verdict})" for v in bad) + " block it"
        )
    if not d.checks.get("sanity", True):
        parts.append("it produced more empty replies than allowed")
    return f"{who} is not promoted: " + "; ".join(parts or ["a check failed"]) + "."


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"
