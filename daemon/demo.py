"""The embedded demo: a workspace with a tiny local model, data, eval suite and config.

``nightshift demo`` builds ``demo-workspace/`` (no download): a byte-level BPE
tokenizer and a randomly initialised 4-layer llama made in a child process, a
generated chat dataset for a review-sentiment task, an eval suite, and a
``nightshift.yaml`` whose relative paths resolve against the workspace, so the
workspace can be moved. The random base cannot answer (it scores ~0), and a
LoRA adapter trained for a couple of hundred iterations answers most held-out
reviews correctly, so the demo's first promotion is earned.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from daemon.child import run_worker
from daemon.errors import NightshiftError

# The base is pretrained on reviews using the KNOWN adjectives; the nightly
# dataset teaches the NEW ones, which the base has never seen labelled.
POSITIVE_KNOWN = ["great", "wonderful", "excellent", "lovely", "superb", "pleasant"]
NEGATIVE_KNOWN = ["awful", "terrible", "horrible", "dreadful", "poor", "bad"]
POSITIVE = ["delightful", "fantastic", "brilliant", "charming", "perfect", "friendly"]
NEGATIVE = ["disappointing", "boring", "rude", "dirty", "broken", "miserable"]
SUBJECTS = [
    "the food", "the service", "the room", "the movie", "the staff", "the book",
    "the hotel", "the music", "the trip", "the game", "the coffee", "the show",
]
TEMPLATES = [
    "{s} was {a}.",
    "{s} felt {a}.",
    "{a} {s}, {a2} {s2}.",
    "{s} was {a}, {s2} {a2}.",
]
INSTRUCTION = "Sentiment? "

PRETRAIN_ITERS = 300
"""Full-weight steps that teach the random base the chat format and the known adjectives."""

#: Tiny-model shape: small enough to train 200 LoRA iterations in well under a minute on 2 CPU cores.
MODEL_SHAPE = {
    "vocab_size": 512,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
}

DEMO_CONFIG = """\
# nightshift demo configuration. Relative paths resolve against this file's directory.
paths:
  base_model: models/base      # the tiny random llama built by `nightshift demo`
  dataset: data                # train.jsonl + valid.jsonl (chat JSONL)
  eval_suite: eval/suite.yaml
  state_dir: state             # registry, runs, releases, current, reports

training:
  lora:
    rank: 16
    scale: 20.0                # mlx-lm's scale (PEFT's alpha/rank)
    dropout: 0.0
    layers: 2                  # adapt the last 2 blocks (all of them here)
  iters: {iters}
  batch_size: 8
  learning_rate: 1e-4
  lr_schedule: cosine
  warmup_steps: 10
  min_learning_rate: 1e-5
  max_seq_len_tokens: 256
  seed: {seed}
  mask_prompt: true
  steps_per_report: 10
  steps_per_eval: 100
  val_batches: 4
  timeout_s: 1800

evaluation:
  batch_size: 32
  max_tokens: 4
  held_out_loss: true

promotion:
  policy: auto
  min_gain: 0.0
  bootstrap_resamples: 10000
  fuse: true                   # also write a fused model into each release

preflight:
  min_train_examples: 50

profiles:
  quick:                       # `--profile quick`: a shorter night for tests
    training:
      iters: 60
