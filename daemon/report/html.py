"""The self-contained HTML report: one file, inline CSS, figures as inline SVG data URIs.

No script and no network: a Content-Security-Policy meta tag allows only inline
styles and ``data:`` images, and every string from outside is escaped with
:func:`daemon.report.escape.h` into a text node (never into a tag, a URL or an
unquoted attribute), so links and images in replies stay text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from daemon.clock import local_text
from daemon.report import plots
from daemon.report.content import (
    NO_DIFFS,
    ItemRow,
    NightRow,
    ReportData,
    TrendPoint,
    composition_note,
)
from daemon.report.escape import clip, h

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root { --fg:#202124; --muted:#5f6368; --line:#dadce0; --bg:#fff; --card:#f8f9fa; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width: 980px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.5rem; margin: 0.2em 0; } h2 { font-size: 1.2rem; margin: 1.6em 0 0.5em;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 1rem; margin: 0.8em 0 0.3em; }
.muted { color: var(--muted); font-size: 0.9em; }
.badge { display:inline-block; padding: 2px 10px; border-radius: 12px; font-weight: 600; color:#fff; }
.promoted { background:#188038; } .rejected { background:#b06000; } .failed { background:#c5221f; }
.interrupted, .rolled_back { background:#5f6368; } .awaiting_approval { background:#1a73e8; } .running { background:#5f6368; }
.headline { font-size: 1.15rem; font-weight: 600; margin: 0.5em 0; }
.kpi { display:flex; flex-wrap:wrap; gap: 10px; margin: 10px 0; }
.kpi div { background: var(--card); border:1px solid var(--line); border-radius: 8px; padding: 8px 12px; min-width: 140px; }
.kpi b { display:block; font-size: 1.2rem; }
figure { margin: 10px 0; } figure img { width: 100%; max-width: 720px; height: auto; display:block; margin: 0 auto; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; width: 100%; min-width: 540px; font-size: 0.9em; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { white-space: pre-wrap; word-break: break-word; overflow-wrap: anywhere; background: var(--card);
      border: 1px solid var(--line); border-radius: 6px; padding: 8px; margin: 4px 0; font-size: 0.85em; max-height: 18em; overflow-y: auto; }
.diff { border:1px solid var(--line); border-radius: 8px; padding: 8px 12px; margin: 10px 0; }
.diff .cols { display:grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.up { color:#188038; font-weight:600; } .down { color:#c5221f; font-weight:600; }
@media (max-width: 640px) { main { padding: 10px; } .diff .cols { grid-template-columns: 1fr; }
  body { font-size: 14px; } .kpi div { min-width: 45%; } }
"""


def _page(title: str, body: Iterable[str]) -> str:
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<link rel="icon" href="data:,">',
            f"<title>{h(title)}</title>",
            f"<style>{CSS}</style></head><body><main>",
            *body,
            "</main></body></html>",
            "",
        ]
    )


