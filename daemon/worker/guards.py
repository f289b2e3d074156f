"""What the training child watches between steps (pure Python, no mlx: unit-tested directly).

* :class:`BestCheckpoint`: the lowest trained validation loss so far, the
  untrained adapter's (iteration 0) as the bar, and how many evaluations have
  passed without improvement (early stopping's patience).
* :class:`LossSpikeWatch`: abort when the training loss stays above a multiple
  of its running median.
* :func:`needs_final_validation`: whether the final weights need a validation
  pass of their own before the best checkpoint is chosen.

The first two serialise to JSON for the resume checkpoint.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

SPIKE_WINDOW = 20
"""Reports in the running median of the training loss."""
SPIKE_MIN_HISTORY = 3
"""Reports needed before the spike watchdog judges (the first losses have no baseline)."""


@dataclass
class BestCheckpoint:
    """The best trained checkpoint: the lowest validation loss after iteration 0.

    Iteration 0 is the untrained adapter (LoRA's B matrices start at zero, so it
    is the base model): it is never a candidate, only the bar a trained
    checkpoint must clear. A night whose trained checkpoints all score worse
    than it has nothing to offer (:meth:`no_improvement`).

    Attributes:
        iteration: iteration of the lowest trained validation loss (None before the first).
        val_loss: that loss (nats/token).
        evals_since_best: evaluations that improved on neither the best trained loss
            nor the untrained one (early stopping's patience).
        untrained_val_loss: the validation loss at iteration 0, or None (not validated, or resumed
            from a checkpoint written before it was kept).
    """

    iteration: int | None = None
    val_loss: float | None = None
    evals_since_best: int = 0
    untrained_val_loss: float | None = None

    def observe(self, iteration: int, val_loss: float) -> bool:
        """Record one validation; True when it is a new best trained checkpoint (strictly
        lower; a NaN never is; iteration 0 never is)."""
        finite = math.isfinite(val_loss)
        if iteration == 0:
            self.untrained_val_loss = val_loss if finite else None
            return False
        bar = min((x for x in (self.val_loss, self.untrained_val_loss) if x is not None), default=math.inf)
        self.evals_since_best = 0 if finite and val_loss < bar else self.evals_since_best + 1
        if finite and (self.val_loss is None or val_loss < self.val_loss):
            self.iteration, self.val_loss = iteration, val_loss
            return True
        return False

    def no_improvement(self) -> str | None:
        """Why the night has no challenger worth evaluating, or None when it has one.

        Either no trained weights were validated, or the best of them scored no
        better than the untrained adapter (evaluating it would spend the whole
        evaluation stage on an adapter that at best equals the base model).
        """
        if self.iteration is None or self.val_loss is None:
            return "no trained checkpoint was validated; raise training.iters or lower training.steps_per_eval"
        if self.untrained_val_loss is not None and self.val_loss >= self.untrained_val_loss:
            return (
                f"no trained checkpoint improved the validation loss of the untrained adapter "
                f"({self.untrained_val_loss:.4g} at iteration 0; best trained {self.val_loss:.4g} at iteration "
                f"{self.iteration}): lower training.learning_rate, add training.warmup_steps, or check that "
                "valid.jsonl matches train.jsonl"
            )
        return None

    def patience_exhausted(self, patience: int | None) -> bool:
        """True when ``patience`` evaluations in a row did not improve (never when patience is None)."""
        return patience is not None and self.evals_since_best >= patience

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the resume checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestCheckpoint:
        """Inverse of :meth:`to_dict` (a checkpoint written before iteration 0 stopped being
        a candidate may name it as the best: it becomes the untrained loss)."""
        best = cls(**data)
        if best.iteration == 0:
            best.untrained_val_loss, best.iteration, best.val_loss = best.val_loss, None, None
        return best


@dataclass
class LossSpikeWatch:
    """Trips when the training loss exceeds ``factor`` x the median of the previous
    :data:`SPIKE_WINDOW` reports for ``reports`` consecutive reports.

    A single bad batch does not abort a night; a run that diverges does. The
    median (not the mean) keeps one spike from raising the baseline.
    """

    factor: float | None
    reports: int = 3
    history: list[float] = field(default_factory=list)
    over: int = 0

    def observe(self, iteration: int, loss: float) -> str | None:
        """Record one report; returns the reason to abort, or None."""
        if self.factor is None or not math.isfinite(loss):
            return None
        baseline = statistics.median(self.history) if len(self.history) >= SPIKE_MIN_HISTORY else None
        if baseline is not None and loss > self.factor * baseline:
            self.over += 1
        else:
            self.over = 0
        self.history = (self.history + [loss])[-SPIKE_WINDOW:]
        if baseline is not None and self.over >= self.reports:
            return (
                f"training loss {loss:.4g} at iteration {iteration} stayed above {self.factor:g} x its running "
                f"median ({baseline:.4g}) for {self.over} reports; lower training.learning_rate, set "
                "training.max_grad_norm, or check the dataset"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the resume checkpoint."""
        return {"history": self.history, "over": self.over}

    def restore(self, data: dict[str, Any]) -> None:
        """Load what :meth:`to_dict` saved (the factor comes from tonight's config)."""
        self.history = [float(x) for x in data.get("history", [])]
        self.over = int(data.get("over", 0))


def needs_final_validation(last_validated: int | None, done: int, grad_accumulation: int = 1) -> bool:
    """Whether the weights after ``done`` iterations need a validation pass of their own.

    Iterations are mlx-lm's: one batch each; the optimizer updates the weights at
    every ``grad_accumulation``-th one (``it % grad_accumulation == 0``), so the
    weights after iteration ``i`` are those of optimizer update ``i // grad_accumulation``.

    Rule: the final weights are validated unless **at most one optimizer update**
    went unscored since the last validation. mlx-lm validates before the step of
    its last iteration, so a completed run's final update is never scored; scoring
    it would cost a whole extra pass (``val_batches`` forward passes: 12.5 s of a
    60-iteration night on SmolLM2-135M on 2 CPU cores, 6% of the training stage),
    so the best checkpoint is chosen among the weights already validated. With
    ``grad_accumulation`` 4 and 40 iterations, the last validation (iteration 39)
    scores update 9 of 10: one update unscored, no extra pass. A run stopped
    between validations (the deadline) may have several unscored updates, and a
    run whose only validation scored the untrained adapter (iteration 0) has
    nothing trained to choose: those are validated once more. Early stopping
    ends right after a validation, so it needs none.

    Args:
        last_validated: the iteration of the last validation pass (None: none ran).
        done: iterations completed.
        grad_accumulation: iterations per optimizer update (``training.grad_accumulation``).
    """
    updates_done = done // grad_accumulation
    if last_validated is None or last_validated == 0:
        return updates_done > 0
    return updates_done - last_validated // grad_accumulation > 1
