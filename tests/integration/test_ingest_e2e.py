"""End to end through ``maild ingest`` into a real SQLite file, read back with the CLI.

Each test drives the command line exactly as an operator would and asserts on
``maild queue --json`` / ``maild show --json`` / the outbox.
"""

from __future__ import annotations

import asyncio
import base64
import email
import json
from datetime import UTC, datetime
from email import policy
from typing import Any

import pytest

from maild.mail.journal import OutcomeJournal, journal_path
from tests.conftest import MAILS, Factory, Instance, make_mail, require_corpus

REQUEST_ID = "<req-1@pangeo.example>"


def fixture_mail(name: str) -> bytes:
    return (MAILS / name).read_bytes()


def outbox(instance: Instance) -> list[dict]:  # type: ignore[type-arg]
    return instance.ok("outbox", "--json").json()  # type: ignore[no-any-return]


def open_request(instance: Instance, **kw: str) -> dict:  # type: ignore[type-arg]
    row = instance.ingest(make_mail(message_id=REQUEST_ID, **kw))
    assert row["action"] == "created"
    return row


def sql(instance: Instance, query: str, *args: object) -> list[tuple[Any, ...]]:
    return instance.sql(query, *args)


# -- a new request -------------------------------------------------------------


def test_new_request_is_acknowledged_and_stewards_on_duty_get_it(instance: Instance) -> None:
    row = open_request(instance, cc="Other Rep <rep2@pangeo.example>, alice@example.org")
    assert row == {
        "file": row["file"],
        "message_id": "req-1@pangeo.example",
        "ticket": 1,
        "action": "created",
        "reason": row["reason"],
    }
    [ticket] = instance.queue()
    assert set(ticket) >= {
        "id", "subject", "status", "type", "priority", "community", "requester", "cc",
        "assignee", "incident_commander", "links", "time_spent_minutes", "created_at",
        "updated_at", "message_count", "next_due",
    }  # fmt: skip
    assert ticket["subject"] == "Hub is down"
    assert ticket["status"] == "new"
    assert ticket["type"] is None
    assert ticket["priority"] == "normal"
    assert ticket["community"] == "pangeo"
    assert ticket["requester"] == "rep@pangeo.example"
    # the other representative stays on the thread; a steward in Cc does not
    assert ticket["cc"] == ["rep2@pangeo.example"]
    assert ticket["created_at"].endswith("+00:00")

    sent = {r["template"]: r for r in outbox(instance)}
    assert sent["ack"]["to"] == ["rep@pangeo.example"]
    # 2026-11-25 is in the second fortnight of the roster a, b, c: bob and carol
    assert sorted(sent["steward_new"]["to"]) == ["bob@example.org", "carol@example.org"]

    detail = instance.show(1)
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds == ["received", "sent", "sent"]
    received = detail["timeline"][0]
    assert received["message_id"] == "req-1@pangeo.example"
    assert received["from"] == "rep@pangeo.example"
    assert "502" in received["text"]
    assert {e["template"] for e in detail["timeline"][1:]} == {"ack", "steward_new"}
    assert all(e["delivery"] == "queued" for e in detail["timeline"][1:])


def test_ack_is_threaded_tagged_and_marked_automatic(instance: Instance) -> None:
    open_request(instance)
    [raw] = sql(instance, "select raw from outbox where template = 'ack'")[0:1]
    msg = email.message_from_bytes(raw[0], policy=policy.default)
    assert msg["Subject"] == "[support #1] Hub is down"
    assert msg["In-Reply-To"] == REQUEST_ID
    assert REQUEST_ID in msg["References"]
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"].addresses[0].addr_spec == "support@example.org"
    assert msg["Message-ID"].endswith("@example.org>")
    assert base64.b64decode(msg["Thread-Index"])  # Outlook threads it too


# -- replies from mail clients --------------------------------------------------


