"""Fuse child: ``python -m daemon.worker.fuse REQUEST.json``.

Merges a LoRA adapter into the base weights with mlx-lm (the same steps as
``mlx_lm.fuse``: load with the adapter, ``fuse()`` each LoRA layer, save) and
writes a complete model directory that any mlx-lm server can load.
Request keys: ``base_model``, ``adapter_path``, ``out_dir``, ``result_file``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from daemon.worker.common import EXIT_OK, read_request, watch_parent, write_json


def main(argv: list[str]) -> int:
    watch_parent()
    req = read_request(argv)
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import load, save

    model, tokenizer, config = load(req["base_model"], adapter_path=req["adapter_path"], return_config=True)
    fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    save(Path(req["out_dir"]), req["base_model"], model, tokenizer, config, donate_model=False)
    write_json(Path(req["result_file"]), {"ok": True, "fused_layers": len(fused)})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