def _prose(text: str) -> str:
    """Escape our own sentence and turn its `code` spans into <code> (after escaping)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", h(text))


def _num(x: float | None, digits: int = 3, sign: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], num: Sequence[int] = ()) -> str:
    """A table from already-escaped cell HTML; columns in ``num`` are right-aligned."""
    ths = "".join(f'<th class="num">{c}</th>' if i in num else f"<th>{c}</th>" for i, c in enumerate(head))
    trs = []
    for row in rows:
        tds = "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(row))
        trs.append(f"<tr>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{ths}</tr></thead><tbody>{"".join(trs)}</tbody></table></div>'


def _figure(uri: str | None, alt: str) -> list[str]:
    return [f'<figure><img src="{uri}" alt="{h(alt)}"></figure>'] if uri else []


def render_html(data: ReportData, *, trend_uri: str | None = None) -> str:
    """The whole HTML document of a run's report.

    Args:
        trend_uri: the trend figure when already drawn (shared with the index page).
    """
    b: list[str] = []
    status_cls = data.status if data.status in ("promoted", "rejected", "failed", "interrupted", "awaiting_approval", "rolled_back") else "running"
    b.append('<p class="muted">nightshift morning report · <a href="index.html">all nights</a></p>')
    b.append(f'<h1>Run {data.run_id} <span class="badge {status_cls}">{h(data.status.replace("_", " "))}</span></h1>')
    b.append(f'<p class="headline">{h(data.headline)}</p>')  # the one sentence --run-now and notifications print
    if data.consequence:
        b.append(f"<p>{_prose(data.consequence)}</p>")
    if data.serving.get("since"):  # a later champion change, dated, apart from what this night did
        b.append(f"<p><b>{h(data.serving['since'])}</b></p>")
    for run_id, since in data.pending:  # a decision still waits while later nights train
        b.append(f"<p><b>Pending:</b> run {run_id} awaits approval since {h(local_text(since))}: run "
                 f"<code>nightshift approve {run_id}</code> or <code>nightshift reject {run_id}</code>.</p>")
    kpis = []
    if data.composite:
        comp = data.composite
        kpis.append(f"<div>composite<b>{comp['champion']:.4f} → {comp['challenger']:.4f}</b>"
                    f"delta {comp['delta']:+.4f}, lower bound {comp['lower_bound']:+.4f}</div>")
    cur = data.serving.get("current")
    kpis.append(f"<div>served release<b>{h(_tail(cur) if cur else 'base model')}</b>"
                f"{'swapped tonight' if data.serving.get('swapped_tonight') else 'unchanged tonight'}</div>")
    for key, value in sorted(data.extras.items()):  # a hand-off line in full: it carries the probe match
        kpis.append(f"<div>{h(key)}<b>{h(value, None if key in WHOLE_KEYS else 80)}</b></div>")
    when = f"finished {local_text(data.finished_at, seconds=True)}" if data.finished_at else (
        "waiting for an operator" if data.status == "awaiting_approval" else "still running")
    kpis.append(f"<div>started<b>{h(local_text(data.started_at, seconds=True))}</b>{h(data.trigger)} · {h(when)}</div>")
    b.append(f'<div class="kpi">{"".join(kpis)}</div>')

    if data.recoveries:
        b.append("<h2>Recovered since the previous night</h2>")
        b.append(_table(["at", "action", "detail"], [[h(local_text(at, seconds=True)), h(a), h(d, 500)] for at, a, d in data.recoveries]))

    if data.failure_reason:
        where = f" (during {h(data.stopped_in)})" if data.stopped_in else ""
        title = "Why it was interrupted" if data.status == "interrupted" else "Why it failed"
        b += [f"<h2>{title}{where}</h2>", f"<pre>{h(data.failure_reason, 4000)}</pre>"]

    if len(data.trend) >= 1:
        b.append(f"<h2>Trend ({len(data.trend)} decided night{'s' if len(data.trend) != 1 else ''})</h2>")
        b += _figure(trend_uri or plots.trend_plot(data.trend), "composite per night")
        b.append(_trend_table(data.trend[-10:]))

    if data.categories:
        b.append("<h2>Scores per category</h2>")
        b += _figure(plots.category_plot(data.categories), "scores per category")
        roles = [r for r in ("base", "champion", "challenger") if any(r in c.means for c in data.categories)]
        rows = []
        for c in data.categories:
            ci = c.ci.get("challenger")
            rows.append([h(c.name, 120), str(c.n_items), *[_num(c.means.get(r)) for r in roles],
                         _num(c.delta, sign=True) + (f" [{c.lo:+.3f}, {c.hi:+.3f}]" if c.lo is not None and c.hi is not None else ""),
                         h(c.verdict or "–") + (f" <span class='muted'>CI {ci[0]:.3f}–{ci[1]:.3f}</span>" if ci else "")])
        b.append(_table(["category", "n", *roles, "Δ vs champion", "verdict"], rows, num=range(1, 3 + len(roles))))
        if data.held_out_loss:
            b.append("<p class='muted'>Held-out loss (nats/token, lower is better): "
                     + ", ".join(f"{h(r)} {v:.3f}" for r, v in data.held_out_loss.items()) + "</p>")
        if data.reused:
            b.append(f"<p class='muted'>Reused cached scores: {h(', '.join(data.reused))}</p>")
    if data.decision is not None:
        b += _decision_html(data)
    if data.diffs:
        b.append("<h2>Sample diffs</h2>")
        b.append("<p class='muted'>Items where champion and challenger disagree, both directions, across categories.</p>")
        b += [_diff_html(it) for it in data.diffs]
    elif data.decision is not None and data.categories:
        b += ["<h2>Sample diffs</h2>", f"<p>{h(NO_DIFFS)}</p>"]
    if data.worst:
        b.append("<h2>Worst challenger items</h2>")
        b.append(_table(["category", "item", "score", "detail"],
                        [[h(it.category, 80), h(it.item_id, 80), _num(it.challenger_score, 2), h(it.detail, 200)] for it in data.worst],
                        num=[2]))
    if data.training is not None or data.loss is not None:
        b.append("<h2>Training</h2>")
        b += _figure(plots.loss_plot(data.loss, data.previous_losses), "training loss")
        if data.training:
            b.append(_table(["parameter", "value"], [[h(k), h(v)] for k, v in data.training]))
    b += _data_html(data)
    if data.config_diff:
        b.append(f"<h2>Config changes since run {data.dataset.get('previous_run')}</h2>")
        b.append(_table(["key", "before", "now"], [[h(k), h(a, 120), h(v, 120)] for k, a, v in data.config_diff]))
    if data.stages:
        b.append("<h2>Stages</h2>")
        b.append(_table(["stage", "outcome", "duration (s)"], [[h(s), h(o), _num(d, 1)] for s, o, d in data.stages], num=[2]))
    if data.preflight:
        b.append("<h2>Preflight findings</h2>")
        b.append(_table(["check", "level", "message"], [[h(n), h(lv), _prose(clip(m, 500))] for n, lv, m in data.preflight]))
    if data.rehearsal is not None:
        b.append(f"<p class='muted'>Last evening rehearsal ({h(local_text(data.rehearsal['created_at']))}): "
                 f"{'passed' if data.rehearsal['ok'] else 'FAILED'}.</p>")
    b.append("<h2>Serving</h2>")
    if cur:
        b.append(f"<p><code>current</code> → <code>{h(cur)}</code></p>")
    b.append(f"<p>{_prose(data.serving['note'])}</p>")
    for key in HANDOFF_KEYS:  # the probe match, in full, where the note points
        if key in data.extras:
            b.append(f"<p><b>{h(key)}:</b> {h(data.extras[key])}</p>")
    if data.serving.get("since"):
        b.append(f"<p>{h(data.serving['since'])}</p>")
    return _page(f"nightshift run {data.run_id}: {data.status}", b)


HANDOFF_KEYS = ("hand-off", "rollback hand-off")
"""The ``extras`` keys of the serving hand-off lines (shown in full, never cut)."""
WHOLE_KEYS = (*HANDOFF_KEYS, "best checkpoint", "resume")
"""The ``extras`` keys shown in full in the summary boxes (the checkpoint's early stop and resume;
why a night started over although a checkpoint existed)."""


def _tail(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _trend_table(points: Sequence[TrendPoint]) -> str:
    rows = [[str(p.run_id), h(p.date), h(p.status), _num(p.champion, 4), _num(p.challenger, 4),
             _num((p.challenger or 0) - (p.champion or 0), 4, sign=True)] for p in reversed(points)]
    return _table(["run", "date", "status", "champion", "challenger", "Δ"], rows, num=[0, 3, 4, 5])


def _decision_html(data: ReportData) -> list[str]:
    d = data.decision
    assert d is not None
    out = ["<h2>Gate decision</h2>"]
    rec = "promote" if d.promote else "reject"
    if data.status == "awaiting_approval":
        out.append(f"<p>The gate recommends: <b>{rec}</b>. Nothing is applied until an operator runs "
                   f"<code>nightshift approve {data.run_id}</code> or <code>nightshift reject {data.run_id}</code>.</p>")
    else:
        out.append(f"<p>The gate's verdict: <b>{rec}</b>.</p>")
    lead = getattr(d, "headline", None) or []  # the gate's lead sentences, when it writes them
    if lead:
        out.append("<ul>" + "".join(f"<li><b>{h(x, 600)}</b></li>" for x in lead) + "</ul>")
    out.append("<ul>" + "".join(f"<li>{h(r, 600)}</li>" for r in d.reasons) + "</ul>")
    keep = [v for v in d.categories if v.preserve]
    if keep:
        out.append("<h3>Knowledge preservation</h3>")
        rows = []
        for v in keep:
            ok = str(getattr(v.verdict, "value", v.verdict)) != "preserve-breach"
            p = "–" if v.preserve_p is None else (f"{v.preserve_p:.4f}" if v.preserve_p >= 1e-4 else f"{v.preserve_p:.1e}")
            rows.append([h(v.name, 120), _num(v.champion_mean), _num(v.challenger_mean),
                         _num(v.champion_mean - v.challenger_mean, sign=True), _num(v.tolerance), p,
                         "kept" if ok else "<b class='down'>LOST</b>"])
        out.append(_table(["category", "champion", "challenger", "drop", "tolerance", "p (drop < tolerance)", "result"],
                          rows, num=[1, 2, 3, 4, 5]))
    return out


def _diff_html(it: ItemRow) -> str:
    up = it.delta > 0
    arrow = '<span class="up">newly right</span>' if up else '<span class="down">newly wrong</span>'
    return (
        f'<div class="diff"><div>{arrow} · <b>{h(it.category, 80)}</b> / {h(it.item_id, 80)} · '
        f"{_num(it.champion_score, 2)} → {_num(it.challenger_score, 2)}</div>"
        f"<h3>prompt</h3><pre>{h(it.prompt, 600)}</pre>"
        f'<div class="cols"><div><h3>champion</h3><pre>{h(it.champion_reply, 600)}</pre></div>'
        f"<div><h3>challenger</h3><pre>{h(it.challenger_reply, 600)}</pre></div></div>"
        f"<h3>gold</h3><pre>{h(it.gold, 600)}</pre></div>"
    )


def _data_html(data: ReportData) -> list[str]:
    ds = data.dataset
    if not ds.get("sha256"):
        return []
    rows = [["examples", h(ds.get("examples")), h(ds.get("previous_examples") if ds.get("previous_sha256") else "–")],
            ["sha256", h(str(ds["sha256"])[:16] + "…"), h(str(ds["previous_sha256"])[:16] + "…" if ds.get("previous_sha256") else "–")]]
    changed = ds.get("previous_sha256") and ds["previous_sha256"] != ds["sha256"]
    note = "" if not ds.get("previous_sha256") else (" (changed since the last night)" if changed else " (unchanged since the last night)")
    prev = f"run {ds['previous_run']}" if ds.get("previous_run") else "previous night"
    out = [f"<h2>Training data{note}</h2>", _table(["", "tonight", h(prev)], rows)]
    comp = data.composition
    if comp is not None:
        def change(n: int, sign: str) -> str:
            return "–" if comp.previous_run is None else (f"{sign}{n}" if n else "0")

        body = [[h(r.source, 120), str(r.train), str(r.valid), change(r.added, "+"), change(r.removed, "-")] for r in comp.rows]
        body.append(["<b>total</b>", str(sum(r.train for r in comp.rows)), str(sum(r.valid for r in comp.rows)),
                     change(comp.added, "+"), change(comp.removed, "-")])
        out += ["<h3>Examples per source</h3>", _table(["source", "train", "valid", "added", "removed"], body, num=[1, 2, 3, 4]),
                f"<p>{_prose(composition_note(comp))}</p>"]
    return out


def render_index(
    rows: Sequence[NightRow], trend: Sequence[TrendPoint], *, have_html: set[int], trend_uri: str | None = None
) -> str:
    """The history page: the trend figure and one row per night with links to its reports.

    Args:
        trend_uri: the trend figure when already drawn for the newest run's report.
    """
    b = ["<h1>nightshift: every night</h1>", f"<p class='muted'>{len(rows)} runs, newest first.</p>"]
    if trend:
        b += _figure(trend_uri or plots.trend_plot(trend), "composite per night")
    table_rows = []
    for r in rows:
        name = f"run-{r.run_id:04d}"
        link = f'<a href="{name}.html">{r.run_id}</a>' if r.run_id in have_html else str(r.run_id)
        comp = f"{r.composite[0]:.4f} → {r.composite[1]:.4f}" if r.composite else "–"
        for change in reversed(r.changes):  # a `nightshift rollback` after this night: its own row
            table_rows.append(["", "", "champion change", "", h(change), ""])
        table_rows.append([link, h(r.date), h(r.status), comp, h(r.reason, 160), f'<a href="{name}.md">md</a>'])
    b.append(_table(["run", "started", "status", "composite", "reason", "text"], table_rows, num=[0]))
    return _page("nightshift: every night", b)
