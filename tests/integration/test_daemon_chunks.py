"""The daemon takes IMAP mail a fetch at a time: one transaction for the chunk, marks after it.

Against the session's Dovecot and a real SQLite store, through the daemon's
own handler (:meth:`Daemon.handle_batch`) and, for the crash, a real
``maild run`` killed with SIGKILL right after a chunk committed. What a
helpdesk operator would notice: a mail that fails inside a chunk ends up in
Quarantine alone while the others are filed as processed; a chunk committed
but not yet marked is read again after a crash and changes nothing the
second time (no second ticket, no second acknowledgment); a leader that was
replaced while it worked commits nothing of its chunk and leaves the mail on
the server; the parsing worker dies with the daemon.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from maild.config import load_config
from maild.mail.imap import ImapSource, Verdict
from maild.service.daemon import Daemon
from maild.service.lease import Lease
from maild.service.pipeline import Pipeline
from maild.store.db import make_sessionmaker
from tests.conftest import make_mail
from tests.integration.daemon_proc import MaildProcess, gone, maild_env, message_id_of, wait_until
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_sink import ThreadedSink

pytestmark = pytest.mark.integration


def requests(n: int, tag: str) -> list[bytes]:
    """``n`` new requests, each from a sender of its own (each gets an acknowledgment)."""
    return [
        make_mail(
            frm=f"User {i} <{tag}{i}@uni{i % 3}.example>",
            subject=f"{tag} {i}: the hub is slow",
            message_id=f"<{tag}-{i}@uni{i % 3}.example>",
        ).as_bytes()
        for i in range(n)
    ]


@pytest.fixture
async def daemon(maild: MaildProcess, dovecot: Dovecot, imap_user: str) -> AsyncIterator[Daemon]:
    """The daemon's objects on the test's store, holding the leader lease, no tasks running."""
    maild.configure(imap=(dovecot, imap_user), leader_lease="30s")
    maild.cli("db", "upgrade")
    daemon = Daemon(load_config(maild.config), maild.config)
    daemon.leader_pipeline.store = daemon._fenced_store()
    assert await daemon.lease.acquire()
    try:
        yield daemon
    finally:
        await daemon.chunks.aclose()
        if daemon.leader_pipeline.store is not None:
            await daemon.leader_pipeline.store.aclose()
        await daemon.engine.dispose()


def source_for(daemon: Daemon, chunks: list[int]) -> ImapSource:
    """The daemon's IMAP source, recording the size of each chunk it hands over."""

    async def batch(mails: Sequence[tuple[bytes, str]], upcoming: Sequence[bytes]) -> list[Verdict]:
        chunks.append(len(mails))
        return await daemon.handle_batch(mails, upcoming)

    assert daemon.config.mailbox is not None
    return ImapSource(
        daemon.config.mailbox, daemon.leader_sessions, daemon.handle_mail, batch_handler=batch
    )


