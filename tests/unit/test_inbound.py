"""parse_mail: golden fixtures, header edge cases, robustness, file names."""

from __future__ import annotations

import contextlib
import json
import tracemalloc
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from maild.core import inbound, mailpolicy
from maild.core.inbound import (
    Attachment,
    InboundMail,
    ParseError,
    _clean_str,
    _decode_header_value,
    logged_message_id,
    parse_mail,
    sanitize_filename,
)
from maild.core.subjects import clean_subject, find_ticket_refs, is_reply_subject

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mails"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.eml"))


def _mail(text: str) -> bytes:
    """A test mail from an indented-free literal, with CRLF line ends."""
    return text.lstrip("\n").replace("\n", "\r\n").encode("utf-8")


def _assert_clean_strings(mail: InboundMail) -> None:
    """Every text field is valid Unicode (storable as UTF-8)."""
    for f in fields(mail):
        value = getattr(mail, f.name)
        items: list[Any] = list(value) if isinstance(value, tuple) else [value]
        for item in items:
            parts = item if isinstance(item, tuple) else (item,)
            for part in parts:
                if isinstance(part, str):
                    part.encode("utf-8")
                elif isinstance(part, Attachment):
                    part.filename.encode("utf-8")


# -- golden fixtures -------------------------------------------------------------


def test_fixtures_present() -> None:
    assert len(FIXTURE_NAMES) >= 12
    for name in FIXTURE_NAMES:
        assert (FIXTURES / f"{name}.json").is_file(), name


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_golden(name: str) -> None:
    expected = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    mail = parse_mail((FIXTURES / f"{name}.eml").read_bytes())
    got: dict[str, Any] = {
        "message_id": mail.message_id,
        "message_id_synthesized": mail.message_id_synthesized,
        "from_addr": mail.from_addr,
        "from_name": mail.from_name,
        "to": list(mail.to),
        "cc": list(mail.cc),
        "subject": mail.subject,
        "clean_subject": clean_subject(mail.subject, "support"),
        "is_reply": is_reply_subject(mail.subject),
        "ticket_refs": list(find_ticket_refs(mail.subject, "support")),
        "in_reply_to": list(mail.in_reply_to),
        "references": list(mail.references),
        "thread_index": mail.thread_index,
        "thread_topic": mail.thread_topic,
        "return_path": mail.return_path,
        "date": mail.date.astimezone(UTC).isoformat() if mail.date else None,
        "content_type": mail.content_type,
        "has_html": mail.html is not None,
        "attachments": [[a.filename, a.content_type, a.size] for a in mail.attachments],
        "inline_attachments": [a.filename for a in mail.attachments if a.inline],
        "report_original_message_id": mail.report_original_message_id,
    }
    for key, value in got.items():
        if key in expected:
            assert value == expected[key], key
    assert mail.new_text.startswith(expected["new_text_startswith"]), mail.new_text
    for text in expected.get("new_text_contains", []):
        assert text in mail.new_text, text
    for text in expected.get("new_text_not_contains", []):
        assert text not in mail.new_text, text
    for text in expected.get("quoted_contains", []):
        assert text in mail.quoted_text, text
    if "signature_startswith" in expected:
        assert mail.signature.startswith(expected["signature_startswith"])
    for header, value in expected.get("headers", {}).items():
        assert mail.header(header) == value, header
    for attachment in mail.attachments:
        assert attachment.size == len(attachment.content)
    assert mail.defects == ()
    assert mail.size == len(mail.raw)
    _assert_clean_strings(mail)


def test_fixtures_thread_together() -> None:
    """The fixtures form one conversation around <req-1@pangeo.example>."""
    for name in FIXTURE_NAMES:
        mail = parse_mail((FIXTURES / f"{name}.eml").read_bytes())
        if name in ("new_request", "encoded_subject", "bounce"):
            assert not mail.in_reply_to and not mail.references, name
        elif name == "reply_outlook":
            assert mail.thread_index and not mail.in_reply_to and not mail.references
        else:
            assert "req-1@pangeo.example" in mail.references, name


