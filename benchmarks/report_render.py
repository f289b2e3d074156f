"""Rendering the morning report of a big night against loading its rows.

Builds a real registry file with 365 previous nights (each with a stored gate
decision over 10 categories, 100 training reports and 4 stages) and tonight's
night: 2,000 eval items scored for base, champion and challenger (6,000 rows),
100 training reports. Then times, in the same process:

* **load** (the reference): reading the rows the report needs through the
  registry API (the run, its stages, metrics, eval sets and their 6,000
  results, the newest runs with their decisions);
* **render**: ``daemon.report.write_report`` (gather, Markdown, HTML with three
  matplotlib figures, the index page of all 366 nights, the night's data composition
  of 2,000 examples in 8 sources), with matplotlib's import timed separately (paid
  once per process), as ``nightshift report`` and ``run-now`` render it;
* **render (daemon)**: the same with the HTML pages drawn in a child process, as a
  night run by ``nightshift start`` renders it (the child's start-up and imports,
  matplotlib's included, are in this time).

**Target:** ``write_report`` under 3 s (both ways). Prints the times and their ratio to the load.
Exit status 0 when the target holds, 1 otherwise. Usage::

    python benchmarks/report_render.py [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy.orm import Session  # noqa: E402

from daemon.config import config_from_dict  # noqa: E402
from daemon.dataset.composition import record_composition  # noqa: E402
from daemon.gate import CategoryScores, GatePolicy, ModelScores, decide_promotion  # noqa: E402
from daemon.registry import Registry, RunStatus, Trigger  # noqa: E402
from daemon.registry.models import EvalResult, EvalSet, Run, RunStage, TrainMetric  # noqa: E402

TARGET_S = 3.0
NIGHTS = 365
ITEMS = 2000
CATEGORIES = 10
METRICS = 100


def build(state: Path) -> tuple[object, Registry, int]:
    """The registry with 365 nights and tonight's big night; returns (config, registry, run id)."""
    rng = random.Random(0)
    cfg = config_from_dict({"paths": {"state_dir": str(state)}}, base_dir=state.parent)
    reg = Registry.open(state)
    snap = json.dumps(cfg.to_dict(), sort_keys=True)
    cats = [f"category_{i}" for i in range(CATEGORIES)]
    per = ITEMS // CATEGORIES
    champ = {c: [float(rng.random() < 0.6) for _ in range(per)] for c in cats}
    chall = {c: [float(rng.random() < 0.65) for _ in range(per)] for c in cats}

    def scores(label: str, vals: dict[str, list[float]]) -> ModelScores:
        return ModelScores(label, {
            c: CategoryScores(name=c, kind="choice", weight=1.0, item_scores={f"{c}-{i}": v for i, v in enumerate(vs)},
                              binary=True, empty=0, unparsed=0) for c, vs in vals.items()})  # fmt: skip

    decision = decide_promotion(scores("champion", champ), scores("challenger", chall), GatePolicy(resamples=2000))
    decision_json = json.dumps(decision.to_dict())
    start = datetime(2025, 11, 20, 1, 0, tzinfo=UTC)
    base = reg.base_model("/models/base", "b" * 64, mlx_version="0.32", mlx_lm_version="0.32.2")
    with Session(reg.engine) as s, s.begin():
        for n in range(NIGHTS + 1):
            t = start + timedelta(days=n)
            status = RunStatus.PROMOTED if n % 7 == 0 else RunStatus.REJECTED
            run = Run(trigger=Trigger.SCHEDULED.value, status=status.value, night_key=t.date().isoformat(),
                      config_snapshot=snap, created_at=t, started_at=t, finished_at=t + timedelta(hours=2),
                      dataset_sha256=f"{n // 30:064d}", dataset_examples=1000 + n // 30, decision=decision_json,
                      run_dir=str(state / "runs" / f"run-{n + 1:04d}"))  # fmt: skip
            s.add(run)
            s.flush()
            for stage, dur in (("preflight", 3.0), ("training", 3600.0), ("evaluating", 1800.0), ("deciding", 2.0)):
                s.add(RunStage(run_id=run.id, stage=stage, started_at=t, finished_at=t, duration_s=dur, outcome="ok"))
            s.add_all(TrainMetric(run_id=run.id, iteration=i * 10, train_loss=2.0 / (1 + i / 30) + rng.random() * 0.05,
                                  val_loss=2.1 / (1 + i / 30) if i % 10 == 0 else None, learning_rate=1e-5,
                                  tokens_per_s=400.0, trained_tokens=i * 1000, peak_memory_bytes=8 * 10**9)
                      for i in range(1, METRICS + 1))  # fmt: skip
        last_id = run.id
        for role, vals in (("base", champ), ("champion", champ), ("challenger", chall)):
            es = EvalSet(run_id=last_id, model_id=base.id, role=role, fingerprint=f"fp-{role}", created_at=start)
            s.add(es)
            s.flush()
            s.add_all(EvalResult(eval_set_id=es.id, category=c, item_id=f"{c}-{i}", sample=0, score=v, empty=False,
                                 parsed=True, prompt=f"Question {i} about {c}: " + "lorem ipsum " * 20,
                                 reply=f"{role} says " + "dolor sit amet " * 15, gold="the answer", extracted=None,
                                 detail=f"scored {v}")
                      for c, vs in vals.items() for i, v in enumerate(vs))  # fmt: skip
    run_dir = state / "runs" / f"run-{last_id:04d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record_composition(_dataset(state.parent / "data", rng), run_dir, [])
    return cfg, reg, last_id


