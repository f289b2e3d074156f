"""SQLAlchemy 2.0 ORM models of the registry.

The schema is created and upgraded only by the Alembic migrations in
``daemon/migrations/``; these classes must match the latest migration (a test checks
this with Alembic's autogenerate comparison).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime column.

    SQLite stores no UTC offset (``DateTime(timezone=True)`` keeps only the wall
    time), so a value came back naive. Values are converted to UTC before they
    are stored and come back aware (``tzinfo=UTC``). Naive values are refused:
    their zone is unknown.

    Raises:
        ValueError: a naive datetime was given.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give an aware one (daemon.clock.now())")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of all registry tables."""


class Trigger(str, Enum):
    """What started a run."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"


class RunStatus(str, Enum):
    """The run state machine.

    pending -> preflight -> training -> evaluating -> deciding ->
    promoting | rejected | awaiting_approval (-> promoting | rejected);
    promoting -> handing_off (the promotion row is committed with this move)
    -> promoted (the server verifiably serves it) | rolled_back (it did not: the
    previous champion is back); a failed approval goes promoting -> awaiting_approval;
    preflight -> skipped (nothing changed since the champion's run or the newest decided run, see :mod:`daemon.inputs`);
    any active state -> failed | interrupted.

    Callers that promote without a hand-off (recovery finishing an interrupted
    promotion) go from deciding/awaiting_approval/promoting straight to promoted.
    """

    PENDING = "pending"
    PREFLIGHT = "preflight"
    TRAINING = "training"
    EVALUATING = "evaluating"
    DECIDING = "deciding"
    PROMOTING = "promoting"
    """Building the release and changing the champion (``current`` + promotion row)."""
    HANDING_OFF = "handing_off"
    """Promoted in the registry; handing the release to the server and verifying it."""
    AWAITING_APPROVAL = "awaiting_approval"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    ROLLED_BACK = "rolled_back"
    """Promoted, but the server did not verifiably serve it: the previous champion is back."""

    @property
    def is_active(self) -> bool:
        """True for states a live process is working on."""
        return self in ACTIVE_STATUSES

    @property
    def is_final(self) -> bool:
        """True for states a run never leaves."""
        return self in FINAL_STATUSES


ACTIVE_STATUSES = frozenset(
    {
        RunStatus.PENDING, RunStatus.PREFLIGHT, RunStatus.TRAINING, RunStatus.EVALUATING, RunStatus.DECIDING,
        RunStatus.PROMOTING, RunStatus.HANDING_OFF,
    }
)
#: States a run may be promoted from (the promotion row moves it to ``promoted``).
PROMOTABLE_STATUSES = frozenset({RunStatus.DECIDING, RunStatus.AWAITING_APPROVAL, RunStatus.PROMOTING})
FINAL_STATUSES = frozenset(
    {RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.SKIPPED, RunStatus.ROLLED_BACK}
)

#: Legal transitions of the state machine (from -> allowed targets).
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.PREFLIGHT}),
    RunStatus.PREFLIGHT: frozenset({RunStatus.TRAINING, RunStatus.SKIPPED}),
    RunStatus.TRAINING: frozenset({RunStatus.EVALUATING}),
    RunStatus.EVALUATING: frozenset({RunStatus.DECIDING}),
    RunStatus.DECIDING: frozenset(
        {RunStatus.PROMOTING, RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.AWAITING_APPROVAL}
    ),
    RunStatus.AWAITING_APPROVAL: frozenset({RunStatus.PROMOTING, RunStatus.PROMOTED, RunStatus.REJECTED}),
    # promoting -> handing_off is the promotion row's commit (Registry.record_promotion).
    RunStatus.PROMOTING: frozenset({RunStatus.AWAITING_APPROVAL}),
    # The promotion is committed before the hand-off; a failed hand-off rolls it back.
    RunStatus.HANDING_OFF: frozenset({RunStatus.PROMOTED, RunStatus.ROLLED_BACK}),
    RunStatus.PROMOTED: frozenset({RunStatus.ROLLED_BACK}),
}


class ModelKind(str, Enum):
    """A base model, or a LoRA adapter trained on one."""

    BASE = "base"
    ADAPTER = "adapter"


class Run(Base):
    """One pipeline run (a night, or a manual ``--run-now``)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32), index=True)
    night_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    profile: Mapped[str | None] = mapped_column(String(64))
    config_path: Mapped[str | None] = mapped_column(Text)
    config_snapshot: Mapped[str] = mapped_column(Text)
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_examples: Mapped[int | None] = mapped_column(Integer)
    run_dir: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failure_reason: Mapped[str | None] = mapped_column(Text)
    log_path: Mapped[str | None] = mapped_column(Text)
    report_path: Mapped[str | None] = mapped_column(Text)
    champion_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    challenger_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    decision: Mapped[str | None] = mapped_column(Text)
    """JSON of the gate's Decision (every number and reason)."""
    progress: Mapped[str | None] = mapped_column(Text)
    """JSON of the live progress (stage, iteration/total, loss, ETA) for ``status``."""
    chosen_iteration: Mapped[int | None] = mapped_column(Integer)
    """The iteration whose adapter became the challenger (lowest validation loss; mark it on the loss curve)."""
    chosen_val_loss: Mapped[float | None] = mapped_column(Float)
    train_stop_reason: Mapped[str | None] = mapped_column(String(32))
    """``completed``, ``deadline`` or ``early_stopping``."""
    resumed_from_run_id: Mapped[int | None] = mapped_column(Integer)
    """The interrupted run whose checkpoint this run continued (no FK: same table)."""
    resumed_iterations: Mapped[int | None] = mapped_column(Integer)
    """Iterations taken over from that checkpoint instead of trained again."""
    train_stop_detail: Mapped[str | None] = mapped_column(Text)
    """The training child's sentence on an early stop (``validation loss has not improved for 3 evaluations ...``)."""
    train_iterations_done: Mapped[int | None] = mapped_column(Integer)
    """Optimizer updates applied (below ``train_iterations_total`` when training stopped early)."""
    train_iterations_total: Mapped[int | None] = mapped_column(Integer)
    """``training.iters`` of that night."""
    train_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When the night had to be over (``training.deadline``), or None."""
    train_stop_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """When training had to end for that (the deadline minus the post-training reserve), or None."""
    train_world_size: Mapped[int | None] = mapped_column(Integer)
    """Training processes (1 unless ``training.distributed``)."""
    train_backend: Mapped[str | None] = mapped_column(String(16))
    """``mlx.launch``'s backend (ring, mpi, jaccl) when more than one process trained."""
    resume_note: Mapped[str | None] = mapped_column(Text)
    """The train stage's resume decision in one line: the checkpoint it continues, or why an
    existing one was not used (:meth:`daemon.train.TrainPlan.resume_line`); None: nothing to say."""