# -- ParseError: not a mail at all -------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   \r\n\r\n",
        b"hello world, no headers here\n",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(range(256)) * 4,
        b"X-Only-Custom: header\r\n\r\nbody\r\n",
        b"From nobody Mon Mar  3 09:00:00 2025\n",
        b"\x00\x01\x02From: a@b.c\r\n",
    ],
)
def test_not_a_mail(raw: bytes) -> None:
    with pytest.raises(ParseError):
        parse_mail(raw)


def test_parse_error_is_value_error() -> None:
    assert issubclass(ParseError, ValueError)


# -- headers ---------------------------------------------------------------------


def test_minimal_mail() -> None:
    mail = parse_mail(b"Subject: hi\r\n\r\nbody\r\n")
    assert mail.subject == "hi"
    assert mail.text == "body\n"
    assert mail.new_text == "body"
    assert mail.from_addr is None
    assert mail.from_name == ""
    assert mail.date is None
    assert mail.return_path is None
    assert mail.message_id_synthesized
    assert mail.content_type == "text/plain"
    assert mail.html is None


def test_synthesized_message_id_is_stable() -> None:
    raw = b"From: a@b.example\r\nSubject: x\r\n\r\nbody\r\n"
    first, second = parse_mail(raw), parse_mail(raw)
    assert first.message_id == second.message_id
    assert first.message_id.startswith("sha256-") and first.message_id.endswith("@maild.invalid")
    assert len(first.message_id.split("@")[0]) == len("sha256-") + 40
    assert parse_mail(raw + b"x").message_id != first.message_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@example.org>", "abc@example.org"),
        ("  <abc@example.org>  ", "abc@example.org"),
        ("abc@example.org", "abc@example.org"),
        ("<abc@example.org> (added by postmaster)", "abc@example.org"),
        ("(comment) <abc@example.org>", "abc@example.org"),
        ("<xxxx>", "xxxx"),
        ("<" + "a" * 400 + "@example.org>", "a" * 400 + "@example.org"),
        ("<folded\n @example.org>", "folded@example.org"),
    ],
    ids=["plain", "spaces", "bare", "comment-after", "comment-before", "no-at", "long", "folded"],
)
def test_message_id_forms(value: str, expected: str) -> None:
    mail = parse_mail(_mail(f"From: a@b.example\nMessage-ID: {value}\n\nx\n"))
    assert mail.message_id == expected
    assert not mail.message_id_synthesized


@pytest.mark.parametrize(
    "value", ["", "<>", "   ", "<" + "x" * 1200 + "@y>"], ids=["empty", "brackets", "blank", "long"]
)
def test_unusable_message_id_is_synthesized(value: str) -> None:
    mail = parse_mail(_mail(f"From: a@b.example\nMessage-ID: {value}\n\nx\n"))
    assert mail.message_id_synthesized
    assert mail.message_id.endswith("@maild.invalid")


def test_references_forms() -> None:
    raw = _mail(
        "From: a@b.example\n"
        "In-Reply-To: <r3@x> (Bob's message of Mon)\n"
        "References: <r1@x> <r2@x>,<r3@x>\n"
        "\t<r2@x>\n"
        "References: <r4@x>\n"
        "\n"
        "x\n"
    )
    mail = parse_mail(raw)
    assert mail.in_reply_to == ("r3@x",)
    assert mail.references == ("r1@x", "r2@x", "r3@x", "r4@x")


def test_references_without_brackets_and_empty_in_reply_to() -> None:
    mail = parse_mail(_mail("From: a@b.example\nIn-Reply-To:\nReferences: r1@x r2@x\n\nx\n"))
    assert mail.in_reply_to == ()
    assert mail.references == ("r1@x", "r2@x")


