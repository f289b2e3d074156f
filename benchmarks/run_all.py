"""Run every benchmark script in this directory and summarise their exit statuses.

Each ``benchmarks/*.py`` other than this one runs in turn, with this
interpreter, from the repository root, its output streamed through. Each
script compares against its own reference in the same run and exits 0 when
its target holds (see ``benchmarks/README.md``).

Exit status 0 when every script exited 0, 1 otherwise. Usage::

    python benchmarks/run_all.py [--only NAME ...] [--timeout-s 900]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT_S = 900.0
"""Per-script limit (seconds); a script past it counts as failed."""


def scripts(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts to run, sorted by name (``only``: stems or file names to keep)."""
    found = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if only:
        wanted = {Path(n).stem for n in only}
        found = [p for p in found if p.stem in wanted]
    return found


def run_script(script: Path, timeout_s: float) -> str:
    """Run one script in its own process group; its exit status, or ``timeout``.

    The group (the script and the workers it starts) is stopped on timeout or
    Ctrl-C: SIGTERM, then SIGKILL after a grace period.
    """
    proc = subprocess.Popen([sys.executable, str(script)], cwd=HERE.parent, start_new_session=True)
    try:
        return str(proc.wait(timeout=timeout_s))
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return "timeout"
    except KeyboardInterrupt:
        _stop_group(proc)
        raise


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    """Run the scripts; returns 0 when all of them exited 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these scripts (stem or file name)"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=DEFAULT_TIMEOUT_S, help="limit per script (s)"
    )
    args = parser.parse_args(argv)

    todo = scripts(args.only)
    if not todo:
        print("no benchmark scripts found", file=sys.stderr)
        return 1
    results: list[tuple[str, str, float]] = []
    for script in todo:
        print(f"=== {script.name} ===", flush=True)
        started = time.monotonic()
        status = run_script(script, args.timeout_s)
        results.append((script.name, status, time.monotonic() - started))
        print(flush=True)

    width = max(len(name) for name, _, _ in results)
    print(f"{'script':<{width}}  {'exit':>7}  {'time s':>7}  result")
    for name, status, duration in results:
        print(
            f"{name:<{width}}  {status:>7}  {duration:>7.1f}  {'ok' if status == '0' else 'FAILED'}"
        )
    failed = [name for name, status, _ in results if status != "0"]
    print(
        f"{len(results) - len(failed)}/{len(results)} passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
