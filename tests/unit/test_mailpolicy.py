"""maild.core.mailpolicy: the cached header classes change nothing but the speed."""

from __future__ import annotations

import email
from email import policy

import pytest

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