def test_addresses() -> None:
    raw = _mail(
        "From: =?UTF-8?Q?Rep=2C_Rosa?= <REP@Pangeo.Example>\n"
        "Sender: list-bounces@lists.example\n"
        "Reply-To: Team <team@pangeo.example>, rep@pangeo.example\n"
        "To: support@example.org, Someone Else <else@example.net>\n"
        "Cc: undisclosed-recipients:;\n"
        "Return-Path: <Bounce@Lists.Example>\n"
        "Subject: x\n"
        "\n"
        "x\n"
    )
    mail = parse_mail(raw)
    assert mail.from_addr == "rep@pangeo.example"
    assert mail.from_name == "Rep, Rosa"
    assert mail.to == ("support@example.org", "else@example.net")
    assert mail.cc == ()
    assert mail.reply_to == ("team@pangeo.example", "rep@pangeo.example")
    assert mail.sender_addrs == (
        "rep@pangeo.example",
        "list-bounces@lists.example",
        "team@pangeo.example",
    )
    assert mail.return_path == "bounce@lists.example"


def test_old_style_comment_name() -> None:
    mail = parse_mail(_mail("From: barry@python.org (Barry A. Warsaw)\nSubject: x\n\nx\n"))
    assert mail.from_addr == "barry@python.org"
    assert mail.from_name == "Barry A. Warsaw"


def test_null_return_path() -> None:
    mail = parse_mail(_mail("Return-Path: <>\nFrom: MAILER-DAEMON@mx.example\nSubject: x\n\nx\n"))
    assert mail.return_path == ""
    assert mail.from_addr == "mailer-daemon@mx.example"


def test_unparseable_from() -> None:
    mail = parse_mail(_mail("From: <<<>>>\nSubject: x\n\nx\n"))
    assert mail.from_addr is None


def test_an_address_header_that_trips_the_parser_is_a_defect_every_time() -> None:
    # the second mail's From is read from the cache of header values: its
    # defect must be recorded there too, not only the first time
    raw = _mail("From: rosa@\nSubject: x\n\nx\n")
    first, second = parse_mail(raw), parse_mail(raw)
    assert "from: IndexError" in first.defects
    assert second.defects == first.defects
    assert second.from_addr == first.from_addr


def test_a_from_that_ran_out_of_stack_is_read_again_in_the_next_mail() -> None:
    # how deep the header parser may recurse depends on the caller's stack: what
    # it met deep down must not stick to the same From in later mails
    def raw(depth: int) -> bytes:
        nested = "(" * 110 + ")" * 110  # the value stays under 256 characters: cached
        return _mail(f"From: x{depth} <rosa@pangeo.example> {nested}\nSubject: x\n\nx\n")

    def deep(depth: int, left: int) -> InboundMail:
        return deep(depth, left - 1) if left else parse_mail(raw(depth))

    for depth in range(400, 1000, 10):
        if "from: RecursionError" in deep(depth, depth).defects:
            break
    else:
        pytest.fail("no depth of stack made the From alone unreadable")
    again = parse_mail(raw(depth))
    assert again.from_addr == "rosa@pangeo.example"
    assert "from: RecursionError" not in again.defects


def test_the_address_cache_stays_small_on_hostile_headers() -> None:
    # a stranger's Cc of one-letter addresses is the most a cached value parses to
    inbound._address_value_cached.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = 40
        for i in range(kept):
            value = (f"{i}," + ",".join("\u0101" for _ in range(200)))[:256]
            inbound._address_value_cached("cc", value.rsplit(",", 1)[0])
        grown = tracemalloc.get_traced_memory()[0] - before
        cached = inbound._address_value_cached.cache_info().currsize
    finally:
        tracemalloc.stop()
        inbound._address_value_cached.cache_clear()
    assert cached == kept
    assert grown / kept * inbound._ADDRESSES_CACHED < 24 * 1024 * 1024


def test_subject_decoding_and_folding() -> None:
    raw = _mail(
        "From: a@b.example\nSubject: =?ISO-8859-1?Q?Caf=E9?= au lait\n =?UTF-8?B?4pyT?=\n\nx\n"
    )
    assert parse_mail(raw).subject == "Café au lait ✓"


def test_subject_with_injected_newline_is_flattened() -> None:
    raw = _mail("From: a@b.example\nSubject: =?UTF-8?Q?hi=0D=0ABcc:_evil@example.net?=\n\nx\n")
    subject = parse_mail(raw).subject
    assert "\r" not in subject and "\n" not in subject
    assert subject == "hi  Bcc: evil@example.net"