def test_reply_by_in_reply_to_with_a_changed_subject(instance: Instance) -> None:
    open_request(instance)
    row = instance.ingest(
        make_mail(
            subject="Something else entirely",
            message_id="<r-2@pangeo.example>",
            in_reply_to=REQUEST_ID,
            body="More details: it fails only for admins.\n",
        )
    )
    assert row["action"] == "appended" and row["ticket"] == 1
    assert "In-Reply-To" in row["reason"]
    assert len(instance.queue()) == 1
    # the requester writing again notifies the stewards, not the requester
    templates = [r["template"] for r in outbox(instance)]
    assert templates.count("requester_reply") == 1 and templates.count("ack") == 1


def test_reply_to_our_ack_threads_by_references(instance: Instance) -> None:
    open_request(instance)
    [(ack_id,)] = sql(instance, "select message_id from messages where template = 'ack'")
    row = instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down",
            message_id="<r-3@pangeo.example>",
            references=f"{REQUEST_ID} <{ack_id}>",
        )
    )
    assert row["ticket"] == 1 and row["action"] == "appended"


@pytest.mark.parametrize(
    "name",
    ["reply_gmail.eml", "reply_apple.eml", "reply_thunderbird.eml", "reply_german.eml"],
)
def test_client_replies_land_on_the_request(instance: Instance, name: str) -> None:
    instance.ingest(instance.write(fixture_mail("new_request.eml")))
    row = instance.ingest(instance.write(fixture_mail(name), name))
    assert row["action"] == "appended", row
    assert row["ticket"] == 1
    detail = instance.show(1)
    reply = detail["timeline"][-2] if detail["timeline"][-1]["kind"] == "sent" else None
    received = [e for e in detail["timeline"] if e["kind"] == "received"]
    assert len(received) == 2
    # the quoted original is kept in storage but is not part of the new text
    assert received[1]["new_text"].strip()
    assert "502" not in received[1]["new_text"] or reply is None


def test_outlook_reply_without_headers_threads_by_thread_index(instance: Instance) -> None:
    root = base64.b64decode("AdmPCz3xQXQ9hS5bQjGmG1x8Yq3J9w==")
    assert len(root) == 22
    open_request(instance, headers={"Thread-Index": base64.b64encode(root).decode()})
    child = base64.b64encode(root + b"\x00\x00\x01\x02\x03").decode()
    row = instance.ingest(
        make_mail(
            frm="Someone Else <colleague@elsewhere.example>",
            subject="RE: Hub is down",
            message_id="<outlook-1@elsewhere.example>",
            headers={"Thread-Index": child, "Thread-Topic": "Hub is down"},
            body="Same here.\n\n-----Original Message-----\nFrom: Rosa\n",
        )
    )
    assert row["ticket"] == 1, row
    assert "Thread-Index" in row["reason"]


def test_reply_by_subject_only_from_the_requester(instance: Instance) -> None:
    open_request(instance)
    row = instance.ingest(
        make_mail(subject="Re: Hub is down", message_id="<webmail-1@pangeo.example>")
    )
    assert row["ticket"] == 1 and row["action"] == "appended"
    # someone else with the same subject gets a ticket of their own
    other = instance.ingest(
        make_mail(
            frm="x@unrelated.example",
            subject="Re: Hub is down",
            message_id="<webmail-2@unrelated.example>",
        )
    )
    assert other["action"] == "created" and other["ticket"] == 2


def test_subject_tag_from_a_member_threads(instance: Instance) -> None:
    open_request(instance, cc="rep2@pangeo.example")
    row = instance.ingest(
        make_mail(
            frm="rep2@pangeo.example",
            subject="Re: [Support #1] Hub is down",
            message_id="<t-1@pangeo.example>",
        )
    )
    assert row["ticket"] == 1 and row["action"] == "appended"


