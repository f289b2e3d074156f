"""Training child: ``python -m daemon.worker.train REQUEST.json`` (or the request inline as JSON).

Trains a LoRA adapter on the base model through mlx-lm's trainer API
(``mlx_lm.tuner.trainer.train``) with a ``TrainingCallback`` that appends JSON
lines to ``metrics_file``. ``mlx_lm.lora.run`` is not used: it replaces any
callback passed to it.

Around mlx-lm's loop the callback keeps:

* the **best checkpoint**: after every validation (iteration 0, every
  ``steps_per_eval``, and mlx-lm's last one, one iteration before the end) the
  trained adapter with the lowest validation loss is kept; that one becomes
  ``adapters.safetensors``. Iteration 0 (the untrained adapter) is only the bar:
  when no trained checkpoint beats it, training fails (exit 3) and nothing is
  evaluated. Every validation pass scores the same batches, so the losses
  compare. The final weights get a validation pass of their own only when more
  than one optimizer update has gone unscored (see
  :func:`daemon.worker.guards.needs_final_validation`);
* **guards**: NaN/inf losses and the loss-spike watchdog abort the run
  (exit 3, no adapter kept); gradients are clipped to ``max_grad_norm``;
* **stops**: early stopping (``early_stopping_patience`` evaluations without
  improvement) and the deadline (``stop_at_unix``) end training early; the
  best checkpoint so far is the result;
* **resume checkpoints** every ``save_every`` iterations (adapter, optimizer
  state, position; see :mod:`daemon.worker.checkpoint`), and ``resume_from``
  continues one.

Under ``mlx.launch`` (``MLX_RANK`` set) every rank trains its shard of each
batch (mlx-lm averages the gradients); rank 0 alone writes metrics,
checkpoints, the adapter and the result. Stop decisions are all-reduced so
every rank leaves the loop at the same iteration.

Exit codes: 0 success (adapter and result written), 2 bad request,
3 non-finite loss, loss spike or no trained checkpoint better than the untrained adapter
(training aborted; no adapter is kept), 4 orphaned, 1 other.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from daemon.deadline import should_stop
from daemon.errors import NonFiniteLoss, StopTraining
from daemon.worker.common import (
    BEST_ADAPTER,
    EXIT_ERROR,
    EXIT_NONFINITE,
    EXIT_OK,
    JsonLines,
    read_jsonl,
    read_request,
    versions,
    watch_parent,
    write_json,
)
from daemon.worker.guards import BestCheckpoint, LossSpikeWatch, needs_final_validation

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
RANK_ENV = "MLX_RANK"
"""Set by ``mlx.launch`` in every rank's environment."""
VAL_SEED_OFFSET = 1
"""Validation batches are drawn from their own stream, seeded ``seed + VAL_SEED_OFFSET``."""


class ProcessedTokens:
    """Counts the tokens of every training batch (prompt and answer, padding excluded).

    mlx-lm reports ``tokens_per_second`` over the loss's unmasked tokens only: with
    ``mask_prompt`` that is the answers (0-1 tok/s shown while ~80 were processed). Wrapping
    its ``iterate_batches`` (``mlx_lm.tuner.trainer.train`` takes it as an argument) counts
    what the model actually processed; validation batches (``loop=False``) are not counted.

    Under ``mlx.launch`` each rank sees only its shard of every batch: ``total`` is this
    rank's count, ``world_total`` every rank's as of the last :meth:`per_second`, summed by
    ``sum_ranks`` (an ``all_sum``; mlx-lm calls the report callback on every rank at the
    same iteration, so the collective lines up).
    """

    def __init__(
        self, inner: Callable[..., Iterator[Any]] | None = None, sum_ranks: Callable[[int], int] | None = None
    ) -> None:
        self.inner = inner
        self.sum_ranks = sum_ranks
        self.total = 0
        self.world_total = 0
        self._reported_total = 0
        self._reported_trained = 0

    def iterate(self, *args: Any, **kwargs: Any) -> Any:
        """``inner`` (default ``mlx_lm.tuner.trainer.iterate_batches``) with counting; yields its ``(batch, lengths)``."""
        from mlx_lm.tuner.trainer import iterate_batches

        counting = bool(kwargs.get("loop"))
        for batch, lengths in (self.inner or iterate_batches)(*args, **kwargs):
            if counting:
                self.total += int(lengths[:, 1].sum().item())
            yield batch, lengths

    def per_second(self, trained_tokens: int, answer_tokens_per_s: float) -> float:
        """Processed tokens per second since the last report.

        mlx-lm's report gives answer tokens per second over its own step time; the same
        seconds are ``new answer tokens / answer tokens per second``. Both are every rank's
        (mlx-lm sums them), so the processed tokens are too: this call updates
        ``world_total`` (a collective under ``mlx.launch``: every rank must call it).
        """
        self.world_total = self.sum_ranks(self.total) if self.sum_ranks is not None else self.total
        processed = self.world_total - self._reported_total
        answers = trained_tokens - self._reported_trained
        self._reported_total, self._reported_trained = self.world_total, trained_tokens
        if answer_tokens_per_s <= 0 or answers <= 0:
            return 0.0
        return processed / (answers / answer_tokens_per_s)


