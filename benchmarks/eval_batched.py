"""Evaluation speed: batched generation, and the champion cache on a second night.

Builds the demo workspace (tiny local llama, data, eval suite) in a temporary
directory and measures two things, each against a reference in the same run:

(a) **Batched generation vs a per-prompt loop.** Our eval child
    (``daemon.worker.evaluate`` with the daemon's request, ``evaluation.batch_size``
    from the demo config) generates for the base model on a suite holding only the demo's
    *generating* categories, with ``held_out_loss`` off, so the child does
    nothing but generate; it scores the base three times (as three models) to
    get a cold and two warm passes from one process. The reference is a child
    process (same interpreter, same :func:`daemon.worker.env.worker_env`
    environment) that loads the same model and calls ``mlx_lm.generate.generate``
    once per prompt, with the same chat-templated prompt tokens, the same
    per-category ``max_tokens`` and greedy decoding, three passes. Compared: the
    median pass (ours: the child's ``model_done.duration_s``; the loop: time
    around its ``generate`` calls), both after the model is loaded; the cold
    first pass and whole-process wall times are printed too. Target:
    loop / batched >= 3.

(b) **Second night with a cached champion.** Two full pipelines
    (:func:`daemon.pipeline.run_pipeline`) on a fresh state directory. Night 1
    scores the challenger and the base as champion; night 2 scores only its new
    challenger and reuses the stored results of the models already scored
    (matched by evaluation fingerprint). Compared: the ``evaluating`` stage's
    duration (registry ``run_stages``) of night 2 against night 1, each stage
    split into the child's start (it was started during training and has
    imported mlx-lm, so this is reading the request and loading the base
    model), per-model work in the child (its ``model_done.duration_s``), and
    the rest (the parent's hashing, registry work, judge calls not hidden
    behind generation, and noticing the child's exit). Target: night 2 / night 1 <= 0.60.

``--blas-threads N`` sets ``OPENBLAS_NUM_THREADS`` for every child (default:
unset, as the daemon runs); ``--suite-scale K`` repeats each demo eval item K
times for a heavier evaluation.

Exit status 0 when both targets hold, 1 otherwise. Usage::

    python benchmarks/eval_batched.py [--repeats 5] [--night-pairs 3] [--iters 60] [--suite-scale 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import add_child_options, apply_child_options

from daemon.child import StartedWorker
from daemon.config import Config, load_config
from daemon.demo import build_workspace
from daemon.evaluate import RESULTS_FILE, ModelRef, build_request
from daemon.suite import load_suite
from daemon.worker.env import blas_description, worker_env

MIN_SPEEDUP = 3.0
MAX_SECOND_NIGHT_SHARE = 0.60

PASSES = 3
"""Generation passes per process: our child scores the base model this many times
(as separate models), the loop child repeats its loop; the median pass is compared."""

# Runs in the reference child: load once, then one mlx_lm generate() call per prompt, PASSES times.
LOOP_SCRIPT = """\
import json, sys, time
req = json.loads(open(sys.argv[1], encoding="utf-8").read())
passes = int(sys.argv[3])
from mlx_lm.generate import generate
from mlx_lm.utils import load
model, tokenizer = load(req["base_model"])
model.eval()
times, replies = [], []
for _ in range(passes):
    t0 = time.monotonic()
    replies = []
    for p in req["generation"]:
        tokens = list(tokenizer.apply_chat_template(p["messages"], add_generation_prompt=True, return_dict=False))
        replies.append(generate(model, tokenizer, tokens, max_tokens=int(p["max_tokens"])))
    times.append(time.monotonic() - t0)
json.dump({"pass_s": times, "replies": replies}, open(sys.argv[2], "w", encoding="utf-8"))
"""


def scale_suite(cfg: Config, scale: int) -> None:
    """Repeat every item of the workspace's suite ``scale`` times (ids suffixed), for a heavier eval."""
    raw = yaml.safe_load(cfg.paths.eval_suite.read_text(encoding="utf-8"))
    for cat in raw["categories"]:
        path = cfg.paths.eval_suite.parent / cat["items_file"]
        items = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        copies = [{**item, "id": f"{item['id']}-{k}"} for k in range(scale) for item in items]
        path.write_text("".join(json.dumps(item) + "\n" for item in copies), encoding="utf-8")


