"""The content of a morning report: the records every renderer reads (no registry here).

:func:`daemon.report.data.gather_report` fills a :class:`ReportData` from the
registry; :mod:`daemon.report.markdown`, :mod:`daemon.report.html` and the JSON
output render it. This module imports nothing heavy (no database, no numpy), so the
HTML render child (:mod:`daemon.report.child`) starts quickly. Strings are raw
(unescaped): each renderer escapes them for its own format.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daemon.dataset.composition import Composition
    from daemon.verdicts import Decision

MIN_DIFF = 0.1
"""Score change (0..1) from which an item counts as newly right or newly wrong (smaller
changes of graded scores, e.g. a loss category, are noise to a reader)."""
NO_DIFFS = f"Champion and challenger agree on every item (no score changed by {MIN_DIFF:g} or more)."


@dataclass(frozen=True)
class CategoryRow:
    """One category's mean item score (0..1) per role, with the gate's numbers when decided.

    Attributes:
        means: role (base, champion, challenger) -> mean item score, for roles scored.
        ci: role -> two-sided interval of the mean (from the gate's decision), when known.
        delta, lo, hi: challenger - champion and its one-sided bounds (gate), when decided.
        verdict: the gate's verdict for the category, when decided.
    """

    name: str
    n_items: int
    means: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    delta: float | None = None
    lo: float | None = None
    hi: float | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class ItemRow:
    """One eval item seen by champion and challenger (scores are means over samples)."""

    category: str
    item_id: str
    champion_score: float | None
    challenger_score: float | None
    prompt: str
    champion_reply: str
    challenger_reply: str
    gold: str
    detail: str = ""

    @property
    def delta(self) -> float:
        """challenger - champion (0 when one side is missing)."""
        if self.champion_score is None or self.challenger_score is None:
            return 0.0
        return self.challenger_score - self.champion_score


@dataclass(frozen=True)
class LossCurve:
    """A night's training curve: ``(iteration, loss)`` pairs in nats/token."""

    run_id: int
    train: list[tuple[int, float]]
    val: list[tuple[int, float]]
    best_iteration: int | None = None


@dataclass(frozen=True)
class TrendPoint:
    """One decided night: composites and per-category means of champion and challenger."""

    run_id: int
    date: str
    status: str
    champion: float | None
    challenger: float | None
    categories: dict[str, tuple[float, float]]
    """category -> (champion mean, challenger mean)."""


@dataclass(frozen=True)
class NightRow:
    """One run in the history index."""

    run_id: int
    date: str
    status: str
    reason: str
    composite: tuple[float, float] | None
    """(champion, challenger) composite when decided."""
    headline: str = ""
    """The outcome in one sentence (:func:`daemon.runsummary.headline`)."""
    changes: tuple[str, ...] = ()
    """Champion changes made by a command (``nightshift rollback``) after this run and before the
    next one, in words with their local time (:func:`daemon.runsummary.command_changes`)."""


@dataclass
class ReportData:
    """The content of one run's morning report (raw strings; renderers escape)."""

    run_id: int
    status: str
    headline: str
    """The outcome in one sentence (:func:`daemon.runsummary.headline`: also ``--run-now``'s
    last line and the notification)."""
    reason: str
    """The gate's or the failure's reason in one sentence."""
    trigger: str
    started_at: str | None
    finished_at: str | None
    profile: str | None
    failure_reason: str | None
    run_dir: str | None
    stopped_in: str | None
    """The stage that failed or was interrupted, when the run did not complete."""
    decision: Decision | None
    composite: dict[str, float] | None
    """champion, challenger, delta, lower_bound (when decided)."""
    categories: list[CategoryRow]
    held_out_loss: dict[str, float]
    reused: list[str]
    diffs: list[ItemRow]
    worst: list[ItemRow]
    training: list[tuple[str, str]] | None
    """(parameter, value) pairs; None when training never started."""
    loss: LossCurve | None
    previous_losses: list[LossCurve]
    stages: list[tuple[str, str, float | None]]
    preflight: list[tuple[str, str, str]]
    rehearsal: dict[str, Any] | None
    dataset: dict[str, Any]
    """examples, sha256, previous_examples, previous_sha256 (each may be None)."""
    config_diff: list[tuple[str, str, str]]
    """(key path, previous night's value, tonight's value)."""
    trend: list[TrendPoint]
    serving: dict[str, Any]
    """current (release path or None), swapped_tonight, note."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Optional records other stages add when present (hand-off, truncation share, ...)."""
    composition: Composition | None = None
    pending: list[tuple[int, str | None]] = field(default_factory=list)
    """Earlier runs still awaiting approval: (run id, waiting since, ISO 8601 UTC or None)."""
    recoveries: list[tuple[str, str, str]] = field(default_factory=list)
    """What reconcile repaired since the previous run began, oldest first: (at, action, detail)."""
    consequence: str = ""
    """What the outcome means for the champion (our own sentence, with `code` spans)."""
    """Examples per source and the change since the previous night (recorded at the data stage)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``nightshift report --json``)."""
        d = asdict(self)
        d["decision"] = self.decision.to_dict() if self.decision is not None else None
        return d


def composition_note(comp: Composition) -> str:
    """One sentence under the composition table: what changed since which night (our own text)."""
    if comp.previous_run is None:
        note = "The first night with recorded data: nothing to compare with."
    elif comp.added or comp.removed:
        note = f"Since run {comp.previous_run}: {comp.added} example(s) added, {comp.removed} removed."
    else:
        note = f"Unchanged since run {comp.previous_run}."
    if comp.untagged_only:
        note += ' No example names its source: add a `"source"` key to each line to count them by source.'
    return note
