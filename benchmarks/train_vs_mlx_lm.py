"""The training stage's wall time against ``python -m mlx_lm lora --train`` on the same job.

Builds the demo workspace (tiny local llama, chat data) in a temporary
directory, then runs, side by side and in alternating order:

* **ours**: :func:`daemon.train.train_challenger` (the training stage: the
  ``daemon.worker.train`` child under supervision, metrics streamed back);
* **ref**: ``python -m mlx_lm lora --train -c CONFIG.yaml`` with the same model
  directory, train/valid files, iterations, batch size, LoRA rank/scale/layers,
  learning-rate schedule, max sequence length, prompt masking, seed, reporting,
  validation and save intervals, and the same environment
  (:func:`daemon.worker.env.worker_env`, so OpenBLAS is preloaded on Linux for
  both).

Both are timed from process start to the parent seeing the exit, model load
included. The steady-state time per iteration is taken between the reports at
the first and the last reporting step (our ``metrics.jsonl`` time stamps;
mlx-lm's console lines time-stamped as they arrive), so it includes the same
periodic validation batches for both.

Both sides must do the same work, and mlx-lm draws its batches at random:
each epoch is a random order of the same length-sorted batches, and each
validation pass scores ``val_batches`` batches drawn at random. So, unless
``--keep-iters``, the iterations are rounded up to whole epochs (every
training batch the same number of times on both sides) and each validation
pass scores the whole validation set (``val_batches`` raised to the number of
validation batches). Without that a 60-iteration run on a 40-batch epoch lets
each side pick a different 20 batches for its second epoch, which moved the
per-iteration ratio by several percent between pairs.

Only the loss function differs: ours masks ``steps < length`` where mlx-lm
0.32's ``default_loss`` uses ``<=`` (see :func:`daemon.worker.mlxutil.masked_loss`);
the work per step is the same.

Also printed, as diagnostics: "head" (start to first report) and "tail" (last
report to the parent seeing the exit) per run, the fastest reporting window
(per iteration), the children's CPU seconds, and
the best-of-N ratio; on a machine shared with other work the wall times vary
far more than the 5% being tested, and CPU time shows whether the work differs.

Target: median of the per-pair ours/ref wall-time ratios <= 1.05. Exit status 0 when it holds,
1 otherwise. Usage::

    python benchmarks/train_vs_mlx_lm.py [--iters 300] [--repeats 5] [--max-ratio 1.05] [--config FILE]

``--config`` runs the same comparison on another workspace, e.g. the real model that
``make real-model`` converts (``real-model-workspace/task/nightshift.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from _common import add_child_options, apply_child_options

from daemon.config import Config, load_config
from daemon.demo import build_workspace
from daemon.train import METRICS_FILE, train_challenger
from daemon.worker.common import read_jsonl
from daemon.worker.env import blas_description, worker_env

# mlx-lm's TrainUI report line: "  <iter>    <loss> ▼    <tok/s>    <tokens>k" (rich may colour it)
_REPORT_LINE = re.compile(r"^\s*(\d+)\s+(\d+\.\d+)\s+[\u25bc\u25b2]")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclasses.dataclass
class Measurement:
    """One timed training run."""

    name: str
    wall_s: float
    per_iter_s: float | None
    best_window_s: float | None
    """Fastest reporting window, per iteration (the least disturbed by other processes)."""
    final_loss: float | None
    head_s: float | None
    """Start to the first training report (load, compile, first validation, first steps)."""
    tail_s: float | None
    """Last training report to the parent seeing the exit (save, teardown, exit detection)."""
    cpu_s: float = 0.0
    """User + system CPU seconds of the child (less sensitive to other load than wall time)."""


def _measure(
    name: str,
    started_unix: float,
    ended_unix: float,
    reports: list[tuple[int, float]],
    loss: float | None,
) -> Measurement:
    head = reports[0][1] - started_unix if reports else None
    tail = ended_unix - reports[-1][1] if reports else None
    windows = [
        (t1 - t0) / (i1 - i0)
        for (i0, t0), (i1, t1) in zip(reports, reports[1:], strict=False)
        if i1 > i0
    ]
    best = min(windows) if windows else None
    return Measurement(name, ended_unix - started_unix, _per_iter(reports), best, loss, head, tail)


def mlx_lm_config(cfg: Config, adapter_dir: Path) -> dict[str, Any]:
    """An ``mlx_lm lora -c`` config equivalent to ``cfg.training`` (see ``daemon.worker.train.build_lr``)."""
    t = cfg.training
    lr = float(t.learning_rate)
    decay_steps = max(1, t.iters - t.warmup_steps)
    if t.lr_schedule == "cosine":
        schedule: dict[str, Any] | None = {
            "name": "cosine_decay",
            "arguments": [lr, decay_steps, float(t.min_learning_rate)],
        }
    elif t.lr_schedule == "linear":
        schedule = {
            "name": "linear_schedule",
            "arguments": [lr, float(t.min_learning_rate), decay_steps],
        }
    else:
        schedule = {"name": "linear_schedule", "arguments": [lr, lr, 1]} if t.warmup_steps else None
    if schedule is not None and t.warmup_steps:
        schedule["warmup"] = t.warmup_steps
    lora: dict[str, Any] = {
        "rank": t.lora.rank,
        "scale": t.lora.effective_scale,
        "dropout": t.lora.dropout,
    }
    if t.lora.keys is not None:
        lora["keys"] = list(t.lora.keys)
    return {
        "model": str(cfg.paths.base_model),
        "train": True,
        "data": str(cfg.paths.dataset),
        "fine_tune_type": "lora",
        "optimizer": t.optimizer,
        "optimizer_config": {
            t.optimizer: {"weight_decay": t.weight_decay} if t.optimizer == "adamw" else {}
        },
        "seed": t.seed,
        "num_layers": t.lora.layers,
        "batch_size": t.batch_size,
        "iters": t.iters,
        "val_batches": t.val_batches,
        "learning_rate": lr,
        "steps_per_report": t.steps_per_report,
        "steps_per_eval": t.steps_per_eval,
        "save_every": t.save_every,
        "adapter_path": str(adapter_dir),
        "max_seq_length": t.max_seq_len_tokens,
        "grad_checkpoint": t.grad_checkpoint,
        "grad_accumulation_steps": t.grad_accumulation,
        "lr_schedule": schedule,
        "lora_parameters": lora,
        "mask_prompt": t.mask_prompt,
    }


def run_ours(cfg: Config, run_dir: Path) -> Measurement:
    """The training stage as the pipeline runs it."""
    cpu0 = _children_cpu_s()
    started = time.time()
    result = train_challenger(cfg, run_dir, on_metrics=lambda rows: None)
    ended = time.time()
    cpu = _children_cpu_s() - cpu0
    train_events = [
        rec
        for rec in (json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines())
        if rec.get("event") == "train"
    ]
    reports = [(int(r["iteration"]), float(r["time"])) for r in train_events]
    return dataclasses.replace(
        _measure("ours", started, ended, reports, result.final_train_loss), cpu_s=cpu
    )


def run_ref(cfg: Config, work: Path) -> Measurement:
    """``python -m mlx_lm lora --train -c CONFIG`` with stdout lines time-stamped as they arrive."""
    adapter_dir = work / "adapter"
    config_path = work / "mlx_lm_lora.yaml"
    config_path.write_text(yaml.safe_dump(mlx_lm_config(cfg, adapter_dir), sort_keys=False))
    reports: list[tuple[int, float]] = []
    losses: list[float] = []
    lines: list[str] = []
    cpu0 = _children_cpu_s()
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm", "lora", "--train", "-c", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=worker_env(),
        cwd=work,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert proc.stdout is not None

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.time()
            lines.append(line)
            m = _REPORT_LINE.match(_ANSI.sub("", line))
            if m:
                reports.append((int(m.group(1)), now))
                losses.append(float(m.group(2)))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    returncode = proc.wait()
    ended = time.time()
    cpu = _children_cpu_s() - cpu0
    thread.join(timeout=10)
    if returncode != 0 or not (adapter_dir / "adapters.safetensors").is_file():
        sys.stderr.write("".join(lines[-40:]))
        raise SystemExit(f"mlx_lm lora exited with status {returncode}")
    return dataclasses.replace(
        _measure("mlx_lm", started, ended, reports, losses[-1] if losses else None), cpu_s=cpu
    )


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _per_iter(points: list[tuple[int, float]]) -> float | None:
    """Seconds per iteration between the first and last report ``(iteration, unix_time)``."""
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return None
    (i0, t0), (i1, t1) = points[0], points[-1]
    return (t1 - t0) / (i1 - i0)


def same_batches(cfg: Config) -> tuple[Config, str]:
    """``cfg`` with whole epochs and whole validation passes, and a line saying what changed.

    mlx-lm's ``iterate_batches`` makes ``examples // batch_size`` batches of
    length-sorted examples and shuffles their order every epoch; validation
    draws ``val_batches`` of them at random. Whole epochs and the whole
    validation set make both sides process the same batches (in different
    orders), so the ratio measures overhead, not which batches were drawn.
    """
    t = cfg.training
    per_epoch = max(1, len(read_jsonl(cfg.paths.dataset / "train.jsonl")) // t.batch_size)
    val_total = max(1, len(read_jsonl(cfg.paths.dataset / "valid.jsonl")) // t.batch_size)
    epochs = max(1, -(-t.iters // per_epoch))
    iters = epochs * per_epoch
    val_batches = val_total if t.val_batches != -1 else -1
    note = (
        f"same batches on both sides: iters {t.iters} -> {iters} ({epochs} epoch(s) of {per_epoch} batches), "
        f"val_batches {t.val_batches} -> {val_batches} (the whole validation set); --keep-iters to disable"
    )
    return dataclasses.replace(cfg, training=dataclasses.replace(t, iters=iters, val_batches=val_batches)), note


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns the exit status (0 when the target holds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="training iterations per run")
    parser.add_argument("--repeats", type=int, default=5, help="pairs of runs (median taken)")
    parser.add_argument("--max-ratio", type=float, default=1.05, help="target: ours/ref wall time")
    parser.add_argument(
        "--config",
        type=Path,
        help="an existing nightshift config (e.g. real-model-workspace/task/nightshift.yaml from "
        "`make real-model`) instead of the demo workspace; --iters replaces its training.iters",
    )
    parser.add_argument(
        "--keep-iters",
        action="store_true",
        help="use --iters and val_batches as given (default: whole epochs and whole validation passes, "
        "so both sides train and validate on the same batches)",
    )
    add_child_options(parser)
    args = parser.parse_args(argv)
    apply_child_options(args)

    with tempfile.TemporaryDirectory(prefix="nightshift-bench-train-") as tmp:
        if args.config is not None:
            cfg = load_config(args.config)
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, iters=args.iters))
        else:
            cfg = load_config(build_workspace(Path(tmp) / "ws", iters=args.iters))
        if not args.keep_iters:
            cfg, note = same_batches(cfg)
            print(note)
        print(
            f"machine: {platform.system()} {platform.machine()}, {_cpu_count()} CPU cores; BLAS: {blas_description()}, "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
        )
        t = cfg.training
        print(
            f"job: {cfg.paths.base_model.name}, iters={t.iters} batch={t.batch_size} rank={t.lora.rank} "
            f"scale={t.lora.effective_scale} layers={t.lora.layers} lr={t.learning_rate} ({t.lr_schedule}, "
            f"warmup {t.warmup_steps}) max_seq_len={t.max_seq_len_tokens} mask_prompt={t.mask_prompt}"
        )
        print(
            f"load average at start: {os.getloadavg()[0]:.2f} (other processes share these cores)"
        )
        print()
        print(
            f"{'rep':>3}  {'run':<7} {'wall s':>8} {'head s':>7} {'per iter':>9} {'best win':>9} {'tail s':>7} {'cpu s':>7} {'last loss':>9}"
        )
        pairs: list[tuple[Measurement, Measurement]] = []
        for rep in range(args.repeats):
            order = ("ours", "mlx_lm") if rep % 2 == 0 else ("mlx_lm", "ours")
            got: dict[str, Measurement] = {}
            for name in order:
                work = Path(tmp) / f"{name}-{rep}"
                work.mkdir()
                got[name] = run_ours(cfg, work) if name == "ours" else run_ref(cfg, work)
                m = got[name]
                per_iter = f"{m.per_iter_s * 1000:.2f} ms" if m.per_iter_s else "-"
                loss = f"{m.final_loss:.4f}" if m.final_loss is not None else "-"
                head = f"{m.head_s:.2f}" if m.head_s is not None else "-"
                tail = f"{m.tail_s:.2f}" if m.tail_s is not None else "-"
                best = f"{m.best_window_s * 1000:.2f} ms" if m.best_window_s else "-"
                print(
                    f"{rep + 1:>3}  {name:<7} {m.wall_s:>8.2f} {head:>7} {per_iter:>9} {best:>9} {tail:>7} {m.cpu_s:>7.2f} {loss:>9}"
                )
            pairs.append((got["ours"], got["mlx_lm"]))

    ratios = [o.wall_s / r.wall_s for o, r in pairs]
    iter_ratios = [o.per_iter_s / r.per_iter_s for o, r in pairs if o.per_iter_s and r.per_iter_s]
    window_ratios = [
        o.best_window_s / r.best_window_s for o, r in pairs if o.best_window_s and r.best_window_s
    ]
    cpu_ratios = [o.cpu_s / r.cpu_s for o, r in pairs if r.cpu_s]
    best_ratio = min(o.wall_s for o, _ in pairs) / min(r.wall_s for _, r in pairs)
    ratio = statistics.median(ratios)
    ours_med = statistics.median(o.wall_s for o, _ in pairs)
    ref_med = statistics.median(r.wall_s for _, r in pairs)
    print()
    print(f"median wall: ours {ours_med:.2f} s, mlx_lm {ref_med:.2f} s")
    print(
        f"wall ratio ours/mlx_lm per pair: {', '.join(f'{x:.3f}' for x in ratios)}; median {ratio:.3f}"
    )
    if iter_ratios:
        print(
            f"per-iteration ratio ours/mlx_lm: {', '.join(f'{x:.3f}' for x in iter_ratios)}; "
            f"median {statistics.median(iter_ratios):.3f}"
        )
    if window_ratios:
        print(
            f"fastest 10-iteration window ratio ours/mlx_lm (diagnostic): "
            f"{', '.join(f'{x:.3f}' for x in window_ratios)}; median {statistics.median(window_ratios):.3f}"
        )
    print(f"best-of-{len(pairs)} wall ratio (min/min, diagnostic): {best_ratio:.3f}")
    print(
        f"child CPU-time ratio ours/mlx_lm (user+sys, diagnostic): "
        f"{', '.join(f'{x:.3f}' for x in cpu_ratios)}; median {statistics.median(cpu_ratios):.3f}"
    )
    print(
        f"tail (last report -> exit seen) median: ours {statistics.median(o.tail_s or 0 for o, _ in pairs):.2f} s, "
        f"mlx_lm {statistics.median(r.tail_s or 0 for _, r in pairs):.2f} s"
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    ok = ratio <= args.max_ratio
    print(f"target: ours/mlx_lm <= {args.max_ratio:.2f} -> {'PASS' if ok else 'FAIL'}")
    if args.json:
        print(
            json.dumps(
                {
                    "ratio": ratio,
                    "ratios": ratios,
                    "iter_ratios": iter_ratios,
                    "cpu_ratios": cpu_ratios,
                    "window_ratios": window_ratios,
                    "best_ratio": best_ratio,
                    "ours_wall_s": [o.wall_s for o, _ in pairs],
                    "ref_wall_s": [r.wall_s for _, r in pairs],
                    "ok": ok,
                }
            )
        )
    return 0 if ok else 1


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    sys.exit(main())
