"""CLI surface: every command has help and honours -c/--profile in either position; one error path;
the CLI process never imports mlx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.config import default_config_path
from daemon.errors import ConfigError, NightshiftError


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, (*prefix, name)))
    return out


def leaf_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    """Every runnable command (not groups), found by walking the group: new commands are covered."""
    out = []
    for path in all_commands(cli):
        cmd: click.Command = cli
        for name in path:
            cmd = cmd.commands[name]  # type: ignore[attr-defined]
        if not isinstance(cmd, click.Group):
            out.append((path, cmd))
    return out


# Commands that read no config file, and why. Anything else must take `config_options`.
READS_NO_CONFIG = {
    ("demo",): "writes its own config into the workspace",
    ("data", "clean"): "a file-to-file tool",
}
# Commands that take the option set but only use --profile (it names the installed service).
PROFILE_ONLY = {("launchd", "uninstall"), ("launchd", "status"), ("systemd", "uninstall"), ("systemd", "status")}


def required_args(cmd: click.Command, tmp_path: Path) -> list[str]:
    """A plausible value for each required positional argument."""
    values = []
    for param in cmd.params:
        if isinstance(param, click.Argument) and param.required:
            values.append("1" if isinstance(param.type, click.types.IntParamType) else str(tmp_path))
    return values


@pytest.mark.parametrize(("path", "cmd"), leaf_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_honours_config_before_and_after_its_name(
    path: tuple[str, ...], cmd: click.Command, tmp_path: Path
) -> None:
    """`nightshift -c FILE start` (and launchd/systemd install) loaded the default config instead of FILE."""
    if path in READS_NO_CONFIG:
        assert not any(p.name == "config_path" for p in cmd.params), f"{path} takes -c: drop it from READS_NO_CONFIG"
        return
    assert any(p.name == "config_path" for p in cmd.params), (
        f"`nightshift {' '.join(path)}` has no -c/--profile: decorate it with daemon.commands.common.config_options"
    )
    runner = CliRunner()
    args = required_args(cmd, tmp_path)
    if path in PROFILE_ONLY:
        before = runner.invoke(cli, ["--profile", "night2", *path, *args, "--dry-run"])
        after = runner.invoke(cli, [*path, *args, "--dry-run", "--profile", "night2"])
        plain = runner.invoke(cli, [*path, *args, "--dry-run"])
        assert before.exit_code == after.exit_code == 0, before.output + after.output
        assert "night2" in before.output and before.output == after.output != plain.output
        return
    missing = tmp_path / "given.yaml"
    for argv in (["-c", str(missing), *path, *args], [*path, *args, "-c", str(missing)]):
        result = runner.invoke(cli, argv)
        assert result.exit_code == 1, (argv, result.output)
        assert result.output.startswith(f"Error: Config file not found: {missing}."), (argv, result.output)


def test_profile_given_before_the_command_reaches_it(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("paths:\n  state_dir: st\nprofiles:\n  small: {training: {iters: 5}}\n")
    for argv in (["-c", str(config), "--profile", "nope", "status"], ["status", "-c", str(config), "--profile", "nope"]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 1
        assert result.output == f"Error: Unknown profile 'nope' in {config} (profiles: small).\n"


def test_help_shows_the_config_directory() -> None:
    """`--help` did not show the config directory the README points to."""
    result = CliRunner().invoke(cli, ["--help"])
    assert str(default_config_path()) in " ".join(result.output.split())
    result = CliRunner().invoke(cli, ["status", "--help"])
    assert str(default_config_path()) in " ".join(result.output.split())


def test_several_problems_are_one_line_plus_an_indented_list() -> None:
    @cli.command("boom-test")
    def boom() -> None:
        raise ConfigError("Invalid config x.yaml: 3 problem(s)", ["a: bad", "b: " + "v" * 5000, "c: bad"])

    try:
        result = CliRunner().invoke(cli, ["boom-test"])
    finally:
        cli.commands.pop("boom-test")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "Error: Invalid config x.yaml: 3 problem(s)"
    assert lines[1] == "  - a: bad" and lines[3] == "  - c: bad"
    assert len(lines) == 4 and len(lines[2]) < 500 and lines[2].endswith("(5,003 characters in all)")


def test_a_nightshift_error_in_a_group_without_options_is_one_error_line() -> None:
    @cli.command("boom-test")
    def boom() -> None:
        raise NightshiftError("it broke\n  - here\n  - there")

    try:
        result = CliRunner().invoke(cli, ["boom-test"])
    finally:
        cli.commands.pop("boom-test")
    assert result.exit_code == 1
    assert result.output == "Error: it broke\n  - here\n  - there\n"


@pytest.mark.parametrize("path", all_commands(cli))
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_expected_commands_exist() -> None:
    names = set(cli.commands)
    assert {"run-now", "status", "history", "report", "demo", "approve", "reject", "preflight", "data", "start", "launchd", "systemd"} <= names


def test_cli_process_never_imports_mlx(tmp_path) -> None:
    """The scheduler/CLI process stays small: only worker children import mlx."""
    code = (
        "import sys\n"
        "from daemon import cli, pipeline, scheduler, status, preflight, evaluate, train, promote, report\n"
        "from click.testing import CliRunner\n"
        f"CliRunner().invoke(cli.cli, ['status', '-c', {str(tmp_path / 'missing.yaml')!r}])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers', 'torch'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_is_one_line_and_nonzero(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "daemon", "-c", str(tmp_path / "nope.yaml"), "status"],
        capture_output=True, text=True,
    )
    assert res.returncode == 1
    assert res.stderr.startswith("Error: Config file not found:") and res.stderr.count("\n") == 1


RUN_NOW_FORMS = [
    ["--run-now", "--force", "-c", "{cfg}"],
    ["--force", "--run-now", "-c", "{cfg}"],
    ["-c", "{cfg}", "--run-now", "--force"],
    ["-c", "{cfg}", "--force", "--run-now"],
    ["--run-now", "-c", "{cfg}", "--force"],
    ["--force", "run-now", "-c", "{cfg}"],
    ["-c", "{cfg}", "run-now", "--force"],
    ["run-now", "--force", "-c", "{cfg}"],
]


@pytest.mark.parametrize("form", RUN_NOW_FORMS, ids=" ".join)
def test_force_works_with_the_run_now_flag_in_any_order(
    form: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nightshift --run-now --force` was "No such option: --force": only the run-now command took it."""
    missing = tmp_path / "given.yaml"
    argv = [a.format(cfg=missing) for a in form]
    result = CliRunner().invoke(cli, argv)  # the real path: it reaches config loading, not a usage error
    assert result.exit_code == 1 and result.output.startswith(f"Error: Config file not found: {missing}."), (
        argv,
        result.output,
    )
    calls: list[tuple[str | None, bool]] = []
    monkeypatch.setattr("daemon.cli._run_now", lambda path, profile, force=False: calls.append((path, force)))
    assert CliRunner().invoke(cli, argv).exit_code == 0
    assert calls == [(str(missing), True)]
    unforced = CliRunner().invoke(cli, [a for a in argv if a != "--force"])
    assert unforced.exit_code == 0 and calls[-1] == (str(missing), False)


