"""Fuse child: ``python -m daemon.worker.fuse REQUEST.json``.

Merges a LoRA adapter into the base weights with mlx-lm (the same steps as
``mlx_lm.fuse``: load with the adapter, ``fuse()`` each LoRA layer, save) and
writes a complete model directory that any mlx-lm server can load.

A quantized base is fused with dequantization (``mlx_lm.fuse --dequantize``):
fusing onto quantized weights re-quantizes the sum, which loses most of the
LoRA delta (mlx-lm issues #1172, #1564), so the fused model would not be the
model the gate scored.

When ``probes`` are given, the fused model (loaded back from ``out_dir``, as a
server would load it) generates replies to those eval prompts with the eval's
decoding (greedy, batched like :mod:`daemon.worker.evaluate`), and the result
counts how many equal the replies recorded for base + adapter.

Request keys: ``base_model``, ``adapter_path``, ``out_dir``, ``result_file``,
optional ``probes`` (``[{"messages", "max_tokens", "expected"}]``) and ``batch_size``.
Result: ``{"ok", "fused_layers", "dequantized", "probes", "identical", "mismatches"}``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from daemon.worker.common import EXIT_OK, read_request, watch_parent, write_json


def main(argv: list[str]) -> int:
    watch_parent()
    req = read_request(argv)
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    model, tokenizer, config = load(req["base_model"], adapter_path=req["adapter_path"], return_config=True)
    dequantize = bool(config.get("quantization") or config.get("quantization_config"))
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    out_dir = Path(req["out_dir"])
    save(out_dir, req["base_model"], model, tokenizer, config, donate_model=False)
    result: dict[str, Any] = {"ok": True, "fused_layers": len(fused), "dequantized": dequantize}
    probes = req.get("probes") or []
    if probes:
        del model
        fused_model, fused_tokenizer = load(str(out_dir))
        replies = _generate(fused_model, fused_tokenizer, probes, int(req.get("batch_size") or 16))
        same = [r.strip() == p["expected"].strip() for r, p in zip(replies, probes, strict=True)]
        result.update(
            probes=len(probes),
            identical=sum(same),
            mismatches=[
                {"expected": p["expected"], "fused": r} for r, p, ok in zip(replies, probes, same, strict=True) if not ok
            ][:3],
        )
    write_json(Path(req["result_file"]), result)
    return EXIT_OK


def _generate(model: Any, tokenizer: Any, probes: list[dict[str, Any]], batch_size: int) -> list[str]:
    """Greedy replies, batched as the eval child batches them."""
    from mlx_lm.generate import batch_generate

    model.eval()
    out: list[str] = []
    for start in range(0, len(probes), batch_size):
        chunk = probes[start : start + batch_size]
        tokens = [
            list(tokenizer.apply_chat_template(p["messages"], add_generation_prompt=True, return_dict=False))
            for p in chunk
        ]
        response = batch_generate(
            model, tokenizer, tokens, max_tokens=[int(p["max_tokens"]) for p in chunk],
            prefill_batch_size=len(chunk), completion_batch_size=len(chunk),
        )
        out.extend(response.texts)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv))
