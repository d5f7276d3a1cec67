"""``maild queue`` has two readers of one query: SQLAlchemy (every backend) and, for
SQLite, the stdlib ``sqlite3`` (``maild.store.sqlite_read``, no SQLAlchemy import).
Whatever the tickets and the filters, both must list the same tickets in the same
order with the same fields, and the command must print the same bytes."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import maild.store.sqlite_read
from maild.store.db import make_engine, make_sessionmaker, upgrade
from maild.store.models import Ticket
from maild.store.queries import queue, queue_page, ticket_json
from maild.store.serialize import QueuePage
from maild.store.sqlite_read import read_queue
from tests.conftest import Instance

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)

# text a mail can put into a ticket: non-ASCII, controls, DEL and C1, bidi overrides
_TEXT = st.text(
    st.sampled_from(
        [*"aZ #-.@", "é", "田", "\x00", "\x1b", "\n", "\x7f", "\x9b", "\u202e", '"', "\\"]
    ),
    max_size=12,
)
_NAMES = st.one_of(st.none(), st.sampled_from(["alice", "bob", "pangeo", "jupyter", "Zoë"]))
_TIMES = st.one_of(
    st.none(),
    # around NOW, to the minute or to the microsecond (stored with and without
    # a fraction), including exactly NOW: due at NOW is breached
    st.integers(-3000, 3000).map(lambda m: NOW + timedelta(minutes=m)),
    st.integers(-(10**9), 10**9).map(lambda us: NOW + timedelta(microseconds=us)),
)


@st.composite
def ticket_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for n in range(draw(st.integers(0, 25))):
        created = NOW - timedelta(minutes=draw(st.integers(0, 50_000)))
        due = draw(_TIMES)
        rows.append(
            {
                "id": n + 1,
                "subject": draw(_TEXT),
                "subject_key": "k",
                "status": draw(st.sampled_from(["new", "open", "waiting", "resolved", "closed"])),
                "type": draw(st.sampled_from([None, "incident", "change", "guidance"])),
                "priority": draw(st.sampled_from(["urgent", "high", "normal", "low", "odd"])),
                "community": draw(_NAMES),
                "requester": draw(_TEXT),
                "cc": draw(st.lists(_TEXT, max_size=3)),
                "assignee": draw(_NAMES),
                "incident_commander": draw(_NAMES),
                "links": draw(st.lists(_TEXT, max_size=2)),
                "time_spent_minutes": draw(st.integers(0, 10_000)),
                # equal created times happen (one mbox): the id decides
                "created_at": draw(st.sampled_from([created, NOW - timedelta(days=1)])),
                "updated_at": created + timedelta(microseconds=draw(st.integers(0, 10**7))),
                "last_activity_at": created,
                "message_count": draw(st.integers(0, 50)),
                "next_due_kind": draw(st.sampled_from([None, "triage", "first_response"]))
                if due is not None or draw(st.booleans())
                else None,
                "next_due_at": due,
                "follow_up_of": draw(st.one_of(st.none(), st.integers(1, n))) if n else None,
            }
        )
    return rows


_FILTERS = st.fixed_dictionaries(
    {
        "statuses": st.one_of(
            st.none(),
            st.lists(st.sampled_from(["new", "open", "waiting", "resolved", "closed"]), max_size=3),
        ),
        "types": st.one_of(
            st.none(),
            st.lists(st.sampled_from(["incident", "change", "guidance", "null"]), max_size=3),
        ),
        "community": _NAMES,
        "overdue": st.booleans(),
        "include_all": st.booleans(),
    }
)


class Store:
    """One SQLite store at the head schema whose tickets each example replaces."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{path}"
        self.engine = make_engine(self.url)
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(upgrade(self.engine))

    def fill(self, rows: list[dict[str, Any]]) -> None:
        async def go() -> None:
            async with self.engine.begin() as conn:
                await conn.execute(Ticket.__table__.delete())
                if rows:
                    await conn.execute(Ticket.__table__.insert(), rows)

        self.loop.run_until_complete(go())

    def by_sqlalchemy(
        self, now: datetime, filters: dict[str, Any], limit: int | None = None
    ) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            async with make_sessionmaker(self.engine)() as session:
                return await queue(session, now, limit=limit, **filters)

        return self.loop.run_until_complete(go())

    def page(self, now: datetime, filters: dict[str, Any], limit: int | None) -> QueuePage:
        async def go() -> QueuePage:
            async with make_sessionmaker(self.engine)() as session:
                return await queue_page(session, now, limit=limit, **filters)

        return self.loop.run_until_complete(go())

    def shown(self, now: datetime, ids: list[int]) -> list[dict[str, Any]]:
        """Each ticket as ``maild show --json`` gives it (from the ORM object), no timeline."""

        async def go() -> list[dict[str, Any]]:
            async with make_sessionmaker(self.engine)() as session:
                return [ticket_json(await session.get_one(Ticket, i), now) for i in ids]

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    made = Store(tmp_path_factory.mktemp("queue-paths") / "maild.db")
    yield made
    made.close()


