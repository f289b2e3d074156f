"""The ``nightshift`` command line: one click group, thin commands.

Every command loads the config, calls one library function and prints. A
:class:`~daemon.errors.NightshiftError` becomes a one-line ``Error: ...`` and a
non-zero exit, in :func:`main`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from daemon.commands.common import CONTEXT_SETTINGS, NightshiftGroup, config_options, load
from daemon.config import (
    CONFIG_ENV,
    Config,
    default_config_path,
    resolve_config_path,
    resolve_profile,
)
from daemon.errors import ConfigError, NightshiftError

__all__ = ["cli", "config_options", "load", "main"]

class TerminalProgress:
    """Stage lines plus a one-line live bar on a TTY; without one (a log file), one plain line
    per new report step (training) or per finished batch (evaluation), never a repeat."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_plain: tuple[Any, ...] | None = None
        self._bar = False

    def _line(self, text: str) -> None:
        if self._bar:
            self.stream.write("\n")
            self._bar = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _live(self, text: str, key: tuple[Any, ...]) -> None:
        """Redraw the bar on a TTY; otherwise print ``text`` once per distinct ``key``."""
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self._bar = True
        elif key != self._last_plain:
            self._last_plain = key
            self._line(text)

    def stage(self, name: str, run_id: int) -> None:
        self._line(f"run {run_id}: {name}")

    def train(self, p: Any, label: str = "train") -> None:
        if not p.total or not p.iteration:
            return
        width = 24
        filled = int(width * p.iteration / p.total)
        bar = "#" * filled + "-" * (width - filled) if self.tty else ""
        loss = f"loss {p.train_loss:.3f}" if p.train_loss is not None else ""
        val = f"val {p.val_loss:.3f}" if p.val_loss is not None else ""  # a validation report is a step too
        trained = f"{_count(p.trained_tokens)} tokens trained" if p.trained_tokens else ""
        tps = f"{p.tokens_per_s:.0f} tok/s processed" if p.tokens_per_s else ""
        eta = f"ETA {p.eta_s:.0f}s" if p.eta_s is not None else ""
        text = " ".join(x for x in (f"  {label} [{bar}] {p.iteration}/{p.total}".replace(" []", ""), loss, val, trained, tps, eta) if x)
        self._live(text, ("train", p.iteration, p.val_loss))

    def evaluate(self, p: Any) -> None:
        if p.total:
            self._live(f"  evaluate {p.model}: {p.done}/{p.total} items", ("evaluate", p.model, p.done))

    def close(self) -> None:
        if self._bar:
            self.stream.write("\n")
            self._bar = False


def _count(n: int) -> str:
    """``950``, ``12.3k``, ``4.1M``."""
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


FORCE_HELP = "Train even when nothing changed since the champion's run or the last decided run."


ROLLED_BACK_ERROR = "run {run_id} was promoted, then rolled back (the reason is on the line above and in the report)"
"""The ``Error:`` line of a command whose promotion was rolled back; the summary line above it gives the reason."""


def _run_now(config_path: str | None, profile: str | None, force: bool = False) -> None:
    from daemon.pipeline import record_config_failure, run_pipeline

    try:
        cfg = load(config_path, profile)
    except ConfigError:
        record_config_failure(resolve_config_path(config_path), resolve_profile(profile))
        raise
    from daemon.logs import configure_logging

    configure_logging(cfg.paths.state_dir, console=False)
    from daemon.scheduler import install_signal_handlers, restore_signal_handlers

    progress = TerminalProgress()
    previous = install_signal_handlers()  # Ctrl-C/SIGTERM stop the child cleanly; run is `interrupted`
    try:
        outcome = run_pipeline(cfg, progress=progress, force=force)
    finally:
        restore_signal_handlers(previous)
        progress.close()
    click.echo(run_outcome_line(cfg, outcome.run_id))
    if outcome.status.value == "rolled_back":  # the night did not leave the promoted model serving
        raise NightshiftError(ROLLED_BACK_ERROR.format(run_id=outcome.run_id))



def run_outcome_line(cfg: Config, run_id: int) -> str:
    """The run's one-line outcome (see :meth:`RunSummary.outcome_line`), read back from the registry."""
    from daemon.registry import Registry
    from daemon.runsummary import summarize_run

    reg = Registry.open(cfg.paths.state_dir)
    try:
        run = reg.get_run(run_id)
    finally:
        reg.close()
    line = summarize_run(run).outcome_line()
    html = Path(run.report_path).with_suffix(".html") if run.report_path else None
    return f"{line} (HTML: {html})" if html is not None and html.exists() else line


