"""Served = evaluated: a fused release must reproduce base + adapter before it is promoted.

The gate scores base + adapter. With ``promotion.fuse: true`` the release also
carries ``model/`` (the adapter merged into the base), which servers without
LoRA support serve. The fuse child (:mod:`daemon.worker.fuse`) generates
replies with the fused model to a sample of the night's greedy eval prompts;
:func:`fuse_manifest_entry` refuses the promotion when fewer than
``serving.min_match_share`` of them equal the challenger's recorded replies,
and otherwise returns what the release manifest records about the fuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from daemon.config import Config
from daemon.errors import PromotionRefused, SuiteError
from daemon.serving.probes import select_probes

#: At least this many eval prompts check a fuse (``serving.probes`` when larger).
MIN_FUSE_PROBES = 32


def fuse_probes(cfg: Config, replies: Sequence[Any], *, seed: int) -> list[dict[str, Any]]:
    """The fuse child's ``probes``: ``[{"messages", "max_tokens", "expected"}]`` from the challenger's rows.

    Returns an empty list when the suite cannot be loaded or has no greedy items.
    """
    from daemon.suite import load_suite

    try:
        suite = load_suite(cfg.paths.eval_suite)
    except SuiteError:
        return []
    probes = select_probes(
        suite, replies, None, count=max(cfg.serving.probes, MIN_FUSE_PROBES),
        default_max_tokens=cfg.evaluation.max_tokens, seed=seed,
    )
    return [{"messages": p.messages, "max_tokens": p.max_tokens, "expected": p.expected} for p in probes]


def fuse_manifest_entry(cfg: Config, result: dict[str, Any]) -> dict[str, Any]:
    """What the manifest records about the fused model, from the fuse child's result.

    Returns:
        ``{"checked": bool, "dequantized": bool, "probes": n, "identical": k, "method": text}``.

    Raises:
        PromotionRefused: the fused model's replies differ from base + adapter's
            on more than ``1 - serving.min_match_share`` of the probes.
    """
    n = int(result.get("probes") or 0)
    k = int(result.get("identical") or 0)
    dequantized = bool(result.get("dequantized"))
    need = cfg.serving.min_match_share
    if n and k < need * n:
        example = (result.get("mismatches") or [{}])[0]
        raise PromotionRefused(
            f"The fused model does not reproduce the evaluated model (base + adapter): {k}/{n} eval replies "
            f"identical, need {need:.0%} (e.g. expected {example.get('expected')!r}, fused {example.get('fused')!r}). "
            "Serve the adapter instead (promotion.fuse: false)."
        )
    how = "fused with dequantization (the base is quantized)" if dequantized else "fused onto the base weights"
    return {
        "checked": n > 0,
        "dequantized": dequantized,
        "probes": n,
        "identical": k,
        "method": f"{how}; checked against base + adapter on {n} eval prompts: {k}/{n} identical"
        if n
        else f"{how}; not checked (no greedy eval prompts)",
    }
