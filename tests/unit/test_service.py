"""LaunchAgent plist, systemd unit, the pidfile, and the service commands' --dry-run output."""

from __future__ import annotations

import configparser
import os
import plistlib
import shlex
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from daemon.commands.schedule_cmds import launchd, start, systemd
from daemon.config import Config, load_config
from daemon.errors import NightshiftError
from daemon.service import (
    LAUNCHD_TEMPLATE,
    PIDFILE_NAME,
    DaemonPidFile,
    launchd_install_plan,
    read_daemon_pid,
    render_launchd_plist,
    render_systemd_unit,
    stop_timeout_s,
)

REPO = Path(__file__).resolve().parents[2]


def write_config(directory: Path, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "nightshift.yaml"
    path.write_text(f"paths:\n  state_dir: state\nschedule:\n  stop_grace_s: 45\n{extra}", encoding="utf-8")
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    loaded = load_config(write_config(tmp_path / "work space"))
    assert loaded.source is not None
    return loaded


# ---------------------------------------------------------------- launchd plist


def test_plist_has_the_launchd_keys(cfg: Config, home: Path) -> None:
    plist = plistlib.loads(plistlib.dumps(render_launchd_plist(cfg, home=home)))
    assert plist["Label"] == "io.nightshift.daemon"
    args = plist["ProgramArguments"]
    assert Path(args[0]).is_absolute()
    assert args[-3:] == ["start", "--config", str(cfg.source)]
    assert Path(args[-1]).is_absolute()
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ProcessType"] in ("Interactive", "Standard")  # never Background (throttled)
    assert isinstance(plist["ThrottleInterval"], int) and plist["ThrottleInterval"] >= 10
    assert plist["ExitTimeOut"] == stop_timeout_s(cfg) > cfg.schedule.stop_grace_s + 10
    env = plist["EnvironmentVariables"]
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).absolute().parent)
    assert "/usr/bin" in env["PATH"].split(":")  # caffeinate
    assert plist["WorkingDirectory"] == str(Path(str(cfg.source)).parent)
    logs = home / "Library" / "Logs" / "nightshift"
    assert Path(plist["StandardOutPath"]).parent == logs
    assert Path(plist["StandardErrorPath"]).parent == logs
    assert plist["StandardOutPath"] != plist["StandardErrorPath"]


def test_plist_for_a_profile_has_its_own_label_and_logs(tmp_path: Path, home: Path) -> None:
    path = write_config(tmp_path, "profiles:\n  big:\n    training:\n      iters: 5\n")
    plist = render_launchd_plist(load_config(path, "big"), home=home)
    assert plist["Label"] == "io.nightshift.daemon.big"
    assert plist["ProgramArguments"][-2:] == ["--profile", "big"]
    assert plist["StandardOutPath"].endswith("daemon-big.out.log")


def test_the_plist_template_ships_in_the_package_and_in_launchd_dir() -> None:
    packaged = REPO / "daemon" / "templates" / LAUNCHD_TEMPLATE
    assert packaged.read_bytes() == (REPO / "launchd" / LAUNCHD_TEMPLATE).read_bytes()
    assert plistlib.loads(packaged.read_bytes())["KeepAlive"] == {"SuccessfulExit": False}


def test_install_plan_replaces_a_loaded_agent_then_bootstraps(cfg: Config, home: Path) -> None:
    plan = launchd_install_plan(cfg, home=home)
    commands = [str(step) for step in plan.steps if hasattr(step, "argv")]
    uid = os.getuid()
    plist_path = home / "Library" / "LaunchAgents" / "io.nightshift.daemon.plist"
    assert commands == [
        f"launchctl bootout gui/{uid}/io.nightshift.daemon",
        f"launchctl enable gui/{uid}/io.nightshift.daemon",
        f"launchctl bootstrap gui/{uid} {plist_path}",
    ]


# ---------------------------------------------------------------- systemd unit


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_systemd_unit_has_the_keys(cfg: Config) -> None:
    unit = parse_unit(render_systemd_unit(cfg))
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "control-group"
    assert int(service["TimeoutStopSec"]) == stop_timeout_s(cfg) > cfg.schedule.stop_grace_s
    argv = shlex.split(service["ExecStart"])  # systemd's double quotes read like a shell's here
    assert Path(argv[0]).is_absolute()
    assert argv[-3:] == ["start", "--config", str(cfg.source)]  # the path has a space
    assert service["WorkingDirectory"] == str(Path(str(cfg.source)).parent)
    assert "PYTHONUNBUFFERED=1" in shlex.split(service["Environment"])
    assert unit["Install"]["WantedBy"] == "default.target"


def test_systemd_unit_escapes_percent_and_dollar(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "100%$HOME"))
    service = parse_unit(render_systemd_unit(cfg))["Service"]
    assert "100%%$$HOME" in service["ExecStart"]
    assert service["WorkingDirectory"].endswith("100%%$HOME")


# ---------------------------------------------------------------- commands, --dry-run