def test_raw_utf8_headers() -> None:
    raw = "From: Jöhn <jöhn@exämple.org>\nSubject: Grüße\n\nx\n".encode()
    mail = parse_mail(raw)
    assert mail.subject == "Grüße"
    assert mail.from_name == "Jöhn"


def test_raw_latin1_header_falls_back() -> None:
    mail = parse_mail(b"From: a@b.example\nSubject: Forma\xe7\xe3o\n\nx\n")
    assert mail.subject == "Formação"


def test_unknown_charset_in_encoded_word() -> None:
    mail = parse_mail(_mail("From: a@b.example\nSubject: =?x-nonsense?Q?abc?=\n\nx\n"))
    mail.subject.encode("utf-8")


def test_header_lookup() -> None:
    mail = parse_mail(_mail("From: a@b.example\nX-Tag: one\nx-tag: two\nSubject: s\n\nx\n"))
    assert mail.header("X-TAG") == "one"
    assert mail.header_all("x-tag") == ("one", "two")
    assert mail.header("missing") is None
    assert mail.header_all("missing") == ()
    assert mail.headers[0] == ("from", "a@b.example")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 3 Mar 2025 10:12:38 +0100", datetime(2025, 3, 3, 9, 12, 38, tzinfo=UTC)),
        ("Mon, 3 Mar 2025 10:12:38 -0000", datetime(2025, 3, 3, 10, 12, 38, tzinfo=UTC)),
        ("3 Mar 2025 10:12:38 GMT", datetime(2025, 3, 3, 10, 12, 38, tzinfo=UTC)),
        ("Mon, 3 Mar 2025 27:39:33 +0000", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_dates(value: str, expected: datetime | None) -> None:
    mail = parse_mail(_mail(f"From: a@b.example\nDate: {value}\n\nx\n"))
    if expected is None:
        assert mail.date is None
    else:
        assert mail.date is not None
        assert mail.date.utcoffset() is not None
        assert mail.date == expected


def test_date_keeps_offset() -> None:
    mail = parse_mail(_mail("From: a@b.example\nDate: Mon, 3 Mar 2025 10:12:38 +0530\n\nx\n"))
    assert mail.date is not None
    assert mail.date.utcoffset() == timedelta(hours=5, minutes=30)


def test_thread_index_and_topic() -> None:
    mail = parse_mail(
        _mail("From: a@b.example\nThread-Topic: Hub is down\nThread-Index: AQHbjDJ5k0lQ\n\nx\n")
    )
    assert mail.thread_index == "AQHbjDJ5k0lQ"
    assert mail.thread_topic == "Hub is down"


def test_mbox_envelope_line_is_stripped() -> None:
    raw = b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\nFrom: a@b.example\nSubject: s\n\nx\n"
    mail = parse_mail(raw)
    assert mail.subject == "s"
    assert mail.raw == raw


def test_leading_blank_lines_are_tolerated() -> None:
    mail = parse_mail(b"   \r\n\r\nFrom: a@b.example\r\nSubject: s\r\n\r\nx\r\n")
    assert mail.subject == "s"


# -- bodies ----------------------------------------------------------------------


def test_html_only_is_converted() -> None:
    raw = _mail(
        "From: a@b.example\nContent-Type: text/html; charset=utf-8\n\n"
        "<p>Hello <b>there</b></p><blockquote>old</blockquote>\n"
    )
    mail = parse_mail(raw)
    assert mail.html is not None and "<b>there</b>" in mail.html
    assert mail.text == "Hello there\n\n> old"
    assert mail.new_text == "Hello there"


def test_empty_plain_part_falls_back_to_html() -> None:
    raw = _mail(
        "From: a@b.example\n"
        'Content-Type: multipart/alternative; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "\n"
        "--b\n"
        "Content-Type: text/html\n"
        "\n"
        "<div>Only in HTML</div>\n"
        "--b--\n"
    )
    assert parse_mail(raw).text == "Only in HTML"


def test_plain_parts_around_an_inline_image_are_joined() -> None:
    raw = _mail(
        "From: a@b.example\n"
        'Content-Type: multipart/mixed; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "before\n"
        "--b\n"
        "Content-Type: image/jpeg\n"
        "Content-Disposition: inline; filename=photo.jpg\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "/9j/4AAQ\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "after\n"
        "--b--\n"
    )
    mail = parse_mail(raw)
    assert "before" in mail.text and "after" in mail.text
    assert [(a.filename, a.inline, a.size) for a in mail.attachments] == [("photo.jpg", True, 6)]


def test_unknown_charset_is_recorded() -> None:
    raw = b"From: a@b.example\nContent-Type: text/plain; charset=x-klingon\n\nplain \xc3\xa9\n"
    mail = parse_mail(raw)
    assert mail.text == "plain é\n"
    assert "unknown charset 'x-klingon' in text/plain" in mail.defects


def test_undecodable_bytes_are_recorded() -> None:
    raw = b"From: a@b.example\nContent-Type: text/plain; charset=utf-8\n\nbad \xff\xfe bytes\n"
    mail = parse_mail(raw)
    assert "bad" in mail.text and "\ufffd" in mail.text
    assert "undecodable bytes in text/plain (utf-8)" in mail.defects


def test_mislabelled_latin1_that_is_utf8() -> None:
    raw = "From: a@b.example\nContent-Type: text/plain; charset=ascii\n\nnaïve\n".encode()
    assert parse_mail(raw).text == "naïve\n"


def test_broken_base64_and_unknown_cte() -> None:
    raw = _mail(
        "From: a@b.example\n"
        'Content-Type: multipart/mixed; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        "aGVsbG8gd29ybGQ=!!!\n"
        "--b\n"
        "Content-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: x-weird\n"
        "\n"
        "raw bytes\n"
        "--b--\n"
    )
    mail = parse_mail(raw)
    assert mail.text.startswith("hello world")
    assert mail.attachments[0].content.startswith(b"raw bytes")


def test_missing_header_body_separator() -> None:
    mail = parse_mail(b"From: a@b.example\nSubject: s\nthis line is not a header\nbody\n")
    assert "MissingHeaderBodySeparatorDefect" in mail.defects
    assert "body" in mail.text


def test_nested_message_is_an_attachment_named_after_its_subject() -> None:
    raw = _mail(
        "From: a@b.example\n"
        "Subject: fwd\n"
        'Content-Type: multipart/mixed; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "see attached\n"
        "--b\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "From: c@d.example\n"
        "Subject: =?UTF-8?Q?Inner/../sub=C3=A9ct?=\n"
        "Message-ID: <inner@d.example>\n"
        "\n"
        "inner body\n"
        "--b--\n"
    )
    mail = parse_mail(raw)
    assert mail.text == "see attached"
    assert mail.message_id_synthesized
    [att] = mail.attachments
    assert att.content_type == "message/rfc822"
    assert att.filename == "sub\u00e9ct.eml"
    assert b"inner body" in att.content and b"Message-ID: <inner@d.example>" in att.content


def test_base64_encoded_message_part_is_decoded() -> None:
    import base64

    inner = b"From: c@d.example\r\nSubject: inner\r\n\r\nhello\r\n"
    raw = _mail(
        "From: a@b.example\n"
        'Content-Type: multipart/mixed; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: message/rfc822\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" + base64.b64encode(inner).decode() + "\n"
        "--b--\n"
    )
    [att] = parse_mail(raw).attachments
    assert att.content == inner
    assert att.filename == "inner.eml"


def test_same_boundary_nested_multipart() -> None:
    raw = _mail(
        "From: a@b.example\n"
        'Content-Type: multipart/mixed; boundary="same"\n'
        "\n"
        "--same\n"
        'Content-Type: multipart/alternative; boundary="same"\n'
        "\n"
        "--same\n"
        "Content-Type: text/plain\n"
        "\n"
        "text part\n"
        "--same--\n"
        "--same--\n"
    )
    mail = parse_mail(raw)
    assert "text part" in mail.text


def test_absurdly_deep_nesting_keeps_headers_and_text() -> None:
    lines = [b"From: a@b.example\r\nSubject: deep\r\nMessage-ID: <deep@x>\r\n"]
    for i in range(1000):
        lines.append(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i))
    lines.append(b"Content-Type: text/plain\r\n\r\nhello\r\n")
    mail = parse_mail(b"".join(lines))
    assert mail.message_id == "deep@x"
    assert mail.subject == "deep"
    assert mail.defects


