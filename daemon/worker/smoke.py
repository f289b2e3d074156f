"""Smoke test child: ``python -m daemon.worker.smoke REQUEST.json``.

Loads the base model with mlx-lm and measures, without judging (the parent,
:mod:`daemon.preflight.smoke`, decides):

1. the loss and perplexity of the base model on the first ``samples`` usable
   validation examples, tokenised exactly as mlx-lm's ``ChatDataset`` does,
   masked with ``steps < length`` (mlx-lm 0.32's ``default_loss`` uses ``<=``
   and counts one padding target);
2. greedy generation (mlx-lm's default sampler) for the first validation
   prompt, then for one eval item per generating category with that
   category's ``max_tokens``, through the eval child's own batched generation
   (:func:`daemon.worker.evaluate.generate_batch`): each reply records
   whether it stopped at ``max_tokens`` (cut off), and the batch's time per
   decoding step feeds the night-length estimate;
3. two LoRA training steps (Adam, learning rate ``1e-6``) on the
   ``batch_size`` longest of the first 64 training examples, truncated to
   ``max_seq_len_tokens``, with gradient checkpointing if configured, so the
   peak memory is close to the night's. Before the first step the same batch's
   loss is taken in inference mode: with LoRA's B matrices at zero the
   training forward pass must give the same loss. A mismatch is how a broken
   training path looks (Gemma 4's KV-sharing layers under transformers'
   gradient checkpointing gave perplexity 2.7M while "training ran fine").

Request keys: ``model``, ``train``, ``valid``, ``result`` (paths), ``samples``,
``batch_size``, ``max_seq_len_tokens``, ``mask_prompt``, ``grad_checkpoint``,
``seed``, ``max_tokens``, ``lora`` (``layers``, ``rank``, ``scale``,
``dropout``, ``keys``), ``eval_samples`` (``category``, ``item_id``,
``messages``, ``max_tokens``; may be empty). The result JSON has ``ok``, ``stage``, ``error`` and
the measurements; it is written even when a stage fails.
"""

from __future__ import annotations

import math
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from daemon.dataset import Example, read_chat_jsonl
from daemon.worker.common import (
    EXIT_ERROR,
    EXIT_OK,
    read_request,
    versions,
    watch_parent,
    write_json,
)

SMOKE_LEARNING_RATE = 1e-6
TRAIN_CANDIDATES = 64
"""Training examples tokenised to pick the longest batch."""


def _item(x: Any) -> float:
    """A scalar mlx array as a Python float (``item()`` is typed as a union incl. complex)."""
    value: Any = x.item()
    return float(value)


def _max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS: bytes, Linux: KiB


def _tokenise(dataset: Any, examples: list[Example], max_len: int) -> list[tuple[list[int], int]]:
    out = []
    for ex in examples:
        tokens, offset = dataset.process(ex.record())
        out.append((list(tokens)[:max_len], int(offset)))
    return out


