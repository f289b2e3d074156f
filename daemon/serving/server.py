"""The managed server: one child process serving what ``current`` resolves to.

A :class:`Supervisor` (a thread in ``nightshift start``, ``nightshift serve`` or,
when neither runs, in the night's own process for the hand-off) owns the server.
It watches ``<state_dir>/current`` and restarts the server on the resolved
release when the link changes (that swap is the hand-off signal, so a
promotion in another process reaches it without any other channel), restarts
it with exponential backoff when it dies, and stops it while a run asks for
a pause (``serving.pause_during_training``).

It reports in ``<state_dir>/serving/server.json`` (``state``: starting,
running, failed, paused, idle or stopped; ``release``; ``url``; ``pid``;
``error``; ``updated_at`` in seconds since the epoch), which the hand-off reads.
``<state_dir>/serving/supervisor.lock`` (flock) is held by the one live supervisor.
The server's pid is recorded in ``<state_dir>/serving/server.pid.json`` while it
runs; a supervisor that starts stops a server a dead one left behind
(:mod:`daemon.serving.leftover`).

mlx-lm's server keys its loaded model by path strings, so the command gets the
resolved release directory, never ``current``; it is started with
``HF_HUB_CACHE`` set to an existing directory, else ``GET /v1/models`` answers
an empty body (``scan_cache_dir`` raises when the hub cache dir is missing).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.child import stop_process_group
from daemon.config import Config
from daemon.errors import HandoffFailed
from daemon.serving.leftover import (
    forget_server,
    parent_death_signal,
    record_server,
    stop_leftover_server,
)

log = structlog.get_logger("nightshift.serving")

SERVING_DIR = "serving"
STATE_FILE = "server.json"
LOCK_FILE = "supervisor.lock"
PAUSE_FILE = "pause.json"
LOG_FILE = "server.log"
FUSED_DIR = "model"
#: How often the supervisor looks at ``current``, the pause file and its child (seconds).
POLL_S = 0.1
#: A server that stayed healthy this long resets the restart backoff (seconds).
STABLE_S = 60.0
BASE_KEY = ""
"""``release`` value meaning: no release, serve the base model alone."""


def serving_dir(state_dir: Path) -> Path:
    """``<state_dir>/serving`` (created)."""
    path = Path(state_dir) / SERVING_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def desired_release(state_dir: Path) -> str:
    """What the server should serve: the resolved target of ``current``, or :data:`BASE_KEY`."""
    link = Path(state_dir) / "current"
    if not link.is_symlink():
        return BASE_KEY
    return str((Path(state_dir) / os.readlink(link)).resolve())


def free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (the OS picks it; racy by nature, checked again at start)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def render_command(cfg: Config, release: str, port: int) -> list[str]:
    """The managed server's argv for ``release`` (:data:`BASE_KEY`: the base model alone).

    Args:
        release: a resolved release directory, or :data:`BASE_KEY`.
        port: the TCP port to bind.

    Raises:
        HandoffFailed: the template needs a release or a fused model that is not there.
    """
    sv = cfg.serving
    base = str(cfg.paths.base_model)
    fused = str(Path(release) / FUSED_DIR) if release and (Path(release) / FUSED_DIR).is_dir() else ""
    if sv.command is None:
        argv = [sys.executable, "-m", "mlx_lm.server", "--model", base]
        if release:
            argv += ["--adapter-path", release]
        return argv + ["--host", sv.host, "--port", str(port)]
    values = {"python": sys.executable, "base": base, "release": release, "fused": fused, "host": sv.host, "port": str(port)}
    joined = " ".join(sv.command)
    if "{release}" in joined and not release:
        raise HandoffFailed("serving.command needs {release}, but nothing has been promoted yet: there is no release to serve")
    if "{fused}" in joined and not fused:
        raise HandoffFailed(
            f"serving.command needs {{fused}}, but {release or 'the base'} has no fused model; set promotion.fuse: true"
        )
    return [arg.format(**values) for arg in sv.command]


def server_env(state_dir: Path) -> dict[str, str]:
    """The managed server's environment: ours, with ``HF_HUB_CACHE`` pointing at an existing dir."""
    env = dict(os.environ)
    cache = env.get("HF_HUB_CACHE")
    if not cache or not Path(cache).is_dir():
        hub = serving_dir(state_dir) / "hf-hub-cache"
        hub.mkdir(exist_ok=True)
        env["HF_HUB_CACHE"] = str(hub)
    return env


