"""The Markdown report: the terminal and plain-text rendering of :class:`ReportData`.

Every string from outside goes through :func:`md_inline` (one line) or
:func:`md_block` (a fenced block); see :mod:`daemon.report.escape`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from daemon.clock import local_text
from daemon.dataset.composition import Composition
from daemon.report.content import NO_DIFFS, ItemRow, ReportData, composition_note
from daemon.report.decision import render_decision_markdown
from daemon.report.escape import md_block, md_inline
from daemon.verdicts import Decision


def _fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def escaped_decision(d: Decision) -> Decision:
    """A copy of ``d`` whose outside strings (category names, labels, reasons) are Markdown-inert.

    The decision section's wording is the gate's; the report only makes what it
    quotes from the suite safe to print.
    """
    cats = [dataclasses.replace(v, name=md_inline(v.name, None), kind=md_inline(v.kind, None)) for v in d.categories]
    extra: dict[str, Any] = {}
    if isinstance(getattr(d, "headline", None), list):  # lead sentences quoting category names
        extra["headline"] = [md_inline(x, None) for x in getattr(d, "headline")]  # noqa: B009
    return dataclasses.replace(
        d,
        categories=cats,
        reasons=[md_inline(r, None) for r in d.reasons],
        summary=md_inline(d.summary, None),
        champion_label=md_inline(d.champion_label, None),
        challenger_label=md_inline(d.challenger_label, None),
        **extra,
    )


def render_markdown(data: ReportData) -> str:
    """The Markdown text of a run's report (ends with a newline)."""
    lines = [f"# nightshift morning report: run {data.run_id}", ""]
    lines += [f"**{md_inline(data.headline, None)}**", ""]  # the one sentence --run-now and notifications print
    if data.consequence:
        lines += [data.consequence, ""]
    if data.serving.get("since"):  # a later champion change, dated, apart from what this night did
        lines += [md_inline(data.serving["since"], None), ""]
    for run_id, since in data.pending:  # a decision still waits while later nights train
        lines += [f"Pending: run {run_id} awaits approval since {local_text(since)}: run `nightshift approve {run_id}` "
                  f"or `nightshift reject {run_id}`.", ""]
    if data.composite is not None:
        comp = data.composite
        lines += [
            f"Composite: champion {comp['champion']:.4f} -> challenger {comp['challenger']:.4f} "
            f"(delta {comp['delta']:+.4f}, lower bound {comp['lower_bound']:+.4f})",
            "",
        ]
    if data.finished_at:
        when = f"finished {local_text(data.finished_at, seconds=True)}"
    elif data.status == "awaiting_approval":
        when = "waiting for an operator's decision"
    else:
        when = "still running"
    lines.append(f"- status: `{data.status}` · trigger: {data.trigger} · started {local_text(data.started_at, seconds=True)} · {when}")
    if data.profile:
        lines.append(f"- profile: {md_inline(data.profile)}")
    ds = data.dataset
    if ds.get("sha256"):
        change = ""
        if ds.get("previous_sha256"):
            change = (
                " (unchanged since run {})".format(ds["previous_run"])
                if ds["previous_sha256"] == ds["sha256"]
                else " (changed since run {}: {} -> {} examples)".format(
                    ds["previous_run"], ds.get("previous_examples"), ds.get("examples")
                )
            )
        lines.append(f"- dataset: {ds.get('examples')} examples, sha256 `{str(ds['sha256'])[:16]}…`{change}")
    if data.run_dir:
        lines.append(f"- run directory: {md_inline(data.run_dir, None)}")
    for key, value in sorted(data.extras.items()):
        lines.append(f"- {md_inline(key)}: {md_inline(value)}")

    if data.recoveries:
        lines += ["", "## Recovered since the previous night", "", "| at | action | detail |", "|---|---|---|"]
        lines += [f"| {local_text(at, seconds=True)} | {md_inline(action)} | {md_inline(detail, 500)} |" for at, action, detail in data.recoveries]

    if data.failure_reason:
        where = f" (during {data.stopped_in})" if data.stopped_in else ""
        title = "Why it was interrupted" if data.status == "interrupted" else "Why it failed"
        lines += ["", f"## {title}{where}", "", md_block(data.failure_reason, 4000)]

    if data.decision is not None:
        if data.status == "awaiting_approval":
            lines += ["", "The gate's recommendation below is not applied until an operator approves or rejects it."]
        lines += ["", render_decision_markdown(escaped_decision(data.decision)).rstrip("\n")]
    if data.categories:
        roles = [r for r in ("base", "champion", "challenger") if any(r in c.means for c in data.categories)]
        lines += ["", "## Scores per category (mean item score, 0–1)", ""]
        lines += ["| category | n | " + " | ".join(roles) + " | Δ vs champion | verdict |", "|---|---:" + "|---:" * len(roles) + "|---:|---|"]
        for c in data.categories:
            ch, champ = c.means.get("challenger"), c.means.get("champion")
            d1 = f"{ch - champ:+.3f}" if ch is not None and champ is not None else "–"
            vals = " | ".join(_fmt(c.means.get(r)) for r in roles)
            lines.append(f"| {md_inline(c.name)} | {c.n_items} | {vals} | {d1} | {md_inline(c.verdict or '–')} |")
        if data.held_out_loss:
            lines += ["", "Held-out loss (nats/token, lower is better): " + ", ".join(f"{r} {_fmt(v)}" for r, v in data.held_out_loss.items())]
        if data.reused:
            lines += ["", "Reused cached scores (identical fingerprint): " + ", ".join(data.reused)]
    if data.diffs:
        lines += ["", "## Sample diffs (champion vs challenger)", ""]
        for it in data.diffs:
            lines += _diff_block(it)
    elif data.decision is not None and data.categories:
        lines += ["", "## Sample diffs (champion vs challenger)", "", NO_DIFFS]
    if data.worst:
        lines += ["", f"## Worst challenger items ({len(data.worst)}, across categories)", ""]
        lines += ["| category | item | score | detail |", "|---|---|---:|---|"]
        for it in data.worst:
            lines.append(f"| {md_inline(it.category)} | {md_inline(it.item_id)} | {_fmt(it.challenger_score, 2)} | {md_inline(it.detail, 200)} |")

    if data.training is not None:
        lines += ["", "## Training", ""]
        lines += [f"- {k}: {md_inline(v, None)}" for k, v in data.training]
    if data.composition is not None:
        lines += ["", "## Training data (examples per source)", "", *_composition_md(data.composition)]
    if data.config_diff:
        lines += ["", f"## Config changes since run {data.dataset.get('previous_run')}", "", "| key | before | now |", "|---|---|---|"]
        lines += [f"| {md_inline(k)} | {md_inline(a, 120)} | {md_inline(b, 120)} |" for k, a, b in data.config_diff]
    if data.stages:
        lines += ["", "## Stages", "", "| stage | outcome | duration (s) |", "|---|---|---:|"]
        lines += [f"| {md_inline(s)} | {md_inline(o)} | {_fmt(d, 1)} |" for s, o, d in data.stages]
    if data.preflight:
        lines += ["", "## Preflight findings", "", "| check | level | message |", "|---|---|---|"]
        lines += [f"| {md_inline(n)} | {md_inline(lv)} | {md_inline(m, 500)} |" for n, lv, m in data.preflight]
    if data.rehearsal is not None:
        verdict = "passed" if data.rehearsal["ok"] else "FAILED"
        lines += ["", f"Last evening rehearsal ({local_text(data.rehearsal['created_at'])}): {verdict}."]
    if len(data.trend) > 1:
        lines += ["", f"## Trend (last {len(data.trend)} decided nights)", "", "| run | date | status | champion | challenger |", "|---:|---|---|---:|---:|"]
        for p in data.trend[-10:]:
            lines.append(f"| {p.run_id} | {p.date} | {p.status} | {_fmt(p.champion, 4)} | {_fmt(p.challenger, 4)} |")
    lines += ["", "## Serving", ""]
    cur = data.serving.get("current")
    if cur:
        lines.append(f"`current` -> {md_inline(cur, None)}")
        lines.append("")
    lines.append(data.serving["note"])
    if data.serving.get("since"):
        lines += ["", md_inline(data.serving["since"], None)]
    return "\n".join(lines) + "\n"


