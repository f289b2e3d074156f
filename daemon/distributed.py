"""Data-parallel training across processes or Macs with ``mlx.launch`` (parent side, no mlx).

``training.distributed`` turns it on: ``processes: N`` runs N local processes
(``mlx.launch -n N``), ``hostfile`` names the hosts (the JSON that
``mlx.distributed_config`` writes: a list of ``{"ssh": ..., "ips": [...]}``,
or ``{"backend", "envs", "hosts"}``). The train child becomes
``python -m daemon.worker.launch``, which runs ``mlx.launch`` with
``python -m daemon.worker.train '<request JSON>'`` on every host; mlx-lm's
trainer shards each batch by rank and averages the gradients, and rank 0
writes metrics, checkpoints and the adapter.

Every host needs the same Python, model and dataset paths; :func:`check_hosts`
(a preflight check) verifies that over ``ssh`` and can copy a missing model
with ``mlx_lm share``.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import Config

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SSH_TIMEOUT_S = 10.0
"""Per-host limit for the preflight's ssh probe (seconds)."""


@dataclass(frozen=True)
class Host:
    """One entry of a hostfile: the name to ssh to and the IPs the ring backend uses."""

    ssh: str
    ips: tuple[str, ...]

    @property
    def local(self) -> bool:
        """True for this machine (no ssh needed; ``mlx.launch`` treats it the same way)."""
        return self.ssh in LOCAL_HOSTS


def read_hostfile(path: Path) -> list[Host]:
    """The hosts of an ``mlx.launch`` hostfile.

    Raises:
        ValueError: the file is missing, not JSON, or has no hosts; the message names the file.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"training.distributed.hostfile {path}: cannot read it as JSON ({exc})") from exc
    rows = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not rows or not all(isinstance(h, dict) and "ssh" in h for h in rows):
        raise ValueError(
            f"training.distributed.hostfile {path}: expected a list of hosts like "
            '[{"ssh": "mac1.local", "ips": ["10.0.0.1"]}] (see `mlx.distributed_config`)'
        )
    return [Host(ssh=str(h["ssh"]), ips=tuple(str(ip) for ip in h.get("ips", []))) for h in rows]


def world_size(cfg: Config) -> int:
    """Number of training processes: hosts in the hostfile, else ``processes``.

    An unreadable hostfile counts as 1 here; preflight reports it.
    """
    d = cfg.training.distributed
    if d.hostfile is None:
        return d.processes
    try:
        return len(read_hostfile(d.hostfile))
    except ValueError:
        return 1


def free_port(count: int) -> int:
    """A local TCP port ``p`` such that ``p .. p+count-1`` were free a moment ago (ring ranks listen there)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + count >= 65535:
            continue
        try:
            for k in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
    raise OSError("no free local TCP port range for the ring backend")


def launcher_path() -> str:
    """The ``mlx.launch`` console script of this Python (next to ``sys.executable``)."""
    return str(Path(sys.executable).with_name("mlx.launch"))


def launch_argv(cfg: Config, train_request: dict[str, Any]) -> list[str]:
    """The ``mlx.launch`` command line that runs the training child on every rank."""
    d = cfg.training.distributed
    argv = [launcher_path(), "--backend", d.backend]
    if d.hostfile is not None:
        argv += ["--hostfile", str(d.hostfile)]
    else:
        argv += ["-n", str(d.processes)]
        if d.backend == "ring":
            argv += ["--starting-port", str(free_port(d.processes))]
    # Local ranks share 2..N cores: one BLAS thread each keeps them from oversubscribing.
    if d.hostfile is None and d.processes > 1:
        argv += ["--env", "OPENBLAS_NUM_THREADS=1"]
    argv += ["--", sys.executable, "-m", "daemon.worker.train", json.dumps(train_request)]
    return argv


def launch_request(cfg: Config, train_request: dict[str, Any]) -> dict[str, Any]:
    """The request for ``daemon.worker.launch``: the ``mlx.launch`` argv and rank 0's result file."""
    return {"argv": launch_argv(cfg, train_request), "result_file": train_request["result_file"]}


def _probe_script(paths: list[str]) -> str:
    checks = " ".join(f"test -e {shlex.quote(p)} || echo missing:{shlex.quote(p)};" for p in paths)
    return f"{checks} echo ok"


def check_hosts(cfg: Config, *, share: bool | None = None, timeout_s: float = SSH_TIMEOUT_S) -> list[str]:
    """Problems with the distributed setup, one sentence each (empty: every host is ready).

    Each non-local host is reached with ``ssh -o BatchMode=yes`` and must have
    this Python, the base model's ``config.json`` and the dataset files at the
    same paths. With ``share`` (default ``training.distributed.share_model``),
    a host missing only the model gets it copied with ``mlx_lm share``.
    """
    d = cfg.training.distributed
    if not d.enabled:
        return []
    if d.hostfile is None:
        return []  # local processes share this machine's paths
    try:
        hosts = read_hostfile(d.hostfile)
    except ValueError as exc:
        return [str(exc)]
    problems = []
    if d.backend == "ring" and any(not h.ips for h in hosts):
        problems.append(f"training.distributed.hostfile {d.hostfile}: the ring backend needs `ips` for every host")
    if cfg.training.batch_size % len(hosts):
        problems.append(
            f"training.batch_size ({cfg.training.batch_size}) must be divisible by the {len(hosts)} hosts in "
            f"{d.hostfile}"
        )
    model_file = str(cfg.paths.base_model / "config.json")
    data = [str(cfg.paths.dataset / "train.jsonl"), str(cfg.paths.dataset / "valid.jsonl")]
    share = d.share_model if share is None else share
    for host in hosts:
        if host.local:
            continue
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout_s)}", host.ssh,
               _probe_script([sys.executable, model_file, *data])]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"host {host.ssh}: not reachable over ssh ({exc})")
            continue
        if out.returncode != 0 or "ok" not in out.stdout.split():
            detail = (out.stderr.strip().splitlines() or ["no answer"])[-1]
            problems.append(f"host {host.ssh}: not reachable over ssh ({detail}); set up key-based ssh")
            continue
        missing = [line.split(":", 1)[1] for line in out.stdout.split() if line.startswith("missing:")]
        if missing == [model_file] and share:
            problems += share_model(cfg, host)
            continue
        for path in missing:
            what = "Python" if path == sys.executable else "model" if path == model_file else "dataset file"
            problems.append(f"host {host.ssh}: {what} {path} is missing (every host needs the same paths)")
    return problems


def share_model(cfg: Config, host: Host) -> list[str]:
    """Copy the base model to the hosts with ``mlx_lm share`` (it uses the same hostfile).

    Returns:
        Problems (empty on success).
    """
    d = cfg.training.distributed
    cmd = [str(Path(sys.executable).with_name("mlx_lm.share")), "--path", str(cfg.paths.base_model),
           "--hostfile", str(d.hostfile)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * 3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"host {host.ssh}: copying the model with mlx_lm share failed ({exc})"]
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return [f"host {host.ssh}: copying the model with mlx_lm share failed ({tail})"]
    return []
