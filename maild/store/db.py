"""Engine, sessions and schema management.

SQLite gets WAL mode and a busy timeout so the daemon and the CLI can use the
same file at once. The schema belongs to Alembic: :func:`upgrade` applies the
migrations, :func:`check_schema` refuses a database that is behind the code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

__all__ = [
    "AsyncSession",
    "SchemaError",
    "check_schema",
    "make_engine",
    "make_sessionmaker",
    "prepare",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration. Checked against Alembic by a test; kept here so that
# every CLI call can check the schema without importing Alembic (a fifth of
# a second).
HEAD = "0002"


class SchemaError(RuntimeError):
    """The database schema is missing or older than this version of maild."""


def make_engine(url: str, **options: Any) -> AsyncEngine:
    """An async engine for ``url``; SQLite files get WAL, foreign keys and a busy timeout.

    ``options`` go to SQLAlchemy's ``create_async_engine`` (``maild.store.inline``
    passes its own driver module).
    """
    kwargs: dict[str, Any] = dict(options)
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes (kill -9);
            # only a power loss can drop the last commits.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def _ensure_sqlite_dir(url: str) -> None:
    """Create the database's folder (0700) and file (0600): mail is private.

    SQLite gives its -wal and -shm files the database file's mode, so creating
    the file ourselves covers those too.
    """
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:" and not path.startswith("file:"):
        db = Path(path.split("?", 1)[0])
        if not db.parent.exists():
            db.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        if not db.exists():
            db.touch(mode=0o600)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_head() -> str | None:
    """The head revision as Alembic sees it in the migrations folder."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def head_revision() -> str:
    return HEAD


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row is not None else None


def _upgrade_sync(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str]:
    """Apply all migrations. Returns (revision before, revision after)."""
    async with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction unless one is open: a
            # crash halfway would leave a half-built schema nothing can repair
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        before = await conn.run_sync(_current)
        await conn.run_sync(_upgrade_sync)
        after = await conn.run_sync(_current)
    return before, after or head_revision()


async def check_schema(engine: AsyncEngine) -> None:
    """Raise :class:`SchemaError` unless the database is at the code's head revision."""
    async with engine.connect() as conn:
        current = await conn.run_sync(_current)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaError("the database has no maild schema yet: run `maild db upgrade`")
    raise SchemaError(
        f"the database schema is at revision {current}, this maild needs {head}: "
        "run `maild db upgrade`"
    )


async def prepare(engine: AsyncEngine) -> None:
    """Make a brand-new, empty database usable; refuse an outdated one.

    An empty database (no tables at all) is initialised at once: there is
    nothing to migrate and a newcomer should not need an extra step. A database
    with an older schema is never migrated behind the operator's back.
    """
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
    if not tables:
        log.info("initialising an empty database with the maild schema")
        await upgrade(engine)
        return
    await check_schema(engine)
