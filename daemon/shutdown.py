"""Process-wide shutdown flag.

Signal handlers only call :func:`request_stop`; the main loop and the child
supervisor (:mod:`daemon.child`) poll :func:`stop_requested` and do the actual
stopping, so nothing non-reentrant runs inside a signal handler.
"""

from __future__ import annotations

import threading

_stop = threading.Event()
_reason: list[str] = []


def request_stop(reason: str = "shutdown requested") -> None:
    """Ask the running pipeline and scheduler to stop (safe in a signal handler)."""
    if not _reason:
        _reason.append(reason)
    _stop.set()


def stop_requested() -> bool:
    """True once :func:`request_stop` has been called."""
    return _stop.is_set()


def stop_reason() -> str:
    """The reason given to the first :func:`request_stop` call, or ''."""
    return _reason[0] if _reason else ""


def wait(timeout_s: float) -> bool:
    """Sleep up to ``timeout_s`` seconds, waking early on a stop request.

    Returns:
        True if a stop was requested.
    """
    return _stop.wait(timeout_s)


def reset() -> None:
    """Clear the flag (tests, and a CLI process that runs several pipelines)."""
    _stop.clear()
    _reason.clear()
