"""Hand-off time of the managed server vs the server's own cold start (target: at most 1.5x).

On the demo's tiny model: one night promotes ``run-0001``; then the managed
server (a :class:`daemon.serving.server.Supervisor` running ``mlx_lm.server``)
is switched between the base model and ``run-0001`` through the promotion
path (``current`` swap + registry row) several times while a client loops on
``/v1/chat/completions``.

- reference: ``mlx_lm.server`` started by hand on the release, spawn to first
  healthy ``/health`` (median of ``--repeats``);
- hand-off: promotion committed to the first probe whose reply equals the new
  champion's recorded reply (median);
- failed client requests during the swaps (connection refused, HTTP errors),
  per swap, with a client that retries after 0.1 s.

Exit status 0 when the median ratio is at most 1.5. Usage::

    python benchmarks/handoff.py [--workspace DIR] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

TARGET_RATIO = 1.5
RETRY_S = 0.1
"""The looping client waits this long after a failed request (seconds), as a polite client would."""


def _night(ws: Path) -> Path:
    from daemon.demo import build_workspace

    cfg = build_workspace(ws, iters=60)
    if not (ws / "state" / "releases" / "run-0001").is_dir():
        subprocess.run([sys.executable, "-m", "daemon", "-c", str(cfg), "--run-now"], check=True, capture_output=True)
    return cfg


def _cold_start(cfg, release: str) -> float:  # type: ignore[no-untyped-def]
    from daemon.serving.server import check_health, free_port, render_command, server_env

    port = free_port("127.0.0.1")
    started = time.monotonic()
    proc = subprocess.Popen(
        render_command(cfg, release, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=server_env(cfg.paths.state_dir),
    )
    try:
        while check_health(f"http://127.0.0.1:{port}", 1.0) is not None:
            if proc.poll() is not None:
                raise SystemExit("mlx_lm.server exited during the cold start")
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


class Client(threading.Thread):
    """Loops on the endpoint; counts answered and failed requests."""

    def __init__(self, url: str, messages: list[dict[str, str]]) -> None:
        super().__init__(daemon=True)
        self.url, self.messages = url, messages
        self.ok = self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.post(self.url + "/v1/chat/completions", json={"messages": self.messages, "max_tokens": 4, "temperature": 0})
                    r.raise_for_status()
                    self.ok += 1
                except httpx.HTTPError:
                    self.failed += 1
                    time.sleep(RETRY_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from daemon.config import load_config
    from daemon.pipeline import locked_registry
    from daemon.serving.handoff import champion_target, recorded_replies, switch_champion
    from daemon.serving.probes import run_probes, select_probes
    from daemon.serving.server import Supervisor, read_server_state
    from daemon.suite import load_suite

    ws = args.workspace or Path(tempfile.mkdtemp(prefix="nightshift-handoff-")) / "ws"
    cfg_path = _night(ws)
    cfg = load_config(cfg_path)
    state = cfg.paths.state_dir
    suite = load_suite(cfg.paths.eval_suite)
    with locked_registry(state) as (_lock, reg):
        champ = champion_target(reg, base_model_id=None)
        assert champ is not None and champ.release, "the night did not promote"
        run = reg.get_run(1)
        base_id = run.champion_model_id
        assert base_id is not None
        targets = {
            "release": champ.__class__(champ.release, champ.model_id, 1, champ.label, recorded_replies(reg, champ.model_id, run_id=1)),
            "base": champ.__class__("", base_id, None, "the base model", recorded_replies(reg, base_id, run_id=1)),
        }
        cold = [_cold_start(cfg, champ.release) for _ in range(args.repeats)]
        sup = Supervisor(cfg)
        sup.start()
        handoffs: list[float] = []
        failed_per_swap: list[int] = []
        client = None
        try:
            order = ["base", "release"] * args.repeats
            for i, name in enumerate(order):
                target, other = targets[name], targets["release" if name == "base" else "base"]
                probe = select_probes(suite, target.replies, other.replies, count=1, default_max_tokens=cfg.evaluation.max_tokens)[0]
                failed_before = client.failed if client else 0
                switch_champion(cfg, reg, target, run_id=None, reason="benchmark", decided_by="benchmark")
                committed = time.monotonic()
                while True:  # promotion committed -> first verified probe
                    st = read_server_state(state) or {}
                    if st.get("state") == "running" and st.get("release") == target.release:
                        if run_probes(sup.url, [probe], model=None, timeout_s=30).matched:
                            break
                    time.sleep(0.01)
                if i > 0:  # the first switch only brings the server up
                    handoffs.append(time.monotonic() - committed)
                if client is not None:
                    failed_per_swap.append(client.failed - failed_before)
                if client is None:
                    client = Client(sup.url, probe.messages)
                    client.start()
                    time.sleep(1.0)
        finally:
            if client is not None:
                client.stop.set()
                client.join()
            sup.stop()
    cold_s, handoff_s = statistics.median(cold), statistics.median(handoffs)
    ratio = handoff_s / cold_s
    result = {
        "cold_start_s": round(cold_s, 3),
        "handoff_s": round(handoff_s, 3),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "swaps": len(handoffs),
        "client_requests_ok": client.ok if client else 0,
        "client_requests_failed": client.failed if client else 0,
        "failed_per_swap": failed_per_swap,
        "client_retry_s": RETRY_S,
    }
    print(f"cold start (mlx_lm.server, spawn -> healthy): median {cold_s:.2f} s of {cold}")
    print(f"hand-off (committed -> first verified probe): median {handoff_s:.2f} s over {len(handoffs)} swaps")
    print(f"ratio {ratio:.2f} (target <= {TARGET_RATIO}): {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")
    print(f"client looping on the endpoint (retry after {RETRY_S} s): {result['client_requests_ok']} ok, "
          f"{result['client_requests_failed']} failed; failed per swap {failed_per_swap} (the managed server "
          "restarts: requests fail while the new one loads)")
    if args.json:
        print(json.dumps(result))
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
