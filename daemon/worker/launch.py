"""Distributed training child: ``python -m daemon.worker.launch REQUEST.json``.

Runs the ``mlx.launch`` command line of the request (see
:mod:`daemon.distributed`) and exits with a status that reflects every rank.
It exists for two reasons. ``mlx.launch`` does not watch the daemon: when the
daemon dies (``kill -9``), this process stops its whole process group (the
launcher and every local rank); remote ranks lose their ssh session and are
hung up. A normal stop (timeout, shutdown) reaches the group through
:func:`daemon.child.stop_process_group` as for any worker; when this process
itself dies (``kill -9``), the daemon kills what is left of its group
(:func:`daemon.child.kill_leftover_group`). Remote ranks are stopped the same
way in both cases: ``mlx.launch`` reaches them through ``ssh -tt``, whose
clients are members of this group, and a killed client closes the remote
terminal, which hangs up (SIGHUP) the rank behind it; the rank's own parent
watch (:func:`daemon.worker.common.watch_parent`) ends it too once its ssh
session is gone. Local ranks are children of this process and watch it the
same way.

And ``mlx.launch`` runs here, in this process (its ``main``), so that the exit
status of every rank's process is known from its own process handling, never
from console text: ``mlx.launch`` exits 0 even when a rank fails. When a rank
failed, this process rewrites rank 0's result file with a reason that names
the rank and how it ended (:func:`describe_ranks`) and exits
:data:`~daemon.worker.common.EXIT_ERROR`; otherwise it leaves rank 0's result,
which the parent trusts, as it is.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.worker.common import (
    EXIT_ERROR,
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_ORPHANED,
    PARENT_PID_ENV,
    PARENT_POLL_S,
    read_request,
    signal_name,
    write_json,
)

SSH_FAILED = 255
"""``ssh``'s own exit status: it could not connect, or the remote rank died by a signal."""


@dataclass(frozen=True)
class RankExit:
    """How one rank's process ended, as ``mlx.launch`` saw it.

    Attributes:
        rank: 0-based rank.
        host: the host ``mlx.launch`` ran it on (``127.0.0.1``: here, without ssh).
        returncode: the process's exit status, ``-N`` when killed by signal N; for a
            remote rank the status of its ``ssh`` client; None: never ended.
        stopped_by_launcher: ``mlx.launch`` stopped it because another rank had failed.
    """

    rank: int
    host: str
    returncode: int | None
    stopped_by_launcher: bool = False

    def how(self) -> str:
        """``was killed by SIGKILL`` / ``exited with status 1`` / ... (one phrase)."""
        code = self.returncode
        if code is None:
            return "did not end"
        if code < 0:
            return f"was killed by {signal_name(code)}"
        if code == SSH_FAILED and self.host != "127.0.0.1":
            return f"exited with status {code} (ssh to {self.host} failed, or the rank died by a signal there)"
        return f"exited with status {code}"


def describe_ranks(ranks: list[RankExit]) -> str | None:
    """Which ranks failed and how, in the order given (the order they ended), causes
    first; None when every rank exited 0.

    A rank ``mlx.launch`` stopped (because another failed) is a consequence, named last.
    """
    failed = [r for r in ranks if r.returncode != 0]
    if not failed:
        return None
    causes = [r for r in failed if not r.stopped_by_launcher]
    stopped = [r for r in failed if r.stopped_by_launcher]
    where = {r.rank: f" on {r.host}" if r.host != "127.0.0.1" else "" for r in ranks}
    parts = [f"rank {r.rank} of {len(ranks)}{where[r.rank]} {r.how()}" for r in causes]
    if stopped:
        parts.append("mlx.launch then stopped rank " + ", ".join(str(r.rank) for r in stopped))
    return "; ".join(parts)


def run_launcher(argv: list[str]) -> tuple[int, list[RankExit]]:
    """Run ``mlx.launch`` with ``argv[1:]`` in this process; its exit status and every rank's
    (in the order the ranks ended).

    ``mlx.launch`` starts each rank as a ``RemoteProcess`` (a local shell that execs the
    rank, or ``ssh`` to its host); a subclass records them. The ``mpi`` backend hands the
    ranks to ``mpirun`` and reports none. Source: ``mlx/_distributed_utils/launch.py``
    (mlx 0.32, pinned below 0.33).
    """
    from mlx._distributed_utils import launch as mlx_launch

    started: list[Any] = []

    class RecordedProcess(mlx_launch.RemoteProcess):  # type: ignore[misc, name-defined]
        def __init__(self, rank: int, host: str, *args: Any) -> None:
            super().__init__(rank, host, *args)
            self.rank, self.host = rank, host
            self.stopped_by_launcher = False
            self.ended_at = math.inf
            started.append(self)

        def terminate(self) -> None:  # mlx.launch stops the others once a rank failed
            self.stopped_by_launcher = True
            super().terminate()

        @property
        def exit_status(self) -> tuple[int | None, bool | None]:
            status: tuple[int | None, bool | None] = super().exit_status
            if status[0] is not None:  # read when the rank's output is drained: ending order
                self.ended_at = min(self.ended_at, time.monotonic())
            return status

    mlx_launch.RemoteProcess = RecordedProcess
    # A pipe nobody writes to as stdin, not /dev/null: mlx.launch selects on its stdin every
    # 0.1 s to forward input, and /dev/null is always readable (the loop would spin a core).
    read_end, _keep_open = os.pipe()
    os.dup2(read_end, sys.stdin.fileno())
    sys.argv = ["mlx.launch", *argv[1:]]
    try:
        mlx_launch.main()
        status = EXIT_OK
    except SystemExit as exc:  # a usage error (argparse)
        status = exc.code if isinstance(exc.code, int) else EXIT_ERROR
    ranks = []
    for proc in sorted(started, key=lambda p: (p.ended_at, p.rank)):
        code, _ = proc.exit_status
        ranks.append(RankExit(proc.rank, proc.host, code, proc.stopped_by_launcher))
    return status, ranks


def _stop_group_when_orphaned(parent: int) -> None:
    def _watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                try:
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                finally:
                    os._exit(EXIT_ORPHANED)

    threading.Thread(target=_watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    expected = os.environ.get(PARENT_PID_ENV)
    parent = int(expected) if expected else os.getppid()
    if os.getppid() != parent:
        return EXIT_ORPHANED
    _stop_group_when_orphaned(parent)
    req = read_request(argv)
    status, ranks = run_launcher(req["argv"])
    problem = describe_ranks(ranks)
    if status != EXIT_OK or problem is None:
        return status
    result_file = Path(req["result_file"])
    try:
        rank0 = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        rank0 = {}
    if rank0.get("kind") == "nonfinite":  # every rank stopped on the same loss; rank 0 says why
        return EXIT_NONFINITE
    said = f"; rank 0 reported: {rank0['reason']}" if rank0.get("reason") else ""
    print(f"[nightshift] {problem}", file=sys.stderr, flush=True)
    # A rank killed by a signal (the OOM killer, a reboot) makes the night resumable, like a killed single child.
    killed = any(r.returncode is not None and r.returncode < 0 and not r.stopped_by_launcher for r in ranks)
    write_json(result_file, {**rank0, "ok": False, "reason": f"{problem}{said}", **({"kind": "killed"} if killed else {})})
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main(sys.argv))