def _same(fast: QueuePage | list[dict[str, Any]] | None, slow: list[dict[str, Any]]) -> None:
    assert fast is not None, "the sqlite3 reader gave up on a store at the head schema"
    if isinstance(fast, QueuePage):
        fast = fast.tickets
    # as text: 1 == True, so comparing the lists alone would miss a wrong type
    assert json.dumps(fast, ensure_ascii=False) == json.dumps(slow, ensure_ascii=False)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=ticket_rows(),
    filters=_FILTERS,
    minutes=st.integers(-3000, 3000),
    limit=st.one_of(st.none(), st.integers(0, 30)),
)
def test_both_readers_list_the_same_tickets_in_the_same_order(
    store: Store,
    rows: list[dict[str, Any]],
    filters: dict[str, Any],
    minutes: int,
    limit: int | None,
) -> None:
    store.fill(rows)
    now = NOW + timedelta(minutes=minutes)
    every = store.by_sqlalchemy(now, filters)
    slow = store.by_sqlalchemy(now, filters, limit)
    fast = read_queue(store.url, now, limit=limit, **filters)
    _same(fast, slow)
    # a limit keeps the head of the whole queue, and both count the whole of it
    assert slow == every[:limit]
    page = store.page(now, filters, limit)
    assert page.tickets == slow
    assert fast is not None and fast.total == page.total == len(every)
    # `maild show` describes each ticket as the queue does (from ORM values, not text)
    _same(store.shown(now, [t["id"] for t in slow]), slow)


def _ticket(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": n,
        "subject": f"Request {n}",
        "subject_key": "k",
        "status": "open",
        "priority": "normal",
        "requester": "rep@pangeo.example",
        "cc": [],
        "links": [],
        "time_spent_minutes": 0,
        "created_at": NOW - timedelta(days=1),
        "updated_at": NOW,
        "last_activity_at": NOW,
        "message_count": 1,
        **fields,
    }


def test_a_due_time_exactly_now_is_breached_in_both(store: Store) -> None:
    store.fill(
        [
            _ticket(1, next_due_kind="triage", next_due_at=NOW),
            _ticket(2, next_due_kind="triage", next_due_at=NOW + timedelta(microseconds=1)),
            _ticket(3, next_due_kind="triage", next_due_at=NOW - timedelta(microseconds=1)),
        ]
    )
    for filters in ({}, {"overdue": True}):
        slow = store.by_sqlalchemy(NOW, filters)
        _same(read_queue(store.url, NOW, **filters), slow)
    breached = {t["id"]: t["next_due"]["breached"] for t in store.by_sqlalchemy(NOW, {})}
    assert breached == {1: True, 2: False, 3: True}
    assert [t["id"] for t in store.by_sqlalchemy(NOW, {"overdue": True})] == [3, 1]


