"""Push delivery: an MTA hands mail to ``maild run`` over LMTP (or SMTP).

The contract (``maild/mail/lmtp.py``): ``250`` only once the mail's transaction has
committed, ``451`` when it cannot be stored (the MTA keeps it and tries
again), and a second delivery of the same Message-ID changes nothing. The
daemon runs as a real process with ``[lmtp]`` and no ``[mailbox]``; its
outgoing mail goes to a threaded aiosmtpd sink.
"""

from __future__ import annotations

import smtplib
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from email.policy import SMTP
from pathlib import Path

import pytest

from tests.conftest import make_mail
from tests.integration.daemon_proc import MaildProcess, wait_until
from tests.integration.smtp_sink import HOST, ThreadedSink, free_port

pytestmark = pytest.mark.integration

SUPPORT = "support@example.org"


@dataclass
class Listener:
    maild: MaildProcess
    sink: ThreadedSink
    port: int
    protocol: str

    def client(self) -> smtplib.SMTP:
        cls = smtplib.LMTP if self.protocol == "lmtp" else smtplib.SMTP
        return cls(HOST, self.port, timeout=30)

    def deliver(self, raw: bytes, rcpts: tuple[str, ...] = (SUPPORT,)) -> tuple[int, str]:
        """One transaction, step by step; the reply to DATA (code, text)."""
        with self.client() as client:
            client.ehlo_or_helo_if_needed()
            code, _ = client.mail("mta@relay.example")
            assert code == 250
            for rcpt in rcpts:
                code, _ = client.rcpt(rcpt)
                assert code == 250
            code, text = client.data(raw)
            return code, text.decode()

    def stored(self, message_id: str) -> list[tuple[int, str]]:
        """(ticket, direction) of a Message-ID (without brackets) in the store."""
        return self.maild.sql(
            "select ticket_id, direction from messages where message_id = ?", message_id
        )

    def counts(self) -> tuple[tuple[int, int, int, int], ...]:
        """Rows in tickets, messages, outbox and quarantine."""
        return tuple(
            self.maild.sql(
                "select (select count(*) from tickets), (select count(*) from messages), "
                "(select count(*) from outbox), (select count(*) from quarantine)"
            )
        )


