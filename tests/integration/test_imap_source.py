"""ImapSource against a real Dovecot: what a helpdesk operator would notice.

Each test uses its own IMAP user (a fresh mailbox) on the session's Dovecot and
its own SQLite file. The handler below stands in for the pipeline: it records
what it was given and answers by a marker header.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.config import MailboxConfig
from maild.mail.imap import (
    ImapError,
    ImapLoginError,
    ImapSource,
    Verdict,
    imap_utf7_decode,
    imap_utf7_encode,
    parse_fetch,
    uid_set,
)
from maild.store.db import make_engine, make_sessionmaker, upgrade
from maild.store.models import ImapState
from tests.integration.dovecot import Dovecot, free_ports

LOGGER = "maild.mail.imap"


# -- helpers -------------------------------------------------------------------------------


def mail(subject: str, *extra: str) -> bytes:
    headers = [
        "From: Rosa Rep <rep@pangeo.example>",
        "To: support@example.org",
        f"Subject: {subject}",
        f"Message-ID: <{uuid.uuid4().hex}@test.example>",
        "Date: Wed, 25 Nov 2026 15:00:00 +0000",
        *extra,
    ]
    return ("\r\n".join(headers) + "\r\n\r\nHello,\r\n\r\nthe hub is down.\r\n").encode()


def subject_of(raw: bytes) -> str:
    return str(BytesHeaderParser().parsebytes(raw)["Subject"])


class Recorder:
    """A stand-in pipeline: records (label, raw) and answers by marker header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()

    async def __call__(self, raw: bytes, label: str) -> Verdict:
        self.seen.append((label, raw))
        self._changed.set()
        if b"X-Test-Retry: yes" in raw:
            return "retry"
        if b"X-Test-Quarantine: yes" in raw:
            return "quarantined"
        return "processed"

    @property
    def subjects(self) -> list[str]:
        return [subject_of(raw) for _, raw in self.seen]

    async def wait_for(self, count: int, seconds: float) -> float:
        """Wait until ``count`` mails were handed over; return how long it took."""
        start = time.monotonic()
        async with asyncio.timeout(seconds):
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()
        return time.monotonic() - start


def config(dovecot: Dovecot, user: str, **overrides: Any) -> MailboxConfig:
    values: dict[str, Any] = {
        "host": dovecot.host,
        "port": dovecot.imap_port,
        "security": "none",
        "username": user,
        "password": dovecot.password,
        "poll_interval": timedelta(seconds=60),
    }
    values.update(overrides)
    return MailboxConfig(**values)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await upgrade(engine)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def imap_state(
    sessions: async_sessionmaker[AsyncSession], folder: str = "INBOX"
) -> ImapState | None:
    async with sessions() as session:
        return await session.get(ImapState, folder)


