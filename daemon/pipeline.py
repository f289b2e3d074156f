"""Runs the stages of one night in order and records every transition.

preflight -> train (child) -> evaluate (child) -> decide (pure) -> promote -> hand-off
(verified, else rolled back; :mod:`daemon.serving`) -> report -> gc.

The champion, ``current`` and earlier registry rows are never harmed by a
failed run: training writes only into the run's own directory, a release is
assembled aside and becomes visible through the crash-consistent protocol of
:mod:`daemon.promote` (intent, swap, commit), and every run starts with
:func:`daemon.recovery.recover_state`, which repairs what a crash left.
A stop request is honoured between stages as well as inside them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from daemon import clock, shutdown
from daemon.child import StartedWorker
from daemon.config import Config
from daemon.dataset.composition import LOOKBACK_RUNS, record_composition
from daemon.errors import (
    FileAccessError,
    Interrupted,
    NightshiftError,
    PreflightFailed,
    PromotionRefused,
    RegistryError,
    StateDirError,
    describe_os_error,
)
from daemon.evaluate import (
    RESULT_FIELDS,
    EvalProgress,
    ModelEval,
    ModelRef,
    eval_fingerprint,
    run_evaluation,
    scores_from_rows,
    start_eval_worker,
)
from daemon.faults import fault_point
from daemon.fingerprint import dataset_fingerprint, dir_sha256
from daemon.gate import Decision, GatePolicy, decide_promotion
from daemon.inputs import (
    DECIDED_STATUSES,
    NightInputs,
    RecordedRun,
    TrainingInputs,
    skip_reason,
    training_section,
)
from daemon.lock import RunLock
from daemon.notify import notify_run
from daemon.preflight import run_preflight
from daemon.promote import build_release, promote_release, reconcile
from daemon.recovery import recover_state
from daemon.registry import Registry, RunStatus, Trigger
from daemon.registry.engine import is_disk_full
from daemon.registry.models import Model, ModelKind, Run
from daemon.report import write_report
from daemon.serving.fusecheck import fuse_probes
from daemon.serving.handoff import (
    ServingSession,
    Target,
    champion_target,
    hand_off_or_roll_back,
    paused_server,
    recorded_replies,
    serving_session,
)
from daemon.serving.releases import apply_gc, plan_gc
from daemon.statedir import disk_full_hint, ensure_reserve, release_reserve
from daemon.suite import load_suite
from daemon.train import TrainProgress, plan_training, train_challenger

log = structlog.get_logger("nightshift")

T = TypeVar("T")

RUNS_DIR = "runs"
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.jinja", "*.txt", "*.tiktoken")


@contextmanager
def locked_registry(state_dir: Path) -> Iterator[tuple[RunLock, Registry]]:
    """Hold the run lock and an open registry for a change to runs.

    Raises:
        RunLocked: another run holds the lock.
    """
    with RunLock(state_dir) as lock:
        registry = Registry.open(state_dir)
        try:
            yield lock, registry
        finally:
            registry.close()


class Progress(Protocol):
    """What the CLI shows while a run is going (a progress bar, or plain lines)."""

    def stage(self, name: str, run_id: int) -> None: ...
    def train(self, p: TrainProgress) -> None: ...
    def evaluate(self, p: EvalProgress) -> None: ...


@dataclass(frozen=True)
class RunOutcome:
    """How a completed run ended.

    Attributes:
        run_id: the registry id.
        status: promoted, rejected or awaiting_approval.
        reasons: the gate's reasons.
        report_path: the morning report.
    """

    run_id: int
    status: RunStatus
    reasons: list[str]
    report_path: Path | None


def run_pipeline(
    cfg: Config,
    *,
    trigger: Trigger = Trigger.MANUAL,
    night_key: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> RunOutcome:
    """Run one night now: preflight, train, evaluate, decide, promote, report.

    Takes the run lock first (scheduled and manual runs alike). A night whose
    training inputs equal those of the champion's run is ``skipped`` after
    preflight (:mod:`daemon.inputs`) unless ``force``.

    Returns:
        The outcome of a run that completed (promoted, rejected, awaiting approval or skipped).

    Raises:
        RunLocked: another run holds the lock (no run is created).
        DuplicateNight: ``night_key`` was already run.
        PreflightFailed, TrainingFailed, EvaluationFailed, PromotionRefused:
            the run was recorded as ``failed`` with this message.
        Interrupted: shutdown was requested; the run is ``interrupted``.
    """
    state_dir = cfg.paths.state_dir
    with locked_registry(state_dir) as (lock, registry):
        recover_state(cfg, registry)
        ensure_reserve(state_dir)
        waiting = [r.id for r in registry.runs(limit=200) if r.status == RunStatus.AWAITING_APPROVAL.value]
        if waiting:
            log.warning("approval_pending", run_ids=waiting, hint="nightshift approve ID / nightshift reject ID")
        run = registry.create_run(
            trigger=trigger,
            config_snapshot=cfg.to_dict(),
            config_path=str(cfg.source) if cfg.source else None,
            profile=cfg.profile,
            night_key=night_key,
            pid=os.getpid(),
        )
        lock.set_run_id(run.id)
        return _Night(cfg, registry, run.id, progress, force=force).run()


class _Night:
    """The stages of one run (state shared between stages lives here)."""

    def __init__(
        self, cfg: Config, registry: Registry, run_id: int, progress: Progress | None, *, force: bool = False
    ) -> None:
        self.cfg = cfg
        self.force = force
        self.registry = registry
        self.run_id = run_id
        self.progress = progress
        self.run_dir = cfg.paths.state_dir / RUNS_DIR / f"{run_id:04d}"  # created by run()
        self.events = self.run_dir / "events.jsonl"
        self._last_progress_write = 0.0
        self.serving = ServingSession(cfg)

    # ------------------------------------------------------------------ driver

    def run(self) -> RunOutcome:
        status = RunStatus.FAILED
        reasons: list[str] = []
        eval_worker: StartedWorker | None = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.registry.update_run(self.run_id, run_dir=str(self.run_dir), log_path=str(self.run_dir / "train.log"))
            self._stage(RunStatus.PREFLIGHT, self.preflight)
            skip = None if self.force else self.unchanged()
            if skip is not None:
                self.registry.transition(self.run_id, RunStatus.SKIPPED, reason=skip)
                log.info("run_skipped", run_id=self.run_id, reason=skip)
                return RunOutcome(self.run_id, RunStatus.SKIPPED, [skip], self._report_and_notify())
            # The eval child imports mlx-lm while the challenger trains (it loads no model yet).
            eval_worker = start_eval_worker(self.run_dir)
            with paused_server(self.cfg, self.run_id):  # serving.pause_during_training
                train_result = self._stage(RunStatus.TRAINING, self.train)
                evals = self._stage(RunStatus.EVALUATING, lambda: self.evaluate(train_result, eval_worker))
            decision = self._stage(RunStatus.DECIDING, lambda: self.decide(evals))
            reasons = decision.reasons
            status = self.finish(decision, evals, train_result)
        except Interrupted as exc:
            self._record_end(RunStatus.INTERRUPTED, str(exc))
            status = RunStatus.INTERRUPTED
            self._report_and_notify()
            raise
        except NightshiftError as exc:
            self._record_end(RunStatus.FAILED, self._failure_reason(exc, str(exc)))
            self._report_and_notify()
            raise
        except OSError as exc:  # a file the night needs (run dir, workspace, release): say which and what to do
            reason = self._failure_reason(exc, describe_os_error(exc))
            self._record_end(RunStatus.FAILED, reason)
            self._report_and_notify()
            if is_disk_full(exc):
                raise StateDirError(reason) from None
            raise FileAccessError(reason) from exc
        except Exception as exc:
            reason = self._failure_reason(exc, f"internal error: {type(exc).__name__}: {exc}")
            self._record_end(RunStatus.FAILED, reason)
            self._report_and_notify()
            if is_disk_full(exc):
                raise StateDirError(reason) from None
            raise
        finally:
            if eval_worker is not None:
                eval_worker.stop(self.cfg.schedule.stop_grace_s)
            self.serving.close()  # a managed server started for this night's hand-off
        report = self._report_and_notify()
        self._collect_garbage()
        log.info("run_finished", run_id=self.run_id, status=status.value)
        return RunOutcome(run_id=self.run_id, status=status, reasons=reasons, report_path=report)

    def _failure_reason(self, exc: BaseException, text: str) -> str:
        """``text``, led by "disk full (N free on ...)" when the cause was a full disk."""
        if not is_disk_full(exc):
            return text
        hint = disk_full_hint(self.cfg.paths.state_dir, "no space left on device") or "disk full"
        return text if text.startswith("disk full") else f"{hint}. {text}"

    def _record_end(self, status: RunStatus, reason: str) -> None:
        """Record how the run ended, even on a full disk: the state dir's reserve is
        freed and the write retried once; the reason is logged whatever happens."""
        try:
            self.registry.transition(self.run_id, status, reason=reason)
            return
        except (RegistryError, OSError) as exc:
            if not is_disk_full(exc):
                log.error("run_end_not_recorded", run_id=self.run_id, status=status.value, reason=reason, error=str(exc))
                return
        release_reserve(self.cfg.paths.state_dir)
        try:
            self.registry.transition(self.run_id, status, reason=reason)
            log.warning("disk_full_reserve_used", run_id=self.run_id)
        except (RegistryError, OSError) as exc:
            log.error("run_end_not_recorded", run_id=self.run_id, status=status.value, reason=reason, error=str(exc))

    def _check_stop(self, before: str) -> None:
        if shutdown.stop_requested():
            raise Interrupted(f"{shutdown.stop_reason() or 'shutdown requested'}; stopped before {before}")

    def _stage(self, status: RunStatus, fn: Callable[[], Any]) -> Any:
        fault_point(f"stage:{status.value}")
        self._check_stop(status.value)
        self.registry.transition(self.run_id, status)
        self._set_progress({"stage": status.value})
        if self.progress is not None:
            self.progress.stage(status.value, self.run_id)
        return timed_stage(self.registry, self.run_id, status.value, fn)

    def _timed(self, name: str, fn: Callable[[], T]) -> T:
        """A step after the decision (promoting, handoff, rollback): a timed stage row, no state change."""
        self._set_progress({"stage": name})
        if self.progress is not None:
            self.progress.stage(name, self.run_id)
        return timed_stage(self.registry, self.run_id, name, fn)

    def _collect_garbage(self) -> None:
        try:
            plan = plan_gc(self.cfg, self.registry)
            if plan.releases or plan.checkpoints:
                apply_gc(plan)
                log.info("gc", releases=[str(p) for p in plan.releases], checkpoints=len(plan.checkpoints))
        except (OSError, NightshiftError) as exc:  # retention must not change the night's outcome
            log.error("gc_failed", run_id=self.run_id, error=f"{type(exc).__name__}: {exc}")

    def _set_progress(self, payload: dict[str, Any], *, throttle_s: float = 0.0) -> None:
        now = time.monotonic()
        if throttle_s and now - self._last_progress_write < throttle_s:
            return
        self._last_progress_write = now
        try:
            self.registry.update_run(self.run_id, progress=json.dumps(payload))
        except RegistryError as exc:  # live progress is best effort; a locked registry must not end the night
            if is_disk_full(exc):
                raise
            log.warning("progress_not_recorded", run_id=self.run_id, error=str(exc))

    # ------------------------------------------------------------------ stages

    def preflight(self) -> None:
        report = run_preflight(self.cfg, holding_lock=True)
        self.registry.record_preflight(self.run_id, [c for c in report.to_dict()["checks"]])
        if not report.ok:
            lines = [f"{c.name}: {c.message}" for c in report.failures]
            raise PreflightFailed(
                f"Preflight failed ({len(lines)} check(s)); training was not started:\n  - " + "\n  - ".join(lines)
            )
        sha, count = dataset_fingerprint(self.cfg.paths.dataset)
        self.registry.update_run(self.run_id, dataset_sha256=sha, dataset_examples=count)
        earlier = [(r.id, r.run_dir) for r in self.registry.runs(limit=LOOKBACK_RUNS) if r.id < self.run_id]
        record_composition(self.cfg.paths.dataset, self.run_dir, earlier)  # the report's data composition

    def unchanged(self) -> str | None:
        """The reason to skip tonight (:func:`daemon.inputs.skip_reason`): nothing changed since the
        champion's run, or since the newest decided run; else None."""
        from daemon.worker.common import versions

        installed = versions()
        base_sha = self._base_sha256()
        tonight = TrainingInputs(
            base_sha256=base_sha,
            dataset_sha256=self.registry.get_run(self.run_id).dataset_sha256,
            training=training_section(self.cfg.to_dict()),
            versions={"mlx": installed.get("mlx"), "mlx-lm": installed.get("mlx-lm")},
        )
        champ = self.registry.champion()
        model = champ[1] if champ else None
        champion_run = None
        if model is not None and model.run_id is not None:  # else the base is the champion
            champion_run = (model.run_id, self._trained_inputs(self.registry.get_run(model.run_id), model))
        decided = self._newest_decided_run()
        champion_eval = None
        if decided is not None:  # how tonight's champion would be scored (picked as evaluate() does)
            fp_versions = {name: installed.get(name) or "" for name in ("mlx", "mlx-lm")}
            scored = model if model is not None and model.base_sha256 == base_sha else self._base_model(fp_versions)
            suite = load_suite(self.cfg.paths.eval_suite)
            champion_eval = eval_fingerprint(self.cfg, suite, self._ref("champion", scored), fp_versions)
        inputs = NightInputs(tonight, champion_eval, dict(self.cfg.to_dict().get("promotion") or {}))
        return skip_reason(inputs, champion_run, decided)

    def _trained_inputs(self, run: Run, model: Model) -> TrainingInputs:
        """The recorded training inputs of ``run``, which trained ``model``."""
        return TrainingInputs(
            base_sha256=model.base_sha256,
            dataset_sha256=run.dataset_sha256,
            training=training_section(json.loads(run.config_snapshot or "{}")),
            versions={"mlx": model.mlx_version, "mlx-lm": model.mlx_lm_version},
        )

    def _newest_decided_run(self) -> RecordedRun | None:
        """The newest run whose gate decision stands, with its recorded inputs, or None."""
        run = next((r for r in self.registry.runs(limit=200) if r.status in DECIDED_STATUSES), None)
        if run is None or run.challenger_model_id is None:
            return None
        challenger = self.registry.get_model(run.challenger_model_id)
        champion_eval = next((e.fingerprint for e in self.registry.eval_sets(run.id) if e.role == "champion"), None)
        snapshot = json.loads(run.config_snapshot or "{}")
        gate = dict(snapshot.get("promotion") or {})
        return RecordedRun(run.id, run.status, NightInputs(self._trained_inputs(run, challenger), champion_eval, gate))

    def train(self) -> Any:
        def on_progress(p: TrainProgress) -> None:
            if self.progress is not None:
                self.progress.train(p)
            self._set_progress(
                {
                    "stage": "training",
                    "iteration": p.iteration,
                    "total": p.total,
                    "train_loss": p.train_loss,
                    "val_loss": p.val_loss,
                    "tokens_per_s": p.tokens_per_s,
                    "trained_tokens": p.trained_tokens,
                    "eta_s": p.eta_s,
                    "stop_at": stop_at.isoformat(timespec="seconds") if stop_at else None,
                },
                throttle_s=2.0,
            )

        pending: list[dict[str, Any]] = []

        def on_metrics(rows: list[dict[str, Any]]) -> None:
            # A registry locked by another process delays metrics (kept and retried), it does not
            # end the night; a full disk does (its reason is recorded).
            pending.extend(rows)
            try:
                self.registry.add_train_metrics(self.run_id, pending)
                pending.clear()
            except RegistryError as exc:
                if is_disk_full(exc):
                    raise
                log.warning("metrics_delayed", run_id=self.run_id, rows=len(pending), error=str(exc))

        started = self.registry.get_run(self.run_id).started_at
        plan = plan_training(self.cfg, self.registry, self.run_id, clock.now(), started=started)
        stop_at = plan.stop_at_datetime
        resume_line = plan.resume_line()  # what training continues, or why it starts over
        self.registry.update_run(
            self.run_id, train_deadline=plan.deadline, train_stop_at=stop_at, resume_note=resume_line or None
        )
        if plan.deadline is not None:  # which deadline applies (a clock time may be tomorrow's), in the log and on screen
            said = plan.describe(clock.now())
            log.info("training_deadline", run_id=self.run_id, plan=said, reserve_s=round(plan.reserve_s))
            if self.progress is not None:
                self.progress.stage(said, self.run_id)
        if resume_line:
            log.info("resume", run_id=self.run_id, resumed=plan.resume_from is not None, detail=resume_line)
            if self.progress is not None:
                self.progress.stage(resume_line, self.run_id)
        result = train_challenger(
            self.cfg,
            self.run_dir,
            on_metrics=on_metrics,
            on_progress=on_progress,
            on_start=lambda pid: self.registry.update_run(self.run_id, log_path=str(self.run_dir / "train.log")),
            plan=plan,
        )
        self.registry.update_run(
            self.run_id,
            chosen_iteration=result.chosen_iteration,
            chosen_val_loss=result.chosen_val_loss,
            train_stop_reason=result.stop_reason,
            train_stop_detail=result.stop_detail or None,
            train_iterations_done=result.iterations_done,
            train_iterations_total=self.cfg.training.iters,
            train_world_size=result.world_size,
            train_backend=self.cfg.training.distributed.backend if result.world_size > 1 else None,
            resumed_from_run_id=result.resumed_from_run_id,
            resumed_iterations=result.resumed_from_iteration or None,
        )
        log.info("trained", run_id=self.run_id, summary=result.summary())
        return result

    def _base_sha256(self) -> str:
        return dir_sha256(self.cfg.paths.base_model, self.cfg.paths.state_dir, MODEL_FILE_PATTERNS)

    def _base_model(self, versions: dict[str, str]) -> Model:
        return self.registry.base_model(
            str(self.cfg.paths.base_model),
            self._base_sha256(),
            mlx_version=versions.get("mlx"),
            mlx_lm_version=versions.get("mlx-lm"),
        )

    def evaluate(self, train_result: Any, worker: StartedWorker | None = None) -> dict[str, ModelEval]:
        versions = {"mlx": train_result.mlx_version or "", "mlx-lm": train_result.mlx_lm_version or ""}
        suite = load_suite(self.cfg.paths.eval_suite)
        base = self._base_model(versions)
        adapter_sha = dir_sha256(train_result.adapter_dir, None, ("adapters.safetensors", "adapter_config.json"))
        challenger = self.registry.add_adapter_model(
            base=base,
            adapter_path=str(train_result.adapter_dir),
            adapter_sha256=adapter_sha,
            run_id=self.run_id,
            mlx_version=train_result.mlx_version,
            mlx_lm_version=train_result.mlx_lm_version,
        )
        # The champion's files are hashed before its cached scores are reused: a
        # corrupted release is replaced by the newest intact one (recorded, logged).
        for action in reconcile(self.cfg.paths.state_dir, self.registry, full=True):
            log.warning("champion_check", action=action.action, detail=action.detail)
        champ = self.registry.champion()
        champion_model = champ[1] if champ else base
        if champion_model.kind == ModelKind.ADAPTER.value and champion_model.base_sha256 != base.base_sha256:
            # The base changed under the champion: it cannot be evaluated on this base.
            champion_model = base
        self.registry.update_run(self.run_id, champion_model_id=champion_model.id, challenger_model_id=challenger.id)

        refs = [self._ref("challenger", challenger)]
        refs.append(self._ref("champion", champion_model))
        if champion_model.id != base.id:
            refs.append(self._ref("base", base))
        to_score, reused = [], {}
        for ref in refs:
            fp = eval_fingerprint(self.cfg, suite, ref, versions)
            cached = self.registry.find_cached_eval_set(ref.model_id, fp) if ref.role != "challenger" else None
            if cached is not None:
                rows = self.registry.eval_results(cached.id)
                reused[ref.role] = (cached, fp, rows)
            else:
                to_score.append(ref)

        order = [ref.role for ref in to_score]
        stage_started = time.monotonic()

        def on_progress(p: EvalProgress) -> None:
            if self.progress is not None:
                self.progress.evaluate(p)
            # Models are scored one after another on the same suite: items done so far over all
            # models give the pace, and the items left (this model's and the next ones') the ETA.
            index = order.index(p.model) if p.model in order else 0
            done_all = index * p.total + p.done
            left = (len(order) - index) * p.total - p.done
            eta = (time.monotonic() - stage_started) / done_all * left if done_all else None
            self._set_progress(
                {
                    "stage": "evaluating",
                    "model": p.model,
                    "model_index": index + 1,
                    "models": len(order),
                    "done": p.done,
                    "total": p.total,
                    "eta_s": eta,
                },
                throttle_s=2.0,
            )

        fresh = run_evaluation(
            self.cfg, suite, to_score, self.run_dir, versions, on_progress=on_progress, worker=worker
        )
        out: dict[str, ModelEval] = {}
        for role, ev in fresh.items():
            self.registry.add_eval_set(
                run_id=self.run_id,
                model_id=ev.ref.model_id,
                role=role,
                fingerprint=ev.fingerprint,
                results=ev.rows,
                held_out_loss=ev.held_out_loss,
                duration_s=ev.duration_s,
            )
            out[role] = ev
        for role, (cached, fp, rows) in reused.items():
            ref = next(r for r in refs if r.role == role)
            row_dicts = [{k: getattr(r, k) for k in RESULT_FIELDS} for r in rows]
            self.registry.add_eval_set(
                run_id=self.run_id,
                model_id=ref.model_id,
                role=role,
                fingerprint=fp,
                results=row_dicts,
                held_out_loss=cached.held_out_loss,
                duration_s=0.0,
                reused_from=cached.id,
            )
            out[role] = ModelEval(
                ref=ref,
                fingerprint=fp,
                rows=row_dicts,
                scores=scores_from_rows(suite, role, rows),
                held_out_loss=cached.held_out_loss,
                duration_s=0.0,
            )
        if "base" not in out:
            out["base"] = out["champion"]
        return out

    def _ref(self, role: str, model: Model) -> ModelRef:
        identity = model.base_sha256 + (f"+{model.adapter_sha256}" if model.adapter_sha256 else "")
        adapter = Path(model.release_path) if model.release_path and model.kind == ModelKind.ADAPTER.value else (
            Path(model.adapter_path) if model.adapter_path else None
        )
        return ModelRef(role=role, model_id=model.id, adapter_path=adapter, identity=identity)

    def decide(self, evals: dict[str, ModelEval]) -> Decision:
        decision = decide_promotion(
            evals["champion"].scores, evals["challenger"].scores, GatePolicy.from_config(self.cfg.promotion)
        )
        self.registry.update_run(self.run_id, decision=json.dumps(decision.to_dict(), default=str))
        return decision

    def finish(self, decision: Decision, evals: dict[str, ModelEval], train_result: Any) -> RunStatus:
        if self.cfg.promotion.policy == "manual":
            self.registry.transition(self.run_id, RunStatus.AWAITING_APPROVAL)
            return RunStatus.AWAITING_APPROVAL
        if not decision.promote:
            self.registry.transition(self.run_id, RunStatus.REJECTED)
            return RunStatus.REJECTED
        self._check_stop("promoting")
        status, reason = promote_and_hand_off(
            self.cfg, self.registry, self.run_id, decided_by="auto", reason=decision.summary,
            session=self.serving, record_stage=self._timed,
        )
        if reason:
            decision.reasons.append(reason)
        return status

    def _report_and_notify(self) -> Path | None:
        try:
            path: Path | None = write_report(self.cfg, self.registry, self.run_id)
            fault_point("report:written")
        except Exception as exc:  # a report problem must not mask the run's outcome
            log.error("report_failed", run_id=self.run_id, error=f"{type(exc).__name__}: {exc}")
            path = None
        notify_run(self.cfg, self.registry, self.run_id, path)  # never raises
        return path


