"""What a night's outcome is a function of, and whether it changed since an earlier run.

Training is deterministic given the base model's files, the dataset, the
training section of the config (seed included) and the mlx/mlx-lm versions: a
night whose inputs equal those of the run that trained the champion would spend
its hours reproducing the champion bit for bit (measured: 8 minutes to an
identical adapter on a small model), and a tie never promotes. Likewise a night
equal to the newest decided run (same training inputs, the same champion scored
under the same eval fingerprint, the same gate) reproduces that run's outcome,
e.g. the same rejection. Such a night is skipped unless forced
(``nightshift --run-now --force``). Pure comparisons here; the pipeline gathers
the recorded values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DECIDED_STATUSES = ("promoted", "rejected", "awaiting_approval")
"""Run states (``RunStatus`` values) whose gate decision stands: an equal night reproduces it."""

IGNORED_TRAINING_KEYS = frozenset({"timeout_s", "steps_per_report"})
"""``training`` keys that do not change the trained weights (a limit and a log cadence)."""


@dataclass(frozen=True)
class TrainingInputs:
    """The inputs of one training run.

    Attributes:
        base_sha256: content hash of the base model's files (:func:`daemon.fingerprint.dir_sha256`).
        dataset_sha256: content hash of ``train.jsonl`` + ``valid.jsonl``
            (:func:`daemon.fingerprint.dataset_fingerprint`); None when not recorded.
        training: the config's ``training`` section as a JSON-able dict, minus
            :data:`IGNORED_TRAINING_KEYS`.
        versions: ``{"mlx": ..., "mlx-lm": ...}``; a value is None when not recorded.
    """

    base_sha256: str
    dataset_sha256: str | None
    training: dict[str, Any]
    versions: dict[str, str | None]


def training_section(config_snapshot: dict[str, Any]) -> dict[str, Any]:
    """The weight-relevant part of a config snapshot's ``training`` section (``Config.to_dict()`` form)."""
    section = config_snapshot.get("training") or {}
    return {k: v for k, v in section.items() if k not in IGNORED_TRAINING_KEYS}


def _differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The keys whose canonical values differ between two config sections (a key missing on
    one side differs from any value, ``None`` included), sorted."""
    return sorted(
        k for k in set(a) | set(b) if k not in a or k not in b or _canonical(a[k]) != _canonical(b[k])
    )


def changes(champion: TrainingInputs, current: TrainingInputs) -> list[str]:
    """What differs between the champion's run and tonight, in words; empty when nothing does.

    An input not recorded for the champion (None) counts as changed: skipping needs proof.
    """
    out = []
    if champion.base_sha256 != current.base_sha256:
        out.append("base model")
    if champion.dataset_sha256 is None or champion.dataset_sha256 != current.dataset_sha256:
        out.append("dataset")
    if keys := _differing_keys(champion.training, current.training):
        out.append("training config (" + ", ".join(f"training.{k}" for k in keys) + ")")
    for name, version in current.versions.items():
        if champion.versions.get(name) is None or champion.versions.get(name) != version:
            out.append(f"{name} version")
    return out


def unchanged_reason(champion_run_id: int, champion: TrainingInputs, current: TrainingInputs) -> str | None:
    """The one-line reason to skip tonight, or None when something changed.

    Returns:
        e.g. ``nothing changed since run 3 trained the champion (base model, dataset,
        training config, mlx and mlx-lm versions): training again would reproduce it
        (nightshift run-now --force trains anyway)``; the headline says "skipped" before it.
    """
    if changes(champion, current):
        return None
    return (
        f"nothing changed since run {champion_run_id} trained the champion (base model, dataset, "
        "training config, mlx and mlx-lm versions): training again would reproduce it "
        "(nightshift run-now --force trains anyway)"
    )


@dataclass(frozen=True)
class NightInputs:
    """Everything a night's outcome is a function of.

    Attributes:
        trained: the training inputs (they fix the challenger's weights).
        champion_eval: the champion's evaluation fingerprint
            (:func:`daemon.evaluate.eval_fingerprint`: its content identity, the suite's content,
            judge files, decoding, held-out loss settings, versions); None when not recorded.
        gate: the config's ``promotion`` section (``Config.to_dict()`` form).
    """

    trained: TrainingInputs
    champion_eval: str | None
    gate: dict[str, Any]


@dataclass(frozen=True)
class RecordedRun:
    """A decided run's recorded inputs.

    Attributes:
        run_id: the run.
        outcome: its status value, one of :data:`DECIDED_STATUSES`.
        inputs: what it was a function of, as recorded.
    """

    run_id: int
    outcome: str
    inputs: NightInputs


def decided_changes(decided: NightInputs, tonight: NightInputs) -> list[str]:
    """What differs between a decided run and tonight, in words; empty when nothing does.

    :func:`changes` of the training inputs, then ``champion or eval suite`` when the champion's
    eval fingerprint differs (or was not recorded) and ``promotion gate (promotion.KEY, ...)``.
    """
    out = changes(decided.trained, tonight.trained)
    if decided.champion_eval is None or decided.champion_eval != tonight.champion_eval:
        out.append("champion or eval suite")
    if keys := _differing_keys(decided.gate, tonight.gate):
        out.append("promotion gate (" + ", ".join(f"promotion.{k}" for k in keys) + ")")
    return out


def skip_reason(
    tonight: NightInputs,
    champion_run: tuple[int, TrainingInputs] | None,
    decided: RecordedRun | None,
) -> str | None:
    """The one-line reason to skip tonight, or None when it must run.

    Args:
        tonight: tonight's inputs.
        champion_run: (run id, recorded training inputs) of the run that trained the champion;
            None while the base model is the champion.
        decided: the newest run in a :data:`DECIDED_STATUSES` state, or None.

    Returns:
        The champion's-run reason (:func:`unchanged_reason`) when tonight would reproduce the
        champion, else ``nothing changed since run 5 (rejected): ...`` when tonight equals the
        newest decided run in every input of :func:`decided_changes`, else None.
    """
    if champion_run is not None:
        reason = unchanged_reason(champion_run[0], champion_run[1], tonight.trained)
        if reason is not None:
            return reason
    if decided is None or decided_changes(decided.inputs, tonight):
        return None
    return (
        f"nothing changed since run {decided.run_id} ({decided.outcome.replace('_', ' ')}): same base model, "
        "dataset, training config, mlx and mlx-lm versions, champion, eval suite and gate; training again "
        "would reproduce its outcome (nightshift run-now --force trains anyway)"
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