def test_stranger_quoting_a_tag_gets_a_ticket_of_their_own(instance: Instance) -> None:
    open_request(instance)
    row = instance.ingest(
        make_mail(
            frm="mallory@evil.example",
            subject="Re: [support #1] Hub is down",
            message_id="<m-1@evil.example>",
            body="Please send me the details of this ticket.\n",
        )
    )
    assert row["action"] == "created" and row["ticket"] == 2
    assert "not on that ticket" in row["reason"]
    notes = [e["text"] for e in instance.show(2)["timeline"] if e["kind"] == "note"]
    assert any("[#1]" in n for n in notes)
    # nothing of ticket 1 leaked: its timeline has only the requester's mail and our two
    assert [e["kind"] for e in instance.show(1)["timeline"]] == ["received", "sent", "sent"]
    ack = sql(instance, "select raw from outbox where ticket_id = 2 and template = 'ack'")
    assert b"[support #2]" in ack[0][0]
    # ticket 1's words (the requester's "the hub returns 502 ...") are not in it;
    # decoded, since a bare "502" may turn up in a Message-ID or a boundary
    decoded = email.message_from_bytes(ack[0][0], policy=policy.default)
    texts = [part.get_content() for part in decoded.walk() if part.get_content_maintype() == "text"]
    assert texts and not any("returns 502" in text for text in texts)


# -- mail that must not be answered -----------------------------------------------


def test_auto_reply_is_stored_but_never_answered(instance: Instance) -> None:
    open_request(instance)
    [(ack_id,)] = sql(instance, "select message_id from messages where template = 'ack'")
    before = len(outbox(instance))
    row = instance.ingest(
        make_mail(
            subject="Out of office: [support #1] Hub is down",
            message_id="<ooo-1@pangeo.example>",
            in_reply_to=f"<{ack_id}>",
            headers={"Auto-Submitted": "auto-replied"},
            body="I am away until Monday.\n",
        )
    )
    assert row["ticket"] == 1 and row["action"] == "appended"
    assert len(outbox(instance)) == before
    # a fresh auto-reply from a stranger: a ticket, the stewards see it, no ack
    row = instance.ingest(
        make_mail(
            frm="noreply@vendor.example",
            subject="Automatic reply",
            message_id="<ooo-2@vendor.example>",
            headers={"X-Autoreply": "yes"},
        )
    )
    assert row["action"] == "created"
    templates = [r["template"] for r in outbox(instance) if r["ticket"] == row["ticket"]]
    assert templates == ["steward_new"]
    notes = [e["text"] for e in instance.show(row["ticket"])["timeline"] if e["kind"] == "note"]
    assert any("X-Autoreply" in n for n in notes)


@pytest.mark.parametrize(
    "headers",
    [
        {"Precedence": "bulk"},
        {"List-Id": "<dev.lists.example>"},
        {"Auto-Submitted": "auto-generated"},
    ],
)
def test_no_ack_to_bulk_list_or_generated_mail(instance: Instance, headers: dict[str, str]) -> None:
    row = instance.ingest(make_mail(message_id="<bulk@pangeo.example>", headers=headers))
    assert row["action"] == "created"
    assert [r["template"] for r in outbox(instance)] == ["steward_new"]


