"""The smoke test's new judgements (pure): replies cut off at max_tokens, and the night's length
estimated from the measured steps against the configured timeouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.config import Config, config_from_dict
from daemon.preflight import Level
from daemon.preflight.duration import check_night_length, estimate_night
from daemon.preflight.smoke import judge_smoke
from daemon.suite import Category, Item, Suite

SMOKE: dict[str, Any] = {
    "ok": True,
    "stage": "done",
    "generation": 'The word "troubles',
    "generation_example": "valid.jsonl:1",
    "generation_truncated": True,
    "load_s": 0.0,
    "train_step_s": [70.0, 50.0],
    "eval_generation_s": 2.0,
    "eval_generation_steps": 20,
}


def config(**training: Any) -> Config:
    raw = {"training": {"iters": 80, "steps_per_eval": 1000, "val_batches": 3, "batch_size": 1, **training},
           "evaluation": {"held_out_loss": False, "batch_size": 10}}
    return config_from_dict(raw, base_dir=Path("/nonexistent"))


def suite(items: int = 100, max_tokens: int = 16) -> Suite:
    msgs = ({"role": "user", "content": "word?"},)
    cat = Category(
        name="sentiment", kind="label", labels=("positive", "negative"), max_tokens=max_tokens,
        items=tuple(Item(id=str(i), messages=msgs, gold="positive") for i in range(items)),
    )
    return Suite(path=Path("/nonexistent/suite.yaml"), categories=(cat,), fingerprint="x")


def by_name(raw: dict[str, Any]) -> dict[str, Any]:
    return {r.name: r for r in judge_smoke(raw, max_perplexity=1000.0)}


def test_cut_off_sample_replies_warn() -> None:
    """Regression: a 6-token budget cut the base's replies before any label (0.007 on sentiment), unflagged."""
    raw = {
        **SMOKE,
        "eval_samples": [
            {"category": "sentiment", "item_id": "w1", "max_tokens": 6, "reply": 'The word "troubles', "truncated": True},
            {"category": "choice", "item_id": "c1", "max_tokens": 8, "reply": "A", "truncated": False},
        ],
    }
    got = by_name(raw)["smoke.truncation"]
    assert got.level is Level.WARN
    assert got.message.startswith(
        "the base's sample replies stopped at max_tokens in 1 of 2 categories: sentiment (6); "
        "raise the category's max_tokens or evaluation.max_tokens"
    )
    assert got.details == ("sentiment/w1: cut off at 6 tokens: 'The word \"troubles'",)


def test_finished_sample_replies_pass() -> None:
    raw = {**SMOKE, "eval_samples": [{"category": "c", "item_id": "1", "max_tokens": 8, "reply": "A", "truncated": False}]}
    got = by_name(raw)["smoke.truncation"]
    assert (got.level, got.message) == (
        Level.OK, "the base's replies to 1 eval items (one per category) all ended before max_tokens"
    )


def test_cut_off_greedy_reply_is_commented() -> None:
    """Regression: the smoke test's own sample reply was cut off with no comment."""
    got = by_name(SMOKE)["smoke.generation"]
    assert got.message == "greedy reply to valid.jsonl:1: 'The word \"troubles' (cut off at 16 tokens)"


def test_training_longer_than_its_timeout_fails_with_the_numbers() -> None:
    """Regression: at ~50 s per iteration an 80-iteration night ran past training.timeout_s hours later."""
    (got,) = check_night_length(config(timeout_s=3600), suite(), SMOKE)
    # 80 x 50 s + 2 validation passes x 3 batches x 50 s / 3 = 4100 s
    assert got.level is Level.FAIL
    assert got.message == (
        "training would take about 1 h 08 min (80 iterations x 50.00 s per step measured by the smoke test), "
        "over training.timeout_s (1 h 00 min): lower training.iters, training.batch_size or "
        "training.max_seq_len_tokens, or raise training.timeout_s"
    )


def test_evaluation_longer_than_its_timeout_fails() -> None:
    cfg = config_from_dict(
        {"training": {"iters": 10, "batch_size": 1}, "evaluation": {"timeout_s": 60, "batch_size": 10, "held_out_loss": False}},
        base_dir=Path("/nonexistent"),
    )
    est = estimate_night(SMOKE, cfg, suite(items=100, max_tokens=16), 0)
    assert est is not None
    # 2 models x 10 batches x 16 steps x 0.1 s
    assert round(est.eval_s) == 32
    (got,) = check_night_length(cfg, suite(items=1000, max_tokens=16), SMOKE)
    assert got.level is Level.FAIL
    assert got.message.startswith(
        "evaluation would take about 5 min (2 models x 1000 replies in 100 batches, max_tokens 16 on average, "
        "at 0.100 s per decoding step), over evaluation.timeout_s (60 s)"
    )


def test_a_night_that_fits_passes() -> None:
    (got,) = check_night_length(config(iters=10, timeout_s=3600), suite(), SMOKE)
    assert got.level is Level.OK
    assert got.message.startswith("training about 10 min (10 iterations x 50.00 s per step")


def test_truncation_share_per_category() -> None:
    """The eval rows' ``truncated`` flags as shares per category (loss rows and old rows left out)."""
    from daemon.evaluate import Truncation, truncation

    rows = [
        {"category": "sentiment", "truncated": True},
        {"category": "sentiment", "truncated": False},
        {"category": "sentiment", "truncated": True},
        {"category": "json", "truncated": False},
        {"category": "facts", "truncated": None},  # a loss item: no reply
    ]
    got = truncation(rows)
    assert got == {"sentiment": Truncation(2, 3), "json": Truncation(0, 1)}
    assert got["sentiment"].share == 2 / 3
