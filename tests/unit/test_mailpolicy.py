"""maild.core.mailpolicy: the cached header classes change nothing but the speed."""

from __future__ import annotations

import email
import tracemalloc
from email import policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.core import mailpolicy

RAW = (
    b"From: =?utf-8?q?Zo=C3=AB?= <zoe@pangeo.example>\r\nTo: a@x.example, b@y.example\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= [support #42]\r\nMessage-ID: <m-1@pangeo.example>\r\n"
    b"Date: Wed, 25 Nov 2026 15:00:00 +0100\r\n\r\nbody\r\n"
)


@pytest.mark.parametrize("name", ["From", "To", "Subject", "Message-ID", "Date"])
def test_headers_read_as_with_the_stdlib_policy(name: str) -> None:
    ours = email.message_from_bytes(RAW, policy=mailpolicy.DEFAULT)
    stdlib = email.message_from_bytes(RAW, policy=policy.default)
    assert str(ours[name]) == str(stdlib[name])
    assert type(ours[name]).__mro__[1:] == type(stdlib[name]).__mro__[1:]


@pytest.mark.parametrize("pol", [mailpolicy.DEFAULT, mailpolicy.SMTP, mailpolicy.SMTPUTF8])
def test_a_header_class_is_built_once_per_name(pol: policy.EmailPolicy) -> None:
    first = email.message_from_bytes(RAW, policy=pol)
    second = email.message_from_bytes(RAW, policy=pol)
    assert type(first["Subject"]) is type(second["Subject"])


MULTIPART = (
    b"From: zoe@pangeo.example\r\nSubject: logs\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b'--b1\r\nContent-Type: application/octet-stream; name="hub.log"\r\n'
    b'Content-Disposition: attachment; filename="hub.log"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n"
    b"--b1--\r\n"
)


def _mime_view(msg: email.message.Message) -> list[tuple[object, ...]]:
    return [
        (
            part.get_content_type(),
            part.get_content_maintype(),
            part.get_param("charset"),
            part.get_filename(),
            part.get_content_disposition(),
            part.is_attachment() if isinstance(part, email.message.EmailMessage) else None,
            str(part.get("Content-Transfer-Encoding")),
        )
        for part in msg.walk()
    ]


def test_a_mime_tree_reads_as_with_the_stdlib_policy() -> None:
    ours = email.message_from_bytes(MULTIPART, policy=mailpolicy.DEFAULT)
    stdlib = email.message_from_bytes(MULTIPART, policy=policy.default)
    assert _mime_view(ours) == _mime_view(stdlib)
    assert _mime_view(ours) == _mime_view(ours), "the second look gives the same"
    body = ours.get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "hello"


def test_a_header_changed_after_a_look_is_read_anew() -> None:
    msg = email.message_from_bytes(MULTIPART, policy=mailpolicy.DEFAULT)
    part = list(msg.walk())[1]
    assert part.get_content_type() == "text/plain"
    part.replace_header("Content-Type", "text/html; charset=utf-8")
    assert part.get_content_type() == "text/html"
    del part["Content-Type"]
    assert part.get_content_type() == "text/plain"  # the default once it is gone
    part["Content-Type"] = "image/png"
    assert part.get_content_type() == "image/png"
    part.set_param("name", "shot.png")
    assert part.get_param("name") == "shot.png"
    attachment = list(msg.walk())[2]
    attachment.replace_header("Content-Disposition", "inline")
    assert attachment.get_content_disposition() == "inline"


def test_a_part_parses_its_content_type_once() -> None:
    msg = email.message_from_bytes(MULTIPART, policy=mailpolicy.DEFAULT)
    part = list(msg.walk())[1]
    assert part["Content-Type"] is part["Content-Type"]


def test_flattening_with_another_policy_reads_the_header_its_way() -> None:
    raw = MULTIPART.replace(b'boundary="b1"', b'boundary="b1" (a comment)')
    ours = email.message_from_bytes(raw, policy=mailpolicy.DEFAULT)
    stdlib = email.message_from_bytes(raw, policy=policy.default)
    assert ours.get_content_type() == "multipart/mixed"  # parsed and kept under DEFAULT
    compat = policy.compat32.clone(linesep="\r\n")
    assert ours.as_bytes(policy=compat) == stdlib.as_bytes(policy=compat)


