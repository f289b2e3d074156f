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
import platform
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import Config

LOCAL_HOSTS = frozenset({"127.0.0.1"})
"""Hosts ``mlx.launch`` runs without ssh: exactly ``127.0.0.1`` (``RemoteProcess`` in
``mlx/_distributed_utils/launch.py``, mlx 0.32); ``localhost`` and ``::1`` go over ssh there too."""
JACCL_MIN_MACOS = (26, 2)
"""RDMA over Thunderbolt starts with macOS 26.2 (Apple TN3205)."""
SSH_TIMEOUT_S = 10.0
"""Per-host limit for the preflight's ssh probe (seconds)."""


@dataclass(frozen=True)
class Host:
    """One entry of a hostfile: the name to ssh to and the IPs the ring backend uses."""

    ssh: str
    ips: tuple[str, ...]

    rdma: tuple[Any, ...] = ()
    """jaccl: this host's RDMA device towards each rank (``null`` for itself), as ``mlx.distributed_config`` writes."""

    @property
    def local(self) -> bool:
        """True when ``mlx.launch`` starts this host's rank without ssh (see :data:`LOCAL_HOSTS`)."""
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
    return [
        Host(ssh=str(h["ssh"]), ips=tuple(str(ip) for ip in h.get("ips", [])), rdma=tuple(h.get("rdma") or ()))
        for h in rows
    ]


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
        elif d.backend == "nccl":  # rank 0 listens there; local rank k uses GPU k
            argv += ["--nccl-port", str(free_port(1))]
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

    The backend's prerequisites come first (:func:`backend_problems`). Each host
    but ``127.0.0.1`` is reached with ``ssh -o BatchMode=yes`` and must have
    this Python, the base model's ``config.json`` and the dataset files at the
    same paths. With ``share`` (default ``training.distributed.share_model``),
    a host missing only the model gets it copied with ``mlx_lm share``.
    """
    d = cfg.training.distributed
    if not d.enabled:
        return []
    problems = backend_problems(cfg)
    if d.hostfile is None:
        return problems  # local processes share this machine's paths
    try:
        hosts = read_hostfile(d.hostfile)
    except ValueError as exc:
        return [*problems, str(exc)]
    if d.backend == "jaccl":
        problems += _rdma_problems(d.hostfile, hosts)
    if d.backend == "ring" and any(not h.ips for h in hosts):
        problems.append(f"training.distributed.hostfile {d.hostfile}: the ring backend needs `ips` for every host")
    if d.backend in ("nccl", "jaccl") and not hosts[0].ips:
        problems.append(f"training.distributed.hostfile {d.hostfile}: the {d.backend} backend needs `ips` for the "
                        "first host (rank 0), reachable from every other host")
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


def backend_problems(cfg: Config) -> list[str]:
    """What this machine lacks for ``training.distributed.backend`` (empty: nothing).

    ``mpi``: ``mpirun`` on PATH (``mlx.launch`` runs ``which mpirun``). ``jaccl``:
    macOS 26.2 or later (:data:`JACCL_MIN_MACOS`) with RDMA devices listed by
    ``ibv_devices``, and a hostfile (its ``rdma`` entries name the cables).
    ``nccl``: an NVIDIA GPU that this Python's mlx can use (``mlx[cuda]``), asked
    in a child process because the scheduler never imports mlx.
    """
    d = cfg.training.distributed
    key = f"training.distributed.backend {d.backend}"
    if d.backend == "mpi" and shutil.which("mpirun") is None:
        return [f"{key}: mpirun is not on PATH; install Open MPI (brew install open-mpi) or use backend: ring"]
    if d.backend == "jaccl":
        release = platform.mac_ver()[0]
        version = tuple(int(p) for p in release.split(".")[:2] if p.isdigit()) if release else ()
        if platform.system() != "Darwin" or version < JACCL_MIN_MACOS:
            here = f"macOS {release}" if release else platform.system()
            return [
                f"{key}: RDMA over Thunderbolt needs macOS {'.'.join(map(str, JACCL_MIN_MACOS))} or later "
                f"(this machine runs {here}); use backend: ring"
            ]
        if not _rdma_devices():
            return [
                f"{key}: no RDMA devices (`ibv_devices` lists none); enable RDMA over Thunderbolt once in "
                "macOS Recovery with `rdma_ctl enable`, or use backend: ring"
            ]
        if d.hostfile is None:
            return [f"{key}: needs a hostfile with each host's rdma devices (`mlx.distributed_config --backend jaccl`)"]
    if d.backend == "nccl" and not _cuda_available():
        return [f"{key}: no NVIDIA GPU usable by mlx here (install mlx[cuda] on a CUDA machine) or use backend: ring"]
    return []


def _rdma_devices() -> list[str]:
    try:
        out = subprocess.run(["ibv_devices"], capture_output=True, text=True, timeout=SSH_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [line.split() for line in out.stdout.splitlines()[2:]]  # a header and a rule first
    return [row[0] for row in rows if row]


def _cuda_available() -> bool:
    probe = "import mlx.core as mx; raise SystemExit(0 if mx.cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _rdma_problems(hostfile: Path, hosts: list[Host]) -> list[str]:
    """A jaccl hostfile's ``rdma`` rows: one entry per rank, ``null`` for the host itself
    (what ``mlx.launch`` checks before it starts, where it fails with a usage error)."""
    n = len(hosts)
    if any(len(h.rdma) != n for h in hosts) or any(h.rdma[i] is not None for i, h in enumerate(hosts)):
        return [
            f"training.distributed.hostfile {hostfile}: jaccl needs an `rdma` list per host with one entry per "
            "host and null for the host itself (`mlx.distributed_config --backend jaccl` writes it)"
        ]
    missing = [f"{hosts[i].ssh} to {hosts[j].ssh}" for i, h in enumerate(hosts) for j in range(n)
               if i != j and h.rdma[j] is None]
    if missing:
        return [f"training.distributed.hostfile {hostfile}: no RDMA device listed for {', '.join(missing[:3])}"]
    return []
