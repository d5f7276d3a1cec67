"""The IMAP wire format without a server: responses as aioimaplib hands them over."""

from __future__ import annotations

from typing import Any

import pytest

from maild.mail.imap.codec import (
    astring,
    changed_uidvalidity,
    is_exists,
    mailbox_name,
    parse_search,
    response_text,
    uidvalidity_of,
)


@pytest.mark.parametrize(
    ("lines", "uids"),
    [
        ([b"SEARCH 3 1 2", b"Search completed."], [1, 2, 3]),
        ([b"SEARCH", b"Search completed."], []),
        ([b"SEARCH 5", b"4 EXISTS", b"SEARCH 5 6", b"done"], [5, 6]),
        ([b"7 8", bytearray(b"9"), b"done"], [7, 8]),
        ([b"SEARCH 1"], []),  # only the tagged line: nothing found
    ],
)
def test_parse_search(lines: list[Any], uids: list[int]) -> None:
    assert parse_search(lines) == uids


@pytest.mark.parametrize(
    ("text", "known", "changed"),
    [
        (b"OK [UIDVALIDITY 7] UIDs valid", 6, True),
        (b"OK [UIDVALIDITY 7] UIDs valid", 7, False),
        (b"OK [UIDNEXT 7] Predicted next UID", 6, False),
        (b"NO [UIDVALIDITY 8]", 7, False),
    ],
)
def test_changed_uidvalidity(text: bytes, known: int, changed: bool) -> None:
    assert changed_uidvalidity(text, known) is changed


def test_reading_a_select_response() -> None:
    lines = [b"FLAGS (\\Seen)", b"OK [UIDVALIDITY 1700000000] UIDs valid", b"Select completed."]
    assert uidvalidity_of(lines) == 1700000000
    assert uidvalidity_of([b"Select completed."]) == 0


@pytest.mark.parametrize(
    ("text", "exists"),
    [(b"4 EXISTS", True), (b"* 12 EXISTS", True), (b"4 RECENT", False), (b"OK EXISTS", False)],
)
def test_is_exists(text: bytes, exists: bool) -> None:
    assert is_exists(text) is exists


def test_names_and_texts_as_commands_carry_them() -> None:
    assert mailbox_name("Entwürfe & Co") == '"Entw&APw-rfe &- Co"'
    assert astring("support@example.org") == "support@example.org"
    assert astring('we "quote"') == '"we \\"quote\\""'

    class Response:
        lines = [b"untagged", b"LOGIN failed. \r\n"]

    assert response_text(Response()) == "LOGIN failed."
    assert response_text(object()) == ""
