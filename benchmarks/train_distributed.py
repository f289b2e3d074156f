"""Two local ``mlx.launch`` ring processes against one process on the same job.

Builds the demo workspace in a temporary directory and runs
:func:`daemon.train.train_challenger` with ``training.distributed.processes``
1 and 2 (same global batch, alternating order), timing each from start to the
parent seeing the exit. A 2-core machine cannot show a speedup (two ranks
share the cores the single process already uses); the point is correctness
and the overhead of the launcher, the ring all-reduce and the second model
load. Printed: wall-time ratio two/one per pair and its median, and the
relative difference of the final validation losses.

Target: the final validation losses agree within 10 % (see
``tests/integration/test_training.py`` for why they are not equal). The time
ratio is reported, not gated. Usage::

    python benchmarks/train_distributed.py [--iters 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import add_child_options, apply_child_options

from daemon.config import DistributedConfig, load_config
from daemon.demo import build_workspace
from daemon.train import METRICS_FILE, train_challenger
from daemon.worker.env import blas_description


def final_val(run_dir: Path) -> float:
    """The last validation loss in a run's metrics file."""
    vals = [json.loads(x) for x in (run_dir / METRICS_FILE).read_text().splitlines() if '"val"' in x]
    return float(vals[-1]["val_loss"])


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; exit status 0 when the losses agree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-loss-diff", type=float, default=0.10, help="relative, final validation loss")
    add_child_options(parser)
    args = parser.parse_args(argv)
    apply_child_options(args)
    with tempfile.TemporaryDirectory(prefix="nightshift-bench-dist-") as tmp:
        cfg = load_config(build_workspace(Path(tmp) / "ws", iters=args.iters))
        print(f"machine: {os.cpu_count()} CPU cores; BLAS: {blas_description()}; load {os.getloadavg()[0]:.2f}")
        print(f"job: demo model, iters={args.iters}, global batch {cfg.training.batch_size}")
        print(f"{'rep':>3} {'processes':>9} {'wall s':>8} {'final val':>10}")
        ratios, diffs = [], []
        for rep in range(args.repeats):
            got: dict[int, tuple[float, float]] = {}
            for n in ((1, 2) if rep % 2 == 0 else (2, 1)):
                run_cfg = dataclasses.replace(
                    cfg, training=dataclasses.replace(cfg.training, distributed=DistributedConfig(processes=n))
                )
                run_dir = Path(tmp) / f"run-{rep}-{n}"
                started = time.monotonic()
                train_challenger(run_cfg, run_dir, on_metrics=lambda rows: None)
                got[n] = (time.monotonic() - started, final_val(run_dir))
                print(f"{rep + 1:>3} {n:>9} {got[n][0]:>8.2f} {got[n][1]:>10.4f}")
            ratios.append(got[2][0] / got[1][0])
            diffs.append(abs(got[2][1] - got[1][1]) / got[1][1])
    ok = max(diffs) <= args.max_loss_diff
    print(f"wall ratio two/one processes per pair: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f} (2 cores: no speedup possible)")
    print(f"final validation loss, relative difference: {', '.join(f'{d:.3f}' for d in diffs)}; "
          f"target <= {args.max_loss_diff:.2f} -> {'PASS' if ok else 'FAIL'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps({"ratios": ratios, "loss_diffs": diffs, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
