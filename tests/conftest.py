"""Shared fixtures: a real demo workspace (tiny local model) built once per session."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import re
import shutil
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


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo workspace (model, data, suite, config) built once; never run in."""
    from daemon.demo import build_workspace

    ws = tmp_path_factory.mktemp("demo-template") / "ws"
    cache = _template_cache()
    if cache is None:
        build_workspace(ws, iters=_TEMPLATE_ITERS)
        return ws
    cache.mkdir(parents=True, exist_ok=True)
    kept = cache / _template_key()
    with open(cache / f"{kept.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same template
        if not kept.is_dir():
            build_workspace(ws, iters=_TEMPLATE_ITERS)
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
