"""Attacks on a public support address, each through the real command (SPEC section 11).

Every test plays one attack from the abuse report through ``maild ingest`` /
``tick`` / the operator verbs on a real SQLite store and asserts exactly who
would get mail: the outbox rows' envelope recipients. The listener and the
terminal attacks live in ``test_lmtp.py`` and ``test_cli_output.py``.
"""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from maild.mail import authn
from tests.conftest import Instance, make_mail
from tests.dkim_keys import DkimKey

REQUEST = "<req-1@pangeo.example>"
T0 = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def strict(instance: Instance, extra: str = "") -> Instance:
    """The shipped default: steward mail must be authenticated."""
    text = instance.config.read_text().replace(
        "require_authenticated = false", "require_authenticated = true" + extra
    )
    instance.config.write_text(text)
    return instance


def rows(instance: Instance, template: str | None = None) -> list[dict[str, Any]]:
    query = "select template, rcpt_tos, raw from outbox"
    args: tuple[object, ...] = ()
    if template is not None:
        query += " where template = ?"
        args = (template,)
    return [
        {"template": t, "rcpt": json.loads(r), "raw": raw}
        for t, r, raw in instance.sql(query + " order by id", *args)
    ]


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email_policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def external(recipients: list[str]) -> list[str]:
    team = {"support@example.org", "alice@example.org", "bob@example.org", "carol@example.org"}
    team.add("bob@home.example")
    return [r for r in recipients if r not in team]


def notes(instance: Instance, ticket: int) -> list[str]:
    return [e.get("text") or "" for e in instance.show(ticket)["timeline"] if e["kind"] == "note"]


def open_request(instance: Instance, **kwargs: Any) -> None:
    row = instance.ingest(make_mail(message_id=REQUEST, **kwargs), "--now", T0.isoformat())
    assert row["action"] == "created"


def steward_new_id(instance: Instance, ticket: int = 1) -> str:
    [(mid,)] = instance.sql(
        "select message_id from messages where template = 'steward_new' and ticket_id = ?", ticket
    )
    return f"<{mid}>"


# -- strangers and Cc ------------------------------------------------------------------


@pytest.mark.parametrize("count", [500, 40_000])
def test_a_stranger_cannot_put_a_crowd_on_a_ticket(instance: Instance, count: int) -> None:
    # written out by hand: the stdlib's folding of a huge header is what would be slow
    crowd = ", ".join(f"victim{i}@crowd.example" for i in range(count)).encode()
    row = instance.ingest(
        b"From: spammer@evil.example\r\nTo: support@example.org\r\nCc: "
        + crowd
        + b"\r\nSubject: FREE PRIZE claim at http://evil.example/\r\n"
        + b"Message-ID: <spam-1@evil.example>\r\nDate: Wed, 25 Nov 2026 15:00:00 +0000\r\n"
        + b"\r\nClaim it now.\r\n"
    )
    [ticket] = instance.queue()
    assert ticket["cc"] == []  # past tickets.max_cc: none of them joined
    [ack] = rows(instance, "ack")
    assert ack["rcpt"] == ["spammer@evil.example"]  # acknowledgments go to the sender only
    [copy] = rows(instance, "steward_new")
    assert external(copy["rcpt"]) == []
    assert "max_cc" in parsed(copy["raw"]).get_content()  # the stewards' copy says so
    # the steward answers and an operator closes: only the requester hears of it
    instance.ingest(
        make_mail(
            frm="Alice Liddell <alice@example.org>",
            subject="Re: [support #1] FREE PRIZE",
            in_reply_to=steward_new_id(instance),
            message_id="<alice-1@example.org>",
            body="We do not give prizes.\n",
        )
    )
    instance.ok("close", "1")
    for out in rows(instance):
        assert len(external(out["rcpt"])) <= 11, out["template"]
        assert not any(r.startswith("victim") for r in out["rcpt"]), out["template"]
    assert row["action"] == "created"


def test_the_requester_cc_is_kept_up_to_max_cc(instance: Instance) -> None:
    friends = ", ".join(f"friend{i}@pangeo.example" for i in range(10))
    open_request(instance, cc=friends)
    assert len(instance.queue()[0]["cc"]) == 10
    # one more from the requester would pass the cap: none of its addresses join
    instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down",
            cc="extra1@pangeo.example, extra2@pangeo.example",
            message_id="<req-2@pangeo.example>",
        )
    )
    ticket = instance.queue()[0]
    assert len(ticket["cc"]) == 10 and "extra1@pangeo.example" not in ticket["cc"]
    assert any("max_cc" in n for n in notes(instance, 1))


