"""An OSError outside the registry (the run's directory, a workspace file) is one `Error: ...` line
naming the path and what to do, and the run's recorded failure reason (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from daemon.cli import cli
from daemon.config import load_config
from daemon.errors import FileAccessError
from daemon.pipeline import run_pipeline
from daemon.registry import Registry, RunStatus


@pytest.fixture
def read_only_runs(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose ``runs/`` is a real read-only file system (a tmpfs mounted ``ro``:
    chmod does not stop root); yields the config path."""
    state = tmp_path / "state"
    Registry.open(state).close()
    (state / "runs").mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(state / "runs")]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    config = tmp_path / "nightshift.yaml"
    config.write_text(f"paths:\n  state_dir: {state}\n")
    try:
        yield config
    finally:
        subprocess.run(["umount", str(state / "runs")], capture_output=True)


def expected_reason(config: Path) -> str:
    runs = config.parent / "state" / "runs"
    return f"Read-only file system: {runs / '0001'}; remount it read-write or point the config at a writable directory"


def failure_of_run_1(config: Path) -> tuple[str, str | None]:
    reg = Registry.open(config.parent / "state")
    try:
        run = reg.get_run(1)
    finally:
        reg.close()
    return run.status, run.failure_reason


def test_a_read_only_runs_dir_fails_the_run_with_the_path_and_what_to_do(read_only_runs: Path) -> None:
    """Regression: creating the run's directory on a read-only file system raised a raw OSError
    and left the run `pending`."""
    with pytest.raises(FileAccessError) as info:
        run_pipeline(load_config(read_only_runs))
    assert str(info.value) == expected_reason(read_only_runs)
    assert failure_of_run_1(read_only_runs) == (RunStatus.FAILED.value, expected_reason(read_only_runs))


def test_an_oserror_in_any_command_is_one_error_line(tmp_path: Path, read_only_runs: Path) -> None:
    """The CLI's one error path turns an OSError (here a real EROFS) into `Error: ...`, not a traceback."""

    @cli.command("oserror-test")
    def oserror_test() -> None:
        (tmp_path / "state" / "runs" / "x").write_text("x")

    try:
        result = CliRunner().invoke(cli, ["oserror-test"])
    finally:
        cli.commands.pop("oserror-test")
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output
    assert result.output == (
        f"Error: Read-only file system: {tmp_path / 'state' / 'runs' / 'x'}; remount it read-write "
        "or point the config at a writable directory\n"
    )
    assert not isinstance(result.exception, click.ClickException)


@pytest.mark.slow  # a real `nightshift --run-now` process (registry migrations included)
def test_run_now_on_a_read_only_runs_dir_is_one_error_line(read_only_runs: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "--run-now", "-c", str(read_only_runs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"Error: {expected_reason(read_only_runs)}"], proc.stderr
    assert failure_of_run_1(read_only_runs) == (RunStatus.FAILED.value, expected_reason(read_only_runs))