_PIECES = st.sampled_from(
    [
        "text/plain",
        "text/html",
        "multipart/mixed",
        "application/octet-stream",
        "image/png",
        "attachment",
        "inline",
        "base64",
        "quoted-printable",
        "8bit",
        "; ",
        ";",
        " ",
        "\t",
        "=",
        '"',
        "(",
        ")",
        "\\",
        "/",
        "charset",
        "utf-8",
        "name",
        "filename",
        "filename*=utf-8''%C3%A9.txt",
        "boundary",
        "=?utf-8?q?=C3=A9?=",
        "é",
        "x",
    ]
)
_VALUES = st.lists(_PIECES, max_size=12).map("".join)


@given(ctype=_VALUES, disposition=_VALUES, encoding=_VALUES)
@settings(max_examples=300, deadline=None)
def test_any_mime_headers_read_as_with_the_stdlib_policy(
    ctype: str, disposition: str, encoding: str
) -> None:
    raw = (
        "From: zoe@pangeo.example\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: {ctype}\r\nContent-Disposition: {disposition}\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\nhello\r\n--b1--\r\n"
    ).encode()

    def read(pol: policy.EmailPolicy) -> object:
        try:
            msg = email.message_from_bytes(raw, policy=pol)
            return (_mime_view(msg), msg.as_bytes(policy=policy.compat32), _mime_view(msg))
        except Exception as exc:  # the stdlib may fail on some; we must fail alike
            return type(exc)

    first = read(mailpolicy.DEFAULT)
    assert first == read(policy.default)
    # a second mail with the same values reads them from the process-wide cache
    assert read(mailpolicy.DEFAULT) == first


def test_a_value_seen_before_keeps_each_mails_spelling_of_the_name() -> None:
    value = "text/plain; charset=iso-8859-1"
    for name in ("Content-Type", "content-type", "CONTENT-TYPE", "Content-type"):
        raw = f"From: zoe@pangeo.example\r\n{name}: {value}\r\n\r\nhello\r\n".encode()
        ours = email.message_from_bytes(raw, policy=mailpolicy.DEFAULT)
        stdlib = email.message_from_bytes(raw, policy=policy.default)
        assert ours.get_content_charset() == "iso-8859-1"
        assert ours["content-type"].name == stdlib["content-type"].name == name
        assert ours.as_bytes() == stdlib.as_bytes()


def _content_type(value: str) -> object:
    raw = f"From: zoe@pangeo.example\r\nContent-Type: {value}\r\n\r\nhello\r\n".encode()
    return email.message_from_bytes(raw, policy=mailpolicy.DEFAULT)["content-type"]


def test_only_a_header_without_defects_is_shared_between_mails() -> None:
    # the stdlib adds to a defective header's parse tree each time it folds it:
    # shared, one mail's folding would grow the next mail's header
    clean = "text/plain; charset=utf-8"
    assert _content_type(clean) is _content_type(clean)
    defective = "text/plain; charset=utf-8; charset=koi8-r"
    first, second = _content_type(defective), _content_type(defective)
    assert first is not second
    assert first == second and first.params == second.params  # type: ignore[attr-defined]
    one_boundary = 'multipart/mixed; boundary="b1"'  # one mail's own: not kept
    assert _content_type(one_boundary) is not _content_type(one_boundary)


def test_the_shared_headers_stay_small_on_hostile_values() -> None:
    mailpolicy._shared_parse.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(mailpolicy._SHARED_ENTRIES):
            # as many parameters as fit: no defect, and a large parse tree
            value, j = f"a/b{i}", 0
            while len(value + f"; p{j}=v") <= mailpolicy._SHARED_LONGEST:
                value, j = value + f"; p{j}=v", j + 1
            _content_type(value)
        grown = tracemalloc.get_traced_memory()[0] - before
        kept = mailpolicy._shared_parse.cache_info().currsize
    finally:
        tracemalloc.stop()
        mailpolicy._shared_parse.cache_clear()
    assert kept == mailpolicy._SHARED_ENTRIES  # every value was shared: the cache is full
    assert grown < 24 * 1024 * 1024
