"""Mail as people read it (issue 17): a conversation played with mails shaped like
those real clients send, delivered through the outbox to a real SMTP sink, and
each person's mailbox read as a threading client (NeoMutt, Thunderbird) would.

Rosa Rep writes from s-nail and, once, from a webmail that sends no
References; bob answers from NeoMutt with a group reply; carol is the other
steward on duty. Every mail maild sends is parsed from the bytes the SMTP
server got: Subject, From display name, In-Reply-To/References against what
that mailbox already holds, attachment types.
"""

from __future__ import annotations

import asyncio
import email
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses

import pytest

from maild.mail.outbox import OutboxSender
from maild.store.db import make_engine, make_sessionmaker
from tests.conftest import Instance, make_mail
from tests.integration import smtp_sink as sink_mod
from tests.integration.smtp_sink import ThreadedSink

threaded_sink = sink_mod.threaded_sink

SUPPORT = "support@example.org"
ROSA = "rep@pangeo.example"
REP2 = "rep2@pangeo.example"
BOB = "bob@example.org"
CAROL = "carol@example.org"
SUBJECT = "GPU node pool for the workshop"
YAML = b"nodePool:\n  gpu: 4\n  size: n1-standard-8\n"
LATER = datetime(2030, 1, 1, tzinfo=UTC)
NOTES = "Teilnehmer: 40, Räume: 2\n".encode("iso-8859-1")


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def ids(value: object) -> list[str]:
    return str(value or "").split()


class Mailboxes:
    """Who holds which mail: maild's deliveries at the sink, and people's own mails
    (their sent folder, and the inbox of whoever they put in To/Cc)."""

    def __init__(self, instance: Instance, sink: ThreadedSink) -> None:
        self.instance = instance
        self.sink = sink
        self.inbox: dict[str, list[EmailMessage]] = defaultdict(list)
        self.sent: dict[str, list[EmailMessage]] = defaultdict(list)
        self.minute = 0

    def held(self, person: str) -> set[str]:
        return {str(m["Message-ID"]) for m in (*self.inbox[person], *self.sent[person])}

    def write(self, msg: EmailMessage) -> list[EmailMessage]:
        """``msg`` goes to maild (and to who else it names); returns what maild then sent,
        with for each new mail a check that it threads in every mailbox it reaches."""
        self.minute += 5
        now = f"2026-11-25T15:{self.minute:02d}:00+00:00"
        [(_, sender)] = getaddresses([str(msg["From"])])
        self.sent[sender].append(msg)
        for _, addr in getaddresses([str(msg["To"] or ""), str(msg["Cc"] or "")]):
            if addr != SUPPORT:
                self.inbox[addr].append(msg)
        self.instance.ingest(msg, "--now", now)
        return self.deliver()

    def tick(self, now: str) -> list[EmailMessage]:
        """The scheduler's pass at ``now``; returns what it sent, checked as in write()."""
        self.instance.ok("tick", "--now", now)
        return self.deliver()

    def deliver(self) -> list[EmailMessage]:
        before = len(self.sink.received)

        async def go() -> None:
            engine = make_engine(self.instance.url)
            try:
                # the conversation runs on --now times in 2026: all of it is due by 2030
                sender = OutboxSender(
                    self.sink.smtp_config(), make_sessionmaker(engine), clock=lambda: LATER
                )
                await sender.send_due()
            finally:
                await engine.dispose()

        asyncio.run(go())
        out = []
        for got in self.sink.received[before:]:
            msg = parse(got.content)
            for rcpt in got.rcpt_tos:
                self.assert_threads(rcpt, msg)
                self.inbox[rcpt].append(msg)
            out.append(msg)
        return out

    def known(self, person: str) -> set[str]:
        """The ids a client of ``person`` knows: of the mails held and of their ancestors
        (JWZ threading groups mails under a missing common ancestor too)."""
        out = set()
        for m in (*self.inbox[person], *self.sent[person]):
            out |= {str(m["Message-ID"]), *ids(m["In-Reply-To"]), *ids(m["References"])}
        return {i for i in out if not i.startswith("<maild-ticket-")}

    def assert_threads(self, person: str, msg: EmailMessage) -> None:
        """A client puts ``msg`` into the thread of the mails ``person`` already holds:
        its References name one of them or of their ancestors (maild's placeholder
        root aside), and end with the mail it answers."""
        assert ids(msg["References"])[-1] == msg["In-Reply-To"]
        if not self.held(person):
            return
        refs = set(ids(msg["References"]))
        to = {a for _, a in getaddresses([str(msg["To"] or "")])}
        cc = {a for _, a in getaddresses([str(msg["Cc"] or "")])}
        if person in to | cc:
            # a mail addressed to them refers to a mail they hold; it answers one of
            # the To's (one mail to the requester and cc cannot answer each's own)
            assert refs & self.held(person), (person, msg["Subject"], refs)
            if person in to:
                assert msg["In-Reply-To"] in self.held(person), (person, msg["Subject"])
        else:
            # a blind copy of a relay is threaded for the requester: it joins the
            # stewards' thread through the ticket's opening mail, their common ancestor
            assert refs & self.known(person), (person, msg["Subject"], refs)

    def threads(self, person: str) -> int:
        """How many threads ``person``'s mails make, grouped by real Message-IDs only."""
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for m in (*self.inbox[person], *self.sent[person]):
            linked = [str(m["Message-ID"]), *ids(m["In-Reply-To"]), *ids(m["References"])]
            real = [i for i in linked if not i.startswith("<maild-ticket-")]
            for other in real[1:]:
                parent[find(other)] = find(real[0])
        return len({find(str(m["Message-ID"])) for m in (*self.inbox[person], *self.sent[person])})


