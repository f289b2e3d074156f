"""Queries over the registry. Every write is one short ``BEGIN IMMEDIATE`` transaction;
every read a deferred one on a read-only connection (it never waits for a writer).
Every SQLite error leaves as a :class:`~daemon.errors.RegistryError` whose text
says what to do (:func:`~daemon.registry.engine.describe_db_error`).

Objects returned are detached ORM rows (attributes stay readable after the
session closes). The champion is the ``to_model`` of the newest row of the
append-only ``promotions`` table, so changing the champion and recording why is
a single insert.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from daemon import clock
from daemon.errors import DuplicateNight, RegistryDatabaseError, RegistryError
from daemon.registry.engine import (
    REGISTRY_FILENAME,
    describe_db_error,
    is_disk_full,
    make_engine,
    upgrade_schema,
)
from daemon.registry.models import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    PROMOTABLE_STATUSES,
    TRANSITIONS,
    EvalResult,
    EvalSet,
    Handoff,
    Model,
    ModelKind,
    PreflightCheck,
    Promotion,
    Recovery,
    Rehearsal,
    Run,
    RunStage,
    RunStatus,
    TrainMetric,
    Trigger,
)
from daemon.secrets import redact


class Registry:
    """The registry of one state dir: ``<state_dir>/registry.sqlite``."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.engine = make_engine(self.db_path)
        self.read_engine = make_engine(self.db_path, read_only=True)

    @classmethod
    def open(cls, state_dir: Path) -> Registry:
        """Open (creating and migrating as needed) the registry of ``state_dir``.

        The state dir is created 0700 and the database file made 0600.

        Raises:
            RegistryError: the schema cannot be brought to the current revision,
                or the database cannot be opened (the message says what to do).
            StateDirError: the state dir cannot be created, or the database
                file is a planted symbolic link.
        """
        from daemon.statedir import ensure_private_dir, planted_link_error

        state_dir = ensure_private_dir(Path(state_dir))
        db_path = state_dir / REGISTRY_FILENAME
        if db_path.is_symlink():
            raise planted_link_error(db_path)
        reg = cls(db_path)
        try:
            upgrade_schema(reg.engine)
            for path in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
                if path.exists() and path.stat().st_mode & 0o077:
                    path.chmod(0o600)
        except DBAPIError as exc:
            reg.close()
            raise RegistryDatabaseError(describe_db_error(db_path, exc), disk_full=is_disk_full(exc)) from None
        except OSError as exc:
            reg.close()
            raise RegistryDatabaseError(describe_db_error(db_path, exc), disk_full=is_disk_full(exc)) from None
        except BaseException:
            reg.close()
            raise
        return reg

    def close(self) -> None:
        """Release the connection pools."""
        self.engine.dispose()
        self.read_engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """A write transaction (``BEGIN IMMEDIATE``)."""
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise RegistryDatabaseError(describe_db_error(self.db_path, exc), disk_full=is_disk_full(exc)) from None

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A read transaction (deferred ``BEGIN``, ``query_only``): never waits for a writer."""
        try:
            with Session(self.read_engine, expire_on_commit=False) as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise RegistryDatabaseError(describe_db_error(self.db_path, exc), disk_full=is_disk_full(exc)) from None

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``ok``, or the problems it lists."""
        with self._read() as s:
            rows = s.connection().exec_driver_sql("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        *,
        trigger: Trigger,
        config_snapshot: dict[str, Any],
        config_path: str | None,
        profile: str | None,
        night_key: str | None = None,
        pid: int | None = None,
    ) -> Run:
        """Insert a ``pending`` run.

        Raises:
            DuplicateNight: ``night_key`` is already taken by another run.
        """
        run = Run(
            trigger=trigger.value,
            status=RunStatus.PENDING.value,
            night_key=night_key,
            profile=profile,
            config_path=config_path,
            config_snapshot=json.dumps(config_snapshot, sort_keys=True),
            created_at=clock.now(),
            started_at=clock.now(),
            pid=pid,
        )
        try:
            with self._tx() as s:
                s.add(run)
        except IntegrityError as exc:
            raise DuplicateNight(f"A run for night {night_key} already exists.") from exc
        return run

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set plain columns of a run (paths, fingerprints, progress JSON, ...)."""
        for key in ("status", "id"):
            if key in fields:
                raise ValueError(f"use transition() to change {key}")
        with self._tx() as s:
            s.execute(update(Run).where(Run.id == run_id).values(**fields))

    def transition(self, run_id: int, to: RunStatus, *, reason: str | None = None) -> None:
        """Move a run along the state machine (see :data:`TRANSITIONS`).

        ``failed`` and ``interrupted`` are reachable from every active state.

        Raises:
            RegistryError: the run does not exist or the transition is illegal.
        """
        with self._tx() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise RegistryError(f"No run {run_id} in the registry.")
            current = RunStatus(run.status)
            allowed = TRANSITIONS.get(current, frozenset())
            if to in (RunStatus.FAILED, RunStatus.INTERRUPTED):
                ok = current in ACTIVE_STATUSES
            else:
                ok = to in allowed
            if not ok:
                raise RegistryError(f"Run {run_id} cannot go from {current.value} to {to.value}.")
            run.status = to.value
            if reason is not None:
                run.failure_reason = redact(reason)
            if to in FINAL_STATUSES:
                run.finished_at = clock.now()
                run.progress = None

    def get_run(self, run_id: int) -> Run:
        """The run with this id.

        Raises:
            RegistryError: no such run.
        """
        with self._read() as s:
            run = s.get(Run, run_id)
        if run is None:
            raise RegistryError(f"No run {run_id} in the registry (see `nightshift history`).")
        return run

    def runs(self, limit: int = 50) -> list[Run]:
        """The newest runs first."""
        with self._read() as s:
            return list(s.scalars(select(Run).order_by(Run.id.desc()).limit(limit)))

    def last_run(self) -> Run | None:
        """The newest run, or None."""
        rows = self.runs(limit=1)
        return rows[0] if rows else None

    def pending_approvals(self) -> list[tuple[Run, Any]]:
        """Runs awaiting an operator's approval, oldest first, each with when it started
        waiting (the end of its last stage, an aware datetime, or None when it recorded none)."""
        with self._read() as s:
            waiting = list(
                s.scalars(select(Run).where(Run.status == RunStatus.AWAITING_APPROVAL.value).order_by(Run.id))
            )
            return [
                (run, s.scalar(select(func.max(RunStage.finished_at)).where(RunStage.run_id == run.id)))
                for run in waiting
            ]

    def active_run(self) -> Run | None:
        """The newest run in an active state, or None."""
        with self._read() as s:
            return s.scalars(
                select(Run)
                .where(Run.status.in_([st.value for st in ACTIVE_STATUSES]))
                .order_by(Run.id.desc())
                .limit(1)
            ).first()

    def night_run(self, night_key: str) -> Run | None:
        """The run recorded for a night key, or None."""
        with self._read() as s:
            return s.scalars(select(Run).where(Run.night_key == night_key)).first()

    def mark_abandoned_runs(self, reason: str) -> list[int]:
        """Mark runs left active by a dead process as ``interrupted``.

        Call only while holding the run lock (so no live run is affected).
        ``{pid}`` in ``reason`` is replaced by each run's recorded pid.

        Returns:
            The ids of the runs changed.
        """
        if self.active_run() is None:  # a read: `status` does not queue behind a writer for nothing
            return []
        with self._tx() as s:
            rows = list(
                s.scalars(select(Run).where(Run.status.in_([st.value for st in ACTIVE_STATUSES])))
            )
            for run in rows:
                run.status = RunStatus.INTERRUPTED.value
                run.failure_reason = reason.replace("{pid}", str(run.pid))
                run.finished_at = clock.now()
                run.progress = None
            return [r.id for r in rows]

    # ---------------------------------------------------------------- stages

    def start_stage(self, run_id: int, stage: str) -> int:
        """Record a stage's start; returns the stage row id."""
        row = RunStage(run_id=run_id, stage=stage, started_at=clock.now())
        with self._tx() as s:
            s.add(row)
        return row.id

    def finish_stage(self, stage_id: int, *, duration_s: float, outcome: str, reason: str | None = None) -> None:
        """Record a stage's end, its duration (seconds, monotonic), outcome and (failed) one-line reason."""
        with self._tx() as s:
            s.execute(
                update(RunStage)
                .where(RunStage.id == stage_id)
                .values(finished_at=clock.now(), duration_s=duration_s, outcome=outcome, reason=reason)
            )

    def stages(self, run_id: int) -> list[RunStage]:
        """The stages of a run in order."""
        with self._read() as s:
            return list(s.scalars(select(RunStage).where(RunStage.run_id == run_id).order_by(RunStage.id)))

    # ---------------------------------------------------------------- models

    def base_model(self, base_path: str, base_sha256: str, *, mlx_version: str | None, mlx_lm_version: str | None) -> Model:
        """The base model row for this content hash, created on first sight."""
        with self._tx() as s:
            row = s.scalars(
                select(Model).where(Model.kind == ModelKind.BASE.value, Model.base_sha256 == base_sha256)
            ).first()
            if row is None:
                row = Model(
                    kind=ModelKind.BASE.value,
                    base_path=base_path,
                    base_sha256=base_sha256,
                    mlx_version=mlx_version,
                    mlx_lm_version=mlx_lm_version,
                    created_at=clock.now(),
                )
                s.add(row)
            return row

    def add_adapter_model(
        self,
        *,
        base: Model,
        adapter_path: str,
        adapter_sha256: str,
        run_id: int,
        mlx_version: str | None,
        mlx_lm_version: str | None,
    ) -> Model:
        """Record a trained adapter on ``base``."""
        row = Model(
            kind=ModelKind.ADAPTER.value,
            base_path=base.base_path,
            base_sha256=base.base_sha256,
            adapter_path=adapter_path,
            adapter_sha256=adapter_sha256,
            parent_base_id=base.id,
            run_id=run_id,
            mlx_version=mlx_version,
            mlx_lm_version=mlx_lm_version,
            created_at=clock.now(),
        )
        with self._tx() as s:
            s.add(row)
        return row

    def get_model(self, model_id: int) -> Model:
        """The model with this id.

        Raises:
            RegistryError: no such model.
        """
        with self._read() as s:
            row = s.get(Model, model_id)
        if row is None:
            raise RegistryError(f"No model {model_id} in the registry.")
        return row

    # ------------------------------------------------------------ champion

    def champion(self) -> tuple[Promotion, Model] | None:
        """The newest promotion and its model, or None before the first promotion."""
        with self._read() as s:
            promo = s.scalars(select(Promotion).order_by(Promotion.id.desc()).limit(1)).first()
            if promo is None:
                return None
            model = s.get(Model, promo.to_model_id)
            assert model is not None
            return promo, model

    def record_promotion(
        self,
        *,
        run_id: int | None,
        from_model_id: int | None,
        to_model_id: int,
        release_path: str,
        reason: str,
        decided_by: str,
        finish_run: bool = True,
        run_status: RunStatus = RunStatus.PROMOTED,
    ) -> Promotion:
        """Append to the promotion log (this changes the champion) and, in the
        same transaction, move the run to ``run_status`` (with ``finish_run``).

        Args:
            run_status: ``promoted``, or ``handing_off`` when a serving hand-off follows.

        Only :func:`daemon.promote.promote_release` (the crash-consistent
        protocol that also swaps ``current``) and its reconcile step call this.

        Raises:
            RegistryError: the run is not in a state that may be promoted.
        """
        promo = Promotion(
            run_id=run_id,
            from_model_id=from_model_id,
            to_model_id=to_model_id,
            release_path=release_path,
            decided_at=clock.now(),
            reason=reason,
            decided_by=decided_by,
        )
        with self._tx() as s:
            if run_id is not None and finish_run:
                run = s.get(Run, run_id)
                if run is None or RunStatus(run.status) not in PROMOTABLE_STATUSES:
                    state = run.status if run else "missing"
                    raise RegistryError(f"Run {run_id} cannot be promoted from state {state}.")
                run.status = run_status.value
                if run_status in FINAL_STATUSES:
                    run.finished_at = clock.now()
                    run.progress = None
            s.add(promo)
            model = s.get(Model, to_model_id)
            if model is not None and model.release_path is None:
                model.release_path = release_path
        return promo

    def add_recovery(self, action: str, detail: str, *, run_id: int | None = None) -> None:
        """Record one repair made by the reconcile step (see :class:`Recovery`)."""
        with self._tx() as s:
            s.add(Recovery(at=clock.now(), action=action, detail=detail, run_id=run_id))

    def recoveries(self, *, since: Any = None, limit: int = 20) -> list[Recovery]:
        """Recorded repairs, newest first; ``since`` (an aware datetime) keeps later ones only."""
        with self._read() as s:
            q = select(Recovery).order_by(Recovery.id.desc()).limit(limit)
            if since is not None:
                q = q.where(Recovery.at >= since)
            return list(s.scalars(q))

    def promotions(self) -> list[Promotion]:
        """The whole promotion log, oldest first."""
        with self._read() as s:
            return list(s.scalars(select(Promotion).order_by(Promotion.id)))

    # ------------------------------------------------------------- metrics

    def add_train_metrics(self, run_id: int, rows: Iterable[dict[str, Any]]) -> int:
        """Insert training reports (keys: iteration, train_loss, val_loss,
        learning_rate, tokens_per_s, trained_tokens, peak_memory_bytes).

        Returns:
            The number of rows inserted.
        """
        objs = [TrainMetric(run_id=run_id, **row) for row in rows]
        if objs:
            with self._tx() as s:
                s.add_all(objs)
        return len(objs)

    def train_metrics(self, run_id: int) -> list[TrainMetric]:
        """All training reports of a run, in arrival order."""
        with self._read() as s:
            return list(s.scalars(select(TrainMetric).where(TrainMetric.run_id == run_id).order_by(TrainMetric.id)))

    # ---------------------------------------------------------------- evals

    def add_eval_set(
        self,
        *,
        run_id: int,
        model_id: int,
        role: str,
        fingerprint: str,
        results: Iterable[dict[str, Any]],
        held_out_loss: float | None = None,
        duration_s: float | None = None,
        reused_from: int | None = None,
    ) -> EvalSet:
        """Record one model's scores on the suite (one row per item and sample)."""
        es = EvalSet(
            run_id=run_id,
            model_id=model_id,
            role=role,
            fingerprint=fingerprint,
            held_out_loss=held_out_loss,
            duration_s=duration_s,
            reused_from=reused_from,
            created_at=clock.now(),
        )
        with self._tx() as s:
            s.add(es)
            s.flush()
            s.add_all(EvalResult(eval_set_id=es.id, **r) for r in results)
        return es

    def find_cached_eval_set(self, model_id: int, fingerprint: str) -> EvalSet | None:
        """The newest freshly scored (not itself reused) eval set of ``model_id``
        with exactly this fingerprint, or None."""
        with self._read() as s:
            return s.scalars(
                select(EvalSet)
                .where(
                    EvalSet.model_id == model_id,
                    EvalSet.fingerprint == fingerprint,
                    EvalSet.reused_from.is_(None),
                )
                .order_by(EvalSet.id.desc())
                .limit(1)
            ).first()

    def eval_sets(self, run_id: int) -> list[EvalSet]:
        """The eval sets recorded for a run."""
        with self._read() as s:
            return list(s.scalars(select(EvalSet).where(EvalSet.run_id == run_id).order_by(EvalSet.id)))

    def eval_results(self, eval_set_id: int) -> list[EvalResult]:
        """The per-item results of an eval set."""
        with self._read() as s:
            return list(
                s.scalars(select(EvalResult).where(EvalResult.eval_set_id == eval_set_id).order_by(EvalResult.id))
            )

    # ------------------------------------------------------------ preflight

    def record_preflight(self, run_id: int, checks: Iterable[dict[str, Any]]) -> None:
        """Store a run's preflight check results (name, level, message, duration_s)."""
        with self._tx() as s:
            s.add_all(PreflightCheck(run_id=run_id, **_check_fields(c)) for c in checks)

    def preflight_checks(self, run_id: int) -> list[PreflightCheck]:
        """The preflight results of a run."""
        with self._read() as s:
            return list(s.scalars(select(PreflightCheck).where(PreflightCheck.run_id == run_id).order_by(PreflightCheck.id)))

    def record_rehearsal(self, report: dict[str, Any]) -> int:
        """Store an evening rehearsal's preflight report (``PreflightReport.to_dict()``)."""
        checks = report.get("checks", [])
        ok = bool(report.get("ok", all(c.get("level") != "fail" for c in checks)))
        row = Rehearsal(created_at=clock.now(), ok=ok, report=json.dumps(report, default=str))
        with self._tx() as s:
            s.add(row)
            s.flush()
            s.add_all(PreflightCheck(rehearsal_id=row.id, **_check_fields(c)) for c in checks)
        return row.id

    def last_rehearsal(self) -> dict[str, Any] | None:
        """The newest rehearsal as ``{"id", "created_at", "ok", "report"}``, or None."""
        with self._read() as s:
            row = s.scalars(select(Rehearsal).order_by(Rehearsal.id.desc()).limit(1)).first()
        if row is None:
            return None
        return {"id": row.id, "created_at": row.created_at.isoformat(), "ok": row.ok, "report": json.loads(row.report)}

    # ------------------------------------------------------------- hand-offs

    def add_handoff(self, **fields: Any) -> Handoff:
        """Record a hand-off (columns of :class:`~daemon.registry.models.Handoff`)."""
        row = Handoff(**fields)
        with self._tx() as s:
            s.add(row)
        return row

    def handoffs(self, run_id: int | None = None) -> list[Handoff]:
        """Hand-offs of a run (all when None), oldest first."""
        q = select(Handoff).order_by(Handoff.id)
        if run_id is not None:
            q = q.where(Handoff.run_id == run_id)
        with self._tx() as s:
            return list(s.scalars(q))

    def last_verified_handoff(self) -> Handoff | None:
        """The newest hand-off a server passed verification on (mode managed or command), or None.

        A kept hand-off no probe could confirm (``"unconfirmed": true`` in its probes) is not verified.
        """
        with self._tx() as s:
            rows = s.scalars(
                select(Handoff).where(Handoff.ok.is_(True), Handoff.mode != "none").order_by(Handoff.id.desc())
            )
            for row in rows:
                try:
                    unconfirmed = bool(json.loads(row.probes or "{}").get("unconfirmed"))
                except (ValueError, AttributeError):
                    unconfirmed = False
                if not unconfirmed:
                    return row
            return None

    def latest_eval_set(self, model_id: int) -> EvalSet | None:
        """The newest eval set (fresh or reused) that scored ``model_id``, or None."""
        with self._tx() as s:
            return s.scalars(
                select(EvalSet).where(EvalSet.model_id == model_id).order_by(EvalSet.id.desc()).limit(1)
            ).first()

    def count_runs(self) -> int:
        """How many runs the registry holds."""
        with self._read() as s:
            return int(s.scalar(select(func.count(Run.id))) or 0)


def _check_fields(check: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": str(check["name"]),
        "level": str(check["level"]),
        "message": str(check["message"]),
        "duration_s": float(check.get("duration_s", 0.0)),
    }
