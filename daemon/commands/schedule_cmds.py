"""``nightshift start`` and the ``launchd``/``systemd`` service groups.

Register on the CLI group with::

    from daemon.commands.schedule_cmds import launchd, start, systemd
    for command in (start, launchd, systemd):
        cli.add_command(command)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from daemon.clock import local_text
from daemon.commands.common import NightshiftGroup, config_options, load
from daemon.config import Config, resolve_profile
from daemon.logs import configure_logging
from daemon.scheduler import load_schedule, run_daemon
from daemon.service import (
    ServicePlan,
    execute_plan,
    launchd_install_plan,
    launchd_status_plan,
    launchd_uninstall_plan,
    systemd_install_plan,
    systemd_status_plan,
    systemd_uninstall_plan,
)


def _dry_run_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dry-run", is_flag=True, help="Print the file and the commands instead of running them."
    )(func)


@click.command("start")
@config_options
def start(config_path: str | None, profile: str | None) -> None:
    """Run the scheduler in the foreground (what the LaunchAgent runs).

    Runs the pipeline at schedule.cron, catches up a missed night within
    schedule.misfire_grace_s, and stops cleanly on SIGTERM/SIGINT (exit 0).
    Prints one startup line; on a terminal the log events follow it.
    """
    cfg = load(config_path, profile)
    load_schedule(cfg)  # a bad cron or zone is reported before anything is written
    log_file = configure_logging(cfg.paths.state_dir)  # console lines too when stderr is a terminal

    def announce(next_run: datetime | None) -> None:
        click.echo(startup_line(cfg, os.getpid(), next_run, log_file))

    sys.exit(run_daemon(cfg, on_started=announce))


def startup_line(cfg: Config, pid: int, next_run: datetime | None, log_file: Path) -> str:
    """``nightshift started: pid 4242, config /x/nightshift.yaml (profile p), next run 2026-12-02 01:00 CET, log /x/state/logs/nightshift.jsonl``."""
    profile = f" (profile {cfg.profile})" if cfg.profile else ""
    return (
        f"nightshift started: pid {pid}, config {cfg.source}{profile}, "
        f"next run {local_text(next_run)}, log {log_file}"
    )


def _execute(plan_factory: Callable[[], ServicePlan], dry_run: bool) -> None:
    code = execute_plan(plan_factory(), dry_run=dry_run, echo=click.echo)
    if code:
        sys.exit(code)


@click.group("launchd", cls=NightshiftGroup)
def launchd() -> None:
    """Install the daemon as a macOS LaunchAgent (~/Library/LaunchAgents)."""


@launchd.command("install")
@config_options
@_dry_run_option
def launchd_install(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Write the LaunchAgent plist and load it with launchctl bootstrap."""

    cfg = load(config_path, profile)
    _execute(lambda: launchd_install_plan(cfg, home=Path.home()), dry_run)


@launchd.command("uninstall")
@config_options
@_dry_run_option
def launchd_uninstall(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Stop the daemon (launchctl bootout) and delete the plist (--profile names the agent)."""

    _execute(lambda: launchd_uninstall_plan(resolve_profile(profile), home=Path.home()), dry_run)


@launchd.command("status")
@config_options
@_dry_run_option
def launchd_status(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Show launchd's view of the agent (launchctl print); non-zero when not loaded (--profile names it)."""

    _execute(lambda: launchd_status_plan(resolve_profile(profile), home=Path.home()), dry_run)


@click.group("systemd", cls=NightshiftGroup)
def systemd() -> None:
    """Install the daemon as a systemd user service (Linux)."""


@systemd.command("install")
@config_options
@_dry_run_option
def systemd_install(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Write ~/.config/systemd/user/nightshift.service, enable and start it."""

    cfg = load(config_path, profile)
    _execute(lambda: systemd_install_plan(cfg, home=Path.home()), dry_run)


@systemd.command("uninstall")
@config_options
@_dry_run_option
def systemd_uninstall(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Disable and stop the unit, then delete it (--profile names the unit)."""

    _execute(lambda: systemd_uninstall_plan(resolve_profile(profile), home=Path.home()), dry_run)


@systemd.command("status")
@config_options
@_dry_run_option
def systemd_status(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Show systemctl --user status of the unit (--profile names it)."""

    _execute(lambda: systemd_status_plan(resolve_profile(profile)), dry_run)
