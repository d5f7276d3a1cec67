"""HTML mail bodies to plain text, keeping what the quote splitter needs.

``html_to_text`` never raises: broken markup gives the best text it can, and
if the parser itself gives up, the tags are stripped with a regular expression.

Quoted history in HTML replies becomes plain-text quoting: ``<blockquote>``
lines get a ``"> "`` prefix, and the containers clients wrap around quoted
history (Gmail's ``gmail_quote``, Outlook's ``divRplyFwdMsg``/``appendonsend``,
Outlook for Mac's ``OLK_SRC_BODY_SECTION``, Hotmail's ``stopSpelling`` rule,
Yahoo's ``yahoo_quoted``) start with :data:`QUOTE_MARKER`, a line that
:func:`maild.core.quotes.split_reply` treats as the start of quoted text.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

__all__ = ["QUOTE_MARKER", "html_to_text"]

#: Line put where an HTML client's quoted-history container starts.
QUOTE_MARKER = "-------- Original Message --------"

_SKIP_TAGS = frozenset({"script", "style", "head", "title", "template", "xml", "noscript"})
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "main",
        "nav",
        "ol",
        "p",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
        "body",
        "html",
        "caption",
    }
)
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
_VOID_TAGS = frozenset(
    {"br", "hr", "img", "meta", "link", "input", "wbr", "area", "base", "col", "source"}
)
_QUOTE_IDS = frozenset({"divrplyfwdmsg", "appendonsend", "olk_src_body_section", "stopspelling"})
_QUOTE_CLASSES = frozenset({"gmail_quote", "yahoo_quoted", "zmail_extra"})
_WS_RE = re.compile(r"\s+")
_TAG_RE = re.compile(r"<[^>]*>")
_SKIP_BLOCK_RE = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# Gmail wraps a forwarded mail in the same container as quoted history; the
# forward is content, so no marker goes in front of its banner.
_FORWARD_BANNER_RE = re.compile(
    r"^\s*(?:-{2,}\s*[^-]{0,60}\s*-{2,}|begin forwarded message\s*:)\s*$", re.IGNORECASE
)


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._cur: list[str] = []
        self._skip: list[str] = []
        self._quote_depth = 0
        self._pre = 0
        self._lists: list[str] = []
        self._links: list[tuple[str, list[str]]] = []
        self._marker_at: int | None = None

    # -- output helpers ------------------------------------------------

    def _prefix(self) -> str:
        return "> " * self._quote_depth

    def _emit(self, text: str) -> None:
        line = (self._prefix() + text).rstrip()
        self.lines.append(line)

    def _flush(self) -> None:
        """End the current line if it has text."""
        if not self._cur:
            return
        raw = "".join(self._cur)
        self._cur = []
        text = raw.rstrip() if self._pre else _WS_RE.sub(" ", raw).strip()
        if text:
            self._emit(text)

    def _newline(self) -> None:
        """A hard line break (``<br>``): ends the line even when it is empty."""
        if self._cur:
            raw = "".join(self._cur)
            self._cur = []
            text = raw.rstrip() if self._pre else _WS_RE.sub(" ", raw).strip()
            self._emit(text)
        else:
            self._emit("")

    def _blank(self) -> None:
        self._flush()
        if self.lines and self.lines[-1].strip(" >"):
            self._emit("")

    def _marker(self) -> None:
        self._flush()
        last = len(self.lines) - 1
        while last >= 0 and not self.lines[last].strip(" >"):
            last -= 1
        if self._marker_at is not None and self._marker_at == last:
            return  # Outlook nests two containers; one marker is enough.
        if self.lines and self.lines[-1].strip(" >"):
            self._emit("")
        self._emit(QUOTE_MARKER)
        self._marker_at = len(self.lines) - 1

    # -- parser callbacks ----------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        if tag == "body" and "head" in self._skip:
            # Broken documents open <body> without closing <head>.
            self._skip = [t for t in self._skip if t != "head"]
        if self._skip:
            if tag in _SKIP_TAGS and tag not in _VOID_TAGS:
                self._skip.append(tag)
            return
        if tag in _SKIP_TAGS:
            self._skip.append(tag)
            return
        attr = {k.lower(): (v or "") for k, v in attrs}
        ident = attr.get("id", "").strip().lower()
        classes = {c.lower() for c in attr.get("class", "").split()}
        if ident in _QUOTE_IDS or (tag != "blockquote" and classes & _QUOTE_CLASSES):
            self._marker()
        if tag == "br":
            self._newline()
        elif tag == "hr":
            self._blank()
        elif tag == "blockquote":
            self._flush()
            self._quote_depth += 1
        elif tag == "pre":
            self._flush()
            self._pre += 1
        elif tag in ("ul", "ol"):
            self._flush()
            self._lists.append(tag)
        elif tag == "li":
            self._flush()
            indent = "  " * max(0, len(self._lists) - 1)
            self._cur.append(indent + "- ")
        elif tag == "a":
            self._links.append((attr.get("href", "").strip(), []))
        elif tag in ("td", "th"):
            self._cur.append(" ")
        elif tag in _BLOCK_TAGS:
            if tag in _PARAGRAPH_TAGS:
                self._blank()
            else:
                self._flush()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag.lower() not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        if self._skip:
            if tag in self._skip:
                while self._skip and self._skip.pop() != tag:
                    pass
            return
        if tag == "blockquote":
            self._flush()
            self._quote_depth = max(0, self._quote_depth - 1)
        elif tag == "pre":
            self._flush()
            self._pre = max(0, self._pre - 1)
        elif tag in ("ul", "ol"):
            self._flush()
            if self._lists:
                self._lists.pop()
        elif tag == "a":
            self._end_link()
        elif tag in _BLOCK_TAGS or tag == "li":
            if tag in _PARAGRAPH_TAGS:
                self._blank()
            else:
                self._flush()

    def _end_link(self) -> None:
        if not self._links:
            return
        href, parts = self._links.pop()
        text = _WS_RE.sub(" ", "".join(parts)).strip()
        lowered = href.lower()
        if (
            text
            and href
            and not lowered.startswith(("mailto:", "#", "javascript:", "cid:", "tel:"))
            and _WS_RE.sub("", href) != _WS_RE.sub("", text)
        ):
            self._data(f" ({href})")

    def _data(self, data: str) -> None:
        if self._pre:
            pieces = data.split("\n")
            for i, piece in enumerate(pieces):
                if i:
                    self._newline()
                self._cur.append(piece)
        else:
            self._cur.append(data)
        for _, parts in self._links:
            parts.append(data)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._data(data)

    def finish(self) -> str:
        self._flush()
        out: list[str] = []
        for line in self.lines:
            if not line.strip(" >") and out and not out[-1].strip(" >"):
                continue
            if out and out[-1] == QUOTE_MARKER and _FORWARD_BANNER_RE.match(line):
                out.pop()
            elif len(out) > 1 and out[-2] == QUOTE_MARKER and not out[-1].strip(" >"):
                if _FORWARD_BANNER_RE.match(line):
                    del out[-2:]
            out.append(line)
        while out and not out[0].strip():
            out.pop(0)
        while out and not out[-1].strip():
            out.pop()
        return "\n".join(out)


def _fallback(markup: str) -> str:
    text = _SKIP_BLOCK_RE.sub(" ", markup)
    text = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>", "\n", text)
    text = html.unescape(_TAG_RE.sub(" ", text))
    lines = [_WS_RE.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line)


def html_to_text(markup: str) -> str:
    """Render an HTML body as plain text.

    Drops scripts, styles and the head; block elements and ``<br>`` give line
    breaks, list items start with ``"- "``, links keep their text followed by
    ``(url)`` when it differs, blockquotes are prefixed with ``"> "``, entities
    are unescaped and whitespace is collapsed. Never raises.
    """
    parser = _TextParser()
    try:
        parser.feed(markup)
        parser.close()
        return parser.finish()
    except Exception:  # html.parser has assertion paths on odd markup
        try:
            return parser.finish() or _fallback(markup)
        except Exception:
            return _fallback(markup)
