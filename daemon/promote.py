"""The promote stage: an immutable release directory and an atomic ``current`` swap.

Layout under the state dir::

    releases/run-0007/        adapter (adapters.safetensors, adapter_config.json),
                              manifest.json, and model/ when promotion.fuse is on
    current -> releases/run-0007   (relative symlink)

A release is assembled in a temporary directory and renamed into place, then
made read-only. ``current`` is swapped by creating a symlink at a temporary
name and ``os.replace``-ing it over ``current`` (atomic on POSIX), then
fsyncing the directory. The registry's promotion row is written in the same
transaction as the swap: if the commit fails, ``current`` is put back.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.child import run_worker
from daemon.config import Config
from daemon.errors import PromotionRefused

CURRENT_LINK = "current"
RELEASES_DIR = "releases"
ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")


def release_name(run_id: int) -> str:
    """``run-0007``: one release per promoted run."""
    return f"run-{run_id:04d}"


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename/symlink inside it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_read_only(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def build_release(
    cfg: Config,
    *,
    run_id: int,
    adapter_dir: Path,
    manifest: dict[str, Any],
    work_dir: Path,
) -> Path:
    """Assemble ``releases/run-NNNN`` (adapter, manifest, optional fused model).

    Returns:
        The release directory (read-only files).

    Raises:
        PromotionRefused: the release exists already or fusing failed; nothing
            visible to the serving layer changed.
    """
    releases = cfg.paths.state_dir / RELEASES_DIR
    releases.mkdir(parents=True, exist_ok=True)
    final = releases / release_name(run_id)
    if final.exists():
        raise PromotionRefused(f"Release {final} already exists; releases are immutable.")
    tmp = releases / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in ADAPTER_FILES:
        shutil.copy2(adapter_dir / name, tmp / name)
    if cfg.promotion.fuse:
        result = run_worker(
            "daemon.worker.fuse",
            {
                "base_model": str(cfg.paths.base_model),
                "adapter_path": str(adapter_dir),
                "out_dir": str(tmp / "model"),
                "result_file": str(work_dir / "fuse_result.json"),
            },
            work_dir=work_dir,
            name="fuse",
            timeout_s=cfg.training.timeout_s,
            stop_grace_s=cfg.schedule.stop_grace_s,
        )
        if result.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PromotionRefused(f"Fusing the adapter {result.describe()}. log: {result.log_path}")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    _make_read_only(tmp)
    os.replace(tmp, final)
    fsync_dir(releases)
    return final


def current_target(state_dir: Path) -> Path | None:
    """The release ``current`` points to (resolved), or None."""
    link = state_dir / CURRENT_LINK
    if not link.is_symlink():
        return None
    return (state_dir / os.readlink(link)).resolve()


def swap_current(state_dir: Path, release_dir: Path) -> Callable[[], None]:
    """Atomically point ``<state_dir>/current`` at ``release_dir`` (relative link).

    Returns:
        A function that undoes the swap (used if the registry commit fails).
    """
    link = state_dir / CURRENT_LINK
    previous = os.readlink(link) if link.is_symlink() else None
    target = os.path.relpath(release_dir, state_dir)
    tmp = state_dir / f".{CURRENT_LINK}.tmp.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(state_dir)

    def undo() -> None:
        if previous is None:
            link.unlink(missing_ok=True)
        else:
            tmp2 = state_dir / f".{CURRENT_LINK}.undo.{os.getpid()}"
            tmp2.unlink(missing_ok=True)
            os.symlink(previous, tmp2)
            os.replace(tmp2, link)
        fsync_dir(state_dir)

    return undo
