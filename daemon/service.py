"""The daemon as an operating-system service: its pidfile, LaunchAgent and systemd unit.

``nightshift start`` holds ``<state_dir>/daemon.pid`` under ``flock`` for its
lifetime (:class:`DaemonPidFile`); ``nightshift status`` reads it with
:func:`read_daemon_pid`. ``nightshift launchd install`` (macOS) and
``nightshift systemd install`` (Linux) render a service definition that runs
the current venv's ``nightshift start --config <absolute path>`` and load it.
Rendering is pure (:func:`launchd_install_plan`, :func:`systemd_install_plan`);
:func:`execute_plan` writes the file and runs ``launchctl``/``systemctl``, or
only prints them with ``dry_run``.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from daemon.errors import NightshiftError

if TYPE_CHECKING:
    from daemon.config import Config

PIDFILE_NAME = "daemon.pid"
LAUNCHD_LABEL = "io.nightshift.daemon"
LAUNCHD_TEMPLATE = "io.nightshift.daemon.plist.template"
SYSTEMD_UNIT = "nightshift"
SYSTEMD_TEMPLATE = "nightshift.service.template"
#: Seconds a service manager waits after SIGTERM, on top of ``schedule.stop_grace_s``:
#: the child's SIGKILL wait (5 s), marking the run interrupted, APScheduler shutdown.
STOP_MARGIN_S = 30
#: Where the venv's ``bin`` is not enough: ``caffeinate``, ``git``, Homebrew tools.
MACOS_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
LINUX_PATH = "/usr/local/bin:/usr/bin:/bin"


# ---------------------------------------------------------------- the pidfile


class DaemonPidFile:
    """``<state_dir>/daemon.pid``, held under ``flock`` for the daemon's lifetime
    (a :class:`daemon.lock.LockFile`).

    The lock makes a stale file (the daemon died, even by SIGKILL) harmless and
    refuses a second daemon on the same state directory. Removed on clean exit.

    Raises:
        NightshiftError: on enter, when another daemon holds the file.
    """

    def __init__(self, state_dir: Path) -> None:
        from daemon.lock import LockFile

        self.path = Path(state_dir) / PIDFILE_NAME
        self._lock = LockFile(self.path, remove_on_release=True)

    def __enter__(self) -> DaemonPidFile:
        if not self._lock.acquire():
            pid = read_daemon_pid(self.path.parent)
            raise NightshiftError(
                f"The nightshift daemon is already running (pid {pid or '?'}) for state "
                f"directory {self.path.parent}. Stop it first (nightshift launchd uninstall, "
                "nightshift systemd uninstall, or kill -TERM the pid)."
            )
        self._lock.write(f"{os.getpid()}\n")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


def read_daemon_pid(state_dir: Path) -> int | None:
    """The pid of the live daemon of ``state_dir``, or None.

    A pidfile nobody holds the lock on (the daemon died, or the file was left
    behind) counts as not running, whatever pid it names.
    """
    from daemon.lock import read_locked

    text = (read_locked(Path(state_dir) / PIDFILE_NAME) or "").strip()
    return int(text) if text.isdigit() else None


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class Command:
    """Run a service-manager command; ``may_fail`` for "unload if loaded" and queries."""

    argv: list[str]
    may_fail: bool = False

    def __str__(self) -> str:
        return " ".join(_shell_quote(a) for a in self.argv)


@dataclass(frozen=True)
class WriteFile:
    """Write ``content`` to ``path``, creating parent directories."""

    path: Path
    content: str


@dataclass(frozen=True)
class RemoveFile:
    """Delete ``path`` if it exists."""

    path: Path


@dataclass(frozen=True)
class MakeDir:
    """Create a directory (and parents) the service manager writes into."""

    path: Path


Step = Command | WriteFile | RemoveFile | MakeDir


@dataclass(frozen=True)
class ServicePlan:
    """What an install/uninstall/status does, in order, and what to tell the user after."""

    steps: list[Step]
    notes: list[str] = field(default_factory=list)
    require: str | None = None
    """The tool that must be on PATH to execute the plan (``launchctl``, ``systemctl``)."""


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def _template(name: str) -> str:
    return (importlib.resources.files("daemon") / "templates" / name).read_text(encoding="utf-8")


def _suffix(profile: str | None) -> str:
    return "" if profile is None else "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", profile)


def nightshift_argv() -> list[str]:
    """The absolute command that runs this installation's ``nightshift``.

    The venv's ``bin/nightshift`` next to the running interpreter (not resolved:
    a venv's python is a symlink out of the venv), else ``python -m daemon``.
    """
    python = Path(sys.executable).absolute()
    script = python.parent / "nightshift"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(python), "-m", "daemon"]


def start_argv(cfg: Config) -> list[str]:
    """``<nightshift> start --config <absolute config> [--profile NAME]``.

    Raises:
        NightshiftError: the config was not loaded from a file.
    """
    if cfg.source is None:
        raise NightshiftError("The service needs a config file: pass --config PATH.")
    argv = [*nightshift_argv(), "start", "--config", str(Path(cfg.source).absolute())]
    if cfg.profile:
        argv += ["--profile", cfg.profile]
    return argv


def stop_timeout_s(cfg: Config) -> int:
    """Seconds a service manager should wait between SIGTERM and SIGKILL."""
    return math.ceil(cfg.schedule.stop_grace_s) + STOP_MARGIN_S


def _path_env(system_path: str) -> str:
    return f"{Path(sys.executable).absolute().parent}:{system_path}"


# ---------------------------------------------------------------- launchd


def launchd_label(profile: str | None = None) -> str:
    """``io.nightshift.daemon``, or ``io.nightshift.daemon.<profile>``."""
    return LAUNCHD_LABEL + _suffix(profile).replace("-", ".", 1)


def launchd_plist_path(label: str, home: Path) -> Path:
    """``<home>/Library/LaunchAgents/<label>.plist``."""
    return home / "Library" / "LaunchAgents" / f"{label}.plist"


def launchd_log_dir(home: Path) -> Path:
    """``<home>/Library/Logs/nightshift`` (launchd's stdout/stderr of the agent)."""
    return home / "Library" / "Logs" / "nightshift"


def render_launchd_plist(cfg: Config, *, home: Path) -> dict[str, Any]:
    """The LaunchAgent as a plist dict (write it with ``plistlib.dumps``).

    Fills the packaged template: absolute ``ProgramArguments``, ``ExitTimeOut``
    from ``schedule.stop_grace_s``, ``PATH`` with the venv's ``bin``, the config
    file's directory as ``WorkingDirectory`` and logs under ``~/Library/Logs/nightshift``.

    Raises:
        NightshiftError: the config was not loaded from a file.
    """
    plist: dict[str, Any] = plistlib.loads(_template(LAUNCHD_TEMPLATE).encode())
    label = launchd_label(cfg.profile)
    logs = launchd_log_dir(home)
    stem = "daemon" + _suffix(cfg.profile)
    plist["Label"] = label
    plist["ProgramArguments"] = start_argv(cfg)
    plist["ExitTimeOut"] = stop_timeout_s(cfg)
    plist["EnvironmentVariables"]["PATH"] = _path_env(MACOS_PATH)
    plist["WorkingDirectory"] = str(Path(cfg.source or ".").absolute().parent)
    plist["StandardOutPath"] = str(logs / f"{stem}.out.log")
    plist["StandardErrorPath"] = str(logs / f"{stem}.err.log")
    left = [v for v in _strings(plist) if re.fullmatch(r"@[A-Z_]+@", v)]
    assert not left, f"unfilled placeholders in {LAUNCHD_TEMPLATE}: {left}"
    return plist


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _gui_domain() -> str:
    return f"gui/{os.getuid()}"


def launchd_install_plan(cfg: Config, *, home: Path) -> ServicePlan:
    """Write ``~/Library/LaunchAgents/<Label>.plist`` and bootstrap it (replacing a loaded one)."""
    plist = render_launchd_plist(cfg, home=home)
    label = plist["Label"]
    path = launchd_plist_path(label, home)
    domain = _gui_domain()
    return ServicePlan(
        steps=[
            MakeDir(launchd_log_dir(home)),
            WriteFile(path, plistlib.dumps(plist).decode()),
            Command(["launchctl", "bootout", f"{domain}/{label}"], may_fail=True),
            Command(["launchctl", "enable", f"{domain}/{label}"]),
            Command(["launchctl", "bootstrap", domain, str(path)]),
        ],
        notes=[
            f"{label} starts when loaded and at every login, and restarts after a crash.",
            f"Daemon output: {launchd_log_dir(home)}; check it with: nightshift launchd status",
        ],
        require="launchctl",
    )


def launchd_uninstall_plan(profile: str | None, *, home: Path) -> ServicePlan:
    """Boot the agent out (stopping the daemon) and delete its plist."""
    label = launchd_label(profile)
    return ServicePlan(
        steps=[
            Command(["launchctl", "bootout", f"{_gui_domain()}/{label}"], may_fail=True),
            RemoveFile(launchd_plist_path(label, home)),
        ],
        notes=[f"{label} is stopped and will not start at login."],
        require="launchctl",
    )


def launchd_status_plan(profile: str | None, *, home: Path) -> ServicePlan:
    """``launchctl print gui/$UID/<Label>`` (fails when the agent is not loaded)."""
    label = launchd_label(profile)
    path = launchd_plist_path(label, home)
    installed = "installed" if path.exists() else "not installed"
    return ServicePlan(
        steps=[Command(["launchctl", "print", f"{_gui_domain()}/{label}"], may_fail=True)],
        notes=[f"{path}: {installed}"],
        require="launchctl",
    )


# ---------------------------------------------------------------- systemd


def systemd_unit_name(profile: str | None = None) -> str:
    """``nightshift`` or ``nightshift-<profile>`` (without ``.service``)."""
    return SYSTEMD_UNIT + _suffix(profile)


def systemd_unit_path(name: str, home: Path) -> Path:
    """``<home>/.config/systemd/user/<name>.service``."""
    return home / ".config" / "systemd" / "user" / f"{name}.service"


def _systemd_quote(arg: str, *, exec_line: bool) -> str:
    # systemd.syntax(7): C-style escapes inside double quotes; '%' starts a
    # specifier everywhere and '$' a variable on Exec lines, so both are doubled.
    text = arg.replace("%", "%%")
    if exec_line:
        text = text.replace("$", "$$")
    if re.fullmatch(r"[\w@%$+=:,./-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd_unit(cfg: Config) -> str:
    """The user unit's text: ``Restart=on-failure``, ``KillMode=control-group``,
    ``TimeoutStopSec`` from ``schedule.stop_grace_s``, absolute ``ExecStart``.

    Raises:
        NightshiftError: the config was not loaded from a file.
    """
    exec_start = " ".join(_systemd_quote(a, exec_line=True) for a in start_argv(cfg))
    env = " ".join(
        _systemd_quote(f"{k}={v}", exec_line=False)
        for k, v in (("PATH", _path_env(LINUX_PATH)), ("PYTHONUNBUFFERED", "1"))
    )
    values = {
        "@EXEC_START@": exec_start,
        "@WORKDIR@": str(Path(cfg.source or ".").absolute().parent).replace("%", "%%"),
        "@ENVIRONMENT@": env,
        "@TIMEOUT_STOP_S@": str(stop_timeout_s(cfg)),
    }
    text = _template(SYSTEMD_TEMPLATE)
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def systemd_install_plan(cfg: Config, *, home: Path) -> ServicePlan:
    """Write the user unit, reload systemd and enable + start it."""
    name = systemd_unit_name(cfg.profile)
    return ServicePlan(
        steps=[
            WriteFile(systemd_unit_path(name, home), render_systemd_unit(cfg)),
            Command(["systemctl", "--user", "daemon-reload"]),
            Command(["systemctl", "--user", "enable", "--now", name]),
        ],
        notes=[
            f"{name}.service starts now and with your user session, and restarts after a crash.",
            "So that it also runs while you are logged out (at 1 AM), run once: "
            "loginctl enable-linger $USER",
            f"Logs: journalctl --user -u {name}",
        ],
        require="systemctl",
    )


def systemd_uninstall_plan(profile: str | None, *, home: Path) -> ServicePlan:
    """Disable and stop the unit, delete it, reload systemd."""
    name = systemd_unit_name(profile)
    return ServicePlan(
        steps=[
            Command(["systemctl", "--user", "disable", "--now", name], may_fail=True),
            RemoveFile(systemd_unit_path(name, home)),
            Command(["systemctl", "--user", "daemon-reload"]),
        ],
        notes=[f"{name}.service is stopped and will not start again."],
        require="systemctl",
    )


def systemd_status_plan(profile: str | None) -> ServicePlan:
    """``systemctl --user status <name>``."""
    name = systemd_unit_name(profile)
    return ServicePlan(
        steps=[Command(["systemctl", "--user", "--no-pager", "status", name], may_fail=True)],
        require="systemctl",
    )


# ---------------------------------------------------------------- execution


def execute_plan(plan: ServicePlan, *, dry_run: bool, echo: Callable[[str], None]) -> int:
    """Carry out (or, with ``dry_run``, only print) a plan's steps in order.

    A dry run prints the file it would write, ``$ command`` lines and the
    notes, and touches nothing. A real run echoes each command's output.

    Returns:
        The exit status of the last command (0 for a dry run); non-zero only
        from a ``may_fail`` command, e.g. ``launchctl print`` of an unloaded agent.

    Raises:
        NightshiftError: the service manager is not on PATH, or a required
            command failed (its exit status and stderr in the message).
    """
    if not dry_run and plan.require and shutil.which(plan.require) is None:
        other = "nightshift systemd" if plan.require == "launchctl" else "nightshift launchd"
        raise NightshiftError(
            f"{plan.require} not found on PATH: this service manager is not available here "
            f"(use `{other} ...` instead, or --dry-run to see what would be done)."
        )
    status = 0
    for step in plan.steps:
        if isinstance(step, MakeDir):
            if not dry_run:
                step.path.mkdir(parents=True, exist_ok=True)
        elif isinstance(step, WriteFile):
            if dry_run:
                echo(f"# would write {step.path}:")
                echo(step.content.rstrip("\n"))
            else:
                step.path.parent.mkdir(parents=True, exist_ok=True)
                step.path.write_text(step.content, encoding="utf-8")
                echo(f"Wrote {step.path}")
        elif isinstance(step, RemoveFile):
            if dry_run:
                echo(f"# would remove {step.path}")
            elif step.path.exists():
                step.path.unlink()
                echo(f"Removed {step.path}")
        elif dry_run:
            echo(f"$ {step}")
        else:
            status = _run(step, echo)
    for note in plan.notes:
        echo(f"# {note}" if dry_run else note)
    return status


def _run(cmd: Command, echo: Callable[[str], None]) -> int:
    proc = subprocess.run(cmd.argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and not cmd.may_fail:
        raise NightshiftError(
            f"`{cmd}` failed with exit status {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip() or 'no output'}"
        )
    for text in (proc.stdout, proc.stderr if cmd.may_fail else ""):
        if text.strip():
            echo(text.rstrip("\n"))
    return proc.returncode