def by(mails: list[EmailMessage], rcpt: str) -> EmailMessage:
    [found] = [m for m in mails if rcpt in str(m["To"])]
    return found


@pytest.fixture
def boxes(instance: Instance, threaded_sink: ThreadedSink) -> Iterator[Mailboxes]:
    yield Mailboxes(instance, threaded_sink)


def snail_request() -> EmailMessage:
    msg = make_mail(
        frm=f"Rosa Rep <{ROSA}>",
        cc=f"Other Rep <{REP2}>",
        subject=SUBJECT,
        message_id="<rosa-1@pangeo.example>",
        body="Hello,\n\nwe need a GPU node pool for the workshop on Monday.\n\nRosa\n",
    )
    msg.add_attachment(YAML, maintype="text", subtype="x-yaml", filename="values.yaml")
    msg.add_attachment(NOTES, maintype="text", subtype="plain", filename="notes.txt")
    msg.get_payload()[-1].set_param("charset", "iso-8859-1")  # type: ignore[union-attr]
    quota = make_mail(frm="cloud@provider.example", subject="Quota request approved")
    msg.add_attachment(quota)  # a mail forwarded as an attachment (message/rfc822)
    return msg


def neomutt_reply(
    parent: EmailMessage, subject: str, body: str, *, n: int, cc: str | None = None
) -> EmailMessage:
    """Bob's reply from NeoMutt: In-Reply-To the parent, References its chain plus it."""
    return make_mail(
        frm=f"Bob Builder <{BOB}>",
        to=SUPPORT,
        cc=cc,
        subject=subject,
        message_id=f"<bob-{n}@example.org>",
        in_reply_to=str(parent["Message-ID"]),
        references=" ".join([*ids(parent["References"]), str(parent["Message-ID"])]),
        body=f"{body}\n\nOn Wed, Nov 25, 2026, Example Support wrote:\n> {SUBJECT}\n",
    )


