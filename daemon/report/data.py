"""Everything a morning report shows, gathered once from the registry.

:func:`gather_report` reads a run and its neighbours and returns a
:class:`ReportData`; the Markdown (:mod:`daemon.report.markdown`), HTML
(:mod:`daemon.report.html`) and JSON outputs all render this one object, so
the three never disagree. Strings in it are raw (unescaped): each renderer
escapes them for its own format.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daemon.clock import local_text
from daemon.config import Config
from daemon.dataset.composition import load_composition
from daemon.evaluate import truncation
from daemon.promote import current_target
from daemon.registry import Registry, RunStatus
from daemon.report.content import (
    MIN_DIFF,
    CategoryRow,
    ItemRow,
    LossCurve,
    NightRow,
    ReportData,
    TrendPoint,
)
from daemon.report.content import (
    NO_DIFFS as NO_DIFFS,  # re-exported: the renderers' names live in content.py
)
from daemon.report.content import (
    composition_note as composition_note,
)
from daemon.runsummary import (
    champion_change_text,
    command_changes,
    headline,
    training_processes_text,
    training_stop_cause,
    training_stop_text,
)
from daemon.verdicts import Decision

ROLES = ("base", "champion", "challenger")
TREND_NIGHTS = 365
"""Runs (the newest, up to the reported one) whose decided nights make the trend plot."""
PREVIOUS_CURVES = 5
"""Earlier nights' loss curves drawn behind tonight's."""
DIFFS_PER_DIRECTION = 6
"""Sample diffs shown per direction (newly right, newly wrong)."""
WORST_ITEMS = 8
MAX_RECOVERIES = 20
"""Repairs listed in a report (the newest; ``nightshift status`` and the log have them all)."""
TEXT_LIMIT = 600
"""Characters of a prompt, reply or gold kept in a report (the rest is cut with an ellipsis)."""


CONSEQUENCES = {
    RunStatus.PROMOTED: "The challenger is the new champion.",
    RunStatus.REJECTED: "The champion stays.",
    RunStatus.AWAITING_APPROVAL: "Nothing changes until an operator runs `nightshift approve {id}` or `nightshift reject {id}`.",
    RunStatus.FAILED: "Nothing was promoted; the champion stays.",
    RunStatus.INTERRUPTED: "Nothing was promoted; the champion stays.",
    RunStatus.SKIPPED: "Nothing was trained or promoted; the champion stays.",
    RunStatus.ROLLED_BACK: (
        "The challenger was promoted, but the server did not verifiably serve it; the previous champion is back."
    ),
}
"""What the outcome means for the champion, under the headline (our own text, with `code` spans)."""


def gather_report(cfg: Config, registry: Registry, run_id: int, *, trend_nights: int = TREND_NIGHTS) -> ReportData:
    """Read everything the report of ``run_id`` shows.

    Args:
        trend_nights: how many of the newest runs (up to and including this one) feed the trend.

    Raises:
        RegistryError: no such run.
    """
    run = registry.get_run(run_id)
    status = RunStatus(run.status)
    decision = _decision(run.decision)
    stages = [
        (s.stage, f"{s.outcome}: {s.reason}" if s.outcome and s.reason else s.outcome or "running", s.duration_s)
        for s in registry.stages(run_id)
    ]
    history = [r for r in registry.runs(limit=trend_nights + 1) if r.id <= run_id]
    previous = next((r for r in history if r.id < run_id and _snapshot(r.config_snapshot).get("training")), None)

    evals = {es.role: es for es in registry.eval_sets(run_id)}
    rows_by_role = {role: registry.eval_results(es.id) for role, es in evals.items()}
    items = _items(rows_by_role)
    categories = _category_rows(rows_by_role, decision)

    metrics = registry.train_metrics(run_id)
    trained = any(s[0] == "training" for s in stages) or bool(metrics)
    snap = _snapshot(run.config_snapshot)
    # Recorded by the training stage when it keeps the best checkpoint (absent on older registries).
    chosen = getattr(run, "chosen_iteration", None)
    loss = _curve(run_id, metrics, chosen) if metrics else None
    previous_losses: list[LossCurve] = []
    for r in history:
        if r.id < run_id and len(previous_losses) < PREVIOUS_CURVES:
            m = registry.train_metrics(r.id)
            if m:
                previous_losses.append(_curve(r.id, m, None))

    target, since = _night_champion(cfg, registry, run)
    promoted_tonight = status is RunStatus.PROMOTED
    serving = {
        "current": str(target) if target else None,
        "swapped_tonight": promoted_tonight,
        "note": _serving_note(status, target, cfg.serving.mode, since=bool(since)),
        "since": since,
    }
    stopped_in = next((s[0] for s in stages if s[1] in ("failed", "interrupted")), None)
    composite = None
    if decision is not None and decision.composite is not None:
        c = decision.composite
        composite = {"champion": c.champion, "challenger": c.challenger, "delta": c.delta, "lower_bound": c.lower_bound}
    data = ReportData(
        run_id=run.id,
        status=status.value,
        headline=headline(status.value, _decision_dict(run.decision), run.failure_reason, training_stop_text(run)),
        reason=_reason(status, decision, run.failure_reason),
        trigger=run.trigger,
        started_at=run.started_at.isoformat(timespec="seconds") if run.started_at else None,
        finished_at=run.finished_at.isoformat(timespec="seconds") if run.finished_at else None,
        profile=run.profile,
        failure_reason=run.failure_reason if status in (RunStatus.FAILED, RunStatus.INTERRUPTED) else None,
        run_dir=run.run_dir,
        stopped_in=stopped_in,
        decision=decision,
        composite=composite,
        categories=categories,
        held_out_loss={role: es.held_out_loss for role, es in evals.items() if es.held_out_loss is not None},
        reused=[f"{role} (from eval set {es.reused_from})" for role, es in evals.items() if es.reused_from],
        diffs=_diffs(_with_replies(items, decision)),
        worst=_worst(_with_replies(items, decision)),
        training=_training(cfg, snap, metrics, run) if trained and snap.get("training") else None,
        loss=loss,
        previous_losses=previous_losses,
        stages=stages,
        preflight=_preflight(registry, run_id, decision),
        rehearsal=_rehearsal(registry),
        dataset={
            "examples": run.dataset_examples,
            "sha256": run.dataset_sha256,
            "previous_examples": previous.dataset_examples if previous else None,
            "previous_sha256": previous.dataset_sha256 if previous else None,
            "previous_run": previous.id if previous else None,
        },
        config_diff=_config_diff(_snapshot(previous.config_snapshot), snap) if previous and snap.get("training") else [],
        trend=_trend(history),
        serving=serving,
        extras=_extras(registry, run, rows_by_role),
        composition=load_composition(run.run_dir),
        consequence=_consequence(status, run.id, decision, since=bool(since)),
        pending=[(r.id, _iso(since)) for r, since in registry.pending_approvals() if r.id < run_id],
        recoveries=_recoveries(registry, run, history),
    )
    return data


def _iso(when: Any) -> str | None:
    return when.isoformat(timespec="seconds") if when is not None else None


def _recoveries(registry: Registry, run: Any, history: Sequence[Any]) -> list[tuple[str, str, str]]:
    """Repairs recorded after the previous run was created and before this run ended
    (the start-up reconcile of this night, and of every command in between)."""
    previous = next((r for r in history if r.id < run.id), None)
    rows = registry.recoveries(since=previous.created_at if previous is not None else None, limit=MAX_RECOVERIES)
    until = run.finished_at
    return [(_iso(r.at) or "", r.action, r.detail) for r in reversed(rows) if until is None or r.at <= until]


def _extras(registry: Registry, run: Any, rows_by_role: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Records other stages add when the registry has them: the chosen checkpoint, the share
    of replies cut at ``max_tokens``, the serving hand-off and its verification."""
    out: dict[str, Any] = {}
    chosen = getattr(run, "chosen_iteration", None)
    if chosen is not None:
        val = getattr(run, "chosen_val_loss", None)
        stop = training_stop_text(run)  # a completed run says nothing special
        out["best checkpoint"] = f"iteration {chosen}" + (f" (validation loss {val:.3f})" if val is not None else "") + (
            f"; training {stop}" if stop else ""
        )
        resumed_from = getattr(run, "resumed_from_run_id", None)
        if resumed_from is not None:
            out["best checkpoint"] += f"; resumed {getattr(run, 'resumed_iterations', 0)} iterations from run {resumed_from}"
    if getattr(run, "resume_note", None) and getattr(run, "resumed_from_run_id", None) is None:
        out["resume"] = run.resume_note  # why tonight started over although a checkpoint existed
    shares = []
    for role in ("champion", "challenger"):
        per_category = truncation(rows_by_role.get(role, []))
        cut, replies = sum(t.truncated for t in per_category.values()), sum(t.replies for t in per_category.values())
        if replies:
            worst = ", ".join(
                f"{c} {t.truncated}/{t.replies}" for c, t in sorted(per_category.items()) if t.truncated
            )
            shares.append(f"{role} {cut / replies:.1%} ({cut}/{replies}{': ' + worst if worst else ''})")
    if shares:
        out["replies cut at max_tokens"] = "; ".join(shares)
    handoffs = getattr(registry, "handoffs", None)
    if handoffs is not None:
        for row in handoffs(run.id):  # the promotion's hand-off, then the rollback's when it failed
            key = "rollback hand-off" if row.kind == "auto-rollback" else "hand-off"
            if row.mode == "none":
                out[key] = f"not handed off: {row.verdict}"
                continue
            verdict = "NOT verified" if not row.ok else "unconfirmed" if _unconfirmed(row) else "verified"
            why = getattr(row, "reason", None) or ""
            # the probe verdict is the reason's first words ("<verdict> at <url>"): say it once
            reason = f"; {why}" if why and not row.ok and not why.startswith(row.verdict) else ""
            where = f", {row.url}" if getattr(row, "url", None) else ""
            out[key] = f"{verdict} ({row.mode}{where}, {row.duration_s:.1f} s): {row.verdict}{reason}"
    return out