def test_report_original_message_id_from_headers_part() -> None:
    raw = _mail(
        "From: MAILER-DAEMON@mx.example\n"
        "Return-Path: <>\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "failed\n"
        "--b\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.example\n"
        "\n"
        "Final-Recipient: rfc822; x@y.example\n"
        "Action: failed\n"
        "Status: 5.1.1\n"
        "\n"
        "--b\n"
        "Content-Type: text/rfc822-headers\n"
        "\n"
        "Message-ID: <maild-7-3@example.org>\n"
        "Subject: [support #7] x\n"
        "\n"
        "--b--\n"
    )
    mail = parse_mail(raw)
    assert mail.report_original_message_id == "maild-7-3@example.org"
    assert mail.return_path == ""


def test_report_original_message_id_from_mdn() -> None:
    raw = _mail(
        "From: someone@y.example\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\n'
        "\n"
        "--b\n"
        "Content-Type: text/plain\n"
        "\n"
        "read\n"
        "--b\n"
        "Content-Type: message/disposition-notification\n"
        "\n"
        "Final-Recipient: rfc822; someone@y.example\n"
        "Original-Message-ID: <maild-9-1@example.org>\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\n"
        "\n"
        "--b--\n"
    )
    assert parse_mail(raw).report_original_message_id == "maild-9-1@example.org"


