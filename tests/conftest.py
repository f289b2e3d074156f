"""Shared fixtures: a real demo workspace (tiny local model) built once per session."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import shutdown

ROOT = Path(__file__).resolve().parent.parent
#: Files whose content decides what ``build_workspace`` writes (model, data, config).
_TEMPLATE_SOURCES = ("daemon/demo.py", "daemon/worker/make_model.py", "daemon/worker/common.py")
_TEMPLATE_ITERS = 60


def _template_cache() -> Path | None:
    """Where built demo templates are kept between test sessions on a developer machine.

    Building the tiny model takes about a minute alone and much longer when several test
    runs share the cores; outside CI the built workspace is kept in the temp dir, keyed by
    the sources that decide its content, the mlx/mlx-lm versions and the interpreter. CI (``CI`` set)
    always builds afresh.
    """
    if os.environ.get("CI"):
        return None
    return Path(os.environ.get("NIGHTSHIFT_TEST_CACHE", Path(tempfile.gettempdir()) / "nightshift-test-cache"))


def _template_key() -> str:
    h = hashlib.sha256()
    for rel in _TEMPLATE_SOURCES:
        h.update((ROOT / rel).read_bytes())
    for dist in ("mlx", "mlx-lm", "tokenizers"):
        h.update(importlib.metadata.version(dist).encode())
    h.update(str(_TEMPLATE_ITERS).encode())
    # The workspace's config names this interpreter (the demo judge command): a template built
    # by another checkout's venv would point at a python that may since have been removed.
    h.update(sys.executable.encode())
    return h.hexdigest()[:16]


class _TemplateBuild:
    """The demo template, built by a child process started as soon as collection ends.

    Building it (tokenizer, data, the tiny model's pretraining) is the suite's longest
    single step; tests that need it are moved to the end of the run
    (:func:`pytest_collection_modifyitems`) so that the build overlaps the unit tests,
    which mostly wait on their own children, servers and timeouts. A child process, not
    a thread: tests request stops through :mod:`daemon.shutdown`, which would end an
    in-process build.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None
        self.log: Path | None = None

    def start(self) -> None:
        if self.proc is not None:
            return
        cache = _template_cache()
        if cache is not None and (cache / _template_key()).is_dir():
            return
        self.dir = Path(tempfile.mkdtemp(prefix="nightshift-template-"))
        self.log = self.dir / "build.log"
        code = (
            "import sys; from pathlib import Path; from daemon.demo import build_workspace; "
            "build_workspace(Path(sys.argv[1]), iters=int(sys.argv[2]))"
        )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(self.dir / "ws"), str(_TEMPLATE_ITERS)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # a test's killpg of its own group never reaches it
            )

    def result(self) -> Path | None:
        """The built workspace, or None when no build was started; raises when the build failed."""
        if self.proc is None or self.dir is None or self.log is None:
            return None
        if self.proc.wait() != 0:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"building the demo template failed (exit {self.proc.returncode}):\n{tail}")
        return self.dir / "ws"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


_BUILD = _TemplateBuild()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that need the demo template last, and start building it now."""
    needs = [item for item in items if "demo_template" in getattr(item, "fixturenames", ())]
    if not needs:
        return
    rest = [item for item in items if "demo_template" not in getattr(item, "fixturenames", ())]
    items[:] = rest + needs
    if not config.option.collectonly:
        _BUILD.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _BUILD.stop()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo workspace (model, data, suite, config) built once; never run in."""
    from daemon.demo import build_workspace

    ws = tmp_path_factory.mktemp("demo-template") / "ws"

    def build() -> None:
        built = _BUILD.result()
        if built is None:
            build_workspace(ws, iters=_TEMPLATE_ITERS)
        else:
            shutil.copytree(built, ws, symlinks=True)

    cache = _template_cache()
    if cache is None:
        build()
        return ws
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / _template_key()
    with open(cache / f"{kept.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same template
        if not kept.is_dir():
            build()
            tmp = cache / f".{kept.name}.{os.getpid()}.tmp"
            shutil.copytree(ws, tmp, symlinks=True)
            tmp.rename(kept)
            return ws
    shutil.copytree(kept, ws, symlinks=True)
    return ws


@pytest.fixture()
def demo_workspace(demo_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the demo workspace for one test (its own state dir)."""
    ws = tmp_path / "ws"
    shutil.copytree(demo_template, ws, symlinks=True)
    return ws


@pytest.fixture()
def write_config(demo_workspace: Path) -> Callable[..., Path]:
    """Rewrite top-level scalar keys of the demo config: ``write_config(iters=500)``.

    Keys are matched as ``  key: value`` lines (the first occurrence).
    """

    def _write(**overrides: object) -> Path:
        path = demo_workspace / "nightshift.yaml"
        text = path.read_text()
        for key, value in overrides.items():
            text, n = re.subn(rf"(?m)^(\s+){key}: .*$", rf"\g<1>{key}: {value}", text, count=1)
            assert n == 1, f"no key {key} in demo config"
        path.write_text(text)
        return path

    return _write


@pytest.fixture(autouse=True)
def _reset_shutdown_flag() -> None:
    shutdown.reset()
