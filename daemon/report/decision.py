"""The promotion decision rendered as Markdown (the gate decides, the report renders).

:func:`render_decision_markdown` turns a :class:`daemon.gate.Decision` into the
decision section of the morning report. It prints the decision's strings as they
are: the report passes a copy whose outside strings (category names, labels, and the
reasons, summary and headline that quote them) are already Markdown-inert
(:func:`daemon.report.markdown.escaped_decision`).
"""

from __future__ import annotations

from daemon.verdicts import Decision, Verdict


def render_decision_markdown(decision: Decision) -> str:
    """The decision as Markdown: verdict, headline, per-category table, preservation rows,
    composite, what was and was not ruled out, and why.

    Intervals in the table: each model's mean with its two-sided ``confidence`` interval; delta
    with its one-sided lower and upper bounds; ``guard`` is the drop the category was tested
    against (its margin, or the larger drop it can detect when it cannot guard the margin).
    """
    d = decision
    out = [f"## Promotion decision: {'PROMOTE' if d.promote else 'REJECT'}", "", d.summary, ""]
    if d.headline:
        out += [f"- **{h}**" for h in d.headline] + [""]
    conf = d.composite.confidence if d.composite else float(d.policy.get("confidence", 0.95))
    if d.categories:
        out += [
            "| category | kind | n | champion (CI) | challenger (CI) | delta [lo, hi] | margin | guard | p (guard) | verdict |",
            "|---|---|---:|---|---|---|---:|---:|---:|---|",
        ]
        for v in d.categories:
            mark = " (not counted)" if not v.counted else ""
            out.append(
                f"| {v.name}{mark} | {v.kind} | {v.n_items} "
                f"| {v.champion_mean:.3f} [{v.champion_ci[0]:.3f}, {v.champion_ci[1]:.3f}] "
                f"| {v.challenger_mean:.3f} [{v.challenger_ci[0]:.3f}, {v.challenger_ci[1]:.3f}] "
                f"| {v.delta:+.3f} [{v.lo:+.3f}, {v.hi:+.3f}] | {v.margin:.3f} "
                f"| {v.guard:.3f}{'*' if v.widened else ''} | {_p(v.p_value)} | {v.verdict.value} |"
            )
        out.append("")
        widened = [v for v in d.categories if v.widened]
        if widened:
            out += [
                "\\* "
                + ", ".join(v.name for v in widened)
                + " cannot guard the margin with the items it has; the gate tested the drop it can "
                f"detect instead (an unchanged category passes that guard {d.policy.get('power', 0.65) * 100:g}% "
                "of the time).",
                "",
            ]
        keep = [v for v in d.categories if v.preserve]
        if keep:
            out += [
                "### Knowledge preservation",
                "",
                "| category | champion | challenger | drop | tolerance | guarded drop | p (drop < guarded) | result |",
                "|---|---:|---:|---:|---:|---:|---:|---|",
            ]
            for v in keep:
                drop = v.champion_mean - v.challenger_mean
                ok = v.verdict is not Verdict.PRESERVE_BREACH
                out.append(
                    f"| {v.name} | {v.champion_mean:.3f} | {v.challenger_mean:.3f} | {drop:+.3f} "
                    f"| {v.tolerance:.3f} | {v.preserve_guard:.3f} | {_p(v.preserve_p)} | {'kept' if ok else 'LOST'} |"
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
            + f"; {len(c.counted)} of {len(d.categories)} categories counted).",
            "",
        ]
        out += ["### What the gate could rule out", "", *_ruled_out(d, conf), ""]
    out += ["### Why", "", _why(d), "", *[f"- {r}" for r in d.reasons], ""]
    return "\n".join(out)


def _ruled_out(d: Decision, conf: float) -> list[str]:
    """Two plain sentences: drops ruled out at ``conf``, and what remained possible."""
    pct = f"{conf * 100:g}%"
    shown = [v for v in d.categories if v.non_inferior]
    loose = [v for v in d.categories if v.widened or not v.non_inferior]
    out = []
    if shown:
        out.append(
            f"- Ruled out at {pct}: a drop of "
            + ", ".join(f"{v.guard:.3f} or more in {v.name}" for v in shown)
            + "."
        )
    if loose:
        out.append(
            "- Not ruled out: "
            + "; ".join(
                f"{v.name} may have dropped by up to {max(0.0, -v.lo):.3f}"
                + (f" (its margin is {v.margin:.3f}; about {v.n_required} items would guard it)" if v.widened and v.n_required < 10**6 else "")
                for v in loose
            )
            + "."
        )
    if not loose:
        out.append("- Every category guarded its own margin.")
    return out


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
            f"one-sided bound ({c.lower_bound:+.4f}) clears min_gain {c.min_gain:+.4f}; every category "
            "was shown not to have dropped by its guard or more, floors and knowledge-preservation "
            "limits hold, and replies are not measurably emptier, so it is promoted."
        )
    parts = []
    if not d.checks.get("superiority", True):
        if not c.counted:
            parts.append("no category is large enough to carry a promotion")
        elif c.delta <= 0:
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
            "categories " + ", ".join(f"{v.name} ({v.verdict.value})" for v in bad) + " block it"
        )
    if not d.checks.get("empty_replies", True):
        parts.append("it leaves significantly more items with empty replies")
    return f"{who} is not promoted: " + "; ".join(parts or ["a check failed"]) + "."


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"
