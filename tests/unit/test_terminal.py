"""SPEC section 11, "Terminal": what the CLI's text output does to any stored text."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from maild.cli.main import _safe

BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def acts_on_a_terminal(char: str) -> bool:
    return (unicodedata.category(char) == "Cc" and char not in "\n\t") or char in BIDI


@given(st.text())
def test_no_control_character_survives_and_lines_stay(text: str) -> None:
    shown = _safe(text)

    assert not any(acts_on_a_terminal(c) for c in shown)
    assert shown.count("\n") == text.count("\n") and shown.count("\t") == text.count("\t")
    assert _safe(shown) == shown


@given(st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"])))
def test_text_without_controls_is_shown_as_it_is(text: str) -> None:
    plain = "".join(c for c in text if c not in BIDI)

    assert _safe(plain) == plain


@given(st.sampled_from(sorted({chr(c) for c in range(0x100) if acts_on_a_terminal(chr(c))})))
def test_each_control_is_shown_by_its_code(char: str) -> None:
    assert _safe(f"a{char}b") == f"a\\x{ord(char):02x}b"