def generation_only(cfg: Config) -> Config:
    """``cfg`` with a copy of its suite that keeps only generating categories, and no held-out loss."""
    raw = yaml.safe_load(cfg.paths.eval_suite.read_text(encoding="utf-8"))
    raw["categories"] = [c for c in raw["categories"] if c.get("kind") != "loss"]
    suite_path = cfg.paths.eval_suite.parent / "suite_generation_only.yaml"
    suite_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return dataclasses.replace(
        cfg,
        paths=dataclasses.replace(cfg.paths, eval_suite=suite_path),
        evaluation=dataclasses.replace(cfg.evaluation, held_out_loss=False),
    )


def run_batched(cfg: Config, run_dir: Path, passes: int) -> dict[str, Any]:
    """Our eval child generating for the base model ``passes`` times; per-pass time, wall time, replies.

    The child gets the request the daemon builds (:func:`daemon.evaluate.build_request`)
    and runs as the daemon runs it (:class:`daemon.child.StartedWorker`); the parent
    only waits, so judge calls (which the daemon makes while the child generates)
    do not share the cores with the generation being timed.
    """
    suite = load_suite(cfg.paths.eval_suite)
    refs = [
        ModelRef(role=f"pass{i}", model_id=i + 1, adapter_path=None, identity="base")
        for i in range(passes)
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = StartedWorker("daemon.worker.evaluate", work_dir=run_dir, name="evaluate").run(
        build_request(cfg, suite, refs, run_dir), timeout_s=600, stop_grace_s=5
    )
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"eval child {result.describe()}; log: {result.log_path}")
    records = [json.loads(line) for line in (run_dir / RESULTS_FILE).read_text().splitlines()]
    replies = {
        (r["category"], r["item_id"], r["sample"]): r["reply"]
        for r in records
        if r["kind"] == "reply" and r["model"] == "pass0"
    }
    done = {r["model"]: float(r["duration_s"]) for r in records if r["kind"] == "model_done"}
    return {"pass_s": [done[r.role] for r in refs], "wall_s": wall, "replies": replies}


def run_loop(cfg: Config, work: Path, passes: int) -> dict[str, Any]:
    """The per-prompt ``mlx_lm.generate`` loop in a child with the workers' environment."""
    suite = load_suite(cfg.paths.eval_suite)
    request = build_request(cfg, suite, [], work)
    work.mkdir(parents=True, exist_ok=True)
    req_path, out_path, script = (
        work / "loop_request.json",
        work / "loop_result.json",
        work / "loop.py",
    )
    req_path.write_text(json.dumps(request), encoding="utf-8")
    script.write_text(LOOP_SCRIPT, encoding="utf-8")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(req_path), str(out_path), str(passes)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=worker_env(),
        cwd=work,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"reference generate loop exited with status {proc.returncode}")
    out = json.loads(out_path.read_text(encoding="utf-8"))
    keys = [(g["category"], g["item_id"], g["sample"]) for g in request["generation"]]
    return {
        "pass_s": out["pass_s"],
        "wall_s": wall,
        "replies": dict(zip(keys, out["replies"], strict=True)),
    }


