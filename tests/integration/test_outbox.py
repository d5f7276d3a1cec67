"""The outbox against a real aiosmtpd on the test's loop and a real SQLite file.

Every test runs three times: with the sender's writes through aiosqlite in
the test's loop; in a store thread of the sender's own
(:class:`~maild.store.inline.StoreThread`); and with that store thread and
the outcomes in the journal beside the store, as ``maild run`` has it on
SQLite (:mod:`maild.mail.journal`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.mail.journal import OutcomeJournal
from maild.mail.outbox import OutboxSender
from maild.store.db import make_engine, make_sessionmaker, upgrade
from maild.store.inline import StoreThread
from maild.store.models import Outbox
from tests.integration import smtp_sink as sink_mod
from tests.integration.smtp_sink import SmtpSink, ThreadedSink

pytestmark = pytest.mark.integration

# Bound by assignment, not imported by name: see smtp_sink's docstring.
smtp_sink = sink_mod.smtp_sink
threaded_sink = sink_mod.threaded_sink

Sessions = async_sessionmaker[AsyncSession]
START = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
RAW = (
    b"From: Example Support <support@example.org>\r\n"
    b"To: Rosa Rep <rep@pangeo.example>\r\n"
    b"Subject: [support #1] Hub is down\r\n"
    b"Message-ID: <out-1@example.org>\r\n"
    b"\r\n"
    b"We are on it.\r\n"
    b".a line starting with a dot survives dot-stuffing\r\n"
    b"\r\n"
    b"-- \r\n"
    b"Example Support\r\n"
)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await upgrade(engine)
    yield make_sessionmaker(engine)
    await engine.dispose()


#: What an OutboxSender gets as ``store`` and ``journal``; set per test by sender_store.
_store: dict[str, Any] = {}


@pytest.fixture(params=["aiosqlite", "store thread", "journal"], autouse=True)
async def sender_store(
    request: pytest.FixtureRequest, tmp_path: Path, sessions: Sessions
) -> AsyncIterator[StoreThread | None]:
    """The sender's writes in the test's loop through aiosqlite, or in a thread of their
    own, or that and its outcomes in the journal."""
    url = f"sqlite+aiosqlite:///{tmp_path}/t.db"
    store = StoreThread(url) if request.param != "aiosqlite" else None
    journal = OutcomeJournal.for_url(url) if request.param == "journal" else None
    _store.update(store=store, journal=journal)
    try:
        yield store
    finally:
        _store.clear()
        if store is not None:
            await store.aclose()
        if journal is not None:
            journal.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def queue(
    sessions: Sessions,
    *,
    rcpt_tos: list[str] | None = None,
    raw: bytes = RAW,
    created_at: datetime = START,
    ticket_id: int | None = None,
) -> int:
    rcpts = rcpt_tos or ["rep@pangeo.example"]
    row = Outbox(
        ticket_id=ticket_id,
        template="reply",
        mail_from="support@example.org",
        rcpt_tos=rcpts,
        primary_rcpt=rcpts[0],
        raw=raw,
        created_at=created_at,
        next_attempt_at=created_at,
    )
    async with sessions() as session:
        session.add(row)
        await session.commit()
        return row.id


async def load(sessions: Sessions, row_id: int) -> Outbox:
    async with sessions() as session:
        row = await session.get(Outbox, row_id)
        assert row is not None
        return row


def sender(
    sink: SmtpSink | ThreadedSink, sessions: Sessions, clock: Clock, **kwargs: Any
) -> OutboxSender:
    config = kwargs.pop("config", None) or sink.smtp_config()
    kwargs.setdefault("timeout", 5.0)
    for name, value in _store.items():
        kwargs.setdefault(name, value)
    return OutboxSender(config, sessions, clock=clock, **kwargs)


# -- delivery -------------------------------------------------------------------


async def test_queued_mail_arrives_once_with_exact_bytes_then_is_sent(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="maild.mail.outbox")
    row_id = await queue(sessions)
    outbox = sender(smtp_sink, sessions, clock)

    assert await outbox.send_due() == 1

    assert [r.getMessage() for r in caplog.records if r.name == "maild.mail.outbox"] == [
        f"outbox {row_id} (ticket None, <out-1@example.org>) sent to rep@pangeo.example"
    ]

    assert smtp_sink.received == [("support@example.org", ["rep@pangeo.example"], RAW)]
    row = await load(sessions, row_id)
    assert (row.status, row.sent_at, row.attempts, row.last_error) == ("sent", START, 1, None)

    clock.advance(days=1)
    assert await outbox.send_due() == 0
    assert len(smtp_sink.received) == 1


async def test_to_and_cc_are_one_delivery_with_every_recipient(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    rcpts = ["rep@pangeo.example", "rep2@pangeo.example", "alice@example.org"]
    await queue(sessions, rcpt_tos=rcpts)

    await sender(smtp_sink, sessions, clock).send_due()

    assert [(m.mail_from, m.rcpt_tos) for m in smtp_sink.received] == [
        ("support@example.org", rcpts)
    ]


async def test_a_pass_uses_one_connection_oldest_first(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    for n in range(3):
        await queue(sessions, raw=RAW.replace(b"out-1", f"out-{n}".encode()))

    assert await sender(smtp_sink, sessions, clock).send_due() == 3

    assert smtp_sink.connections == 1
    assert [b"<out-0@" in m.content for m in smtp_sink.received] == [True, False, False]
    assert b"<out-2@" in smtp_sink.received[2].content


async def test_rows_not_yet_due_wait(smtp_sink: SmtpSink, sessions: Sessions, clock: Clock) -> None:
    row_id = await queue(sessions, created_at=START + timedelta(minutes=5))
    outbox = sender(smtp_sink, sessions, clock)

    assert await outbox.send_due() == 0
    clock.advance(minutes=5)
    assert await outbox.send_due() == 1
    assert (await load(sessions, row_id)).status == "sent"


async def test_partial_refusal_is_sent_and_names_the_refused(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    smtp_sink.refuse["gone@pangeo.example"] = "550 5.1.1 gone@pangeo.example: no such user"
    row_id = await queue(sessions, rcpt_tos=["rep@pangeo.example", "gone@pangeo.example"])

    await sender(smtp_sink, sessions, clock).send_due()

    assert [m.rcpt_tos for m in smtp_sink.received] == [["rep@pangeo.example"]]
    row = await load(sessions, row_id)
    assert row.status == "sent"
    assert row.last_error is not None
    assert "gone@pangeo.example" in row.last_error and "550" in row.last_error


# -- temporary failures ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tempfail_rcpt", "tempfail_data"])
async def test_4xx_stays_queued_then_is_delivered_exactly_once(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock, mode: sink_mod.Mode
) -> None:
    smtp_sink.mode = mode
    row_id = await queue(sessions)
    outbox = sender(smtp_sink, sessions, clock)

    assert await outbox.send_due() == 1

    row = await load(sessions, row_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.next_attempt_at > START
    assert row.last_error is not None and "451" in row.last_error
    assert smtp_sink.received == []

    smtp_sink.mode = "accept"
    assert await outbox.send_due() == 0, "not due again before the backoff"
    clock.advance(minutes=1)
    assert await outbox.send_due() == 1
    assert await outbox.send_due() == 0

    assert len(smtp_sink.received) == 1
    row = await load(sessions, row_id)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 2, clock.now)


async def test_backoff_doubles_up_to_the_cap(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    smtp_sink.mode = "tempfail_rcpt"
    row_id = await queue(sessions)
    outbox = sender(
        smtp_sink,
        sessions,
        clock,
        backoff_base=timedelta(seconds=30),
        backoff_cap=timedelta(minutes=2),
    )
    waits = []
    for _ in range(4):
        await outbox.send_due()
        row = await load(sessions, row_id)
        waits.append((row.next_attempt_at - clock.now).total_seconds())
        clock.now = row.next_attempt_at

    assert 30 <= waits[0] <= 33
    assert 60 <= waits[1] <= 66
    assert waits[2:] == [120, 120]


async def test_server_down_keeps_mail_queued_until_it_is_back(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    first, second = await queue(sessions), await queue(sessions)
    await smtp_sink.set_mode("down")
    outbox = sender(smtp_sink, sessions, clock)

    assert await outbox.send_due() == 2

    for row_id in (first, second):
        row = await load(sessions, row_id)
        assert (row.status, row.attempts) == ("queued", 1)
        assert row.last_error is not None and "cannot connect" in row.last_error

    await smtp_sink.set_mode("accept")
    clock.advance(minutes=1)
    assert await outbox.send_due() == 2
    assert len(smtp_sink.received) == 2
    assert (await load(sessions, first)).status == "sent"


async def test_hanging_server_times_out_and_mail_stays_queued(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    smtp_sink.mode = "hang"
    row_id = await queue(sessions)
    outbox = sender(smtp_sink, sessions, clock, timeout=1.0)

    async with asyncio.timeout(4):
        assert await outbox.send_due() == 1

    row = await load(sessions, row_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.last_error is not None and "timed out" in row.last_error.lower()


async def test_temporary_failure_past_retry_for_gives_up(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    smtp_sink.mode = "tempfail_rcpt"
    row_id = await queue(sessions)
    outbox = sender(
        smtp_sink, sessions, clock, config=smtp_sink.smtp_config(retry_for=timedelta(hours=1))
    )

    await outbox.send_due()
    assert (await load(sessions, row_id)).status == "queued"

    clock.advance(hours=1, seconds=1)
    await outbox.send_due()

    row = await load(sessions, row_id)
    assert row.status == "failed"
    assert row.last_error is not None
    assert row.last_error.startswith("gave up after 1h: ")
    assert "451" in row.last_error


# -- permanent failures --------------------------------------------------------------


@pytest.mark.parametrize(("mode", "code"), [("permfail_rcpt", "550"), ("permfail_data", "554")])
async def test_5xx_fails_and_is_never_retried(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock, mode: sink_mod.Mode, code: str
) -> None:
    smtp_sink.mode = mode
    row_id = await queue(sessions)
    outbox = sender(smtp_sink, sessions, clock)

    await outbox.send_due()

    row = await load(sessions, row_id)
    assert row.status == "failed"
    assert row.last_error is not None and code in row.last_error

    smtp_sink.mode = "accept"
    clock.advance(days=3)
    assert await outbox.send_due() == 0
    assert smtp_sink.received == []


async def test_one_refused_mail_does_not_hold_up_the_next(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock
) -> None:
    smtp_sink.refuse["gone@pangeo.example"] = "550 5.1.1 no such user"
    bad = await queue(sessions, rcpt_tos=["gone@pangeo.example"])
    good = await queue(sessions)

    assert await sender(smtp_sink, sessions, clock).send_due() == 2

    assert (await load(sessions, bad)).status == "failed"
    assert (await load(sessions, good)).status == "sent"
    assert smtp_sink.connections == 1


async def test_tls_against_a_plain_server_is_a_configuration_error(
    smtp_sink: SmtpSink, sessions: Sessions, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    row_id = await queue(sessions)
    config = smtp_sink.smtp_config(security="tls")

    await sender(smtp_sink, sessions, clock, config=config).send_due()

    row = await load(sessions, row_id)
    assert (row.status, row.attempts) == ("queued", 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("smtp.security" in e for e in errors), errors


# -- authentication ---------------------------------------------------------------


async def test_login_is_used_and_accepted(sessions: Sessions, clock: Clock) -> None:
    async with SmtpSink(auth=("maild", "s3cret")) as sink:
        row_id = await queue(sessions)
        await sender(sink, sessions, clock).send_due()

        assert [(x.login, x.password, x.success) for x in sink.logins] == [
            ("maild", "s3cret", True)
        ]
        assert len(sink.received) == 1
    assert (await load(sessions, row_id)).status == "sent"


async def test_wrong_password_keeps_mail_queued_and_logs_an_error(
    sessions: Sessions, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with SmtpSink(auth=("maild", "s3cret")) as sink:
        first, second = await queue(sessions), await queue(sessions)
        config = sink.smtp_config(password="wrong")

        await sender(sink, sessions, clock, config=config).send_due()

        assert sink.received == []
        assert sink.connections == 1
    for row_id in (first, second):
        row = await load(sessions, row_id)
        assert (row.status, row.attempts) == ("queued", 1)
        assert row.last_error is not None and "535" in row.last_error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("smtp.password" in e and "configuration" in e for e in errors), errors


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
async def test_missing_login_on_a_relay_that_requires_one_keeps_mail_queued(
    sessions: Sessions, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with SmtpSink(auth=("maild", "s3cret"), auth_required=True) as sink:
        row_id = await queue(sessions)
        config = sink.smtp_config(username=None, password=None)

        await sender(sink, sessions, clock, config=config).send_due()

        assert sink.received == []
    row = await load(sessions, row_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.last_error is not None and "530" in row.last_error
    assert any("smtp.username" in r.getMessage() for r in caplog.records if r.levelno >= 40)


# -- run() -----------------------------------------------------------------------------


async def test_run_sends_a_row_committed_while_it_waits_and_stops_promptly(
    smtp_sink: SmtpSink, sessions: Sessions
) -> None:
    outbox = OutboxSender(smtp_sink.smtp_config(), sessions, timeout=5.0, **_store)
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    await asyncio.sleep(0.2)  # idle: nothing queued, waiting for wake()

    await queue(sessions, created_at=datetime.now(UTC))
    outbox.wake()
    await smtp_sink.wait_for(1, timeout=1.0)

    stop.set()
    async with asyncio.timeout(2):
        await task


async def test_stop_finishes_the_mail_in_flight_and_leaves_the_rest(
    smtp_sink: SmtpSink, sessions: Sessions
) -> None:
    smtp_sink.mode = "hang"
    now = datetime.now(UTC)
    ids = [await queue(sessions, created_at=now) for _ in range(3)]
    outbox = OutboxSender(smtp_sink.smtp_config(), sessions, timeout=1.0, **_store)
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    await asyncio.sleep(0.3)  # the first mail is hanging at DATA

    stop.set()
    async with asyncio.timeout(2):
        await task

    rows = [await load(sessions, row_id) for row_id in ids]
    assert [(r.status, r.attempts) for r in rows] == [("queued", 1), ("queued", 0), ("queued", 0)]


async def test_cancelling_run_mid_send_leaves_the_mail_queued(
    smtp_sink: SmtpSink, sessions: Sessions
) -> None:
    smtp_sink.mode = "hang"
    row_id = await queue(sessions, created_at=datetime.now(UTC))
    task = asyncio.create_task(
        OutboxSender(smtp_sink.smtp_config(), sessions, timeout=5.0, **_store).run(asyncio.Event())
    )
    await asyncio.sleep(0.3)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    row = await load(sessions, row_id)
    assert (row.status, row.attempts) == ("queued", 0)


async def test_run_retries_on_its_own_when_the_backoff_expires(
    smtp_sink: SmtpSink, sessions: Sessions
) -> None:
    smtp_sink.mode = "tempfail_rcpt"
    outbox = OutboxSender(
        smtp_sink.smtp_config(),
        sessions,
        timeout=5.0,
        backoff_base=timedelta(seconds=0.3),
        **_store,
    )
    row_id = await queue(sessions, created_at=datetime.now(UTC))
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    try:
        async with asyncio.timeout(2):
            # The database row is what is observable here; nothing to await on.
            while (await load(sessions, row_id)).attempts == 0:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        smtp_sink.mode = "accept"
        await smtp_sink.wait_for(1, timeout=2.0)
    finally:
        stop.set()
        async with asyncio.timeout(2):
            await task
    assert (await load(sessions, row_id)).attempts == 2


async def test_run_survives_database_errors_and_still_stops(
    smtp_sink: SmtpSink, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/empty.db")  # no schema
    try:
        outbox = OutboxSender(smtp_sink.smtp_config(), make_sessionmaker(engine))
        stop = asyncio.Event()
        task = asyncio.create_task(outbox.run(stop))
        await asyncio.sleep(0.2)
        assert not task.done()
        stop.set()
        async with asyncio.timeout(2):
            await task
    finally:
        await engine.dispose()
    assert any("outbox pass failed" in r.getMessage() for r in caplog.records)


# -- the threaded sink, as subprocess tests use it --------------------------------------


async def test_threaded_sink_receives_and_goes_down_and_up(
    threaded_sink: ThreadedSink, sessions: Sessions, clock: Clock
) -> None:
    sink = threaded_sink
    first = await queue(sessions)
    outbox = sender(sink, sessions, clock)
    await outbox.send_due()
    assert [m.content for m in await sink.wait_for_async(1, timeout=2)] == [RAW]

    await asyncio.to_thread(sink.set_mode, "down")
    second = await queue(sessions)
    await outbox.send_due()
    assert (await load(sessions, second)).status == "queued"

    await asyncio.to_thread(sink.set_mode, "accept")
    clock.advance(minutes=1)
    await outbox.send_due()
    await sink.wait_for_async(2, timeout=2)
    assert (await load(sessions, first)).status == "sent"
    assert (await load(sessions, second)).status == "sent"


async def test_a_pass_running_beside_run_ends_with_its_stop(
    smtp_sink: SmtpSink, sessions: Sessions
) -> None:
    # the daemon's sending turn between chunks is a pass beside run(): at shutdown it
    # must end after its mail in flight too, not send the whole backlog past the
    # service manager's stop timeout
    outbox = OutboxSender(smtp_sink.smtp_config(), sessions, timeout=1.0, **_store)
    stop = asyncio.Event()
    running = asyncio.create_task(outbox.run(stop))
    await asyncio.sleep(0.2)  # idle, nothing queued
    smtp_sink.mode = "hang"
    now = datetime.now(UTC)
    ids = [await queue(sessions, created_at=now) for _ in range(3)]
    turn = asyncio.create_task(outbox.send_due())
    await asyncio.sleep(0.3)  # the turn's first mail is hanging at DATA

    stop.set()
    async with asyncio.timeout(2):
        await running
    async with asyncio.timeout(2):
        await turn

    rows = [await load(sessions, row_id) for row_id in ids]
    assert [(r.status, r.attempts) for r in rows] == [("queued", 1), ("queued", 0), ("queued", 0)]