def _unconfirmed(row: Any) -> bool:
    """A kept hand-off whose probes could not tell the new model from the old (see :mod:`daemon.serving.probes`)."""
    try:
        return bool(json.loads(getattr(row, "probes", None) or "{}").get("unconfirmed"))
    except (ValueError, AttributeError):
        return False


def gather_history(registry: Registry, limit: int = 10_000) -> tuple[list[NightRow], list[TrendPoint]]:
    """Every run (newest first) for the history index, and the trend of decided nights."""
    runs = registry.runs(limit=limit)
    changes = command_changes(registry, runs)
    rows = [night_row(r) for r in runs]
    rows = [replace(row, changes=tuple(changes.get(row.run_id, ()))) for row in rows]
    return rows, _trend(runs[: TREND_NIGHTS + 1])


def night_row(run: Any) -> NightRow:
    """One registry run as a history row (status, reason in one sentence, composites)."""
    raw = _decision_dict(run.decision)
    comp = raw.get("composite") or None
    gate = _GateSummary(bool(raw.get("promote")), str(raw.get("summary", ""))) if raw else None
    return NightRow(
        run_id=run.id,
        date=local_text(run.started_at) if run.started_at else "",
        status=run.status,
        reason=_reason(RunStatus(run.status), gate, run.failure_reason),
        composite=(comp["champion"], comp["challenger"]) if comp else None,
        headline=headline(run.status, raw, run.failure_reason, training_stop_text(run)),
    )


