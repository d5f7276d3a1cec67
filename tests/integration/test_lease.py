"""The leader lease on a real store: fencing, and no lock outliving a hung holder.

Two :class:`Lease` objects on one database stand for two daemons. Each gets
its own clock, so a test can have one of them believe it still leads while
the other has already seen the lease run out: a frozen process resumed.
Runs on SQLite, and on PostgreSQL when it is installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.service.lease import Deposed, Lease
from maild.store.db import make_engine, make_sessionmaker, upgrade
from maild.store.models import State
from tests.integration.postgres import Postgres

TTL = timedelta(seconds=2)
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/lease.db"
    else:
        server: Postgres = request.getfixturevalue("postgres")
        url = server.new_database()
    engine = make_engine(url, lease=TTL)
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def two(engine: AsyncEngine) -> tuple[Lease, Clock, Lease, Clock]:
    sessions = make_sessionmaker(engine)
    a_clock, b_clock = Clock(), Clock()
    return (
        Lease(sessions, "leader", "host:1:aaaa", TTL, clock=a_clock),
        a_clock,
        Lease(sessions, "leader", "host:2:bbbb", TTL, clock=b_clock),
        b_clock,
    )


async def count(engine: AsyncEngine, key: str) -> int:
    async with make_sessionmaker(engine)() as session:
        return int(await session.scalar(select(func.count()).where(State.key == key)) or 0)


async def write(lease: Lease, key: str, before_commit: Callable[[], object] | None = None) -> None:
    """One transaction of leader work: a row, committed through the fenced sessions.

    ``before_commit`` runs after the work began and before it is written: on
    SQLite a transaction that has written holds the database's write lock, so
    a takeover can only come before that (or after the commit).
    """
    async with lease.fenced_sessions()() as session, session.begin():
        await session.get(State, key)
        session.add(State(key=key, value="x", at=T0))
        if before_commit is not None:
            result = before_commit()
            if asyncio.iscoroutine(result):
                await result


async def test_the_holder_commits_and_a_standby_cannot(engine: AsyncEngine) -> None:
    a, _, b, _ = two(engine)
    assert await a.acquire() and a.epoch == 1
    assert not await b.acquire()
    await write(a, "by-a")
    with pytest.raises(Deposed):
        await write(b, "by-b")
    assert await count(engine, "by-a") == 1
    assert await count(engine, "by-b") == 0


async def test_a_resumed_leader_that_still_believes_it_leads_commits_nothing(
    engine: AsyncEngine,
) -> None:
    a, _, b, b_clock = two(engine)
    assert await a.acquire()

    async def frozen_past_the_lease() -> None:
        # while "a" is stopped, "b" sees the lease run out and takes the role
        b_clock.now = T0 + TTL + timedelta(seconds=1)
        assert await b.acquire() and b.epoch == 2

    # a's own clock never moved: only the store can tell it that it lost
    with pytest.raises(Deposed, match="passed to another instance"):
        await write(a, "late", before_commit=frozen_past_the_lease)
    assert await count(engine, "late") == 0
    await write(b, "new-leader")
    assert await count(engine, "new-leader") == 1


async def test_work_begun_under_an_old_epoch_fails_even_after_winning_the_role_back(
    engine: AsyncEngine,
) -> None:
    a, a_clock, b, b_clock = two(engine)
    assert await a.acquire()

    async def lose_and_win_back() -> None:
        b_clock.now = T0 + TTL + timedelta(seconds=1)
        assert await b.acquire()
        await b.release()
        a_clock.now = b_clock.now
        assert await a.acquire() and a.epoch == 3

    with pytest.raises(Deposed):
        await write(a, "stale", before_commit=lose_and_win_back)
    assert await count(engine, "stale") == 0
    await write(a, "fresh")  # new work under the new epoch is fine
    assert await count(engine, "fresh") == 1


async def test_the_server_ends_a_hung_transaction_and_frees_its_locks(
    engine: AsyncEngine,
) -> None:
    """PostgreSQL: a holder that stops mid-transaction loses it after half a lease."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to end a session")
    sessions = make_sessionmaker(engine)
    async with sessions() as session, session.begin():
        session.add(State(key="row", value="0", at=T0))

    hung = sessions()
    await hung.begin()
    row = await hung.get(State, "row", with_for_update=True)
    assert row is not None
    row.value = "hung"
    await hung.flush()  # holds the row lock, then goes quiet like a stopped process

    started = asyncio.get_running_loop().time()
    while True:
        try:
            async with sessions() as other, other.begin():
                found = await other.get(State, "row", with_for_update=True)
                assert found is not None
                found.value = "other"
            break
        except OperationalError:
            # lock_timeout: the wait is bounded, the caller tries again later
            assert asyncio.get_running_loop().time() - started < TTL.total_seconds() * 2
    waited = asyncio.get_running_loop().time() - started
    assert waited < TTL.total_seconds(), f"the lock outlived half a lease: {waited:.1f}s"

    with pytest.raises((OperationalError, InterfaceError)):
        await hung.commit()
    await hung.close()
    async with sessions() as session:
        assert (await session.get(State, "row")).value == "other"  # type: ignore[union-attr]