def bounce_of(message_id: str) -> bytes:
    """A delivery status report from the requester's MX: our mail ``message_id`` failed."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.pangeo.example>\r\n"
        "To: support@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.pangeo.example>\r\n"
        "Return-Path: <>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "The mail to rep@pangeo.example could not be delivered: mailbox full.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.pangeo.example\r\n\r\n"
        "Final-Recipient: rfc822; rep@pangeo.example\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@example.org\r\nMessage-ID: <{message_id}>\r\nSubject: [support #1] Hub\r\n"
        "--B--\r\n"
    ).encode()


def test_bounce_of_our_ack_is_recorded_on_that_message(instance: Instance) -> None:
    open_request(instance)
    [(ack_id,)] = sql(instance, "select message_id from messages where template = 'ack'")
    sql(instance, "update outbox set status = 'sent' where template = 'ack'")  # delivered
    before = len(outbox(instance))
    row = instance.ingest(bounce_of(ack_id))
    assert row["ticket"] == 1 and row["action"] == "appended"
    assert "bounce" in row["reason"]
    rows = outbox(instance)
    assert len(rows) == before  # nobody answers a bounce
    assert [r["status"] for r in rows if r["template"] == "ack"] == ["bounced"]
    ack_event = [e for e in instance.show(1)["timeline"] if e.get("template") == "ack"]
    assert ack_event[0]["delivery"] == "bounced"


def test_a_bounce_before_the_sent_ack_is_folded_in_still_marks_it(instance: Instance) -> None:
    """SQLite: the sender's outcome is in the journal beside the store (maild.mail.journal)
    until its next write transaction; a bounce ingested before that finds it there."""
    if journal_path(instance.url) is None:
        pytest.skip("the outcome journal is SQLite's; PostgreSQL's senders update the row")
    open_request(instance)
    [(ack_id,)] = sql(instance, "select message_id from messages where template = 'ack'")
    [(row_id,)] = sql(instance, "select id from outbox where template = 'ack'")
    sender = "host:7:cafe:sender"
    sql(instance, "update outbox set claimed_by = ? where id = ?", sender, row_id)
    sent_at = datetime.now(UTC)
    journal = OutcomeJournal.for_url(instance.url)
    assert journal is not None
    try:
        columns = {"attempts": 1, "status": "sent", "sent_at": sent_at, "last_error": None}
        asyncio.run(journal.record(row_id, sender, "sent", columns, f"outbox {row_id}"))
    finally:
        journal.close()

    row = instance.ingest(bounce_of(ack_id))

    assert "bounce" in row["reason"]
    [ack] = [r for r in outbox(instance) if r["template"] == "ack"]
    assert ack["status"] == "bounced"
    assert sql(instance, "select claimed_by from outbox where id = ?", row_id) == [(None,)]


def test_ack_rate_limit_per_sender(instance: Instance) -> None:
    for i in range(8):
        instance.ingest(make_mail(subject=f"Problem {i}", message_id=f"<p{i}@pangeo.example>"))
    acks = [r for r in outbox(instance) if r["template"] == "ack"]
    # SPEC 11: an address gets at most ack_rate_per_hour (5) automatic mails in an hour
    assert len(acks) == 5
    assert len(instance.queue()) == 8  # every mail still became a ticket


# -- duplicates and follow-ups ---------------------------------------------------------


def test_duplicate_changes_nothing_and_sends_nothing(instance: Instance) -> None:
    path = instance.write(make_mail(message_id=REQUEST_ID))
    instance.ingest(path)
    before = (instance.show(1), outbox(instance))
    row = instance.ingest(path)
    assert row["action"] == "duplicate" and row["ticket"] == 1
    assert (instance.show(1), outbox(instance)) == before


def test_reply_to_a_closed_ticket_opens_a_follow_up(instance: Instance) -> None:
    open_request(instance)
    sql(instance, "update tickets set status = 'closed' where id = 1")
    row = instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down",
            message_id="<again@pangeo.example>",
            in_reply_to=REQUEST_ID,
            body="It is down again.\n",
        )
    )
    assert row["action"] == "created" and row["ticket"] == 2
    new = instance.show(2)
    assert new["follow_up_of"] == 1
    assert any(e.get("text") == "follow-up to #1" for e in new["timeline"])
    old = instance.show(1)
    assert any(e.get("text") == "follow-up opened as #2" for e in old["timeline"])
    assert old["status"] == "closed"


def test_requester_reply_reopens_waiting(instance: Instance) -> None:
    open_request(instance)
    sql(instance, "update tickets set status = 'waiting' where id = 1")
    instance.ingest(
        make_mail(
            subject="Re: Hub is down", message_id="<w@pangeo.example>", in_reply_to=REQUEST_ID
        )
    )
    detail = instance.show(1)
    assert detail["status"] == "open"
    change = [e for e in detail["timeline"] if e["kind"] == "change"]
    assert change[-1]["field"] == "status"
    assert (change[-1]["old"], change[-1]["new"]) == ("waiting", "open")
    assert change[-1]["actor"] == "rep@pangeo.example"


# -- content --------------------------------------------------------------------------


def test_encoded_non_ascii_subject_and_name(instance: Instance) -> None:
    raw = (
        b"From: =?UTF-8?B?WsWhb2zDrWsgxb1sdcWlb3XEjWvDvQ==?= <zl@jupyter.example>\r\n"
        b"To: support@example.org\r\n"
        b"Subject: =?UTF-8?Q?=C4=8Cesk=C3=BD_test_=E2=80=93_hub?=\r\n"
        b"Message-ID: <cz@jupyter.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "Příliš žluťoučký kůň.\r\n".encode()
    )
    row = instance.ingest(raw)
    [ticket] = instance.queue()
    assert ticket["subject"] == "Český test – hub"
    assert ticket["community"] == "jupyter"
    received = instance.show(row["ticket"])["timeline"][0]
    assert received["from_name"] == "Zšolík Žluťoučký"
    assert "žluťoučký kůň" in received["text"]


def test_a_nul_in_a_mail_is_stored_on_every_store(instance: Instance) -> None:
    """PostgreSQL's text cannot hold NUL: it reads as U+FFFD, the raw mail keeps it."""
    raw = (
        b"From: Rosa Rep <rep@pangeo.example>\r\nTo: support@example.org\r\n"
        b"Subject: =?utf-8?q?Log_=00_attached?=\r\nMessage-ID: <nul@pangeo.example>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"The log has a NUL here: =00 and goes on.\r\n"
    )
    row = instance.ingest(raw)
    assert row["action"] == "created", row
    received = instance.show(row["ticket"])["timeline"][0]
    assert "a NUL here: \ufffd and goes on." in received["text"]
    assert "\x00" not in instance.queue()[0]["subject"]


