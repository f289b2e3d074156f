"""mlx helpers shared by the workers: the corrected loss and adapter swapping."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten


def masked_loss(model: nn.Module, batch: mx.array, lengths: mx.array) -> tuple[mx.array, mx.array]:
    """Mean token cross-entropy over each sample's real targets.

    Args:
        batch: ``(B, T)`` token ids, zero-padded.
        lengths: ``(B, 2)``: prompt offset (first trained target position) and
            sequence length in tokens.

    Returns:
        ``(loss, ntokens)``: scalar mean loss (nats/token) and the token count.

    mlx-lm 0.32's ``default_loss`` masks with ``steps <= lengths``, so every
    sample also trains one padding target (id 0) after its last token and a
    small model learns to emit it. We mask with ``steps < lengths``: target
    ``t`` is token ``t + 1``, and the last real token is ``length - 1``.
    """
    inputs = batch[:, :-1]
    targets = batch[:, 1:]
    logits = model(inputs)
    steps = mx.arange(1, targets.shape[1] + 1)
    mask = mx.logical_and(steps >= lengths[:, 0:1], steps < lengths[:, 1:])
    ce = nn.losses.cross_entropy(logits, targets) * mask
    ntoks = mask.sum()
    ce = ce.astype(mx.float32).sum() / mx.maximum(ntoks, 1)
    return ce, ntoks


def remove_adapters(model: nn.Module) -> int:
    """Replace every LoRA/DoRA wrapper by the frozen layer it wraps.

    Lets one loaded base serve several adapters in turn without reloading
    tens of GB of weights.

    Returns:
        The number of layers unwrapped.
    """
    unwrapped = [
        (name, module.linear)
        for name, module in model.named_modules()
        if hasattr(module, "lora_a") and hasattr(module, "linear")
    ]
    if unwrapped:
        model.update_modules(tree_unflatten(unwrapped))
    return len(unwrapped)


def all_finite(params: Any) -> bool:
    """True when every array in a parameter tree is finite."""
    for _, value in tree_flatten(params):
        if not bool(mx.all(mx.isfinite(value)).item()):
            return False
    return True


def peak_memory_bytes() -> int:
    """mlx's peak memory for this process (bytes)."""
    return int(mx.get_peak_memory())