def build_lr(req: dict[str, Any]) -> Any:
    """A learning rate or mlx schedule from the request.

    ``cosine``: ``cosine_decay(lr, iters - warmup, min_lr)``; ``linear``:
    ``linear_schedule(lr, min_lr, iters - warmup)``; both after an optional
    linear warmup from 0 (mlx-lm ``build_schedule`` semantics).
    """
    from mlx_lm.tuner.utils import build_schedule

    lr = float(req["learning_rate"])
    warmup = int(req["warmup_steps"])
    decay_steps = max(1, int(req["iters"]) - warmup)
    name = req["lr_schedule"]
    if name == "constant" and not warmup:
        return lr
    if name == "cosine":
        spec: dict[str, Any] = {"name": "cosine_decay", "arguments": [lr, decay_steps, float(req["min_learning_rate"])]}
    elif name == "linear":
        spec = {"name": "linear_schedule", "arguments": [lr, float(req["min_learning_rate"]), decay_steps]}
    else:
        spec = {"name": "linear_schedule", "arguments": [lr, lr, 1]}
    if warmup:
        spec["warmup"] = warmup
    return build_schedule(spec)


def build_optimizer(req: dict[str, Any]) -> Any:
    """Adam or AdamW with the request's schedule; with ``max_grad_norm``, gradients are
    clipped to that global norm before each update (``mlx.optimizers.clip_grad_norm``)
    and the norm before clipping is kept in ``optimizer.state["grad_norm"]``."""
    import mlx.core as mx
    import mlx.optimizers as optim

    lr = build_lr(req)
    optimizer: Any
    if req["optimizer"] == "adamw":
        optimizer = optim.AdamW(learning_rate=lr, weight_decay=float(req["weight_decay"]))
    else:
        optimizer = optim.Adam(learning_rate=lr)
    max_norm = req.get("max_grad_norm")
    if max_norm is not None:
        unclipped = optimizer.apply_gradients

        def apply_clipped(gradients: dict[str, Any], parameters: dict[str, Any]) -> Any:
            gradients, norm = optim.clip_grad_norm(gradients, float(max_norm))
            optimizer.state["grad_norm"] = norm.astype(mx.float32)
            return unclipped(gradients, parameters)

        optimizer.apply_gradients = apply_clipped
    return optimizer


def own_stream(make: Callable[[], Iterator[Any]], seed: int, skip: int = 0) -> Iterator[Any]:
    """Iterate ``make()`` with numpy's global RNG swapped for a private one seeded ``seed``.

    mlx-lm's ``iterate_batches`` shuffles with ``np.random``; validation passes
    draw from the same global stream, so the training batch order would depend
    on when validation ran. On its own stream the order depends on the seed
    alone, and ``skip`` batches can be replayed to resume at a position.
    """
    import numpy as np

    own = np.random.RandomState(seed).get_state()
    gen = make()
    n = 0
    while True:
        outer = np.random.get_state()
        np.random.set_state(own)
        try:
            item = next(gen)
        except StopIteration:
            return
        finally:
            own = np.random.get_state()
            np.random.set_state(outer)
        n += 1
        if n > skip:
            yield item


