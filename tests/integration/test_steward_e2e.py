"""Stewards steer tickets by mail (and operators by the CLI), end to end through maild ingest."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from typing import Any

from tests.conftest import Factory, Instance, make_mail

REQUEST_ID = "<req-1@pangeo.example>"


def sql(instance: Instance, query: str, *args: object) -> list[tuple[Any, ...]]:
    return instance.sql(query, *args)


def sent(instance: Instance, template: str) -> list[EmailMessage]:
    """Outgoing mails of one template, oldest first, parsed."""
    rows = sql(instance, "select raw from outbox where template = ? order by id", template)
    return [email.message_from_bytes(r[0], policy=policy.default) for r in rows]  # type: ignore[misc]


def envelope(instance: Instance, template: str) -> list[list[str]]:
    import json

    rows = sql(instance, "select rcpt_tos from outbox where template = ? order by id", template)
    return [json.loads(r[0]) for r in rows]


def steward_new_id(instance: Instance) -> str:
    [(mid,)] = sql(instance, "select message_id from messages where template = 'steward_new'")
    return f"<{mid}>"


def open_request(instance: Instance) -> None:
    row = instance.ingest(make_mail(message_id=REQUEST_ID, cc="Other Rep <rep2@pangeo.example>"))
    assert row["ticket"] == 1


def gmail_reply(
    instance: Instance, subject: str, body: str, frm: str = "alice@example.org"
) -> dict[str, Any]:
    parent = steward_new_id(instance)
    text = (
        f"{body}\n\nOn Wed, Nov 25, 2026 at 3:00 PM Example Support <support@example.org> wrote:\n"
        "> New ticket [support #1] from Rosa Rep\n> the hub returns 502 since this morning.\n"
    )
    return instance.ingest(
        make_mail(
            frm=f"Alice Liddell <{frm}>",
            to="support@example.org",
            subject=subject,
            message_id=f"<steward-{abs(hash((subject, body)))}@example.org>",
            in_reply_to=parent,
            references=f"{REQUEST_ID} {parent}",
            body=text,
        )
    )


def test_gmail_reply_with_tags_changes_the_ticket_and_relays_once(instance: Instance) -> None:
    open_request(instance)
    row = gmail_reply(
        instance,
        "Re: [support #1] Hub is down [type=incident] [ic=me] [priority=urgent]",
        "We are on it; the proxy ran out of memory.",
    )
    assert row["ticket"] == 1 and row["action"] == "appended"
    [ticket] = instance.queue()
    assert (ticket["type"], ticket["incident_commander"], ticket["priority"]) == (
        "incident", "alice", "urgent",
    )  # fmt: skip
    assert ticket["status"] == "open"  # the first relayed reply opens it

    [relay] = sent(instance, "relay")
    assert relay["Subject"] == "Re: [support #1] Hub is down"
    assert relay["To"].addresses[0].addr_spec == "rep@pangeo.example"
    assert [a.addr_spec for a in relay["Cc"].addresses] == ["rep2@pangeo.example"]
    assert relay["From"].addresses[0].display_name == "Alice Liddell"
    assert relay["From"].addresses[0].addr_spec == "support@example.org"
    assert relay["Auto-Submitted"] is None  # a human's reply
    assert relay["In-Reply-To"] == REQUEST_ID  # under the requester's last mail
    body = relay.get_content()
    assert "proxy ran out of memory" in body
    assert "502 since this morning" not in body  # the quoted thread is trimmed
    # the other steward on duty (bob, carol are on; alice is not) sees it, unnamed in headers
    [rcpts] = envelope(instance, "relay")
    assert set(rcpts) == {"rep@pangeo.example", "rep2@pangeo.example", "bob@example.org",
                          "carol@example.org"}  # fmt: skip
    assert "bob@example.org" not in relay.as_string()

    changes = [e for e in instance.show(1)["timeline"] if e["kind"] == "change"]
    assert {(c["field"], c["old"], c["new"], c["actor"]) for c in changes} >= {
        ("type", None, "incident", "alice"),
        ("incident_commander", None, "alice", "alice"),
        ("priority", "normal", "urgent", "alice"),
        ("status", "new", "open", "alice"),
    }


def test_outlook_reply_threads_by_tag_and_commands_apply(instance: Instance) -> None:
    open_request(instance)
    row = instance.ingest(
        make_mail(
            frm="Bob Builder <bob@example.org>",
            subject="RE: [support #1] Hub is down [assign=me; time=1h30m] [waiting]",
            message_id="<outlook-steward@example.org>",
            body="Could you send us the proxy logs?\n\n-----Original Message-----\n"
            "From: Example Support\nSent: Wednesday\nTo: Bob\nSubject: [support #1] Hub\n\n"
            "the hub returns 502 since this morning.\n",
        )
    )
    assert row["ticket"] == 1
    [ticket] = instance.queue()
    assert ticket["assignee"] == "bob"
    assert ticket["time_spent_minutes"] == 90
    assert ticket["status"] == "waiting"
    [relay] = sent(instance, "relay")
    # the relay's subject is the ticket's, in maild's own words, not the steward's "RE:"
    assert relay["Subject"] == "Re: [support #1] Hub is down"
    assert "proxy logs" in relay.get_content() and "502" not in relay.get_content()


def test_bad_tag_changes_nothing_and_the_steward_is_told(instance: Instance) -> None:
    open_request(instance)
    fields = ("status", "type", "priority", "assignee", "incident_commander", "links")
    before = {k: instance.queue()[0][k] for k in fields}
    gmail_reply(instance, "Re: [support #1] Hub [priority=asap] [type=incident]", "On it.")
    assert {k: instance.queue()[0][k] for k in fields} == before
    assert sent(instance, "relay") == []
    [error] = sent(instance, "command_error")
    assert error["To"].addresses[0].addr_spec == "alice@example.org"
    text = error.get_content()
    assert "[priority=asap]" in text and "low|normal|high|urgent" in text
    timeline = instance.show(1)["timeline"]
    note = [e for e in timeline if e["kind"] == "note" and e.get("message_id")]
    assert note and "On it." in note[0]["text"]


def test_requester_brackets_are_never_commands(instance: Instance) -> None:
    open_request(instance)
    instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down [status=closed] [Urgent]",
            message_id="<r-urgent@pangeo.example>",
            in_reply_to=REQUEST_ID,
        )
    )
    [ticket] = instance.queue()
    assert ticket["status"] == "new" and ticket["priority"] == "normal"
    assert sent(instance, "command_error") == []


def test_note_reaches_no_requester(instance: Instance) -> None:
    open_request(instance)
    gmail_reply(instance, "Re: [support #1] Hub is down [note]", "Internal: it is the proxy.")
    assert sent(instance, "relay") == []
    [ticket] = instance.queue()
    assert ticket["status"] == "new"
    notes = [e for e in instance.show(1)["timeline"] if e["kind"] == "note"]
    assert any("Internal: it is the proxy." in (e.get("text") or "") for e in notes)


def test_silent_applies_without_relaying(instance: Instance) -> None:
    open_request(instance)
    gmail_reply(instance, "Re: [support #1] Hub is down [silent] [change]", "FYI only.")
    assert instance.queue()[0]["type"] == "change"
    assert sent(instance, "relay") == []


def test_spoofed_steward_is_held_and_the_steward_asked_to_confirm(
    new_instance: Factory,
) -> None:
    instance = new_instance()
    instance.config.write_text(
        instance.config.read_text().replace(
            "require_authenticated = false",
            'require_authenticated = true\nauthserv_id = "mx.example.org"',
        )
    )
    open_request(instance)
    forged = make_mail(
        frm="alice@example.org",
        subject="Re: [support #1] Hub is down [status=closed]",
        message_id="<forged@evil.example>",
        headers={
            "Authentication-Results": "mx.example.org; dkim=fail header.d=example.org; "
            "spf=fail smtp.mailfrom=evil.example",
        },
        body="Closing this.\n",
    )
    instance.ingest(forged)
    assert instance.queue()[0]["status"] == "new"
    assert sent(instance, "relay") == [] and sent(instance, "closed") == []
    # the steward's own configured address is asked, and told what was seen
    [confirm] = sent(instance, "confirm_command")
    assert confirm["To"] == "alice@example.org"
    assert "dkim=fail" in confirm.get_content()
    genuine = make_mail(
        frm="alice@example.org",
        subject="Re: [support #1] Hub is down [waiting]",
        message_id="<genuine@example.org>",
        headers={"Authentication-Results": "mx.example.org; dkim=pass header.d=example.org"},
        body="Please send logs.\n",
    )
    instance.ingest(genuine)
    assert instance.queue()[0]["status"] == "waiting"


def test_resolve_then_confirmation_closes(instance: Instance) -> None:
    open_request(instance)
    gmail_reply(instance, "Re: [support #1] Hub is down [resolved]", "Fixed: we restarted it.")
    [relay] = sent(instance, "relay")
    text = relay.get_content()
    assert "Fixed: we restarted it." in text and "48 working hours" in text
    assert instance.show(1)["status"] == "resolved"
    [(relay_id,)] = sql(instance, "select message_id from messages where template = 'relay'")
    instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down",
            message_id="<thanks@pangeo.example>",
            in_reply_to=f"<{relay_id}>",
            body="Thanks, that works now!\n\nOn Wed, Alice wrote:\n> Fixed: we restarted it.\n",
        )
    )
    assert instance.show(1)["status"] == "closed"
    [closed] = sent(instance, "closed")
    assert closed["To"].addresses[0].addr_spec == "rep@pangeo.example"


def test_thanks_but_still_failing_reopens(instance: Instance) -> None:
    open_request(instance)
    gmail_reply(instance, "Re: [support #1] Hub is down [resolved]", "Fixed.")
    instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down",
            message_id="<still@pangeo.example>",
            in_reply_to=REQUEST_ID,
            body="Thanks, but it still fails for admins.\n",
        )
    )
    assert instance.show(1)["status"] == "open"
    assert sent(instance, "closed") == []


def test_steward_opens_a_ticket_on_someones_behalf(instance: Instance) -> None:
    row = instance.ingest(
        make_mail(
            frm="carol@example.org",
            subject="Storage quota for next term [requester=lead@jupyter.example] [change]",
            message_id="<behalf@example.org>",
            body="Hi, as discussed on the call, we will raise your quota.\n",
        )
    )
    [ticket] = instance.queue()
    assert ticket["id"] == row["ticket"]
    assert ticket["requester"] == "lead@jupyter.example"
    assert ticket["community"] == "jupyter"
    assert ticket["subject"] == "Storage quota for next term"
    assert ticket["type"] == "change"
    [relay] = sent(instance, "relay")
    assert relay["To"].addresses[0].addr_spec == "lead@jupyter.example"
    assert "[support #1]" in relay["Subject"]
    assert sent(instance, "ack") == []


def test_receipts_always(new_instance: Factory) -> None:
    instance = new_instance()
    instance.config.write_text(
        instance.config.read_text().replace("[commands]\n", '[commands]\nreceipts = "always"\n')
    )
    open_request(instance)
    gmail_reply(instance, "Re: [support #1] Hub is down [priority=high]", "Looking.")
    [receipt] = sent(instance, "receipt")
    assert "priority: normal -> high" in receipt.get_content()


def test_cli_verbs_and_tag_match_the_mail_path(new_instance: Factory) -> None:
    by_mail = new_instance()
    by_cli = new_instance()
    for inst in (by_mail, by_cli):
        open_request(inst)
    gmail_reply(by_mail, "Re: [support #1] Hub [type=incident] [ic=alice] [silent]", "x")
    result = by_cli.cli("tag", "1", "[type=incident] [ic=alice] [silent]")
    assert result.status == 0, result.err
    assert "type: - -> incident" in result.out

    def changes(inst: Instance) -> list[tuple[str, str | None, str | None]]:
        return [
            (e["field"], e["old"], e["new"])
            for e in inst.show(1)["timeline"]
            if e["kind"] == "change"
        ]

    assert (
        changes(by_mail)
        == changes(by_cli)
        == [
            ("type", None, "incident"),
            ("incident_commander", None, "alice"),
        ]
    )

    bad = by_cli.cli("tag", "1", "[priority=asap]")
    assert bad.status == 1 and "[priority=asap]" in bad.err and "urgent" in bad.err
    assert by_cli.cli("assign", "1", "bob").status == 0
    assert by_cli.cli("note", "1", "called", "them").status == 0
    assert by_cli.cli("resolve", "1").status == 0
    detail = by_cli.show(1)
    assert detail["assignee"] == "bob" and detail["status"] == "resolved"
    assert any(e.get("text") == "called them" for e in detail["timeline"])
    # the requester is told of the resolution and the 48-hour close
    [resolved] = sent(by_cli, "incident_resolved")  # it is an incident now
    assert "48 working hours" in resolved.get_content()
    assert by_cli.cli("close", "1").status == 0
    assert len(sent(by_cli, "closed")) == 1
    assert by_cli.cli("show", "99").status == 1
    assert by_cli.cli("reopen", "1").status == 0
    assert by_cli.show(1)["status"] == "open"


def test_attachments_cross_between_requester_and_stewards(instance: Instance) -> None:
    request = make_mail(message_id=REQUEST_ID)
    request.add_attachment(b"\x89PNG fake screenshot", maintype="image", subtype="png",
                           filename="error.png")  # fmt: skip
    instance.ingest(request)
    [note] = sent(instance, "steward_new")
    [png] = [p for p in note.iter_attachments() if p.get_filename() == "error.png"]
    assert png.get_content() == b"\x89PNG fake screenshot"

    reply = make_mail(
        frm="alice@example.org",
        subject="Re: [support #1] Hub is down",
        message_id="<patch@example.org>",
        in_reply_to=steward_new_id(instance),
        body="Apply this patch, please.\n",
    )
    reply.add_attachment(b"--- a/x\n+++ b/x\n", maintype="text", subtype="x-diff",
                         filename="fix.patch")  # fmt: skip
    instance.ingest(reply)
    [relay] = sent(instance, "relay")
    [patch] = [p for p in relay.iter_attachments() if p.get_filename() == "fix.patch"]
    # passed on as the text file it is, not application/octet-stream
    assert patch.get_content_type() == "text/x-diff"
    assert patch.get_payload(decode=True) == b"--- a/x\n+++ b/x\n"
    assert "Apply this patch" in relay.get_body(("plain",)).get_content()  # type: ignore[union-attr]