def part_a(cfg: Config, tmp: Path, repeats: int) -> tuple[bool, dict[str, Any]]:
    """Batched eval child vs the generate() loop, alternating order; median of ``repeats``."""
    gen_cfg = generation_only(cfg)
    request = build_request(gen_cfg, load_suite(gen_cfg.paths.eval_suite), [], tmp)
    prompts = request["generation"]
    max_tokens = sorted({p["max_tokens"] for p in prompts})
    print(
        f"(a) {len(prompts)} generating prompts (categories: "
        f"{', '.join(sorted({p['category'] for p in prompts}))}), max_tokens {max_tokens}, greedy; "
        f"batched with evaluation.batch_size={cfg.evaluation.batch_size}"
    )
    print(
        f"    compared: time for one generation pass over all prompts after the model is loaded, {PASSES} passes"
    )
    print(
        "    per process (ours: the eval child's model_done.duration_s, the base scored as 3 models, no losses;"
    )
    print(
        "    loop: time around the generate() calls); median pass; whole-process wall times shown as well"
    )
    print()
    print(f"    {'rep':>3}  {'run':<8} {'pass s (first, ...)':<22} {'median':>7} {'wall s':>7}")
    pairs = []
    agreement = []
    for rep in range(repeats):
        order = ("batched", "loop") if rep % 2 == 0 else ("loop", "batched")
        got = {}
        for name in order:
            work = tmp / f"a-{name}-{rep}"
            got[name] = (
                run_batched(gen_cfg, work, PASSES)
                if name == "batched"
                else run_loop(gen_cfg, work, PASSES)
            )
            passes = " ".join(f"{x:.3f}" for x in got[name]["pass_s"])
            print(
                f"    {rep + 1:>3}  {name:<8} {passes:<22} {statistics.median(got[name]['pass_s']):>7.3f} "
                f"{got[name]['wall_s']:>7.2f}"
            )
        pairs.append((got["batched"], got["loop"]))
        same = sum(got["batched"]["replies"][k] == v for k, v in got["loop"]["replies"].items())
        agreement.append(same / max(1, len(got["loop"]["replies"])))
    speedups = [
        statistics.median(lp["pass_s"]) / statistics.median(bt["pass_s"]) for bt, lp in pairs
    ]
    cold = [lp["pass_s"][0] / bt["pass_s"][0] for bt, lp in pairs]
    wall_speedups = [lp["wall_s"] / bt["wall_s"] for bt, lp in pairs]
    speedup = statistics.median(speedups)
    ok = speedup >= MIN_SPEEDUP
    print()
    print(
        f"    generation speedup loop/batched (median pass) per rep: {_fmt(speedups)}; median {speedup:.2f}x"
    )
    print(f"    first (cold) pass only: {_fmt(cold)}; median {statistics.median(cold):.2f}x")
    print(
        f"    whole process (start-up, imports, load, {PASSES} passes): {_fmt(wall_speedups)}; "
        f"median {statistics.median(wall_speedups):.2f}x"
    )
    print(f"    identical replies batched vs loop (first pass): {min(agreement):.0%}")
    print(f"    target: loop/batched >= {MIN_SPEEDUP:.1f}x -> {'PASS' if ok else 'FAIL'}")
    return ok, {
        "speedup": speedup,
        "speedups": speedups,
        "cold": cold,
        "wall_speedups": wall_speedups,
    }


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def two_nights(cfg: Config) -> dict[str, Any]:
    """Run two pipelines on ``cfg``'s (fresh) state dir; returns each night's eval timings."""
    from daemon import shutdown
    from daemon.pipeline import run_pipeline
    from daemon.registry import Registry

    nights: list[dict[str, Any]] = []
    for _ in range(2):
        shutdown.reset()
        outcome = run_pipeline(cfg, force=True)  # the second night repeats the first on purpose
        registry = Registry.open(cfg.paths.state_dir)
        try:
            stages = {s.stage: float(s.duration_s or 0.0) for s in registry.stages(outcome.run_id)}
            sets = [
                (s.role, s.duration_s or 0.0, s.reused_from is not None)
                for s in registry.eval_sets(outcome.run_id)
            ]
            run_dir = Path(registry.get_run(outcome.run_id).run_dir or "")
        finally:
            registry.close()
        nights.append(
            {
                "run_id": outcome.run_id,
                "status": outcome.status.value,
                "stages": stages,
                "sets": sets,
                **eval_breakdown(run_dir, stages["evaluating"]),
            }
        )
    return {
        "nights": nights,
        "share": nights[1]["stages"]["evaluating"] / nights[0]["stages"]["evaluating"],
    }


def eval_breakdown(run_dir: Path, stage_s: float) -> dict[str, float]:
    """Split the evaluating stage into the child's start, per-model work, and the rest.

    From the child's own files: the request file's mtime (when the parent handed
    the warm child its work), each ``model_done`` record's time minus its duration (when that
    model's work began), and the durations. "rest" is the parent's share: model
    hashing and registry work before the child, waiting to notice the child's
    exit, scoring and storing the results.
    """
    records = [json.loads(line) for line in (run_dir / RESULTS_FILE).read_text().splitlines()]
    done = [r for r in records if r["kind"] == "model_done"]
    launched = (run_dir / "evaluate_request.json").stat().st_mtime
    first_start = min(r["time"] - r["duration_s"] for r in done)
    models_s = sum(float(r["duration_s"]) for r in done)
    startup_s = first_start - launched
    return {"startup_s": startup_s, "models_s": models_s, "rest_s": stage_s - startup_s - models_s}