class RunStage(Base):
    """One stage of a run, with its duration."""

    __tablename__ = "run_stages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)


class Model(Base):
    """A model nightshift knows: the base, or base + a LoRA adapter."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    base_path: Mapped[str] = mapped_column(Text)
    base_sha256: Mapped[str] = mapped_column(String(64), index=True)
    adapter_path: Mapped[str | None] = mapped_column(Text)
    adapter_sha256: Mapped[str | None] = mapped_column(String(64))
    parent_base_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    run_id: Mapped[int | None] = mapped_column(Integer)
    """The run that trained this adapter (no FK: runs also reference models)."""
    mlx_version: Mapped[str | None] = mapped_column(String(32))
    mlx_lm_version: Mapped[str | None] = mapped_column(String(32))
    release_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TrainMetric(Base):
    """One training report from the child (every ``steps_per_report`` steps)."""

    __tablename__ = "train_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    peak_memory_bytes: Mapped[int | None] = mapped_column(Integer)


class EvalSet(Base):
    """One model scored on one eval suite under one set of conditions.

    ``fingerprint`` hashes (model, suite content, decoding, backend, judge): a
    later night may reuse these results only on an exact match.
    """

    __tablename__ = "eval_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    reused_from: Mapped[int | None] = mapped_column(ForeignKey("eval_sets.id"))
    held_out_loss: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EvalResult(Base):
    """One scored reply (one item, one sample) of an eval set."""

    __tablename__ = "eval_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    eval_set_id: Mapped[int] = mapped_column(ForeignKey("eval_sets.id"), index=True)
    category: Mapped[str] = mapped_column(String(128))
    item_id: Mapped[str] = mapped_column(String(256))
    sample: Mapped[int] = mapped_column(Integer, default=0)
    score: Mapped[float] = mapped_column(Float)
    empty: Mapped[bool] = mapped_column(Boolean, default=False)
    parsed: Mapped[bool] = mapped_column(Boolean, default=True)
    prompt: Mapped[str | None] = mapped_column(Text)
    reply: Mapped[str | None] = mapped_column(Text)
    gold: Mapped[str | None] = mapped_column(Text)
    extracted: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[str | None] = mapped_column(Text)
    truncated: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    """Generation stopped at max_tokens (mlx-lm finish reason ``length``); None for loss items
    and rows recorded before this was measured."""


class Promotion(Base):
    """Append-only log of champion changes; the newest row names the champion."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    from_model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    to_model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    release_path: Mapped[str] = mapped_column(Text)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    decided_by: Mapped[str] = mapped_column(String(128))
    """``auto`` for the gate, else the operator's name (``approve``, ``rollback``)."""


class PreflightCheck(Base):
    """One preflight check result, of a run or of an evening rehearsal."""

    __tablename__ = "preflight_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    rehearsal_id: Mapped[int | None] = mapped_column(ForeignKey("rehearsals.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column(Float)


class Rehearsal(Base):
    """An evening preflight rehearsal (preflight + smoke, no training)."""

    __tablename__ = "rehearsals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ok: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[str] = mapped_column(Text)


class Recovery(Base):
    """One thing the start-up reconcile step repaired (see :func:`daemon.promote.reconcile`).

    ``action`` is a short verb (``promotion-completed``, ``promotion-undone``,
    ``current-repointed``, ``champion-replaced``, ``orphan-removed``,
    ``run-interrupted``...); ``detail`` says what was found and what was done.
    """

    __tablename__ = "recoveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)


class Handoff(Base):
    """One hand-off of a release to the server and its verification (see :mod:`daemon.serving`)."""

    __tablename__ = "handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``promotion``, ``auto-rollback`` or ``rollback`` (``nightshift rollback``)."""
    mode: Mapped[str] = mapped_column(String(16))
    """``serving.mode``: none, managed or command."""
    release_path: Mapped[str] = mapped_column(Text)
    """The resolved release handed off ('' = the base model alone)."""
    served_run_id: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
    verdict: Mapped[str] = mapped_column(Text)
    """One line, e.g. ``served = run-0007: 16/16 probes identical``."""
    reason: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column(Float)
    probes: Mapped[str] = mapped_column(Text)
    """JSON of the probe counts and up to 3 mismatches."""
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime())