@dataclass(frozen=True)
class _GateSummary:
    """The two fields of a stored decision that the one-sentence reason needs."""

    promote: bool
    summary: str


# ----------------------------------------------------------------- helpers


def _decision(raw: str | None) -> Decision | None:
    if not raw:
        return None
    try:
        return Decision.from_dict(json.loads(raw))
    except (KeyError, TypeError, ValueError):
        return None


def _decision_dict(raw: str | None) -> dict[str, Any]:
    """A stored decision as plain JSON (the trend and history read a few fields of hundreds of
    nights; rebuilding each :class:`Decision` would cost more than the page)."""
    if not raw:
        return {}
    try:
        d = json.loads(raw)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _snapshot(raw: str | None) -> dict[str, Any]:
    try:
        snap = json.loads(raw or "{}")
    except ValueError:
        return {}
    return snap if isinstance(snap, dict) else {}


def _consequence(status: RunStatus, run_id: int, d: Decision | None, *, since: bool = False) -> str:
    """What the outcome meant for the champion that night (``since``: the champion changed
    later, so present-tense advice would be false; the "Since then" note says what changed)."""
    if status is RunStatus.REJECTED and d is not None and d.promote:
        return "The gate recommended promotion; an operator rejected it." + ("" if since else " The champion stays.")
    if since and status is RunStatus.PROMOTED:
        return "The challenger became the champion."
    if since and status is not RunStatus.AWAITING_APPROVAL:
        text = CONSEQUENCES.get(status, "").replace("; the champion stays.", ".").replace("The champion stays.", "The champion stayed.")
        return text.replace("the previous champion is back.", "the previous champion was put back.")
    return CONSEQUENCES.get(status, "").format(id=run_id)


