"""What the operator reads about a run at a glance: one line, a history table, the live run.

Everything here is built from registry rows (``Run`` and its stored gate
decision), touches no database itself, and returns text or JSON-ready dicts.
Human text shows local time without microseconds (:func:`daemon.clock.local_text`);
JSON keeps UTC ISO 8601.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.clock import duration_text, local_text

REASON_CHARS = 72
"""Widest reason shown in the history table (characters); ``--json`` has it whole."""


@dataclass(frozen=True)
class RunSummary:
    """One run as the operator sees it.

    Attributes:
        run_id: the registry id.
        trigger: scheduled, manual or rehearsal.
        status: the run's status value (promoted, rejected, failed...).
        started_at: aware UTC start time, or None before it started.
        duration_s: seconds from start to finish; None while running.
        reason: the gate's reason (failed checks or "all checks passed"),
            else the failure/interruption reason's first line, else "".
        champion_composite, challenger_composite: the gate's composite scores
            in [0, 1]; None when the run never reached the gate.
        composite_delta: challenger minus champion; None likewise.
        report_path: the morning report, if written.
        headline: the outcome in one sentence (:func:`headline`).
        training: an early stop of training (:func:`training_stop_text`), else "".
        processes: a distributed training (:func:`training_processes_text`), else "".
    """

    run_id: int
    trigger: str
    status: str
    started_at: datetime | None
    duration_s: float | None
    reason: str
    champion_composite: float | None
    challenger_composite: float | None
    composite_delta: float | None
    report_path: str | None
    headline: str = ""
    training: str = ""
    processes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as UTC ISO 8601 (seconds), durations in seconds."""
        return {
            "id": self.run_id,
            "trigger": self.trigger,
            "status": self.status,
            "started_at": self.started_at.isoformat(timespec="seconds") if self.started_at else None,
            "duration_s": round(self.duration_s, 1) if self.duration_s is not None else None,
            "reason": self.reason,
            "headline": self.headline,
            "training": self.training or None,
            "processes": self.processes or None,
            "champion_composite": self.champion_composite,
            "challenger_composite": self.challenger_composite,
            "composite_delta": self.composite_delta,
            "report": self.report_path,
        }

    def composite_text(self) -> str:
        """``composite 0.5840 -> 0.6012 (+0.0172)``, or "" when the gate was not reached."""
        if self.champion_composite is None or self.challenger_composite is None or self.composite_delta is None:
            return ""
        return (
            f"composite {self.champion_composite:.4f} -> {self.challenger_composite:.4f} "
            f"({self.composite_delta:+.4f})"
        )

    def outcome_line(self) -> str:
        """The line ``--run-now`` ends with: the outcome sentence (:func:`headline`, the report's
        headline), composite change, report.

        ``run 7: rejected: challenger vs champion: failed superiority (...); composite 0.5840 -> 0.5801 (-0.0039); report: ...``
        """
        parts = [f"run {self.run_id}: {self.headline or self.status}"]
        if self.composite_text():
            parts.append(self.composite_text())
        if self.report_path:
            parts.append(f"report: {self.report_path}")
        return "; ".join(parts)


def gate_reason(decision: dict[str, Any]) -> str:
    """The gate's reason in a few words: ``failed superiority, floors`` or ``all checks passed``.

    ``decision`` is a stored :meth:`daemon.gate.Decision.to_dict`. A sanity
    reject (no composite) gives its summary without the ``REJECT:`` prefix.
    """
    checks = decision.get("checks") or {}
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        return "failed " + ", ".join(failed)
    if checks and decision.get("promote"):
        return "all checks passed"
    summary = str(decision.get("summary") or "")
    for prefix in ("PROMOTE: ", "REJECT: "):
        summary = summary.removeprefix(prefix)
    return summary


HEADLINE_REASON_CHARS = 300
"""Widest failure reason quoted in the one-sentence headline (characters; the report has it whole)."""


