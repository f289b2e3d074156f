"""``nightshift start`` and the ``launchd``/``systemd`` service groups.

Register on the CLI group with::

    from daemon.commands.schedule_cmds import launchd, start, systemd
    for command in (start, launchd, systemd):
        cli.add_command(command)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from daemon.config import Config, load_config, resolve_config_path, resolve_profile
from daemon.errors import NightshiftError
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


def _config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--profile", default=None, help="Profile from the config's `profiles:` to apply."
    )(func)
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Config file (default: $NIGHTSHIFT_CONFIG, else the user config dir).",
    )(func)


def _dry_run_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dry-run", is_flag=True, help="Print the file and the commands instead of running them."
    )(func)


def _load(config_path: str | None, profile: str | None) -> Config:
    try:
        return load_config(resolve_config_path(config_path), resolve_profile(profile))
    except NightshiftError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("start")
@_config_options
def start(config_path: str | None, profile: str | None) -> None:
    """Run the scheduler in the foreground (what the LaunchAgent runs).

    Runs the pipeline at schedule.cron, catches up a missed night within
    schedule.misfire_grace_s, and stops cleanly on SIGTERM/SIGINT (exit 0).
    """
    cfg = _load(config_path, profile)
    try:
        load_schedule(cfg)  # a bad cron or zone is reported before anything is written
        configure_logging(cfg.paths.state_dir)
        code = run_daemon(cfg)
    except NightshiftError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


def _execute(plan_factory: Callable[[], ServicePlan], dry_run: bool) -> None:
    try:
        code = execute_plan(plan_factory(), dry_run=dry_run, echo=click.echo)
    except NightshiftError as exc:
        raise click.ClickException(str(exc)) from exc
    if code:
        sys.exit(code)


@click.group("launchd")
def launchd() -> None:
    """Install the daemon as a macOS LaunchAgent (~/Library/LaunchAgents)."""


@launchd.command("install")
@_config_options
@_dry_run_option
def launchd_install(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Write the LaunchAgent plist and load it with launchctl bootstrap."""

    cfg = _load(config_path, profile)
    _execute(lambda: launchd_install_plan(cfg, home=Path.home()), dry_run)


@launchd.command("uninstall")
@click.option("--profile", default=None, help="The profile the agent was installed with.")
@_dry_run_option
def launchd_uninstall(profile: str | None, dry_run: bool) -> None:
    """Stop the daemon (launchctl bootout) and delete the plist."""

    _execute(lambda: launchd_uninstall_plan(resolve_profile(profile), home=Path.home()), dry_run)


@launchd.command("status")
@click.option("--profile", default=None, help="The profile the agent was installed with.")
@_dry_run_option
def launchd_status(profile: str | None, dry_run: bool) -> None:
    """Show launchd's view of the agent (launchctl print); non-zero when not loaded."""

    _execute(lambda: launchd_status_plan(resolve_profile(profile), home=Path.home()), dry_run)


@click.group("systemd")
def systemd() -> None:
    """Install the daemon as a systemd user service (Linux)."""


@systemd.command("install")
@_config_options
@_dry_run_option
def systemd_install(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Write ~/.config/systemd/user/nightshift.service, enable and start it."""

    cfg = _load(config_path, profile)
    _execute(lambda: systemd_install_plan(cfg, home=Path.home()), dry_run)


@systemd.command("uninstall")
@click.option("--profile", default=None, help="The profile the unit was installed with.")
@_dry_run_option
def systemd_uninstall(profile: str | None, dry_run: bool) -> None:
    """Disable and stop the unit, then delete it."""

    _execute(lambda: systemd_uninstall_plan(resolve_profile(profile), home=Path.home()), dry_run)


@systemd.command("status")
@click.option("--profile", default=None, help="The profile the unit was installed with.")
@_dry_run_option
def systemd_status(profile: str | None, dry_run: bool) -> None:
    """Show systemctl --user status of the unit."""

    _execute(lambda: systemd_status_plan(resolve_profile(profile)), dry_run)