def test_html_only_mail_becomes_text(instance: Instance) -> None:
    msg = make_mail(message_id="<html@pangeo.example>")
    msg.set_content(
        "<html><body><p>The <b>hub</b> is down.</p><p>Since&nbsp;09:00.</p>"
        "<script>evil()</script></body></html>",
        subtype="html",
    )
    row = instance.ingest(msg)
    text = instance.show(row["ticket"])["timeline"][0]["text"]
    assert "The hub is down." in text and "Since 09:00." in text
    assert "<b>" not in text and "evil" not in text


def test_attachment_is_stored_with_a_safe_name(instance: Instance) -> None:
    msg = make_mail(message_id="<att@pangeo.example>")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf",
                       filename="../../etc/passwd.pdf")  # fmt: skip
    row = instance.ingest(msg)
    [att] = instance.show(row["ticket"])["timeline"][0]["attachments"]
    assert att["content_type"] == "application/pdf"
    assert att["size"] == len(b"%PDF-1.4 fake")
    assert "/" not in att["filename"] and not att["filename"].startswith(".")
    assert att["filename"].endswith("passwd.pdf")
    # the steward's notification names it
    [(raw,)] = sql(instance, "select raw from outbox where template = 'steward_new'")
    assert b"passwd.pdf" in raw


def test_subject_with_crlf_cannot_inject_headers(instance: Instance) -> None:
    raw = (
        b"From: rep@pangeo.example\r\nTo: support@example.org\r\n"
        b"Subject: =?UTF-8?Q?Hello=0D=0ABcc:_victim@example.net?=\r\n"
        b"Message-ID: <inj@pangeo.example>\r\n\r\nbody\r\n"
    )
    instance.ingest(raw)
    for (out,) in sql(instance, "select raw from outbox"):
        msg = email.message_from_bytes(out, policy=policy.default)
        assert msg["Bcc"] is None
        assert "victim@example.net" not in (msg["To"] or "")
        assert "\n" not in msg["Subject"]


# -- never crash, never lose --------------------------------------------------------------


def test_garbage_is_quarantined_and_the_next_mail_goes_on(instance: Instance) -> None:
    bad = instance.write(b"\x00\x01\x02 this is not a mail \xff\xfe", "bad.eml")
    good = instance.write(make_mail(message_id=REQUEST_ID), "good.eml")
    rows = instance.ok("ingest", "--json", str(bad), str(good)).json()
    assert [r["action"] for r in rows] == ["quarantined", "created"]
    assert rows[0]["reason"]
    [q] = instance.ok("quarantine", "--json").json()
    assert q["source"].endswith("bad.eml") and q["reason"] == rows[0]["reason"]


def test_a_missing_file_stops_ingest_after_the_mails_before_it(instance: Instance) -> None:
    good = instance.write(make_mail(message_id=REQUEST_ID), "good.eml")
    result = instance.cli("ingest", str(good), str(instance.mail_dir / "missing.eml"))
    assert result.status != 0 and "no such file" in result.err
    assert "good.eml: created #1" in result.out
    assert [t["id"] for t in instance.queue()] == [1]


