"""The only place that creates SQLAlchemy engines.

SQLite in WAL mode with a busy timeout. A write transaction starts with
``BEGIN IMMEDIATE`` so two writers queue on the busy timeout instead of failing
with "database is locked" on lock upgrade; a read transaction starts with a
plain (deferred) ``BEGIN`` on an engine of its own, so ``status`` and
``history`` read a consistent snapshot while a night writes (WAL readers never
wait for the writer). The schema is brought to the newest Alembic revision
whenever a registry is opened. :func:`describe_db_error` turns SQLite's errors
into one sentence that says what to do.
"""

from __future__ import annotations

from importlib import resources
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

MIGRATIONS_PACKAGE = "daemon.migrations"
"""The Alembic script directory ships inside the package (env.py, versions/), so a
wheel or a non-editable install finds it wherever it is installed."""


def make_engine(db_path: Path, *, read_only: bool = False) -> Engine:
    """An engine for ``db_path`` with WAL, busy timeout and foreign keys.

    Args:
        read_only: begin deferred transactions (``BEGIN``) and refuse writes
            (``PRAGMA query_only``); else every transaction is ``BEGIN IMMEDIATE``.
    """
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
        if read_only:
            cur.execute("PRAGMA query_only=ON")
        cur.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    return engine


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's "database or disk is full" and ``OSError(ENOSPC)``, wrapped or not."""
    import errno

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(cur).lower()
        if "database or disk is full" in text or "no space left" in text:
            return True
        cur = getattr(cur, "orig", None) or cur.__cause__ or cur.__context__
    return False


def describe_db_error(db_path: Path, exc: BaseException) -> str:
    """One sentence for an SQLite error on ``db_path``: what happened and what to do.

    Covers a locked database (another process held it past the busy timeout), a
    read-only file or directory, a full disk, and a corrupt or non-SQLite file.
    """
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    low = text.lower()
    where = Path(db_path).parent
    if is_disk_full(exc):
        return (
            f"The disk holding the registry {db_path} is full ({text}); free space (old run "
            f"directories under {where / 'runs'}) and run again."
        )
    if "locked" in low or "busy" in low:
        return (
            f"The registry {db_path} is locked by another process (waited "
            f"{BUSY_TIMEOUT_MS // 1000} s): find it with `fuser {db_path}`, let it finish or stop "
            "it, then run again."
        )
    if "readonly" in low or "read-only" in low or "read only" in low:
        return (
            f"The registry {db_path} cannot be written ({text}): make the state dir and its "
            f"files writable by this user (chmod -R u+w {where}) or set paths.state_dir elsewhere."
        )
    if "unable to open" in low:
        return (
            f"Cannot open the registry {db_path} ({text}): check that {where} exists and is "
            "readable and writable by this user, or set paths.state_dir elsewhere."
        )
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return (
            f"The registry {db_path} is corrupt ({text}). Move it aside (mv {db_path} "
            f"{db_path}.corrupt) and nightshift starts a new one, or restore it from a backup."
        )
    if "disk i/o" in low:
        return (
            f"Disk I/O error on the registry {db_path} ({text}): check free space and the disk, "
            "then run again."
        )
    return f"Registry {db_path}: {type(orig).__name__}: {text}. Check the state dir and run again."


def migrations_dir() -> Path:
    """The directory of the Alembic environment, found through the installed package.

    Raises:
        RegistryError: the package was installed without its migrations (a broken build).
    """
    path = Path(str(resources.files(MIGRATIONS_PACKAGE)))
    if not (path / "env.py").is_file():
        raise RegistryError(
            f"Alembic migrations not found at {path}: this nightshift install is incomplete; "
            "reinstall it (`pip install --force-reinstall nightshift`, or `pip install .` from a checkout)."
        )
    return path


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def upgrade_schema(engine: Engine) -> None:
    """Apply every pending Alembic migration (a no-op when at head).

    Raises:
        RegistryError: the database is newer than this nightshift, or migrating failed.
    """
    cfg = _alembic_config()
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    # Read the revision in a deferred transaction: a night writing must not block `status`.
    reader = make_engine(Path(str(engine.url.database)), read_only=True)
    try:
        with reader.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        reader.dispose()
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
