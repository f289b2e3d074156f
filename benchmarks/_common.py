"""Options shared by the benchmark scripts that run mlx children (not a benchmark itself)."""

from __future__ import annotations

import argparse
import os


def add_child_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--blas-threads N`` and ``--json`` to ``parser``."""
    parser.add_argument(
        "--blas-threads",
        type=int,
        help="set OPENBLAS_NUM_THREADS for both sides (default: unset, as the daemon runs)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object")


def apply_child_options(args: argparse.Namespace) -> None:
    """Export ``--blas-threads``: worker_env() copies the environment into every child,
    ours and the reference alike."""
    if args.blas_threads:
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