def test_knowing_a_message_id_does_not_join_a_ticket(instance: Instance) -> None:
    open_request(instance)
    row = instance.ingest(
        make_mail(
            frm="eve@evil.example",
            subject="Re: Hub is down",
            cc="eve2@evil.example, eve3@evil.example",
            in_reply_to=REQUEST,
            references=REQUEST,
            message_id="<eve-1@evil.example>",
            body="Please add us, we are from the same team.\n",
        )
    )
    assert row["ticket"] == 1 and "not on this ticket" in row["reason"]
    ticket = instance.queue()[0]
    assert ticket["cc"] == [] and ticket["status"] == "new"
    # the stewards see it, marked
    [copy] = rows(instance, "requester_reply")
    assert external(copy["rcpt"]) == []
    assert "NOT ON THIS TICKET" in parsed(copy["raw"]).get_content()
    # the next "confidential" steward reply goes to the requester alone
    instance.ingest(
        make_mail(
            frm="Alice Liddell <alice@example.org>",
            subject="Re: [support #1] Hub is down",
            in_reply_to=steward_new_id(instance),
            message_id="<alice-2@example.org>",
            body="The password is in the vault.\n",
        )
    )
    [relay] = rows(instance, "relay")
    assert external(relay["rcpt"]) == ["rep@pangeo.example"]
    explained = instance.ok(
        "explain",
        str(
            instance.write(
                make_mail(
                    frm="eve@evil.example",
                    subject="Re: Hub is down",
                    in_reply_to=REQUEST,
                    message_id="<eve-2@evil.example>",
                )
            )
        ),
    ).out
    assert "not on this ticket" in explained


def test_steward_adds_and_removes_cc(instance: Instance) -> None:
    open_request(instance)
    parent = steward_new_id(instance)

    def steward(subject: str, n: int) -> dict[str, Any]:
        return instance.ingest(
            make_mail(
                frm="Alice Liddell <alice@example.org>",
                subject=subject,
                in_reply_to=parent,
                message_id=f"<alice-cc-{n}@example.org>",
                body="Adding a colleague.\n",
            )
        )

    steward("Re: [support #1] Hub is down [cc=+ops@pangeo.example] [silent]", 1)
    assert instance.queue()[0]["cc"] == ["ops@pangeo.example"]
    steward("Re: [support #1] Hub is down [cc=-ops@pangeo.example] [silent]", 2)
    assert instance.queue()[0]["cc"] == []
    # a removed address no longer threads by subject: it is not on the ticket
    row = instance.ingest(
        make_mail(
            frm="ops@pangeo.example",
            subject="Re: [support #1] Hub is down",
            message_id="<ops-1@pangeo.example>",
        )
    )
    assert row["ticket"] != 1
    # past max_cc a steward's [cc=+] is refused with a reply saying why
    instance.config.write_text(
        instance.config.read_text().replace("[tickets]\n", "[tickets]\nmax_cc = 0\n")
    )
    steward("Re: [support #1] Hub is down [cc=+ops@pangeo.example]", 3)
    assert instance.queue()[0]["cc"] == []
    [error] = rows(instance, "command_error")
    assert error["rcpt"] == ["alice@example.org"]
    assert "max_cc" in parsed(error["raw"]).get_content()
    assert rows(instance, "relay") == []  # nothing applied, nothing relayed


# -- automatic-mail limits ---------------------------------------------------------------


def test_a_victim_cc_on_many_tickets_is_counted(instance: Instance) -> None:
    for i in range(10):
        instance.ingest(
            make_mail(
                subject=f"Problem {i}",
                cc="victim@pangeo.example",
                message_id=f"<p{i}@pangeo.example>",
            ),
            "--now",
            T0.isoformat(),
        )
    for i in range(1, 11):
        instance.ok("close", str(i), "--now", (T0 + timedelta(minutes=1)).isoformat())
    to_victim = [r for r in rows(instance) if "victim@pangeo.example" in r["rcpt"]]
    assert len(to_victim) == 5  # tickets.ack_rate_per_hour = 5, counted per recipient
    # the requester (rep@) is counted too: 5 acks already used the hour
    to_rep = [r for r in rows(instance) if "rep@pangeo.example" in r["rcpt"]]
    assert len(to_rep) == 5
    assert any("ack_rate_per_hour" in n for n in notes(instance, 10))


