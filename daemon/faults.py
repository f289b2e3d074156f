"""Fault injection at named points, for the fault suite (``pytest -m faults``).

Code that must survive a crash at a given instruction calls
:func:`fault_point` with a stable name (``promote:after-swap``,
``stage:training``...). Nothing happens unless ``$NIGHTSHIFT_FAULT`` names
that point; then ``$NIGHTSHIFT_FAULT_ACTION`` says what to do:

- ``kill`` (default): ``SIGKILL`` this process at once (a power cut, ``kill -9``);
- ``pause``: write ``<point>`` to ``$NIGHTSHIFT_FAULT_READY`` (when set) and
  wait until a stop is requested (SIGTERM/SIGINT; then carry on, as if the
  signal arrived at that instruction) or the process is killed;
- ``enospc``: raise ``OSError(ENOSPC)`` as a full disk would;
- ``raise``: raise ``RuntimeError`` (an unexpected bug).

The variables are read when a point is reached, so a test sets them in the
environment of the ``nightshift`` process it starts. Unset, a point costs one
dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

FAULT_ENV = "NIGHTSHIFT_FAULT"
ACTION_ENV = "NIGHTSHIFT_FAULT_ACTION"
READY_ENV = "NIGHTSHIFT_FAULT_READY"

#: Every point the code base declares, in the order a night reaches them. The
#: fault suite iterates over this list; a point missing here is never tested.
POINTS = (
    "stage:preflight",
    "stage:training",
    "stage:evaluating",
    "stage:deciding",
    "promote:release-built",
    "promote:intent-written",
    "promote:current-swapped",
    "promote:registry-committed",
    "promote:intent-cleared",
    "handoff:verifying",
    "report:written",
)


def fault_point(name: str) -> None:
    """Inject the configured fault if ``$NIGHTSHIFT_FAULT`` equals ``name``.

    Raises:
        OSError: action ``enospc`` (errno ENOSPC).
        RuntimeError: action ``raise``.
    """
    if os.environ.get(FAULT_ENV) != name:
        return
    action = os.environ.get(ACTION_ENV, "kill")
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {name})")
    if action == "raise":
        raise RuntimeError(f"fault injected at {name}")
    if action == "pause":
        ready = os.environ.get(READY_ENV)
        if ready:
            with open(ready, "w", encoding="utf-8") as fh:
                fh.write(name)
        from daemon import shutdown

        while not shutdown.wait(0.1):
            pass
        return
    os.kill(os.getpid(), signal.SIGKILL)
