"""Distributed training child: ``python -m daemon.worker.launch REQUEST.json``.

Runs the ``mlx.launch`` command line of the request (see
:mod:`daemon.distributed`) in this process group and exits with its status.
It exists for one reason: ``mlx.launch`` does not watch the daemon. When the
daemon dies (``kill -9``), this process stops its whole process group (the
launcher and every local rank); remote ranks lose their ssh session and are
hung up. A normal stop (timeout, shutdown) reaches the group through
:func:`daemon.child.stop_process_group` as for any worker; when this process
itself dies (``kill -9``), the daemon kills what is left of its group
(:func:`daemon.child.kill_leftover_group`). Remote ranks are stopped the same
way in both cases: ``mlx.launch`` reaches them through ``ssh -tt``, whose
clients are members of this group, and a killed client closes the remote
terminal, which hangs up (SIGHUP) the rank behind it.

``mlx.launch`` exits 0 even when a rank fails; the parent trusts only rank 0's
result file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from daemon.worker.common import EXIT_ORPHANED, PARENT_PID_ENV, PARENT_POLL_S, read_request


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
    # A pipe nobody writes to, not /dev/null: mlx.launch selects on its stdin every 0.1 s
    # to forward input, and /dev/null is always readable (the loop would spin a core).
    proc = subprocess.Popen(req["argv"], stdin=subprocess.PIPE)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
