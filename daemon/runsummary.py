"""What the operator reads about a run at a glance: one line, a history table, the live run.

Everything here is built from registry rows (``Run`` and its stored gate
decision), touches no database itself, and returns text or JSON-ready dicts.
Human text shows local time without microseconds (:func:`daemon.clock.local_text`);
JSON keeps UTC ISO 8601.
"""

from __future__ import annotations

import json
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as UTC ISO 8601 (seconds), durations in seconds."""
        return {
            "id": self.run_id,
            "trigger": self.trigger,
            "status": self.status,
            "started_at": self.started_at.isoformat(timespec="seconds") if self.started_at else None,
            "duration_s": round(self.duration_s, 1) if self.duration_s is not None else None,
            "reason": self.reason,
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
        """The line ``--run-now`` ends with: outcome, the gate's reason, composite change, report.

        ``run 7: rejected (failed superiority); composite 0.5840 -> 0.5801 (-0.0039); report: ...``
        """
        head = f"run {self.run_id}: {self.status}"
        if self.reason:
            head += f" ({self.reason})"
        parts = [head]
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
        reason = run.failure_reason.strip().splitlines()[0]
    elif decision:
        reason = gate_reason(decision)
    duration = None
    if run.started_at is not None and run.finished_at is not None:
        duration = (run.finished_at - run.started_at).total_seconds()
    return RunSummary(
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


def history_table(rows: list[RunSummary]) -> str:
    """A fixed-width table, header first, one run per line (newest first as given).

    Columns: run, trigger, started (local time), duration, outcome, composite
    delta, reason (cut to :data:`REASON_CHARS`).
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
            _cut(r.reason, REASON_CHARS) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *body]:
        cells = [row[0].rjust(widths[0])] + [cell.ljust(w) for cell, w in zip(row[1:-1], widths[1:], strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)
