"""The schema: migrations match the models, old schemas are refused, files are private."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from maild.store.models import Base
from tests.conftest import Instance, make_mail


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