def _night_champion(cfg: Config, registry: Registry, run: Any) -> tuple[Path | None, str | None]:
    """The release ``current`` named when ``run`` ended, and the latest later champion change in words.

    A report describes its own night: a ``nightshift rollback`` or a later night's promotion
    must not rewrite what this night served. Returns ``(release or None for the base model,
    "Since then: rolled back to run 1 at <local time> by alice (...)" or None)``. A run that
    has not ended reads today's ``current``.
    """
    if run.finished_at is None:
        return current_target(cfg.paths.state_dir), None
    promos = registry.promotions()
    own = [p for p in promos if p.run_id == run.id or p.decided_at <= run.finished_at]
    later = [p for p in promos if p.run_id != run.id and p.decided_at > run.finished_at]
    if not own:  # nothing promoted by then: the base model (or a release older than the log)
        target = None if later else current_target(cfg.paths.state_dir)
    else:
        target = Path(own[-1].release_path) if own[-1].release_path else None
    since = None
    if later:
        since = "Since then: " + champion_change_text(later[-1], registry.get_model(later[-1].to_model_id)) + "."
    return target, since


def _reason(status: RunStatus, d: Decision | _GateSummary | None, failure: str | None) -> str:
    """The reason in one sentence: the failure (folded to one line), the operator's, or the gate's."""
    folded = " ".join((failure or "").split())
    if len(folded) > 400:
        folded = folded[:400] + "…"
    if status in (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.ROLLED_BACK):
        return folded or "no reason was recorded"
    if d is None or (folded and status is RunStatus.REJECTED and d.promote):
        return folded
    if status in (RunStatus.PROMOTED, RunStatus.REJECTED) and folded.startswith(("approved by ", "rejected by ")):
        return folded  # an operator's decision: who, and the gate's advice
    return d.summary if status is not RunStatus.AWAITING_APPROVAL else f"the gate recommends: {d.summary}"


def _serving_note(status: RunStatus, target: Path | None, mode: str = "none", *, since: bool = False) -> str:
    """The Serving section's sentence about this night (``since``: the champion changed later, so
    no advice about what to serve now: the "Since then" note follows)."""
    if since:
        if status is RunStatus.ROLLED_BACK:
            return "That night's promotion was rolled back: the champion and `current` were the previous release again."
        if status is RunStatus.PROMOTED:
            return "`current` was swapped that night" + (" and handed to the server (see hand-off)." if mode != "none" else ".")
        if target is None:
            return "That night `current` named no release: the base model was served."
        return "That night's run changed nothing that is served."
    if status is RunStatus.ROLLED_BACK:
        return "The promotion was rolled back: the champion and `current` are the previous release again (see hand-off)."
    if target is None:
        return "No release has been promoted yet: keep serving the base model."
    if status is RunStatus.PROMOTED and mode != "none":
        return "`current` was swapped tonight and handed to the server (see hand-off)."
    if status is RunStatus.PROMOTED:
        return (
            "`current` was swapped tonight; nothing was handed off (serving.mode: none): a client of "
            '`mlx_lm.server` selects the champion per request with "model" (the base) and "adapters" '
            "(the resolved release, `nightshift status --json`), or set serving.mode (see README)."
        )
    return "Tonight's run changed nothing that is served: keep serving `current`."