def test_an_autoresponder_without_headers_is_bounded_per_day(instance: Instance) -> None:
    """It answers every 15 minutes, new subject each time, for 25 hours."""
    sent_at: list[datetime] = []
    for i in range(101):
        now = T0 + timedelta(minutes=15 * i)
        instance.ingest(
            make_mail(
                frm="robot@bot.example",
                subject=f"Your message {i} was received",
                message_id=f"<bot-{i}@bot.example>",
                body="Thank you for your message.\n",
            ),
            "--now",
            now.isoformat(),
        )
        instance.ok("tick", "--now", now.isoformat())
    for at, rcpt in instance.sql("select created_at, rcpt_tos from outbox where template = 'ack'"):
        assert json.loads(rcpt) == ["robot@bot.example"]
        sent_at.append(datetime.fromisoformat(at).replace(tzinfo=UTC))
    assert len(instance.queue("--all")) == 101  # every mail is still kept
    assert 20 <= len(sent_at) < 30  # 20 the first day, a few as the window slides
    for start in sent_at:
        window = [t for t in sent_at if start <= t < start + timedelta(hours=24)]
        assert len(window) <= 20


def test_global_ceiling_stops_automatic_mail_and_tells_the_stewards_once(
    instance: Instance,
) -> None:
    instance.config.write_text(
        instance.config.read_text() + "\n[hygiene]\nmax_automatic_per_hour = 3\n"
    )
    for i in range(6):
        instance.ingest(
            make_mail(frm=f"person{i}@pangeo.example", message_id=f"<m{i}@pangeo.example>"),
            "--now",
            T0.isoformat(),
        )
    assert len(rows(instance, "ack")) == 3
    [alert] = rows(instance, "automatic_ceiling")
    assert sorted(alert["rcpt"]) == ["bob@example.org", "carol@example.org"]
    assert len(rows(instance, "steward_new")) == 6  # the team still gets every request


# -- forged stewards --------------------------------------------------------------------


def test_forged_steward_commands_and_relay_are_held(instance: Instance) -> None:
    strict(instance)
    open_request(instance)
    instance.ingest(
        make_mail(
            frm="Alice Liddell <alice@example.org>",
            subject="Re: [support #1] Hub is down [resolved] [assign=bob]",
            in_reply_to=steward_new_id(instance),
            message_id="<forged-1@evil.example>",
            headers={"Reply-To": "attacker@evil.example"},
            body="Please send your password to attacker@evil.example.\n",
        )
    )
    ticket = instance.queue()[0]
    assert ticket["status"] == "new" and ticket["assignee"] is None
    assert rows(instance, "relay") == []
    # the confirmation goes to the steward's configured address, never to Reply-To
    [confirm] = rows(instance, "confirm_command")
    assert confirm["rcpt"] == ["alice@example.org"]
    # the held mail shows as held
    held = [e for e in instance.show(1)["timeline"] if e.get("held")]
    assert held and held[0]["held"]["state"] == "held"
    assert any("held until alice confirms" in n for n in notes(instance, 1))


def test_forged_steward_cannot_open_a_ticket_for_a_victim(instance: Instance) -> None:
    strict(instance)
    instance.ingest(
        make_mail(
            frm="alice@example.org",
            subject="Invoice overdue [requester=victim@bank.example]",
            message_id="<forged-2@evil.example>",
            body="Pay now at http://evil.example/\n",
        )
    )
    assert all("victim@bank.example" not in r["rcpt"] for r in rows(instance))
    assert instance.queue()[0]["requester"] == "alice@example.org"


@pytest.mark.parametrize(
    "results",
    [
        "mx.example.org; dkim=fail (header.d=example.org dkim=pass) header.d=x.example",
        'mx.example.org; dkim=fail reason="dkim=pass header.d=example.org" header.d=x.example',
        "mx.example.org; dkim=pass header.d=org",
    ],
)
def test_authentication_results_tricks_do_not_authenticate(
    instance: Instance, results: str
) -> None:
    strict(instance, '\nauthserv_id = "mx.example.org"')
    open_request(instance)
    instance.ingest(
        make_mail(
            frm="alice@example.org",
            subject="Re: [support #1] Hub is down [closed]",
            in_reply_to=steward_new_id(instance),
            message_id="<forged-3@evil.example>",
            headers={"Authentication-Results": results},
        )
    )
    assert instance.queue()[0]["status"] == "new"
    assert len(rows(instance, "confirm_command")) == 1


@pytest.fixture
def dkim_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DkimKey:
    key = DkimKey.generate(tmp_path, "example.org")
    monkeypatch.setattr(authn, "dns_txt", key.lookup)
    return key


