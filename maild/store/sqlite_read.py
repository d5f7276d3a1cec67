"""``maild queue`` on SQLite without SQLAlchemy: the stdlib ``sqlite3``, read-only.

Importing SQLAlchemy, the models and aiosqlite costs a short-lived command
several times what Python itself does to start (bench/README.md, "Start-up").
So for a SQLite store the queue is read here: the file opened read-only
(``file:…?mode=ro``), the schema revision checked as
:func:`maild.store.db.check_schema` does, one query, and each row through the
same :func:`maild.store.serialize.ticket_dict` as :func:`maild.store.queries.queue`.
``tests/integration/test_queue_paths.py`` keeps the two queries equal.

Whatever this cannot answer as the SQLAlchemy path would (not SQLite, no
file yet, an empty database the SQLAlchemy path would initialise, a file
SQLite cannot open read-only) it leaves to that path: :func:`read_queue`
returns None, and the caller goes the usual way, with its usual errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from maild.config import plain_sqlite
from maild.store.schema import HEAD, schema_error
from maild.store.serialize import (
    ACTIVE_STATUSES,
    PRIORITY_RANK,
    TICKET_FIELDS,
    QueuePage,
    stored_text,
    ticket_dicts,
)

__all__ = ["queue_sql", "read_queue", "sqlite_path", "total_sql"]


def sqlite_path(url: str) -> Path | None:
    """The database file of a plain SQLite URL (``maild.config.plain_sqlite``); None for
    anything else, ``:memory:`` or a ``file:`` URI."""
    plain = plain_sqlite(url)
    if plain is None:
        return None
    path = plain[1]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path)


def _where(
    now: datetime,
    *,
    statuses: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    community: str | None = None,
    overdue: bool = False,
    include_all: bool = False,
) -> tuple[str, list[Any]]:
    """The queue's filters as a ``WHERE`` clause ("" for none) and its parameters."""
    where: list[str] = []
    params: list[Any] = []

    def one_of(column: str, values: Sequence[str]) -> str:
        params.extend(values)
        return f"{column} IN ({', '.join('?' * len(values))})"

    if statuses:
        where.append(one_of("status", list(statuses)))
    elif not include_all:
        where.append(one_of("status", ACTIVE_STATUSES))
    if types:
        wanted = [t for t in types if t != "null"]
        if "null" not in types:
            where.append(one_of("type", wanted))
        elif wanted:
            where.append(f"({one_of('type', wanted)} OR type IS NULL)")
        else:
            where.append("type IS NULL")
    if community is not None:
        where.append("community = ?")
        params.append(community)
    if overdue:
        where.append("next_due_at IS NOT NULL AND next_due_at <= ?")
        params.append(stored_text(now))
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


def queue_sql(now: datetime, *, limit: int | None = None, **filters: Any) -> tuple[str, list[Any]]:
    """The SQL of :func:`maild.store.queries.queue` for SQLite, and its parameters.

    ``filters`` are that function's; ``limit`` (None: all) keeps the most urgent.
    """
    where, params = _where(now, **filters)
    rank = " ".join(f"WHEN '{name}' THEN {n}" for name, n in PRIORITY_RANK.items())
    # only constants and "?" are formatted in; every value is a parameter
    sql = (
        f"SELECT {', '.join(TICKET_FIELDS)} FROM tickets{where}"  # noqa: S608
        + " ORDER BY next_due_at IS NULL, next_due_at,"
        + f" CASE priority {rank} ELSE 2 END, created_at, id"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def total_sql(now: datetime, **filters: Any) -> tuple[str, list[Any]]:
    """How many tickets :func:`queue_sql` matches without a limit: SQL and parameters."""
    where, params = _where(now, **filters)
    return f"SELECT count(*) FROM tickets{where}", params  # noqa: S608


def _revision(conn: sqlite3.Connection) -> tuple[bool, str | None]:
    """Whether the database has any table, and its Alembic revision (None: none)."""
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite~_%' "
            "ESCAPE '~'"
        )
    }
    if "alembic_version" not in tables:
        return bool(tables), None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return True, str(row[0]) if row is not None else None


def read_queue(
    url: str, now: datetime, *, limit: int | None = None, **filters: Any
) -> QueuePage | None:
    """:func:`maild.store.queries.queue` read with ``sqlite3``, or None to go the usual way.

    ``filters`` are the keyword arguments of that function; ``limit`` (None: all)
    keeps the most urgent tickets, and only when it does leave some out is the
    total counted (as :func:`maild.store.queries.queue_page` does). Raises
    :class:`maild.store.schema.SchemaError` for a database behind this maild.
    """
    path = sqlite_path(url)
    if path is None:
        return None
    try:
        if not path.is_file():
            return None  # the usual path creates it
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30)
    except (OSError, sqlite3.Error):
        return None  # a folder we may not look into: the usual path says so
    try:
        has_tables, current = _revision(conn)
        if not has_tables:
            return None  # empty: the usual path gives it the schema
        error = schema_error(current, HEAD)
        if error is not None:
            raise error
        # one read transaction: the count sees the rows the list saw
        conn.execute("BEGIN")
        sql, params = queue_sql(now, limit=limit, **filters)
        rows = conn.execute(sql, params).fetchall()
        total = len(rows)
        if limit is not None and total >= limit:
            sql, params = total_sql(now, **filters)
            total = int(conn.execute(sql, params).fetchone()[0])
    except sqlite3.Error:
        return None  # let the usual path meet the same problem and report it
    finally:
        conn.close()
    return QueuePage(ticket_dicts(rows, now), total)
