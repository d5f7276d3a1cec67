"""maild.core.intake: the parse ingest does, as plain values that cross a process boundary."""

from __future__ import annotations

import pickle

import pytest

from maild.core.intake import HEADER_LIMIT, header_only, parse_for_ingest, parse_many

MAIL = (
    b"From: Rosa Rep <rep@pangeo.example>\r\nTo: support@example.org\r\n"
    b"Subject: Hub down\r\nMessage-ID: <hub-1@pangeo.example>\r\n\r\n"
)


@pytest.mark.parametrize(
    ("raw", "head"),
    [
        (MAIL + b"body\r\n", MAIL),
        (MAIL.replace(b"\r\n", b"\n") + b"body\n", MAIL.replace(b"\r\n", b"\n")),
        (b"no blank line at all", b"no blank line at all"),
        (b"X: " + b"y" * (2 * HEADER_LIMIT), (b"X: " + b"y" * HEADER_LIMIT)[:HEADER_LIMIT]),
    ],
)
def test_header_only(raw: bytes, head: bytes) -> None:
    assert header_only(raw) == head


def test_a_mail_over_the_limit_is_parsed_from_its_header_only() -> None:
    parsed = parse_for_ingest(MAIL + b"x" * 5000, max_bytes=1000)
    assert parsed.too_large and parsed.error is None
    assert parsed.mail is not None and parsed.mail.subject == "Hub down"
    assert "x" * 100 not in (parsed.mail.text or "")


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02", b"\r\n\r\n"])
def test_what_is_no_mail_becomes_a_reason_not_an_exception(raw: bytes) -> None:
    parsed = parse_for_ingest(raw, max_bytes=1000)
    assert parsed.mail is None and parsed.error


def test_parse_many_keeps_the_order_and_pickles() -> None:
    raws = [MAIL.replace(b"hub-1", f"hub-{i}".encode()) + b"body\r\n" for i in range(5)]
    # our own bytes, as the parsing worker sends them back
    parsed = pickle.loads(pickle.dumps(parse_many(raws, max_bytes=10_000)))  # noqa: S301
    assert [p.mail.message_id for p in parsed if p.mail] == [
        f"hub-{i}@pangeo.example" for i in range(5)
    ]