async def until(condition: Callable[[], bool], seconds: float) -> None:
    """Poll ``condition`` (e.g. a doveadm count: nothing to wait on) every 50 ms until it holds."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def stop_run(task: asyncio.Task[None], stop: asyncio.Event, within: float = 3.0) -> float:
    """Set ``stop`` and return how long ``run()`` took to return (it must not raise)."""
    start = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, within)
    return time.monotonic() - start


# -- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Processed", "Processed"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("Support Ü", "Support &ANw-"),
        ("日本語", "&ZeVnLIqe-"),
        ("Entwürfe/Übersicht", "Entw&APw-rfe/&ANw-bersicht"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀 x", "&2D3eAA- x"),
    ],
)
def test_imap_utf7_round_trip(name: str, encoded: str) -> None:
    assert imap_utf7_encode(name) == encoded
    assert imap_utf7_decode(encoded) == name


def test_imap_utf7_agrees_with_dovecot(dovecot: Dovecot) -> None:
    for name in ("Support Ü", "Tom & Jerry", "日本語 ~ 台北", "Quarantäne/😀"):
        expected = dovecot.doveadm("mailbox", "mutf7", name).stdout.decode().strip()
        assert imap_utf7_encode(name) == expected


def test_uid_set_compacts_runs() -> None:
    assert uid_set([7, 1, 2, 3, 3, 9, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


def test_parse_fetch_accepts_the_shapes_aioimaplib_produces() -> None:
    lines = [
        b"2 FETCH (UID 2 FLAGS (\\Recent) BODY[] {5}",
        bytearray(b"hello"),
        b")",
        b"* 3 FETCH (FLAGS (\\Seen) BODY[] {3}",  # a leftover "* " and UID after the literal
        bytearray(b"abc"),
        b" UID 3)",
        b"4 FETCH (UID 4 FLAGS (\\Seen))",  # an unsolicited flag update: no body
        b"Fetch completed (0.001 + 0.000 secs).",
    ]
    mails = parse_fetch(lines)
    assert [(m.uid, m.raw) for m in mails] == [(2, b"hello"), (3, b"abc")]
    assert mails[1].flags == frozenset({"\\Seen"})


# -- 1. the everyday pass ----------------------------------------------------------------------


async def test_sync_hands_over_in_order_and_files_by_verdict(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver(imap_user, mail("first"))
    dovecot.deliver(imap_user, mail("second", "X-Test-Quarantine: yes"))
    dovecot.deliver(imap_user, mail("third"))
    dovecot.deliver(imap_user, mail("fourth", "X-Test-Retry: yes"))
    handler = Recorder()
    synced: list[int] = []
    async with ImapSource(
        config(dovecot, imap_user), sessions, handler, on_sync=lambda: synced.append(1)
    ) as source:
        assert await source.sync_once() == 3
        assert handler.subjects == ["first", "second", "third", "fourth"]
        assert [label for label, _ in handler.seen] == [f"imap:INBOX/uid={n}" for n in (1, 2, 3, 4)]
        assert dovecot.subjects(imap_user, "INBOX") == ["fourth"]  # retry: left untouched
        assert dovecot.subjects(imap_user, "Processed") == ["first", "third"]
        assert dovecot.subjects(imap_user, "Quarantine") == ["second"]
        assert "\\Seen" not in dovecot.flags(imap_user)[4]  # fetched with BODY.PEEK
        assert source.last_sync_at is not None
        assert synced == [1]

        # the next pass offers only the mail that asked for a retry
        assert await source.sync_once() == 0
        assert handler.subjects[4:] == ["fourth"]

    state = await imap_state(sessions)
    assert state is not None
    assert state.uidvalidity == dovecot.uidvalidity(imap_user)
    assert state.last_uid == 3
    assert state.last_sync_at == source.last_sync_at


async def test_folders_with_spaces_and_non_ascii_names(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver(imap_user, mail("one"), folder="Support Ü")
    dovecot.deliver(imap_user, mail("two", "X-Test-Quarantine: yes"), folder="Support Ü")
    cfg = config(
        dovecot,
        imap_user,
        folder="Support Ü",
        processed_folder="Erledigt & fertig",
        quarantine_folder="Quarantäne/Kaputt",
    )
    handler = Recorder()
    async with ImapSource(cfg, sessions, handler) as source:
        assert await source.sync_once() == 2
    assert [label for label, _ in handler.seen] == ["imap:Support Ü/uid=1", "imap:Support Ü/uid=2"]
    assert dovecot.count(imap_user, "Support Ü") == 0
    assert dovecot.subjects(imap_user, "Erledigt & fertig") == ["one"]
    assert dovecot.subjects(imap_user, "Quarantäne/Kaputt") == ["two"]


# -- 2. flag mode ------------------------------------------------------------------------------


async def test_flag_mode_leaves_mail_in_place_and_never_repeats(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver(imap_user, mail("a"))
    dovecot.deliver(imap_user, mail("b"))
    dovecot.deliver(imap_user, mail("c", "X-Test-Quarantine: yes"))
    cfg = config(dovecot, imap_user, processed_folder="", quarantine_folder="")
    handler = Recorder()
    async with ImapSource(cfg, sessions, handler) as source:
        assert await source.sync_once() == 3
        assert await source.sync_once() == 0
        dovecot.deliver(imap_user, mail("d"))
        assert await source.sync_once() == 1
    assert handler.subjects == ["a", "b", "c", "d"]
    assert dovecot.count(imap_user, "INBOX") == 4
    assert not dovecot.exists(imap_user, "Processed")
    flags = dovecot.flags(imap_user)
    assert {"$MaildProcessed", "\\Seen"} <= flags[1]
    assert {"$MaildProcessed", "\\Seen"} <= flags[2]
    assert "$MaildQuarantined" in flags[3]
    assert "$MaildProcessed" in flags[4]

    # a new source (a restart) hands nothing again either
    again = Recorder()
    async with ImapSource(cfg, sessions, again) as source:
        assert await source.sync_once() == 0
    assert again.seen == []


async def test_flag_mode_with_a_quarantine_folder_moves_only_quarantined_mail(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver(imap_user, mail("ok"))
    dovecot.deliver(imap_user, mail("bad", "X-Test-Quarantine: yes"))
    cfg = config(dovecot, imap_user, processed_folder="")
    async with ImapSource(cfg, sessions, Recorder()) as source:
        assert await source.sync_once() == 2
    assert dovecot.subjects(imap_user, "INBOX") == ["ok"]
    assert dovecot.subjects(imap_user, "Quarantine") == ["bad"]


# -- 3. run() with IDLE ------------------------------------------------------------------------


async def test_run_with_idle_sees_new_mail_quickly_and_stops_promptly(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver(imap_user, mail("before start"))
    handler = Recorder()
    source = ImapSource(
        config(dovecot, imap_user, poll_interval=timedelta(hours=1)), sessions, handler
    )
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    await handler.wait_for(1, 5)
    await asyncio.sleep(0.2)  # let it settle into IDLE
    for n in range(2):
        dovecot.deliver(imap_user, mail(f"pushed {n}"))
        # Dovecot notifies IDLE clients about 0.5 s after delivery
        assert await handler.wait_for(2 + n, 3) < 3
    assert handler.subjects == ["before start", "pushed 0", "pushed 1"]
    assert await stop_run(task, stop) < 2
    assert dovecot.count(imap_user, "Processed") == 3
    assert source.last_sync_at is not None


async def test_mail_arriving_while_a_pass_runs_is_not_missed(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    handler = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(ImapSource(config(dovecot, imap_user), sessions, handler).run(stop))
    # deliveries land during searches, fetches and moves: their EXISTS rides on those replies
    for n in range(30):
        await asyncio.to_thread(dovecot.deliver, imap_user, mail(f"burst {n}"))
        await asyncio.sleep(0.01 * (n % 3))
    await handler.wait_for(30, 3)
    await stop_run(task, stop)
    assert handler.subjects == [f"burst {n}" for n in range(30)]
    assert dovecot.count(imap_user, "Processed") == 30


async def test_run_without_idle_polls(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    handler = Recorder()
    cfg = config(dovecot, imap_user, idle=False, poll_interval=timedelta(seconds=0.3))
    stop = asyncio.Event()
    task = asyncio.create_task(ImapSource(cfg, sessions, handler).run(stop))
    await asyncio.sleep(0.5)
    dovecot.deliver(imap_user, mail("polled"))
    await handler.wait_for(1, 3)
    assert await stop_run(task, stop) < 2
    assert dovecot.count(imap_user, "Processed") == 1


async def test_stop_during_a_big_pass_marks_what_was_handed_over(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver_many(imap_user, [mail(f"m{n}") for n in range(20)])
    stop = asyncio.Event()
    handed: list[str] = []

    async def slow(raw: bytes, label: str) -> Verdict:
        handed.append(label)
        if len(handed) == 5:
            stop.set()  # arrives while mail 5 is in flight, after its "commit"
        await asyncio.sleep(0.01)
        return "processed"

    task = asyncio.create_task(ImapSource(config(dovecot, imap_user), sessions, slow).run(stop))
    await asyncio.wait_for(task, 5)
    assert len(handed) == 5
    assert dovecot.count(imap_user, "Processed") == 5  # none left between commit and mark
    assert dovecot.count(imap_user, "INBOX") == 15


async def test_stop_during_a_big_pass_in_chunks_marks_every_chunk_handed_over(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # the batch handler's way: a stop during the third chunk still files the three
    # chunks handed over (each marked after its commit), and nothing after them
    dovecot.deliver_many(imap_user, [mail(f"m{n}") for n in range(20)])
    stop = asyncio.Event()
    calls: list[int] = []

    async def batch(mails: Sequence[tuple[bytes, str]], upcoming: Sequence[bytes]) -> list[Verdict]:
        calls.append(len(mails))
        if len(calls) == 3:
            stop.set()  # arrives while the third chunk is in flight, after its "commit"
        await asyncio.sleep(0.05)
        return ["processed"] * len(mails)

    cfg = config(dovecot, imap_user)
    source = ImapSource(cfg, sessions, Recorder(), batch_handler=batch, batch=4)
    await asyncio.wait_for(source.run(stop), 10)
    assert calls == [4, 4, 4]
    assert dovecot.count(imap_user, "Processed") == 12  # none left between commit and mark
    assert dovecot.count(imap_user, "INBOX") == 8


async def test_a_failing_handler_leaves_the_mail_for_a_later_pass(
    dovecot: Dovecot,
    imap_user: str,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[str] = []

    async def flaky(raw: bytes, label: str) -> Verdict:
        attempts.append(label)
        if len(attempts) == 1:
            raise RuntimeError("database is locked")
        return "retry" if len(attempts) == 2 else "processed"

    source = ImapSource(config(dovecot, imap_user), sessions, flaky)
    source.retry_delay = 0.3  # in IDLE, a retry is re-offered after this even without new mail
    dovecot.deliver(imap_user, mail("flaky"))
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    await until(lambda: dovecot.count(imap_user, "Processed") == 1, 5)
    assert attempts == ["imap:INBOX/uid=1"] * 3
    assert "handler failed for imap:INBOX/uid=1 <" in caplog.text
    assert "RuntimeError: database is locked" in caplog.text
    await stop_run(task, stop)


# -- 4. crash between commit and mark -----------------------------------------------------------


async def test_a_batch_handler_gets_each_fetch_whole_and_its_verdicts_file_the_mail(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver_many(
        imap_user,
        [
            mail("m0"),
            mail("bad", "X-Test-Quarantine: yes"),
            mail("m2"),
            mail("later", "X-Test-Retry: yes"),
            mail("m4"),
        ],
    )
    recorder = Recorder()
    calls: list[tuple[int, int]] = []

    async def batch(mails: Sequence[tuple[bytes, str]], upcoming: Sequence[bytes]) -> list[Verdict]:
        calls.append((len(mails), len(upcoming)))
        return [await recorder(raw, label) for raw, label in mails]

    cfg = config(dovecot, imap_user)
    async with ImapSource(cfg, sessions, recorder, batch_handler=batch, batch=2) as source:
        assert await source.sync_once() == 4
    # each fetch whole, with the next one (already fetched) announced
    assert calls == [(2, 2), (2, 1), (1, 0)]
    assert recorder.subjects == ["m0", "bad", "m2", "later", "m4"]
    assert sorted(dovecot.subjects(imap_user, "Processed")) == ["m0", "m2", "m4"]
    assert dovecot.subjects(imap_user, "Quarantine") == ["bad"]
    assert dovecot.subjects(imap_user, "INBOX") == ["later"]  # retry: left for later

    async def fails(mails: Sequence[tuple[bytes, str]], upcoming: Sequence[bytes]) -> list[Verdict]:
        raise RuntimeError("the store is on fire")

    async with ImapSource(cfg, sessions, recorder, batch_handler=fails) as source:
        assert await source.sync_once() == 0
    assert dovecot.subjects(imap_user, "INBOX") == ["later"]  # nothing marked


async def test_crash_after_commit_before_mark_redelivers(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for n in range(3):
        dovecot.deliver(imap_user, mail(f"m{n}"))
    calls: list[str] = []
    stuck = asyncio.Event()

    async def dies_on_second(raw: bytes, label: str) -> Verdict:
        calls.append(subject_of(raw))
        if len(calls) == 2:
            stuck.set()
            await asyncio.Event().wait()  # the process gets killed here
        return "processed"  # m0: committed, but marks happen at the end of the batch

    source = ImapSource(config(dovecot, imap_user), sessions, dies_on_second)
    task = asyncio.create_task(source.sync_once())
    await asyncio.wait_for(stuck.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == ["m0", "m1"]
    assert dovecot.count(imap_user, "INBOX") == 3  # m0 was committed but never marked
    assert dovecot.count(imap_user, "Processed") == 0

    handler = Recorder()
    async with ImapSource(config(dovecot, imap_user), sessions, handler) as fresh:
        assert await fresh.sync_once() == 3
    assert handler.subjects == ["m0", "m1", "m2"]  # at least once: nothing lost
    assert dovecot.count(imap_user, "INBOX") == 0
    assert dovecot.count(imap_user, "Processed") == 3


# -- 5. server trouble mid-run ------------------------------------------------------------------


async def test_run_survives_kick_and_server_restart(
    dovecot: Dovecot,
    imap_user: str,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    handler = Recorder()
    stop = asyncio.Event()
    task = asyncio.create_task(ImapSource(config(dovecot, imap_user), sessions, handler).run(stop))
    dovecot.deliver(imap_user, mail("before"))
    await until(lambda: dovecot.count(imap_user, "Processed") == 1, 5)

    dovecot.kick(imap_user)
    dovecot.deliver(imap_user, mail("after kick"))
    await until(lambda: dovecot.count(imap_user, "Processed") == 2, 6)
    assert "connection lost: closed by the server (BYE" in caplog.text

    await asyncio.to_thread(dovecot.stop)
    await asyncio.sleep(0.6)  # long enough to fail a reconnect or two
    await asyncio.to_thread(dovecot.start)
    dovecot.deliver(imap_user, mail("after restart"))
    await handler.wait_for(3, 8)
    assert handler.subjects == ["before", "after kick", "after restart"]
    # refused, or reset while the master shuts down: either way one line per attempt
    assert f"IMAP {dovecot.host}:{dovecot.imap_port} unreachable: " in caplog.text
    assert not task.done()
    await stop_run(task, stop)
    assert dovecot.count(imap_user, "Processed") == 3
    for record in caplog.records:
        assert record.exc_info is None, record.getMessage()  # one line each, no tracebacks


async def test_unreachable_server_is_retried_with_backoff(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_ports(1)[0]  # nobody listens here
    cfg = MailboxConfig(host="127.0.0.1", port=port, security="none", username="x", password="y")
    caplog.set_level(logging.INFO, logger=LOGGER)
    stop = asyncio.Event()
    task = asyncio.create_task(ImapSource(cfg, sessions, Recorder()).run(stop))
    await asyncio.sleep(1.7)  # attempts at 0, 0.5, 1.5 s
    assert await stop_run(task, stop) < 1
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert lines[:3] == [
        f"IMAP 127.0.0.1:{port} unreachable: ConnectionRefusedError: "
        f"[Errno 111] Connect call failed ('127.0.0.1', {port}); retrying in {delay}s"
        for delay in ("0.5", "1", "2")
    ]


async def test_a_silent_server_times_out_and_is_retried(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    async def never_greets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(never_greets, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = MailboxConfig(host="127.0.0.1", port=port, security="none", username="x", password="y")
    caplog.set_level(logging.INFO, logger=LOGGER)
    stop = asyncio.Event()
    source = ImapSource(cfg, sessions, Recorder(), command_timeout=0.3)
    task = asyncio.create_task(source.run(stop))
    await asyncio.sleep(1.0)
    assert await stop_run(task, stop) < 1
    server.close()
    await server.wait_closed()
    assert f"IMAP 127.0.0.1:{port} unreachable: no answer within 0.3s; retrying in 0.5s" in (
        caplog.text
    )


# -- 6. wrong password ---------------------------------------------------------------------------


async def test_wrong_password_keeps_retrying_and_stops_on_request(
    dovecot: Dovecot,
    imap_user: str,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cfg = config(dovecot, imap_user, password="not the password")
    stop = asyncio.Event()
    task = asyncio.create_task(ImapSource(cfg, sessions, Recorder()).run(stop))
    await asyncio.sleep(2.2)  # Dovecot answers a bad login after ~0.5 s; backoff 0.5 s, 1 s
    assert not task.done()
    assert await stop_run(task, stop) < 2
    failures = [r for r in caplog.records if "login failed" in r.getMessage()]
    assert len(failures) >= 2
    first = failures[0].getMessage()
    assert first.startswith(
        f"IMAP login failed for {imap_user} at {dovecot.host}:{dovecot.imap_port}: "
        "[AUTHENTICATIONFAILED] Authentication failed.; retrying in 0.5s"
    )
    assert failures[0].levelno == logging.ERROR

    with pytest.raises(ImapLoginError, match="AUTHENTICATIONFAILED"):
        await ImapSource(cfg, sessions, Recorder()).sync_once()


# -- 7. UIDVALIDITY change -----------------------------------------------------------------------


async def test_uidvalidity_change_resets_the_marker_and_keeps_going(
    dovecot: Dovecot,
    imap_user: str,
    sessions: async_sessionmaker[AsyncSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    folder = "Support Ü"
    dovecot.deliver(imap_user, mail("old 1"), folder=folder)
    dovecot.deliver(imap_user, mail("old 2"), folder=folder)
    handler = Recorder()
    stop = asyncio.Event()
    cfg = config(dovecot, imap_user, folder=folder)
    synced = asyncio.Event()
    source = ImapSource(cfg, sessions, handler, on_sync=synced.set)
    task = asyncio.create_task(source.run(stop))
    await asyncio.wait_for(synced.wait(), 5)
    assert handler.subjects == ["old 1", "old 2"]
    before = await imap_state(sessions, folder)
    assert before is not None
    assert before.last_uid == 2

    # an admin deletes and recreates the folder under the running daemon: new
    # UIDVALIDITY, UIDs start at 1 again. Dovecot tells the IDLE session only
    # "* NO Internal error"; the source reopens the folder.
    dovecot.delete_folder(imap_user, folder)
    dovecot.create_folder(imap_user, folder)
    assert dovecot.uidvalidity(imap_user, folder) != before.uidvalidity
    dovecot.deliver(imap_user, mail("new 1"), folder=folder)
    await handler.wait_for(3, 4)
    assert handler.subjects == ["old 1", "old 2", "new 1"]
    assert handler.seen[-1][0] == f"imap:{folder}/uid=1"
    await stop_run(task, stop)
    after = await imap_state(sessions, folder)
    assert after is not None
    assert after.uidvalidity == dovecot.uidvalidity(imap_user, folder)
    assert after.last_uid == 1
    assert "UIDVALIDITY changed" in caplog.text

    # the same while maild is not running: noticed from the stored marker at the next start
    caplog.clear()
    dovecot.delete_folder(imap_user, folder)
    dovecot.create_folder(imap_user, folder)
    dovecot.deliver(imap_user, mail("newer 1"), folder=folder)
    async with ImapSource(cfg, sessions, handler) as source:
        assert await source.sync_once() == 1
    assert handler.subjects[-1] == "newer 1"
    assert "UIDVALIDITY changed" in caplog.text
    final = await imap_state(sessions, folder)
    assert final is not None
    assert final.uidvalidity == dovecot.uidvalidity(imap_user, folder) != after.uidvalidity
    assert dovecot.count(imap_user, "Processed") == 4


# -- 8. many mails -------------------------------------------------------------------------------


async def test_a_big_backlog_is_handed_over_exactly_once(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver_many(imap_user, [mail(f"bulk {n}") for n in range(450)])
    handler = Recorder()
    async with ImapSource(config(dovecot, imap_user), sessions, handler) as source:
        handled = await asyncio.wait_for(source.sync_once(), 30)
    assert handled == 450
    assert handler.subjects == [f"bulk {n}" for n in range(450)]
    assert dovecot.count(imap_user, "INBOX") == 0
    assert dovecot.count(imap_user, "Processed") == 450


async def test_copy_store_expunge_when_the_server_has_no_move(
    dovecot: Dovecot, imap_user: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    dovecot.deliver_many(imap_user, [mail(f"m{n}") for n in range(5)])
    dovecot.deliver(imap_user, mail("q", "X-Test-Quarantine: yes"))
    handler = Recorder()
    source = ImapSource(config(dovecot, imap_user), sessions, handler, batch=2)

    original = source._connect

    async def connect_without_move(stop: asyncio.Event | None) -> Any:
        conn = await original(stop)
        conn.client.protocol.capabilities.discard("MOVE")  # pretend an older server
        return conn

    source._connect = connect_without_move  # type: ignore[method-assign]
    async with source:
        assert await source.sync_once() == 6
    assert dovecot.subjects(imap_user, "Processed") == [f"m{n}" for n in range(5)]
    assert dovecot.subjects(imap_user, "Quarantine") == ["q"]
    assert dovecot.count(imap_user, "INBOX") == 0


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_tls_and_starttls(
    dovecot: Dovecot,
    imap_user: str,
    sessions: async_sessionmaker[AsyncSession],
    security: str,
) -> None:
    if not dovecot.tls or dovecot.cert_path is None:
        pytest.skip("openssl is not installed: no certificate for the test server")
    context = ssl.create_default_context(cafile=str(dovecot.cert_path))
    port = dovecot.imaps_port if security == "tls" else dovecot.imap_port
    dovecot.deliver(imap_user, mail("secret"))
    handler = Recorder()
    cfg = config(dovecot, imap_user, security=security, port=port)
    async with ImapSource(cfg, sessions, handler, ssl_context=context) as source:
        assert await source.sync_once() == 1
    assert handler.subjects == ["secret"]
    logins = [
        line
        for line in (dovecot.root / "dovecot.log").read_text().splitlines()
        if f"Login: user=<{imap_user}>" in line
    ]
    assert logins
    assert all(", TLS," in line for line in logins)  # STARTTLS really upgraded

    # the default context does not trust the self-signed certificate: a clear error
    with pytest.raises(ImapError, match="CERTIFICATE_VERIFY_FAILED"):
        await ImapSource(cfg, sessions, Recorder()).sync_once()