def test_no_report_outside_multipart_report() -> None:
    mail = parse_mail((FIXTURES / "reply_gmail.eml").read_bytes())
    assert mail.report_original_message_id is None


# -- file names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("report.pdf", "application/pdf", "report.pdf"),
        ("../../etc/passwd", "application/pdf", "passwd"),
        ("..\\evil.exe", "application/octet-stream", "evil.exe"),
        ("C:\\Users\\x\\notes.txt", "text/plain", "notes.txt"),
        (".htaccess", "text/plain", "htaccess"),
        ("...", "application/pdf", "attachment-3.pdf"),
        ("", "image/png", "attachment-3.png"),
        (None, "image/jpeg", "attachment-3.jpg"),
        (None, "message/rfc822", "attachment-3.eml"),
        (None, "application/x-unknown-thing", "attachment-3.bin"),
        (None, "text/x-unknown-thing", "attachment-3.txt"),
        ("evil\u202etxt.exe", "application/octet-stream", "eviltxt.exe"),
        ("a\x00b\r\nc.txt", "text/plain", "abc.txt"),
        ('what?<is>:"this"|*.txt', "text/plain", "what__is___this___.txt"),
        ("trailing. . ", "text/plain", "trailing"),
        ("x" * 300 + ".pdf", "application/pdf", "x" * 196 + ".pdf"),
        ("y" * 300, "application/pdf", "y" * 200),
    ],
)
def test_sanitize_filename(name: str | None, content_type: str, expected: str) -> None:
    assert sanitize_filename(name, content_type, 3) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.text(max_size=300)),
    st.sampled_from(["application/pdf", "image/png", "text/plain", "x/y", ""]),
    st.integers(min_value=1, max_value=10_000),
)
def test_sanitize_filename_properties(name: str | None, content_type: str, index: int) -> None:
    out = sanitize_filename(name, content_type, index)
    assert out
    assert len(out) <= 200
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in out)
    assert not out.startswith(".")
    out.encode("utf-8")
    assert sanitize_filename(out, content_type, index) == out


# -- robustness -------------------------------------------------------------------


def _parse_or_parse_error(raw: bytes) -> None:
    try:
        mail = parse_mail(raw)
    except ParseError:
        return
    assert isinstance(mail, InboundMail)
    assert mail.message_id
    _assert_clean_strings(mail)


