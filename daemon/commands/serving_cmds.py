"""``nightshift serve``, ``rollback``, ``releases`` and ``gc`` (see :mod:`daemon.serving`).

Register on the CLI group with::

    from daemon.commands.serving_cmds import gc, releases, rollback, serve
    for command in (serve, rollback, releases, gc):
        cli.add_command(command)
"""

from __future__ import annotations

import json

import click

from daemon.clock import local_text
from daemon.commands.common import config_options, load
from daemon.errors import HandoffFailed


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover - loop always returns


@click.command("serve")
@config_options
def serve(config_path: str | None, profile: str | None) -> None:
    """Run the managed model server in the foreground (without the daemon).

    Serves what `current` points at (the base model before any promotion),
    restarts on each promotion or rollback and when the server dies; Ctrl-C stops it.
    """
    from daemon import shutdown
    from daemon.logs import configure_logging
    from daemon.recovery import recover_if_idle
    from daemon.registry import Registry
    from daemon.scheduler import install_signal_handlers, restore_signal_handlers
    from daemon.serving.server import Supervisor, desired_release

    cfg = load(config_path, profile)
    configure_logging(cfg.paths.state_dir)
    if cfg.serving.mode != "managed":
        click.echo(f"note: serving.mode is {cfg.serving.mode}; promotions hand off to this server only with mode: managed", err=True)
    registry = Registry.open(cfg.paths.state_dir)
    try:
        recover_if_idle(cfg, registry)  # current follows the registry; a leftover server is stopped
    finally:
        registry.close()
    previous = install_signal_handlers()
    supervisor = Supervisor(cfg)
    try:
        supervisor.start()
        release = desired_release(cfg.paths.state_dir) or "the base model"
        click.echo(f"serving {release} at {supervisor.url} (Ctrl-C stops it)")
        while not shutdown.wait(0.5):
            pass
    finally:
        supervisor.stop()
        restore_signal_handlers(previous)
    click.echo("server stopped")


@click.command("rollback")
@config_options
@click.option("--to", "to_run", type=int, default=None, metavar="RUN_ID", help="Go back to this run's release (default: the previous champion).")
@click.option("--by", "who", default=None, help="Who rolls back (default: the login name).")
@click.option("--reason", "why", default=None, help="Why (recorded in the promotion log).")
def rollback(config_path: str | None, profile: str | None, to_run: int | None, who: str | None, why: str | None) -> None:
    """Make an earlier release the champion, hand it to the server and verify it."""
    import getpass

    from daemon.logs import configure_logging
    from daemon.pipeline import locked_registry
    from daemon.recovery import recover_state
    from daemon.serving.handoff import rollback_champion

    cfg = load(config_path, profile)
    configure_logging(cfg.paths.state_dir, console=False)
    who = who or getpass.getuser()
    with locked_registry(cfg.paths.state_dir) as (_lock, registry):
        recover_state(cfg, registry)  # finish or undo what a killed command left first
        target, outcome = rollback_champion(cfg, registry, to_run=to_run, who=who, why=why)
    for result in outcome.results:
        click.echo(f"{result.verdict}" + (f" ({result.reason})" if result.reason and not result.ok else ""))
    if not outcome.kept:
        raise HandoffFailed(f"the rollback to {target.label} was undone: its hand-off failed (the reason is above)")
    click.echo(f"champion: {target.label}")


@click.command("releases")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def releases(config_path: str | None, profile: str | None, as_json: bool) -> None:
    """Each release with its run, status (current, previous, kept, old, orphan), size and date."""
    from daemon.registry import Registry
    from daemon.serving.releases import list_releases

    cfg = load(config_path, profile)
    registry = Registry.open(cfg.paths.state_dir)
    try:
        rows = list_releases(cfg, registry)
    finally:
        registry.close()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no releases yet")
    for r in rows:
        d = r.to_dict()
        click.echo(f"{r.name:<10} run {r.run_id:<5} {r.status:<9} {_human_bytes(r.size_bytes):>9}  {local_text(d['created'])}")


@click.command("gc")
@config_options
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
def gc(config_path: str | None, profile: str | None, dry_run: bool) -> None:
    """Remove old releases (beyond retention.keep_releases) and old training checkpoints."""
    from daemon.logs import configure_logging
    from daemon.pipeline import locked_registry
    from daemon.serving.releases import apply_gc, plan_gc

    cfg = load(config_path, profile)
    configure_logging(cfg.paths.state_dir, console=False)
    with locked_registry(cfg.paths.state_dir) as (_lock, registry):
        plan = plan_gc(cfg, registry)
        verb = "would remove" if dry_run else "removed"
        if not dry_run:
            apply_gc(plan)
    for path in plan.releases:
        click.echo(f"{verb} release {path}")
    for path in plan.checkpoints:
        click.echo(f"{verb} checkpoint {path}")
    click.echo(f"{verb} {len(plan.releases)} release(s), {len(plan.checkpoints)} checkpoint(s), {_human_bytes(plan.bytes_freed)}")
