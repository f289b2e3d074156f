"""``nightshift preflight``: run the preflight checks and print them.

Register on the CLI group with ``cli.add_command(preflight)``.
"""

from __future__ import annotations

import json
import sys

import click

from daemon.commands.common import config_options, load
from daemon.preflight import run_preflight


@click.command("preflight")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--smoke", is_flag=True, help="Also load the model: loss, generation and two LoRA steps.")
def preflight(config_path: str | None, profile: str | None, as_json: bool, smoke: bool) -> None:
    """Check config, model, dataset, machine and server before a night's run.

    Exits 1 when any check fails.
    """
    report = run_preflight(load(config_path, profile), smoke=smoke)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.render_table())
    sys.exit(0 if report.ok else 1)
