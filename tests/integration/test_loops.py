"""Mail loops with a real autoresponder: maild's automatic mail stays bounded.

The relay maild sends through is an aiosmtpd server whose handler plays the
autoresponders: every mail it takes for one of their addresses is answered at
once, straight into the support mailbox in Dovecot, which the running daemon
reads. Three kinds, one address each, all in one run of the daemon:

``rep@pangeo.example``  marks its replies ``Auto-Submitted: auto-replied`` and
                        threads them (In-Reply-To), but answers everything,
                        even our own ``Auto-Submitted`` ack (RFC 3834 says it
                        should not): maild must not answer back.
``rep2@pangeo.example`` the worst plain responder: ``Re: <subject>``, threaded,
                        a new Message-ID each time, no Auto-Submitted, no
                        Precedence. Its replies land on the one ticket, which
                        answers the requester side with nothing automatic.
``lead@jupyter.example`` worse still for threading: no In-Reply-To, a fixed
                        subject without our tag, so each reply opens a new
                        ticket whose ack it answers again; only
                        ``tickets.ack_rate_per_hour`` (3 here) breaks the loop:
                        SPEC 11 gives an address at most that many automatic
                        mails in any hour.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import make_mail
from tests.integration.daemon_proc import MaildProcess, wait_until
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_sink import HOST, free_port

pytestmark = pytest.mark.integration

ACK_RATE = 3
#: Acks one sender can get in an hour (SPEC 11: at most ack_rate_per_hour).
MAX_ACKS = ACK_RATE
WELL, PLAIN, THREADLESS = "rep@pangeo.example", "rep2@pangeo.example", "lead@jupyter.example"
#: How long the exchange must stay quiet once it has reached its final state.
QUIET = 5.0


class Autoresponders:
    """aiosmtpd handler: records every mail; answers those to a responder address."""

    def __init__(self, dovecot: Dovecot, user: str) -> None:
        self.dovecot = dovecot
        self.user = user
        self.received: list[tuple[tuple[str, ...], bytes]] = []
        self.replies: dict[str, list[bytes]] = {WELL: [], PLAIN: [], THREADLESS: []}
        self.errors: list[BaseException] = []
        self._ids = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = bytes(envelope.original_content or envelope.content)
        self.received.append((tuple(envelope.rcpt_tos), content))
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.replies:
                raw = self.reply(rcpt, content)
                try:
                    await asyncio.to_thread(self.dovecot.deliver, self.user, raw)
                except Exception as exc:  # reported by the test, not lost in the thread
                    self.errors.append(exc)
                self.replies[rcpt].append(raw)
        return "250 2.0.0 OK"

    def reply(self, responder: str, original: bytes) -> bytes:
        got = message_from_bytes(original, policy=default)
        subject = str(got["Subject"])
        parent = str(got["Message-ID"])
        mid = f"<away-{next(self._ids)}@{responder.split('@')[1]}>"
        body = "I am away until Monday and will read your mail then.\n"
        if responder == WELL:
            mail = make_mail(
                frm=f"Rosa Rep <{WELL}>",
                subject=f"Auto: {subject}",
                body=body,
                message_id=mid,
                in_reply_to=parent,
                references=parent,
                headers={"Auto-Submitted": "auto-replied"},
            )
        elif responder == PLAIN:
            mail = make_mail(
                frm=f"Rita Rep <{PLAIN}>",
                subject=f"Re: {subject}",
                body=body,
                message_id=mid,
                in_reply_to=parent,
                references=parent,
            )
        else:
            mail = make_mail(
                frm=f"Lee Lead <{THREADLESS}>",
                subject="Away from my desk",
                body=body,
                message_id=mid,
            )
        return mail.as_bytes()

    def to(self, addr: str) -> int:
        """Mails maild sent to ``addr``."""
        return sum(addr in rcpts for rcpts, _ in self.received)


@pytest.fixture
def maild(tmp_path: Path) -> Iterator[MaildProcess]:
    proc = MaildProcess(tmp_path, ack_rate=ACK_RATE)
    try:
        yield proc
    finally:
        proc.close()


def test_autoresponders_cannot_make_maild_loop(
    dovecot: Dovecot, imap_user: str, maild: MaildProcess
) -> None:
    responders = Autoresponders(dovecot, imap_user)
    relay = Controller(responders, hostname=HOST, port=free_port(), server_hostname="relay.test")
    relay.start()
    try:
        maild.configure(imap=(dovecot, imap_user), smtp_port=relay.port)
        for n, (addr, name) in enumerate(
            [(WELL, "Rosa Rep"), (PLAIN, "Rita Rep"), (THREADLESS, "Lee Lead")], 1
        ):
            request = make_mail(
                frm=f"{name} <{addr}>",
                subject=f"Hub {n} is down",
                message_id=f"<loop-{n}@x.example>",
            )
            dovecot.deliver(imap_user, request.as_bytes())
        started = time.monotonic()
        maild.start()

        def counts() -> dict[str, tuple[int, int]]:
            """Per responder: (mails from maild, replies it sent)."""
            return {a: (responders.to(a), len(responders.replies[a])) for a in responders.replies}

        final = {WELL: (1, 1), PLAIN: (1, 1), THREADLESS: (MAX_ACKS, MAX_ACKS)}

        def settled() -> bool:
            assert maild.alive, maild.this_run()[-3000:]
            now = counts()
            assert all(now[a][0] <= final[a][0] for a in final), f"too much mail: {now}"
            return now == final and dovecot.count(imap_user, "INBOX") == 0

        wait_until(settled, 40, f"the exchange to reach {final}")
        print(f"settled after {time.monotonic() - started:.1f} s: {counts()}")
        # Then nothing more for a while (the daemon runs for 10 s at least):
        # each round trip takes well under a second, so more mail would show.
        quiet_until = max(time.monotonic() + QUIET, started + 10)
        watchdog_mark = len(maild.notify.lines)
        while time.monotonic() < quiet_until:
            assert counts() == final, f"the exchange went on: {counts()}"
            time.sleep(0.1)
        assert not responders.errors, responders.errors

        # The daemon is healthy: alive, pinging its watchdog, no traceback.
        assert maild.alive
        maild.notify.wait("WATCHDOG=1", timeout=10, after=watchdog_mark)
        assert "Traceback" not in maild.this_run()
        assert maild.stop() == 0
    finally:
        relay.stop()

    def tickets_of(addr: str) -> list[int]:
        return [t for (t,) in maild.sql("select id from tickets where requester = ?", addr)]

    def inbound_on(ticket: int) -> list[tuple[str, str]]:
        return maild.sql(
            "select from_addr, classification from messages "
            "where ticket_id = ? and direction = 'in' order by id",
            ticket,
        )

    def outbox_to(addr: str) -> list[str]:
        return [t for (t,) in maild.sql("select template from outbox where primary_rcpt = ?", addr)]

    # The marked responder: one ticket, its reply stored there, never answered.
    (well,) = tickets_of(WELL)
    assert inbound_on(well) == [(WELL, "normal"), (WELL, "auto_reply")]
    assert outbox_to(WELL) == ["ack"]
    templates = [t for (t,) in maild.sql("select template from outbox where ticket_id = ?", well)]
    assert sorted(templates) == ["ack", "steward_new"]

    # The plain responder: its reply threads onto the one ticket.
    (plain,) = tickets_of(PLAIN)
    assert [f for f, _ in inbound_on(plain)] == [PLAIN, PLAIN]
    assert outbox_to(PLAIN) == ["ack"]

    # The threadless one: a ticket per reply, acks stop at the hourly rate.
    threadless = tickets_of(THREADLESS)
    assert len(threadless) == MAX_ACKS + 1
    assert outbox_to(THREADLESS) == ["ack"] * MAX_ACKS
    notes = [
        text
        for (text,) in maild.sql(
            "select text from events where ticket_id = ? and kind = 'note'", threadless[-1]
        )
    ]
    assert any(f"already got {MAX_ACKS} automatic mails this hour" in n for n in notes), notes

    assert dovecot.count(imap_user, "INBOX") == 0
    assert dovecot.count(imap_user, "Processed") == 3 + 1 + 1 + MAX_ACKS
