"""A night's preflight fails on what evaluation would fail on, before any training starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import PreflightFailed
from daemon.pipeline import run_pipeline
from daemon.registry import Registry
from tests.unit.test_preflight_suite import BROKEN_SUITE, NUMBERS


def assert_failed_before_training(state: Path, *needles: str) -> None:
    reg = Registry.open(state)
    try:
        last = reg.last_run()
        assert last is not None and last.status == "failed"
        for needle in needles:
            assert needle in (last.failure_reason or ""), last.failure_reason
        stages = [s.stage for s in reg.stages(last.id)]
        assert "training" not in stages
        run_dir = Path(last.run_dir or "")
    finally:
        reg.close()
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "adapter").exists()
    assert not (run_dir / "train.log").exists()


def test_suite_errors_and_a_missing_judge_fail_the_night_before_training(demo_workspace: Path) -> None:
    """Regression (issue 14): ten suite errors and a missing judge command failed only after training."""
    suite = demo_workspace / "eval" / "suite.yaml"
    good = suite.read_text()
    suite.write_text(BROKEN_SUITE)
    (demo_workspace / "eval" / "numbers.jsonl").write_text(NUMBERS)
    cfg = load_config(demo_workspace / "nightshift.yaml", "quick")
    with pytest.raises(PreflightFailed, match=r"suite: Invalid eval suite .*: 10 problem\(s\)"):
        run_pipeline(cfg)
    assert_failed_before_training(cfg.paths.state_dir, "categories[0].kind")

    no_judge, n = re.subn(r"command: \[.*\]", "command: [nightshift-no-such-judge]", good)
    assert n == 1
    suite.write_text(no_judge)
    with pytest.raises(PreflightFailed, match=r"suite.judge: category reply: Judge command 'nightshift-no-such-judge'"):
        run_pipeline(cfg)
    assert_failed_before_training(cfg.paths.state_dir, "nightshift-no-such-judge")


def test_bad_time_zone_fails_run_now(demo_workspace: Path) -> None:
    """Regression: a bad schedule.timezone passed --run-now and was only rejected by status/start."""
    path = demo_workspace / "nightshift.yaml"
    path.write_text(path.read_text() + "\nschedule:\n  timezone: Mars/Olympus\n")
    cfg = load_config(path, "quick")
    with pytest.raises(PreflightFailed, match=r"schedule: schedule.timezone: unknown IANA time zone 'Mars/Olympus'"):
        run_pipeline(cfg)
    assert_failed_before_training(cfg.paths.state_dir, "Mars/Olympus")


def test_eval_generation_records_replies_cut_off_at_max_tokens(demo_template: Path) -> None:
    """Regression: replies cut off at max_tokens were scored without a flag (issue 14)."""
    from mlx_lm.utils import load

    from daemon.worker.evaluate import generate_batch

    model, tokenizer = load(str(demo_template / "models" / "base"))[:2]
    prompt = list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "Review: a wonderful, moving film. Sentiment?"}],
            add_generation_prompt=True,
            return_dict=False,
        )
    )
    (short_text, short_cut, short_n), (text, cut, n) = generate_batch(model, tokenizer, [prompt, prompt], [1, 64])
    assert (short_cut, short_n) == (True, 1)  # stopped by its budget
    assert not cut and 1 < n < 64  # the same reply, finished with an end-of-sequence token
    assert text.startswith(short_text)
