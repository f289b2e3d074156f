"""Evaluation child: ``python -m daemon.worker.evaluate REQUEST.json``.

Loads the base model once, then for each requested model (the base itself, or
base + a LoRA adapter) generates replies to every prompt with mlx-lm's batched
generation under identical decoding, computes reference-answer losses and the
held-out loss, and removes the adapter again before the next model. Scoring
happens in the parent (:mod:`daemon.evaluate`), so this child only produces
text and numbers.

Output: JSON lines in ``output_file``:
``{"kind": "reply", "model", "category", "item_id", "sample", "reply", "truncated"}``
(``truncated``: generation stopped at the item's ``max_tokens``, mlx-lm's finish reason
``"length"``, not at an end-of-sequence token),
``{"kind": "loss", "model", "category", "item_id", "nll", "tokens"}``,
``{"kind": "held_out", "model", "loss"}``,
``{"kind": "progress", "model", "done", "total"}``,
``{"kind": "model_done", "model", "duration_s"}``.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

from daemon.worker.common import (
    EXIT_ERROR,
    EXIT_OK,
    JsonLines,
    read_jsonl,
    read_request,
    watch_parent,
    write_json,
)


def main(argv: list[str]) -> int:
    watch_parent()
    # Import before the request arrives: a warm-started child (see
    # daemon.child.StartedWorker) does this while the challenger trains.
    import mlx_lm.generate  # noqa: F401
    import mlx_lm.tuner.utils  # noqa: F401
    import mlx_lm.utils  # noqa: F401

    req = read_request(argv)
    out = JsonLines(Path(req["output_file"]))
    try:
        _evaluate(req, out)
    except Exception as exc:
        traceback.print_exc()
        write_json(Path(req["result_file"]), {"ok": False, "reason": f"{type(exc).__name__}: {exc}"})
        return EXIT_ERROR
    finally:
        out.close()
    write_json(Path(req["result_file"]), {"ok": True})
    return EXIT_OK


def _evaluate(req: dict[str, Any], out: JsonLines) -> None:
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load

    from daemon.worker.mlxutil import remove_adapters

    model, tokenizer = load(req["base_model"])
    for spec in req["models"]:
        started = time.monotonic()
        key = spec["key"]
        if spec.get("adapter_path"):
            load_adapters(model, spec["adapter_path"])
        model.eval()
        try:
            _generate_all(model, tokenizer, req, key, out)
            _losses(model, tokenizer, req, key, out)
            if req.get("held_out"):
                out.write({"kind": "held_out", "model": key, "loss": _held_out_loss(model, tokenizer, req["held_out"])})
        finally:
            remove_adapters(model)
        out.write({"kind": "model_done", "model": key, "duration_s": time.monotonic() - started}, sync=True)


def _prompt_tokens(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))


def generate_batch(
    model: Any, tokenizer: Any, prompts: list[list[int]], max_tokens: list[int], sampler: Any = None
) -> list[tuple[str, bool, int]]:
    """Generate replies to ``prompts`` together; ``(text, truncated, tokens)`` per prompt, in order.

    ``tokens``: the reply's generated tokens (the end-of-sequence token not counted).

    The loop of ``mlx_lm.generate.batch_generate`` (mlx-lm 0.32), which returns texts only,
    keeping each sequence's finish reason: ``"length"`` when it reached its ``max_tokens``
    (``truncated``), ``"stop"`` when it produced an end-of-sequence token (not in the text).
    Prefills the whole chunk at once: mlx-lm prefills 8 prompts at a time by default, and
    one prefill is ~1.35x faster on the demo suite with identical replies
    (benchmarks/eval_batched.py).
    """
    from mlx_lm.generate import BatchGenerator

    kwargs: dict[str, Any] = {"sampler": sampler} if sampler is not None else {}
    gen = BatchGenerator(
        model,
        stop_tokens=[[t] for t in tokenizer.eos_token_ids],
        prefill_batch_size=len(prompts),
        completion_batch_size=len(prompts),
        **kwargs,
    )
    try:
        uids = gen.insert(prompts, max_tokens)
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        reasons: dict[int, str] = {}
        while responses := gen.next_generated():
            for r in responses:
                if r.finish_reason != "stop":
                    tokens[r.uid].append(r.token)
                if r.finish_reason is not None:
                    reasons[r.uid] = r.finish_reason
    finally:
        gen.close()
    return [(tokenizer.decode(tokens[uid]), reasons.get(uid) == "length", len(tokens[uid])) for uid in uids]


def _generate_all(model: Any, tokenizer: Any, req: dict[str, Any], key: str, out: JsonLines) -> None:
    import mlx.core as mx
    from mlx_lm.sample_utils import make_sampler

    prompts = req["generation"]
    total = len(prompts)
    done = 0
    batch_size = int(req["batch_size"])
    # Same decoding for every model: group by temperature, fixed seed per group.
    groups: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for p in prompts:
        groups[float(p["temperature"])].append(p)
    for temperature, group in sorted(groups.items()):
        mx.random.seed(int(req["seed"]))
        sampler = make_sampler(temp=temperature) if temperature > 0 else None
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            replies = generate_batch(
                model,
                tokenizer,
                [_prompt_tokens(tokenizer, p["messages"]) for p in chunk],
                [int(p["max_tokens"]) for p in chunk],
                sampler,
            )
            for p, (text, truncated, _) in zip(chunk, replies, strict=True):
                out.write(
                    {
                        "kind": "reply",
                        "model": key,
                        "category": p["category"],
                        "item_id": p["item_id"],
                        "sample": p["sample"],
                        "reply": text,
                        "truncated": truncated,
                    }
                )
            done += len(chunk)
            out.write({"kind": "progress", "model": key, "done": done, "total": total})


def _losses(model: Any, tokenizer: Any, req: dict[str, Any], key: str, out: JsonLines) -> None:
    """Mean per-token NLL (nats) of each reference answer given its prompt."""
    import mlx.core as mx
    import mlx.nn as nn

    for item in req.get("loss_items", []):
        prompt = _prompt_tokens(tokenizer, item["messages"])
        full = list(
            tokenizer.apply_chat_template(
                [*item["messages"], {"role": "assistant", "content": item["reference"]}],
                return_dict=False,
            )
        )
        ids = mx.array(full)[None]
        logits = model(ids[:, :-1])
        ce = nn.losses.cross_entropy(logits, ids[:, 1:])[0]
        answer = ce[len(prompt) - 1 :]
        nll = float(answer.mean().item()) if answer.size else float("nan")
        out.write(
            {
                "kind": "loss",
                "model": key,
                "category": item["category"],
                "item_id": item["item_id"],
                "nll": nll,
                "tokens": int(answer.size),
            }
        )


def _held_out_loss(model: Any, tokenizer: Any, spec: dict[str, Any]) -> float:
    """Token-weighted mean loss (nats/token) on the validation file, corrected mask."""
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
    from mlx_lm.tuner.trainer import evaluate

    from daemon.worker.mlxutil import masked_loss

    rows = read_jsonl(Path(spec["file"]))[: int(spec["max_examples"])]
    data = CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=bool(spec["mask_prompt"])))
    return float(
        evaluate(
            model=model,
            dataset=data,
            batch_size=1,
            num_batches=-1,
            max_seq_length=int(spec["max_seq_len_tokens"]),
            loss=masked_loss,
        )
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
