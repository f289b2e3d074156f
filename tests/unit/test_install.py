"""Packaging: the Alembic migrations ship inside the package and are found through it."""

from __future__ import annotations

from pathlib import Path

import daemon
from daemon.registry.engine import migrations_dir

REPO = Path(__file__).resolve().parents[2]


def test_migrations_are_found_inside_the_package() -> None:
    """`pip install .` failed with "Alembic migrations not found": they lived outside the package."""
    path = migrations_dir()
    assert path.is_relative_to(Path(daemon.__file__).resolve().parent)
    assert (path / "env.py").is_file() and list((path / "versions").glob("0001_*.py"))


def test_no_migrations_outside_the_package() -> None:
    """A migration added at the old top-level `migrations/` would not ship: move it to daemon/migrations/versions/."""
    assert not (REPO / "migrations").exists(), (
        "migrations/ moved to daemon/migrations/: move new revisions into daemon/migrations/versions/"
    )