@click.group(
    cls=NightshiftGroup,
    context_settings=CONTEXT_SETTINGS,
    invoke_without_command=True,
    epilog=f"Config file: -c PATH, else ${CONFIG_ENV}, else {default_config_path()}. "
    "-c and --profile work before or after the command name.",
)
@click.option("--run-now", is_flag=True, help="Run one pipeline now (same as `nightshift run-now`).")
@click.option("--force", is_flag=True, help=FORCE_HELP + " With --run-now.")
@config_options
@click.version_option(package_name="nightshift")
@click.pass_context
def cli(ctx: click.Context, run_now: bool, force: bool, config_path: str | None, profile: str | None) -> None:
    """nightshift: nightly LoRA training that never promotes a worse model."""
    if force and not run_now and ctx.invoked_subcommand != "run-now":
        raise click.UsageError("--force goes with --run-now (or the run-now command).")
    ctx.ensure_object(dict)["force"] = force
    if run_now:
        if ctx.invoked_subcommand is not None:
            raise click.UsageError("--run-now cannot be combined with a command.")
        _run_now(config_path, profile, force=force)
    elif ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command("run-now")
@config_options
@click.option("--force", is_flag=True, help=FORCE_HELP)
@click.pass_context
def run_now_cmd(ctx: click.Context, config_path: str | None, profile: str | None, force: bool) -> None:
    """Run one pipeline now: preflight, train, evaluate, decide, promote, report."""
    _run_now(config_path, profile, force=force or bool(ctx.ensure_object(dict).get("force")))


@cli.command()
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(config_path: str | None, profile: str | None, as_json: bool) -> None:
    """Champion, last run, the run in progress, the daemon and the next run."""
    from daemon.status import collect_status, render_status

    data = collect_status(load(config_path, profile))
    click.echo(json.dumps(data, indent=2, default=str) if as_json else render_status(data))


@cli.command()
@config_options
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--plot", is_flag=True, help="Write the HTML index of every night (trend plot, report links); print its path.")
def history(config_path: str | None, profile: str | None, limit: int, as_json: bool, plot: bool) -> None:
    """Recent runs, newest first: run, trigger, start (local time), duration, outcome, composite change, reason."""
    from daemon.registry import Registry
    from daemon.runsummary import command_changes, history_table, summarize_run

    cfg = load(config_path, profile)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        from daemon.recovery import recover_if_idle

        recover_if_idle(cfg, reg)  # a dead run shows as interrupted, not "training"
        if plot:
            from daemon.report import write_index

            click.echo(str(write_index(cfg, reg)))
            return
        runs = reg.runs(limit)
        rows = [summarize_run(r) for r in runs]
        changes = command_changes(reg, runs)  # a `nightshift rollback` between nights
    finally:
        reg.close()
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    elif not rows:
        click.echo("no runs yet")
    else:
        click.echo(history_table(rows, changes))


@cli.command()
@click.argument("run_id", required=False, type=int)
@config_options
@click.option("--path", "path_only", is_flag=True, help="Print only the report's path.")
@click.option("--html", "as_html", is_flag=True, help="Write the HTML report (plots, trend, sample diffs) and print its path.")
@click.option("--open", "open_it", is_flag=True, help="Open the HTML report in the browser.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's content as JSON.")
def report(run_id: int | None, config_path: str | None, profile: str | None, path_only: bool,
           as_html: bool, open_it: bool, as_json: bool) -> None:
    """Print the morning report of RUN_ID (default: the last run)."""
    from daemon.registry import Registry
    from daemon.report import ensure_report, html_report_path, report_json

    cfg = load(config_path, profile)
    reg = Registry.open(cfg.paths.state_dir)
    try:
        from daemon.recovery import recover_if_idle

        recover_if_idle(cfg, reg)  # a dead run's report is rewritten before it is shown
        if run_id is None:
            last = reg.last_run()
            if last is None:
                raise NightshiftError("No runs yet: run `nightshift --run-now` first.")
            run_id = last.id
        if as_json:
            click.echo(report_json(cfg, reg, run_id))
            return
        path = ensure_report(cfg, reg, run_id, html=as_html or open_it)
    finally:
        reg.close()
    if as_html or open_it:
        path = html_report_path(cfg.paths.state_dir, run_id)
        if open_it:
            click.launch(str(path))
    if path_only or as_html or open_it:
        click.echo(str(path))
        return
    text = path.read_text(encoding="utf-8")
    if sys.stdout.isatty():  # a person reads it: no Markdown escapes (`http\://`)
        from daemon.report.escape import md_plain

        text = md_plain(text)
    click.echo(text)


