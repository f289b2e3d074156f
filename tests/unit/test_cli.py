"""CLI surface: every command has help; the CLI process never imports mlx."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from daemon.cli import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((*prefix, name))
        if isinstance(cmd, click.Group):
            out.extend(all_commands(cmd, (*prefix, name)))
    return out


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