def check_health(url: str, timeout_s: float) -> str | None:
    """Ask a server whether it is up.

    ``GET {url}/health`` (mlx-lm); a server without it (404/405) counts as
    healthy when ``GET {url}/v1/models`` answers 200.

    Returns:
        None when healthy, else a one-line reason.
    """
    import httpx

    base = url.rstrip("/")
    try:
        r = httpx.get(base + "/health", timeout=timeout_s)
        if r.status_code == 200:
            return None
        if r.status_code in (404, 405, 501):
            m = httpx.get(base + "/v1/models", timeout=timeout_s)
            return None if m.status_code == 200 else f"GET {base}/v1/models answered HTTP {m.status_code}"
        return f"GET {base}/health answered HTTP {r.status_code}"
    except httpx.HTTPError as exc:
        return f"GET {base}/health failed ({type(exc).__name__}: {exc})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pause_requested(state_dir: Path) -> dict[str, Any] | None:
    """The live pause request (``{"pid", "run_id"}``), or None (none, or its process is gone)."""
    path = Path(state_dir) / SERVING_DIR / PAUSE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    return data if isinstance(pid, int) and _pid_alive(pid) else None


def read_server_state(state_dir: Path) -> dict[str, Any] | None:
    """The supervisor's last report (see the module docstring), or None."""
    try:
        return json.loads((Path(state_dir) / SERVING_DIR / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def supervisor_alive(state_dir: Path) -> bool:
    """True while some process (this one included) runs a :class:`Supervisor` on ``state_dir``."""
    path = Path(state_dir) / SERVING_DIR / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we may have taken
    return False


@dataclass
class _Child:
    proc: subprocess.Popen[bytes]
    release: str
    started: float
    healthy_since: float | None = None


class Supervisor:
    """Keeps the managed server serving ``current`` (see the module docstring).

    Args:
        cfg: the config (``serving`` section; ``paths`` for base model and state dir).

    Use :meth:`start` / :meth:`stop`, or as a context manager.

    Raises:
        HandoffFailed: on start, another supervisor already runs on this state dir.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.state_dir = cfg.paths.state_dir
        self.port = cfg.serving.port
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._child: _Child | None = None
        self._failed_release: str | None = None
        self._next_try = 0.0
        self._backoff = cfg.serving.restart_backoff_s
        self._attempt = 0
        self._last_written: tuple[Any, ...] | None = None
        self._preexec = parent_death_signal()
        #: What :meth:`start` stopped that a dead supervisor had left running (None: nothing).
        self.leftover_stopped: str | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the managed server."""
        host = self.cfg.serving.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Take the supervisor lock, pick the port (0: a free one) and start watching."""
        path = serving_dir(self.state_dir) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            state = read_server_state(self.state_dir) or {}
            raise HandoffFailed(
                f"A managed server supervisor already runs on {self.state_dir} "
                f"(pid {state.get('supervisor_pid', '?')}, {state.get('url', '?')}); stop it first"
            ) from None
        self._lock_fd = fd
        # Holding the lock, no live supervisor owns a recorded server: it is a leftover.
        self.leftover_stopped = stop_leftover_server(serving_dir(self.state_dir), self.cfg.serving.stop_grace_s)
        if self.port == 0:
            self.port = free_port(self.cfg.serving.host)
        self._write("idle", BASE_KEY, error=None)
        self._thread = threading.Thread(target=self._loop, name="nightshift-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the server (process group, SIGTERM then SIGKILL) and the watcher; release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._kill_child()
        if self._lock_fd is not None:
            self._write("stopped", BASE_KEY, error=None)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def wait(self) -> None:
        """Block until :meth:`stop` is called (``nightshift serve`` in the foreground)."""
        while not self._stop.wait(0.5):
            pass

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # a bug must not leave a server without supervision
                log.error("supervisor_step_failed", error=f"{type(exc).__name__}: {exc}")
                self._kill_child()
                self._write("failed", desired_release(self.state_dir), error=f"internal error: {exc}")
                self._stop.wait(self._backoff)
            self._stop.wait(POLL_S)

    def _step(self) -> None:
        paused = pause_requested(self.state_dir) is not None
        desired = desired_release(self.state_dir)
        child = self._child
        if child is not None and child.proc.poll() is not None:
            code = child.proc.returncode
            self._child = None
            forget_server(serving_dir(self.state_dir))
            if child.release == desired and not paused:
                error = f"the server exited with status {code}; restarting in {self._backoff:g} s (log: {self._log_path()})"
                log.warning("server_died", returncode=code, release=child.release)
                self._fail(desired, error)
            child = None
        if child is not None and (paused or child.release != desired):
            self._kill_child()
            child = None
        if paused:
            self._write("paused", desired, error=None)
            return
        if child is None:
            if desired != self._failed_release:
                self._next_try = 0.0
                self._backoff = self.cfg.serving.restart_backoff_s
            if time.monotonic() >= self._next_try:
                self._launch(desired)
            return
        if child.healthy_since is not None and time.monotonic() - child.healthy_since > STABLE_S:
            self._backoff = self.cfg.serving.restart_backoff_s

    def _fail(self, release: str, error: str) -> None:
        self._failed_release = release
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.cfg.serving.max_backoff_s)
        self._write("failed", release, error=error)

    def _launch(self, release: str) -> None:
        sv = self.cfg.serving
        self._attempt += 1
        try:
            argv = render_command(self.cfg, release, self.port)
        except HandoffFailed as exc:
            self._fail(release, str(exc))
            return
        if port_in_use(sv.host, self.port):
            self._fail(release, f"port {self.port} on {sv.host} is already in use by another process; set serving.port")
            return
        self._write("starting", release, error=None)
        log_path = self._log_path()
        with open(log_path, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            try:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env=server_env(self.state_dir), cwd=str(self.state_dir),
                    preexec_fn=self._preexec,  # SIGTERM when this process dies (Linux)
                )
            except OSError as exc:
                self._fail(release, f"cannot start the server command {argv[0]!r}: {exc.strerror or exc}")
                return
        record_server(serving_dir(self.state_dir), proc.pid, argv)
        self._child = _Child(proc=proc, release=release, started=time.monotonic())
        deadline = time.monotonic() + sv.health_timeout_s
        while not self._stop.is_set():
            if proc.poll() is not None:
                self._child = None
                forget_server(serving_dir(self.state_dir))
                self._fail(
                    release,
                    f"the server command {argv[0]!r} exited with status {proc.returncode} before it was healthy "
                    f"(log: {log_path})",
                )
                return
            if desired_release(self.state_dir) != release or pause_requested(self.state_dir):
                return  # the next step restarts it on the new target
            if check_health(self.url, sv.timeout_s) is None:
                self._child.healthy_since = time.monotonic()
                self._failed_release = None
                self._write("running", release, error=None)
                log.info("server_running", release=release or "base", url=self.url, pid=proc.pid)
                return
            if time.monotonic() > deadline:
                self._kill_child()
                self._fail(release, f"the server at {self.url} was not healthy within {sv.health_timeout_s:g} s (log: {log_path})")
                return
            self._stop.wait(0.2)

    def _kill_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.proc.poll() is None:
            stop_process_group(child.proc, self.cfg.serving.stop_grace_s)  # type: ignore[arg-type]
        elif child is not None:
            child.proc.wait()
        if child is not None:
            forget_server(serving_dir(self.state_dir))

    def _log_path(self) -> Path:
        return serving_dir(self.state_dir) / LOG_FILE

    def _write(self, state: str, release: str, *, error: str | None) -> None:
        child = self._child
        key = (state, release, error, child.proc.pid if child is not None else None)
        if key == self._last_written:
            return
        self._last_written = key
        payload = {
            "state": state,
            "release": release,
            "url": self.url,
            "port": self.port,
            "pid": child.proc.pid if child is not None and state in ("starting", "running") else None,
            "supervisor_pid": os.getpid(),
            "error": error,
            "attempt": self._attempt,
            "updated_at": time.time(),
            "log": str(self._log_path()),
        }
        path = serving_dir(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(f".tmp.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, path)
