"""The night's length, estimated from the smoke test's measured steps.

A 4-bit base trained at ~50 s per iteration on a CPU (21x slower than fp32):
an 80-iteration night would have run past ``training.timeout_s`` and failed
hours later. The smoke child times two LoRA steps on the longest training
batch and one batched generation of eval items, so preflight can say before
the night whether it fits in the configured timeouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from daemon.config import Config
from daemon.preflight.report import CheckResult, Level, result
from daemon.suite import Suite

FORWARD_SHARE = 1 / 3
"""Cost of a forward pass relative to a training step (forward + backward). The backward
pass costs about twice the forward (2N vs 4N FLOPs per token; Kaplan et al. 2020,
arXiv:2001.08361, section 2.1)."""

MODELS_SCORED = 2
"""Models the evaluation generates for on a typical night: the challenger and the champion
(the base's scores are cached after the first night; on the first night the base is the champion)."""


@dataclass(frozen=True)
class NightEstimate:
    """Estimated wall time of a night's two long stages (seconds) and how they were computed.

    Attributes:
        train_s: model load + ``iters`` steps + validation passes.
        eval_s: model load + generation for :data:`MODELS_SCORED` models + loss forwards.
        train_detail / eval_detail: the formula with its numbers, for the message.
    """

    train_s: float
    eval_s: float
    train_detail: str
    eval_detail: str


def estimate_night(
    raw: dict[str, Any], cfg: Config, suite: Suite | None, valid_examples: int
) -> NightEstimate | None:
    """Extrapolate the smoke child's timings (``train_step_s``, ``load_s``,
    ``eval_generation_s``/``eval_generation_steps``) to the configured night (pure).

    Training: ``load_s + iters * step_s + val_passes * val_batches * step_s * FORWARD_SHARE``, with
    ``step_s`` the second (compiled) smoke step on the longest batch of the first 64 examples, and
    mlx-lm's validation schedule (iteration 1, every ``steps_per_eval``, the last).
    Evaluation: per model, ``ceil(prompts / evaluation.batch_size)`` batches times the mean
    ``max_tokens`` decoding steps at the smoke's measured seconds per step (a batch decodes until
    its longest reply ends), plus loss items and held-out examples at a forward pass each.

    Returns:
        None when the smoke child did not get as far as the training steps.
    """
    steps = raw.get("train_step_s") or []
    if not steps:
        return None
    step_s = float(steps[-1])
    load_s = float(raw.get("load_s") or 0.0)
    t = cfg.training
    val_passes = 1 + t.iters // t.steps_per_eval + (0 if t.iters % t.steps_per_eval == 0 else 1)
    val_batches = valid_examples // t.batch_size if t.val_batches == -1 else t.val_batches
    val_s = val_passes * val_batches * step_s * FORWARD_SHARE
    train_s = load_s + t.iters * step_s + val_s
    train_detail = f"{t.iters} iterations x {step_s:.2f} s per step measured by the smoke test"

    decode_steps = int(raw.get("eval_generation_steps") or 0)
    decode_s = float(raw.get("eval_generation_s") or 0.0) / decode_steps if decode_steps else 0.0
    budgets: list[int] = []
    loss_items = 0
    if suite is not None:
        for cat in suite.categories:
            if cat.generates:
                budgets += [cat.max_tokens or cfg.evaluation.max_tokens] * (len(cat.items) * cat.repeats)
            else:
                loss_items += len(cat.items)
    batches = math.ceil(len(budgets) / cfg.evaluation.batch_size) if budgets else 0
    mean_budget = sum(budgets) / len(budgets) if budgets else 0.0
    forwards = loss_items + (min(valid_examples, cfg.evaluation.loss_max_examples) if cfg.evaluation.held_out_loss else 0)
    forward_s = step_s * FORWARD_SHARE / t.batch_size
    per_model = batches * mean_budget * decode_s + forwards * forward_s
    eval_s = load_s + MODELS_SCORED * per_model
    eval_detail = (
        f"{MODELS_SCORED} models x {len(budgets)} replies in {batches} batches, max_tokens {mean_budget:.0f} on "
        f"average, at {decode_s:.3f} s per decoding step"
    )
    return NightEstimate(train_s, eval_s, train_detail, eval_detail)


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def check_night_length(cfg: Config, suite: Suite | None, raw: dict[str, Any] | None) -> list[CheckResult]:
    """``smoke.duration``: fail when the estimated training or evaluation time
    (:func:`estimate_night`) exceeds ``training.timeout_s`` or ``evaluation.timeout_s``."""
    if raw is None:
        return []
    valid = cfg.paths.dataset / "valid.jsonl"
    try:
        n_valid = sum(1 for line in valid.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError):
        n_valid = 0
    est = estimate_night(raw, cfg, suite, n_valid)
    if est is None:
        return []
    over = []
    if est.train_s > cfg.training.timeout_s:
        over.append(
            f"training would take about {format_duration(est.train_s)} ({est.train_detail}), over "
            f"training.timeout_s ({format_duration(cfg.training.timeout_s)}): lower training.iters, "
            "training.batch_size or training.max_seq_len_tokens, or raise training.timeout_s"
        )
    if est.eval_s > cfg.evaluation.timeout_s:
        over.append(
            f"evaluation would take about {format_duration(est.eval_s)} ({est.eval_detail}), over "
            f"evaluation.timeout_s ({format_duration(cfg.evaluation.timeout_s)}): lower max_tokens or the "
            "number of eval items, or raise evaluation.timeout_s"
        )
    if over:
        return [result("smoke.duration", Level.FAIL, "; ".join(over), over)]
    return [
        result(
            "smoke.duration",
            Level.OK,
            f"training about {format_duration(est.train_s)} ({est.train_detail}; timeout "
            f"{format_duration(cfg.training.timeout_s)}), evaluation about {format_duration(est.eval_s)} "
            f"({est.eval_detail}; timeout {format_duration(cfg.evaluation.timeout_s)})",
        )
    ]
