"""Whole transactions in the store thread: what commits, what rolls back, and no deadlock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.config import load_config
from maild.service.pipeline import Pipeline
from maild.store.db import make_engine, make_sessionmaker
from maild.store.inline import StoreThread
from maild.store.models import State
from tests.conftest import Instance, make_mail

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def url(instance: Instance) -> str:
    if not instance.url.startswith("sqlite"):
        pytest.skip("the store thread is for SQLite only")
    instance.ok("db", "upgrade")
    return instance.url


async def _states(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with sessions() as session:
        return {s.key: s.value for s in (await session.scalars(select(State))).all()}


async def test_a_transaction_commits_or_rolls_back_whole_and_errors_reach_the_caller(
    url: str,
) -> None:
    engine = make_engine(url)
    store = StoreThread(url)
    try:

        async def add(sessions: async_sessionmaker[AsyncSession]) -> str:
            async with sessions() as session, session.begin():
                session.add(State(key="a", value="1", at=NOW))
            return "done"

        async def add_twice(sessions: async_sessionmaker[AsyncSession]) -> None:
            async with sessions() as session, session.begin():
                session.add(State(key="b", value="2", at=NOW))
                await session.flush()
                session.add(State(key="a", value="again", at=NOW))  # the key exists: refused

        assert await store.run(add) == "done"
        with pytest.raises(IntegrityError):
            await store.run(add_twice)
        # seen from the loop's own engine: the first whole, nothing of the second
        assert await _states(make_sessionmaker(engine)) == {"a": "1"}
    finally:
        await store.aclose()
        await engine.dispose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.run(add)


async def test_cancelling_the_caller_rolls_the_transaction_back(url: str) -> None:
    engine = make_engine(url)
    store = StoreThread(url)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:

        async def slow(sessions: async_sessionmaker[AsyncSession]) -> None:
            async with sessions() as session, session.begin():
                session.add(State(key="slow", value="x", at=NOW))
                await session.flush()
                loop.call_soon_threadsafe(started.set)
                await asyncio.sleep(30)

        task = asyncio.create_task(store.run(slow))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _states(make_sessionmaker(engine)) == {}
    finally:
        await store.aclose()
        await engine.dispose()


async def test_a_lock_held_in_the_loop_is_waited_for_not_deadlocked(url: str) -> None:
    """The store thread waits in SQLite's busy handler; the loop keeps running meanwhile."""
    engine = make_engine(url)
    store = StoreThread(url)
    try:

        async def write(sessions: async_sessionmaker[AsyncSession]) -> None:
            async with sessions() as session, session.begin():
                session.add(State(key="thread", value="x", at=NOW))

        async with make_sessionmaker(engine)() as session, session.begin():
            session.add(State(key="loop", value="y", at=NOW))
            await session.flush()  # the write lock, held by the loop's connection
            waiting = asyncio.create_task(store.run(write))
            await asyncio.sleep(0.3)  # the loop is free: this returns while the thread waits
            assert not waiting.done()
        await asyncio.wait_for(waiting, 30)
        assert await _states(make_sessionmaker(engine)) == {"loop": "y", "thread": "x"}
    finally:
        await store.aclose()
        await engine.dispose()


async def test_the_pipeline_decides_alike_with_and_without_the_store_thread(
    new_instance: object,
) -> None:
    first = make_mail(subject="Printer on fire", message_id="<p1@pangeo.example>")
    reply = make_mail(
        subject="Re: Printer on fire",
        message_id="<p2@pangeo.example>",
        in_reply_to="<p1@pangeo.example>",
        references="<p1@pangeo.example>",
    )
    mails = [first.as_bytes(), reply.as_bytes(), first.as_bytes(), b"not a mail at all"]
    results = []
    for threaded in (False, True):
        inst = new_instance()  # type: ignore[operator]
        if not inst.url.startswith("sqlite"):
            pytest.skip("the store thread is for SQLite only")
        assert inst.run("db", "upgrade").returncode == 0
        config = load_config(inst.config)
        engine = make_engine(inst.url)
        store = StoreThread(inst.url) if threaded else None
        try:
            pipeline = Pipeline(config, make_sessionmaker(engine), store=store)
            outcomes = [await pipeline.ingest(raw, f"m{i}", NOW) for i, raw in enumerate(mails)]
            dry = await pipeline.ingest(make_mail(message_id="<p3@x.example>").as_bytes(), "d", NOW,
                                        dry_run=True)  # fmt: skip
            async with make_sessionmaker(engine)() as session:
                stored = await session.scalar(text("SELECT count(*) FROM messages"))
        finally:
            if store is not None:
                await store.aclose()
            await engine.dispose()
        assert dry.action == "created"
        results.append(([(o.action, o.ticket) for o in outcomes], stored))
    assert results[0] == results[1]
    assert [a for a, _ in results[1][0]] == ["created", "appended", "duplicate", "quarantined"]


def test_only_an_sqlite_file_gets_a_store_thread() -> None:
    # an in-memory database is private to its connection: the thread's would be another one
    assert StoreThread.for_url("sqlite+aiosqlite:///:memory:") is None
    assert StoreThread.for_url("sqlite+aiosqlite:///file:x?mode=memory&uri=true") is None
    assert StoreThread.for_url("postgresql+asyncpg://maild@localhost/maild") is None