def headline(status: str, decision: dict[str, Any] | None, failure_reason: str | None, training: str = "") -> str:
    """The run's outcome in one sentence: what happened, then why (the gate's sentence or the failure).

    The report's headline, the last line of ``--run-now`` and every notification
    print this sentence, so the three say the same thing::

        promoted: challenger beats champion by +0.0172 (95% lower bound +0.0031); all checks passed
        rejected: challenger vs champion: failed superiority (composite delta -0.0039, lower bound -0.0200)
        awaiting approval: the gate recommends PROMOTE: challenger beats champion by ...
        failed: Training exited with signal 9 after 5400 s (likely out of memory); log: ...
        rejected by alice (gate recommended promotion)

    Args:
        status: the run's status value.
        decision: the stored gate decision (:meth:`daemon.gate.Decision.to_dict`), or None/{}.
        failure_reason: the run's recorded reason (failure, interruption, rollback, skip or
            an operator's decision), folded to one line and cut to :data:`HEADLINE_REASON_CHARS`.
        training: an early stop of training (:func:`training_stop_text`), added as
            ``; training stopped early at iteration 720 of 100000 for the deadline 06:30``.
    """
    text = _headline(status, decision, failure_reason)
    return f"{text}; training {training}" if training and not text.startswith("running") else text


def _headline(status: str, decision: dict[str, Any] | None, failure_reason: str | None) -> str:
    from daemon.registry.models import ACTIVE_STATUSES

    word = status.replace("_", " ")
    if status in {s.value for s in ACTIVE_STATUSES}:
        return f"running ({word})"
    d = decision or {}
    summary = str(d.get("summary") or "")
    gate = summary
    for prefix in ("PROMOTE: ", "REJECT: "):
        gate = gate.removeprefix(prefix)
    folded = " ".join((failure_reason or "").split())
    if len(folded) > HEADLINE_REASON_CHARS:
        folded = folded[:HEADLINE_REASON_CHARS] + "…"
    if status == "awaiting_approval":
        return f"{word}: the gate recommends {summary}" if summary else word
    if status in ("promoted", "rejected") and folded.startswith(f"{word} by "):
        return folded  # an operator's decision names who and the gate's advice
    if status == "promoted" and d and not d.get("promote"):
        return f"{word} by the operator against the gate's recommendation: {gate}"
    if status in ("promoted", "rejected") and gate:
        return f"{word}: {gate}"
    if folded:
        return f"{word}: {folded}"
    return f"{word}: no reason was recorded" if status in ("failed", "interrupted", "rolled_back") else word


def training_stop_text(run: Any) -> str:
    """How training ended when it did not run all its iterations, in words; "" otherwise.

    ``stopped early at iteration 720 of 100000 for the deadline 06:30`` or
    ``stopped early at iteration 300 of 1000: validation loss has not improved for 3
    evaluations (best 1.2040 at iteration 200)``. A completed run says nothing (every
    normal night would). Reads the ``train_*`` columns of a registry ``Run``.
    """
    cause = training_stop_cause(run)
    if not cause:
        return ""
    done, total = getattr(run, "train_iterations_done", None), getattr(run, "train_iterations_total", None)
    where = f" at iteration {done} of {total}" if done is not None and total else ""
    return f"stopped early{where}{cause}"


def training_stop_cause(run: Any) -> str:
    """Why training stopped early, as the end of a sentence: `` for the deadline 06:30``,
    ``: validation loss has not improved for 3 evaluations (...)``; "" for a completed run."""
    reason = getattr(run, "train_stop_reason", None)
    if not reason or reason == "completed":
        return ""
    detail = getattr(run, "train_stop_detail", None) or ""
    if reason == "deadline":
        deadline = getattr(run, "train_deadline", None)
        return " for the deadline" + (f" {deadline.astimezone():%H:%M}" if deadline else "")
    if reason == "early_stopping":
        return ": " + (detail or "the validation loss stopped improving (early stopping)")
    return f" ({reason.replace('_', ' ')})" + (f": {detail}" if detail else "")


def training_processes_text(run: Any) -> str:
    """``2 processes (ring)`` or ``3 hosts (jaccl)`` for a run that trained distributed; "" for
    one process. Hosts when the run's config snapshot names a ``training.distributed.hostfile``."""
    world = getattr(run, "train_world_size", None)
    if not world or world <= 1:
        return ""
    try:
        snap = json.loads(getattr(run, "config_snapshot", None) or "{}")
    except ValueError:
        snap = {}
    snap = snap if isinstance(snap, dict) else {}
    hosts = bool(((snap.get("training") or {}).get("distributed") or {}).get("hostfile"))
    backend = getattr(run, "train_backend", None)
    return f"{world} {'hosts' if hosts else 'processes'}" + (f" ({backend})" if backend else "")