def part_b(cfg: Config, tmp: Path, pairs: int) -> tuple[bool, dict[str, Any]]:
    """Night 2's ``evaluating`` stage against night 1's, each pair on a fresh state dir."""
    print(
        f"(b) two nights of the full pipeline on a fresh state dir (training.iters={cfg.training.iters}), x{pairs}"
    )
    print("    compared: the `evaluating` stage duration (registry run_stages), night 2 / night 1;")
    print(
        "    split into the warm child's start (request read, base loaded), per-model work in the child, "
        "and the parent's rest"
    )
    print()
    print(
        f"    {'pair':>4} {'night':>5} {'status':<9} {'evaluating s':>12} {'child start':>11} {'models':>7} "
        f"{'rest':>6}  eval sets (role: s)"
    )
    shares = []
    model_shares = []
    results = []
    for i in range(pairs):
        night_cfg = dataclasses.replace(
            cfg, paths=dataclasses.replace(cfg.paths, state_dir=tmp / f"state-{i}")
        )
        res = two_nights(night_cfg)
        results.append(res)
        shares.append(res["share"])
        model_shares.append(res["nights"][1]["models_s"] / res["nights"][0]["models_s"])
        for n, night in enumerate(res["nights"], start=1):
            sets = ", ".join(
                f"{role}: {'reused' if reused else f'{d:.2f}'}" for role, d, reused in night["sets"]
            )
            print(
                f"    {i + 1:>4} {n:>5} {night['status']:<9} {night['stages']['evaluating']:>12.2f} "
                f"{night['startup_s']:>11.2f} {night['models_s']:>7.2f} {night['rest_s']:>6.2f}  {sets}"
            )
    share = statistics.median(shares)
    ok = share <= MAX_SECOND_NIGHT_SHARE
    print()
    print(
        f"    night 2 / night 1 evaluating stage per pair: {', '.join(f'{x:.2f}' for x in shares)}; median {share:.2f}"
    )
    print(
        f"    night 2 / night 1 per-model work only (diagnostic): "
        f"{', '.join(f'{x:.2f}' for x in model_shares)}; median {statistics.median(model_shares):.2f}"
    )
    print(
        f"    target: evaluating stage <= {MAX_SECOND_NIGHT_SHARE:.2f} -> {'PASS' if ok else 'FAIL'}"
    )
    return ok, {"share": share, "shares": shares, "model_shares": model_shares, "pairs": results}


def quiet_pipeline_logs() -> None:
    """Keep the pipeline's info-level structlog lines out of the table (warnings still show)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    """Run both parts; returns the exit status (0 when both targets hold)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="(a) batched/loop pairs (median taken)"
    )
    parser.add_argument(
        "--night-pairs", type=int, default=3, help="(b) pairs of nights (median taken)"
    )
    parser.add_argument("--iters", type=int, default=60, help="(b) training iterations per night")
    parser.add_argument(
        "--suite-scale",
        type=int,
        default=1,
        help="repeat each demo eval item this many times (default: the demo as is)",
    )
    add_child_options(parser)
    args = parser.parse_args(argv)
    apply_child_options(args)
    quiet_pipeline_logs()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine: {platform.system()} {platform.machine()}, {cores} CPU cores; BLAS: {blas_description()}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-eval-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = load_config(build_workspace(tmp / "ws", iters=args.iters))
        if args.suite_scale > 1:
            scale_suite(cfg, args.suite_scale)
            print(f"eval suite scaled: every demo item repeated {args.suite_scale} times")
        ok_a, res_a = part_a(cfg, tmp, args.repeats)
        print()
        ok_b, res_b = part_b(cfg, tmp, args.night_pairs)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps({"a": res_a, "b": res_b, "ok": ok_a and ok_b}, default=str))
    return 0 if ok_a and ok_b else 1


if __name__ == "__main__":
    sys.exit(main())
