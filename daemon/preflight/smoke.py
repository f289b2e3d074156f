"""The smoke test: start ``daemon.worker.smoke`` in a child process and judge its result.

The child measures (see :mod:`daemon.worker.smoke`); :func:`judge_smoke`, a
pure function of its JSON result, decides. The parent never reads the child's
console output: it goes to ``<state_dir>/preflight/smoke.log`` for people.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.preflight.report import CheckResult, Level, result
from daemon.resources import format_bytes
from daemon.suite import Suite

SMOKE_TIMEOUT_S = 1800.0
"""Hard limit on the smoke child (seconds): loading a large model dominates."""

SMOKE_MAX_TOKENS = 16
"""Tokens generated for the greedy-generation check."""

SMOKE_EVAL_SAMPLES = 16
"""At most this many eval items (one per generating category) are answered by the base."""

FORWARD_TOLERANCE_NATS = 0.05
FORWARD_TOLERANCE_SHARE = 0.02
"""The training forward pass must match inference within max(0.05 nats, 2 %) of the loss."""

LOG_TAIL_LINES = 8



def eval_samples(cfg: Config, suite: Suite | None) -> list[dict[str, Any]]:
    """The first item of each generating category, with the prompt and budget the night uses
    (at most :data:`SMOKE_EVAL_SAMPLES`)."""
    if suite is None:
        return []
    out = []
    for cat in suite.categories:
        if cat.generates and cat.items:
            item = cat.items[0]
            out.append(
                {
                    "category": cat.name,
                    "item_id": item.id,
                    "messages": cat.prompt_messages(item),
                    "max_tokens": cat.max_tokens or cfg.evaluation.max_tokens,
                }
            )
    return out[:SMOKE_EVAL_SAMPLES]


def smoke_request(cfg: Config, result_path: Path, suite: Suite | None = None) -> dict[str, Any]:
    """The JSON request for the smoke child, built from the config (and the suite's sample items)."""
    t = cfg.training
    return {
        "model": str(cfg.paths.base_model),
        "train": str(cfg.paths.dataset / "train.jsonl"),
        "valid": str(cfg.paths.dataset / "valid.jsonl"),
        "result": str(result_path),
        "samples": cfg.preflight.smoke_samples,
        "batch_size": t.batch_size,
        "max_seq_len_tokens": t.max_seq_len_tokens,
        "mask_prompt": t.mask_prompt,
        "grad_checkpoint": t.grad_checkpoint,
        "seed": t.seed,
        "max_tokens": SMOKE_MAX_TOKENS,
        "eval_samples": eval_samples(cfg, suite),
        "lora": {
            "layers": t.lora.layers,
            "rank": t.lora.rank,
            "scale": t.lora.effective_scale,
            "dropout": t.lora.dropout,
            "keys": t.lora.keys,
        },
    }


def run_smoke(
    cfg: Config, suite: Suite | None = None, *, timeout_s: float = SMOKE_TIMEOUT_S
) -> tuple[dict[str, Any] | None, list[CheckResult]]:
    """Run the smoke child under :func:`daemon.child.run_worker` and judge it.

    ``suite``: the loaded eval suite; the base answers one item per generating
    category (truncation warning) and the night's length is estimated from the
    measured steps (:mod:`daemon.preflight.duration`).

    The request, log and result go to ``<state_dir>/preflight/``
    (``smoke_request.json``, ``smoke.log``, ``smoke_result.json``).

    Returns:
        ``(raw result or None, results)``.

    Raises:
        Interrupted: a shutdown was requested while the child ran (it is stopped first).
    """
    from daemon.child import run_worker

    work_dir = cfg.paths.state_dir / "preflight"
    work_dir.mkdir(parents=True, exist_ok=True)
    result_path = work_dir / "smoke_result.json"
    result_path.unlink(missing_ok=True)
    log_path = work_dir / "smoke.log"
    log_path.unlink(missing_ok=True)
    child = run_worker(
        "daemon.worker.smoke",
        smoke_request(cfg, result_path, suite),
        work_dir=work_dir,
        name="smoke",
        timeout_s=timeout_s,
        stop_grace_s=cfg.schedule.stop_grace_s,
    )
    raw: dict[str, Any] | None = None
    if result_path.is_file():
        try:
            raw = json.loads(result_path.read_text(encoding="utf-8"))
        except ValueError:
            raw = None
    if child.timed_out or raw is None:
        return raw, [
            result(
                "smoke",
                Level.FAIL,
                f"smoke child {child.describe()}"
                + ("" if child.timed_out else " and wrote no result")
                + f"; log: {log_path}",
                tuple(_tail(log_path)),
            )
        ]
    from daemon.preflight.duration import check_night_length

    out = judge_smoke(raw, max_perplexity=cfg.preflight.max_perplexity, log_path=log_path)
    return raw, out + check_night_length(cfg, suite, raw)


def _tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return lines[-LOG_TAIL_LINES:]


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def judge_smoke(raw: dict[str, Any], *, max_perplexity: float, log_path: Path | None = None) -> list[CheckResult]:
    """Decide the smoke checks from the child's measurements (pure).

    Results: ``smoke.loss`` (finite, perplexity below ``max_perplexity``),
    ``smoke.generation`` (non-empty greedy reply), ``smoke.training`` (two
    finite LoRA steps with finite gradients), ``smoke.train_forward`` (training
    forward pass matches inference on the same batch), ``smoke.memory``
    (peak, informational), and ``smoke`` (fail) naming the stage that raised.
    """
    out: list[CheckResult] = []
    log = f"; log: {log_path}" if log_path else ""
    if "loss" in raw:
        loss, ppl = raw.get("loss"), raw.get("perplexity")
        n, toks = len(raw.get("loss_examples", [])), raw.get("loss_tokens", 0)
        where = f"on {n} validation examples ({toks} tokens)"
        if not _finite(loss):
            out.append(
                result(
                    "smoke.loss",
                    Level.FAIL,
                    f"the base model's loss {where} is {loss}: the weights or the way they are loaded are broken",
                )
            )
        elif not _finite(ppl) or float(ppl or 0) >= max_perplexity:
            out.append(
                result(
                    "smoke.loss",
                    Level.FAIL,
                    f"the base model's perplexity {where} is {ppl:.4g}, not below preflight.max_perplexity "
                    f"({max_perplexity:g}): a broken checkpoint, wrong loading path or wrong chat template "
                    "looks like this (Gemma 4's checkpointing bug gave 2.7M)",
                )
            )
        else:
            out.append(
                result("smoke.loss", Level.OK, f"perplexity {ppl:.3g} (loss {loss:.3f}) {where} < {max_perplexity:g}")
            )
    if "generation" in raw:
        text = str(raw.get("generation") or "")
        if text.strip():
            snippet = text.strip().replace("\n", " ")[:60]
            cut = f" (cut off at {SMOKE_MAX_TOKENS} tokens)" if raw.get("generation_truncated") else ""
            out.append(
                result("smoke.generation", Level.OK, f"greedy reply to {raw.get('generation_example')}: {snippet!r}{cut}")
            )
        else:
            out.append(
                result(
                    "smoke.generation",
                    Level.FAIL,
                    f"greedy generation for {raw.get('generation_example')} returned nothing: check the chat "
                    "template's generation prompt and the eos tokens in generation_config.json",
                )
            )
    if "train_losses" in raw:
        losses = raw["train_losses"]
        batch = raw.get("train_batch", {})
        shape = f"batch {batch.get('batch_size')} x {batch.get('tokens')} tokens"
        if not all(_finite(x) for x in losses) or not raw.get("grads_finite") or not raw.get("params_finite"):
            out.append(
                result(
                    "smoke.training",
                    Level.FAIL,
                    f"two LoRA steps ({shape}) gave losses {losses}, finite gradients: {raw.get('grads_finite')}, "
                    f"finite parameters: {raw.get('params_finite')}; training would diverge{log}",
                )
            )
        else:
            out.append(
                result("smoke.training", Level.OK, f"two LoRA steps ({shape}): loss {', '.join(f'{x:.3f}' for x in losses)}")
            )
        ref = raw.get("reference_loss")
        if losses and isinstance(ref, int | float) and _finite(ref) and _finite(losses[0]):
            gap = abs(losses[0] - ref)
            if gap > max(FORWARD_TOLERANCE_NATS, FORWARD_TOLERANCE_SHARE * abs(ref)):
                out.append(
                    result(
                        "smoke.train_forward",
                        Level.FAIL,
                        f"the training forward pass gives loss {losses[0]:.4f} where inference gives {ref:.4f} on the "
                        "same batch: training would optimise a different model (the Gemma 4 checkpointing bug looked "
                        "like this); try training.grad_checkpoint: false",
                    )
                )
            else:
                out.append(
                    result(
                        "smoke.train_forward",
                        Level.OK,
                        f"training and inference agree on the same batch (loss {losses[0]:.4f} vs {ref:.4f})",
                    )
                )
    if raw.get("eval_samples"):
        out.append(_truncation_result(raw["eval_samples"]))
    peak = raw.get("peak_memory_bytes")
    if isinstance(peak, int) and peak > 0:
        out.append(result("smoke.memory", Level.OK, f"peak mlx memory {format_bytes(peak)} (max RSS {format_bytes(raw.get('max_rss_bytes', 0))})"))
    if not raw.get("ok"):
        out.append(
            result(
                "smoke",
                Level.FAIL,
                f"smoke test failed while {raw.get('stage', 'starting')}: {raw.get('error')}{log}",
            )
        )
    return out


def _truncation_result(samples: list[dict[str, Any]]) -> CheckResult:
    """``smoke.truncation``: warn when the base's reply to a category's first eval item stopped at
    the category's ``max_tokens``: the night would score cut-off replies, and a budget too small
    for the champion's style lets any challenger trained on short answers win (issue 14: 6 tokens
    gave the base 0.007 on sentiment, 16 tokens 0.500)."""
    cut = [s for s in samples if s.get("truncated")]
    if not cut:
        return result(
            "smoke.truncation",
            Level.OK,
            f"the base's replies to {len(samples)} eval items (one per category) all ended before max_tokens",
        )
    lines = [
        f"{s['category']}/{s['item_id']}: cut off at {s['max_tokens']} tokens: "
        f"{' '.join(str(s.get('reply', '')).split())[-60:]!r}"
        for s in cut
    ]
    cats = ", ".join(f"{s['category']} ({s['max_tokens']})" for s in cut)
    return result(
        "smoke.truncation",
        Level.WARN,
        f"the base's sample replies stopped at max_tokens in {len(cut)} of {len(samples)} categories: {cats}; "
        "raise the category's max_tokens or evaluation.max_tokens, or scores will compare cut-off replies",
        lines,
    )