async def test_a_mail_failing_inside_a_chunk_is_quarantined_alone(
    daemon: Daemon,
    maild: MaildProcess,
    dovecot: Dovecot,
    imap_user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raws = requests(6, "q")
    broken = "q-3@uni0.example"
    process = Pipeline._process

    async def fails_on_one(self: Pipeline, session: Any, mail: Any, *args: Any) -> Any:
        outcome = await process(self, session, mail, *args)
        if mail.message_id == broken:
            raise RuntimeError("a bug that only this mail finds")  # after its writes
        return outcome

    monkeypatch.setattr(Pipeline, "_process", fails_on_one)
    dovecot.deliver_many(imap_user, raws)
    chunks: list[int] = []
    async with source_for(daemon, chunks) as source:
        assert await source.sync_once() == 6

    assert chunks == [6]  # one fetch, one chunk, one transaction
    assert dovecot.subjects(imap_user, "Quarantine") == ["q 3: the hub is slow"]
    assert dovecot.count(imap_user, "Processed") == 5
    assert dovecot.count(imap_user, "INBOX") == 0
    stored = {mid for (mid,) in maild.sql("select message_id from messages where direction='in'")}
    assert stored == {message_id_of(raw) for raw in raws} - {broken}
    assert maild.count("select count(*) from tickets") == 5
    (reason,) = maild.sql("select reason from quarantine")
    assert "a bug that only this mail finds" in reason[0]
    # the others' acknowledgments are queued; nothing of the broken mail's
    assert maild.count("select count(*) from outbox where template='ack'") == 5


async def test_a_replaced_leader_commits_nothing_of_its_chunk(
    daemon: Daemon,
    maild: MaildProcess,
    dovecot: Dovecot,
    imap_user: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dovecot.deliver_many(imap_user, requests(3, "d"))
    # while this instance was frozen, another saw the lease run out and took the role;
    # this one's own clock says it still leads
    ttl = daemon.config.database.leader_lease
    later = datetime.now(UTC) + ttl + timedelta(seconds=1)
    other = Lease(make_sessionmaker(daemon.engine), "leader", "elsewhere:2:bbbb", ttl)
    other.clock = lambda: later
    assert await other.acquire()
    assert daemon.lease.valid

    chunks: list[int] = []
    with caplog.at_level(logging.INFO, logger="maild.service.daemon"):
        async with source_for(daemon, chunks) as source:
            assert await source.sync_once() == 0
    assert chunks == [3]
    assert "3 mails left for the new leader, none committed" in caplog.text
    assert dovecot.count(imap_user, "INBOX") == 3  # for the new leader to take
    assert maild.count("select count(*) from messages") == 0
    assert maild.count("select count(*) from outbox") == 0


RUN_DAEMON = textwrap.dedent(
    """
    import asyncio, logging, multiprocessing, os, signal, sys
    from pathlib import Path
    from maild.config import load_config
    from maild.service.daemon import Daemon

    logging.basicConfig(level=logging.INFO)
    config, pids, crash = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "crash"
    daemon = Daemon(load_config(config), config)
    daemon.chunks.parse_ahead = True  # whatever the CPUs: the worker is under test
    handle = daemon.handle_batch

    async def watched(mails, upcoming):
        verdicts = await handle(mails, upcoming)
        pids.write_text(" ".join(str(p.pid) for p in multiprocessing.active_children()))
        if crash:
            # committed, not yet marked on the server: the process dies here
            os.kill(os.getpid(), signal.SIGKILL)
        return verdicts

    daemon.handle_batch = watched
    asyncio.run(daemon.run())
    """
)


def run_daemon(maild: MaildProcess, pids: Path, how: str) -> subprocess.Popen[bytes]:
    """``maild run`` with the parsing worker on, noting its pid after each chunk in ``pids``;
    with ``how == "crash"`` it kills itself (SIGKILL) after the first chunk committed.
    Its log goes to ``maild.root / "worker-run.log"``."""
    with (maild.root / "worker-run.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUN_DAEMON, str(maild.config), str(pids), how],
            env=maild_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def run_log(maild: MaildProcess) -> str:
    return (maild.root / "worker-run.log").read_text(errors="replace")


def test_kill_9_between_a_chunks_commit_and_its_marks_reads_it_again_and_sends_once(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    raws = requests(30, "k")  # chunks of 4: the worker parses the next one meanwhile
    dovecot.deliver_many(imap_user, raws)
    with ThreadedSink() as sink:
        # the restarted daemon waits for the dead one's lease to run out: keep it short
        maild.configure(imap=(dovecot, imap_user), smtp_port=sink.port, leader_lease="2s")
        maild.cli("db", "upgrade")
        pids = maild.root / "worker-pids"
        killed = run_daemon(maild, pids, "crash")
        assert killed.wait(timeout=120) == -9, run_log(maild)[-3000:]

        # the first chunk is in the store, but nothing was marked on the server
        first = Daemon.chunk_size(timedelta(seconds=2))
        assert first == 4
        assert maild.count("select count(*) from messages where direction='in'") == first, run_log(
            maild
        )[-3000:]
        assert dovecot.count(imap_user, "INBOX") == 30
        assert dovecot.count(imap_user, "Processed") == 0
        # the parsing worker did not outlive the daemon
        workers = [int(pid) for pid in pids.read_text().split()]
        assert workers, "the daemon had started no parsing worker"
        wait_until(lambda: all(gone(pid) for pid in workers), 15, "the worker to end")

        maild.start()

        def finished() -> bool:
            rows = maild.sql("select status from outbox")
            return (
                dovecot.count(imap_user, "INBOX") == 0
                and len(rows) == 2 * 30
                and all(status == "sent" for (status,) in rows)
            )

        wait_until(finished, 120, "every mail filed and every outbox row sent")
        assert maild.stop() == 0
        received = list(sink.received)

    assert dovecot.count(imap_user, "Processed") == 30
    stored = Counter(
        mid for (mid,) in maild.sql("select message_id from messages where direction='in'")
    )
    assert stored == Counter(message_id_of(raw) for raw in raws)  # each once
    assert maild.count("select count(*) from tickets") == 30
    acks = Counter(
        ticket for (ticket,) in maild.sql("select ticket_id from outbox where template='ack'")
    )
    assert len(acks) == 30 and set(acks.values()) == {1}
    # at the sink: every queued mail once, nothing twice
    queued = {
        mid
        for (mid,) in maild.sql(
            "select m.message_id from outbox o join messages m on m.id=o.message_pk"
        )
    }
    at_sink = Counter(message_id_of(m.content) for m in received)
    assert set(at_sink) == queued and set(at_sink.values()) == {1}
    # the first chunk, read again, was recognised by its Message-IDs, not stored again
    assert maild.this_run().count("duplicate ticket=") == first
    assert "Traceback" not in maild.logtext() + run_log(maild)


def test_a_backlog_is_filed_and_acknowledged_once_each_while_the_sender_takes_its_turns(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    """``maild run`` on a backlog in chunks of 4: before each chunk the sender sends what
    the last one queued, and (without a parsing worker) the chunk is parsed meanwhile.
    A mail that cannot be parsed, in a later chunk, goes to Quarantine alone."""
    raws = requests(14, "t")
    junk = b"X-Junk: yes\r\n\r\nnothing a helpdesk could file\r\n"
    raws.insert(9, junk)  # the third chunk
    dovecot.deliver_many(imap_user, raws)
    with ThreadedSink() as sink:
        maild.configure(imap=(dovecot, imap_user), smtp_port=sink.port, leader_lease="2s")
        maild.cli("db", "upgrade")
        maild.start()

        def finished() -> bool:
            rows = maild.sql("select status from outbox")
            return (
                dovecot.count(imap_user, "INBOX") == 0
                and len(rows) == 2 * 14  # an acknowledgment and a steward copy each
                and all(status == "sent" for (status,) in rows)
            )

        wait_until(finished, 120, "every mail filed and every acknowledgment sent")
        assert maild.stop() == 0
        received = list(sink.received)

    assert dovecot.count(imap_user, "Processed") == 14
    assert dovecot.count(imap_user, "Quarantine") == 1
    (reason,) = maild.sql("select reason from quarantine")
    assert "no From, Message-ID, Subject or Date header" in reason[0]
    stored = Counter(
        mid for (mid,) in maild.sql("select message_id from messages where direction='in'")
    )
    assert stored == Counter(message_id_of(raw) for raw in raws if raw != junk)
    acks = Counter(
        ticket for (ticket,) in maild.sql("select ticket_id from outbox where template='ack'")
    )
    assert len(acks) == 14 and set(acks.values()) == {1}
    at_sink = Counter(message_id_of(m.content) for m in received)
    queued = {
        mid
        for (mid,) in maild.sql(
            "select m.message_id from outbox o join messages m on m.id=o.message_pk"
        )
    }
    assert set(at_sink) == queued and set(at_sink.values()) == {1}
    assert "Traceback" not in maild.logtext()


def test_the_parsing_worker_ends_with_a_stopped_daemon(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    dovecot.deliver_many(imap_user, requests(150, "w"))  # chunks of 60
    maild.configure(imap=(dovecot, imap_user))
    maild.cli("db", "upgrade")
    pids = maild.root / "worker-pids"
    proc = run_daemon(maild, pids, "run")
    try:
        wait_until(lambda: dovecot.count(imap_user, "INBOX") == 0, 120, "the backlog filed")
        workers = [int(pid) for pid in pids.read_text().split()]
        assert workers, "no parsing worker was started for a backlog"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, run_log(maild)[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wait_until(lambda: all(gone(pid) for pid in workers), 15, "the worker to end")
    assert maild.count("select count(*) from tickets") == 150
    assert "Traceback" not in run_log(maild)
