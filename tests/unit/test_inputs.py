"""Skipping a night whose training inputs equal the champion's run's (daemon.inputs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daemon.config import Config
from daemon.inputs import TrainingInputs, changes, training_section, unchanged_reason

TRAINING = training_section(Config().to_dict())
CHAMPION = TrainingInputs("base", "data", TRAINING, {"mlx": "0.32.4", "mlx-lm": "0.32.2"})


def test_identical_inputs_skip_with_a_one_line_reason() -> None:
    """Regression: an unchanged night retrained for 8 minutes to a bit-identical adapter."""
    reason = unchanged_reason(3, CHAMPION, replace(CHAMPION))
    assert reason is not None and "\n" not in reason
    assert reason.startswith("nothing changed since run 3 trained the champion")
    assert reason.endswith("skipped (nightshift run-now --force trains anyway)")


@pytest.mark.parametrize(
    ("tonight", "changed"),
    [
        (replace(CHAMPION, base_sha256="other"), ["base model"]),
        (replace(CHAMPION, dataset_sha256="other"), ["dataset"]),
        (replace(CHAMPION, training={**TRAINING, "seed": 7}), ["training config (training.seed)"]),
        (
            replace(CHAMPION, training={**TRAINING, "lora": {**TRAINING["lora"], "rank": 4}}),
            ["training config (training.lora)"],
        ),
        (replace(CHAMPION, versions={"mlx": "0.33.0", "mlx-lm": "0.32.2"}), ["mlx version"]),
    ],
)
def test_any_changed_input_trains(tonight: TrainingInputs, changed: list[str]) -> None:
    assert changes(CHAMPION, tonight) == changed
    assert unchanged_reason(3, CHAMPION, tonight) is None


def test_unrecorded_champion_inputs_count_as_changed() -> None:
    old = replace(CHAMPION, dataset_sha256=None, versions={"mlx": None, "mlx-lm": None})
    assert changes(old, CHAMPION) == ["dataset", "mlx version", "mlx-lm version"]


def test_a_timeout_or_log_cadence_is_not_a_change() -> None:
    cfg = Config().to_dict()
    cfg["training"] |= {"timeout_s": 60.0, "steps_per_report": 1}
    assert training_section(cfg) == TRAINING
