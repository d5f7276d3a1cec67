"""``maild run`` killed, refused and cut off: no mail is lost, none is handled twice.

The daemon runs as a real process against the session's Dovecot and a
threaded aiosmtpd sink. The guarantees under test (``maild/mail/imap.py``,
``maild/mail/outbox.py``, ``maild/service/pipeline.py``):

- a mail is moved to Processed only after its transaction committed, and a
  Message-ID is stored once, so a crash anywhere re-reads at most some mail
  and changes nothing the second time;
- every outbound mail is an outbox row committed with that transaction, and a
  row is marked sent in its own commit right after the relay's ``250``: a
  crash between the two is the one way a mail goes out twice;
- a relay that refuses (4xx, 5xx) or is away loses nothing and does not stop
  the daemon; an IMAP server restarted under it is reconnected to.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_mail
from tests.integration.daemon_proc import MaildProcess, maild_env, message_id_of, wait_until
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_sink import Received, ThreadedSink

pytestmark = pytest.mark.integration

SEED = 20261125
KILLS = 10
#: The sink holds each 250 this long after recording the mail: a kill then
#: lands in the accept->commit window often enough to be exercised.
ACCEPT_DELAY = 0.02


# -- helpers -------------------------------------------------------------------------------


def batch(
    new: int, replies: int, senders: int, tag: str
) -> tuple[list[bytes], dict[str, str], dict[str, str]]:
    """``new`` requests from ``senders`` people, and a reply (by In-Reply-To) to each
    of the first ``replies`` requests.

    Returns the raw mails in delivery order (every reply after its request:
    some between later requests, the rest at the end), every Message-ID ->
    its sender, and every reply's Message-ID -> its request's.
    """
    raws: list[bytes] = []
    sender_of: dict[str, str] = {}
    parent_of: dict[str, str] = {}
    requests: list[tuple[str, str, str]] = []

    def reply(j: int) -> None:
        pmid, addr, subject = requests[j]
        mid = f"{tag}-re-{j}@{addr.split('@')[1]}"
        mail = make_mail(
            frm=f"User <{addr}>",
            subject=f"Re: {subject}",
            body="Any news?\n",
            message_id=f"<{mid}>",
            in_reply_to=f"<{pmid}>",
            references=f"<{pmid}>",
        )
        raws.append(mail.as_bytes())
        sender_of[mid] = addr
        parent_of[mid] = pmid

    for i in range(new):
        s = i % senders
        addr = f"user{s}@uni{s}.example"
        mid = f"{tag}-new-{i}@uni{s}.example"
        subject = f"Request {i}: the hub is slow"
        mail = make_mail(frm=f"User {s} <{addr}>", subject=subject, message_id=f"<{mid}>")
        raws.append(mail.as_bytes())
        requests.append((mid, addr, subject))
        sender_of[mid] = addr
        if i % 2 == 1 and i // 2 < replies:
            reply(i // 2)
    for j in range(len(parent_of), replies):
        reply(j)
    return raws, sender_of, parent_of


def slow_accept(sink: ThreadedSink, delay: float) -> None:
    """Make the sink record each mail, then wait ``delay`` s before its ``250``."""
    record = sink.handler.handle_DATA

    async def handle_data(server: Any, session: Any, envelope: Any) -> str:
        status = await record(server, session, envelope)
        if status.startswith("250"):
            await asyncio.sleep(delay)
        return status

    sink.handler.handle_DATA = handle_data  # type: ignore[method-assign]


def settle(sink: ThreadedSink) -> int:
    """Wait until the sink's count stops changing for 0.2 s (a dead client's last mail)."""
    count, since = len(sink.received), time.monotonic()
    while time.monotonic() - since < 0.2:
        time.sleep(0.02)
        if len(sink.received) != count:
            count, since = len(sink.received), time.monotonic()
    return count


def processed_message_ids(dovecot: Dovecot, user: str, folder: str = "Processed") -> list[str]:
    if not dovecot.exists(user, folder):
        return []
    out = dovecot.doveadm(
        "-f", "tab", "fetch", "-u", user, "hdr.message-id", "mailbox", folder, "all"
    ).stdout.decode()
    return [line.strip().strip("<>") for line in out.splitlines()[1:] if line.strip()]


def inbound(maild: MaildProcess) -> Counter[str]:
    return Counter(
        mid for (mid,) in maild.sql("select message_id from messages where direction = 'in'")
    )


def outbox(maild: MaildProcess) -> list[dict[str, Any]]:
    rows = maild.sql(
        "select o.id, o.status, o.template, o.ticket_id, o.attempts, o.last_error, m.message_id "
        "from outbox o join messages m on m.id = o.message_pk order by o.id"
    )
    keys = ("id", "status", "template", "ticket", "attempts", "last_error", "message_id")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def sink_ids(received: list[Received]) -> list[str]:
    return [message_id_of(r.content) for r in received]


def wait_logged(maild: MaildProcess, text: str, timeout: float = 30.0) -> None:
    """Until this run of the daemon has logged ``text`` (failing if it dies first)."""

    def logged() -> bool:
        assert maild.alive, f"maild exited early:\n{maild.this_run()[-3000:]}"
        return text in maild.this_run()

    wait_until(logged, timeout, repr(text))


# -- kill -9 ---------------------------------------------------------------------------------


def test_kill_9_at_many_points_loses_nothing_and_sends_once(
    dovecot: Dovecot, imap_user: str, maild: MaildProcess
) -> None:
    """SIGKILL ``maild run`` KILLS times, restarting it at once, then let it finish.

    Odd runs get a fresh wave of mail and die shortly after the IMAP login
    (while ingesting); even runs die a little after start-up (while sending).
    """
    raws, sender_of, parent_of = batch(new=20, replies=20, senders=5, tag="k9")
    assert len(raws) == 40
    size = -(-len(raws) // ((KILLS + 1) // 2))  # one wave per odd run
    waves = [raws[i : i + size] for i in range(0, len(raws), size)]

    with ThreadedSink() as sink:
        slow_accept(sink, ACCEPT_DELAY)
        # A restarted daemon waits for the dead one's leader lease to run out
        # before it reads IMAP (its sender starts at once): 2 s keeps it short.
        maild.configure(imap=(dovecot, imap_user), smtp_port=sink.port, leader_lease="2s")
        # The schema exists before the first kill: a kill while it is being
        # built is its own test below.
        maild.cli("db", "upgrade")

        rng = random.Random(SEED)
        boundaries: list[int] = []  # sink count when each killed run was dead and settled
        delivered = 0
        for k in range(1, KILLS + 1):
            if k % 2:
                wave = waves.pop(0)
                dovecot.deliver_many(imap_user, wave)
                delivered += len(wave)
                anchor, delay = "IMAP connected", rng.uniform(0.02, 0.3)
            else:
                anchor, delay = "maild running", rng.uniform(0.05, 0.8)
            maild.start()
            wait_logged(maild, anchor)
            time.sleep(delay)
            maild.kill()
            boundaries.append(settle(sink))
            rows = outbox(maild)
            stored = sum(inbound(maild).values())
            sent = sum(r["status"] == "sent" for r in rows)
            print(
                f"kill {k}: {delay:.3f} s after {anchor!r}: stored "
                f"{stored}/{delivered} mails, {sent}/{len(rows)} outbox rows sent, "
                f"{boundaries[-1]} mails at the sink, {dovecot.count(imap_user)} in INBOX"
            )
        assert not waves

        mark = len(maild.notify.lines)
        maild.start()
        maild.notify.wait("READY=1", after=mark)

        def finished() -> bool:
            rows = outbox(maild)
            return (
                len(rows) == 60
                and all(r["status"] == "sent" for r in rows)
                and dovecot.count(imap_user, "INBOX") == 0
            )

        wait_until(finished, 60, "every mail processed and every outbox row sent")
        settle(sink)
        assert maild.stop() == 0
        received = list(sink.received)

    # Every mail of the batch is on exactly one ticket, replies on their request's.
    stored = inbound(maild)
    assert set(stored) == set(sender_of)
    assert all(n == 1 for n in stored.values()), stored
    ticket_of = dict(maild.sql("select message_id, ticket_id from messages where direction='in'"))
    assert len({ticket_of[mid] for mid in sender_of if mid not in parent_of}) == 20
    for reply, request in parent_of.items():
        assert ticket_of[reply] == ticket_of[request], reply
    assert maild.count("select count(*) from tickets") == 20
    assert maild.count("select count(*) from quarantine") == 0

    # Nothing left unprocessed on the server, nothing moved twice.
    assert dovecot.count(imap_user, "INBOX") == 0
    assert sorted(processed_message_ids(dovecot, imap_user)) == sorted(sender_of)

    # The expected outbound mail, once each in the outbox.
    rows = outbox(maild)
    by_ticket: dict[int, Counter[str]] = {}
    for row in rows:
        by_ticket.setdefault(row["ticket"], Counter())[row["template"]] += 1
    assert len(by_ticket) == 20
    for ticket, templates in by_ticket.items():
        assert templates == Counter(ack=1, steward_new=1, requester_reply=1), ticket
    acks = {r["message_id"]: r for r in rows if r["template"] == "ack"}
    ack_rcpts = {
        message_id_of(m.content): m.rcpt_tos for m in received if message_id_of(m.content) in acks
    }
    requesters = dict(maild.sql("select id, requester from tickets"))
    for mid, row in acks.items():
        assert ack_rcpts[mid] == [requesters[row["ticket"]]]

    # At the sink: each outbox row at least once, nothing we did not queue.
    seen = Counter(sink_ids(received))
    expected = {r["message_id"] for r in rows}
    assert set(seen) == expected
    # A row goes out again only when a kill fell between the relay's 250 and
    # the commit that marks it sent: then that copy was the last mail the
    # killed run delivered, and the next run sends the row again (and may be
    # killed in the same window too). So every copy but a row's last sits
    # right before a kill's boundary, and there are at most KILLS extra copies.
    order = sink_ids(received)
    extra = {mid: n - 1 for mid, n in seen.items() if n > 1}
    again = sum("duplicate ticket=" in line for line in maild.logtext().splitlines())
    print(f"sent again: {extra or 'none'}; run boundaries at the sink: {boundaries}")
    print(f"mails read again from IMAP after a kill and recognised: {again}")
    assert sum(extra.values()) <= KILLS
    for mid in extra:
        copies = [i for i, m in enumerate(order) if m == mid]
        for i in copies[:-1]:
            assert i + 1 in boundaries, (
                f"{mid} went out {len(copies)} times, but its copy #{i} was not the last "
                f"mail of a killed run (runs ended at {boundaries})"
            )
    assert "Traceback" not in maild.logtext()


# -- the relay refuses, then is away ---------------------------------------------------------


def outbox_json(maild: MaildProcess, *args: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(maild.cli("outbox", "--json", *args).stdout)
    return rows


def test_smtp_refusals_and_outage_keep_the_mail(
    dovecot: Dovecot, imap_user: str, maild: MaildProcess
) -> None:
    """451 defers, 550 fails (and ``outbox --retry`` brings it back), down waits.

    The first retry of a deferred row comes 30 s later (``OutboxSender``'s
    backoff, not in the config), so the test never waits for one: it checks
    the deferral, and delivers the 550 rows through ``--retry`` and SIGHUP.
    """

    def request(n: int) -> bytes:
        return make_mail(
            frm=f"Requester {n} <req{n}@uni.example>",
            subject=f"Problem {n}",
            message_id=f"<smtp-{n}@uni.example>",
        ).as_bytes()

    def rows_of(ticket: int) -> list[dict[str, Any]]:
        return [r for r in outbox_json(maild) if r["ticket"] == ticket]

    with ThreadedSink() as sink:
        maild.configure(imap=(dovecot, imap_user), smtp_port=sink.port)

        # 451 to every RCPT: the mail is ingested, its outbox rows wait.
        sink.set_mode("tempfail_rcpt")
        dovecot.deliver(imap_user, request(1))
        maild.start()
        wait_until(
            lambda: len(outbox(maild)) == 2 and all(r["attempts"] >= 1 for r in outbox(maild)),
            30,
            "two attempts refused with 451",
        )
        deferred = rows_of(1)
        assert sorted(r["template"] for r in deferred) == ["ack", "steward_new"]
        for row in deferred:
            assert row["status"] == "queued"
            assert row["attempts"] >= 1
            assert "451" in row["last_error"]
            assert row["next_attempt_at"] is not None
        assert sink.received == []
        assert maild.count("select count(*) from messages where message_id = 'smtp-1@uni.example'")
        wait_until(lambda: dovecot.count(imap_user, "INBOX") == 0, 30, "INBOX empty")
        assert dovecot.count(imap_user, "Processed") == 1

        # 550 to every RCPT: new rows fail at once with the server's text.
        sink.set_mode("permfail_rcpt")
        dovecot.deliver(imap_user, request(2))
        wait_until(
            lambda: len(rows_of(2)) == 2 and all(r["status"] == "failed" for r in rows_of(2)),
            30,
            "the second ticket's mail to fail with 550",
        )
        failed = rows_of(2)
        for row in failed:
            assert "550" in row["last_error"]
            assert "No such user here" in row["last_error"]
        listed = outbox_json(maild, "--failed")
        assert {r["id"] for r in listed} == {r["id"] for r in failed}
        assert all(r["status"] == "queued" for r in rows_of(1)), "the 451 rows are untouched"

        # The relay takes mail again; the operator requeues the failed rows and
        # the running daemon notices them at once (no signal, no minute's wait).
        sink.set_mode("accept")
        for row in failed:
            out = maild.cli("outbox", "--retry", str(row["id"])).stdout
            assert f"outbox row {row['id']} queued again" in out
        assert outbox_json(maild, "--failed") == []
        wait_until(
            lambda: all(r["status"] == "sent" for r in rows_of(2)), 10, "the requeued rows sent"
        )
        settle(sink)
        retried = {r["message_id"] for r in outbox(maild) if r["ticket"] == 2}
        seen = Counter(sink_ids(sink.received))
        assert all(seen[mid] == 1 for mid in retried), seen
        assert maild.alive

        # The relay is away: rows stay queued with the reason, the daemon stays up.
        sink.set_mode("down")
        watchdog_mark = len(maild.notify.lines)
        dovecot.deliver(imap_user, request(3))
        wait_until(
            lambda: len(rows_of(3)) == 2 and all(r["attempts"] >= 1 for r in rows_of(3)),
            30,
            "attempts against the stopped relay",
        )
        for row in rows_of(3):
            assert row["status"] == "queued"
            assert "cannot connect" in row["last_error"], row["last_error"]
        maild.notify.wait("WATCHDOG=1", timeout=10, after=watchdog_mark)
        assert maild.alive

        # Nothing lost: every row is sent (and arrived once) or still queued.
        seen = Counter(sink_ids(sink.received))
        for row in outbox(maild):
            if row["status"] == "sent":
                assert seen[row["message_id"]] == 1, row
            else:
                assert row["status"] == "queued", row
                assert seen[row["message_id"]] == 0, row
        assert dovecot.count(imap_user, "INBOX") == 0
        assert dovecot.count(imap_user, "Processed") == 3
        assert maild.stop() == 0
    log = maild.logtext()
    assert "Traceback" not in log, log[-3000:]


# -- Dovecot restarted under the daemon ------------------------------------------------------


def test_dovecot_restart_mid_fetch(dovecot: Dovecot, imap_user: str, maild: MaildProcess) -> None:
    """Dovecot stops (sessions kicked) and starts again while 200 mails are read.

    The session's server is restarted on the same ports; other tests only see
    a fresh connection.
    """
    raws, sender_of, parent_of = batch(new=150, replies=50, senders=50, tag="dr")
    assert len(raws) == 200
    dovecot.deliver_many(imap_user, raws)
    maild.configure(imap=(dovecot, imap_user))  # no relay: this is about IMAP
    maild.start()

    wait_until(lambda: sum(inbound(maild).values()) >= 5, 60, "the first mails stored")
    at_restart = sum(inbound(maild).values())
    dovecot.stop()
    dovecot.start()
    print(f"Dovecot restarted when {at_restart}/200 mails were stored")

    def finished() -> bool:
        assert maild.alive, maild.this_run()[-3000:]
        return dovecot.count(imap_user, "INBOX") == 0 and len(inbound(maild)) == 200

    assert at_restart < 200, "the restart came too late to interrupt anything"
    wait_until(finished, 90, "every mail stored and moved after the restart")

    stored = inbound(maild)
    assert set(stored) == set(sender_of)
    assert all(n == 1 for n in stored.values())
    ticket_of = dict(maild.sql("select message_id, ticket_id from messages where direction='in'"))
    for reply, request in parent_of.items():
        assert ticket_of[reply] == ticket_of[request], reply
    assert maild.count("select count(*) from tickets") == 150
    assert maild.count("select count(*) from quarantine") == 0
    assert sorted(processed_message_ids(dovecot, imap_user)) == sorted(sender_of)
    log = maild.this_run()
    assert "connection lost" in log, "the restart did not cut a session"
    assert log.count("IMAP connected") >= 2, "no reconnection was logged"
    assert maild.stop() == 0
    assert "Traceback" not in maild.this_run()


# -- kill -9 while the store is created ----------------------------------------------------


def test_kill_9_while_the_first_start_builds_the_schema(tmp_path: Path) -> None:
    """A daemon killed while creating its brand-new store must come up the next time.

    The child runs exactly what ``maild run`` does first (``prepare`` on a new
    SQLite file) and is SIGKILLed right after one of the CREATE TABLEs. Doing
    it at a statement boundary makes the timing exact; a kill at a random
    moment of the ~50 ms the schema takes lands somewhere in the same list.
    """
    maild = MaildProcess(tmp_path)
    try:
        script = textwrap.dedent(
            f"""
            import asyncio, os, signal
            from sqlalchemy import event
            from maild.store.db import make_engine, prepare

            engine = make_engine("sqlite+aiosqlite:///{maild.db}")

            @event.listens_for(engine.sync_engine, "after_cursor_execute")
            def crash(conn, cursor, statement, *args):
                if statement.lstrip().startswith("CREATE TABLE messages"):
                    os.kill(os.getpid(), signal.SIGKILL)

            asyncio.run(prepare(engine))
            """
        )
        child = subprocess.run(
            [sys.executable, "-c", script], env=maild_env(), capture_output=True, timeout=60
        )
        assert child.returncode == -signal.SIGKILL, child.stderr.decode()

        maild.start()
        wait_until(
            lambda: not maild.alive or "READY=1" in maild.notify.lines, 30, "READY=1 or an exit"
        )
        ready = maild.alive and "READY=1" in maild.notify.lines
        assert ready, (
            "maild does not start after being killed while it created its schema:\n"
            + maild.this_run()[-1500:]
            + "\n`maild db upgrade` then says:\n"
            + maild.cli("db", "upgrade", check=False).stderr[-600:]
        )
        assert maild.stop() == 0
    finally:
        maild.close()
