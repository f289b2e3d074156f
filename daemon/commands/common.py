"""What every command shares: the ``-c/--config`` + ``--profile`` option set and the one error path.

A command module under ``daemon/commands/`` imports from here (not from
``daemon.cli``, which imports the command modules)::

    @click.command("serve")
    @config_options
    def serve(config_path: str | None, profile: str | None) -> None:
        cfg = load(config_path, profile)
        ...

A :class:`~daemon.errors.NightshiftError` (or an :class:`OSError`) raised by any command
becomes ``Error: <one line>`` (plus the problems as an indented list) and exit status 1;
:class:`~daemon.errors.Interrupted` prints ``Interrupted: ...`` and exits 130.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from daemon.config import (
    CONFIG_ENV,
    PROFILE_ENV,
    Config,
    default_config_path,
    load_config,
    resolve_config_path,
    resolve_profile,
)
from daemon.errors import FileAccessError, Interrupted, NightshiftError, describe_os_error

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

MAX_ERROR_LINE_CHARS = 400
"""Longest line of an ``Error: ...`` message; longer ones are cut (a value quoted in
full, such as an expanded YAML alias bomb, once made a megabyte line)."""
MAX_ERROR_ITEMS = 20
"""Most problems listed under an error; the rest are counted."""


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-c/--config PATH`` and ``--profile NAME``, honoured before or after the command name.

    The decorated command receives ``config_path`` and ``profile``: its own
    option when given, else the value given to an enclosing group (``nightshift
    -c FILE start`` and ``nightshift start -c FILE`` are the same). ``None``
    means "not given": :func:`load` then falls back to $NIGHTSHIFT_CONFIG /
    $NIGHTSHIFT_PROFILE and the user config dir.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None = None, profile: str | None = None, **kwargs: Any) -> Any:
        given = click.get_current_context().ensure_object(dict)  # shared by the whole context chain
        config_path = given["config_path"] = config_path or given.get("config_path")
        profile = given["profile"] = profile or given.get("profile")
        with reported_errors():  # also when the command is invoked on its own (tests, sub-groups)
            return func(*args, config_path=config_path, profile=profile, **kwargs)

    wrapper = click.option(
        "--profile", default=None, metavar="NAME",
        help=f"Profile from the config's `profiles:` (else ${PROFILE_ENV}).",
    )(wrapper)
    return click.option(
        "-c", "--config", "config_path", default=None, metavar="PATH",
        help=f"Config file (else ${CONFIG_ENV}, else {default_config_path()}).",
    )(wrapper)


def load(config_path: str | None, profile: str | None) -> Config:
    """Resolve and load the config for a command (see :func:`config_options`).

    Raises:
        ConfigError: the file is missing or invalid.
    """
    return load_config(resolve_config_path(config_path), resolve_profile(profile))


def _cut(line: str) -> str:
    line = line.strip()
    if len(line) <= MAX_ERROR_LINE_CHARS:
        return line
    return f"{line[: MAX_ERROR_LINE_CHARS - 30]}... ({len(line):,} characters in all)"


def error_text(exc: NightshiftError) -> str:
    """What follows ``Error: `` for ``exc``: one line, plus its problems as an indented list.

    A message of several lines is read as a headline and one problem per
    further line (``  - `` prefixes are normalised); at most
    :data:`MAX_ERROR_ITEMS` are listed and each line is cut to
    :data:`MAX_ERROR_LINE_CHARS`.
    """
    from daemon.secrets import redact

    lines = [ln for ln in redact(str(exc)).splitlines() if ln.strip()] or [type(exc).__name__]
    head, items = _cut(lines[0]), [_cut(ln.strip().removeprefix("- ")) for ln in lines[1:]]
    out = [head] + [f"  - {item}" for item in items[:MAX_ERROR_ITEMS]]
    if len(items) > MAX_ERROR_ITEMS:
        out.append(f"  - ... and {len(items) - MAX_ERROR_ITEMS} more")
    return "\n".join(out)


@contextmanager
def reported_errors() -> Iterator[None]:
    """The one error path: :class:`NightshiftError` -> ``Error: ...`` (see :func:`error_text`)
    and exit status 1; :class:`Interrupted` -> ``Interrupted: ...`` and exit status 130; an
    :class:`OSError` (permission denied, read-only, disk full) -> ``Error: ...`` naming the path
    and what to do (:func:`~daemon.errors.describe_os_error`), exit status 1.

    Raises:
        click.ClickException: for a NightshiftError (click prints it and exits 1).
        click.exceptions.Exit: status 130 after an Interrupted.
    """
    try:
        yield
    except Interrupted as exc:
        click.echo(f"Interrupted: {error_text(exc)}", err=True)
        raise click.exceptions.Exit(130) from exc
    except NightshiftError as exc:
        raise click.ClickException(error_text(exc)) from exc
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # `nightshift history | head`: click handles a closed pipe itself
            raise
        raise click.ClickException(error_text(FileAccessError(describe_os_error(exc)))) from exc


class NightshiftGroup(click.Group):
    """A click group whose commands (nested groups included) report errors through
    :func:`reported_errors`; the root ``nightshift`` group is one."""

    def invoke(self, ctx: click.Context) -> Any:
        with reported_errors():
            return super().invoke(ctx)