_HEADER_CHARS = st.one_of(
    st.characters(),  # any character but a surrogate
    st.sampled_from(" \t\x00\x0b\x7f=?\ufffd"),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),  # raw bytes, escaped
    st.sampled_from(["\ud800", "\udc00", "\udfff"]),  # surrogates no byte stands for
)


@settings(max_examples=300, deadline=None)
@given(st.text(_HEADER_CHARS, max_size=120))
def test_a_header_value_decodes_as_the_header_registry_decodes_it(text: str) -> None:
    # most headers hold no encoded word and skip the registry's parse: the
    # text must come out exactly as through the registry and its fallbacks
    assume("=?" not in text)
    expected = _clean_str(text)
    try:
        expected = _clean_str(str(mailpolicy.DEFAULT.header_factory("x-note", text)))
    except Exception:  # the registry refuses a surrogate no byte stands for
        with contextlib.suppress(Exception):
            expected = _clean_str(str(make_header(decode_header(text))))
    assert _decode_header_value(text) == expected


@pytest.mark.parametrize("text", ["Gr\u00fc\u00dfe \t aus  Z\u00fcrich\x00 " * 600, "x" * 9000])
def test_a_long_header_value_decodes_as_before(text: str) -> None:
    # past the registry's length limit the value went through make_header alone
    assert _decode_header_value(text) == _clean_str(str(make_header(decode_header(text))))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    _parse_or_parse_error(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_arbitrary_bytes_after_a_header(raw: bytes) -> None:
    _parse_or_parse_error(b"From: a@b.example\r\nSubject: x\r\n" + raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXTURE_NAMES), st.data())
def test_mutated_fixtures(name: str, data: st.DataObject) -> None:
    raw = bytearray((FIXTURES / f"{name}.eml").read_bytes())
    n = len(raw)
    for _ in range(data.draw(st.integers(min_value=0, max_value=8), label="flips")):
        pos = data.draw(st.integers(min_value=0, max_value=n - 1), label="pos")
        raw[pos] = data.draw(st.integers(min_value=0, max_value=255), label="byte")
    start = data.draw(st.integers(min_value=0, max_value=n), label="start")
    end = data.draw(st.integers(min_value=start, max_value=n), label="end")
    if data.draw(st.booleans(), label="cut out"):
        mutated = bytes(raw[:start] + raw[end:])
    else:
        mutated = bytes(raw[start:end]) if data.draw(st.booleans(), label="slice") else bytes(raw)
    _parse_or_parse_error(mutated)


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
        b"From: a@b.example\r\nContent-Type: ;;;===\r\n\r\nx",
        b'From: a@b.example\r\nContent-Type: text/plain; charset="\r\n\r\nx',
        b"From: a@b.example\r\nContent-Type: text/plain; charset=rot13\r\n\r\nx",
        b"From: a@b.example\r\nContent-Type: text/plain; charset=base64\r\n\r\nx",
        b"From: a@b.example\r\nContent-Type: message/rfc822\r\n\r\n",
        b"From: a@b.example\r\nContent-Disposition: attachment; filename*=bogus''%ff%fe\r\n\r\nx",
        b"From: =?utf-8?b?////?= <@>\r\nTo: ,,,,@,\r\nDate: 99 Foo 99999 99:99\r\n\r\n",
        b"From: a@b.example\r\nSubject: =?utf-8?q?=ff=fe?=\r\n\r\n",
        b"From: a@b.example\r\nMessage-ID: <\xff\xfe@x>\r\n\r\n",
        b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 100,
    ],
)
def test_hostile_inputs(raw: bytes) -> None:
    _parse_or_parse_error(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody", "<a@b>"),
        (b"message-id:\t<lower@case>\n\nbody", "<lower@case>"),
        (b"Subject: x\r\n\r\nMessage-ID: <in@body>\r\n", "no Message-ID"),
        (b"Subject: x\n\nMessage-ID: <in@body>\n", "no Message-ID"),
        (b"X-Message-ID: <not@it>\r\n\r\n", "no Message-ID"),
        (b"", "no Message-ID"),
    ],
)
def test_logged_message_id_searches_the_header_block_only(raw: bytes, expected: str) -> None:
    assert logged_message_id(raw) == expected
