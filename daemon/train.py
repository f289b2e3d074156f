"""The train stage: a LoRA adapter on the base model, in a child process.

Never trains on the previous champion's weights: stacking adapters on a
fine-tune regressed 5.3% across categories for our users. The child streams
JSON lines of metrics, which we copy into the registry as they arrive.
Success requires exit 0 *and* the adapter files *and* the metrics.

Before the child starts, :func:`plan_training` decides when training must
stop (``training.deadline`` minus the time the last nights needed after
training) and whether to resume a run of tonight that was interrupted during
training (same job, a complete checkpoint). The adapter the child leaves is
the best checkpoint (lowest validation loss), not the last iteration's.
With ``training.distributed`` the child runs under ``mlx.launch``
(:mod:`daemon.distributed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.child import JsonLinesTail, read_result_file, run_worker
from daemon.clock import duration_text
from daemon.config import Config
from daemon.deadline import deadline_at, parse_deadline, post_training_reserve_s
from daemon.errors import TrainingFailed
from daemon.worker.common import CHECKPOINTS_DIR, EXIT_NONFINITE, LATEST_CHECKPOINT

if TYPE_CHECKING:
    from daemon.registry import Registry

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainProgress:
    """Live view of a training child for progress bars and ``status``."""

    iteration: int = 0
    total: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_s: float | None = None
    """Processed tokens (prompts and answers) per second over the last report step."""
    trained_tokens: int | None = None
    """Answer tokens trained on so far (the loss's unmasked tokens)."""
    started_monotonic: float = field(default_factory=time.monotonic)
    start_iteration: int = 0
    """Where this child began (a resumed run starts at its checkpoint's iteration)."""
    stop_at_unix: float | None = None
    """When training must end for ``training.deadline`` (Unix seconds), or None."""

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from the iterations done so far by this child, and
        never past the deadline's stop time (training stops there, whatever is left)."""
        done = self.iteration - self.start_iteration
        if done <= 0 or self.total <= 0:
            return None
        elapsed = time.monotonic() - self.started_monotonic
        eta = elapsed / done * (self.total - self.iteration)
        if self.stop_at_unix is not None:
            eta = min(eta, max(self.stop_at_unix - time.time(), 0.0))
        return eta


@dataclass(frozen=True)
class TrainResult:
    """A finished training: where the adapter is, its losses and how training ended.

    Attributes:
        chosen_iteration: the iteration whose adapter is the challenger (lowest validation loss).
        chosen_val_loss: its validation loss (nats/token).
        iterations_done: optimizer updates applied (below ``training.iters`` when stopped early).
        stop_reason: ``completed``, ``deadline`` or ``early_stopping``.
        stop_detail: one sentence on an early stop, else empty.
        resumed_from_iteration: the checkpoint this run continued (0: started fresh).
        resumed_from_run_id: the interrupted run it continued, or None.
        world_size: training processes (1 unless ``training.distributed``).
    """

    adapter_dir: Path
    final_train_loss: float | None
    final_val_loss: float | None
    duration_s: float
    peak_memory_bytes: int | None
    mlx_version: str | None
    mlx_lm_version: str | None
    log_path: Path
    chosen_iteration: int | None = None
    chosen_val_loss: float | None = None
    iterations_done: int | None = None
    stop_reason: str = "completed"
    stop_detail: str = ""
    resumed_from_iteration: int = 0
    resumed_from_run_id: int | None = None
    world_size: int = 1

    def summary(self) -> str:
        """One line for logs and the report: chosen iteration, early stop, resume."""
        parts = [f"challenger: best checkpoint at iteration {self.chosen_iteration} of {self.iterations_done}"]
        if self.chosen_val_loss is not None:
            parts[0] += f" (validation loss {self.chosen_val_loss:.4f})"
        if self.stop_reason != "completed":
            parts.append(f"stopped early ({self.stop_reason.replace('_', ' ')}): {self.stop_detail}")
        if self.resumed_from_run_id is not None:
            parts.append(f"resumed {self.resumed_from_iteration} iterations from run {self.resumed_from_run_id}")
        return "; ".join(parts)


@dataclass(frozen=True)
class TrainPlan:
    """What the train stage decided before starting the child.

    Attributes:
        deadline: when the night must be over (``training.deadline``), or None.
        reserve_s: seconds kept after training for evaluation and the rest (seconds).
        stop_at_unix: when training must end (Unix seconds), or None.
        resume_from: the checkpoint directory to continue, or None.
        resumed_from_run_id: the interrupted run that wrote it.
        resume_iteration: the iteration it holds.
        not_resumed: why an existing checkpoint is not continued (empty: none, or resumed).
    """

    deadline: datetime | None = None
    reserve_s: float = 0.0
    stop_at_unix: float | None = None
    resume_from: Path | None = None
    resumed_from_run_id: int | None = None
    resume_iteration: int = 0
    not_resumed: str = ""

    def resume_line(self) -> str:
        """One line for the operator on resuming: what is continued, or why an existing
        checkpoint is not ("" when there is nothing to say)."""
        if self.resume_from is not None:
            return f"resuming run {self.resumed_from_run_id}'s checkpoint at iteration {self.resume_iteration}"
        if self.not_resumed:
            return f"training starts at iteration 0: {self.not_resumed}"
        return ""

    @property
    def stop_at_datetime(self) -> datetime | None:
        """:attr:`stop_at_unix` as an aware UTC datetime, or None."""
        return None if self.stop_at_unix is None else datetime.fromtimestamp(self.stop_at_unix, UTC)

    def describe(self, now: datetime) -> str:
        """The deadline for people (local time), or "" without one:
        ``deadline 06:30 tomorrow, in 20h53m: training stops by ~05:40``."""
        if self.deadline is None:
            return ""
        text = f"deadline {deadline_text(self.deadline, now)}"
        stop = self.stop_at_datetime
        if stop is not None:
            text += f": training stops by ~{stop.astimezone():%H:%M} (keeping {duration_text(self.reserve_s)} for evaluation and the rest)"
        return text


def deadline_text(deadline: datetime, now: datetime) -> str:
    """``06:30 tomorrow, in 20h53m`` (local time; ``today``, ``tomorrow`` or the date)."""
    local, today = deadline.astimezone(), now.astimezone().date()
    day = {today: "today", today + timedelta(days=1): "tomorrow"}.get(local.date(), f"{local:%Y-%m-%d}")
    return f"{local:%H:%M} {day}, in {duration_text((deadline - now).total_seconds())}"


#: Request keys that define the training job (a checkpoint resumes only the same job).
_JOB_KEYS = (
    "base_model", "train_file", "valid_file", "lora_parameters", "num_layers", "iters", "batch_size",
    "grad_accumulation", "learning_rate", "lr_schedule", "warmup_steps", "min_learning_rate",
    "max_seq_len_tokens", "seed", "mask_prompt", "optimizer", "weight_decay", "max_grad_norm",
)

RESUME_WINDOW_S = 18 * 3600.0
"""A checkpoint older than this is another night's: it is not resumed (seconds)."""


def job_fingerprint(request: dict[str, Any]) -> str:
    """SHA-256 of the training job: the request's :data:`_JOB_KEYS`, the dataset files'
    contents and the number of processes (a resumed run must continue the same job)."""
    from daemon.fingerprint import file_sha256

    job = {k: request.get(k) for k in _JOB_KEYS}
    job["data"] = [file_sha256(Path(request[k])) for k in ("train_file", "valid_file") if Path(request[k]).is_file()]
    job["world"] = request.get("world_size", 1)
    return hashlib.sha256(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()


def build_request(cfg: Config, run_dir: Path, plan: TrainPlan | None = None) -> dict[str, Any]:
    """The JSON request for ``daemon.worker.train`` (mlx-lm's names, resolved paths)."""
    from daemon.distributed import world_size

    plan = plan or TrainPlan()
    t = cfg.training
    request = {
        "base_model": str(cfg.paths.base_model),
        "train_file": str(cfg.paths.dataset / "train.jsonl"),
        "valid_file": str(cfg.paths.dataset / "valid.jsonl"),
        "adapter_dir": str(run_dir / "adapter"),
        "metrics_file": str(run_dir / METRICS_FILE),
        "result_file": str(run_dir / "train_result.json"),
        "lora_parameters": {
            "rank": t.lora.rank,
            "scale": t.lora.effective_scale,
            "dropout": t.lora.dropout,
            "keys": t.lora.keys,
        },
        "num_layers": t.lora.layers,
        "iters": t.iters,
        "batch_size": t.batch_size,
        "grad_accumulation": t.grad_accumulation,
        "learning_rate": t.learning_rate,
        "lr_schedule": t.lr_schedule,
        "warmup_steps": t.warmup_steps,
        "min_learning_rate": t.min_learning_rate,
        "max_seq_len_tokens": t.max_seq_len_tokens,
        "grad_checkpoint": t.grad_checkpoint,
        "seed": t.seed,
        "mask_prompt": t.mask_prompt,
        "optimizer": t.optimizer,
        "weight_decay": t.weight_decay,
        "steps_per_report": t.steps_per_report,
        "steps_per_eval": t.steps_per_eval,
        "val_batches": t.val_batches,
        "save_every": t.save_every,
        "checkpoint_dir": str(run_dir / CHECKPOINTS_DIR),
        "max_grad_norm": t.max_grad_norm,
        "loss_spike_factor": t.loss_spike_factor,
        "loss_spike_reports": t.loss_spike_reports,
        "early_stopping_patience": t.early_stopping_patience,
        "stop_at_unix": plan.stop_at_unix,
        "resume_from": str(plan.resume_from) if plan.resume_from else None,
        "world_size": world_size(cfg),
    }
    request["fingerprint"] = job_fingerprint(request)
    return request


def plan_training(
    cfg: Config, registry: Registry, run_id: int, now: datetime, started: datetime | None = None
) -> TrainPlan:
    """Decide tonight's stop time and whether to resume an interrupted run.

    The deadline is placed from the run's start (``started``): a duration counts
    from it, preflight included, and a clock time is the first one after it (an
    operator's "deadline: 2h" means two hours for the whole night).

    Args:
        registry: the last nights' stage durations and runs.
        run_id: this run (it is not a candidate to resume).
        now: aware current time (the deadline's clock time is read in its zone).
        started: aware time the run started; None: ``now``.

    Raises:
        TrainingFailed: the deadline leaves no time to train.
    """
    t = cfg.training
    plan = plan_deadline(cfg, recent_post_training_s(registry, run_id), now, started) if t.deadline else TrainPlan()
    if t.resume:
        found = find_resume_point(cfg, registry, run_id, now)
        plan = dataclasses.replace(
            plan,
            resume_from=found.checkpoint,
            resumed_from_run_id=found.run_id if found.checkpoint else None,
            resume_iteration=found.iteration,
            not_resumed=found.reason,
        )
    return plan


def plan_deadline(cfg: Config, recent_s: list[float], now: datetime, started: datetime | None = None) -> TrainPlan:
    """The stop time for ``training.deadline`` (see :func:`plan_training`); no deadline: an empty plan.

    Args:
        recent_s: the last nights' post-training seconds (:func:`recent_post_training_s`).

    Raises:
        TrainingFailed: the deadline leaves no time to train.
    """
    t = cfg.training
    if t.deadline is None:
        return TrainPlan()
    zone = _schedule_zone(cfg)
    local_now = now.astimezone(zone)
    deadline = deadline_at(parse_deadline(t.deadline), (started or now).astimezone(zone))
    left_s = (deadline - local_now).total_seconds()
    reserve = post_training_reserve_s(recent_s, left_s)
    stop_at = now.timestamp() + left_s - reserve
    if stop_at <= now.timestamp():
        raise TrainingFailed(
            f"training.deadline {t.deadline} ({deadline:%Y-%m-%d %H:%M}) leaves no time to train: the last nights "
            f"needed about {reserve:.0f} s after training. Move the deadline or the schedule."
        )
    return TrainPlan(deadline=deadline, reserve_s=reserve, stop_at_unix=stop_at)


def _schedule_zone(cfg: Config) -> Any:
    if cfg.schedule.timezone:
        from zoneinfo import ZoneInfo

        return ZoneInfo(cfg.schedule.timezone)
    return datetime.now().astimezone().tzinfo


def recent_post_training_s(registry: Registry, run_id: int, nights: int = 3) -> list[float]:
    """Wall seconds of the stages after training (evaluating, deciding, ...) of the last
    ``nights`` runs that finished evaluating, newest first."""
    out: list[float] = []
    for run in registry.runs(limit=50):
        if run.id == run_id:
            continue
        stages = registry.stages(run.id)
        after = [st for st in stages if st.stage not in ("preflight", "training")]
        if any(st.stage == "evaluating" and st.outcome == "ok" for st in after):
            out.append(sum(st.duration_s or 0.0 for st in after))
        if len(out) >= nights:
            break
    return out


@dataclass(frozen=True)
class ResumeDecision:
    """Whether tonight continues an earlier run's checkpoint, and why not when one existed.

    Attributes:
        checkpoint: the checkpoint directory to continue, or None (start at iteration 0).
        run_id: the run that wrote it.
        iteration: the iteration it holds.
        reason: when starting over although a checkpoint exists, one sentence on why
            (another job, another night, a deterministic failure); else empty.
    """

    checkpoint: Path | None = None
    run_id: int | None = None
    iteration: int = 0
    reason: str = ""


_RESUME_LOOKBACK_RUNS = 20


def find_resume_point(cfg: Config, registry: Registry, run_id: int, now: datetime) -> ResumeDecision:
    """The newest checkpoint of tonight's job that this run can continue.

    Walks back from the run before this one, within :data:`RESUME_WINDOW_S`:

    * a run that never trained (a preflight failure, a skip) is passed over;
    * a run ``interrupted`` anywhere (a shutdown, a reboot, a daemon crash; in
      evaluation too, then the last checkpoint is a few iterations short of the
      end and those are trained again), or ``failed`` in training because the
      child was killed (a signal, the OOM killer, the timeout: it wrote no
      reason; under ``mlx.launch``, a rank killed by a signal), or ``failed`` in
      evaluation because the evaluation child was killed the same way, can be continued; one that wrote no checkpoint of its own
      (stopped before its first) is passed over, so a chain of interruptions
      keeps the newest checkpoint on disk;
    * a training that failed for a reason the child reported (a non-finite or
      spiking loss, no improvement, an exception) would fail again: not resumed;
    * any other run (it finished training and the night went on) ends the search.

    The checkpoint must be complete (``latest.json`` names an existing
    directory) and written for the same job (:func:`job_fingerprint`: model,
    data, hyperparameters, processes).

    Returns:
        The decision; ``reason`` says why an existing checkpoint is not used.
    """
    for prev in registry.runs(limit=_RESUME_LOOKBACK_RUNS):
        if prev.id >= run_id:
            continue
        started = prev.started_at or prev.created_at
        age_s = (now - started).total_seconds()
        stages = registry.stages(prev.id)
        training = [st for st in stages if st.stage == "training"]
        if not training or not prev.run_dir:
            if age_s > RESUME_WINDOW_S:
                break
            continue
        run_dir = Path(prev.run_dir)
        ckpt_dir = run_dir / CHECKPOINTS_DIR
        latest = read_result_file(ckpt_dir / LATEST_CHECKPOINT)
        has_ckpt = bool(latest.get("dir")) and (ckpt_dir / str(latest["dir"])).is_dir()
        where = f"run {prev.id}'s checkpoint at iteration {latest.get('iteration')}"
        if age_s > RESUME_WINDOW_S:
            hours = age_s / 3600
            return ResumeDecision(reason=f"{where} is from another night ({hours:.0f} h old)" if has_ckpt else "")
        failed_stage = next((st.stage for st in stages if st.outcome == "failed"), None)
        why_not = _not_resumable(prev.status, training[-1].outcome, run_dir, failed_stage)
        if why_not is not None:
            return ResumeDecision(reason=f"{where} is not resumed: run {prev.id} {why_not}" if has_ckpt and why_not else "")
        if not has_ckpt:
            continue  # stopped before its first checkpoint: an earlier run's may still be on disk
        if latest.get("fingerprint") != build_request(cfg, run_dir)["fingerprint"]:
            return ResumeDecision(
                reason=f"{where} was written for another training job (model, data, hyperparameters "
                "or processes changed since)"
            )
        return ResumeDecision(checkpoint=ckpt_dir / str(latest["dir"]), run_id=prev.id, iteration=int(latest["iteration"]))
    return ResumeDecision()


def _not_resumable(status: str, training_outcome: str | None, run_dir: Path, failed_stage: str | None = None) -> str | None:
    """None when a run that trained can be continued, else why not ("" when the night
    simply went on after training and there is nothing to say).

    An evaluation child killed without a word (no ``eval_result.json``: a signal,
    the OOM killer, the timeout) counts as an interruption, like a killed
    training child; an evaluation that reported its own failure does not."""
    from daemon.registry import RunStatus

    if status == RunStatus.INTERRUPTED.value:
        return None
    if status != RunStatus.FAILED.value:
        return ""
    if training_outcome == "ok":
        if failed_stage == "evaluating" and not (run_dir / "eval_result.json").exists():
            return None
        return "finished training and failed later (a new attempt trains afresh)"
    child = read_result_file(run_dir / "train_result.json")
    if child.get("kind") in (None, "killed"):
        return None  # killed without a word (a signal, the OOM killer, the timeout, a power loss), or a rank was
    return f"failed in training for a reason that would recur ({child.get('reason') or child['kind']})"


def metric_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """A registry ``train_metrics`` row from one child record, or None for other events."""
    if record.get("event") == "train":
        return {
            "iteration": int(record["iteration"]),
            "train_loss": _num(record.get("train_loss")),
            "learning_rate": _num(record.get("learning_rate")),
            "tokens_per_s": _num(record.get("tokens_per_s")),
            "trained_tokens": record.get("trained_tokens"),
            "peak_memory_bytes": record.get("peak_memory_bytes"),
        }
    if record.get("event") == "val":
        return {"iteration": int(record["iteration"]), "val_loss": _num(record.get("val_loss"))}
    return None


def _num(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)  # NaN is recorded as-is: it is the evidence


def train_challenger(
    cfg: Config,
    run_dir: Path,
    *,
    on_metrics: Callable[[list[dict[str, Any]]], None],
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    plan: TrainPlan | None = None,
) -> TrainResult:
    """Train a LoRA adapter on ``cfg.paths.base_model`` in a child process.

    Args:
        run_dir: the run's directory; the adapter goes to ``run_dir/adapter``.
        plan: the stop time and resume point (:func:`plan_training`); none: train from scratch.
        on_metrics: receives registry rows (see :func:`metric_row`) as they arrive.
        on_progress: receives the live progress after each poll.
        on_start: receives the child's pid.

    Returns:
        The adapter location and final losses.

    Raises:
        TrainingFailed: non-zero exit, signal, timeout, non-finite loss, or
            missing adapter/metrics; the message names the log file.
        Interrupted: shutdown was requested (the child was stopped).
    """
    from daemon.distributed import launch_request

    plan = plan or TrainPlan()
    run_dir.mkdir(parents=True, exist_ok=True)
    request = build_request(cfg, run_dir, plan)
    tail = JsonLinesTail(run_dir / METRICS_FILE)
    progress = TrainProgress(total=cfg.training.iters, stop_at_unix=plan.stop_at_unix)
    seen_train = False

    def poll() -> None:
        nonlocal seen_train
        records = tail.read_new()
        rows = []
        for rec in records:
            if rec.get("event") == "start":
                progress.started_monotonic = time.monotonic()
                progress.start_iteration = int(rec.get("resumed_from_iteration") or 0)
            row = metric_row(rec)
            if row is None:
                continue
            rows.append(row)
            if rec["event"] == "train":
                seen_train = True
                progress.iteration = row["iteration"]
                progress.train_loss = row["train_loss"]
                progress.tokens_per_s = row["tokens_per_s"]
                progress.trained_tokens = row["trained_tokens"]
            else:
                progress.val_loss = row["val_loss"]
        if rows:
            on_metrics(rows)
        if on_progress is not None:
            on_progress(progress)

    module, child_request = "daemon.worker.train", request
    if cfg.training.distributed.enabled:
        module, child_request = "daemon.worker.launch", launch_request(cfg, request)
    result = run_worker(
        module,
        child_request,
        work_dir=run_dir,
        name="train",
        timeout_s=cfg.training.timeout_s,
        stop_grace_s=cfg.schedule.stop_grace_s,
        on_poll=poll,
        on_start=on_start,
    )
    child_result = read_result_file(run_dir / "train_result.json")
    log = result.log_path
    if result.returncode == EXIT_NONFINITE or child_result.get("kind") == "nonfinite":
        raise TrainingFailed(
            f"Training aborted: {child_result.get('reason', 'non-finite loss')}. log: {log}"
        )
    if result.returncode != 0 or child_result.get("ok") is False:
        raise TrainingFailed(f"Training {result.describe_with_output(child_result.get('reason'))}")
    adapter_dir = Path(request["adapter_dir"])
    missing = [
        p.name
        for p in (adapter_dir / ADAPTER_FILE, adapter_dir / ADAPTER_CONFIG)
        if not p.is_file()
    ]
    if missing or not child_result.get("ok"):
        raise TrainingFailed(
            f"Training exited 0 but its outputs are incomplete (missing: {', '.join(missing) or 'result'}). "
            f"log: {log}"
        )
    if not seen_train:
        raise TrainingFailed(f"Training exited 0 but reported no metrics ({run_dir / METRICS_FILE}). log: {log}")
    return TrainResult(
        adapter_dir=adapter_dir,
        final_train_loss=progress.train_loss,
        final_val_loss=progress.val_loss,
        duration_s=result.duration_s,
        peak_memory_bytes=child_result.get("peak_memory_bytes"),
        mlx_version=child_result.get("mlx_version"),
        mlx_lm_version=child_result.get("mlx_lm_version"),
        log_path=log,
        chosen_iteration=child_result.get("best_iteration"),
        chosen_val_loss=child_result.get("best_val_loss"),
        iterations_done=child_result.get("iterations_done"),
        stop_reason=child_result.get("stop_reason", "completed"),
        stop_detail=child_result.get("stop_detail", ""),
        resumed_from_iteration=int(child_result.get("resumed_from_iteration") or 0),
        resumed_from_run_id=plan.resumed_from_run_id,
        world_size=int(child_result.get("world_size") or 1),
    )