def is_rollback(promo: Any, model: Any) -> bool:
    """A promotion-log row that put back an earlier champion (``nightshift rollback``, or the
    automatic rollback after a failed hand-off) rather than promote its run's challenger."""
    return promo.run_id is None or model.run_id != promo.run_id


def champion_change_text(promo: Any, model: Any) -> str:
    """One promotion-log row in words (local time):
    ``rolled back to run 1 at 2026-11-20 09:12 by alice (nightshift rollback by alice from run-0002: bad replies)``.
    """
    label = f"run {model.run_id}" if model.run_id is not None else "the base model"
    verb = "rolled back to" if is_rollback(promo, model) else "promoted"
    return f"{verb} {label} at {local_text(promo.decided_at)} by {promo.decided_by} ({promo.reason})"


def command_changes(registry: Any, runs: Sequence[Any]) -> dict[int, list[str]]:
    """Champion changes no run made (``nightshift rollback``: a promotion-log row without a run),
    in words, keyed by the newest of ``runs`` created before each (0 when none is).

    ``history`` and the index page show them under that run, so a rollback between two
    nights is never invisible.
    """
    out: dict[int, list[str]] = {}
    for promo in registry.promotions():
        if promo.run_id is not None:
            continue
        before = [r.id for r in runs if r.created_at is not None and r.created_at <= promo.decided_at]
        text = champion_change_text(promo, registry.get_model(promo.to_model_id))
        out.setdefault(max(before, default=0), []).append(text)
    return out


def summarize_run(run: Any) -> RunSummary:
    """A :class:`RunSummary` from a registry ``Run`` row (its stored decision included)."""
    decision: dict[str, Any] = {}
    if run.decision:
        try:
            decision = json.loads(run.decision)
        except ValueError:
            decision = {}
    composite = decision.get("composite") or {}
    reason = ""
    if run.failure_reason:  # failed, interrupted, or a manual decision (which names the gate's advice)
        # folded to one line: "Preflight failed (1 check(s)); training was not started:" names its checks below
        reason = " ".join(run.failure_reason.split())
    elif decision:
        reason = gate_reason(decision)
    duration = None
    if run.started_at is not None and run.finished_at is not None:
        duration = (run.finished_at - run.started_at).total_seconds()
    training = training_stop_text(run)
    return RunSummary(
        headline=headline(run.status, decision, run.failure_reason, training),
        training=training,
        processes=training_processes_text(run),
        run_id=run.id,
        trigger=run.trigger,
        status=run.status,
        started_at=run.started_at,
        duration_s=duration,
        reason=reason,
        champion_composite=composite.get("champion"),
        challenger_composite=composite.get("challenger"),
        composite_delta=composite.get("delta"),
        report_path=run.report_path,
    )


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def history_table(rows: list[RunSummary], changes: dict[int, list[str]] | None = None) -> str:
    """A fixed-width table, header first, one run per line (newest first as given).

    Columns: run, trigger, started (local time), duration, outcome, composite
    delta, reason (the outcome's reason first, then an early stop of training; cut to :data:`REASON_CHARS`). ``changes`` (:func:`command_changes`) adds a
    ``champion ... (after run N)`` line above run N for each change no run made (``nightshift rollback``).
    """
    header = ("run", "trigger", "started", "duration", "outcome", "delta", "reason")
    body = [
        (
            str(r.run_id),
            r.trigger,
            local_text(r.started_at),
            duration_text(r.duration_s) if r.duration_s is not None else ("running" if r.started_at else "-"),
            r.status,
            f"{r.composite_delta:+.4f}" if r.composite_delta is not None else "-",
            _cut("; ".join(t for t in (r.reason, r.training and f"training {r.training}") if t), REASON_CHARS) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *body]:
        if row is not header and changes:
            lines += [f"{'':>{widths[0]}}  champion {c} (after run {row[0]})" for c in reversed(changes.get(int(row[0]), []))]
        cells = [row[0].rjust(widths[0])] + [cell.ljust(w) for cell, w in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
