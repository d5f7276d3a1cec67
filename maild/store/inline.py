"""One thread that owns an SQLite connection and runs whole transactions in it.

aiosqlite runs every driver call (cursor, execute, fetch, close, commit) in
its own thread and hands the result back through the event loop: about a
hundred thread round trips for one mail, most of an ingest's time (see
bench/README.md). :class:`StoreThread` instead runs a whole coroutine -- the
transaction for one mail -- in a thread of its own, with its own event loop
and an engine whose aiosqlite connections call SQLite right there, inline:
one round trip per mail.

Blocking that thread is harmless: it does nothing else. A lock held by
another connection (the scheduler in the daemon's loop, another process)
makes it wait in SQLite's busy handler while the daemon's loop carries on and
can finish and release that lock. Only SQLite gets this: asyncpg is async all
the way down.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Generator
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from maild.store.db import begin_explicitly, make_engine, make_sessionmaker

__all__ = ["StoreThread", "inline_engine"]

T = TypeVar("T")


class _RunNow:
    """Stands in for aiosqlite's queue to its worker thread: runs each call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # noqa: B036 -- handed to the caller, as aiosqlite does
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class _InlineConnection(aiosqlite.Connection):
    """aiosqlite's API with each call run in the calling thread, no worker thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int) -> None:
        super().__init__(connector, iter_chunk_size)
        self._tx = _RunNow()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no thread to start


class _InlineModule:
    """The slice of the ``aiosqlite`` module SQLAlchemy's dialect uses."""

    Connection = _InlineConnection

    def __getattr__(self, name: str) -> Any:
        return getattr(aiosqlite, name)

    @staticmethod
    def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> _InlineConnection:
        return _InlineConnection(lambda: sqlite3.connect(database, **kwargs), iter_chunk_size)


def inline_engine(url: str) -> AsyncEngine:
    """An engine for an ``sqlite+aiosqlite`` URL whose calls run in the using thread.

    Use it from one thread only (SQLite's connections check it): a
    :class:`StoreThread`.
    """
    engine = make_engine(url, module=AsyncAdapt_aiosqlite_dbapi(_InlineModule(), sqlite3))  # type: ignore[arg-type]
    # a transaction holds the write lock from its start: several mails can go
    # in one, each in a SAVEPOINT (maild.service.batch)
    begin_explicitly(engine, "BEGIN IMMEDIATE")
    return engine


class StoreThread:
    """A thread with its own event loop and inline SQLite engine, for whole transactions.

    ``await store.run(fn)`` runs ``fn(sessions)`` there and returns its result
    (or raises its exception) in the caller's loop. Cancelling the caller
    cancels the coroutine in the thread, which rolls its transaction back.
    Call :meth:`aclose` when done.
    """

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="maild-store", daemon=True
        )
        self._thread.start()
        self.engine = inline_engine(url)
        self.sessions = make_sessionmaker(self.engine)

    @classmethod
    def for_url(cls, url: str) -> StoreThread | None:
        """A store thread for an SQLite file's URL; None for any other store.

        An in-memory database is private to its connection: the thread's own
        would be another database, so it gets None too.
        """
        if not url.startswith("sqlite+aiosqlite:") or ":memory:" in url or "mode=memory" in url:
            return None
        return cls(url)

    async def run(
        self, fn: Callable[[async_sessionmaker[AsyncSession]], Coroutine[Any, Any, T]]
    ) -> T:
        if not self._thread.is_alive():
            raise RuntimeError("the store thread is closed")
        future = asyncio.run_coroutine_threadsafe(fn(self.sessions), self._loop)
        return await asyncio.wrap_future(future)

    async def aclose(self) -> None:
        """Close the engine's connections (in the thread) and end the thread."""
        if not self._thread.is_alive():
            return
        try:
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self.engine.dispose(), self._loop)
            )
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()