def _diff_block(it: ItemRow) -> list[str]:
    direction = "newly right" if it.delta > 0 else "newly wrong"
    head = (
        f"### {direction}: {md_inline(it.category, 80)} / {md_inline(it.item_id, 80)} "
        f"({_fmt(it.champion_score, 2)} -> {_fmt(it.challenger_score, 2)})"
    )
    out = [head, ""]
    for label, text in (("prompt", it.prompt), ("champion", it.champion_reply), ("challenger", it.challenger_reply), ("gold", it.gold)):
        out += [f"{label}:", "", md_block(text, 600), ""]
    return out


def _composition_md(comp: Composition) -> list[str]:
    lines = ["| source | train | valid | added | removed |", "|---|---:|---:|---:|---:|"]
    for r in comp.rows:
        lines.append(f"| {md_inline(r.source, 120)} | {r.train} | {r.valid} | {_change(r.added, '+', comp)} | {_change(r.removed, '-', comp)} |")
    total_train, total_valid = sum(r.train for r in comp.rows), sum(r.valid for r in comp.rows)
    lines.append(f"| total | {total_train} | {total_valid} | {_change(comp.added, '+', comp)} | {_change(comp.removed, '-', comp)} |")
    return [*lines, "", composition_note(comp)]


def _change(n: int, sign: str, comp: Composition) -> str:
    return "–" if comp.previous_run is None else (f"{sign}{n}" if n else "0")
