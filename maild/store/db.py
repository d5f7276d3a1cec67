"""Engine, sessions and schema management.

SQLite gets WAL mode and a busy timeout so the daemon and the CLI can use the
same file at once. The schema belongs to Alembic: :func:`upgrade` applies the
migrations, :func:`check_schema` refuses a database that is behind the code.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from maild.store.schema import HEAD as HEAD
from maild.store.schema import SchemaError as SchemaError
from maild.store.schema import schema_error

__all__ = [
    "AsyncSession",
    "SchemaError",
    "begin_explicitly",
    "check_schema",
    "make_engine",
    "make_sessionmaker",
    "prepare",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# HEAD, the newest migration, is set in maild/store/schema.py (no SQLAlchemy
# there, so `maild queue` checks the schema without it)

# PostgreSQL errors that say "not now" rather than "never": a lock wait that
# timed out (55P03), a session the server ended (25P03 idle in a transaction,
# class 08 connection gone, class 57 cancelled or shut down), a serialisation
# failure or deadlock (class 40), a server out of resources (class 53). asyncpg
# reports them as a bare DBAPIError; they are raised as OperationalError, which
# every caller already treats as "the store is unavailable, leave the work for
# later" (never as a reason to quarantine a mail).
_TRANSIENT_SQLSTATES = frozenset({"55P03", "25P03"})
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57"})
# the session is gone: its connection must not go back to the pool
_ENDED_SQLSTATES = frozenset({"25P03", "57P01", "57P02", "57P03"})


def session_settings(hold: timedelta) -> dict[str, str]:
    """PostgreSQL settings for a daemon whose leader lease is ``hold`` long.

    A frozen (SIGSTOP) or hung instance must not keep its locks longer than
    the others wait for its lease: the server ends a transaction left idle for
    half a lease, which releases its row locks, and no statement waits for a
    lock longer than a quarter of one (the caller retries later instead).
    """
    ms = int(hold.total_seconds() * 1000)
    return {
        "lock_timeout": f"{max(ms // 4, 200)}ms",
        "idle_in_transaction_session_timeout": f"{max(ms // 2, 500)}ms",
    }


def make_engine(url: str, *, lease: timedelta | None = None, **options: Any) -> AsyncEngine:
    """An async engine for ``url``; SQLite files get WAL, foreign keys and a busy timeout.

    With ``lease`` (the daemon), PostgreSQL sessions get :func:`session_settings`.
    Other ``options`` go to SQLAlchemy's ``create_async_engine``
    (``maild.store.inline`` passes its own driver module).
    """
    kwargs: dict[str, Any] = dict(options)
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        kwargs["connect_args"] = {"timeout": 30}
    elif lease is not None and url.startswith("postgresql+asyncpg"):
        kwargs["connect_args"] = {"server_settings": session_settings(lease)}
    engine = create_async_engine(url, **kwargs)
    if engine.dialect.name == "postgresql":
        _savepoints_by_depth(engine)

        @event.listens_for(engine.sync_engine, "handle_error")
        def _transient(ctx: ExceptionContext) -> BaseException | None:
            original = ctx.original_exception
            # asyncpg's "cannot switch to state N; another operation is in
            # progress": a connection the server ended under a stopped process
            # comes back in a state no statement can use any more
            state = str(getattr(original, "sqlstate", None) or "")
            ended = (
                type(original).__name__ == "InternalClientError"
                or state in _ENDED_SQLSTATES
                or state.startswith("08")
            )
            if ended:
                ctx.is_disconnect = True
            transient = ended or state in _TRANSIENT_SQLSTATES or state[:2] in _TRANSIENT_CLASSES
            if transient and not isinstance(ctx.sqlalchemy_exception, OperationalError):
                return OperationalError(ctx.statement, ctx.parameters, original)
            return None

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


_SAVEPOINTS = "maild_savepoints"  # in a connection's info: the savepoints open, oldest first


def _savepoints_by_depth(engine: AsyncEngine) -> None:
    """PostgreSQL savepoints named by their depth, and never released.

    SQLAlchemy names every savepoint anew (``sa_savepoint_1``, ``_2``, ...);
    asyncpg prepares each statement text it has not seen, a round trip, and
    its cache of 100 texts never sees one of those again. Named ``maild_1``,
    ``maild_2``, ... by how deep they are, the texts repeat and stay prepared.

    PostgreSQL keeps a savepoint that has the name of an older one and
    ROLLBACK TO acts on the newest of that name, destroying every savepoint
    opened after it. So ``maild_N`` always means the open savepoint at depth
    N (any other of that name is older: closed as SQLAlchemy sees it), and a
    RELEASE can be left out: a released savepoint only joins its parent,
    which the commit (or a rollback to an outer savepoint) does all the same.
    That saves a round trip a mail of a chunk; the subtransactions stay
    stacked until the commit (~100 a chunk, a few kB each on the server).
    """
    dialect = engine.dialect

    def opened(connection: Connection) -> list[str]:
        # SQLAlchemy's names of the savepoints open on this connection, oldest first
        names: list[str] = connection.info.setdefault(_SAVEPOINTS, [])
        return names

    def do_savepoint(connection: Connection, name: str) -> None:
        names = opened(connection)
        names.append(name)
        connection.exec_driver_sql(f"SAVEPOINT maild_{len(names)}")

    def do_rollback_to_savepoint(connection: Connection, name: str) -> None:
        names = opened(connection)
        if name not in names:  # not one of ours: as SQLAlchemy named it
            connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {name}")
            return
        depth = names.index(name) + 1
        del names[depth - 1 :]
        connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT maild_{depth}")

    def do_release_savepoint(connection: Connection, name: str) -> None:
        names = opened(connection)
        if name not in names:
            connection.exec_driver_sql(f"RELEASE SAVEPOINT {name}")
            return
        del names[names.index(name) :]  # closed; PostgreSQL keeps it until the commit

    setattr(dialect, "do_savepoint", do_savepoint)  # noqa: B010 -- this engine's dialect only
    setattr(dialect, "do_rollback_to_savepoint", do_rollback_to_savepoint)  # noqa: B010
    setattr(dialect, "do_release_savepoint", do_release_savepoint)  # noqa: B010

    @event.listens_for(engine.sync_engine, "begin")
    def _forget(conn: Connection) -> None:
        # a transaction that ended with savepoints open took them along
        conn.info.pop(_SAVEPOINTS, None)


def begin_explicitly(engine: AsyncEngine, statement: str = "BEGIN") -> None:
    """Make an SQLite engine begin each transaction itself, with ``statement``.

    pysqlite begins a transaction only at the first write, so a first SAVEPOINT
    would start the real transaction (and its RELEASE commit it). With this,
    savepoints nest inside the transaction SQLAlchemy began. ``BEGIN
    IMMEDIATE`` also takes the write lock at once (waiting in the busy
    handler), so a reader cannot find its snapshot stale when it first writes.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _no_autobegin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(statement)


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
    error = schema_error(current, head_revision())
    if error is not None:
        raise error


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
