"""Preflight without ``--smoke`` never loads weights: seconds on a model of tens of GB.

Builds a throwaway workspace around a model directory whose shards total
``--gb`` GB (default 64, a 32B model in bf16): each shard has a real
safetensors header and then a sparse hole made with ``truncate``, so it costs
no disk. Also a byte-level BPE tokenizer with a ChatML template and a
``--examples``-line dataset. Then, in the same run and ``--repeat`` times each:

* the floor: ``cat config.json`` as a child process;
* ``run_preflight(cfg)`` in a fresh Python child (interpreter start, imports
  and every non-smoke check), which also reports the bytes it read
  (``rchar`` from ``/proc/self/io`` on Linux).

Prints the medians and the ratio. Checks: preflight finishes within
``--max-seconds`` (default 10), its ``model.weights`` check saw every shard,
and it read less than 1 % of the weight bytes. Exit status 0 when every check
passes, 1 otherwise. Usage::

    python benchmarks/preflight_sparse.py [--gb 64] [--examples 2000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SHARD_BYTES = 5 * 10**9
"""Tensor bytes per shard, like Hugging Face's default 5 GB shards."""

CHILD = """\
import json, sys, time
tic = time.perf_counter()
from daemon.config import load_config
from daemon.preflight import run_preflight
report = run_preflight(load_config(sys.argv[1]))
elapsed = time.perf_counter() - tic
try:
    rchar = int(next(l.split()[1] for l in open('/proc/self/io') if l.startswith('rchar')))
except OSError:
    rchar = None
weights = next(c for c in report.checks if c.name == 'model.weights')
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers'))
print(json.dumps({'in_process_s': elapsed, 'rchar': rchar, 'weights': [weights.level, weights.message],
                  'levels': {c.name: c.level for c in report.checks}, 'heavy_modules': heavy}))
"""


def write_shard(path: Path, names: list[str], shape: list[int]) -> int:
    """A bf16 safetensors shard: real header, then a sparse hole. Returns its tensor bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    size = shape[0] * shape[1] * 2
    for name in names:
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob)
        fh.truncate(8 + len(blob) + offset)
    return offset


def build_model(root: Path, total_gb: float) -> tuple[int, int]:
    """A Qwen-32B-shaped model directory with sparse shards. Returns (shards, tensor bytes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hidden, layers = 5120, 64
    config = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": 27648,
        "num_hidden_layers": layers,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config, indent=2))
    # Tensors of hidden x 4096 bf16 (40 MiB each), named per layer, to reach total_gb.
    shape = [hidden, 4096]
    tensor_bytes = shape[0] * shape[1] * 2
    n_tensors = int(total_gb * 10**9 // tensor_bytes)
    per_shard = max(1, SHARD_BYTES // tensor_bytes)
    names = [f"model.layers.{i % layers}.block.{i}.weight" for i in range(n_tensors)]
    chunks = [names[i : i + per_shard] for i in range(0, len(names), per_shard)]
    weight_map: dict[str, str] = {}
    total = 0
    for k, chunk in enumerate(chunks, start=1):
        shard = f"model-{k:05d}-of-{len(chunks):05d}.safetensors"
        total += write_shard(root / shard, chunk, shape)
        weight_map |= {n: shard for n in chunk}
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        show_progress=False,
        vocab_size=500,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["what is the sum of two numbers", "the answer is", "system user assistant"] * 50, trainer)
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "chat_template": CHATML})
    )
    return len(chunks), total


def build_workspace(root: Path, total_gb: float, examples: int) -> tuple[Path, int, int]:
    shards, total = build_model(root / "model", total_gb)
    data = root / "data"
    data.mkdir()
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You add numbers."},
                {"role": "user", "content": f"what is the sum of {i} and {i + 1}"},
                {"role": "assistant", "content": f"the answer is {2 * i + 1}"},
            ]
        }
        for i in range(examples)
    ]
    cut = max(1, examples // 10)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[cut:]))
    (data / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:cut]))
    (root / "suite.yaml").write_text(
        "categories:\n  - name: math\n    kind: exact\n    items:\n      - {id: a, prompt: 'what is 1 plus 1', gold: '2'}\n"
    )
    (root / "nightshift.yaml").write_text(
        "paths: {base_model: model, dataset: data, eval_suite: suite.yaml, state_dir: state}\n"
        "training: {lora: {layers: 16, rank: 8}, max_seq_len_tokens: 2048, batch_size: 1, iters: 100}\n"
    )
    return root / "nightshift.yaml", shards, total


def timed(cmd: list[str]) -> tuple[float, str]:
    tic = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - tic, out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=64.0, help="total tensor bytes of the sparse model (GB)")
    parser.add_argument("--examples", type=int, default=2000, help="dataset lines")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as tmp:
        config, shards, total = build_workspace(Path(tmp) / "ws", args.gb, args.examples)
        model_config = str(Path(tmp) / "ws" / "model" / "config.json")
        floor_s: list[float] = []
        preflight_s: list[float] = []
        child: dict[str, Any] = {}
        for _ in range(args.repeat):
            floor_s.append(timed(["cat", model_config])[0])
            elapsed, out = timed([sys.executable, "-c", CHILD, str(config)])
            preflight_s.append(elapsed)
            child = json.loads(out.strip().splitlines()[-1])
    floor, pre = statistics.median(floor_s), statistics.median(preflight_s)
    rchar = child["rchar"]
    checks = {
        f"preflight within {args.max_seconds:g} s": pre <= args.max_seconds,
        "model.weights saw every shard": child["weights"][0] == "ok" and child["weights"][1].startswith(f"{shards} shard(s)"),
        "read < 1% of the weight bytes": rchar is None or rchar < total / 100,
        "no mlx/transformers imported": child["heavy_modules"] == [],
    }
    result = {
        "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "model": {"shards": shards, "tensor_bytes": total},
        "dataset_examples": args.examples,
        "repeat": args.repeat,
        "cat_config_median_s": floor,
        "preflight_median_s": pre,
        "preflight_in_process_s": child["in_process_s"],
        "ratio": pre / floor,
        "preflight_read_bytes": rchar,
        "levels": child["levels"],
        "checks": checks,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"model: {shards} sparse shards, {total / 1e9:.1f} GB of bf16 tensors; dataset {args.examples} lines")
        print(f"cat config.json            median {floor * 1000:8.1f} ms  (floor)")
        print(
            f"preflight (fresh process)  median {pre * 1000:8.1f} ms  (in-process {child['in_process_s'] * 1000:.1f} ms)"
        )
        print(f"ratio preflight / cat: {pre / floor:.0f}x")
        if rchar is not None:
            print(f"bytes read by preflight: {rchar / 1e6:.1f} MB of {total / 1e9:.1f} GB of weights")
        print(f"model.weights: {child['weights'][0]}: {child['weights'][1]}")
        for name, passed in checks.items():
            print(f"{'PASS' if passed else 'FAIL'}  {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
