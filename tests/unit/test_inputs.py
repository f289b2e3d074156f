"""Skipping a night whose inputs equal the champion's run's or the newest decided run's (daemon.inputs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from daemon.config import Config
from daemon.inputs import (
    NightInputs,
    RecordedRun,
    TrainingInputs,
    changes,
    decided_changes,
    skip_reason,
    training_section,
    unchanged_reason,
)
from daemon.runsummary import headline

TRAINING = training_section(Config().to_dict())
CHAMPION = TrainingInputs("base", "data", TRAINING, {"mlx": "0.32.4", "mlx-lm": "0.32.2"})


def test_identical_inputs_skip_with_a_one_line_reason() -> None:
    """Regression: an unchanged night retrained for 8 minutes to a bit-identical adapter."""
    reason = unchanged_reason(3, CHAMPION, replace(CHAMPION))
    assert reason is not None and "\n" not in reason
    assert reason.startswith("nothing changed since run 3 trained the champion")
    assert reason.endswith("would reproduce it (nightshift run-now --force trains anyway)")
    assert headline("skipped", None, reason).count("skipped") == 1  # reviewer: "skipped: ...; skipped (...)"


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


# ------------------------------------------------------------ the newest decided run

GATE = Config().to_dict()["promotion"]
TONIGHT = NightInputs(CHAMPION, "champion-scored-fp", GATE)
REJECTED = RecordedRun(5, "rejected", TONIGHT)


def test_a_night_equal_to_the_last_rejected_one_is_skipped_naming_it() -> None:
    """Regression: a night identical to the last (rejected) night retrained to the same rejection,
    because only the champion's run was compared."""
    tonight = replace(TONIGHT, trained=replace(CHAMPION, dataset_sha256="new data since the champion"))
    decided = RecordedRun(5, "rejected", tonight)
    assert skip_reason(tonight, champion_run=(3, CHAMPION), decided=None) is None
    reason = skip_reason(tonight, champion_run=(3, CHAMPION), decided=decided)
    assert reason is not None and "\n" not in reason
    assert reason.startswith("nothing changed since run 5 (rejected): ")
    assert reason.endswith("its outcome (nightshift run-now --force trains anyway)")
    assert headline("skipped", None, reason).count("skipped") == 1
    # the base is still the champion (no champion run): an equal rejected night is skipped too
    assert skip_reason(tonight, champion_run=None, decided=decided) == reason
    assert "awaiting approval" in (skip_reason(tonight, None, RecordedRun(6, "awaiting_approval", tonight)) or "")


def test_the_champions_run_is_named_first() -> None:
    reason = skip_reason(TONIGHT, champion_run=(3, CHAMPION), decided=REJECTED)
    assert reason is not None and reason.startswith("nothing changed since run 3 trained the champion")


@pytest.mark.parametrize(
    ("tonight", "changed"),
    [
        (replace(TONIGHT, trained=replace(CHAMPION, base_sha256="b2")), ["base model"]),
        (replace(TONIGHT, champion_eval="another champion or suite"), ["champion or eval suite"]),
        (replace(TONIGHT, gate={**GATE, "min_gain": 0.01}), ["promotion gate (promotion.min_gain)"]),
    ],
)
def test_a_change_since_the_decided_run_trains(tonight: NightInputs, changed: list[str]) -> None:
    assert decided_changes(REJECTED.inputs, tonight) == changed
    assert skip_reason(tonight, champion_run=None, decided=REJECTED) is None


def test_an_unrecorded_champion_score_counts_as_changed() -> None:
    """A decided run without a champion eval set cannot prove tonight would score the same."""
    old = RecordedRun(5, "rejected", replace(TONIGHT, champion_eval=None))
    assert skip_reason(TONIGHT, champion_run=None, decided=old) is None
