"""What the support handbooks ask of the team (issue 14), end to end through the CLI:
who hears of a requester's reply, canned replies, post-mortems, attachments out."""

from __future__ import annotations

import email
import json
from datetime import datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import MAILS, Instance, make_mail

CHICAGO = ZoneInfo("America/Chicago")
REQUEST_ID = "<req-1@pangeo.example>"


def ct(text: str) -> str:
    """A local Chicago time as ISO 8601 with its offset; a bare HH:MM is on 25 Nov 2026."""
    if len(text) == 5:
        text = f"2026-11-25T{text}"
    return datetime.fromisoformat(text).replace(tzinfo=CHICAGO).isoformat()


def sent(instance: Instance, template: str) -> list[EmailMessage]:
    rows = instance.sql("select raw from outbox where template = ? order by id", template)
    return [email.message_from_bytes(r[0], policy=policy.default) for r in rows]  # type: ignore[misc]


def envelope(instance: Instance, template: str) -> list[set[str]]:
    rows = instance.sql("select rcpt_tos from outbox where template = ? order by id", template)
    return [set(json.loads(r[0])) for r in rows]


def request(instance: Instance, at: str = "2026-11-25T10:00") -> None:
    # 25 Nov 2026: bob and carol are on duty, alice is off (roster a, b, c from 2 Nov)
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", ct(at))


def steward(
    instance: Instance, who: str, tags: str, body: str, at: str, n: int = 0
) -> dict[str, Any]:
    return instance.ingest(
        make_mail(
            frm=f"{who.title()} <{who}@example.org>",
            subject=f"Re: [support #1] Hub is down {tags}",
            message_id=f"<{who}-{n}-{abs(hash((tags, body, at)))}@example.org>",
            in_reply_to=REQUEST_ID,
            body=body + "\n",
        ),
        "--now",
        ct(at),
    )


def requester(instance: Instance, body: str, at: str, n: int = 1) -> None:
    instance.ingest(
        make_mail(
            message_id=f"<again-{n}@pangeo.example>",
            subject="Re: [support #1] Hub is down",
            in_reply_to=REQUEST_ID,
            body=body + "\n",
        ),
        "--now",
        ct(at),
    )


# -- replies reach who works the ticket ----------------------------------------------


def test_an_incident_commander_off_the_roster_gets_the_requesters_answer(
    instance: Instance,
) -> None:
    request(instance)
    steward(instance, "bob", "[incident] [ic=alice]", "We are looking at the proxy.", "10:20")
    steward(instance, "carol", "[note]", "Proxy logs show OOM kills.", "10:40")
    requester(instance, "It is back for some users, not for others.", "11:00")
    # alice is the IC (off duty), bob and carol wrote; nobody else is bothered
    [to] = envelope(instance, "requester_reply")
    assert to == {"alice@example.org", "bob@example.org", "carol@example.org"}


def test_a_steward_who_wrote_hears_back_even_off_duty(instance: Instance) -> None:
    request(instance)
    steward(instance, "alice", "", "Could you send the error page?", "10:20")
    requester(instance, "Here it is: 502 Bad Gateway.", "11:00")
    # alice answered (off duty); the on-duty bob and carol are not copied
    assert envelope(instance, "requester_reply") == [{"alice@example.org"}]


def test_a_reply_on_an_untouched_ticket_goes_to_the_stewards_on_duty(instance: Instance) -> None:
    request(instance)
    requester(instance, "Also the dashboards are slow.", "10:30")
    assert envelope(instance, "requester_reply") == [{"bob@example.org", "carol@example.org"}]


# -- canned replies ----------------------------------------------------------------------


def test_a_canned_reply_follows_the_stewards_own_words(instance: Instance) -> None:
    request(instance)
    steward(
        instance,
        "bob",
        "[incident] [reply=incident_received]",
        "The proxy ran out of memory; we are restarting it.",
        "10:20",
    )
    [relay] = sent(instance, "relay")
    text = relay.get_content()
    own = text.index("The proxy ran out of memory")
    canned = text.index("We have your report and are treating it as an incident")
    assert own < canned
    assert "Bob Builder is working on it now" in text
    assert "Wed 2026-11-25 13:20 CST" in text  # the next update, 3 h later
    assert relay["Subject"] == "Re: [support #1] Hub is down"
    assert instance.show(1)["status"] == "open"


def test_a_canned_reply_alone_is_the_whole_answer(instance: Instance) -> None:
    request(instance)
    steward(instance, "bob", "[reply=need_info] [waiting]", "", "10:20")
    [relay] = sent(instance, "relay")
    assert relay.get_content().startswith("To go further we need a little more information")
    assert instance.show(1)["status"] == "waiting"


def test_an_unknown_canned_reply_applies_nothing_and_lists_the_names(instance: Instance) -> None:
    request(instance)
    steward(instance, "bob", "[priority=high] [reply=sorry]", "Looking into it.", "10:20")
    assert sent(instance, "relay") == []
    assert instance.show(1)["priority"] == "normal"
    [error] = sent(instance, "command_error")
    text = error.get_content()
    assert "[reply=sorry]" in text
    for name in ("budget_used_up", "change_scheduled", "incident_received", "need_info"):
        assert name in text
    assert error["To"].addresses[0].addr_spec == "bob@example.org"