def _decide_manually(run_id: int, config_path: str | None, profile: str | None, approve: bool, who: str | None) -> None:
    from daemon.logs import configure_logging
    from daemon.pipeline import finish_manual_decision

    cfg = load(config_path, profile)
    configure_logging(cfg.paths.state_dir, console=False)  # log events go to the file, not the terminal
    outcome = finish_manual_decision(cfg, run_id, approve=approve, decided_by=who)
    click.echo(run_outcome_line(cfg, run_id))
    if outcome == "rolled_back":
        raise NightshiftError(ROLLED_BACK_ERROR.format(run_id=run_id))


@cli.command()
@click.argument("run_id", type=int)
@config_options
@click.option("--by", "who", default=None, help="Who decided (default: the login name).")
def approve(run_id: int, config_path: str | None, profile: str | None, who: str | None) -> None:
    """Promote a run awaiting approval (promotion.policy: manual)."""
    _decide_manually(run_id, config_path, profile, True, who)


@cli.command()
@click.argument("run_id", type=int)
@config_options
@click.option("--by", "who", default=None, help="Who decided (default: the login name).")
def reject(run_id: int, config_path: str | None, profile: str | None, who: str | None) -> None:
    """Reject a run awaiting approval; the champion stays."""
    _decide_manually(run_id, config_path, profile, False, who)


@cli.command()
@click.option("--workspace", default="demo-workspace", show_default=True, type=click.Path(path_type=Path),
              help="Where to build the demo (model, data, eval suite, config, state).")
@click.option("--no-run", is_flag=True, help="Only build the workspace.")
@click.option("--iters", default=200, show_default=True, help="Training iterations in the demo config.")
def demo(workspace: Path, no_run: bool, iters: int) -> None:
    """Build a tiny local model, data and config, then run one night on it."""
    from daemon.demo import build_workspace

    click.echo(f"building the demo workspace in {workspace} (tiny local model, no download)")
    progress = TerminalProgress()
    try:
        config_path = build_workspace(
            workspace, iters=iters, on_progress=lambda p: progress.train(p, label="pretrain the tiny base model")
        )
    finally:
        progress.close()
    click.echo(f"config: {config_path}")
    if no_run:
        return
    _run_now(str(config_path), None)
    exe = invoked_as()
    click.echo(f"next: {exe} -c {config_path} status")
    click.echo(f"      {exe} -c {config_path} --run-now --force (trains again; without --force an unchanged night is skipped)")
    click.echo(f"      {exe} -c {config_path} rollback (back to the previous champion, handed off and verified)")


def invoked_as(argv0: str | None = None) -> str:
    """How to run this nightshift again from the current directory: ``nightshift`` when that name on
    PATH is this executable, else its path (``.venv/bin/nightshift``, relative when under the current
    directory), or ``PYTHON -m daemon`` when started that way."""
    import shutil

    arg = Path(argv0 if argv0 is not None else sys.argv[0])
    if arg.name in ("__main__.py", "-m", "-c") or not arg.name.startswith("nightshift"):
        return f"{sys.executable} -m daemon"
    on_path = shutil.which(arg.name)
    if on_path is not None and arg.exists() and Path(on_path).resolve() == arg.resolve():
        return arg.name
    path = arg.absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _register_optional_commands() -> None:
    from daemon.commands.data_cmd import data
    from daemon.commands.preflight_cmd import preflight
    from daemon.commands.schedule_cmds import launchd, start, systemd
    from daemon.commands.serving_cmds import gc, releases, rollback, serve
    from daemon.commands.suite_cmd import suite

    for command in (preflight, data, start, launchd, systemd, suite, serve, rollback, releases, gc):
        cli.add_command(command)


_register_optional_commands()


def main() -> None:
    """Console-script entry point (errors are printed by :class:`NightshiftGroup`).

    Files nightshift creates are private to the user (``umask 077``; see :mod:`daemon.statedir`).
    """
    os.umask(0o077)
    cli.main(prog_name="nightshift")
