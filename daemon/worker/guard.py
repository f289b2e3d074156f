"""Guard for a judge command: ``python -m daemon.worker.guard CMD [ARGS...]``.

A judge command (``claude -p``, a local script) is an arbitrary program that
cannot watch its parent. The guard runs it in its own process group (the
parent starts the guard with ``start_new_session=True``; the command inherits
the group, stdin, stdout and stderr) and polls the parent like the mlx
workers do (:func:`daemon.worker.common.watch_parent`): when the parent dies,
even by ``kill -9``, the guard kills the whole group, so no judge is orphaned.
The parent stops a judge by killing the group (guard and command together).

Exit status: the command's; 128+N when it died by signal N; 127 when it could
not be started (the reason on stderr, prefixed :data:`START_FAILED`).
Imports nothing heavy (it starts once per judge call).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from daemon.worker.common import PARENT_PID_ENV

START_FAILED = "nightshift-guard: cannot start"
POLL_S = 0.2
"""How often the guard checks its parent (seconds)."""


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m daemon.worker.guard CMD [ARGS...]", file=sys.stderr)
        return 2
    expected = os.environ.get(PARENT_PID_ENV)
    parent = int(expected) if expected else os.getppid()
    env = {k: v for k, v in os.environ.items() if k != PARENT_PID_ENV}
    try:
        proc = subprocess.Popen(argv[1:], env=env)
    except OSError as exc:
        print(f"{START_FAILED} {argv[1]!r}: {exc}", file=sys.stderr)
        return 127
    while True:
        try:
            code = proc.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:
                os.killpg(0, signal.SIGKILL)  # the command and this guard
            continue
        return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
