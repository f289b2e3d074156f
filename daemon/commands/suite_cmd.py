"""``nightshift suite check``: what each eval-suite category can guard, before the night.

Register on the CLI group with ``cli.add_command(suite)``.
"""

from __future__ import annotations

import dataclasses
import json

import click

from daemon.commands.common import NightshiftGroup, config_options, load


@click.group("suite", cls=NightshiftGroup)
def suite() -> None:
    """Eval-suite tools."""


@suite.command("check")
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def check(config_path: str | None, profile: str | None, as_json: bool) -> None:
    """Per category: items, repeats, the smallest drop the gate can catch, and what it would need.

    Uses the last decided night's paired spread per category, or a conservative prior (SD 0.5)
    when there is none. Exits 0; the preflight check reports the same as warnings.
    """
    from daemon.guards import check_suite_guards, render_table

    cfg = load(config_path, profile)
    result = check_suite_guards(cfg)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "suite": str(result.suite.path),
                    "from_run": result.from_run,
                    "policy": dataclasses.asdict(result.policy),
                    "categories": [
                        {**dataclasses.asdict(p), "can_guard": p.can_guard} for p in result.plans
                    ],
                },
                indent=2,
            )
        )
    else:
        click.echo(render_table(result))
