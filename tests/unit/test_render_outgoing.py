"""Outgoing mail as a client reads it: attachments, followup and references (maild.mail.render)."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

from hypothesis import given
from hypothesis import strategies as st

from maild.config import parse_config
from maild.mail.render import OutAttachment, Rendered, build_message

CONFIG = parse_config({"support": {"address": "support@example.org", "name": "Support"}})
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def build(**kwargs: object) -> EmailMessage:
    fields: dict[str, object] = {
        "config": CONFIG,
        "rendered": Rendered("[support #1] Hub is down", "Hello.\n", None),
        "to": ["rosa@pangeo.example"],
        "message_id": "maild-1-x@example.org",
        "in_reply_to": None,
        "references": (),
        "now": NOW,
        "auto": None,
    }
    fields.update(kwargs)
    raw = build_message(**fields).as_bytes()  # type: ignore[arg-type]
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_attachments_keep_their_type_name_and_charset() -> None:
    latin = "name: Zoë\n".encode("iso-8859-1")
    msg = build(
        attachments=[
            OutAttachment("values.yaml", "text/x-yaml", b"replicas: 2\n", "utf-8"),
            OutAttachment("notes.txt", "text/plain", latin, "ISO-8859-1"),
            OutAttachment("error.png", "image/png", b"\x89PNG"),
            OutAttachment("raw.log", "text/plain", b"plain bytes\n"),
        ]
    )
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    assert [(n, p.get_content_type(), p.get_content_charset()) for n, p in parts.items()] == [
        ("values.yaml", "text/x-yaml", "utf-8"),
        ("notes.txt", "text/plain", "iso-8859-1"),
        ("error.png", "image/png", None),
        ("raw.log", "text/plain", None),
    ]
    assert parts["notes.txt"].get_content() == "name: Zoë\n"  # a client decodes it right
    assert parts["raw.log"].get_payload(decode=True) == b"plain bytes\n"  # bytes as they came


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=20)))
def test_a_hostile_type_or_charset_never_adds_a_header(ctype: str, charset: str | None) -> None:
    msg = build(attachments=[OutAttachment("x.bin", ctype, b"data", charset)])
    [part] = list(msg.iter_attachments())
    allowed = {"Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "MIME-Version"}
    assert set(part.keys()) <= allowed
    assert part.get_payload(decode=True) == b"data"
    assert msg["Bcc"] is None


def test_a_forwarded_mail_stays_a_mail_the_client_opens() -> None:
    inner = (
        b"From: Rosa Rep <rep@pangeo.example>\r\nSubject: Quota warning\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nThe quota is at 95 %, gr\xc3\xbc\xc3\x9fe.\r\n"
    )
    msg = build(attachments=[OutAttachment("Quota warning.eml", "message/rfc822", inner)])
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] in (None, "7bit", "8bit")  # never base64
    forwarded = part.get_content()
    assert forwarded["Subject"] == "Quota warning"
    assert "grüße" in forwarded.get_content()
    # bytes that are no mail at all still arrive, as a file
    [junk] = list(
        build(attachments=[OutAttachment("x.eml", "message/rfc822", b"")]).iter_attachments()
    )
    assert junk.get_content_type() == "application/octet-stream"


def test_group_replies_go_to_the_support_address() -> None:
    msg = build(reply_to="support@example.org", followup_to="support@example.org")
    assert msg["Mail-Followup-To"] == "support@example.org"
    assert msg["Reply-To"].addresses[0].addr_spec == "support@example.org"
    assert build()["Mail-Followup-To"] is None


def test_long_references_keep_the_root_and_the_newest() -> None:
    refs = [f"m{i}@x" for i in range(30)]
    msg = build(references=refs, in_reply_to="m29@x")
    kept = str(msg["References"]).split()
    assert kept == ["<m0@x>", *(f"<m{i}@x>" for i in range(11, 30))]
    assert msg["In-Reply-To"] == "<m29@x>"
