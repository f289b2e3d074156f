"""What the training child watches between steps (pure Python, no mlx: unit-tested directly).

* :class:`BestCheckpoint`: the lowest validation loss so far and how many
  evaluations have passed without improvement (early stopping's patience).
* :class:`LossSpikeWatch`: abort when the training loss stays above a multiple
  of its running median.
* :func:`needs_final_validation`: whether the final weights need a validation
  pass of their own before the best checkpoint is chosen.

Both serialise to JSON for the resume checkpoint.
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
    """The best validation loss seen and the iteration that had it.

    Attributes:
        iteration: iteration of the best validation loss (None before the first).
        val_loss: that loss (nats/token).
        evals_since_best: evaluations after the best one that did not improve on it.
    """

    iteration: int | None = None
    val_loss: float | None = None
    evals_since_best: int = 0

    def observe(self, iteration: int, val_loss: float) -> bool:
        """Record one validation; True when it is a new best (strictly lower; a NaN never is)."""
        if math.isfinite(val_loss) and (self.val_loss is None or val_loss < self.val_loss):
            self.iteration, self.val_loss, self.evals_since_best = iteration, val_loss, 0
            return True
        self.evals_since_best += 1
        return False

    def patience_exhausted(self, patience: int | None) -> bool:
        """True when ``patience`` evaluations in a row did not improve (never when patience is None)."""
        return patience is not None and self.evals_since_best >= patience

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the resume checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BestCheckpoint:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


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


def needs_final_validation(last_validated: int | None, done: int) -> bool:
    """Whether the weights after ``done`` optimizer iterations need a validation pass of their own.

    mlx-lm validates before the step of its last iteration, so a completed run's
    last validated weights are one step short of the final ones. Scoring that one
    step would cost a whole extra pass (``val_batches`` forward passes: 12.5 s of a
    60-iteration night on SmolLM2-135M on 2 CPU cores, 6% of the training stage),
    so the best checkpoint is chosen among the weights already validated. A run
    stopped between validations (the deadline) may have many unscored
    iterations, and a run whose only validation scored the untrained adapter
    (iteration 0) has nothing trained to choose: those are validated once more.
    Early stopping ends right after a validation, so it needs none.

    Args:
        last_validated: the iteration of the last validation pass (None: none ran).
        done: optimizer iterations completed.
    """
    if last_validated is None or last_validated == 0:
        return done > 0
    return done - last_validated > 1