def test_replies_lists_the_shipped_answers_and_the_overrides(instance: Instance) -> None:
    result = instance.ok("replies")
    for name in (
        "incident_received",
        "request_received",
        "need_info",
        "not_supported",
        "budget_used_up",
        "change_scheduled",
    ):
        assert name in result.out
    assert "To go further we need a little more information" in result.out

    own = instance.root / "templates"
    (own / "replies").mkdir(parents=True)
    (own / "replies" / "need_info.j2").write_text(
        "{# ours #}\nWe need the name of the hub, {{ ticket.requester }}.\n"
    )
    (own / "replies" / "holiday.j2").write_text("The team is away until Monday.\n")
    text = instance.config.read_text()
    instance.config.write_text(text + f'\n[templates]\ndir = "{own}"\n')
    rows = {r["name"]: r for r in instance.ok("replies", "--json").json()}
    assert rows["need_info"]["first_line"] == (
        "We need the name of the hub, {{ ticket.requester }}."
    )
    assert rows["need_info"]["override"] is True
    assert rows["holiday"]["first_line"] == "The team is away until Monday."
    assert rows["not_supported"]["override"] is False
    assert instance.ok("check-config").status == 0

    request(instance)
    steward(instance, "bob", "[reply=need_info]", "", "10:20")
    [relay] = sent(instance, "relay")
    assert relay.get_content().strip() == "We need the name of the hub, rep@pangeo.example."


def test_a_broken_canned_override_is_a_bad_tag_not_a_lost_mail(instance: Instance) -> None:
    own = instance.root / "templates"
    (own / "replies").mkdir(parents=True)
    (own / "replies" / "oops.j2").write_text("Hello {{ no_such_thing }}\n")
    instance.config.write_text(instance.config.read_text() + f'\n[templates]\ndir = "{own}"\n')
    request(instance)
    row = steward(instance, "bob", "[priority=high] [reply=oops]", "Hi.", "10:20")
    assert row["action"] == "appended"
    assert sent(instance, "relay") == []
    assert instance.show(1)["priority"] == "normal"
    assert "oops" in sent(instance, "command_error")[0].get_content()


# -- post-mortems --------------------------------------------------------------------------


def _incident(instance: Instance) -> None:
    request(instance, "2026-11-25T10:00")
    steward(instance, "bob", "[incident] [ic=alice]", "We are on it.", "2026-11-25T10:30")
    steward(instance, "carol", "[note] [time=45m]", "Restarted the proxy pods.", "2026-11-25T11:00")
    steward(
        instance,
        "alice",
        "[link=https://tracker.example/issues/7] [resolved]",
        "Fixed: the proxy has more memory now.",
        "2026-11-25T14:00",
    )


def test_postmortem_outlines_an_incident_from_its_timeline(instance: Instance) -> None:
    _incident(instance)
    out = instance.ok("postmortem", "1").out
    assert out.startswith("# Post-mortem: [support #1] Hub is down")
    assert "- Community: pangeo" in out
    assert "- Requester: rep@pangeo.example" in out
    assert "- Incident commander: alice" in out
    assert "- Links: https://tracker.example/issues/7" in out
    assert "- Time spent: 0 h 45 min" in out
    # 10:00 -> 10:30, and 10:00 -> 14:00 with the 12-13 lunch break outside working hours
    assert "after 0.5 h (0.5 working hours)" in out
    assert "after 4.0 h (3.0 working hours)" in out
    timeline = out[out.index("## Timeline") : out.index("## What went well")]
    order = [
        "received from rep@pangeo.example",
        "sent ack to rep@pangeo.example",
        "bob changed type: - -> incident",
        "bob changed incident_commander: - -> alice",
        "sent relay to rep@pangeo.example",
        "internal note by mail from carol@example.org",
        "carol changed time_spent_minutes: 0 -> 45",
        "alice changed status: open -> resolved",
        "sent incident_resolved to rep@pangeo.example",
    ]
    positions = [timeline.index(line) for line in order]
    assert positions == sorted(positions)
    for heading in ("## What went well", "## What went wrong", "## Action items"):
        assert heading in out

    data = instance.ok("postmortem", "1", "--json").json()
    assert data["ticket"]["incident_commander"] == "alice"
    assert data["first_response"] == {"wall_hours": 0.5, "working_hours": 0.5}
    assert data["resolution"] == {"wall_hours": 4.0, "working_hours": 3.0}
    assert [i["kind"] for i in data["timeline"]][:2] == ["received", "sent"]
    assert data["went_well"] == data["went_wrong"] == data["action_items"] == []


def test_postmortem_refuses_what_is_not_an_incident(instance: Instance) -> None:
    request(instance)
    result = instance.cli("postmortem", "1")
    assert result.status == 1
    assert "not an incident" in result.err
    missing = instance.cli("postmortem", "9")
    assert missing.status == 1 and "no ticket #9" in missing.err


