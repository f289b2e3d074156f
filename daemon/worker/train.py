"""Training child: ``python -m daemon.worker.train REQUEST.json``.

Trains a LoRA adapter on the base model through mlx-lm's trainer API
(``mlx_lm.tuner.trainer.train``) with a ``TrainingCallback`` that appends JSON
lines to ``metrics_file``. ``mlx_lm.lora.run`` is not used: it replaces any
callback passed to it.

Exit codes: 0 success (adapter and result written), 2 bad request,
3 non-finite loss (training aborted; no adapter is kept), 4 orphaned, 1 other.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from daemon.worker.common import (
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

ADAPTER_FILE = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class ProcessedTokens:
    """Counts the tokens of every training batch (prompt and answer, padding excluded).

    mlx-lm reports ``tokens_per_second`` over the loss's unmasked tokens only: with
    ``mask_prompt`` that is the answers (0-1 tok/s shown while ~80 were processed). Wrapping
    its ``iterate_batches`` (``mlx_lm.tuner.trainer.train`` takes it as an argument) counts
    what the model actually processed; validation batches (``loop=False``) are not counted.
    """

    def __init__(self) -> None:
        self.total = 0
        self._reported_total = 0
        self._reported_trained = 0

    def iterate(self, *args: Any, **kwargs: Any) -> Any:
        """``mlx_lm.tuner.trainer.iterate_batches`` with counting; yields its ``(batch, lengths)``."""
        from mlx_lm.tuner.trainer import iterate_batches

        counting = bool(kwargs.get("loop"))
        for batch, lengths in iterate_batches(*args, **kwargs):
            if counting:
                self.total += int(lengths[:, 1].sum().item())
            yield batch, lengths

    def per_second(self, trained_tokens: int, answer_tokens_per_s: float) -> float:
        """Processed tokens per second since the last report.

        mlx-lm's report gives answer tokens per second over its own step time; the same
        seconds are ``new answer tokens / answer tokens per second``.
        """
        processed = self.total - self._reported_total
        answers = trained_tokens - self._reported_trained
        self._reported_total, self._reported_trained = self.total, trained_tokens
        if answer_tokens_per_s <= 0 or answers <= 0:
            return 0.0
        return processed / (answers / answer_tokens_per_s)


class NonFiniteLoss(RuntimeError):
    """Raised from the callback to abort training on a NaN/inf loss."""


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


def main(argv: list[str]) -> int:
    watch_parent()
    req = read_request(argv)
    result_file = Path(req["result_file"])
    metrics = JsonLines(Path(req["metrics_file"]))
    try:
        return _train(req, metrics, result_file)
    except NonFiniteLoss as exc:
        write_json(result_file, {"ok": False, "reason": str(exc), "kind": "nonfinite"})
        return EXIT_NONFINITE
    except Exception as exc:  # the parent gets the reason in the result file
        traceback.print_exc()
        write_json(result_file, {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "kind": "error"})
        return EXIT_ERROR
    finally:
        metrics.close()


def _train(req: dict[str, Any], metrics: JsonLines, result_file: Path) -> int:
    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, train
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from daemon.worker.mlxutil import all_finite, masked_loss

    seed = int(req["seed"])
    np.random.seed(seed)
    mx.random.seed(seed)
    started = time.monotonic()
    model, tokenizer = load(req["base_model"])
    mask_prompt = bool(req["mask_prompt"])
    train_set = ChatDataset(read_jsonl(Path(req["train_file"])), tokenizer, mask_prompt=mask_prompt)
    valid_set = ChatDataset(read_jsonl(Path(req["valid_file"])), tokenizer, mask_prompt=mask_prompt)

    model.freeze()
    num_layers = int(req["num_layers"])
    if num_layers == -1:
        num_layers = len(model.layers)
    lora_parameters = dict(req["lora_parameters"])
    if lora_parameters.get("keys") is None:
        lora_parameters.pop("keys", None)
    linear_to_lora_layers(model, num_layers, lora_parameters)

    adapter_dir = Path(req["adapter_dir"])
    adapter_dir.mkdir(parents=True, exist_ok=True)
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

    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    total = sum(v.size for _, v in tree_flatten(model.parameters()))
    metrics.write({"event": "start", "iters": req["iters"], "trainable_params": trainable, "total_params": total})

    batches = ProcessedTokens()

    class Callback(TrainingCallback):
        def on_train_loss_report(self, info: dict[str, Any]) -> None:
            loss = float(info["train_loss"])
            metrics.write(
                {
                    "event": "train",
                    "iteration": int(info["iteration"]),
                    "train_loss": loss,
                    "learning_rate": float(info["learning_rate"]),
                    "tokens_per_s": batches.per_second(int(info["trained_tokens"]), float(info["tokens_per_second"])),
                    "trained_tokens": int(info["trained_tokens"]),
                    "processed_tokens": batches.total,
                    "peak_memory_bytes": int(float(info["peak_memory"]) * 1e9),
                }
            )
            if not math.isfinite(loss):
                raise NonFiniteLoss(
                    f"training loss became {loss} at iteration {info['iteration']}; "
                    "lower training.learning_rate or check the dataset and base model"
                )

        def on_val_loss_report(self, info: dict[str, Any]) -> None:
            loss = float(info["val_loss"])
            metrics.write({"event": "val", "iteration": int(info["iteration"]), "val_loss": loss})
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"validation loss became {loss} at iteration {info['iteration']}")

    lr = build_lr(req)
    if req["optimizer"] == "adamw":
        optimizer: Any = optim.AdamW(learning_rate=lr, weight_decay=float(req["weight_decay"]))
    else:
        optimizer = optim.Adam(learning_rate=lr)

    args = TrainingArgs(
        batch_size=int(req["batch_size"]),
        iters=int(req["iters"]),
        val_batches=int(req["val_batches"]),
        steps_per_report=int(req["steps_per_report"]),
        steps_per_eval=int(req["steps_per_eval"]),
        steps_per_save=int(req["save_every"]),
        adapter_file=str(adapter_dir / ADAPTER_FILE),
        max_seq_length=int(req["max_seq_len_tokens"]),
        grad_checkpoint=bool(req["grad_checkpoint"]),
        grad_accumulation_steps=int(req["grad_accumulation"]),
    )
    train(
        model=model,
        optimizer=optimizer,
        train_dataset=CacheDataset(train_set),
        val_dataset=CacheDataset(valid_set),
        args=args,
        loss=masked_loss,
        training_callback=Callback(),
        iterate_batches=batches.iterate,
    )
    if not all_finite(model.trainable_parameters()):
        raise NonFiniteLoss("the trained adapter weights contain NaN or inf")
    write_json(
        result_file,
        {
            "ok": True,
            "adapter_dir": str(adapter_dir),
            "trainable_params": trainable,
            "duration_s": time.monotonic() - started,
            "peak_memory_bytes": int(mx.get_peak_memory()),
            **{k.replace("-", "_") + "_version": v for k, v in versions().items()},
        },
    )
    metrics.write({"event": "end"}, sync=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
