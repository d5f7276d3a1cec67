"""The outcome journal (SQLite): what a relay accepted is recorded without the store's
write lock, survives the sender, and is folded into its row once.

A real SQLite store and journal, a real aiosmtpd sink on the test's loop.
The journaled state a ``kill -9`` leaves behind (an outcome in the journal,
its row still claimed by the dead sender) is written with the journal's own
``record``, as the dead sender wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.mail.journal import SUFFIX, OutcomeJournal
from maild.mail.outbox import OutboxSender
from maild.store.db import make_engine, make_sessionmaker, upgrade
from maild.store.inline import StoreThread
from maild.store.models import Outbox
from tests.integration import smtp_sink as sink_mod
from tests.integration.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration

smtp_sink = sink_mod.smtp_sink

Sessions = async_sessionmaker[AsyncSession]
DEAD = "host:4242:deadbeef:sender"  # the instance name of a sender killed mid-burst


def raw_mail(n: int) -> bytes:
    return (
        b"From: Example Support <support@example.org>\r\n"
        b"To: Rosa Rep <rep@pangeo.example>\r\n"
        b"Subject: [support #%d] Hub is down\r\n"
        b"Message-ID: <journal-%d@example.org>\r\n"
        b"\r\n"
        b"We are on it.\r\n" % (n, n)
    )


class Parts:
    """A store, its journal and a sender with its own store thread, as ``maild run`` has."""

    def __init__(self, path: Path, sink: SmtpSink) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"
        self.engine = make_engine(self.url)
        self.sessions = make_sessionmaker(self.engine)
        self.store = StoreThread(self.url)
        journal = OutcomeJournal.for_url(self.url)
        assert journal is not None
        self.journal = journal
        self.sender = OutboxSender(
            sink.smtp_config(),
            self.sessions,
            timeout=5.0,
            instance="host:1:cafe:sender",
            store=self.store,
            journal=self.journal,
        )

    async def queue(self, n: int, **columns: object) -> int:
        now = datetime.now(UTC)
        row = Outbox(
            template="reply",
            mail_from="support@example.org",
            rcpt_tos=["rep@pangeo.example"],
            primary_rcpt="rep@pangeo.example",
            raw=raw_mail(n),
            created_at=now - timedelta(minutes=5),
            next_attempt_at=now - timedelta(minutes=1),
        )
        async with self.sessions() as session:
            session.add(row)
            await session.flush()
            if columns:
                await session.execute(update(Outbox).where(Outbox.id == row.id).values(**columns))
            await session.commit()
            return row.id

    async def row(self, row_id: int) -> Outbox:
        async with self.sessions() as session:
            row = await session.get(Outbox, row_id)
            assert row is not None
            return row

    async def close(self) -> None:
        await self.store.aclose()
        self.journal.close()
        await self.engine.dispose()


@pytest.fixture
async def parts(tmp_path: Path, smtp_sink: SmtpSink) -> AsyncIterator[Parts]:
    path = tmp_path / "maild.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await upgrade(engine)
    await engine.dispose()
    made = Parts(path, smtp_sink)
    yield made
    await made.close()


def sent(at: datetime) -> dict[str, object]:
    """The columns a sender records for a mail the relay accepted on its first attempt."""
    return {"attempts": 1, "status": "sent", "sent_at": at, "last_error": None}


def message_ids(sink: SmtpSink) -> list[str]:
    return [
        line.split(b":", 1)[1].strip().decode()
        for received in sink.received
        for line in received.content.splitlines()
        if line.lower().startswith(b"message-id:")
    ]


def test_the_journal_lies_beside_a_file_store_and_nowhere_else(tmp_path: Path) -> None:
    journal = OutcomeJournal.for_url(f"sqlite+aiosqlite:///{tmp_path}/maild.db")
    assert journal is not None
    try:
        assert journal.path == tmp_path / f"maild.db{SUFFIX}"
        assert journal.path.stat().st_mode & 0o777 == 0o600, "mail is private"
    finally:
        journal.close()
    assert OutcomeJournal.for_url("sqlite+aiosqlite:///:memory:") is None
    assert OutcomeJournal.for_url("postgresql+asyncpg://maild@localhost/maild") is None


async def test_a_mail_journaled_before_its_sender_died_is_not_sent_again(
    parts: Parts, smtp_sink: SmtpSink
) -> None:
    sent_at = datetime.now(UTC) - timedelta(seconds=40)
    expired = datetime.now(UTC) - timedelta(seconds=10)  # the dead sender's claim ran out
    # accepted by the relay and journaled, then kill -9 before the fold
    journaled = await parts.queue(1, claimed_by=DEAD, next_attempt_at=expired)
    await parts.journal.record(journaled, DEAD, "sent", sent(sent_at), f"outbox {journaled}")
    # in flight at the kill: SMTP's own window, sent again with the same Message-ID
    in_flight = await parts.queue(2, claimed_by=DEAD, next_attempt_at=expired)
    fresh = await parts.queue(3)

    assert await parts.sender.send_due() == 2

    assert sorted(message_ids(smtp_sink)) == ["<journal-2@example.org>", "<journal-3@example.org>"]
    row = await parts.row(journaled)
    assert (row.status, row.attempts, row.sent_at, row.claimed_by) == ("sent", 1, sent_at, None)
    assert [(await parts.row(i)).status for i in (in_flight, fresh)] == ["sent", "sent"]
    assert not await parts.journal.has_pending()


async def test_mail_goes_out_while_a_chunk_holds_the_store_and_is_recorded_after(
    parts: Parts, smtp_sink: SmtpSink
) -> None:
    ids = [await parts.queue(n) for n in range(1, 4)]
    assert await parts.sender.take_turn() == 3  # claimed, committed: the turn is over

    chunk = sqlite3.connect(parts.path, isolation_level=None)
    chunk.execute("BEGIN IMMEDIATE")  # the daemon's next chunk takes the write lock
    stop = asyncio.Event()
    running = asyncio.create_task(parts.sender.run(stop))
    try:
        await smtp_sink.wait_for(3, timeout=10.0)
        reader = sqlite3.connect(parts.path)
        statuses = reader.execute("SELECT status FROM outbox ORDER BY id").fetchall()
        reader.close()
        assert statuses == [("queued",)] * 3, "recorded in the journal, not yet in the rows"
        assert await parts.journal.has_pending()
    finally:
        chunk.execute("COMMIT")
        chunk.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = [await parts.row(i) for i in ids]
        if all(row.status == "sent" for row in rows):
            break
        await asyncio.sleep(0.1)
    assert [(row.status, row.attempts, row.claimed_by) for row in rows] == [("sent", 1, None)] * 3
    assert not await parts.journal.has_pending()
    stop.set()
    async with asyncio.timeout(10):
        await running
    assert len(smtp_sink.received) == 3, "each mail once"


async def test_an_outcome_folded_twice_is_quiet_and_one_taken_over_is_reported(
    parts: Parts, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="maild.mail.outbox")
    later = datetime.now(UTC) + timedelta(minutes=5)  # claims still running
    sent_at = datetime.now(UTC) - timedelta(seconds=3)
    outcome = sent(sent_at)
    ours = await parts.queue(1, claimed_by=DEAD, next_attempt_at=later)
    await parts.journal.record(ours, DEAD, "sent", outcome, "outbox A")
    assert await parts.sender.send_due() == 0
    assert (await parts.row(ours)).status == "sent"
    # a crash between the store's commit and the journal's: the same outcome again
    await parts.journal.record(ours, DEAD, "sent", outcome, "outbox A")
    # and a row another instance took over while its first sender was stalled
    other = "host:2:f00d:sender"
    taken = await parts.queue(2, claimed_by=other, next_attempt_at=later)
    await parts.journal.record(taken, DEAD, "sent", outcome, "outbox B")

    assert await parts.sender.send_due() == 0

    assert smtp_sink.received == []
    row = await parts.row(ours)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 1, sent_at)
    taken_row = await parts.row(taken)
    assert (taken_row.status, taken_row.claimed_by) == ("queued", other)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "outbox A" in w], warnings
    assert [w for w in warnings if "outbox B" in w and "may arrive twice" in w], warnings
    assert not await parts.journal.has_pending()


async def test_a_fold_the_store_refuses_keeps_the_outcomes_for_the_next(
    parts: Parts, smtp_sink: SmtpSink
) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    sent_at = datetime.now(UTC)
    row_id = await parts.queue(1, claimed_by=DEAD, next_attempt_at=later)
    await parts.journal.record(row_id, DEAD, "sent", sent(sent_at), "outbox A")
    admin = sqlite3.connect(parts.path, isolation_level=None)
    admin.execute(
        "CREATE TRIGGER refuse BEFORE UPDATE OF status ON outbox "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    with pytest.raises(IntegrityError, match="refused by the test"):
        await parts.sender.send_due()
    assert (await parts.row(row_id)).status == "queued"
    assert await parts.journal.has_pending(), "the outcome is kept, not lost"

    admin.execute("DROP TRIGGER refuse")
    admin.close()
    assert await parts.sender.send_due() == 0
    row = await parts.row(row_id)
    assert (row.status, row.sent_at) == ("sent", sent_at)
    assert not await parts.journal.has_pending()
    assert smtp_sink.received == []


async def test_a_fold_waiting_for_a_chunk_does_not_hold_up_other_senders(
    parts: Parts, smtp_sink: SmtpSink
) -> None:
    later = datetime.now(UTC) + timedelta(minutes=5)
    row_id = await parts.queue(1, claimed_by=DEAD, next_attempt_at=later)
    await parts.journal.record(row_id, DEAD, "sent", sent(datetime.now(UTC)), "outbox A")
    chunk = sqlite3.connect(parts.path, isolation_level=None)
    chunk.execute("BEGIN IMMEDIATE")  # the daemon's chunk holds the store
    folding = asyncio.create_task(parts.sender.send_due())  # its claim folds: it waits
    other = OutcomeJournal(parts.journal.path)  # another sender, as a process of its own
    try:
        await asyncio.sleep(0.3)
        # the relay answered the other sender: its outcome is committed at once
        async with asyncio.timeout(2):
            await other.record(row_id + 1, "host:2:f00d:sender", "sent", sent(later), "B")
        assert not folding.done()
    finally:
        chunk.execute("COMMIT")
        chunk.close()
        other.close()
    async with asyncio.timeout(10):
        await folding
    assert (await parts.row(row_id)).status == "sent"


async def test_rows_a_turn_took_are_not_taken_twice_when_their_claims_run_out(
    parts: Parts, smtp_sink: SmtpSink
) -> None:
    sender = OutboxSender(
        smtp_sink.smtp_config(),
        parts.sessions,
        timeout=5.0,
        instance="host:1:cafe:sender",
        claim_for=timedelta(seconds=0.6),
        store=parts.store,
        journal=parts.journal,
    )
    await parts.queue(1)
    assert await sender.take_turn() == 1
    await asyncio.sleep(0.8)  # still waiting for the pass (a slow relay ahead): the claim ran out
    assert await sender.take_turn() == 0, "the row is this sender's already"

    await sender.send_due()

    assert message_ids(smtp_sink) == ["<journal-1@example.org>"]


async def test_a_row_a_bounce_marked_first_keeps_it_quietly(
    parts: Parts, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    # the pipeline recorded the journaled outcome with the bounce (outbox.fold_journaled)
    row_id = await parts.queue(1, status="bounced", attempts=1)
    await parts.journal.record(row_id, DEAD, "sent", sent(datetime.now(UTC)), "outbox A")

    assert await parts.sender.send_due() == 0

    assert (await parts.row(row_id)).status == "bounced"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not await parts.journal.has_pending()