def promote_run(
    cfg: Config, registry: Registry, run_id: int, *, decided_by: str, reason: str,
    run_status: RunStatus = RunStatus.PROMOTED,
) -> Path:
    """Make the run's challenger the champion: release, ``current`` swap, registry row.

    Used by the pipeline (``decided_by="auto"``) and by ``nightshift approve``,
    through :func:`promote_and_hand_off`; ``run_status`` is the run's state once
    the promotion row is committed (``handing_off`` there).

    Returns:
        The release directory.

    Raises:
        PromotionRefused: the run has no challenger adapter, or the release failed.
        RegistryError: the run is not in a promotable state.
    """
    run = registry.get_run(run_id)
    if run.challenger_model_id is None:
        raise PromotionRefused(f"Run {run_id} has no trained challenger to promote.")
    challenger = registry.get_model(run.challenger_model_id)
    assert challenger.adapter_path is not None
    manifest = {
        "run_id": run_id,
        "created_at": clock.now().isoformat(),
        "base_model": challenger.base_path,
        "base_sha256": challenger.base_sha256,
        "adapter_sha256": challenger.adapter_sha256,
        "mlx_version": challenger.mlx_version,
        "mlx_lm_version": challenger.mlx_lm_version,
        "fused": cfg.promotion.fuse,
        "decided_by": decided_by,
        "reason": reason,
    }
    release = build_release(
        cfg,
        run_id=run_id,
        adapter_dir=Path(challenger.adapter_path),
        manifest=manifest,
        work_dir=Path(run.run_dir or cfg.paths.state_dir),
        fuse_probes=(
            fuse_probes(cfg, recorded_replies(registry, challenger.id, run_id=run_id), seed=run_id)
            if cfg.promotion.fuse
            else None
        ),
    )
    promote_release(
        cfg.paths.state_dir,
        registry,
        release=release,
        to_model_id=challenger.id,
        run_id=run_id,
        reason=reason,
        decided_by=decided_by,
        run_status=run_status,
    )
    return release


