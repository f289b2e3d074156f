"""The train stage: a LoRA adapter on the base model, in a child process.

Never trains on the previous champion's weights: stacking adapters on a
fine-tune regressed 5.3% across categories for our users. The child streams
JSON lines of metrics, which we copy into the registry as they arrive.
Success requires exit 0 *and* the adapter files *and* the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.child import JsonLinesTail, read_result_file, run_worker
from daemon.config import Config
from daemon.errors import TrainingFailed
from daemon.worker.common import EXIT_NONFINITE

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

    @property
    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from the iterations done so far."""
        if self.iteration <= 0 or self.total <= 0:
            return None
        elapsed = time.monotonic() - self.started_monotonic
        return elapsed / self.iteration * (self.total - self.iteration)


@dataclass(frozen=True)
class TrainResult:
    """A finished training: where the adapter is and its last losses."""

    adapter_dir: Path
    final_train_loss: float | None
    final_val_loss: float | None
    duration_s: float
    peak_memory_bytes: int | None
    mlx_version: str | None
    mlx_lm_version: str | None
    log_path: Path


def build_request(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The JSON request for ``daemon.worker.train`` (mlx-lm's names, resolved paths)."""
    t = cfg.training
    return {
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
    }


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
) -> TrainResult:
    """Train a LoRA adapter on ``cfg.paths.base_model`` in a child process.

    Args:
        run_dir: the run's directory; the adapter goes to ``run_dir/adapter``.
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
    run_dir.mkdir(parents=True, exist_ok=True)
    request = build_request(cfg, run_dir)
    tail = JsonLinesTail(run_dir / METRICS_FILE)
    progress = TrainProgress(total=cfg.training.iters)
    seen_train = False

    def poll() -> None:
        nonlocal seen_train
        records = tail.read_new()
        rows = []
        for rec in records:
            if rec.get("event") == "start":
                progress.started_monotonic = time.monotonic()
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

    result = run_worker(
        "daemon.worker.train",
        request,
        work_dir=run_dir,
        name="train",
        timeout_s=cfg.training.timeout_s,
        stop_grace_s=cfg.schedule.stop_grace_s,
        on_poll=poll,
        on_start=on_start,
    )
    child_result = read_result_file(run_dir / "train_result.json")
    log = result.log_path
    if result.returncode == EXIT_NONFINITE:
        raise TrainingFailed(
            f"Training aborted: {child_result.get('reason', 'non-finite loss')}. log: {log}"
        )
    if result.returncode != 0:
        reason = child_result.get("reason")
        detail = f": {reason}" if reason else ""
        raise TrainingFailed(f"Training {result.describe()}{detail}. log: {log}")
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
    )