def test_dkim_signed_steward_mail_applies_and_an_altered_one_is_held_then_confirmed(
    instance: Instance, dkim_key: DkimKey
) -> None:
    strict(instance)
    open_request(instance)
    parent = steward_new_id(instance)

    def steward_mail(subject: str, n: int, body: str = "Looking into it.\n") -> bytes:
        return make_mail(
            frm="Alice Liddell <alice@example.org>",
            subject=subject,
            in_reply_to=parent,
            references=f"{REQUEST} {parent}",
            message_id=f"<alice-dkim-{n}@example.org>",
            body=body,
        ).as_bytes()

    signed = dkim_key.sign(steward_mail("Re: [support #1] Hub is down [priority=high]", 1))
    instance.ingest(signed)
    assert instance.queue()[0]["priority"] == "high"
    assert len(rows(instance, "relay")) == 1  # applied and relayed at once
    assert rows(instance, "confirm_command") == []

    tampered = dkim_key.sign(steward_mail("Re: [support #1] Hub is down [waiting]", 2, "Logs?\n"))
    tampered = tampered.replace(b"[waiting]", b"[resolved]")
    instance.ingest(tampered)
    assert instance.queue()[0]["status"] == "open"  # held, not resolved
    [confirm] = rows(instance, "confirm_command")
    assert confirm["rcpt"] == ["alice@example.org"]
    message = parsed(confirm["raw"])
    token = str(message["Subject"]).split("[confirm=", 1)[1].split("]", 1)[0]
    assert "[resolved]" in message.get_content() and "Logs?" in message.get_content()

    # another steward cannot use alice's token
    instance.ingest(
        make_mail(
            frm="bob@example.org",
            subject=f"Re: [support #1] Confirm [confirm={token}]",
            in_reply_to=f"<{message['Message-ID'].strip('<>')}>",
            message_id="<bob-confirm@example.org>",
        )
    )
    assert instance.queue()[0]["status"] == "open"

    def confirm_reply(n: int) -> None:
        instance.ingest(
            make_mail(
                frm="alice@example.org",
                subject=f"Re: {message['Subject']}",
                in_reply_to=message["Message-ID"],
                message_id=f"<alice-confirm-{n}@example.org>",
                body="Yes, that was me.\n",
            )
        )

    confirm_reply(1)
    ticket = instance.queue("--all")[0]
    assert ticket["status"] == "resolved"
    relays = rows(instance, "relay")
    assert len(relays) == 2 and "Logs?" in parsed(relays[1]["raw"]).get_content()
    assert external(relays[1]["rcpt"]) == ["rep@pangeo.example"]
    held = [e for e in instance.show(1)["timeline"] if e.get("held")]
    assert held[0]["held"]["state"] == "confirmed"
    # a token works once
    confirm_reply(2)
    assert len(rows(instance, "relay")) == 2
    errors = rows(instance, "command_error")
    assert any("already used" in parsed(e["raw"]).get_content() for e in errors)


def test_a_token_expires(instance: Instance, dkim_key: DkimKey) -> None:
    strict(instance, '\nconfirm_within = "1h"')
    open_request(instance)
    instance.ingest(
        make_mail(
            frm="alice@example.org",
            subject="Re: [support #1] Hub is down [waiting]",
            in_reply_to=steward_new_id(instance),
            message_id="<alice-unsigned@example.org>",
        ),
        "--now",
        T0.isoformat(),
    )
    [confirm] = rows(instance, "confirm_command")
    message = parsed(confirm["raw"])
    later = (T0 + timedelta(hours=2)).isoformat()
    instance.ingest(
        make_mail(
            frm="alice@example.org",
            subject=f"Re: {message['Subject']}",
            in_reply_to=message["Message-ID"],
            message_id="<alice-late@example.org>",
        ),
        "--now",
        later,
    )
    assert instance.queue()[0]["status"] == "new"
    [error] = rows(instance, "command_error")
    assert "expired" in parsed(error["raw"]).get_content()
    held = [e for e in instance.show(1)["timeline"] if e.get("held")]
    assert held[0]["held"]["state"] in ("held", "expired")


