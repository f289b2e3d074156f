"""``nightshift data clean IN OUT``: rewrite any common chat format as clean ``messages``.

Register on the CLI group with ``cli.add_command(data)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from daemon.dataset import CleanReport, clean_file

MAX_DROPPED_SHOWN = 20


@click.group("data")
def data() -> None:
    """Dataset tools."""


@data.command("clean")
@click.argument("src", metavar="IN", type=click.Path(exists=True, path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--keep-think", is_flag=True, help="Keep <think>...</think> blocks (reasoning data).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def clean(src: Path, dst: Path, keep_think: bool, as_json: bool) -> None:
    """Strip leaked chat-template tokens and convert IN to clean chat JSONL at OUT.

    Converts ShareGPT `conversations`, `prompt`/`completion` pairs, transcripts
    pasted as strings (ChatML, Gemma, Llama 3) and typed content blocks into
    `{"messages": [...]}`. IN may be a directory: each *.jsonl in it is cleaned
    into the directory OUT.
    """
    pairs = [(p, dst / p.name) for p in sorted(src.glob("*.jsonl"))] if src.is_dir() else [(src, dst)]
    if not pairs:
        raise click.ClickException(f"{src} holds no *.jsonl files")
    if any(a.resolve() == b.resolve() for a, b in pairs if b.exists()):
        raise click.ClickException("OUT must differ from IN: write the clean copy elsewhere, then replace")
    reports: dict[str, CleanReport] = {}
    for a, b in pairs:
        try:
            reports[str(a)] = clean_file(a, b, keep_think=keep_think)
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"cannot clean {a}: {exc}") from exc
    if as_json:
        click.echo(json.dumps({name: r.to_dict() for name, r in reports.items()}, indent=2))
        return
    for (a, b), report in zip(pairs, reports.values(), strict=True):
        click.echo(f"{a} -> {b}: {report.records_written} of {report.lines_read} records written")
        for kind, count in sorted(report.changes.items()):
            click.echo(f"  {kind.replace('_', ' ')}: {count} record(s)")
        if report.dropped:
            click.echo(f"  dropped {len(report.dropped)} lines:")
            for line, reason in report.dropped[:MAX_DROPPED_SHOWN]:
                click.echo(f"    line {line}: {reason}")
            if len(report.dropped) > MAX_DROPPED_SHOWN:
                click.echo(f"    ... {len(report.dropped) - MAX_DROPPED_SHOWN} more (see --json)")
