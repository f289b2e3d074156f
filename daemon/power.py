"""Keep the Mac awake while a training or evaluation child runs.

``caffeinate -i -s -w PID`` holds two power assertions until PID exits:
``-i`` prevents idle sleep, ``-s`` prevents system sleep while on AC power
(on battery, macOS ignores ``-s``; closing a laptop's lid still sleeps it).
``-w`` ties the assertion to the child, so it ends on its own when the child
does, however the daemon ends. Where there is no ``caffeinate`` (Linux) this
is a no-op: systemd machines are expected not to suspend at night, or the
user inhibits it (``systemd-inhibit``).
"""

from __future__ import annotations

import shutil
import subprocess

CAFFEINATE = "caffeinate"


def keep_awake(pid: int) -> subprocess.Popen[bytes] | None:
    """Hold a no-sleep assertion for as long as process ``pid`` lives.

    Args:
        pid: the child to watch (a worker's pid).

    Returns:
        The ``caffeinate`` process (it exits by itself when ``pid`` does; the
        caller may ``terminate()`` it earlier), or None when ``caffeinate`` is
        not on PATH (not macOS).

    Raises:
        OSError: ``caffeinate`` was found but could not be started.
    """
    exe = shutil.which(CAFFEINATE)
    if exe is None:
        return None
    return subprocess.Popen(
        [exe, "-i", "-s", "-w", str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
