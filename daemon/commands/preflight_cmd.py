"""``nightshift preflight``: run the preflight checks and print them.

Register on the CLI group with ``cli.add_command(preflight)``.
"""

from __future__ import annotations

import json
import sys

import click

from daemon.config import load_config, resolve_config_path, resolve_profile
from daemon.errors import NightshiftError
from daemon.preflight import run_preflight


@click.command("preflight")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $NIGHTSHIFT_CONFIG, else the user config dir).",
)
@click.option("--profile", default=None, help="Profile from the config's `profiles:` to apply.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--smoke", is_flag=True, help="Also load the model: loss, generation and two LoRA steps.")
@click.pass_context
def preflight(ctx: click.Context, config_path: str | None, profile: str | None, as_json: bool, smoke: bool) -> None:
    """Check config, model, dataset, machine and server before a night's run.

    Exits 1 when any check fails.
    """
    root = ctx.find_root().obj or {}  # `nightshift -c PATH preflight` gives the options to the group
    config_path = config_path or root.get("config_path")
    profile = profile or root.get("profile")
    try:
        cfg = load_config(resolve_config_path(config_path), resolve_profile(profile))
        report = run_preflight(cfg, smoke=smoke)
    except NightshiftError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.render_table())
    sys.exit(0 if report.ok else 1)
