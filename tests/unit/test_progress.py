"""Training progress: processed tokens per second, and one plain line per report step."""

from __future__ import annotations

import io
import time

import pytest

from daemon.cli import TerminalProgress
from daemon.evaluate import EvalProgress
from daemon.train import TrainProgress
from daemon.worker.train import ProcessedTokens


def test_processed_tokens_per_second_counts_prompts_too() -> None:
    """Regression: tok/s counted only unmasked answer tokens (0-1 tok/s shown for ~80 processed)."""
    counter = ProcessedTokens()
    counter.total = 800  # prompts + answers of the batches since the start
    # mlx-lm: 100 answer tokens trained at 10 answer tokens/s = 10 s of steps
    assert counter.per_second(100, 10.0) == pytest.approx(80.0)
    counter.total = 1200
    assert counter.per_second(150, 5.0) == pytest.approx(40.0)  # 400 processed in 50/5 = 10 s
    assert counter.per_second(150, 0.0) == 0.0


def test_processed_tokens_counts_training_batches_not_validation() -> None:
    dataset = [([1, 2, 3, 4, 5], 3), ([1, 2, 3], 1), ([7, 8], 1), ([9, 9, 9, 9], 2)]
    counter = ProcessedTokens()
    batches = counter.iterate(dataset=dataset, batch_size=2, max_seq_length=64, loop=True)
    next(batches)
    next(batches)
    assert counter.total == 5 + 3 + 2 + 4  # one pass over every example, padding excluded
    list(counter.iterate(dataset=dataset, batch_size=2, max_seq_length=64))  # validation: loop=False
    assert counter.total == 14


def test_without_a_terminal_one_line_per_report_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: without a terminal the same step was reprinted every 10 s with a growing ETA
    (about 130 identical lines in one night's log)."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    progress = TerminalProgress(out)
    p = TrainProgress(total=200, started_monotonic=0.0)
    for iteration in (10, 20):
        p.iteration, p.train_loss, p.tokens_per_s, p.trained_tokens = iteration, 1.5, 80.0, 12_345
        for _ in range(130):  # polls while the next report step is computed
            clock[0] += 10
            progress.train(p)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  train 10/200 loss 1.500 12.3k tokens trained 80 tok/s processed ETA ")
    # A validation report at the same iteration is one more line, and it shows the new number
    # (it used to print a line identical to the one before).
    p.val_loss = 1.25
    for _ in range(5):
        clock[0] += 10
        progress.train(p)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[2].startswith("  train 20/200 loss 1.500 val 1.250 12.3k tokens trained ")
    for done in (0, 32, 32, 64):
        progress.evaluate(EvalProgress(model="challenger", done=done, total=64))
    assert out.getvalue().splitlines()[3:] == [
        "  evaluate challenger: 0/64 items",
        "  evaluate challenger: 32/64 items",
        "  evaluate challenger: 64/64 items",
    ]


def test_processed_tokens_are_summed_over_the_ranks() -> None:
    """Regression: with 2 processes processed_tokens (and tok/s) counted only rank 0's shard of
    each batch, half of what 1 process reported for the same batches."""
    counter = ProcessedTokens(sum_ranks=lambda n: n + 500)  # the other rank counted 500
    counter.total = 400
    assert counter.per_second(100, 10.0) == pytest.approx(90.0)  # 900 processed in 10 s
    assert counter.world_total == 900