def _refuse_message_id(instance: Instance, message_id: str) -> None:
    """Make the store itself refuse to store one Message-ID (a constraint failing)."""
    if instance.url.startswith("sqlite"):
        instance.sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages "
            f"WHEN NEW.message_id = '{message_id}' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the store'); END"
        )
        return
    instance.sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE integrity_constraint_violation USING MESSAGE = 'refused by the store'; "
        "END $$"
    )
    instance.sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW "
        f"WHEN (NEW.message_id = '{message_id}') EXECUTE FUNCTION refuse()"
    )


def test_a_mail_failing_inside_an_mbox_chunk_is_quarantined_alone(instance: Instance) -> None:
    # the mails of an mbox go in one transaction, each in a savepoint of its own
    instance.ok("db", "upgrade")
    _refuse_message_id(instance, "bad@pangeo.example")
    mails = [
        make_mail(
            frm=f"user{n}@pangeo.example",
            subject=f"Question {n}",
            message_id=f"<q{n}@pangeo.example>",
        )
        for n in range(3)
    ]
    mails.insert(
        1, make_mail(frm="bad@pangeo.example", subject="Bad", message_id="<bad@pangeo.example>")
    )
    # a reply, after the failed mail, to a request stored earlier in the same chunk
    mails.append(
        make_mail(
            frm="user0@pangeo.example",
            subject="Re: Question 0",
            message_id="<r0@pangeo.example>",
            in_reply_to="<q0@pangeo.example>",
        )
    )
    mbox = instance.mail_dir / "chunk.mbox"
    with mbox.open("wb") as fh:
        for mail in mails:
            fh.write(b"From someone@pangeo.example Wed Nov 25 15:00:00 2026\n")
            fh.write(mail.as_bytes().replace(b"\nFrom ", b"\n>From ") + b"\n")
    result = instance.ok("ingest", "--json", str(mbox))
    assert "failed to commit" not in result.err  # the group committed, not one by one
    rows = result.json()
    assert [r["action"] for r in rows] == [
        "created",
        "quarantined",
        "created",
        "created",
        "appended",
    ]
    assert "refused by the store" in rows[1]["reason"]
    assert rows[4]["ticket"] == rows[0]["ticket"]
    # the others are stored and acknowledged; the bad one is in quarantine with its reason
    assert sorted(t["subject"] for t in instance.queue()) == [f"Question {n}" for n in range(3)]
    acks = sorted(r["to"][0] for r in outbox(instance) if r["template"] == "ack")
    assert acks == [f"user{n}@pangeo.example" for n in range(3)]
    [q] = instance.ok("quarantine", "--json").json()
    assert q["source"].endswith("chunk.mbox#2") and q["reason"] == rows[1]["reason"]
    assert (
        sql(instance, "select count(*) from messages where message_id = 'bad@pangeo.example'")[0][0]
        == 0
    )


def test_oversized_mail_is_kept_as_a_stub_and_the_sender_told(
    new_instance: Factory,
) -> None:
    instance = new_instance()
    text = instance.config.read_text().replace(
        "[tickets]\n", "[tickets]\nmax_message_bytes = 2000\n"
    )
    instance.config.write_text(text)
    row = instance.ingest(make_mail(message_id="<big@pangeo.example>", body="x" * 5000 + "\n"))
    assert row["action"] == "created"
    received = instance.show(row["ticket"])["timeline"][0]
    assert received.get("stub") is True
    assert sorted(r["template"] for r in outbox(instance)) == ["steward_new", "too_large"]