@pytest.fixture(params=["lmtp"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Listener]:
    with running(tmp_path, request.param) as started:
        yield started


@contextmanager
def running(
    root: Path, protocol: str = "lmtp", *, lmtp: str = "", tickets: str = ""
) -> Iterator[Listener]:
    """``maild run`` listening on a free port; ``lmtp``/``tickets``: lines for those tables."""
    port = free_port()
    maild = MaildProcess(root)
    with ThreadedSink() as sink:
        try:
            # [lmtp] is the config's last table: `lmtp` lines land in it
            maild.configure(
                smtp_port=sink.port, lmtp=f"{HOST}:{port}", lmtp_protocol=protocol, extra=lmtp
            )
            text = maild.config.read_text()
            maild.config.write_text(text.replace("[tickets]\n", f"[tickets]\n{tickets}", 1))
            maild.start()
            maild.notify.wait("READY=1")

            def listening() -> bool:
                assert maild.alive, maild.this_run()[-3000:]
                try:
                    with socket.create_connection((HOST, port), timeout=1):
                        return True
                except OSError:
                    return False

            wait_until(listening, 30, f"the {protocol} listener on port {port}")
            yield Listener(maild, sink, port, protocol)
            assert maild.alive
            assert maild.stop() == 0
        finally:
            maild.close()


def rename(db: Path, *pairs: tuple[str, str]) -> None:
    """Rename tables under the running daemon: its next statement on them fails."""
    with closing(sqlite3.connect(db, timeout=30)) as conn:
        for old, new in pairs:
            conn.execute(f"alter table {old} rename to {new}")
        conn.commit()


@pytest.mark.parametrize("listener", ["lmtp", "smtp"], indirect=True)
def test_accepted_only_after_commit_and_a_repeat_changes_nothing(listener: Listener) -> None:
    mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<lmtp-1@uni.example>")

    code, text = listener.deliver(mail.as_bytes())
    # The ticket is there the moment the 250 is: no waiting, no polling.
    stored = listener.stored("lmtp-1@uni.example")
    assert code == 250, text
    assert len(stored) == 1 and stored[0][1] == "in", stored
    ticket = stored[0][0]

    acks = listener.sink.wait_for(2, timeout=30)
    assert any(r.rcpt_tos == ["ann@uni.example"] for r in acks)
    before = listener.counts()

    # The MTA delivers the same mail again (say it missed our 250): 250, nothing new.
    code, text = listener.deliver(mail.as_bytes())
    assert code == 250, text
    assert listener.stored("lmtp-1@uni.example") == [(ticket, "in")]
    assert listener.counts() == before  # no ticket, message, outbox row or quarantine
    assert len(listener.sink.received) == 2
    assert "Traceback" not in listener.maild.logtext()


def test_a_store_failure_answers_451_and_the_retry_is_stored(listener: Listener) -> None:
    """With the store unusable the MTA hears 451 and keeps the mail; its retry gets in.

    Holding SQLite's write lock would take maild's 30 s busy timeout to fail;
    tables renamed away fail at once with the same OperationalError.
    """
    mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<lmtp-451@uni.example>")
    db = listener.maild.db
    rename(db, ("messages", "messages_away"), ("quarantine", "quarantine_away"))
    try:
        code, text = listener.deliver(mail.as_bytes())
        assert code == 451, text
        assert listener.maild.count("select count(*) from tickets") == 0
    finally:
        rename(db, ("messages_away", "messages"), ("quarantine_away", "quarantine"))

    code, text = listener.deliver(mail.as_bytes())
    assert code == 250, text
    assert [d for _, d in listener.stored("lmtp-451@uni.example")] == ["in"]
    assert listener.maild.count("select count(*) from quarantine") == 0


def test_a_transient_store_error_is_retried_not_quarantined(listener: Listener) -> None:
    """A database error in the mail's transaction answers 451, never 250 + quarantine.

    ``OperationalError`` means the store is locked or away, not that the mail
    is bad: the MTA must keep it. (Until 6de559b the pipeline quarantined such
    a mail and the MTA heard 250.) The real trigger is a write lock held past
    the 30 s busy timeout (checked by hand: same outcome); here only the
    messages table is away, so a quarantine write would still succeed.
    """
    mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<lmtp-busy@uni.example>")
    db = listener.maild.db
    rename(db, ("messages", "messages_away"))
    try:
        code, text = listener.deliver(mail.as_bytes())
        quarantined = listener.maild.count("select count(*) from quarantine")
    finally:
        rename(db, ("messages_away", "messages"))
    assert (code, quarantined) == (451, 0), (
        f"a temporary store error got {code} {text!r} and {quarantined} quarantine row(s)"
    )


def test_every_recipient_gets_its_own_reply(listener: Listener) -> None:
    """LMTP (RFC 2033 4.2): after DATA, one reply per accepted RCPT, in order.

    An MTA (Postfix's lmtp_destination_recipient_limit is 50 by default)
    sends one transaction for a mail to two addresses routed to maild and
    waits for two replies; with one it times out and defers the mail.
    """
    mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<lmtp-two@uni.example>")
    with listener.client() as client:
        client.ehlo_or_helo_if_needed()
        assert client.mail("mta@relay.example")[0] == 250
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.rcpt("helpdesk@example.org")[0] == 250
        first = client.data(mail.as_bytes())
        assert client.sock is not None
        client.sock.settimeout(5)
        try:
            second = client.getreply()
        except smtplib.SMTPServerDisconnected as exc:
            second = (0, f"no second reply: {exc}".encode())
    assert first[0] == 250, first
    assert second[0] == 250, f"one reply for two recipients: then {second!r}"
    assert len(listener.stored("lmtp-two@uni.example")) == 1


def test_a_250_means_the_reply_is_on_the_ticket_even_with_a_self_cc(listener: Listener) -> None:
    """A colleague joins the thread and copies themselves: the reply is stored.

    The sender is a new participant twice over (as the sender and from Cc);
    adding them twice broke the participants key, and the reply was answered
    250 yet never reached the ticket (dropped as a "duplicate", later
    quarantined) until 6de559b.
    """
    request = make_mail(frm="Ann Example <ann@uni.example>", message_id="<lmtp-ann@uni.example>")
    assert listener.deliver(request.as_bytes())[0] == 250
    reply = make_mail(
        frm="Ben Colleague <ben@uni.example>",
        cc="ben@uni.example",
        subject="Re: Hub is down",
        body="Same here since 9:00.\n",
        message_id="<lmtp-ben@uni.example>",
        in_reply_to="<lmtp-ann@uni.example>",
    )
    code, text = listener.deliver(reply.as_bytes())
    assert code == 250, text
    ticket = listener.stored("lmtp-ann@uni.example")[0][0]
    assert listener.stored("lmtp-ben@uni.example") == [(ticket, "in")], (
        "answered 250 but not stored: " + listener.maild.logtext()[-800:]
    )


# -- what the listener refuses (SPEC section 11, "Listener") --------------------------


class Session:
    """A raw LMTP/SMTP client on a socket: the test holds one chunk, never the mail."""

    def __init__(self, port: int, protocol: str = "lmtp") -> None:
        self.sock = socket.create_connection((HOST, port), timeout=60)
        self.replies = self.sock.makefile("rb")
        self.hello = b"LHLO" if protocol == "lmtp" else b"EHLO"

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply; (0, "") when the server closed instead."""
        text = []
        while True:
            line = self.replies.readline()
            if not line:
                return 0, "\n".join(text)
            text.append(line.decode(errors="replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(text)

    def command(self, line: bytes) -> tuple[int, str]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def start_data(self) -> None:
        """Greeting, hello, one sender and recipient, DATA: ready for the content."""
        assert self.reply()[0] == 220
        assert self.command(self.hello + b" mta.example")[0] == 250
        assert self.command(b"MAIL FROM:<mta@relay.example>")[0] == 250
        assert self.command(b"RCPT TO:<" + SUPPORT.encode() + b">")[0] == 250
        assert self.command(b"DATA")[0] == 354

    def close(self) -> None:
        self.replies.close()
        self.sock.close()


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


GIB = 1 << 30


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(b"x" * 998 + b"\r\n", id="1 GB in lines"),
        pytest.param(b"x" * (1 << 20), id="1 GB in one line"),
    ],
)
def test_a_1_gb_message_is_refused_with_552_in_bounded_memory(tmp_path: Path, shape: bytes) -> None:
    """The issue's attack: one 1 GB DATA took the daemon to 3.16 GB resident.

    The default limit (tickets.max_message_bytes, 25 MiB) applies while the
    data arrives; what comes past it is dropped, whether it is in lines or in
    a single line without end (aiosmtpd's own DATA keeps such a line whole).
    """
    with running(tmp_path) as listener:
        assert listener.maild.proc is not None
        pid = listener.maild.proc.pid
        session = Session(listener.port)
        try:
            session.start_data()
            session.sock.sendall(b"From: Ann <ann@uni.example>\r\nSubject: big\r\n\r\n")
            chunk = shape * max(1, (1 << 20) // len(shape))
            sent, peak_rss = 0, 0
            while sent < GIB:
                session.sock.sendall(chunk)
                sent += len(chunk)
                if sent % (64 << 20) < len(chunk):
                    peak_rss = max(peak_rss, memory_kb(pid)["VmRSS"])
            code, text = session.command(b"\r\n.")
            # the session goes on: the MTA may send its next mail on it
            assert session.command(b"RSET")[0] == 250
        finally:
            session.close()
        assert code == 552, text
        memory = memory_kb(pid)
        assert max(memory["VmHWM"], peak_rss) < 150 * 1024, memory
        assert listener.maild.count("select count(*) from messages") == 0
        assert "refused a message of over" in listener.maild.logtext()
        # and it still takes mail
        mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<after-big@uni.example>")
        assert listener.deliver(mail.as_bytes())[0] == 250


def test_over_the_limit_is_552_and_stored_nowhere_under_it_is_stored(tmp_path: Path) -> None:
    """Over LMTP an oversize mail is the MTA's to bounce: nothing is stored, not even a stub.

    (A mail fetched by IMAP is already in our mailbox; it is still kept as a
    stub and its sender told: tests/integration/test_ingest_e2e.py.)
    """
    with running(tmp_path, tickets="max_message_bytes = 20000\n") as listener:
        big = make_mail(
            frm="Ann Example <ann@uni.example>",
            body="too long to keep\n" * 1500,
            message_id="<big@uni.example>",
        )
        small = make_mail(
            frm="Ann Example <ann@uni.example>",
            body="short enough\n" * 100,
            message_id="<small@uni.example>",
        )
        # as an MTA sends them: CRLF line ends (smtplib sends bytes as they are)
        big_raw, small_raw = big.as_bytes(policy=SMTP), small.as_bytes(policy=SMTP)
        assert len(big_raw) > 20000 > len(small_raw)
        code, text = listener.deliver(big_raw)
        assert code == 552, text
        assert "20000" in text
        assert listener.counts() == ((0, 0, 0, 0),)
        assert listener.deliver(small_raw)[0] == 250
        assert len(listener.stored("small@uni.example")) == 1

        # LMTP: one refusal per recipient, as with any other answer to DATA
        with listener.client() as client:
            client.ehlo_or_helo_if_needed()
            assert client.mail("mta@relay.example")[0] == 250
            assert client.rcpt(SUPPORT)[0] == 250
            assert client.rcpt("helpdesk@example.org")[0] == 250
            first = client.data(big_raw)
            assert client.sock is not None
            client.sock.settimeout(5)
            second = client.getreply()
        assert (first[0], second[0]) == (552, 552), (first, second)


def test_just_under_the_limit_as_sent_but_over_it_with_return_path_is_552(
    tmp_path: Path,
) -> None:
    """The Return-Path line we add counts: such a mail was accepted, then kept as a stub."""
    with running(tmp_path, tickets="max_message_bytes = 20000\n") as listener:
        head = make_mail(
            frm="Ann Example <ann@uni.example>", body="", message_id="<edge@uni.example>"
        ).as_bytes(policy=SMTP)
        filler = b"x" * 70 + b"\r\n"
        body = filler * ((19990 - len(head)) // len(filler))
        raw = head + body + b"y" * (19990 - len(head) - len(body) - 2) + b"\r\n"
        assert len(raw) == 19990
        code, text = listener.deliver(raw)
        assert code == 552, text
        assert listener.counts() == ((0, 0, 0, 0),)


@pytest.mark.parametrize(
    ("allow", "welcome"),
    [
        ('["10.0.0.0/8"]', False),
        ('["10.0.0.0/8", "::1"]', False),
        ('["127.0.0.0/8"]', True),
        ('["192.168.0.0/16", "127.0.0.1"]', True),
    ],
)
def test_clients_outside_lmtp_allow_are_refused_at_connect(
    tmp_path: Path, allow: str, welcome: bool
) -> None:
    with running(tmp_path, lmtp=f"allow = {allow}\n") as listener:
        session = Session(listener.port)
        try:
            code, text = session.reply()
            if welcome:
                assert code == 220, text
                assert session.command(b"LHLO mta.example")[0] == 250
            else:
                assert code == 554, text
                # and the server closes: no command gets an answer
                assert session.replies.readline() == b""
        finally:
            session.close()
        refused = "refused a connection from 127.0.0.1: not in lmtp.allow"
        assert (refused in listener.maild.logtext()) is not welcome
        if not welcome:
            return
        mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<allowed@uni.example>")
        assert listener.deliver(mail.as_bytes())[0] == 250


def test_a_client_gone_mid_data_leaves_nothing_and_the_listener_serves_on(
    listener: Listener,
) -> None:
    for tail in (b"Subject: half\r\n\r\nhalf a mail\r\n", b"x" * (3 << 20)):  # a line, or none
        session = Session(listener.port)
        session.start_data()
        session.sock.sendall(b"From: Ann <ann@uni.example>\r\n" + tail)
        session.close()
    mail = make_mail(frm="Ann Example <ann@uni.example>", message_id="<whole@uni.example>")
    assert listener.deliver(mail.as_bytes())[0] == 250
    assert listener.maild.count("select count(*) from messages where direction = 'in'") == 1
    assert "Traceback" not in listener.maild.logtext()
