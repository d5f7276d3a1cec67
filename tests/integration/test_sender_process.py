"""``maild run`` sends its mail from a process of its own (with 2 CPUs or more).

A real ``maild run`` against the session's Dovecot, a threaded aiosmtpd sink
and an SQLite store. What an operator notices: the acknowledgments arrive,
the sender's lines are in the daemon's log as before, and no process of
maild outlives the daemon, whether it was stopped or killed with SIGKILL (a
sender left behind would go on sending).
"""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest

from maild.service import daemon as daemon_mod
from maild.service.sendproc import SENDER_NICE, SenderProcess
from tests.conftest import make_mail
from tests.integration.daemon_proc import (
    MaildProcess,
    children,
    gone,
    message_id_of,
    spawned,
    wait_until,
)
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_sink import ThreadedSink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        daemon_mod._cores() < daemon_mod.SENDER_PROCESS_CORES,
        reason="the sender runs in the daemon's process with one CPU",
    ),
]


def filed_and_acknowledged(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str, sink: ThreadedSink, *, one_cpu: bool
) -> None:
    """Three requests filed and acknowledged by a daemon started now (on one CPU: the
    daemon inherits this process's CPU affinity at start)."""
    raws = [
        make_mail(
            frm=f"User {i} <sp{i}@uni.example>",
            subject=f"sp {i}: the hub is slow",
            message_id=f"<sp-{i}@uni.example>",
        ).as_bytes()
        for i in range(3)
    ]
    maild.configure(imap=(dovecot, imap_user), smtp_port=sink.port)
    maild.cli("db", "upgrade")
    dovecot.deliver_many(imap_user, raws)
    allowed = os.sched_getaffinity(0)
    if one_cpu:
        os.sched_setaffinity(0, {min(allowed)})
    try:
        maild.start()
    finally:
        os.sched_setaffinity(0, allowed)

    def all_sent() -> bool:
        rows = maild.sql("select status from outbox")
        return len(rows) == 2 * 3 and all(status == "sent" for (status,) in rows)

    wait_until(all_sent, 60, "every acknowledgment and steward copy sent")
    assert len({message_id_of(m.content) for m in sink.received}) == 2 * 3


def sending(maild: MaildProcess, dovecot: Dovecot, imap_user: str, sink: ThreadedSink) -> set[int]:
    """Three requests filed and acknowledged by a running daemon; its child processes."""
    filed_and_acknowledged(maild, dovecot, imap_user, sink, one_cpu=False)
    assert maild.proc is not None
    kids = children(maild.proc.pid)
    assert kids, "maild run started no sender process"

    # the sender's own lines, in the daemon's log, as when it ran in the daemon (they
    # come over the pipe a moment after the rows are committed as sent)
    def sent() -> list[str]:
        lines = maild.logtext().splitlines()
        return [line for line in lines if "maild.mail.outbox" in line and " sent to " in line]

    wait_until(lambda: len(sent()) >= 2 * 3, 15, "the sender's lines in the daemon's log")
    assert len(sent()) == 2 * 3, sent()
    return kids


def test_on_one_cpu_the_daemon_sends_itself(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    # a small VM: maild run restricted to one CPU starts no process of its own and
    # still files and acknowledges every mail
    with ThreadedSink() as sink:
        filed_and_acknowledged(maild, dovecot, imap_user, sink, one_cpu=True)
        assert maild.proc is not None
        assert not children(maild.proc.pid), "a process started on one CPU"
        assert maild.stop() == 0
    assert "Traceback" not in maild.logtext()


def test_with_a_backlog_the_daemon_comes_before_its_sender_process(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    # `top` shows the sender at a lower priority (higher nice) than maild run, so a
    # backlog is filed first and the mail goes out in the time that leaves
    with ThreadedSink() as sink:
        kids = sending(maild, dovecot, imap_user, sink)
        assert maild.proc is not None
        daemon = os.getpriority(os.PRIO_PROCESS, maild.proc.pid)
        nices = {os.getpriority(os.PRIO_PROCESS, pid) for pid in kids}
        assert min(19, daemon + SENDER_NICE) in nices
        assert maild.stop() == 0


def test_the_sender_process_ends_with_a_killed_daemon(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    with ThreadedSink() as sink:
        kids = sending(maild, dovecot, imap_user, sink)
        maild.kill()
        wait_until(lambda: all(gone(pid) for pid in kids), 15, "the sender process to end")


def test_the_sender_process_ends_with_a_stopped_daemon(
    maild: MaildProcess, dovecot: Dovecot, imap_user: str
) -> None:
    with ThreadedSink() as sink:
        kids = sending(maild, dovecot, imap_user, sink)
        assert maild.stop() == 0
        wait_until(lambda: all(gone(pid) for pid in kids), 15, "the sender process to end")
    assert "Traceback" not in maild.logtext()


async def test_a_sender_ended_by_the_units_stop_signal_while_starting_is_a_stop(
    tmp_path: Path,
) -> None:
    # systemd's SIGTERM reaches every process of the unit: a sender process still
    # starting up (before it ignores the signal) dies of it. That is the daemon's stop
    # on its way, not a failure to log with a traceback and restart.
    with ThreadedSink() as sink:
        sender = SenderProcess(
            sink.smtp_config(),
            f"sqlite+aiosqlite:///{tmp_path / 'maild.db'}",
            claim_for=timedelta(seconds=30),
        )
        stop = asyncio.Event()
        running = asyncio.create_task(sender.run(stop))
        kids: set[int] = set()
        for _ in range(5000):  # the child appears at once; it starts up for ~0.3 s
            # (not multiprocessing's resource tracker, which ignores SIGTERM)
            kids = {pid for pid in children(os.getpid()) if spawned(pid)}
            if kids:
                break
            await asyncio.sleep(0.002)
        assert kids, "no sender process started"
        for pid in kids:
            os.kill(pid, signal.SIGTERM)
        for _ in range(1000):
            if all(gone(pid) for pid in kids):
                break
            await asyncio.sleep(0.01)
        assert all(gone(pid) for pid in kids), "the signal came after the start-up"
        await asyncio.sleep(0.5)  # the daemon's own stop comes a moment later
        stop.set()
        async with asyncio.timeout(10):
            await running  # returns: no "the sender process ended" error