def test_launchd_install_dry_run_prints_plist_and_commands_and_writes_nothing(
    cfg: Config, home: Path
) -> None:
    result = CliRunner().invoke(launchd, ["install", "--dry-run", "-c", str(cfg.source)])
    assert result.exit_code == 0, result.output
    out = result.output
    plist_path = home / "Library" / "LaunchAgents" / "io.nightshift.daemon.plist"
    assert f"# would write {plist_path}:" in out
    xml = out[out.index("<?xml") : out.index("</plist>") + len("</plist>")]
    assert plistlib.loads(xml.encode())["Label"] == "io.nightshift.daemon"
    assert f"$ launchctl bootstrap gui/{os.getuid()} {plist_path}" in out
    assert not (home / "Library").exists()


def test_launchd_uninstall_and_status_dry_run(home: Path) -> None:
    uid = os.getuid()
    result = CliRunner().invoke(launchd, ["uninstall", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"$ launchctl bootout gui/{uid}/io.nightshift.daemon" in result.output
    assert "# would remove" in result.output
    result = CliRunner().invoke(launchd, ["status", "--dry-run", "--profile", "big"])
    assert result.exit_code == 0, result.output
    assert f"$ launchctl print gui/{uid}/io.nightshift.daemon.big" in result.output


def test_systemd_install_dry_run(cfg: Config, home: Path) -> None:
    result = CliRunner().invoke(systemd, ["install", "--dry-run", "--config", str(cfg.source)])
    assert result.exit_code == 0, result.output
    unit_path = home / ".config" / "systemd" / "user" / "nightshift.service"
    assert f"# would write {unit_path}:" in result.output
    assert "KillMode=control-group" in result.output
    assert "$ systemctl --user daemon-reload" in result.output
    assert "$ systemctl --user enable --now nightshift" in result.output
    assert "loginctl enable-linger $USER" in result.output
    assert not unit_path.exists()


def test_systemd_uninstall_dry_run(home: Path) -> None:
    result = CliRunner().invoke(systemd, ["uninstall", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("$", "# would"))]
    assert lines[0] == "$ systemctl --user disable --now nightshift"
    assert lines[1].startswith("# would remove ")
    assert lines[2] == "$ systemctl --user daemon-reload"


def test_install_without_the_service_manager_is_a_one_line_error(
    cfg: Config, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = CliRunner().invoke(launchd, ["install", "-c", str(cfg.source)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: launchctl not found on PATH")
    assert not (home / "Library" / "LaunchAgents").exists()


def test_install_runs_the_commands_in_order(
    cfg: Config, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in launchctl that records its arguments (the real one is never called)
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    record = tmp_path / "calls.txt"
    fake = bin_dir / "launchctl"
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{record}"\n[ "$1" = bootout ] && exit 3\nexit 0\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = CliRunner().invoke(launchd, ["install", "-c", str(cfg.source)])
    assert result.exit_code == 0, result.output
    plist_path = home / "Library" / "LaunchAgents" / "io.nightshift.daemon.plist"
    assert plistlib.loads(plist_path.read_bytes())["Label"] == "io.nightshift.daemon"
    assert (home / "Library" / "Logs" / "nightshift").is_dir()
    assert record.read_text().splitlines() == [
        f"bootout gui/{os.getuid()}/io.nightshift.daemon",
        f"enable gui/{os.getuid()}/io.nightshift.daemon",
        f"bootstrap gui/{os.getuid()} {plist_path}",
    ]


def test_commands_have_help() -> None:
    runner = CliRunner()
    for group, sub in [(start, []), (launchd, ["install"]), (launchd, ["uninstall"]), (launchd, ["status"]),
                       (systemd, ["install"]), (systemd, ["uninstall"]), (systemd, ["status"])]:
        result = runner.invoke(group, [*sub, "--help"])
        assert result.exit_code == 0, (sub, result.output)
        assert "Usage:" in result.output


def test_start_with_a_bad_config_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(start, ["-c", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: Config file not found:")


def test_start_with_a_bad_schedule_names_the_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, "  cron: '0 1 * *'\n  timezone: Mars/Olympus\n")
    result = CliRunner().invoke(start, ["-c", str(path)])
    assert result.exit_code == 1
    assert "schedule.cron: must be a crontab expression" in result.output
    assert "schedule.timezone: unknown IANA time zone" in result.output
    assert not (tmp_path / "state").exists()  # no pidfile, no log file


# ---------------------------------------------------------------- pidfile


def test_pidfile_is_held_while_running_and_removed_on_exit(tmp_path: Path) -> None:
    with DaemonPidFile(tmp_path):
        assert (tmp_path / PIDFILE_NAME).read_text() == f"{os.getpid()}\n"
        assert read_daemon_pid(tmp_path) == os.getpid()
        with pytest.raises(NightshiftError, match=rf"already running \(pid {os.getpid()}\)"):
            DaemonPidFile(tmp_path).__enter__()
    assert not (tmp_path / PIDFILE_NAME).exists()
    assert read_daemon_pid(tmp_path) is None


def test_a_stale_pidfile_is_not_a_running_daemon_and_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / PIDFILE_NAME).write_text("999999\n")
    assert read_daemon_pid(tmp_path) is None
    with DaemonPidFile(tmp_path):
        assert read_daemon_pid(tmp_path) == os.getpid()
