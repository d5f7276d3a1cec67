"""maild.mail.authn: DKIM (dkimpy, a key made here), Authentication-Results, alignment."""

from __future__ import annotations

from pathlib import Path

import pytest

from maild.mail import authn
from tests.dkim_keys import DkimKey

MAIL = (
    b"From: Alice Liddell <alice@example.org>\r\n"
    b"To: support@example.org\r\n"
    b"Subject: Re: [support #1] Hub is down [resolved]\r\n"
    b"Date: Wed, 25 Nov 2026 16:00:00 +0000\r\n"
    b"Message-ID: <s1@example.org>\r\n"
    b"\r\n"
    b"Fixed.\r\n"
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    return DkimKey.generate(tmp_path_factory.mktemp("dkim"), "example.org")


@pytest.mark.parametrize(
    ("domain", "from_domain", "expected"),
    [
        ("example.org", "example.org", True),
        ("mail.example.org", "example.org", True),  # relaxed: same organizational domain
        ("example.org", "lists.example.org", True),
        ("org", "example.org", False),  # a public suffix aligns with nothing
        ("evil.org", "example.org", False),
        ("example.co.uk", "other.co.uk", False),
        ("example.org.evil.example", "example.org", False),
    ],
)
def test_alignment(domain: str, from_domain: str, expected: bool) -> None:
    assert authn.aligned(domain, from_domain) is expected


@pytest.mark.parametrize(
    ("header", "authenticated"),
    [
        ("mx.example.org; dkim=pass header.d=example.org", True),
        ("mx.example.org; dmarc=pass header.from=example.org", True),
        ("mx.example.org; spf=pass smtp.mailfrom=alice@example.org", True),
        ("mx.example.org; dkim=pass header.d=mail.example.org", True),
        # a result inside a comment or a quoted reason is not a result
        ("mx.example.org; dkim=pass (header.d=example.org) header.d=evil.example", False),
        (
            'mx.example.org; dkim=fail reason="dkim=pass header.d=example.org" header.d=x.example',
            False,
        ),
        (
            "mx.example.org; spf=fail (dkim=pass header.d=example.org) smtp.mailfrom=x@x.example",
            False,
        ),
        # a public suffix is not the sender's domain
        ("mx.example.org; dkim=pass header.d=org", False),
        ("mx.example.org; dmarc=pass header.from=evil.example", False),
        ("mx.example.org; dkim=fail header.d=example.org", False),
        # somebody else's server, or ours spelled inside a comment
        ("evil.example; dkim=pass header.d=example.org", False),
        ("(mx.example.org) evil.example; dkim=pass header.d=example.org", False),
        ("garbage ;;; = =", False),
    ],
)
def test_authentication_results(header: str, authenticated: bool) -> None:
    verdict = authn.results_verdict([header], "mx.example.org", "alice@example.org")
    assert verdict.authenticated is authenticated
    assert verdict.findings  # always says what it saw


def test_only_the_topmost_header_of_ours_counts() -> None:
    # the MX adds its header on top; a forged one further down says nothing
    headers = [
        "mx.example.org; dkim=fail header.d=example.org",
        "mx.example.org; dkim=pass header.d=example.org",
    ]
    assert not authn.results_verdict(headers, "mx.example.org", "alice@example.org").authenticated


def test_dmarc_fail_is_reported_for_backscatter() -> None:
    verdict = authn.results_verdict(
        ["mx.example.org; dmarc=fail header.from=bank.example"], "mx.example.org", "x@bank.example"
    )
    assert not verdict.authenticated and verdict.dmarc_fail


def test_own_dkim_check_passes_a_signed_mail(key: DkimKey) -> None:
    signed = key.sign(MAIL)
    verdict = authn.dkim_verdict(signed, "alice@example.org", key.lookup, 5)
    assert verdict.authenticated, verdict.findings
    assert key.lookups and key.lookups[-1].startswith("mail._domainkey.example.org")


def test_a_header_altered_after_signing_fails(key: DkimKey) -> None:
    signed = key.sign(MAIL).replace(b"[resolved]", b"[closed]")
    verdict = authn.dkim_verdict(signed, "alice@example.org", key.lookup, 5)
    assert not verdict.authenticated
    assert any("does not verify" in f for f in verdict.findings)


def test_a_valid_signature_of_another_domain_is_not_aligned(tmp_path: Path) -> None:
    other = DkimKey.generate(tmp_path, "evil.example")
    verdict = authn.dkim_verdict(other.sign(MAIL), "alice@example.org", other.lookup, 5)
    assert not verdict.authenticated
    assert any("not aligned" in f for f in verdict.findings)


def test_dns_failure_means_not_authenticated(key: DkimKey) -> None:
    def broken(name: bytes | str, timeout: float = 5) -> bytes | None:
        raise TimeoutError("no answer")

    assert not authn.dkim_verdict(key.sign(MAIL), "alice@example.org", broken, 5).authenticated
    nothing = authn.dkim_verdict(key.sign(MAIL), "alice@example.org", lambda *a, **k: None, 5)
    assert not nothing.authenticated


def test_unsigned_mail() -> None:
    assert authn.dkim_verdict(MAIL, "alice@example.org", lambda *a, **k: None, 5).findings == (
        "no DKIM signature",
    )


def _sign(key: DkimKey, raw: bytes, **kwargs: object) -> bytes:
    import dkim

    signature = dkim.sign(
        raw, key.selector.encode(), key.domain.encode(), key.private_pem, **kwargs
    )
    return bytes(signature) + raw


def test_a_signature_without_the_subject_does_not_vouch_for_commands(key: DkimKey) -> None:
    # anyone holding a genuinely signed mail could rewrite the unsigned Subject
    signed = _sign(key, MAIL, include_headers=[b"from", b"to", b"date", b"message-id"])
    verdict = authn.dkim_verdict(signed, "alice@example.org", key.lookup, 5)
    assert not verdict.authenticated
    assert any("does not sign the Subject" in f for f in verdict.findings)


def test_a_body_length_limit_leaves_room_to_append_text(key: DkimKey) -> None:
    signed = _sign(key, MAIL, include_headers=[b"from", b"subject"], length=True)
    appended = signed + b"Send your password to attacker@evil.example.\r\n"
    verdict = authn.dkim_verdict(appended, "alice@example.org", key.lookup, 5)
    assert not verdict.authenticated
    assert any("l=" in f for f in verdict.findings)


def test_a_second_subject_above_the_signed_one_is_refused(key: DkimKey) -> None:
    signed = key.sign(MAIL)
    # mail readers take the first Subject; DKIM checks the last one it signed
    forged = b"Subject: Re: [support #1] Hub is down [closed] [assign=bob]\r\n" + signed
    verdict = authn.dkim_verdict(forged, "alice@example.org", key.lookup, 5)
    assert not verdict.authenticated
    assert any("2 Subject headers" in f for f in verdict.findings)


def test_a_second_subject_defeats_the_trusted_header_too(key: DkimKey) -> None:
    # the MX verified the genuine signature and said so; the extra Subject is on top
    forged = b"Subject: Re: [support #1] Hub is down [closed]\r\n" + key.sign(MAIL)
    verdict = authn.check(
        forged,
        "alice@example.org",
        ["mx.example.org; dkim=pass header.d=example.org"],
        "mx.example.org",
        key.lookup,
    )
    assert not verdict.authenticated
    assert verdict.findings == ("the mail has 2 Subject headers",)


def test_an_unreadable_header_of_ours_stops_the_search() -> None:
    # the MX's own header (topmost) is one authres cannot read; the forged one below says pass
    headers = [
        "mx.example.org; spf=fail smtp.helo=[6.6.6.6]; dmarc=fail header.from=example.org",
        "mx.example.org; dmarc=pass header.from=example.org",
    ]
    verdict = authn.results_verdict(headers, "mx.example.org", "alice@example.org")
    assert not verdict.authenticated


def test_an_encoded_word_in_a_comment_is_not_decoded_into_a_result() -> None:
    raw = (
        b"Authentication-Results: mx.example.org; spf=fail (domain of "
        b"=?us-ascii?q?x=29=3B_dmarc=3Dpass_header.from=3Dexample.org_=28?=@evil.example) "
        b"smtp.mailfrom=evil.example; dmarc=fail header.from=example.org\r\n" + MAIL
    )
    headers = authn.raw_headers(raw, "authentication-results")
    assert "=?us-ascii?q?" in headers[0]  # as the MX wrote it
    verdict = authn.results_verdict(headers, "mx.example.org", "alice@example.org")
    assert not verdict.authenticated and verdict.dmarc_fail


def test_a_costly_rsa_key_is_refused_before_it_is_used(tmp_path: Path) -> None:
    # RSA verification holds the GIL: a key with a huge modulus or exponent from
    # an attacker's DNS would freeze the daemon. An odd exponent stands for both.
    odd = DkimKey.generate(tmp_path, "example.org", selector="odd", exponent=65539)
    verdict = authn.dkim_verdict(odd.sign(MAIL), "alice@example.org", odd.lookup, 5)
    assert not verdict.authenticated
    assert any("RSA key refused" in f and "65539" in f for f in verdict.findings)


def test_unaligned_signatures_are_not_even_verified(key: DkimKey, tmp_path: Path) -> None:
    other = DkimKey.generate(tmp_path, "evil.example")
    signed = other.sign(MAIL)
    other.lookups.clear()
    verdict = authn.dkim_verdict(signed, "alice@example.org", other.lookup, 5)
    assert not verdict.authenticated and other.lookups == []


def test_a_broken_mail_with_a_signature_is_not_authenticated_and_does_not_raise(
    key: DkimKey,
) -> None:
    broken = key.sign(MAIL).replace(b"To: support", b"bad header line\r\nTo: support")
    verdict = authn.check(broken, "alice@example.org", [], None, key.lookup)
    assert not verdict.authenticated