def _dataset(directory: Path, rng: random.Random) -> Path:
    """2,000 examples (1,800 train, 200 valid) tagged with 8 sources."""
    directory.mkdir(parents=True)
    for split, n in (("train", 1800), ("valid", 200)):
        with open(directory / f"{split}.jsonl", "w") as fh:
            for i in range(n):
                msgs = [{"role": "user", "content": f"{split} question {i} " + "lorem " * 30},
                        {"role": "assistant", "content": "answer " * 40}]
                fh.write(json.dumps({"source": f"source_{rng.randrange(8)}", "messages": msgs}) + "\n")
    return directory


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished children of this process."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_rows(reg: Registry, run_id: int) -> int:
    """The reference: read every row the report needs; returns how many."""
    n = 1
    reg.get_run(run_id)
    n += len(reg.stages(run_id)) + len(reg.train_metrics(run_id))
    for es in reg.eval_sets(run_id):
        n += 1 + len(reg.eval_results(es.id))
    n += len(reg.runs(limit=NIGHTS + 1))
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg, reg, run_id = build(Path(tmp) / "state")
        print(f"built {NIGHTS + 1} nights, {3 * ITEMS} eval rows tonight in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        import matplotlib.pyplot  # noqa: F401

        import_s = time.perf_counter() - t0
        from daemon.report import write_report

        loads, renders, load_cpu, render_cpu = [], [], [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = load_rows(reg, run_id)
            loads.append(time.perf_counter() - t0)
            load_cpu.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            write_report(cfg, reg, run_id)  # type: ignore[arg-type]
            renders.append(time.perf_counter() - t0)
            render_cpu.append(time.process_time() - c0)
        from daemon.report import render_html_in_child

        render_html_in_child()  # as the daemon renders a night's report
        daemon_renders, daemon_cpu = [], []
        for _ in range(args.repeats):
            t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
            write_report(cfg, reg, run_id)  # type: ignore[arg-type]
            daemon_renders.append(time.perf_counter() - t0)
            daemon_cpu.append(time.process_time() - c0 + _children_cpu() - k0)
        render_html_in_child(False)
        reg.close()
    daemon_s, daemon_c = statistics.median(daemon_renders), statistics.median(daemon_cpu)
    load_s, render_s = statistics.median(loads), statistics.median(renders)
    load_c, render_c = statistics.median(load_cpu), statistics.median(render_cpu)
    # Rendering runs on one thread: its CPU seconds are its wall time on an idle machine. On a
    # shared machine (load above the core count) the wall time includes waiting for a core.
    ok = render_s < TARGET_S and daemon_s < TARGET_S
    print(f"rows loaded:           {rows}")
    print("                       wall (median)   CPU (median)")
    print(f"load rows:             {load_s:8.3f} s     {load_c:8.3f} s")
    print(f"write_report:          {render_s:8.3f} s     {render_c:8.3f} s   ({render_s / load_s:.1f}x the load's wall time)")
    print(f"write_report (daemon): {daemon_s:8.3f} s     {daemon_c:8.3f} s   ({daemon_s / load_s:.1f}x; HTML drawn in a child "
          "process, its CPU included)")
    print(f"target: write_report wall < {TARGET_S:.0f} s, both ways: {'PASS' if ok else 'FAIL'} (CPU {render_c:.2f} s)")
    print(f"matplotlib import:     {import_s:.3f} s (once per process, not in the median)")
    print(f"load average at end:   {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    if args.json:
        print(json.dumps({"rows": rows, "load_s": load_s, "render_s": render_s, "daemon_render_s": daemon_s,
                          "daemon_render_cpu_s": daemon_c, "load_cpu_s": load_c,
                          "render_cpu_s": render_c, "import_s": import_s, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
