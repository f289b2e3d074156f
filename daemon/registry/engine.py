"""The only place that creates SQLAlchemy engines.

SQLite in WAL mode with a busy timeout; every transaction starts with
``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of failing
with "database is locked" on lock upgrade. The schema is brought to the newest
Alembic revision whenever a registry is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event

from daemon.errors import RegistryError

REGISTRY_FILENAME = "registry.sqlite"
BUSY_TIMEOUT_MS = 30_000
"""How long a connection waits for another writer before failing (milliseconds)."""

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def make_engine(db_path: Path) -> Engine:
    """An engine for ``db_path`` with WAL, busy timeout, foreign keys and BEGIN IMMEDIATE."""
    engine = create_engine(f"sqlite:///{db_path}", future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would
        # otherwise start a deferred transaction behind our back).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _alembic_config() -> AlembicConfig:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RegistryError(
            f"Alembic migrations not found at {MIGRATIONS_DIR}; install nightshift from a "
            "checkout with `pip install -e .` (make demo does this)."
        )
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade_schema(engine: Engine) -> None:
    """Apply every pending Alembic migration (a no-op when at head).

    Raises:
        RegistryError: the database is newer than this nightshift, or migrating failed.
    """
    cfg = _alembic_config()
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise RegistryError(
            f"Registry {engine.url.database} is at schema revision {current}, which this "
            "nightshift does not know; upgrade nightshift before using this state dir."
        )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