def _items(rows_by_role: Mapping[str, Sequence[Any]]) -> list[ItemRow]:
    """Champion and challenger rows joined per (category, item), scores averaged over samples."""
    per: dict[str, dict[tuple[str, str], list[Any]]] = {}
    for role in ("champion", "challenger"):
        acc: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in rows_by_role.get(role, []):
            acc[(r.category, r.item_id)].append(r)
        per[role] = acc
    keys = list(per["challenger"]) or list(per["champion"])
    out = []
    for key in keys:
        ch, cl = per["champion"].get(key, []), per["challenger"].get(key, [])
        first = (cl or ch)[0]
        out.append(
            ItemRow(
                category=key[0],
                item_id=key[1],
                champion_score=_mean(r.score for r in ch),
                challenger_score=_mean(r.score for r in cl),
                prompt=first.prompt or "",
                champion_reply=(ch[0].reply or "") if ch else "",
                challenger_reply=(cl[0].reply or "") if cl else "",
                gold=first.gold or "",
                detail=(cl[0].detail or "") if cl else "",
            )
        )
    return out


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _round_robin(groups: dict[str, list[ItemRow]], n: int) -> list[ItemRow]:
    """Up to ``n`` rows taking one from each category in turn (each list already ordered)."""
    out: list[ItemRow] = []
    queues = [list(v) for _, v in sorted(groups.items())]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


GUARDS_CHECK = "suite.guards"
"""The preflight check that estimates, before the night, which categories can guard their margin."""


def _preflight(registry: Registry, run_id: int, d: Decision | None) -> list[tuple[str, str, str]]:
    """The run's preflight findings (not ``ok``) as (check, level, message).

    ``suite.guards`` estimates from the previous night's spread (or a prior) before the night;
    the gate then uses tonight's scores. When the gate decided, its own count follows the
    estimate, so the report does not warn "8 of 8 cannot count" above "8 of 8 counted".
    """
    out = []
    for c in registry.preflight_checks(run_id):
        if c.level == "ok":
            continue
        message = c.message
        if c.name == GUARDS_CHECK and d is not None and d.composite is not None:
            message += (
                f" (before the night; the gate decided on tonight's scores: {len(d.composite.counted)} of "
                f"{len(d.categories)} categories counted, see the decision)"
            )
        out.append((c.name, c.level, message))
    return out


def _with_replies(items: list[ItemRow], d: Decision | None) -> list[ItemRow]:
    """The items that have replies to compare: not those of ``loss`` categories (a held-out
    loss is scored from the reference's likelihood; no reply is generated), known from the
    decision, nor items where neither model has a reply (a loss category of an undecided run)."""
    loss = {c.name for c in d.categories if c.kind == "loss"} if d is not None else set()
    return [it for it in items if it.category not in loss and (it.champion_reply or it.challenger_reply)]


def _diffs(items: list[ItemRow]) -> list[ItemRow]:
    """Items where champion and challenger disagree: newly right first, then newly wrong,
    the largest changes of each category first, spread across categories."""
    out = []
    for sign in (1, -1):
        groups: dict[str, list[ItemRow]] = defaultdict(list)
        for it in items:
            if it.delta * sign >= MIN_DIFF:
                groups[it.category].append(it)
        for g in groups.values():
            g.sort(key=lambda it: (-abs(it.delta), it.item_id))
        out += _round_robin(groups, DIFFS_PER_DIRECTION)
    return out


def _worst(items: list[ItemRow]) -> list[ItemRow]:
    """The challenger's lowest-scoring items below 1.0, spread across categories."""
    groups: dict[str, list[ItemRow]] = defaultdict(list)
    for it in items:
        if it.challenger_score is not None and it.challenger_score < 1.0:
            groups[it.category].append(it)
    for g in groups.values():
        g.sort(key=lambda it: (it.challenger_score or 0.0, it.item_id))
    return sorted(_round_robin(groups, WORST_ITEMS), key=lambda it: (it.challenger_score or 0.0, it.category))


def _category_rows(rows_by_role: Mapping[str, Sequence[Any]], d: Decision | None) -> list[CategoryRow]:
    means: dict[str, dict[str, float]] = {}
    counts: dict[str, set[str]] = defaultdict(set)
    for role, rows in rows_by_role.items():
        per: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            per[r.category].append(r.score)
            counts[r.category].add(r.item_id)
        means[role] = {c: sum(v) / len(v) for c, v in per.items() if v}
    verdicts = {v.name: v for v in d.categories} if d is not None else {}
    out = []
    for cat in sorted(counts):
        v = verdicts.get(cat)
        ci = {"champion": tuple(v.champion_ci), "challenger": tuple(v.challenger_ci)} if v else {}
        out.append(
            CategoryRow(
                name=cat,
                n_items=len(counts[cat]),
                means={role: means[role][cat] for role in ROLES if cat in means.get(role, {})},
                ci=ci,  # type: ignore[arg-type]
                delta=v.delta if v else None,
                lo=v.lo if v else None,
                hi=v.hi if v else None,
                verdict=str(getattr(v.verdict, "value", v.verdict)) if v else None,
            )
        )
    return out


