"""Resume checkpoints and the best adapter, written by rank 0 of the training child.

mlx-lm's ``--resume-adapter-file`` restores adapter weights only. A resume
checkpoint here also holds the optimizer state (Adam moments and ``step``,
which drives the learning-rate schedule) and the trainer's position, so a run
interrupted at iteration 300 of 1000 continues with iteration 301 as if it had
never stopped (same batches, same schedule). Layout under
``<run_dir>/checkpoints/``::

    best_adapters.safetensors     lowest validation loss so far
    resume-0000300/adapters.safetensors, optimizer.safetensors, state.json
    latest.json                   {"dir": "resume-0000300", "iteration": 300, "fingerprint": ...}

A checkpoint directory is complete before ``latest.json`` names it (written
aside, renamed, then ``latest.json`` replaced atomically); older ones are
deleted after.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from daemon.worker.common import BEST_ADAPTER, LATEST_CHECKPOINT, write_json

ADAPTER_FILE = "adapters.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
RESUME_PREFIX = "resume-"


@dataclass(frozen=True)
class ResumePoint:
    """A loaded resume checkpoint.

    Attributes:
        iteration: optimizer updates done when it was written.
        adapter: LoRA weights by parameter path.
        optimizer: the flattened optimizer state (``step``, ``learning_rate``, moments).
        state: the trainer's JSON state (best checkpoint, spike history, tokens).
        best_adapter: the best adapter at that point, if one was saved.
    """

    iteration: int
    adapter: dict[str, mx.array]
    optimizer: dict[str, mx.array]
    state: dict[str, Any]
    best_adapter: Path | None


def save_adapter(path: Path, model: nn.Module) -> None:
    """Write the model's trainable (LoRA) weights atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.stem}.tmp.safetensors")
    mx.save_safetensors(str(tmp), dict(tree_flatten(model.trainable_parameters())))
    os.replace(tmp, path)


def save_resume(
    ckpt_dir: Path,
    iteration: int,
    model: nn.Module,
    optimizer: optim.Optimizer,
    state: dict[str, Any],
    fingerprint: str,
) -> Path:
    """Write a complete resume checkpoint at ``iteration`` and point ``latest.json`` at it.

    Returns:
        The checkpoint directory.
    """
    name = f"{RESUME_PREFIX}{iteration:07d}"
    final = ckpt_dir / name
    tmp = ckpt_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / ADAPTER_FILE), dict(tree_flatten(model.trainable_parameters())))
    mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
    best = ckpt_dir / BEST_ADAPTER
    if best.is_file():
        os.link(best, tmp / BEST_ADAPTER)  # the best file is replaced by rename: this keeps tonight's copy
    (tmp / STATE_FILE).write_text(json.dumps({**state, "iteration": iteration}), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json(ckpt_dir / LATEST_CHECKPOINT, {"dir": name, "iteration": iteration, "fingerprint": fingerprint})
    for old in ckpt_dir.glob(f"{RESUME_PREFIX}*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_resume(path: Path) -> ResumePoint:
    """Load a checkpoint directory written by :func:`save_resume`.

    Raises:
        FileNotFoundError: a file of the checkpoint is missing.
    """
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    best = path / BEST_ADAPTER
    return ResumePoint(
        iteration=int(state["iteration"]),
        adapter=dict(mx.load(str(path / ADAPTER_FILE)).items()),  # type: ignore[union-attr]
        optimizer=dict(mx.load(str(path / OPTIMIZER_FILE)).items()),  # type: ignore[union-attr]
        state=state,
        best_adapter=best if best.is_file() else None,
    )


def restore(point: ResumePoint, model: nn.Module, optimizer: optim.Optimizer) -> None:
    """Load the checkpoint's adapter into ``model`` and its state into ``optimizer``.

    Call before mlx-lm's ``train`` (its compiled step captures ``optimizer.state``).

    Raises:
        ValueError: the adapter does not fit the model (another LoRA shape).
    """
    model.load_weights(list(point.adapter.items()), strict=False)
    expected = {k for k, _ in tree_flatten(model.trainable_parameters())}
    if set(point.adapter) != expected:
        raise ValueError("the resume checkpoint's adapter does not match tonight's LoRA layers")
    optimizer.state = tree_unflatten(list(point.optimizer.items()))
    optimizer.init(model.trainable_parameters())  # marks it initialised; keeps the loaded moments
    mx.eval(model.parameters(), optimizer.state)