# -- attachments out -----------------------------------------------------------------------


def _with_attachments(instance: Instance) -> None:
    instance.ingest(make_mail(message_id=REQUEST_ID))
    msg = make_mail(message_id="<logs@pangeo.example>", in_reply_to=REQUEST_ID,
                    subject="Re: [support #1] Hub is down", body="Logs attached.\n")  # fmt: skip
    msg.add_attachment(b"first log\n", maintype="text", subtype="plain", filename="proxy.log")
    msg.add_attachment(b"second log\n", maintype="text", subtype="plain", filename="proxy.log")
    msg.add_attachment(
        b"#!/bin/sh\nrm -rf /\n", maintype="text", subtype="plain", filename="../../../../run.sh"
    )
    instance.ingest(msg)


def test_attachment_writes_into_the_folder_only(instance: Instance, tmp_path: Path) -> None:
    _with_attachments(instance)
    out = tmp_path / "out" / "t1"
    result = instance.ok("attachment", "1", "--out", str(out))
    names = sorted(p.name for p in out.iterdir())
    assert names == ["proxy-2.log", "proxy.log", "run.sh"]
    assert (out / "proxy.log").read_bytes() == b"first log\n"
    assert (out / "proxy-2.log").read_bytes() == b"second log\n"
    assert f"wrote {out / 'run.sh'}" in result.out
    # nothing landed beside or above the folder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t1"]
    assert not list(tmp_path.rglob("run.sh"))[1:]


def test_attachment_never_writes_through_an_existing_file_or_link(
    instance: Instance, tmp_path: Path
) -> None:
    _with_attachments(instance)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "proxy.log").symlink_to(victim)
    rows = instance.ok("attachment", "1", "--out", str(out), "--json").json()
    assert victim.read_text() == "keep me"
    assert [Path(r["path"]).name for r in rows] == ["proxy-2.log", "proxy-3.log", "run.sh"]
    assert [r["filename"] for r in rows] == ["proxy.log", "proxy.log", "run.sh"]
    assert all(Path(r["path"]).parent == out.resolve() for r in rows)


def test_attachment_of_the_fixture_mail_and_of_nothing(instance: Instance, tmp_path: Path) -> None:
    instance.ingest(make_mail(message_id="<req-1@pangeo.example>"))
    instance.ingest(MAILS / "attachment.eml")
    rows = instance.ok("attachment", "1", "--out", str(tmp_path / "a"), "--json").json()
    assert {r["filename"] for r in rows} == {"attachment-1.png", "passwd", "evil.exe"}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        ["attachment-1.png", "passwd", "evil.exe"]
    )
    instance.ingest(make_mail(message_id="<other@jupyter.example>", frm="lead@jupyter.example",
                              subject="Another question"))  # fmt: skip
    assert "has no attachments" in instance.ok("attachment", "2", "--out", str(tmp_path)).out
    assert instance.cli("attachment", "7").status == 1


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a\\..\\b", "..", "\x00\x1b", "C:x"])
def test_safe_filename_stays_a_bare_name(name: str) -> None:
    from maild.cli.export import safe_filename

    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe and not safe.startswith(".")
    assert Path(safe).name == safe


def _postmortem_mail_on(instance: Instance) -> None:
    text = instance.config.read_text()
    instance.config.write_text(text + "\n[incidents]\npostmortem_mail = true\n")


def test_resolving_an_incident_mails_the_outline_to_its_commander(instance: Instance) -> None:
    _postmortem_mail_on(instance)
    _incident(instance)
    assert envelope(instance, "postmortem") == [{"alice@example.org"}]
    [mail] = sent(instance, "postmortem")
    assert mail["Subject"] == "[support #1] Post-mortem outline: Hub is down"
    assert mail["Auto-Submitted"] == "auto-generated"
    text = mail.get_content()
    assert "- Incident commander: alice" in text
    assert "alice changed status: open -> resolved" in text
    assert "## Action items" in text
    # the requester never sees it, and closing the resolved ticket sends no second one
    instance.ok("close", "1", "--now", ct("2026-11-26T09:00"))
    assert len(sent(instance, "postmortem")) == 1


def test_an_incident_without_commander_sends_the_outline_to_those_on_duty(
    instance: Instance,
) -> None:
    _postmortem_mail_on(instance)
    request(instance)
    steward(instance, "bob", "[incident]", "On it.", "10:20")
    steward(instance, "bob", "[resolved]", "Fixed.", "11:20", n=1)
    assert envelope(instance, "postmortem") == [{"bob@example.org", "carol@example.org"}]


def test_no_outline_mail_unless_configured_or_for_other_tickets(instance: Instance) -> None:
    _incident(instance)
    assert sent(instance, "postmortem") == []
    _postmortem_mail_on(instance)
    instance.ingest(make_mail(message_id="<q@jupyter.example>", frm="lead@jupyter.example",
                              subject="How do I add a user?"))  # fmt: skip
    instance.ok("resolve", "2")
    assert sent(instance, "postmortem") == []
