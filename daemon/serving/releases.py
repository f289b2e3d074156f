"""Releases and retention: ``nightshift releases`` and ``nightshift gc``.

Each ``releases/run-NNNN`` has a status:

- ``current``: the registry's champion (``current`` points at it);
- ``previous``: the champion before it (the default ``nightshift rollback`` target);
- ``kept``: among the newest ``retention.keep_releases`` promoted releases;
- ``old``: promoted, older than those (gc removes it);
- ``orphan``: named by no promotion row (a night stopped before it promoted; gc removes it).

Retention keeps the newest ``retention.keep_releases`` releases and never the
current or previous champion; it also removes intermediate training
checkpoints (mlx-lm's ``NNNNNNN_adapters.safetensors`` in ``runs/NNNN/adapter``)
of finished runs older than ``retention.checkpoint_max_age_days``. The final
adapter of every run stays (the registry points at it).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.registry import Registry, RunStatus

#: mlx-lm's trainer saves a checkpoint every ``steps_per_save`` as ``{iteration:07d}_adapters.safetensors``.
CHECKPOINT_RE = re.compile(r"^\d+_adapters\.safetensors$")
RELEASE_RE = re.compile(r"^run-(\d+)$")
DAY_S = 86_400.0


@dataclass(frozen=True)
class ReleaseInfo:
    """One release directory.

    Attributes:
        size_bytes: total size of its files (bytes).
        created: modification time (seconds since the epoch).
    """

    name: str
    path: Path
    run_id: int | None
    status: str
    size_bytes: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name, "path": str(self.path), "run_id": self.run_id, "status": self.status,
            "size_bytes": self.size_bytes, "created": datetime.fromtimestamp(self.created, UTC).isoformat(timespec="seconds"),
        }


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def champion_releases(registry: Registry) -> tuple[str | None, str | None]:
    """Names of the current and previous champion's releases (None for the base model / none)."""
    seen: list[str] = []
    for promo in reversed(registry.promotions()):
        name = Path(promo.release_path).name if promo.release_path else ""
        if not seen or name != seen[-1]:
            seen.append(name)
        if len(seen) == 2:
            break
    current = seen[0] or None if seen else None
    previous = seen[1] or None if len(seen) > 1 else None
    return current, previous


def list_releases(cfg: Config, registry: Registry) -> list[ReleaseInfo]:
    """Every release directory, newest run first, with its status (see the module docstring)."""
    releases = cfg.paths.state_dir / "releases"
    if not releases.is_dir():
        return []
    current, previous = champion_releases(registry)
    named = {Path(p.release_path).name for p in registry.promotions() if p.release_path}
    dirs = []
    for entry in releases.iterdir():
        m = RELEASE_RE.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink():
            dirs.append((int(m.group(1)), entry))
    dirs.sort(reverse=True)
    newest = {p.name for _, p in [d for d in dirs if d[1].name in named][: cfg.retention.keep_releases]}
    out = []
    for run_id, path in dirs:
        if path.name == current:
            status = "current"
        elif path.name == previous:
            status = "previous"
        elif path.name not in named:
            status = "orphan"
        else:
            status = "kept" if path.name in newest else "old"
        out.append(ReleaseInfo(path.name, path, run_id, status, _size(path), path.stat().st_mtime))
    return out


@dataclass(frozen=True)
class GcPlan:
    """What :func:`apply_gc` removes: release directories and checkpoint files, with the bytes freed."""

    releases: list[Path]
    checkpoints: list[Path]
    bytes_freed: int


def plan_gc(cfg: Config, registry: Registry, *, now: float | None = None) -> GcPlan:
    """Decide what retention removes (nothing is touched).

    Args:
        now: seconds since the epoch (default: the current time).
    """
    now = time.time() if now is None else now
    releases = [r.path for r in list_releases(cfg, registry) if r.status in ("old", "orphan")]
    checkpoints: list[Path] = []
    max_age_s = cfg.retention.checkpoint_max_age_days * DAY_S
    for run in registry.runs(limit=100_000):
        if run.run_dir is None or not RunStatus(run.status).is_final or run.finished_at is None:
            continue
        if now - run.finished_at.timestamp() < max_age_s:
            continue
        adapter = Path(run.run_dir) / "adapter"
        if adapter.is_dir():
            checkpoints += sorted(p for p in adapter.iterdir() if CHECKPOINT_RE.match(p.name))
    size = sum(_size(p) for p in releases) + sum(p.stat().st_size for p in checkpoints)
    return GcPlan(releases=releases, checkpoints=checkpoints, bytes_freed=size)


def apply_gc(plan: GcPlan) -> None:
    """Remove what :func:`plan_gc` listed.

    Raises:
        OSError: a file could not be removed (what was removed before stays removed).
    """
    for path in plan.releases:
        shutil.rmtree(path)
    for path in plan.checkpoints:
        path.unlink(missing_ok=True)