def test_mbox_and_dry_run(instance: Instance) -> None:
    mbox = instance.mail_dir / "two.mbox"
    mbox.write_bytes(
        b"From rep@pangeo.example Wed Nov 25 15:00:00 2026\n"
        + make_mail(message_id="<m1@pangeo.example>", subject="One").as_bytes()
        + b"\nFrom rep@pangeo.example Wed Nov 25 15:01:00 2026\n"
        + make_mail(message_id="<m2@pangeo.example>", subject="Two").as_bytes()
    )
    dry = instance.ok("ingest", "--dry-run", "--json", str(mbox)).json()
    assert [r["action"] for r in dry] == ["created", "created"]
    assert instance.queue() == [] and outbox(instance) == []
    rows = instance.ok("ingest", "--json", str(mbox)).json()
    assert [r["action"] for r in rows] == ["created", "created"]
    # (PostgreSQL sequences are not transactional: a dry run may leave a gap in numbers)
    first = rows[0]["ticket"]
    assert rows[1]["ticket"] == first + 1
    assert [(t["id"], t["subject"]) for t in instance.queue()] == [
        (first, "One"),
        (first + 1, "Two"),
    ]


def test_explain_changes_nothing_and_says_why(instance: Instance) -> None:
    open_request(instance)
    path = instance.write(
        make_mail(
            subject="Re: Hub is down", message_id="<x@pangeo.example>", in_reply_to=REQUEST_ID
        )
    )
    before = (instance.show(1), outbox(instance))
    out = instance.ok("explain", str(path)).out
    assert "rule references" in out and "#1" in out
    assert "requester_reply" in out
    assert (instance.show(1), outbox(instance)) == before
    data = instance.ok("explain", "--json", str(path)).json()[0]
    assert data["rule"] == "references" and data["classification"]["community"] == "pangeo"


def test_every_corpus_mail_is_ingested_or_quarantined_with_a_reason(instance: Instance) -> None:
    corpus = require_corpus()
    files = sorted(
        p for p in corpus.rglob("*") if p.is_file() and p.name not in ("INDEX.tsv", "SOURCES.md")
    )
    assert len(files) > 100
    rows = instance.ok("ingest", "--json", *map(str, files)).json()
    assert len(rows) >= len(files)
    for row in rows:
        assert row["action"] in ("created", "appended", "duplicate", "quarantined"), row
        if row["action"] == "quarantined":
            assert row["reason"], row
        else:
            assert row["ticket"], row
    # nothing was lost: every mail is either a stored message or in quarantine
    stored = sql(instance, "select count(*) from messages where direction = 'in'")[0][0]
    quarantined = sql(instance, "select count(*) from quarantine")[0][0]
    duplicates = sum(1 for r in rows if r["action"] == "duplicate")
    assert stored + quarantined + duplicates == len(rows)


def test_a_template_override_is_used(instance: Instance) -> None:
    override = instance.root / "templates"
    override.mkdir()
    (override / "ack.j2").write_text(
        "{% block subject %}{{ tag }} Got it: {{ ticket.subject }}{% endblock %}\n"
        "{% block text %}Thanks {{ message.from_name }}, our community team has it.{% endblock %}\n"
    )
    instance.config.write_text(instance.config.read_text() + f'\n[templates]\ndir = "{override}"\n')
    assert instance.cli("check-config").status == 0
    open_request(instance)
    [(raw,)] = sql(instance, "select raw from outbox where template = 'ack'")
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "[support #1] Got it: Hub is down"
    assert "Thanks Rosa Rep, our community team has it." in msg.get_content()  # type: ignore[attr-defined]
    # the templates not overridden are still the shipped ones
    [(steward,)] = sql(instance, "select raw from outbox where template = 'steward_new'")
    assert b"New ticket [support #1]" in steward


def test_a_broken_template_override_is_caught_by_check_config(instance: Instance) -> None:
    override = instance.root / "templates"
    override.mkdir()
    (override / "closed.j2").write_text("{% block text %}{{ ticket.no_such_field }}{% endblock %}")
    instance.config.write_text(instance.config.read_text() + f'\n[templates]\ndir = "{override}"\n')
    result = instance.cli("check-config")
    assert result.status == 1
    assert "closed" in result.err and "no_such_field" in result.err


def test_ingest_from_stdin_with_the_real_command(instance: Instance) -> None:
    raw = make_mail(message_id="<stdin@pangeo.example>").as_bytes()
    result = instance.run("ingest", "--json", "-", stdin=raw)
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["file"] == "<stdin>" and row["action"] == "created"
    bad = instance.run("--config-typo")
    assert bad.returncode == 2
    missing = instance.run("show", "999")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no ticket #999"