def test_a_conversation_reads_right_in_every_mailbox(boxes: Mailboxes) -> None:
    # 1. Rosa asks, with two files; rep2 is on Cc
    sent = boxes.write(snail_request())
    ack = by(sent, ROSA)
    assert ack["Subject"] == f"[support #1] {SUBJECT}"
    assert ack.get_content().startswith("Hello Rosa Rep,")
    new = by(sent, BOB)
    assert {a.addr_spec for a in new["To"].addresses} == {BOB, CAROL}
    assert new["Subject"] == f"[support #1] New request: {SUBJECT}"
    assert new["From"].addresses[0].display_name == "Rosa Rep via Example Support"
    assert new["From"].addresses[0].addr_spec == SUPPORT
    assert new["Mail-Followup-To"] == SUPPORT and str(new["Reply-To"]) == SUPPORT
    files = {p.get_filename(): p for p in new.iter_attachments()}
    assert files["values.yaml"].get_content_type() == "text/x-yaml"
    assert files["values.yaml"].get_payload(decode=True) == YAML
    assert files["notes.txt"].get_content_type() == "text/plain"
    assert files["notes.txt"].get_content_charset() == "iso-8859-1"
    assert files["notes.txt"].get_content() == "Teilnehmer: 40, Räume: 2\n"
    [forwarded] = [p for p in new.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert forwarded.get_content()["Subject"] == "Quota request approved"

    # 2. bob answers with a group reply (To support, Cc carol), taking the ticket
    sent = boxes.write(
        neomutt_reply(
            new,
            f"Re: [support #1] New request: {SUBJECT} [assign=me]",
            "Sure, how many GPUs per node?",
            n=1,
            cc=f"Carol <{CAROL}>",
        )
    )
    [relay] = sent
    assert relay["Subject"] == f"Re: [support #1] {SUBJECT}"
    assert relay["From"].addresses[0].display_name == "Bob Builder"
    assert boxes.sink.received[-1].rcpt_tos == [ROSA, REP2]  # carol had bob's mail already
    assert [m["Message-ID"] for m in boxes.inbox[CAROL]].count("<bob-1@example.org>") == 1
    assert relay["In-Reply-To"] == "<rosa-1@pangeo.example>"

    # 3. Rosa answers from a webmail that sends no References (matched by subject)
    sent = boxes.write(
        make_mail(
            frm=f"Rosa Rep <{ROSA}>",
            subject=f"Re: {SUBJECT}",
            message_id="<rosa-2@webmail.example>",
            body="Four per node, please.\n",
        )
    )
    [passed_on] = sent
    assert {a.addr_spec for a in passed_on["To"].addresses} == {BOB}  # he works it now
    assert passed_on["Subject"] == f"[support #1] Reply: {SUBJECT}"
    assert passed_on["From"].addresses[0].display_name == "Rosa Rep via Example Support"
    assert str(new["Message-ID"]) in ids(passed_on["References"])
    assert passed_on["In-Reply-To"] in boxes.held(BOB)

    # 4. bob's tags are wrong; he fixes them by answering the "Not applied" mail
    [error] = boxes.write(
        neomutt_reply(
            passed_on,
            f"Re: [support #1] Reply: {SUBJECT} [priority=asap]",
            "Done: four GPUs per node.",
            n=2,
        )
    )
    assert error["Subject"] == f"[support #1] Not applied: {SUBJECT}"
    assert error["In-Reply-To"] == "<bob-2@example.org>"
    sent = boxes.write(
        neomutt_reply(
            error,
            f"Re: [support #1] Not applied: {SUBJECT} [priority=high] [resolved]",
            "Done: four GPUs per node.",
            n=3,
        )
    )
    [relay] = sent
    # never the steward's own subject, which was "Not applied: ..."
    assert relay["Subject"] == f"Re: [support #1] {SUBJECT}"
    assert relay["In-Reply-To"] == "<rosa-2@webmail.example>"  # what it answers
    assert boxes.sink.received[-1].rcpt_tos == [ROSA, REP2, CAROL]  # carol's blind copy
    text = relay.get_content().replace("\r\n", "\n")
    assert "Done: four GPUs per node." in text
    assert "\n-- \nWe consider [support #1] resolved" in text  # the signature marker

    # 5. Rosa confirms from s-nail, with References: the ticket closes
    sent = boxes.write(
        make_mail(
            frm=f"Rosa Rep <{ROSA}>",
            subject=f"Re: [support #1] {SUBJECT}",
            message_id="<rosa-3@pangeo.example>",
            in_reply_to=str(relay["Message-ID"]),
            references=" ".join([*ids(relay["References"]), str(relay["Message-ID"])]),
            body="Thanks, that works!\n",
        )
    )
    closed = by(sent, ROSA)
    assert closed["Subject"] == f"[support #1] {SUBJECT}"
    told = by(sent, BOB)
    assert "(status: resolved -> closed)" in told.get_content()
    assert closed.get_content().startswith("Hello Rosa Rep,")  # as the ack greeted her

    # every mailbox sees the ticket as one thread, by real Message-IDs alone
    for person in (ROSA, REP2, BOB, CAROL):
        assert boxes.threads(person) == 1, person

    # the operator's text view names everyone a relay reached
    shown = boxes.instance.ok("show", "1").out
    assert f"-> {ROSA}, cc {REP2}, bcc {CAROL} [relay, " in shown
    assert f"-> {ROSA}, cc {REP2} [relay, " in shown


def test_the_stewards_hear_that_a_reply_reopened_the_ticket(boxes: Mailboxes) -> None:
    sent = boxes.write(snail_request())
    new = by(sent, BOB)
    boxes.write(neomutt_reply(new, f"Re: [support #1] {SUBJECT} [resolved]", "Done.", n=1))
    [relay] = [m for m in boxes.inbox[ROSA] if "Done." in m.get_content()]
    [reopened] = boxes.write(
        make_mail(
            frm=f"Rosa Rep <{ROSA}>",
            subject=f"Re: [support #1] {SUBJECT}",
            message_id="<rosa-2@pangeo.example>",
            in_reply_to=str(relay["Message-ID"]),
            body="Sorry, the pool is still missing.\n",
        )
    )
    assert reopened["Subject"] == f"[support #1] Reopened: {SUBJECT}"
    assert "REOPENED it (it was resolved; status now: open)" in reopened.get_content()


def test_a_note_shows_without_its_quoted_history(instance: Instance) -> None:
    instance.ingest(snail_request())
    [(mid,)] = instance.sql("select message_id from messages where template = 'steward_new'")
    instance.ingest(
        make_mail(
            frm=f"Bob Builder <{BOB}>",
            subject=f"Re: [support #1] {SUBJECT} [note]",
            message_id="<note@example.org>",
            in_reply_to=f"<{mid}>",
            body="Quota is fine.\nAsk cloud team.\n\nOn Wed, Nov 25, 2026, Example Support"
            " wrote:\n> we need a GPU node pool for the workshop on Monday.\n",
        )
    )
    instance.ok("note", "1", "called Rosa\nshe agrees")
    shown = instance.ok("show", "1").out
    assert f"<- note {BOB}: Re: [support #1] {SUBJECT} [note]\n" in shown
    assert "\n      Quota is fine.\n      Ask cloud team.\n" in shown
    assert "> we need a GPU" not in shown
    assert "note by operator: called Rosa\n      she agrees" in shown


def test_reminders_thread_with_the_stewards_mail_and_reply_to_support(boxes: Mailboxes) -> None:
    new = by(boxes.write(snail_request()), BOB)
    sent = boxes.tick("2026-11-26T22:00:00+00:00")  # past the triage target
    reminders = [m for m in sent if "[support #1]" in str(m["Subject"])]
    assert reminders, [str(m["Subject"]) for m in sent]
    for reminder in reminders:
        assert str(reminder["Subject"]).startswith(("[support #1] OVERDUE:", "[support #1] Due"))
        assert reminder["Mail-Followup-To"] == SUPPORT
        # under the stewards' "New request" mail (deliver() checked each mailbox)
        assert reminder["In-Reply-To"] == new["Message-ID"]
