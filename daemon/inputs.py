"""What a challenger's weights are a function of, and whether it changed since the champion's run.

Training is deterministic given the base model's files, the dataset, the
training section of the config (seed included) and the mlx/mlx-lm versions: a
night whose inputs equal those of the run that trained the champion would spend
its hours reproducing the champion bit for bit (measured: 8 minutes to an
identical adapter on a small model), and a tie never promotes. Such a night is
skipped unless forced (``nightshift run-now --force``). Pure comparisons here;
the pipeline gathers the values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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


def changes(champion: TrainingInputs, current: TrainingInputs) -> list[str]:
    """What differs between the champion's run and tonight, in words; empty when nothing does.

    An input not recorded for the champion (None) counts as changed: skipping needs proof.
    """
    out = []
    if champion.base_sha256 != current.base_sha256:
        out.append("base model")
    if champion.dataset_sha256 is None or champion.dataset_sha256 != current.dataset_sha256:
        out.append("dataset")
    if _canonical(champion.training) != _canonical(current.training):
        keys = sorted(
            k
            for k in set(champion.training) | set(current.training)
            if _canonical(champion.training.get(k)) != _canonical(current.training.get(k))
        )
        out.append("training config (" + ", ".join(f"training.{k}" for k in keys) + ")")
    for name, version in current.versions.items():
        if champion.versions.get(name) is None or champion.versions.get(name) != version:
            out.append(f"{name} version")
    return out


def unchanged_reason(champion_run_id: int, champion: TrainingInputs, current: TrainingInputs) -> str | None:
    """The one-line reason to skip tonight, or None when something changed.

    Returns:
        e.g. ``nothing changed since run 3 trained the champion (base model, dataset,
        training config, mlx and mlx-lm versions): skipped; nightshift run-now --force trains anyway``.
    """
    if changes(champion, current):
        return None
    return (
        f"nothing changed since run {champion_run_id} trained the champion (base model, dataset, "
        "training config, mlx and mlx-lm versions): training again would reproduce it; "
        "skipped (nightshift run-now --force trains anyway)"
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