def test_dns_failure_holds_and_loses_nothing(
    instance: Instance, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = DkimKey.generate(tmp_path, "example.org")

    def down(name: bytes | str, timeout: float = 5) -> bytes | None:
        return None  # what dns_txt answers when the resolver fails

    monkeypatch.setattr(authn, "dns_txt", down)
    strict(instance)
    open_request(instance)
    mail = make_mail(
        frm="alice@example.org",
        subject="Re: [support #1] Hub is down [waiting]",
        in_reply_to=steward_new_id(instance),
        message_id="<alice-dnsdown@example.org>",
        body="Could you send the logs?\n",
    )
    instance.ingest(key.sign(mail.as_bytes()))
    assert instance.queue()[0]["status"] == "new"
    assert len(rows(instance, "confirm_command")) == 1
    assert any(
        e.get("message_id") == "alice-dnsdown@example.org" for e in instance.show(1)["timeline"]
    )


# -- backscatter ------------------------------------------------------------------------


def test_mailer_daemon_return_path_is_not_acknowledged(instance: Instance) -> None:
    instance.ingest(make_mail(headers={"Return-Path": "<MAILER-DAEMON@mx.pangeo.example>"}))
    assert rows(instance, "ack") == []
    assert len(instance.queue()) == 1


def test_dmarc_fail_sender_gets_no_ack(instance: Instance) -> None:
    strict(instance, '\nauthserv_id = "mx.example.org"')
    instance.ingest(
        make_mail(
            frm="ceo@bank.example",
            headers={
                "Authentication-Results": "mx.example.org; dmarc=fail header.from=bank.example"
            },
        )
    )
    assert rows(instance, "ack") == []
    assert len(instance.queue()) == 1  # the ticket is still created
    assert any("dmarc=fail" in n for n in notes(instance, 1))


def test_an_ack_repeats_little_of_a_huge_subject(instance: Instance) -> None:
    huge = b"FREE PRIZE " * 100_000  # about 1 MB, on one line as an attacker sends it
    raw = (
        b"From: victim@forged.example\r\nTo: support@example.org\r\nSubject: "
        + huge
        + b"\r\nMessage-ID: <huge@forged.example>\r\n"
        + b"Date: Wed, 25 Nov 2026 15:00:00 +0000\r\n\r\n"
        + b"x" * 500_000
        + b"\r\n"
    )
    instance.ingest(raw)
    [ack] = rows(instance, "ack")
    assert len(ack["raw"]) < 10_000
    subject = str(parsed(ack["raw"])["Subject"])
    assert len(subject) <= 200 + len("[support #1] ")
    assert "xxxxxxxxxx" not in parsed(ack["raw"]).get_content()


def test_stewards_copy_is_cut_at_100_kb(instance: Instance) -> None:
    instance.ingest(make_mail(body="line of text\n" * 30_000))  # about 390 KB
    [copy] = rows(instance, "steward_new")
    text = parsed(copy["raw"]).get_content()
    assert len(text) < 110_000
    assert "cut here" in text


def test_a_forged_requester_cannot_add_a_spy(instance: Instance) -> None:
    strict(instance, '\nauthserv_id = "mx.example.org"')
    open_request(instance)
    instance.ingest(
        make_mail(
            subject="Re: [support #1] Hub is down",
            cc="spy@evil.example",
            message_id="<forged-rep@evil.example>",
            headers={
                "Authentication-Results": "mx.example.org; dmarc=fail header.from=pangeo.example"
            },
            body="Thanks, that works now!\n",
        )
    )
    ticket = instance.queue("--all")[0]
    assert ticket["cc"] == [] and ticket["status"] == "new"  # no spy, no close
    assert any("dmarc=fail" in n for n in notes(instance, 1))


def test_sub_addresses_share_one_allowance(instance: Instance) -> None:
    for i in range(8):
        instance.ingest(
            make_mail(frm=f"victim+{i}@crowd.example", message_id=f"<plus-{i}@crowd.example>"),
            "--now",
            T0.isoformat(),
        )
    assert len(rows(instance, "ack")) == 5  # one mailbox, one hourly allowance


def test_a_forged_pass_below_an_unreadable_mx_header_does_not_authenticate(
    instance: Instance,
) -> None:
    strict(instance, '\nauthserv_id = "mx.example.org"')
    open_request(instance)
    mail = make_mail(
        frm="alice@example.org",
        subject="Re: [support #1] Hub is down [cc=+spy@evil.example]",
        in_reply_to=steward_new_id(instance),
        message_id="<forged-4@evil.example>",
        headers={"Authentication-Results": "mx.example.org; dmarc=pass header.from=example.org"},
    )
    # the MX adds its own header on top, which authres cannot read
    raw = (
        b"Authentication-Results: mx.example.org; spf=fail smtp.helo=[6.6.6.6]; "
        b"dmarc=fail header.from=example.org\r\n" + mail.as_bytes()
    )
    instance.ingest(raw)
    assert instance.queue()[0]["cc"] == []
    assert len(rows(instance, "confirm_command")) == 1