def test_force_alone_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["--force", "status"])
    assert result.exit_code == 2 and "--force goes with --run-now" in result.output


def test_every_command_takes_the_one_shared_config_option_set() -> None:
    """`suite check` declared its own -c/--profile (a second option set, its own help and lookup)."""
    from daemon.commands.common import config_options

    shared = {p.name: p for p in config_options(lambda **_: None).__click_params__}  # type: ignore[attr-defined]
    for path, cmd in leaf_commands():
        mine = {p.name: p for p in cmd.params if p.name in shared}
        if not mine:
            continue
        for name, param in mine.items():
            assert (param.opts, param.help) == (shared[name].opts, shared[name].help), (path, name)


def test_approve_prints_the_summary_line_and_keeps_log_events_in_the_file(tmp_path: Path) -> None:
    """Reviewer defect: `approve 2` printed 5 raw log lines, then only "run 2: promoted" (no reason, report)."""
    import json

    import structlog

    from daemon.registry import Registry, RunStatus
    from tests.faults.state import trained_run

    structlog.reset_defaults()  # as in a fresh process: unconfigured structlog prints to stdout
    state = tmp_path / "state"
    cfg = tmp_path / "nightshift.yaml"
    cfg.write_text(json.dumps({"paths": {"state_dir": str(state)}}))
    reg = Registry.open(state)
    run_id = trained_run(reg, state, 1)
    reg.transition(run_id, RunStatus.AWAITING_APPROVAL)
    reg.update_run(run_id, decision=json.dumps({"promote": True, "summary": "PROMOTE: all checks passed"}))
    reg.close()
    result = CliRunner().invoke(cli, ["approve", str(run_id), "-c", str(cfg), "--by", "root"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, lines  # one summary line, no log lines
    assert lines[0].startswith(f"run {run_id}: promoted") and "report: " in lines[0]
    events = [json.loads(x)["event"] for x in (state / "logs" / "nightshift.jsonl").read_text().splitlines()]
    assert "promoted" in events


def test_the_demo_hint_names_the_executable_actually_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reviewer defect: after `make demo` the hint said a bare `nightshift`, not on PATH for a venv install."""
    from daemon.cli import invoked_as

    exe = tmp_path / ".venv" / "bin" / "nightshift"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert invoked_as(".venv/bin/nightshift") == ".venv/bin/nightshift"
    assert invoked_as(str(exe)) == ".venv/bin/nightshift"  # relative to the current directory
    monkeypatch.setenv("PATH", str(exe.parent))
    assert invoked_as(str(exe)) == "nightshift"  # on PATH: the bare name works
    assert invoked_as("/x/daemon/__main__.py") == f"{sys.executable} -m daemon"


def test_missing_config_points_at_an_example_a_wheel_install_has(tmp_path: Path) -> None:
    """Reviewer defect: the error pointed wheel users to configs/demo.yaml, which only a checkout has."""
    from daemon.config import load_config

    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "missing.yaml")
    assert "configs/demo.yaml" not in str(err.value) and "nightshift demo --no-run" in str(err.value)