def _curve(run_id: int, metrics: Sequence[Any], best: int | None) -> LossCurve:
    return LossCurve(
        run_id=run_id,
        train=[(m.iteration, m.train_loss) for m in metrics if m.train_loss is not None],
        val=[(m.iteration, m.val_loss) for m in metrics if m.val_loss is not None],
        best_iteration=best,
    )


def _training(cfg: Config, snap: dict[str, Any], metrics: Sequence[Any], run: Any = None) -> list[tuple[str, str]]:
    """The Training section's rows: the configuration as trained, the iterations done (of
    ``training.iters``, with the early stop), the processes, the losses."""
    t = snap["training"]
    lora = t.get("lora", {})
    scale = lora.get("scale") or (
        lora["alpha"] / lora["rank"] if lora.get("alpha") else cfg.training.lora.effective_scale
    )
    out = [
        ("base model", f"{snap.get('paths', {}).get('base_model', '?')} (every night trains on the base)"),
        ("LoRA", f"rank {lora.get('rank')}, scale {scale:g}, dropout {lora.get('dropout')}, layers {lora.get('layers')}"),
        ("steps", f"{_iterations_text(t, run)}, batch {t.get('batch_size')} × grad accumulation {t.get('grad_accumulation')}"),
        ("learning rate", f"{t.get('learning_rate'):g} ({t.get('lr_schedule')}, warmup {t.get('warmup_steps')})"),
        ("max sequence", f"{t.get('max_seq_len_tokens')} tokens, grad checkpointing {t.get('grad_checkpoint')}, seed {t.get('seed')}"),
    ]
    processes = training_processes_text(run)
    if processes:
        out.insert(3, ("processes", processes))
    train_rows = [m for m in metrics if m.train_loss is not None]
    val_rows = [m for m in metrics if m.val_loss is not None]
    if train_rows:
        last = train_rows[-1]
        peak = max((m.peak_memory_bytes or 0) for m in train_rows)
        tps = f"{last.tokens_per_s:.0f} tokens/s" if last.tokens_per_s else "– tokens/s"
        out.append(("final train loss", f"{last.train_loss:.3f} at iteration {last.iteration}; {tps}; peak memory {peak / 1e9:.2f} GB"))
    if val_rows:
        out.append(("validation loss", f"final {val_rows[-1].val_loss:.3f} (first {val_rows[0].val_loss:.3f})"))
    if not metrics:
        out.append(("metrics", "no training metrics recorded"))
    return out


def _iterations_text(t: dict[str, Any], run: Any) -> str:
    """``60 iterations``, or ``720 of 100000 iterations (stopped early for the deadline 06:30)``."""
    done = getattr(run, "train_iterations_done", None)
    total = getattr(run, "train_iterations_total", None) or t.get("iters")
    if done is None or done == total:
        return f"{total} iterations"
    cause = training_stop_cause(run)
    return f"{done} of {total} iterations" + (f" (stopped early{cause})" if cause else "")


def _rehearsal(registry: Registry) -> dict[str, Any] | None:
    r = registry.last_rehearsal()
    return None if r is None else {"created_at": r["created_at"], "ok": r["ok"]}


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return [(k, json.dumps(a.get(k)), json.dumps(b.get(k))) for k in keys]


def _trend(runs: Sequence[Any]) -> list[TrendPoint]:
    """Decided nights, oldest first."""
    out = []
    for r in sorted(runs, key=lambda r: r.id):
        d = _decision_dict(r.decision)
        comp = d.get("composite")
        if not comp:
            continue
        out.append(
            TrendPoint(
                run_id=r.id,
                date=local_text(r.started_at)[:10] if r.started_at else "",  # the local date
                status=r.status,
                champion=comp.get("champion"),
                challenger=comp.get("challenger"),
                categories={
                    str(v["name"]): (v["champion_mean"], v["challenger_mean"]) for v in d.get("categories", [])
                },
            )
        )
    return out