"""


def make_review(rng: random.Random, positive: bool, *, known: bool = False) -> str:
    """One synthetic review whose adjectives share one polarity."""
    if known:
        words = POSITIVE_KNOWN if positive else NEGATIVE_KNOWN
    else:
        words = POSITIVE if positive else NEGATIVE
    s, s2 = rng.sample(SUBJECTS, 2)
    return rng.choice(TEMPLATES).format(s=s, a=rng.choice(words), s2=s2, a2=rng.choice(words))


def make_examples(n: int, seed: int, *, known: bool = False) -> list[dict[str, Any]]:
    """``n`` distinct, balanced sentiment examples ``{"messages": [user, assistant]}``."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n and i < n * 50:
        positive = i % 2 == 0
        i += 1
        review = make_review(rng, positive, known=known)
        if review in seen:
            continue
        seen.add(review)
        out.append(
            {
                "messages": [
                    {"role": "user", "content": INSTRUCTION + review},
                    {"role": "assistant", "content": "positive" if positive else "negative"},
                ]
            }
        )
    rng.shuffle(out)
    return out


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_data(workspace: Path, seed: int = 0) -> dict[str, Any]:
    """Write train/valid data and the eval suite; returns counts and the pretraining set.

    Every review appears in one split only, so preflight's overlap and
    contamination checks pass. The suite's ``sentiment`` category uses the new
    adjectives (what tonight's training is for); ``sentiment_known`` uses the
    adjectives the base was pretrained on and must not regress (knowledge
    preservation).
    """
    new = make_examples(500, seed)
    known = make_examples(640, seed + 1, known=True)
    eval_new, valid, train = new[:60], new[60:100], new[100:]
    eval_known, pretrain_set = known[:40], known[40:]
    _write_jsonl(workspace / "data" / "train.jsonl", train)
    _write_jsonl(workspace / "data" / "valid.jsonl", valid)

    def items(prefix: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"id": f"{prefix}{i:03d}", "prompt": ex["messages"][0]["content"], "gold": ex["messages"][1]["content"]}
            for i, ex in enumerate(rows)
        ]

    _write_jsonl(workspace / "eval" / "sentiment.jsonl", items("s", eval_new))
    _write_jsonl(workspace / "eval" / "sentiment_known.jsonl", items("k", eval_known))
    _write_jsonl(workspace / "eval" / "reference.jsonl", items("l", eval_new[:20]))
    (workspace / "eval" / "suite.yaml").write_text(SUITE_YAML, encoding="utf-8")
    return {"train": len(train), "valid": len(valid), "eval": len(eval_new), "pretrain": pretrain_set}


SUITE_YAML = """\
# Demo eval suite. `sentiment` is what tonight's training is for; the base was
# pretrained on `sentiment_known` and must keep it (knowledge preservation).
categories:
  - name: sentiment
    kind: label
    labels: [positive, negative]
    weight: 1.0
    max_tokens: 4
    items_file: sentiment.jsonl
  - name: sentiment_known
    kind: label
    labels: [positive, negative]
    weight: 1.0
    preserve: true
    tolerance: 0.10
    max_tokens: 4
    items_file: sentiment_known.jsonl
  - name: reference_loss
    kind: loss
    weight: 0.5
    items_file: reference.jsonl
"""


def build_workspace(workspace: Path, *, seed: int = 0, iters: int = 200, force: bool = False) -> Path:
    """Create (or reuse) a demo workspace and return its config path.

    Args:
        workspace: directory to fill; created if missing.
        seed: seeds data generation, model init and training.
        iters: training iterations written into the demo config.
        force: rebuild the model and data even if present.

    Raises:
        NightshiftError: building the tiny model failed (the log path is named).
    """
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    config_path = workspace / "nightshift.yaml"
    model_dir = workspace / "models" / "base"
    if force or not (model_dir / "model.safetensors").exists():
        data = write_data(workspace, seed)
        corpus = _corpus(workspace) + [m["content"] for ex in data["pretrain"] for m in ex["messages"]]
        request = {
            "out_dir": str(model_dir),
            "corpus": corpus,
            "pretrain": data["pretrain"] if PRETRAIN_ITERS else [],
            "pretrain_iters": PRETRAIN_ITERS,
            "seed": seed,
            "result_file": str(workspace / "models" / "make_model_result.json"),
            **MODEL_SHAPE,
        }
        result = run_worker(
            "daemon.worker.make_model",
            request,
            work_dir=workspace / "models",
            name="make_model",
            timeout_s=600,
            stop_grace_s=5,
        )
        if result.returncode != 0:
            raise NightshiftError(
                f"Building the demo model {result.describe()}; log: {result.log_path}"
            )
    if force or not config_path.exists():
        config_path.write_text(DEMO_CONFIG.format(iters=iters, seed=seed), encoding="utf-8")
    return config_path


def _corpus(workspace: Path) -> list[str]:
    texts: list[str] = []
    for name in ("train.jsonl", "valid.jsonl"):
        for line in (workspace / "data" / name).read_text(encoding="utf-8").splitlines():
            for m in json.loads(line)["messages"]:
                texts.append(m["role"] + "\n" + m["content"])
    texts.extend(POSITIVE + NEGATIVE + POSITIVE_KNOWN + NEGATIVE_KNOWN + SUBJECTS + ["user", "assistant", "system"])
    return texts
