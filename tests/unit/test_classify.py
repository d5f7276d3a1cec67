"""Who sent a mail and whether it may be answered: RFC 3834, RFC 3464, RFC 8098, RFC 8601."""

from __future__ import annotations

import dataclasses

import pytest

from maild.config import Config, parse_config
from maild.core.classify import Classification, classify, why_not_answer, why_not_mail_requester
from maild.core.inbound import parse_mail

CONFIG: Config = parse_config(
    {
        "support": {"address": "support@example.org"},
        "stewards": [{"name": "alice", "addresses": ["alice@example.org"]}],
        "communities": [
            {
                "name": "pangeo",
                "representatives": ["rep@pangeo.example"],
                "domains": ["pangeo.example"],
            }
        ],
    }
)


def mail(headers: str, body: str = "hello\r\n") -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


BASE = "From: rep@pangeo.example\nTo: support@example.org\nSubject: x\nMessage-ID: <a@b>"


def report(report_type: str, action: str = "failed") -> bytes:
    return mail(
        "From: MAILER-DAEMON@mx.example\nTo: support@example.org\nSubject: report\n"
        "Message-ID: <r@mx>\nReturn-Path: <>\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type={report_type}; boundary="B"',
        "--B\r\nContent-Type: text/plain\r\n\r\nreport\r\n--B\r\n"
        "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; x@y\r\nAction: {action}\r\nStatus: 5.0.0\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <ours@example.org>\r\n"
        "--B--\r\n",
    )


@pytest.mark.parametrize(
    ("extra", "kind"),
    [
        ("", "normal"),
        ("Auto-Submitted: auto-replied", "auto_reply"),
        ("Auto-Submitted: no", "normal"),
        ("X-Autoreply: yes", "auto_reply"),
        ("Precedence: bulk", "auto_reply"),
        ("Precedence: list", "list"),
        ("List-Id: <dev.lists.example>", "list"),
        ("Return-Path: <>", "bounce"),
        ("X-Loop: support@example.org", "own"),
    ],
)
def test_kinds(extra: str, kind: str) -> None:
    assert classify(parse_mail(mail(BASE + "\n" + extra)), CONFIG).kind == kind


def test_failed_delivery_report_is_a_bounce_of_our_message() -> None:
    cls = classify(parse_mail(report("delivery-status")), CONFIG)
    assert cls.kind == "bounce" and cls.bounce_of == "ours@example.org"


@pytest.mark.parametrize(
    ("report_type", "action"),
    [("disposition-notification", "failed"), ("delivery-status", "delayed")],
)
def test_receipts_and_delays_are_not_bounces(report_type: str, action: str) -> None:
    cls = classify(parse_mail(report(report_type, action)), CONFIG)
    assert cls.kind == "auto_reply" and cls.bounce_of is None


def test_roles() -> None:
    assert classify(parse_mail(mail(BASE)), CONFIG).role == "representative"
    steward = classify(
        parse_mail(mail(BASE.replace("rep@pangeo.example", "Alice@Example.org"))), CONFIG
    )
    assert steward.role == "steward" and steward.steward is not None
    other = classify(parse_mail(mail(BASE.replace("rep@", "someone@"))), CONFIG)
    assert other.role == "requester" and other.community is not None


PERSON = Classification(kind="normal", reasons=(), role="requester", steward=None, community=None)
ROBOT = dataclasses.replace(PERSON, kind="auto_reply", reasons=("Auto-Submitted: auto-replied",))


@pytest.mark.parametrize(
    ("to", "cls", "dmarc_fail", "why_not"),
    [
        ("rep@pangeo.example", PERSON, False, None),
        ("rep@pangeo.example", ROBOT, False, "auto_reply: Auto-Submitted: auto-replied"),
        ("support@example.org", PERSON, False, "our own address"),
        (
            "rep@pangeo.example",
            PERSON,
            True,
            "mx.example.org reports dmarc=fail for the sender's domain: the From address is "
            "likely forged (no backscatter)",
        ),
        ("postmaster@pangeo.example", PERSON, False, "postmaster@pangeo.example is not a person"),
        ("", PERSON, False, "no usable address"),
    ],
)
def test_why_not_answer(
    to: str, cls: Classification, dmarc_fail: bool, why_not: str | None
) -> None:
    """The one rule deciding whether a mail's sender may get any automatic answer."""
    config = CONFIG._replace(commands=CONFIG.commands._replace(authserv_id="mx.example.org"))
    assert why_not_answer(to, cls, config, dmarc_fail=dmarc_fail) == why_not


@pytest.mark.parametrize(
    ("requester", "kind", "blocked"),
    [
        ("rep@pangeo.example", "normal", None),
        (
            "rep@pangeo.example",
            "auto_reply",
            "the ticket was opened by automatic mail (auto_reply)",
        ),
        ("mailer-daemon@example.net", "normal", "mailer-daemon@example.net is not a person"),
        ("", "normal", "no usable address"),
        ("alice@example.org", "normal", None),  # a steward who opened a ticket hears of it
    ],
)
def test_why_not_mail_requester(requester: str, kind: str, blocked: str | None) -> None:
    assert why_not_mail_requester(requester, kind, CONFIG) == blocked