def run(request: dict[str, Any], result: dict[str, Any]) -> None:
    """Run the smoke stages, filling ``result`` as measurements arrive."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.tuner.trainer import grad_checkpoint
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load

    from daemon.worker.evaluate import generate_batch
    from daemon.worker.mlxutil import all_finite, masked_loss, peak_memory_bytes

    mx.random.seed(int(request.get("seed", 0)))
    max_len = int(request["max_seq_len_tokens"])

    result["stage"] = "loading the model"
    tic = time.perf_counter()
    model, tokenizer = load(str(request["model"]))[:2]
    result["load_s"] = time.perf_counter() - tic

    result["stage"] = "reading the dataset"
    valid, _ = read_chat_jsonl(Path(request["valid"]))
    train, _ = read_chat_jsonl(Path(request["train"]))
    samples = valid[: int(request["samples"])]
    if not samples:
        raise ValueError("valid.jsonl has no usable example")
    dataset = ChatDataset([], tokenizer, mask_prompt=bool(request["mask_prompt"]))  # type: ignore[arg-type]

    result["stage"] = "computing the base model's validation loss"
    model.eval()
    total, ntokens = 0.0, 0
    for tokens, offset in _tokenise(dataset, samples, max_len):
        batch = mx.array([tokens])
        lengths = mx.array([[offset, len(tokens)]])
        loss, ntoks = masked_loss(model, batch, lengths)
        mx.eval(loss, ntoks)
        total += _item(loss) * int(_item(ntoks))
        ntokens += int(_item(ntoks))
    result["loss_examples"] = [f"{ex.path.name}:{ex.line}" for ex in samples]
    result["loss_tokens"] = ntokens
    result["loss"] = total / ntokens if ntokens else float("nan")
    result["perplexity"] = math.exp(result["loss"]) if result["loss"] < 700 else float("inf")

    result["stage"] = "generating"
    first = samples[0]
    prompt = tokenizer.apply_chat_template(
        list(first.messages[:-1]), tools=first.tools, add_generation_prompt=True
    )
    tic = time.perf_counter()
    ((text, truncated, _),) = generate_batch(model, tokenizer, [list(prompt)], [int(request["max_tokens"])])
    result["generation_s"] = time.perf_counter() - tic
    result["generation_example"] = f"{first.path.name}:{first.line}"
    result["generation"] = text
    result["generation_truncated"] = truncated

    samples_req = request.get("eval_samples") or []
    if samples_req:
        result["stage"] = "generating eval samples"
        prompts = [
            list(tokenizer.apply_chat_template(s["messages"], add_generation_prompt=True, return_dict=False))
            for s in samples_req
        ]
        tic = time.perf_counter()
        replies = generate_batch(model, tokenizer, prompts, [int(s["max_tokens"]) for s in samples_req])
        result["eval_generation_s"] = time.perf_counter() - tic
        # A batch decodes until its longest reply ends (one more step for a stop token).
        result["eval_generation_steps"] = max(n + (0 if cut else 1) for _, cut, n in replies)
        result["eval_samples"] = [
            {**{k: s[k] for k in ("category", "item_id", "max_tokens")}, "reply": text, "truncated": cut, "tokens": n}
            for s, (text, cut, n) in zip(samples_req, replies, strict=True)
        ]

    result["stage"] = "training two LoRA steps"
    candidates = _tokenise(dataset, train[:TRAIN_CANDIDATES] or samples, max_len)
    candidates.sort(key=lambda t: len(t[0]), reverse=True)
    batch_size = int(request["batch_size"])
    chosen = (candidates * batch_size)[:batch_size]  # repeat when there are fewer examples than a batch
    width = max(len(t) for t, _ in chosen)
    arr = np.zeros((batch_size, width), np.int32)
    for i, (tokens, _) in enumerate(chosen):
        arr[i, : len(tokens)] = tokens
    batch = mx.array(arr)
    lengths = mx.array([[offset, len(tokens)] for tokens, offset in chosen])
    result["train_batch"] = {"batch_size": batch_size, "tokens": width}

    lora = request["lora"]
    model.freeze()
    params: dict[str, Any] = {"rank": lora["rank"], "scale": lora["scale"], "dropout": lora["dropout"]}
    if lora.get("keys"):
        params["keys"] = lora["keys"]
    linear_to_lora_layers(model, int(lora["layers"]), params)
    if request.get("grad_checkpoint"):
        grad_checkpoint(model.layers[0])

    reference, _ = masked_loss(model, batch, lengths)  # inference mode, LoRA B = 0
    mx.eval(reference)
    result["reference_loss"] = _item(reference)

    model.train()
    optimizer = optim.Adam(learning_rate=SMOKE_LEARNING_RATE)
    loss_and_grad = nn.value_and_grad(model, masked_loss)
    losses: list[float] = []
    step_s: list[float] = []
    grads_finite = True
    for _ in range(2):
        tic = time.perf_counter()
        (loss, _), grads = loss_and_grad(model, batch, lengths)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        step_s.append(time.perf_counter() - tic)
        grads_finite = grads_finite and all_finite(grads)
        losses.append(_item(loss))
    result["train_losses"] = losses
    result["train_step_s"] = step_s
    result["grads_finite"] = grads_finite
    result["params_finite"] = all_finite(model.trainable_parameters())
    result["peak_memory_bytes"] = peak_memory_bytes()
    result["stage"] = "done"


def main(argv: list[str]) -> int:
    """Entry point: read the request, run, always write the result file."""
    request = read_request(argv)
    watch_parent()
    result: dict[str, Any] = {"ok": False, "stage": "starting", "error": None, "versions": versions()}
    tic = time.perf_counter()
    code = EXIT_OK
    try:
        run(request, result)
        result["ok"] = True
    except Exception as exc:  # report every failure to the parent through the result file
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        code = EXIT_ERROR
    result["duration_s"] = time.perf_counter() - tic
    result["max_rss_bytes"] = _max_rss_bytes()
    try:
        from daemon.worker.mlxutil import peak_memory_bytes

        result.setdefault("peak_memory_bytes", peak_memory_bytes())
    except Exception:  # mlx itself failed to import: the error above says so
        pass
    write_json(Path(request["result"]), result)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
