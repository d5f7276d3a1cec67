"""The schema: migrations match the models, old schemas are refused, files are private."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from maild.store.db import make_engine
from maild.store.models import Base
from tests.conftest import Instance, make_mail
from tests.integration.postgres import Postgres


def test_migrations_build_exactly_the_models(instance: Instance) -> None:
    assert instance.cli("db", "upgrade").status == 0

    async def compare() -> list[object]:
        engine = create_async_engine(instance.url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
                )
        finally:
            await engine.dispose()

    diff = asyncio.run(compare())
    assert diff == [], "the models changed without a migration: add one under store/migrations"


def test_upgrade_is_idempotent_and_says_so(instance: Instance) -> None:
    first = instance.ok("db", "upgrade").out
    assert "upgraded from empty" in first
    assert "already at revision" in instance.ok("db", "upgrade").out


def test_an_old_schema_is_refused_with_the_command_that_fixes_it(instance: Instance) -> None:
    instance.ok("db", "upgrade")
    instance.sql("update alembic_version set version_num = '0000'")
    result = instance.cli("queue")
    assert result.status == 1
    assert "maild db upgrade" in result.err and "Traceback" not in result.err


def test_database_file_and_folder_are_private(tmp_path: Path) -> None:
    """SQLite only: the file and its folder."""
    root = tmp_path / "state"
    root.mkdir()
    instance = Instance(root)
    nested = root / "var" / "lib" / "maild"
    instance.config.write_text(
        instance.config.read_text().replace(str(instance.db), str(nested / "maild.db"))
    )
    instance.ingest(make_mail(message_id="<p@pangeo.example>"))
    assert stat.S_IMODE(nested.stat().st_mode) == 0o700
    assert stat.S_IMODE((nested / "maild.db").stat().st_mode) == 0o600


def test_the_head_constant_matches_the_migrations() -> None:
    from maild.store.db import HEAD, alembic_head

    assert alembic_head() == HEAD, "update HEAD in maild/store/db.py with the new migration"


class _Fails(Exception):
    pass


def test_postgresql_savepoints_named_by_depth_roll_back_exactly_their_own(
    postgres: Postgres,
) -> None:
    """On PostgreSQL a savepoint is named by its depth and never released (store.db).

    Siblings, a savepoint inside another, a rollback of the inner then of the
    outer one, a second transaction on the same connection: each rollback
    takes exactly what its savepoint did.
    """
    url = postgres.new_database()

    async def go() -> tuple[list[int], list[str]]:
        engine = make_engine(url)
        sent: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))

        async def insert(session: AsyncSession, n: int, fail: bool = False) -> None:
            await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            if fail:
                raise _Fails

        async def nested(session: AsyncSession, n: int, fail: bool = False) -> None:
            try:
                async with session.begin_nested():
                    await insert(session, n, fail)
            except _Fails:
                pass

        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE t (n integer)")
            async with AsyncSession(engine) as session:
                async with session.begin():
                    for n in range(5):  # a chunk's mails: the third fails alone
                        await nested(session, n, fail=n == 2)
                    try:
                        async with session.begin_nested():
                            await insert(session, 10)
                            await nested(session, 11, fail=True)
                            await insert(session, 12)
                            await nested(session, 13)
                            raise _Fails
                    except _Fails:
                        pass
                    await nested(session, 20)
                async with session.begin():  # the same connection, a new transaction
                    await nested(session, 30)
                    await nested(session, 31, fail=True)
            async with engine.connect() as conn:
                rows = [n for (n,) in await conn.execute(text("SELECT n FROM t ORDER BY n"))]
        finally:
            await engine.dispose()
        return rows, sent

    rows, sent = asyncio.run(go())
    assert rows == [0, 1, 3, 4, 20, 30]
    savepoints = {s for s in sent if "SAVEPOINT" in s}
    assert savepoints == {
        "SAVEPOINT maild_1",
        "SAVEPOINT maild_2",
        "ROLLBACK TO SAVEPOINT maild_1",
        "ROLLBACK TO SAVEPOINT maild_2",
    }
