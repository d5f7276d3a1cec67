"""New outbox rows wake the sender of every running instance, whoever queued them.

On PostgreSQL a trigger (migration 0002) NOTIFYs ``maild_outbox`` in the
transaction that inserts outbox rows or queues one again; each daemon LISTENs
on a connection of its own and starts a sending pass when it fires. The
notification is sent at the commit, so the rows are visible when it arrives.
Should the listening connection drop, it is opened again and the sender woken
once, for anything queued meanwhile.

SQLite has no NOTIFY: the daemon looks at the outbox once a second with one
indexed query (the ids of the queued rows) and wakes the sender when one
appeared. That is how mail queued by the CLI (``maild
resolve``...) goes out within a second or two.

Either way the sender still looks by itself every minute, so a missed wake-up
only delays mail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.core.backoff import Backoff
from maild.logs import describe
from maild.store.models import Outbox

__all__ = ["CHANNEL", "watch_outbox"]

log = logging.getLogger(__name__)

CHANNEL = "maild_outbox"
#: SQLite: how often the outbox is looked at.
POLL_SECONDS = 1.0
#: The store unreachable: look again after 1 s, 2 s ... at most half a minute.
RETRY = Backoff(base=1.0, cap=30.0)
#: SQLite: queued rows compared between looks (a backlog beyond waits for the minute's pass)
_POLL_ROWS = 2000


async def watch_outbox(
    engine: AsyncEngine,
    wake: Callable[[], None],
    stop: asyncio.Event,
    *,
    poll: float = POLL_SECONDS,
) -> None:
    """Call ``wake()`` whenever mail is queued, until ``stop`` is set."""
    watch = _listen if engine.dialect.name == "postgresql" else _poll
    failures = 0
    while not stop.is_set():
        try:
            await watch(engine, wake, stop, poll)
            failures = 0
        except Exception as exc:  # the driver's own errors too: this is only a shortcut
            log.warning("outbox wake-ups paused, store unavailable: %s", describe(exc))
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY.delay(failures))


async def _listen(
    engine: AsyncEngine, wake: Callable[[], None], stop: asyncio.Event, poll: float
) -> None:
    """LISTEN until stop or until the connection is lost."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection  # an asyncpg Connection
        lost = asyncio.Event()

        def notified(*_args: object) -> None:
            wake()

        def closed(*_args: object) -> None:
            lost.set()

        try:
            driver.add_termination_listener(closed)
            await driver.add_listener(CHANNEL, notified)
            wake()  # whatever was queued while nobody listened
            while not stop.is_set() and not lost.is_set() and not driver.is_closed():
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
                try:
                    # the termination callback is the news; the timeout a safety net
                    await asyncio.wait(waiters, timeout=10, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in waiters:
                        waiter.cancel()
            if not driver.is_closed():
                await driver.remove_listener(CHANNEL, notified)
        finally:
            # never hand a connection with a listener back to the pool
            await conn.invalidate()
    if lost.is_set() and not stop.is_set():
        raise OSError("the LISTEN connection was closed")


async def _poll(
    engine: AsyncEngine, wake: Callable[[], None], stop: asyncio.Event, poll: float
) -> None:
    """Look at the outbox every ``poll`` seconds; wake when a row is newly queued.

    The queued rows' ids, not their number: a row sent and another queued
    again between two looks leave the count as it was.
    """
    query = (
        select(Outbox.id)
        .where(Outbox.status == "queued")
        .order_by(Outbox.id.desc())
        .limit(_POLL_ROWS)
    )
    last: set[int] | None = None
    while not stop.is_set():
        async with engine.connect() as conn:
            seen = set((await conn.scalars(query)).all())
        if last is not None and seen - last:
            wake()
        last = seen
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll)
