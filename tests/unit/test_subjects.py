"""Subject prefixes, ticket tags, cleaning and matching keys."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.core.subjects import (
    FORWARD_PREFIXES,
    REPLY_PREFIXES,
    clean_subject,
    find_ticket_refs,
    has_forward_prefix,
    is_reply_subject,
    normalize_for_match,
    strip_header_unsafe,
)

TAG = "support"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Hub is down", "Hub is down"),
        ("Re: Hub is down", "Hub is down"),
        ("RE: Hub is down", "Hub is down"),
        ("re:Hub is down", "Hub is down"),
        ("Re : Hub is down", "Hub is down"),
        ("Re: Re: RE: Hub is down", "Hub is down"),
        ("Re: AW: Fwd: Hub is down", "Hub is down"),
        ("Re[2]: Hub is down", "Hub is down"),
        ("Re(3): Hub is down", "Hub is down"),
        ("RE^2: Hub is down", "Hub is down"),
        ("Re [2] : Hub is down", "Hub is down"),
        ("Fwd: Hub is down", "Hub is down"),
        ("FW: Hub is down", "Hub is down"),
        ("Fw: Hub is down", "Hub is down"),
        ("AW: Hub is down", "Hub is down"),
        ("WG: Hub is down", "Hub is down"),
        ("SV: Hub is down", "Hub is down"),
        ("VS: Hub is down", "Hub is down"),
        ("Antw: Hub is down", "Hub is down"),
        ("Antwort: Hub is down", "Hub is down"),
        ("Réf. : Hub is down", "Réf. : Hub is down"),  # "Réf." is not a prefix
        ("Réf : Hub is down", "Hub is down"),
        ("TR: Hub is down", "Hub is down"),
        ("RV: Hub is down", "Hub is down"),
        ("Enc: Hub is down", "Hub is down"),
        ("RES: Hub is down", "Hub is down"),
        ("Odp: Hub is down", "Hub is down"),
        ("PD: Hub is down", "Hub is down"),
        ("YNT: Hub is down", "Hub is down"),
        ("VL: Hub is down", "Hub is down"),
        ("ΑΠ: Hub is down", "Hub is down"),
        ("ΣΧΕΤ: Hub is down", "Hub is down"),
        ("Ответ: Hub is down", "Hub is down"),
        ("Отв: Hub is down", "Hub is down"),
        ("回复：Hub is down", "Hub is down"),
        ("回覆: Hub is down", "Hub is down"),
        ("答复：Hub is down", "Hub is down"),
        ("转发：Hub is down", "Hub is down"),
        ("轉寄: Hub is down", "Hub is down"),
        ("返信: Hub is down", "Hub is down"),
        ("転送：Hub is down", "Hub is down"),
        ("Re: [support #42] Re: Hub down", "Hub down"),
        ("[support #42] Re: Hub down", "Hub down"),
        ("Re: [Support#42] Hub down", "Hub down"),
        ("Re: [#42] Hub down", "Hub down"),
        ("Hub down [support #42]", "Hub down"),
        ("Re: [Ppp] Re: testing", "[Ppp] testing"),
        ("[Ppp] testing", "[Ppp] testing"),
        (
            "Re: [support #42] Hub is down [type=incident] [ic=alice]",
            "Hub is down [type=incident] [ic=alice]",
        ),
        ("Re:  Hub   is\tdown ", "Hub is down"),
        ("Research: results", "Research: results"),
        ("Reply needed: Hub", "Reply needed: Hub"),
        ("Hub is down\r\nBcc: victim@example.org", "Hub is down Bcc: victim@example.org"),
        ("", ""),
        ("Re:", ""),
    ],
)
def test_clean_subject(subject: str, expected: str) -> None:
    assert clean_subject(subject, TAG) == expected


def test_clean_subject_other_tag_kept() -> None:
    assert clean_subject("Re: [helpdesk #7] Hub", TAG) == "[helpdesk #7] Hub"
    assert clean_subject("Re: [helpdesk #7] Hub", "helpdesk") == "Hub"


@pytest.mark.parametrize(
    "subject",
    [
        "Re: x",
        "RE: x",
        "AW: x",
        "SV: x",
        "Antw: x",
        "回复：x",
        "Ответ: x",
        "[support #1] Re: x",
        "Fwd: Re: x",
    ],
)
def test_is_reply(subject: str) -> None:
    assert is_reply_subject(subject)


@pytest.mark.parametrize("subject", ["x", "Fwd: x", "WG: x", "TR: x", "[Re: x]", "Research: x", ""])
def test_is_not_reply(subject: str) -> None:
    assert not is_reply_subject(subject)


def test_forward_prefix() -> None:
    assert has_forward_prefix("Fwd: x")
    assert has_forward_prefix("Re: WG: x")
    assert not has_forward_prefix("Re: x")
    assert not has_forward_prefix("x Fwd: y")


def test_prefix_lists_are_disjoint_and_nonempty() -> None:
    reply = {p.casefold() for p in REPLY_PREFIXES}
    forward = {p.casefold() for p in FORWARD_PREFIXES}
    assert reply and forward
    assert not reply & forward
    for prefix in REPLY_PREFIXES:
        assert clean_subject(f"{prefix}: x", TAG) == "x", prefix
        assert is_reply_subject(f"{prefix.upper()}: x"), prefix
    for prefix in FORWARD_PREFIXES:
        assert clean_subject(f"{prefix}: x", TAG) == "x", prefix
        assert not is_reply_subject(f"{prefix}: x"), prefix


@pytest.mark.parametrize(
    ("subject", "refs"),
    [
        ("[support #42] Hub", (42,)),
        ("Re: [Support #42] Hub", (42,)),
        ("Re: [support#42] Hub", (42,)),
        ("Re: [SUPPORT # 42 ] Hub", (42,)),
        ("[ support #42] Hub", (42,)),
        ("[#42] Hub", (42,)),
        ("[# 7] a [support #9] b [#7]", (7, 9)),
        ("[helpdesk #5] Hub", ()),
        ("[support 42] Hub", ()),
        ("#42 Hub", ()),
        ("[support #] Hub", ()),
        ("[support #4x2] Hub", ()),
        ("", ()),
    ],
)
def test_find_ticket_refs(subject: str, refs: tuple[int, ...]) -> None:
    assert find_ticket_refs(subject, TAG) == refs


def test_find_ticket_refs_tag_with_regex_characters() -> None:
    assert find_ticket_refs("[c++ #3] x", "c++") == (3,)
    assert find_ticket_refs("[c #3] x", "c++") == ()


def test_normalize_for_match() -> None:
    assert normalize_for_match("RE:  [support #1]  HUB is   Down", TAG) == "hub is down"
    assert normalize_for_match("AW: Straße", TAG) == normalize_for_match("STRASSE", TAG)
    assert normalize_for_match("Re: Hub is down", TAG) == normalize_for_match("Hub is down", TAG)


def test_strip_header_unsafe() -> None:
    assert strip_header_unsafe("a\r\nb\tc\x00d\u2028e\x85f") == "a  b c d e f"
    assert strip_header_unsafe("Přihlášení ✘") == "Přihlášení ✘"


# -- properties ------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "Re:",
        "RE: ",
        "Re[2]:",
        "Fwd: ",
        "AW:",
        "回复：",
        "[support #1]",
        "[#2]",
        "[Ppp]",
        "[",
        "]",
        "#",
        "3",
        " ",
        "\t",
        "\r\n",
        "Hub",
        "down",
        ":",
        "：",
        "support",
    ]
)
_SUBJECTS = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=14).map("".join),
)


@settings(max_examples=200, deadline=None)
@given(_SUBJECTS)
def test_clean_subject_is_idempotent(subject: str) -> None:
    once = clean_subject(subject, TAG)
    assert clean_subject(once, TAG) == once
    assert once == once.strip()
    assert "\n" not in once and "\r" not in once


@settings(max_examples=200, deadline=None)
@given(_SUBJECTS)
def test_normalize_for_match_is_stable(subject: str) -> None:
    key = normalize_for_match(subject, TAG)
    assert normalize_for_match(key, TAG) == key


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.integers(min_value=0, max_value=10**17),
    st.sampled_from(["[support #{n}]", "[Support#{n}]", "[SUPPORT # {n} ]", "[#{n}]", "[ #{n}]"]),
)
def test_find_ticket_refs_finds_inserted_tag(before: str, after: str, n: int, form: str) -> None:
    subject = before + form.format(n=n) + after
    assert n in find_ticket_refs(subject, TAG)
    assert n not in find_ticket_refs(clean_subject(subject, TAG), TAG)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_strip_header_unsafe_leaves_no_controls(text: str) -> None:
    out = strip_header_unsafe(text)
    assert len(out) == len(text)
    assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in out)


@given(st.text())
def test_strip_header_unsafe_replaces_every_control_and_line_separator(text: str) -> None:
    unsafe = {"Cc", "Zl", "Zp"}
    expected = "".join(" " if unicodedata.category(c) in unsafe else c for c in text)
    assert strip_header_unsafe(text) == expected