def make_batches(seed: int, skip: int) -> Callable[..., Iterator[Any]]:
    """An ``iterate_batches`` for mlx-lm's ``train``/``evaluate``: training batches on their
    own stream (resumable by ``skip``); every validation pass the same batches."""
    from mlx_lm.tuner.trainer import iterate_batches

    train_seed = seed

    def batches(
        dataset: Any,
        batch_size: int,
        max_seq_length: int,
        loop: bool = False,
        seed: int | None = None,
        comm_group: Any = None,
    ) -> Iterator[Any]:
        def make() -> Iterator[Any]:
            return iterate_batches(
                dataset=dataset, batch_size=batch_size, max_seq_length=max_seq_length, loop=loop, comm_group=comm_group
            )

        if loop:
            return own_stream(make, train_seed, skip)
        return own_stream(make, train_seed + VAL_SEED_OFFSET)

    return batches


class _NoLines(JsonLines):
    """The metrics sink of ranks other than 0: they write nothing."""

    def __init__(self) -> None:
        pass

    def write(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Drop the record."""

    def close(self) -> None:
        """Nothing to close."""


def main(argv: list[str]) -> int:
    launched = RANK_ENV in os.environ
    rank = int(os.environ.get(RANK_ENV, "0"))
    watch_parent(ignore_env=launched)
    if len(argv) == 2 and argv[1].lstrip().startswith("{"):
        req = json.loads(argv[1])  # under mlx.launch: other hosts have no request file
    else:
        req = read_request(argv)
    writer = rank == 0
    result_file = Path(req["result_file"])
    metrics = JsonLines(Path(req["metrics_file"])) if writer else _NoLines()
    try:
        return _train(req, metrics, result_file, writer)
    except NonFiniteLoss as exc:
        if writer:
            write_json(result_file, {"ok": False, "reason": str(exc), "kind": "nonfinite"})
        return EXIT_NONFINITE
    except Exception as exc:  # the parent gets the reason in the result file
        traceback.print_exc()
        if writer:
            write_json(result_file, {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "kind": "error"})
        return EXIT_ERROR
    finally:
        metrics.close()


def _train(req: dict[str, Any], metrics: JsonLines, result_file: Path, writer: bool) -> int:
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, evaluate, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from daemon.worker import checkpoint
    from daemon.worker.mlxutil import all_finite, masked_loss

    world = mx.distributed.init()
    seed = int(req["seed"])
    np.random.seed(seed)
    mx.random.seed(seed)
    started = time.monotonic()
    model, tokenizer = load(req["base_model"])
    mask_prompt = bool(req["mask_prompt"])
    train_set = CacheDataset(ChatDataset(read_jsonl(Path(req["train_file"])), tokenizer, mask_prompt=mask_prompt))
    valid_set = CacheDataset(ChatDataset(read_jsonl(Path(req["valid_file"])), tokenizer, mask_prompt=mask_prompt))

    model.freeze()
    num_layers = int(req["num_layers"])
    if num_layers == -1:
        num_layers = len(model.layers)
    lora_parameters = dict(req["lora_parameters"])
    if lora_parameters.get("keys") is None:
        lora_parameters.pop("keys", None)
    linear_to_lora_layers(model, num_layers, lora_parameters)

    adapter_dir = Path(req["adapter_dir"])
    ckpt_dir = Path(req["checkpoint_dir"])
    if writer:
        adapter_dir.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        # The fields mlx-lm's load_adapters/fuse read, plus provenance.
        adapter_config = {
            "fine_tune_type": "lora",
            "num_layers": num_layers,
            "lora_parameters": lora_parameters,
            "model": req["base_model"],
            "iters": req["iters"],
            "learning_rate": req["learning_rate"],
            "seed": seed,
            "nightshift": True,
        }
        (adapter_dir / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2))

    total_iters = int(req["iters"])
    optimizer = build_optimizer(req)
    best = BestCheckpoint()
    spikes = LossSpikeWatch(req.get("loss_spike_factor"), int(req.get("loss_spike_reports") or 3))
    start_iter, trained_tokens_before = 0, 0
    if req.get("resume_from"):
        point = checkpoint.load_resume(Path(req["resume_from"]))
        checkpoint.restore(point, model, optimizer)
        start_iter = point.iteration
        best = BestCheckpoint.from_dict(point.state["best"])
        spikes.restore(point.state.get("spikes", {}))
        trained_tokens_before = int(point.state.get("trained_tokens", 0))
        if writer and point.best_adapter is not None:
            shutil.copyfile(point.best_adapter, ckpt_dir / BEST_ADAPTER)
        mx.random.seed(seed + start_iter)  # dropout masks continue on a fresh, reproducible stream
    elif req.get("max_grad_norm") is not None:
        optimizer.init(model.trainable_parameters())
    if req.get("max_grad_norm") is not None and "grad_norm" not in optimizer.state:
        optimizer.state["grad_norm"] = mx.array(0.0)

    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    total = sum(v.size for _, v in tree_flatten(model.parameters()))
    metrics.write(
        {
            "event": "start",
            "iters": total_iters,
            "trainable_params": trainable,
            "total_params": total,
            "world_size": world.size(),
            "resumed_from_iteration": start_iter,
        }
    )

    stop_at = req.get("stop_at_unix")
    patience = req.get("early_stopping_patience")
    save_every = int(req["save_every"])
    grad_accum = int(req["grad_accumulation"])
    fingerprint = str(req.get("fingerprint", ""))

    def agree(flag: bool) -> bool:
        """True on every rank when any rank says so (time differs between hosts)."""
        if world.size() == 1:
            return flag
        total = mx.distributed.all_sum(mx.array(1 if flag else 0), stream=mx.cpu)
        return bool((total > 0).item())

    class Callback(TrainingCallback):
        def __init__(self) -> None:
            self.done = start_iter  # optimizer updates applied so far
            self.last_val_iteration: int | None = None
            self.last_ckpt = start_iter
            self.last_report = time.monotonic()
            self.interval_s = 0.0
            self.val_s = 0.0
            self.trained_tokens = trained_tokens_before

        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            iteration = start_iter + int(info["iteration"])
            self.done = iteration
            loss = float(info["train_loss"])
            self.trained_tokens = trained_tokens_before + int(info["trained_tokens"])
            now = time.monotonic()
            self.interval_s, self.last_report = now - self.last_report, now
            tokens_per_s = batches.per_second(int(info["trained_tokens"]), float(info["tokens_per_second"]))
            record = {
                "event": "train",
                "iteration": iteration,
                "train_loss": loss,
                "learning_rate": float(info["learning_rate"]),
                "tokens_per_s": tokens_per_s,
                "trained_tokens": self.trained_tokens,
                "processed_tokens": batches.world_total,
                "peak_memory_bytes": int(float(info["peak_memory"]) * 1e9),
            }
            if "grad_norm" in optimizer.state:
                record["grad_norm"] = float(optimizer.state["grad_norm"].item())
            metrics.write(record)
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"training loss became {loss} at iteration {iteration}; "
                    "lower training.learning_rate or check the dataset and base model"
                )
            spike = spikes.observe(iteration, loss)
            if spike:
                raise NonFiniteLoss(spike)
            # A checkpoint needs a clean optimizer step (no half-accumulated gradient).
            if iteration < total_iters and iteration - self.last_ckpt >= save_every and iteration % grad_accum == 0:
                self.last_ckpt = iteration
                if writer:
                    checkpoint.save_resume(ckpt_dir, iteration, model, optimizer, self.state(), fingerprint)
                    metrics.write({"event": "checkpoint", "iteration": iteration}, sync=True)
            self.check_deadline(iteration)

        def on_val_loss_report(self, info: dict[str, Any]) -> None:
            # mlx-lm validates before the step of its iteration `it` and reports `it - 1`: the
            # weights now are exactly the ones validated.
            self.val_s = float(info.get("val_time", 0.0))
            self.done = start_iter + int(info["iteration"])
            self.validated(self.done, float(info["val_loss"]))
            if best.patience_exhausted(patience):
                raise StopTraining(
                    "early_stopping",
                    f"validation loss has not improved for {patience} evaluations "
                    f"(best {best.val_loss:.4f} at iteration {best.iteration})",
                )
            self.check_deadline(self.done)

        def validated(self, iteration: int, loss: float) -> None:
            self.last_val_iteration = iteration
            improved = best.observe(iteration, loss)
            metrics.write({"event": "val", "iteration": iteration, "val_loss": loss, "best": improved})
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"validation loss became {loss} at iteration {iteration}")
            if improved and writer:
                checkpoint.save_adapter(ckpt_dir / BEST_ADAPTER, model)

        def check_deadline(self, iteration: int) -> None:
            # Not before the first training report: a challenger nobody trained is no use,
            # so a late start overshoots by at most one reporting interval.
            if stop_at is None or self.done == start_iter:
                return
            late = should_stop(time.time(), float(stop_at), self.interval_s, self.val_s)
            if agree(late):
                raise StopTraining(
                    "deadline",
                    f"stopped at iteration {iteration} of {total_iters} to finish by the deadline",
                )

        def state(self) -> dict[str, Any]:
            return {"best": best.to_dict(), "spikes": spikes.to_dict(), "trained_tokens": self.trained_tokens}

    def sum_ranks(count: int) -> int:
        total = mx.distributed.all_sum(mx.array(count, dtype=mx.int64), stream=mx.cpu)
        return int(total.item())  # type: ignore[arg-type]  # an int64 array: .item() is an int

    batches = ProcessedTokens(make_batches(seed, start_iter), sum_ranks if world.size() > 1 else None)
    remaining = total_iters - start_iter
    args = TrainingArgs(
        batch_size=int(req["batch_size"]),
        iters=remaining,
        val_batches=int(req["val_batches"]),
        steps_per_report=int(req["steps_per_report"]),
        steps_per_eval=int(req["steps_per_eval"]),
        steps_per_save=remaining + 1,  # resume checkpoints are ours (with the optimizer state)
        adapter_file=str(ckpt_dir / "last_adapters.safetensors"),
        max_seq_length=int(req["max_seq_len_tokens"]),
        grad_checkpoint=bool(req["grad_checkpoint"]),
        grad_accumulation_steps=grad_accum,
    )
    callback = Callback()
    stop_reason, stop_detail = "completed", ""
    try:
        train(
            model=model,
            optimizer=optimizer,
            train_dataset=train_set,
            val_dataset=valid_set,
            args=args,
            loss=masked_loss,
            iterate_batches=batches.iterate,
            training_callback=callback,
        )
        callback.done = total_iters
    except StopTraining as stop:
        stop_reason, stop_detail = stop.reason, str(stop)
        metrics.write({"event": "stop", "iteration": callback.done, "reason": stop.reason, "detail": stop_detail})
    if needs_final_validation(callback.last_val_iteration, callback.done, grad_accum):
        tic = time.perf_counter()
        val_loss = evaluate(
            model=model,
            dataset=valid_set,
            batch_size=args.batch_size,
            num_batches=args.val_batches,
            max_seq_length=args.max_seq_length,
            loss=masked_loss,
            iterate_batches=batches.iterate,
        )
        callback.val_s = time.perf_counter() - tic
        callback.validated(callback.done, val_loss)
    if not all_finite(model.trainable_parameters()):
        raise NonFiniteLoss("the trained adapter weights contain NaN or inf")
    no_challenger = best.no_improvement()
    if no_challenger:
        raise NonFiniteLoss(no_challenger)  # deterministic like a spike: no adapter, no evaluation
    if not writer:
        return EXIT_OK
    chosen = ckpt_dir / BEST_ADAPTER
    tmp = adapter_dir / f".{ADAPTER_FILE}.tmp"
    shutil.copyfile(chosen, tmp)
    os.replace(tmp, adapter_dir / ADAPTER_FILE)
    write_json(
        result_file,
        {
            "ok": True,
            "adapter_dir": str(adapter_dir),
            "trainable_params": trainable,
            "duration_s": time.monotonic() - started,
            "peak_memory_bytes": int(mx.get_peak_memory()),
            "iterations_done": callback.done,
            "best_iteration": best.iteration,
            "best_val_loss": best.val_loss,
            "stop_reason": stop_reason,
            "stop_detail": stop_detail,
            "resumed_from_iteration": start_iter,
            "world_size": world.size(),
            **{k.replace("-", "_") + "_version": v for k, v in versions().items()},
        },
    )
    metrics.write({"event": "end", "best_iteration": best.iteration, "best_val_loss": best.val_loss}, sync=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
