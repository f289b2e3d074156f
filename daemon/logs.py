"""Logging setup: structlog events as JSON lines in the state directory.

Every process (the daemon, ``nightshift`` commands) appends to
``<state_dir>/logs/nightshift.jsonl``, one JSON object per line with
``timestamp`` (UTC ISO 8601), ``level``, ``logger`` and ``event`` plus the
event's fields. Standard-library records (APScheduler, SQLAlchemy warnings)
go through the same formatter. A terminal also gets readable console lines;
without a terminal (launchd, systemd) only warnings and errors reach stderr,
which the service manager keeps in its own log.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import structlog

LOG_DIRNAME = "logs"
LOG_FILENAME = "nightshift.jsonl"
_HANDLER_TAG = "_nightshift_handler"


def log_path(state_dir: Path) -> Path:
    """``<state_dir>/logs/nightshift.jsonl``."""
    return Path(state_dir) / LOG_DIRNAME / LOG_FILENAME


def _redact_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: secret values (:mod:`daemon.secrets`) never reach a log line."""
    from daemon.secrets import redact

    return {k: redact(v) if isinstance(v, str) else v for k, v in event.items()}


def configure_logging(
    state_dir: Path, *, console: bool | None = None, level: int = logging.INFO
) -> Path:
    """Send structlog and standard-library logging to the JSON-lines file and stderr.

    Safe to call again (tests, a command that switches state directory): the
    handlers a previous call installed are replaced, others are left alone.

    Args:
        state_dir: the state directory; ``logs/`` is created inside it.
        console: True: readable output at ``level`` on stderr (``nightshift start``
            on a terminal); None: that when stderr is a terminal, else warnings and
            errors only (a daemon's stderr file); False: nothing on stderr, the file
            only (a command that prints its own summary line).
        level: the lowest level written to the file (a ``logging`` constant).

    Returns:
        The path of the JSON-lines file.

    Raises:
        StateDirError: the log directory cannot be created, or a link is planted at the file.
        OSError: the file cannot be opened.
    """
    path = log_path(state_dir)
    from daemon.statedir import ensure_private_dir, planted_link_error

    ensure_private_dir(path.parent)
    if path.is_symlink():
        raise planted_link_error(path)
    quiet = console is False
    if console is None:
        console = sys.stderr.isatty()

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setLevel(level)
    file_handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(default=str),
            ],
        )
    )
    console_handler = logging.StreamHandler(sys.stderr)
    console_handler.setLevel(level if console else logging.WARNING)
    console_handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer(colors=console),
            ],
        )
    )

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(old)
        old.close()
    for handler in (file_handler,) if quiet else (file_handler, console_handler):
        setattr(handler, _HANDLER_TAG, True)
        root.addHandler(handler)
    root.setLevel(level)
    # Alembic narrates every registry open at INFO (plugins, DDL mode); keep its warnings.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    return path