def timed_stage(registry: Registry, run_id: int, name: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` as a recorded stage of ``run_id`` (a ``run_stages`` row with outcome and duration).

    The outcome is ``failed`` when ``fn`` raises, and also when it returns a result whose
    ``ok`` attribute is False (a hand-off reports its failure as a result, not an exception);
    that result's ``reason`` is recorded with the row and the ``stage`` log event.
    """
    stage_id = registry.start_stage(run_id, name)
    started = time.monotonic()
    outcome = "failed"
    reason: str | None = None
    try:
        result = fn()
        if getattr(result, "ok", True) is False:
            reason = getattr(result, "reason", None)
        else:
            outcome = "ok"
        return result
    except Interrupted:
        outcome = "interrupted"
        raise
    finally:
        duration = time.monotonic() - started
        registry.finish_stage(stage_id, duration_s=duration, outcome=outcome, reason=reason)
        log.info("stage", run_id=run_id, stage=name, duration_s=round(duration, 3), outcome=outcome, reason=reason)


def promote_and_hand_off(
    cfg: Config,
    registry: Registry,
    run_id: int,
    *,
    decided_by: str,
    reason: str,
    session: ServingSession,
    record_stage: Callable[[str, Callable[[], Any]], Any] | None = None,
) -> tuple[RunStatus, str | None]:
    """Promote the run's challenger, hand it to the server, verify; roll back when that fails.

    The run goes ``promoting`` (release built, champion changed) -> ``handing_off``
    (committed with the promotion row) -> ``promoted`` | ``rolled_back``; each
    step is also a timed stage row (``promoting``, ``handoff``, ``rollback``).

    Returns:
        ``(promoted, None)``, or ``(rolled_back, one-line reason)``.

    Raises:
        PromotionRefused, RegistryError: the promotion itself failed (nothing changed;
            a run awaiting approval is awaiting it again).
    """
    stage = record_stage or (lambda name, fn: timed_stage(registry, run_id, name, fn))
    run = registry.get_run(run_id)
    previous = champion_target(registry, base_model_id=run.champion_model_id)
    since = time.time()
    registry.transition(run_id, RunStatus.PROMOTING)
    try:
        release = stage(
            "promoting",
            lambda: promote_run(
                cfg, registry, run_id, decided_by=decided_by, reason=reason, run_status=RunStatus.HANDING_OFF
            ),
        )
    except NightshiftError:
        if run.status == RunStatus.AWAITING_APPROVAL.value:  # the operator may approve again
            registry.transition(run_id, RunStatus.AWAITING_APPROVAL)
        raise
    assert run.challenger_model_id is not None and previous is not None
    new = Target(
        release=str(Path(release).resolve()),
        model_id=run.challenger_model_id,
        run_id=run_id,
        label=Path(release).name,
        replies=recorded_replies(registry, run.challenger_model_id, run_id=run_id),
    )
    previous = replace(previous, replies=recorded_replies(registry, previous.model_id, run_id=run_id))
    outcome = hand_off_or_roll_back(
        cfg, registry, session, new=new, previous=previous, since=since, run_id=run_id,
        kind="promotion", seed=run_id, record_stage=stage,
    )
    if outcome.kept:
        registry.transition(run_id, RunStatus.PROMOTED)
        return RunStatus.PROMOTED, None
    registry.transition(run_id, RunStatus.ROLLED_BACK, reason=outcome.reason)
    return RunStatus.ROLLED_BACK, outcome.reason


def finish_manual_decision(cfg: Config, run_id: int, *, approve: bool, decided_by: str | None) -> str:
    """Finish a run awaiting approval (``promotion.policy: manual``).

    Returns:
        ``promoted`` or ``rejected``.

    Raises:
        RegistryError: no such run, or it is not awaiting approval.
        RunLocked: a run is in progress.
    """
    import getpass

    who = decided_by or getpass.getuser()
    with locked_registry(cfg.paths.state_dir) as (lock, registry):
        recover_state(cfg, registry)
        lock.set_run_id(run_id)
        run = registry.get_run(run_id)
        if run.status != RunStatus.AWAITING_APPROVAL.value:
            raise RegistryError(f"Run {run_id} is {run.status}, not awaiting approval.")
        if approve:
            _refuse_stale_decision(registry, run)
        decision = json.loads(run.decision or "{}")
        gate = "gate recommended promotion" if decision.get("promote") else "gate recommended rejection"
        if approve:
            with serving_session(cfg) as session:
                result, _ = promote_and_hand_off(
                    cfg, registry, run_id, decided_by=who, reason=f"approved by {who} ({gate})", session=session
                )
            if result is RunStatus.PROMOTED:  # the run's reason names the operator, as a rejection's does
                registry.update_run(run_id, failure_reason=f"approved by {who} ({gate})")
        else:
            registry.transition(run_id, RunStatus.REJECTED, reason=f"rejected by {who} ({gate})")
            result = RunStatus.REJECTED
        notify_run(cfg, registry, run_id, write_report(cfg, registry, run_id))
        return result.value


def _adapter_id(model: Model | None) -> int | None:
    return model.id if model is not None and model.kind == ModelKind.ADAPTER.value else None


def _refuse_stale_decision(registry: Registry, run: Any) -> None:
    """Refuse to approve a run whose decision compared it with a champion that has since changed.

    Raises:
        PromotionRefused: the champion changed since the run was evaluated.
    """
    then = _adapter_id(registry.get_model(run.champion_model_id)) if run.champion_model_id else None
    champ = registry.champion()
    now = _adapter_id(champ[1]) if champ else None
    if then == now:
        return

    def name(model_id: int | None) -> str:
        if model_id is None:
            return "the base model"
        model = registry.get_model(model_id)
        return f"run {model.run_id}'s adapter" if model.run_id else f"model {model_id}"

    raise PromotionRefused(
        f"Run {run.id} was evaluated against {name(then)}, but the champion is now {name(now)}: "
        f"its decision is stale. Reject it (nightshift reject {run.id}) and run "
        "`nightshift run-now` to train and evaluate a challenger against the current champion."
    )


def record_config_failure(config_path: Path, profile: str | None) -> int | None:
    """Record a run that failed because its config is invalid, when possible.

    The state dir is read leniently from the raw YAML (``paths.state_dir``,
    default ``state`` next to the file). Nothing is recorded when the file is
    missing or not YAML (there is no state dir to record into).

    Returns:
        The failed run's id, or None.
    """
    from daemon.config import load_config
    from daemon.errors import ConfigError, RunLocked
    from daemon.yamlfile import load_yaml_file

    try:
        raw = load_yaml_file(Path(config_path), what="Config file", error=ConfigError)
        state = (raw.get("paths") or {}).get("state_dir", "state") if isinstance(raw, dict) else None
    except (ConfigError, AttributeError):
        return None
    if not isinstance(state, str):
        return None
    state_dir = Path(state).expanduser()
    if not state_dir.is_absolute():
        state_dir = Path(config_path).resolve().parent / state_dir
    try:
        load_config(config_path, profile)
        return None  # valid after all
    except ConfigError as exc:
        reason = str(exc)
    try:
        with locked_registry(state_dir) as (lock, registry):
            run = registry.create_run(
                trigger=Trigger.MANUAL,
                config_snapshot={"invalid_config": str(config_path)},
                config_path=str(config_path),
                profile=profile,
                pid=os.getpid(),
            )
            lock.set_run_id(run.id)
            registry.transition(run.id, RunStatus.FAILED, reason=reason)
            return run.id
    except (RunLocked, OSError, NightshiftError):
        return None