def _varied(seed: int, count: int) -> list[dict[str, Any]]:
    """Tickets of every kind the filters tell apart, the same ones for a seed."""
    pick = random.Random(seed)
    rows = []
    for n in range(1, count + 1):
        due = pick.choice([None, NOW + timedelta(minutes=pick.randint(-4000, 4000))])
        rows.append(
            _ticket(
                n,
                subject=pick.choice(["Hub is down", "Zoë's \x1b[31mred\u202e", "田中", "x" * 80]),
                status=pick.choice(["new", "open", "waiting", "resolved", "closed"]),
                type=pick.choice([None, "incident", "change", "guidance"]),
                priority=pick.choice(["urgent", "high", "normal", "low"]),
                community=pick.choice([None, "pangeo", "jupyter"]),
                assignee=pick.choice([None, "alice", "bob"]),
                cc=pick.choice([[], ["ops@pangeo.example", "zoë@jupyter.example"]]),
                links=pick.choice([[], ["https://example.org/pm"]]),
                created_at=NOW - timedelta(minutes=pick.randint(0, 20_000)),
                next_due_kind="first_response" if due else None,
                next_due_at=due,
                follow_up_of=pick.choice([None, 1]) if n > 1 else None,
            )
        )
    return rows


def _both_outputs(
    instance: Instance, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[str, str]:
    assert read_queue(instance.url, NOW) is not None, "the sqlite3 reader was not used"
    fast = instance.ok("queue", *args).out
    with monkeypatch.context() as patch:
        # the command as it runs on PostgreSQL: through SQLAlchemy
        patch.setattr(maild.store.sqlite_read, "read_queue", lambda *a, **k: None)
        slow = instance.ok("queue", *args).out
    return fast, slow


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("--json",),
        ("--all",),
        ("--all", "--json"),
        ("--status", "closed", "--status", "new"),
        ("--type", "null", "--type", "incident", "--json"),
        ("--community", "pangeo"),
        ("--overdue", "--now", "2026-11-26"),
        ("--overdue", "--json", "--now", "2026-11-24T12:00-06:00"),
        ("--limit", "7"),
        ("--limit", "7", "--json", "--all"),
        ("--limit", "0", "--all"),
        ("--limit", "3", "--community", "jupyter"),
    ],
)
def test_the_command_prints_the_same_bytes_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    instance = Instance(tmp_path)
    instance.ok("db", "upgrade")
    store = Store(instance.db)
    try:
        store.fill(_varied(seed=len(args), count=40))
    finally:
        store.close()
    fast, slow = _both_outputs(instance, monkeypatch, *args)
    assert fast == slow


def test_an_old_schema_is_refused_alike(
    instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance.ok("db", "upgrade")
    instance.sql("update alembic_version set version_num = '0000'")
    fast = instance.cli("queue")
    with monkeypatch.context() as patch:
        patch.setattr(maild.store.sqlite_read, "read_queue", lambda *a, **k: None)
        slow = instance.cli("queue")
    assert (fast.status, fast.err) == (slow.status, slow.err) == (1, fast.err)
    assert "maild db upgrade" in fast.err and "0000" in fast.err


def test_tables_without_a_maild_schema_are_refused_alike(instance: Instance) -> None:
    with sqlite3.connect(instance.db) as conn:
        conn.execute("create table other (x)")
    result = instance.cli("queue")
    assert result.status == 1
    assert "no maild schema yet: run `maild db upgrade`" in result.err


def test_a_missing_or_empty_file_is_left_to_the_usual_path(instance: Instance) -> None:
    """As before the fast path: the store is created with its schema, the queue is empty."""
    assert read_queue(instance.url, NOW) is None  # no file yet
    assert instance.ok("queue").out == "no tickets\n"
    assert instance.ok("queue", "--json").json() == []
    assert read_queue(instance.url, NOW) == QueuePage([], 0)  # now it answers


def test_an_unreadable_file_fails_as_before(instance: Instance) -> None:
    instance.db.write_bytes(b"not a database, but long enough to be read as one" * 100)
    result = instance.cli("queue")
    assert result.status == 1 and result.err.startswith("Error: ")
    assert "Traceback" not in result.err
