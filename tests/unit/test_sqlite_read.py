"""The SQLite fast path's pieces that need no store: the config's URL without
SQLAlchemy, and the queue's SQL for each filter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from maild.config import _plain_sqlite_url
from maild.store.sqlite_read import queue_sql, sqlite_path

_PATHS = st.text(st.sampled_from([*"ab/._- :@#+é田"]), max_size=20)


def _by_sqlalchemy(text: str, base_dir: Path | None) -> str:
    """What ``config._database`` computes with ``make_url`` (no password)."""
    url = make_url(text)
    database = url.database or ""
    relative = database not in ("", ":memory:") and not database.startswith(("/", "file:"))
    if url.get_backend_name() == "sqlite" and relative and base_dir is not None:
        return url.set(database=str(base_dir / database)).render_as_string(hide_password=False)
    return text


@given(
    driver=st.sampled_from(["sqlite+aiosqlite", "sqlite+pysqlite"]),
    slashes=st.sampled_from(["///", "////"]),
    path=_PATHS | st.sampled_from([":memory:", "", "file:x.db", "maild.db"]),
    base=st.sampled_from([None, Path("/etc/maild"), Path("/srv/my maild+x")]),
)
def test_a_plain_sqlite_url_comes_out_as_make_url_makes_it(
    driver: str, slashes: str, path: str, base: Path | None
) -> None:
    text = f"{driver}:{slashes}{path}"
    plain = _plain_sqlite_url(text, base)
    assert plain is not None
    assert plain == _by_sqlalchemy(text, base)
    # and the fast reader finds the same file the engine would open
    found = sqlite_path(plain)
    if found is not None:
        assert found == Path(str(make_url(plain).database))


def test_other_urls_are_left_to_sqlalchemy() -> None:
    for text in (
        "postgresql+asyncpg://maild@localhost/maild",
        "sqlite:///plain-driver.db",
        "sqlite+aiosqlite:///x.db?timeout=5",
        "sqlite+aiosqlite:///with%20quote.db",
    ):
        assert _plain_sqlite_url(text, Path("/etc/maild")) is None
    assert sqlite_path("postgresql+asyncpg://maild@localhost/maild") is None
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None


NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def test_filters_become_parameters_never_sql_text() -> None:
    sql, params = queue_sql(
        NOW,
        statuses=["open", "x' OR 1=1 --"],
        types=["null", "incident"],
        community="pangeo'; DROP TABLE tickets; --",
        overdue=True,
    )
    assert "DROP" not in sql and "OR 1=1" not in sql
    assert params == [
        "open",
        "x' OR 1=1 --",
        "incident",
        "pangeo'; DROP TABLE tickets; --",
        "2026-11-25 15:00:00.000000",
    ]
    assert "(type IN (?) OR type IS NULL)" in sql


def test_without_filters_the_queue_is_the_active_tickets() -> None:
    sql, params = queue_sql(NOW)
    assert params == ["new", "open", "waiting"]
    assert queue_sql(NOW, include_all=True)[1] == []
    assert "type IS NULL" in queue_sql(NOW, types=["null"])[0]
