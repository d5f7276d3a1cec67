"""maild.core.htmltext: what a steward reads of an HTML-only mail."""

from __future__ import annotations

import pytest

from maild.core.htmltext import QUOTE_MARKER, html_to_text


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("", ""),
        ("<p>Hello</p><p>World</p>", "Hello\n\nWorld"),  # paragraphs keep a blank line
        ("a<br>b", "a\nb"),
        ("<script>steal()</script>ok", "ok"),  # never shown as text
        ("<style>p {color: red}</style>ok", "ok"),
        ("&amp; &lt;3", "& <3"),  # entities decoded once
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<blockquote>quoted</blockquote>new", "> quoted\nnew"),  # quotes stay quotes
        # the quoted history of Gmail and Outlook becomes the one marker split_reply knows
        ('<div class="gmail_quote">old</div>', f"{QUOTE_MARKER}\nold"),
        ('<div id="divRplyFwdMsg">old</div>', f"{QUOTE_MARKER}\nold"),
    ],
)
def test_html_to_text(markup: str, text: str) -> None:
    assert html_to_text(markup) == text
