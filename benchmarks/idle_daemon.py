"""The idle daemon's footprint: RSS and CPU of ``nightshift start`` waiting for 1 AM.

Starts the real daemon on a throwaway workspace (no model needed: nothing is
due) next to a reference ``python -c "import time; time.sleep(...)"``, samples
both for ``--seconds`` (default 10), and prints the ratios. Checks:

* the daemon's peak RSS is below ``--max-rss-mb`` (default 80 MB);
* no mlx library is mapped into the daemon (``/proc/<pid>/maps`` on Linux,
  ``lsof -p`` on macOS) and its own ``daemon started`` log line says
  ``mlx_loaded: false``;
* SIGTERM stops it with exit status 0 and removes its pidfile.

Exit status 0 when every check passes, 1 otherwise. Usage::

    python benchmarks/idle_daemon.py [--seconds 10] [--max-rss-mb 80] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
paths:
  state_dir: state
schedule:
  cron: "0 1 * * *"
  misfire_grace_s: 0       # never catch up a night during the benchmark
  rehearsal: false
  check_interval_s: 300
"""


def nightshift_cmd() -> list[str]:
    """The venv's ``nightshift`` script, else ``python -m daemon``."""
    script = Path(sys.executable).absolute().parent / "nightshift"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "daemon"]


def rss_kb(pid: int) -> int:
    """Resident set size in KiB (``VmRSS`` on Linux, ``ps -o rss=`` elsewhere)."""
    status = Path(f"/proc/{pid}/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        fields = stat.read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")
    out = subprocess.run(["ps", "-o", "time=", "-p", str(pid)], capture_output=True, text=True)
    total = 0.0
    for part in out.stdout.strip().replace("-", ":").split(":"):
        total = total * 60 + float(part or 0)
    return total


def mapped_mlx(pid: int) -> list[str]:
    """Paths of mlx shared libraries mapped into the process."""
    maps = Path(f"/proc/{pid}/maps")
    if maps.exists():
        lines = maps.read_text().splitlines()
    else:
        lines = subprocess.run(["lsof", "-p", str(pid)], capture_output=True, text=True).stdout.splitlines()
    hits = {line.split()[-1] for line in lines if "libmlx" in line or "/mlx/core" in line}
    return sorted(hits)


def started_record(log_path: Path) -> dict | None:
    """The daemon's ``daemon started`` JSON log record, if written yet."""
    if not log_path.exists():
        return None
    for line in log_path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "daemon started":
            return record
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 when all checks pass)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling window (s)")
    parser.add_argument("--max-rss-mb", type=float, default=80.0, help="RSS limit (MB)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="nightshift-bench-") as tmp:
        workspace = Path(tmp)
        config = workspace / "nightshift.yaml"
        config.write_text(CONFIG, encoding="utf-8")
        state = workspace / "state"
        log_path = state / "logs" / "nightshift.jsonl"
        with (workspace / "stderr.txt").open("wb") as err:
            daemon = subprocess.Popen(
                [*nightshift_cmd(), "start", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        reference = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({args.seconds + 60})"]
        )
        try:
            started = time.monotonic()
            record = None
            while record is None and time.monotonic() - started < 60 and daemon.poll() is None:
                time.sleep(0.1)
                record = started_record(log_path)
            if record is None:
                stderr_text = (workspace / "stderr.txt").read_text(errors="replace")
                print(f"daemon did not start (exit {daemon.poll()}):\n{stderr_text}", file=sys.stderr)
                return 1
            startup_s = time.monotonic() - started
            cpu0 = {p.pid: cpu_s(p.pid) for p in (daemon, reference)}
            peak = {daemon.pid: 0, reference.pid: 0}
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                for pid in peak:
                    peak[pid] = max(peak[pid], rss_kb(pid))
                time.sleep(0.5)
            window_s = time.monotonic() - t0
            cpu = {pid: cpu_s(pid) - cpu0[pid] for pid in cpu0}
            mlx_libs = mapped_mlx(daemon.pid)
            daemon.send_signal(signal.SIGTERM)
            try:
                exit_status: int | None = daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                exit_status = None
            pidfile_left = (state / "daemon.pid").exists()
        finally:
            for proc in (daemon, reference):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    d_rss_mb, r_rss_mb = peak[daemon.pid] / 1024, peak[reference.pid] / 1024
    d_cpu, r_cpu = cpu[daemon.pid], cpu[reference.pid]
    result = {
        "platform": platform.platform(),
        "startup_s": round(startup_s, 2),
        "window_s": round(window_s, 1),
        "daemon_rss_mb": round(d_rss_mb, 1),
        "reference_rss_mb": round(r_rss_mb, 1),
        "rss_ratio": round(d_rss_mb / r_rss_mb, 2) if r_rss_mb else None,
        "daemon_cpu_s": round(d_cpu, 3),
        "reference_cpu_s": round(r_cpu, 3),
        "cpu_ratio": round(d_cpu / r_cpu, 2) if r_cpu > 0 else None,
        "daemon_cpu_share": round(d_cpu / window_s, 5),
        "modules_loaded": record.get("modules_loaded"),
        "mlx_loaded": record.get("mlx_loaded"),
        "mlx_libraries_mapped": mlx_libs,
        "exit_status_after_sigterm": exit_status,
        "pidfile_left": pidfile_left,
    }
    checks = {
        f"rss < {args.max_rss_mb:g} MB": d_rss_mb < args.max_rss_mb,
        "mlx not imported": record.get("mlx_loaded") is False and not mlx_libs,
        "SIGTERM -> exit 0": exit_status == 0,
        "pidfile removed": not pidfile_left,
    }
    result["checks"] = checks
    if args.json:
        print(json.dumps(result))
    else:
        print(f"idle daemon vs `python -c time.sleep` over {window_s:.1f} s ({result['platform']})")
        print(f"  startup to 'daemon started': {startup_s:.2f} s, {record.get('modules_loaded')} modules")
        print(f"  peak RSS  daemon {d_rss_mb:7.1f} MB   reference {r_rss_mb:6.1f} MB   ratio {result['rss_ratio']}")
        print(f"  CPU time  daemon {d_cpu:7.3f} s    reference {r_cpu:6.3f} s    "
              f"ratio {result['cpu_ratio']}   daemon share {100 * d_cpu / window_s:.3f} % of one core")
        for name, ok in checks.items():
            print(f"  [{'ok' if ok else 'FAIL'}] {name}")
        if mlx_libs:
            print(f"  mlx libraries mapped: {mlx_libs}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
