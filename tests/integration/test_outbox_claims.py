"""Burst claims: a sender frozen mid-burst, two senders at once, a slow relay and a stuck one.

Real aiosmtpd sink, real SQLite file or PostgreSQL (``MAILD_TEST_DB=postgres``).
What a user notices is the sink: every queued mail arrives exactly once (by
Message-ID), none is lost, whichever sender sends it.

A frozen sender is a sender whose whole event loop stops (its sends and its
claim renewals alike), as under SIGSTOP: sender A runs on its own loop in its
own thread, and a hook blocks that thread at a chosen point until the test
thaws it. The other sender (B) runs on the test's loop beside the sink.
"""

from __future__ import annotations

import asyncio
import email
import logging
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from maild.mail.outbox import BATCH_SIZE, OutboxSender
from maild.store.db import make_engine, make_sessionmaker, upgrade
from maild.store.models import Outbox
from tests.integration import smtp_sink as sink_mod
from tests.integration.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

smtp_sink = sink_mod.smtp_sink

#: Short claims, so a freeze outlives them within a few seconds.
CLAIM_FOR = timedelta(seconds=4)
#: Generous bounds for a loaded machine; they only keep a broken run from hanging.
PATIENCE = 60.0


@pytest.fixture
async def store_url(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A migrated, empty store on the backend under test."""
    if os.environ.get("MAILD_TEST_DB") == "postgres":
        url = str(request.getfixturevalue("postgres").new_database())
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/outbox.db"
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    yield url


def raw_mail(n: int) -> bytes:
    return (
        "From: Example Support <support@example.org>\r\n"
        f"To: Rep {n} <rep{n}@pangeo.example>\r\n"
        f"Subject: [support #{n}] Hub is down\r\n"
        f"Message-ID: <claims-{n}@example.org>\r\n"
        "\r\n"
        f"Mail number {n}.\r\n"
    ).encode()


async def queue_many(url: str, n: int) -> set[str]:
    """``n`` due rows; returns their Message-IDs."""
    now = datetime.now(UTC)
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            session.add_all(
                Outbox(
                    template="reply",
                    mail_from="support@example.org",
                    rcpt_tos=[f"rep{i}@pangeo.example"],
                    primary_rcpt=f"rep{i}@pangeo.example",
                    raw=raw_mail(i),
                    created_at=now,
                    next_attempt_at=now,
                )
                for i in range(n)
            )
    finally:
        await engine.dispose()
    return {f"claims-{i}@example.org" for i in range(n)}


async def statuses(url: str) -> Counter[str]:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(Outbox.status, func.count()).group_by(Outbox.status)
            )
            return Counter({status: count for status, count in rows.all()})
    finally:
        await engine.dispose()


def at_sink(sink: SmtpSink) -> Counter[str]:
    """How often each Message-ID reached the sink."""
    return Counter(
        str(email.message_from_bytes(r.content, policy=policy.default)["Message-ID"]).strip("<>")
        for r in sink.received
    )


class FrozenSender:
    """Sender A on its own loop and thread; ``freeze_when`` blocks that thread until thawed.

    ``freeze_when(sender)`` installs the hook that calls :meth:`freeze` from A's
    thread at the chosen point; the hook runs inside A's event loop, so A's
    sends and renewals stop together.
    """

    def __init__(self, url: str, sink: SmtpSink, freeze_when: Callable[[FrozenSender], None]):
        self.url = url
        self.config = sink.smtp_config()
        self.freeze_when = freeze_when
        self.frozen = threading.Event()
        self.thawed = threading.Event()
        self.thread: int | None = None
        self.engine: AsyncEngine | None = None
        self.uninstall: Callable[[], None] = lambda: None

    def freeze(self) -> None:
        if self.frozen.is_set():
            return
        self.frozen.set()
        assert self.thawed.wait(PATIENCE), "never thawed"

    def send_due(self) -> int:
        """One pass of sender A, on a loop of its own (call it in a thread)."""
        self.thread = threading.get_ident()

        async def go() -> int:
            self.engine = make_engine(self.url)
            try:
                # connected before the pass: a slow first connection on a loaded
                # machine must not eat the claims' lifetime before the freeze
                async with self.engine.connect():
                    pass
                self.freeze_when(self)
                sender = OutboxSender(
                    self.config, make_sessionmaker(self.engine), timeout=30.0, claim_for=CLAIM_FOR
                )
                return await sender.send_due()
            finally:
                await self.engine.dispose()

        return asyncio.run(go())


def after_sends(count: int) -> Callable[[FrozenSender], None]:
    """Freeze A right after its ``count``-th mail is sent and recorded (committed).

    The hook is a logger filter on the line that says so: a filter runs
    without the logging locks that a handler holds, so B can still log.
    """

    def install(a: FrozenSender) -> None:
        assert logging.getLogger("maild.mail.outbox").isEnabledFor(logging.INFO)
        sent = 0

        def hook(record: logging.LogRecord) -> bool:
            nonlocal sent
            if record.thread == a.thread and " sent to " in record.getMessage():
                sent += 1
                if sent == count:
                    a.freeze()
            return True

        logger = logging.getLogger("maild.mail.outbox")
        logger.addFilter(hook)
        a.uninstall = lambda: logger.removeFilter(hook)

    return install


def reading_its_mail(a: FrozenSender) -> None:
    """Freeze A as it starts reading the mail of the burst it claimed.

    Whatever A holds at that moment stays held while it is frozen: its claims,
    and any lock a transaction still open would keep (none may be left open,
    or B could not take the rows over).
    """
    assert a.engine is not None

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "outbox.raw" in statement:
            a.freeze()

    event.listen(a.engine.sync_engine, "before_cursor_execute", before)


@pytest.mark.parametrize(
    ("freeze_when", "sent_by_a"),
    [(after_sends(3), 3), (reading_its_mail, 0)],
    ids=["after-3-sends", "reading-its-mail"],
)
async def test_a_sender_frozen_mid_burst_sends_nothing_the_other_sent(
    store_url: str,
    smtp_sink: SmtpSink,
    caplog: pytest.LogCaptureFixture,
    freeze_when: Callable[[FrozenSender], None],
    sent_by_a: int,
) -> None:
    caplog.set_level(logging.INFO, logger="maild.mail.outbox")
    mails = 12  # one burst: A claims them all
    expected = await queue_many(store_url, mails)
    a = FrozenSender(store_url, smtp_sink, freeze_when)
    a_pass = asyncio.ensure_future(asyncio.to_thread(a.send_due))
    b_engine = make_engine(store_url)
    stop = asyncio.Event()
    b_task: asyncio.Task[None] | None = None
    try:
        assert await asyncio.to_thread(a.frozen.wait, PATIENCE), "A never reached the freeze"
        assert len(smtp_sink.received) == sent_by_a
        # A is frozen with the rest of its burst claimed; B takes it over once
        # A's claims have run out, and sends it all while A stays frozen
        b = OutboxSender(
            smtp_sink.smtp_config(),
            make_sessionmaker(b_engine),
            timeout=30.0,
            claim_for=CLAIM_FOR,
            instance="sender-b",
        )
        b_task = asyncio.create_task(b.run(stop))
        await smtp_sink.wait_for(mails, timeout=PATIENCE)
        stop.set()  # B records the mail in flight, then stops
        await b_task
        assert await statuses(store_url) == Counter(sent=mails)

        # A wakes long past its claims: it must send nothing of what B sent
        a.thawed.set()
        async with asyncio.timeout(PATIENCE):
            handled_by_a = await a_pass
    finally:
        a.thawed.set()
        stop.set()
        if b_task is not None:
            await asyncio.wait([b_task], timeout=PATIENCE)
        await asyncio.wait([a_pass], timeout=PATIENCE)
        a.uninstall()
        await b_engine.dispose()

    counts = at_sink(smtp_sink)
    assert set(counts) == expected, "a mail was lost"
    assert [mid for mid, n in counts.items() if n > 1] == [], "a mail was sent twice"
    assert await statuses(store_url) == Counter(sent=mails)
    assert handled_by_a == sent_by_a
    if sent_by_a:
        a_said = [
            r.getMessage() for r in caplog.records if r.thread == a.thread and r.levelno >= 30
        ]
        assert a_said == ["outbox: our claims ran short; the burst stops here"], a_said


async def test_two_senders_claiming_at_once_send_every_mail_once(
    store_url: str, smtp_sink: SmtpSink
) -> None:
    mails = 2 * BATCH_SIZE + 30
    expected = await queue_many(store_url, mails)
    # an engine each, as two instances have: their claims race in the store
    engines = [make_engine(store_url) for _ in range(2)]
    try:
        outboxes = [
            OutboxSender(
                smtp_sink.smtp_config(),
                make_sessionmaker(engine),
                timeout=30.0,
                instance=f"sender-{n}",
            )
            for n, engine in enumerate(engines)
        ]
        handled = await asyncio.gather(*(o.send_due() for o in outboxes))
    finally:
        for engine in engines:
            await engine.dispose()

    counts = at_sink(smtp_sink)
    assert set(counts) == expected, "a mail was lost"
    assert [mid for mid, n in counts.items() if n > 1] == [], "a mail was sent twice"
    assert sum(handled) == mails
    assert all(handled), f"one sender claimed everything: {handled}"
    assert await statuses(store_url) == Counter(sent=mails)


class SlowRelay:
    """The sink takes ``each`` seconds per mail; the mail to ``stuck`` waits until let through."""

    def __init__(self, sink: SmtpSink, *, each: float, stuck: str | None = None) -> None:
        self.sitting = asyncio.Event()  # the stuck mail has reached DATA
        self.let_through = asyncio.Event()  # then it is accepted
        accept = sink.handler.handle_DATA

        async def handle_data(server: Any, session: Any, envelope: Any) -> str:
            if stuck is not None and stuck in envelope.rcpt_tos:
                self.sitting.set()
                await self.let_through.wait()
            else:
                await asyncio.sleep(each)  # the relay's own latency
            return await accept(server, session, envelope)

        sink.handler.handle_DATA = handle_data  # type: ignore[method-assign]


async def test_a_relay_that_keeps_answering_keeps_the_whole_burst(
    store_url: str, smtp_sink: SmtpSink
) -> None:
    # a burst that lasts several renewals, each mail answered well within one
    mails = 25
    SlowRelay(smtp_sink, each=0.1)
    expected = await queue_many(store_url, mails)
    engine = make_engine(store_url)
    try:
        outbox = OutboxSender(
            smtp_sink.smtp_config(), make_sessionmaker(engine), timeout=30.0, claim_for=CLAIM_FOR
        )
        # one pass sends the whole burst: no row behind a mail in flight was handed back
        assert await outbox.send_due() == mails
    finally:
        await engine.dispose()
    assert list(at_sink(smtp_sink)) == [f"claims-{i}@example.org" for i in range(mails)]
    assert set(at_sink(smtp_sink)) == expected
    assert await statuses(store_url) == Counter(sent=mails)


async def test_rows_behind_a_mail_the_relay_sits_on_go_to_another_sender(
    store_url: str, smtp_sink: SmtpSink
) -> None:
    mails = 6
    relay = SlowRelay(smtp_sink, each=0.0, stuck="rep0@pangeo.example")
    expected = await queue_many(store_url, mails)
    engines = [make_engine(store_url) for _ in range(2)]
    a, b = (
        OutboxSender(
            smtp_sink.smtp_config(),
            make_sessionmaker(engine),
            timeout=PATIENCE,
            claim_for=timedelta(seconds=1.5),
            instance=name,
        )
        for engine, name in zip(engines, ("sender-a", "sender-b"), strict=True)
    )
    stop = asyncio.Event()
    a_pass = asyncio.create_task(a.send_due())
    b_task: asyncio.Task[None] | None = None
    try:
        # A claimed the whole burst, and the relay sits on its first mail
        async with asyncio.timeout(PATIENCE):
            await relay.sitting.wait()
        b_task = asyncio.create_task(b.run(stop))
        # A hands the rest back after a whole renewal step; B sends it meanwhile
        await smtp_sink.wait_for(mails - 1, timeout=PATIENCE)
        assert not a_pass.done()
        relay.let_through.set()
        async with asyncio.timeout(PATIENCE):
            assert await a_pass == 1
    finally:
        relay.let_through.set()
        stop.set()
        await asyncio.wait([a_pass, *([b_task] if b_task else [])], timeout=PATIENCE)
        for engine in engines:
            await engine.dispose()
    counts = at_sink(smtp_sink)
    assert set(counts) == expected
    assert [mid for mid, n in counts.items() if n > 1] == []
    assert await statuses(store_url) == Counter(sent=mails)


async def test_a_claim_takes_one_burst_and_leaves_the_rest_to_others(
    store_url: str, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    # what a frozen sender holds is one burst, not the whole queue
    caplog.set_level(logging.INFO, logger="maild.mail.outbox")  # the freeze's hook
    mails = 2 * BATCH_SIZE
    expected = await queue_many(store_url, mails)
    a = FrozenSender(store_url, smtp_sink, after_sends(1))
    a_pass = asyncio.ensure_future(asyncio.to_thread(a.send_due))
    try:
        assert await asyncio.to_thread(a.frozen.wait, PATIENCE), "A never reached the freeze"
        engine = make_engine(store_url)
        try:
            async with make_sessionmaker(engine)() as session:
                claimed = await session.scalar(
                    select(func.count()).where(Outbox.claimed_by.is_not(None))
                )
        finally:
            await engine.dispose()
        assert claimed == BATCH_SIZE - 1
    finally:
        a.thawed.set()
        async with asyncio.timeout(PATIENCE):
            await a_pass
        a.uninstall()
    # A, thawed, may or may not have found its claims still good; a second
    # pass sends whatever it handed back
    engine = make_engine(store_url)
    try:
        sender = OutboxSender(smtp_sink.smtp_config(), make_sessionmaker(engine), timeout=30.0)
        await sender.send_due()
    finally:
        await engine.dispose()
    counts = at_sink(smtp_sink)
    assert set(counts) == expected
    assert [mid for mid, n in counts.items() if n > 1] == []
