"""Raw mail bytes to :class:`InboundMail`: headers, body text, quotes, attachments.

Pure: no I/O, no clock. :func:`parse_mail` takes the bytes exactly as fetched
and returns a frozen :class:`InboundMail`. It raises :class:`ParseError` only
when the bytes are not a mail at all (empty, no header lines, binary junk
such as an Outlook ``.msg`` file). Everything else parses; whatever was wrong
with it is listed in :attr:`InboundMail.defects`. No other exception escapes:
header values that the structured parser rejects fall back to their raw text,
unknown charsets decode as UTF-8 with replacement, broken transfer encodings
keep their raw bytes.

Every ``str`` in the result is valid Unicode (no lone surrogates), so it can
be stored and re-encoded as UTF-8 without further care.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import functools
import hashlib
import io
import logging
import mimetypes
import quopri
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator, Generator
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import TypeVar

from maild.core import mailpolicy
from maild.core.htmltext import html_to_text
from maild.core.memo import CacheIf
from maild.core.quotes import split_reply, unflow
from maild.core.subjects import strip_header_unsafe

__all__ = [
    "Attachment",
    "InboundMail",
    "ParseError",
    "logged_message_id",
    "parse_mail",
    "sanitize_filename",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_D = TypeVar("_D")

# Headers are looked at in the first 256 KiB only; nobody's header block is larger.
_HEADER_SCAN_LIMIT = 256 * 1024
_MAX_DEPTH = 40  # MIME nesting we follow; deeper parts are kept as opaque bytes
_MAX_PARTS = 2000
_MAX_MSGID_LEN = 998  # the longest line RFC 5322 allows
_MAX_FILENAME = 200
# The structured header parser is quadratic on long values; past this many
# characters the simpler RFC 2047 decoder is used instead.
_MAX_STRUCTURED = 8192
_UNSTRUCTURED = "x-maild-unstructured"  # a name the header registry does not know

_LEADING_BLANK_RE = re.compile(rb"\A(?:[ \t]*\r?\n)+")
_LOGGED_MSGID_RE = re.compile(rb"^message-id:[ \t]*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_HEADER_LINE_RE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_KEY_HEADER_RE = re.compile(rb"(?im)^(?:from|message-id|subject|date)[ \t]*:")
_MSGID_BRACKETED_RE = re.compile(r"<([^<>]*)>")
_COMMENT_RE = re.compile(r"\([^()<>]*\)")
_FOLD_RE = re.compile(r"\r?\n")
_WS_RE = re.compile(r"\s+")
_WINDOWS_UNSAFE = str.maketrans({c: "_" for c in '<>:"|?*'})

# Charset labels mail clients use that Python does not know by that name.
_CHARSET_ALIASES = {
    "us-ascii": "utf-8",  # ASCII is a subset; 8-bit bytes under this label are usually UTF-8
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
    "unknown-8bit": "utf-8",
    "x-unknown": "utf-8",
    "unknown": "utf-8",
    "default": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-sjis": "shift_jis",
    "sjis": "shift_jis",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
}

_EXTENSIONS = {
    "text/plain": ".txt",
    "text/html": ".html",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/feedback-report": ".txt",
    "text/rfc822-headers": ".txt",
    "message/rfc822-headers": ".txt",
    "application/pdf": ".pdf",
    "application/octet-stream": ".bin",
    "application/pgp-signature": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/ms-tnef": ".dat",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "text/calendar": ".ics",
}
# Encoded words labelled with a charset Python knows only under another name
# (or whose superset decodes what senders really put in, like GB2312 -> GB18030).
_ENCODED_WORD_CHARSET_RE = re.compile(
    r"=\?(gb2312|gbk|x-gbk|ks_c_5601-1987|ks_c_5601|iso-8859-8-i|windows-874|x-sjis|sjis"
    r"|x-mac-roman|macintosh|unicode-1-1-utf-7|utf8)(\*[^?]*)?\?",
    re.IGNORECASE,
)
_GENERATE_POLICY = policy.compat32.clone(linesep="\r\n")
# Only Python's built-in table, never /etc/mime.types: names must not depend on the host.
_MIME_TYPES = mimetypes.MimeTypes(filenames=())


class ParseError(ValueError):
    """The bytes are not a mail at all (empty, no header block, binary junk)."""


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment, decoded.

    ``filename`` is sanitized (see :func:`sanitize_filename`); ``size`` is the
    decoded length of ``content``. ``inline`` is true for parts shown in the
    body (``Content-Disposition: inline`` or a ``Content-ID`` without a
    disposition), such as pasted images.
    """

    filename: str
    content_type: str
    size: int
    content: bytes
    content_id: str | None
    inline: bool
    # the declared charset of a text/* attachment (lowercased), to pass it on as it came
    charset: str | None = None


@dataclass(frozen=True, slots=True)
class InboundMail:
    """Everything maild needs from one received mail.

    Addresses are lowercased addr-specs. Message ids carry no angle brackets.
    ``date`` is timezone-aware (UTC when the header had no offset).
    ``message_id`` is synthesized from a hash of the raw bytes when the mail
    has none, so a redelivered copy still deduplicates
    (``message_id_synthesized`` tells which).
    """

    raw: bytes
    size: int
    message_id: str
    message_id_synthesized: bool
    from_addr: str | None
    from_name: str
    sender_addrs: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    return_path: str | None
    subject: str
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    thread_index: str | None
    thread_topic: str | None
    headers: tuple[tuple[str, str], ...]
    content_type: str
    text: str
    html: str | None
    new_text: str
    quoted_text: str
    signature: str
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    report_original_message_id: str | None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (any case), or None."""
        key = name.lower()
        for hname, value in self.headers:
            if hname == key:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        """All values of header ``name`` (any case), in order."""
        key = name.lower()
        return tuple(value for hname, value in self.headers if hname == key)


# -- small helpers ---------------------------------------------------------


def _clean_str(text: str) -> str:
    """Make ``text`` valid Unicode: bytes smuggled as surrogates become UTF-8 or U+FFFD,
    and NUL becomes U+FFFD (PostgreSQL's text cannot hold it; the raw mail keeps it)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


class _Defects:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def guard(self, what: str, fn: Callable[[], _T], default: _D) -> _T | _D:
        """Run ``fn``; on any error record it and return ``default``."""
        try:
            return fn()
        except Exception as exc:  # one broken header must not lose the mail
            self.add(f"{what}: {type(exc).__name__}")
            return default


def _codec_for(charset: str | None) -> str:
    label = (charset or "utf-8").strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError) as exc:  # ValueError: NUL in the label
        if label.startswith("x-"):
            return _codec_for(label[2:])
        raise LookupError(label) from exc
    if not getattr(info, "_is_text_encoding", True):
        raise LookupError(f"{label} is not a text encoding")
    return info.name


def _decode_bytes(data: bytes, charset: str | None, what: str, defects: _Defects) -> str:
    """Decode a body part; unknown charsets and bad bytes are recorded, never raised."""
    try:
        codec = _codec_for(charset)
    except LookupError:
        defects.add(f"unknown charset {charset!r} in {what}")
        codec = "utf-8"
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError, ValueError, TypeError):
        pass
    if codec != "utf-8":
        # Mislabeled parts are common: UTF-8 declared as latin-1 and the like.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            defects.add(f"{what} declared {charset} but is utf-8")
            return text
    defects.add(f"undecodable bytes in {what} ({codec})")
    try:
        return data.decode(codec, "replace")
    except (LookupError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def _unfold(value: str) -> str:
    return _FOLD_RE.sub("", value)


def _raw_header_text(value: str, fallback_charset: str | None) -> str:
    """Raw header value (bytes carried as surrogates) to text, before RFC 2047 decoding."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return _clean_str(value)
    # RFC 6532 says UTF-8; older clients used the body's charset, or cp1252.
    for codec in ("utf-8", fallback_charset, "cp1252"):
        if not codec:
            continue
        try:
            return data.decode(_codec_for(codec))
        except (UnicodeDecodeError, LookupError, ValueError, TypeError):
            continue
    return data.decode("latin-1")


def _fix_encoded_word_charsets(value: str) -> str:
    if "=?" not in value:
        return value
    return _ENCODED_WORD_CHARSET_RE.sub(
        lambda m: f"=?{_CHARSET_ALIASES.get(m.group(1).lower(), m.group(1))}{m.group(2) or ''}?",
        value,
    )


def _decode_header_value(value: str) -> str:
    """Decode RFC 2047 words in a raw (unfolded) header value read as unstructured
    text; raw text if that fails."""
    if "=?" not in value:
        # Without an encoded word the header registry's unstructured parse (and
        # its fallback below) gives the text back as it was: skip it, as most
        # headers of a mail can (a hypothesis test in tests/unit/test_inbound.py
        # compares the two).
        return _clean_str(value)
    value = _fix_encoded_word_charsets(value)
    if len(value) <= _MAX_STRUCTURED:
        # The structured parser has crash paths on hostile input.
        with contextlib.suppress(Exception):
            return _clean_str(str(mailpolicy.DEFAULT.header_factory(_UNSTRUCTURED, value)))
    try:
        return _clean_str(str(make_header(decode_header(value))))
    except Exception:  # unknown charsets, bad base64 in encoded words
        return _clean_str(value)


def _msg_ids(value: str) -> list[str]:
    """Message ids in a Message-ID/In-Reply-To/References value, brackets removed."""
    text = value
    for _ in range(4):
        stripped = _COMMENT_RE.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    found = [_WS_RE.sub("", m) for m in _MSGID_BRACKETED_RE.findall(text)]
    found = [f for f in found if f]
    if not found:
        found = [t.strip("<>") for t in re.split(r"[\s,;]+", text)]
        found = [t for t in found if t]
    return [_clean_str(f) for f in found if _usable_msgid(f)]


def _usable_msgid(mid: str) -> bool:
    if not mid or len(mid) > _MAX_MSGID_LEN:
        return False
    # the one printable character that is white space is U+0020
    return mid.isprintable() and " " not in mid


def _safe_ctype(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:  # a malformed Content-Type header
        return "text/plain"


def _safe_disposition(part: Message) -> str | None:
    try:
        disp = part.get_content_disposition()
    except Exception:
        return None
    return disp.lower() if isinstance(disp, str) else None


def _safe_filename(part: Message, defects: _Defects) -> str | None:
    name = defects.guard("filename", lambda: part.get_filename(), None)
    if name is None:
        return None
    text = str(name)
    if "=?" in text and "?=" in text:
        # Leave undecodable encoded words as they are.
        with contextlib.suppress(Exception):
            text = str(make_header(decode_header(text)))
    return _clean_str(text)


def _content_id(part: Message) -> str | None:
    try:
        raw = part.get("content-id")
    except Exception:
        return None
    if raw is None:
        return None
    value = _clean_str(str(raw)).strip().strip("<>").strip()
    return value or None


def _payload_bytes(part: Message, defects: _Defects) -> bytes:
    data = defects.guard("payload", lambda: part.get_payload(decode=True), None)
    if isinstance(data, bytes):
        return data
    raw = defects.guard("payload", lambda: part.get_payload(), "")
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _generate(msg: Message) -> bytes:
    # compat32 re-emits the source header lines as they were; CRLF as in a real .eml.
    # The generator refuses some headers its own parser accepted.
    with contextlib.suppress(Exception):
        buf = io.BytesIO()
        BytesGenerator(buf, mangle_from_=False, policy=_GENERATE_POLICY).flatten(msg)
        return buf.getvalue()
    # Text the parser already decoded cannot always go back to 8-bit bytes;
    # write it as a string and encode that as UTF-8 instead.
    with contextlib.suppress(Exception):
        out = io.StringIO()
        Generator(out, mangle_from_=False, policy=_GENERATE_POLICY).flatten(msg)
        return out.getvalue().encode("utf-8", "surrogateescape")
    # Last resort: the header lines as received, then the payload.
    head = "".join(f"{name}: {value}\r\n" for name, value in _raw_items(msg))
    payload = msg.get_payload()
    if isinstance(payload, list):
        body = b"\r\n".join(_generate(p) for p in payload if isinstance(p, Message))
    else:
        body = str(payload).encode("utf-8", "surrogateescape")
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


def _message_part_bytes(part: Message, defects: _Defects) -> bytes:
    """Body of a ``message/*`` part (the enclosed mail, or the report fields), as bytes."""
    payload = defects.guard("message part", lambda: part.get_payload(), None)
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], Message):
        inner = payload[0]
        data = defects.guard("message part", lambda: _generate(inner), None)
        if data is not None:
            return data
    whole = defects.guard("message part", lambda: _generate(part), None)
    if whole is None:
        return _payload_bytes(part, defects)
    if whole.startswith(b"\r\n"):
        return whole[2:]
    head, sep, body = whole.partition(b"\r\n\r\n")
    return body if sep else b""


# -- filenames -------------------------------------------------------------


def _extension(content_type: str) -> str:
    ct = content_type.lower().strip()
    if ct in _EXTENSIONS:
        return _EXTENSIONS[ct]
    try:
        ext = _MIME_TYPES.guess_extension(ct)
    except Exception:
        ext = None
    if ext:
        return ext
    return ".txt" if ct.startswith("text/") else ".bin"


def _sanitize_once(text: str) -> str:
    text = _clean_str(text.replace("\x00", ""))  # a control: dropped, as the others below
    text = re.split(r"[/\\]", text)[-1]
    text = "".join(
        ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co")
    )
    text = text.translate(_WINDOWS_UNSAFE)
    text = _WS_RE.sub(" ", text)
    text = text.lstrip(". ").rstrip(". ")
    if len(text) > _MAX_FILENAME:
        stem, dot, ext = text.rpartition(".")
        if dot and stem and 0 < len(ext) <= 16:
            text = stem[: _MAX_FILENAME - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            text = text[:_MAX_FILENAME]
    return text


def sanitize_filename(name: str | None, content_type: str, index: int) -> str:
    """A safe attachment file name.

    Keeps only the last path component of ``name``; removes control and
    format characters, leading dots and spaces, trailing dots and spaces and
    characters Windows forbids; shortens to 200 characters keeping the
    extension. When nothing is left, returns ``attachment-<index><ext>`` with
    the extension guessed from ``content_type``. Idempotent on its own output.
    """
    text = name or ""
    for _ in range(8):
        cleaned = _sanitize_once(text)
        if cleaned == text:
            break
        text = cleaned
    if not text or text.startswith("."):
        text = f"attachment-{index}{_extension(content_type)}"
    return text[:_MAX_FILENAME]


# -- the parser ------------------------------------------------------------


def _strip_envelope(raw: bytes) -> bytes:
    data = raw
    if data.startswith(b"From "):
        # An mbox envelope line ("From MAILER-DAEMON Fri Jul  8 12:08:34 2011").
        _, _, data = data.partition(b"\n")
    # Some exports start with blank or all-space lines; a header block cannot.
    return _LEADING_BLANK_RE.sub(b"", data, count=1)


def _check_is_mail(data: bytes) -> None:
    if not data.strip():
        raise ParseError("empty message")
    head = data[:_HEADER_SCAN_LIMIT]
    end = len(head)
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = head.find(sep)
        if pos != -1:
            end = min(end, pos)
    block = head[:end]
    first = block.split(b"\n", 1)[0]
    if not _HEADER_LINE_RE.match(first):
        raise ParseError("no header line at the start")
    if not _KEY_HEADER_RE.search(block):
        raise ParseError("no From, Message-ID, Subject or Date header")


def _unflowed(part: Message, text: str) -> str:
    """``text`` with RFC 3676 soft line breaks undone if the part is ``format=flowed``."""
    fmt = part.get_param("format")
    if not (isinstance(fmt, str) and fmt.strip().lower() == "flowed"):
        return text
    delsp = part.get_param("delsp")
    return unflow(text, delsp=isinstance(delsp, str) and delsp.strip().lower() == "yes")


class _Walker:
    """Collects body text and attachments from a parsed message tree."""

    def __init__(self, defects: _Defects) -> None:
        self.defects = defects
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []
        self.count = 0

    def walk(self, part: Message, depth: int = 0) -> None:
        self.count += 1
        if self.count > _MAX_PARTS:
            self.defects.add("too many MIME parts; the rest were skipped")
            return
        ctype = _safe_ctype(part)
        if ctype.startswith("multipart/") and depth < _MAX_DEPTH:
            payload = self.defects.guard("multipart", lambda: part.get_payload(), None)
            if isinstance(payload, list):
                alternative = ctype == "multipart/alternative"
                plain_before = len(self.plain)
                for sub in payload:
                    if not isinstance(sub, Message):
                        continue
                    if alternative and len(self.plain) > plain_before:
                        # One text/plain per alternative is enough; the rest
                        # (html, calendars) may still hold attachments.
                        self._walk_without_plain(sub, depth + 1)
                    else:
                        self.walk(sub, depth + 1)
                return
            # No parts found (boundary missing): the text is still the body.
            self.defects.add(f"{ctype} without parts; kept as text")
            ctype = "text/plain"
        elif ctype.startswith("multipart/"):
            self.defects.add("MIME nesting too deep")
        # One broken part must not cost the others.
        self.defects.guard(f"part {self.count}", lambda: self._leaf(part, ctype), None)

    def _walk_without_plain(self, part: Message, depth: int) -> None:
        saved = list(self.plain)
        self.walk(part, depth)
        self.plain = saved

    def _leaf(self, part: Message, ctype: str) -> None:
        disposition = _safe_disposition(part)
        filename = _safe_filename(part, self.defects)
        maintype = ctype.split("/", 1)[0]
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            data = _payload_bytes(part, self.defects)
            charset = self.defects.guard("charset", lambda: part.get_content_charset(), None)
            text = _clean_str(_decode_bytes(data, charset, ctype, self.defects))
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            if ctype == "text/plain":
                text = self.defects.guard("format=flowed", lambda: _unflowed(part, text), text)
            (self.plain if ctype == "text/plain" else self.html).append(text)
            return
        if maintype == "multipart":
            # Nested too deep to follow: keep the whole part as it came.
            content = self.defects.guard("multipart", lambda: _generate(part), b"")
        elif maintype == "message":
            content = _message_part_bytes(part, self.defects)
            encoded = _encoded_message(part, content)
            if encoded is not None:
                content = encoded
            if not filename and ctype in ("message/rfc822", "message/global"):
                if encoded is not None:
                    inner = self.defects.guard(
                        "message part",
                        lambda: BytesParser(policy=policy.compat32).parsebytes(
                            encoded, headersonly=True
                        ),
                        None,
                    )
                    filename = _subject_of(inner) if inner is not None else None
                else:
                    filename = self._inner_subject(part)
                filename = f"{filename}.eml" if filename else None
        else:
            content = _payload_bytes(part, self.defects)
        index = len(self.attachments) + 1
        content_id = _content_id(part)
        charset = None
        if maintype == "text":
            charset = self.defects.guard("charset", lambda: part.get_content_charset(), None)
        inline = disposition == "inline" or (disposition is None and content_id is not None)
        self.attachments.append(
            Attachment(
                filename=sanitize_filename(filename, ctype, index),
                content_type=ctype,
                size=len(content),
                content=content,
                content_id=content_id,
                inline=inline,
                charset=charset,
            )
        )

    def _inner_subject(self, part: Message) -> str | None:
        payload = self.defects.guard("message part", lambda: part.get_payload(), None)
        if not (isinstance(payload, list) and payload and isinstance(payload[0], Message)):
            return None
        return _subject_of(payload[0])


def _subject_of(msg: Message) -> str | None:
    for name, value in _raw_items(msg):
        if name.lower() == "subject":
            subject = strip_header_unsafe(_decode_header_value(_unfold(value)))
            return subject.strip() or None
    return None


def _encoded_message(part: Message, generated: bytes) -> bytes | None:
    """The real bytes of a ``message/*`` part sent base64 or quoted-printable encoded.

    RFC 2046 forbids that encoding, so the stdlib parses the encoded text as
    if it were the enclosed mail; undo that here. None for a normal part.
    """
    try:
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    except Exception:
        return None
    if cte == "base64":
        compact = re.sub(rb"[^A-Za-z0-9+/=]", b"", generated)
        compact = compact.rstrip(b"=")
        compact += b"=" * (-len(compact) % 4)
        try:
            return base64.b64decode(compact)
        except (binascii.Error, ValueError):
            return None
    if cte == "quoted-printable":
        return quopri.decodestring(generated)
    return None


def _raw_items(msg: Message) -> list[tuple[str, str]]:
    try:
        return [(str(k), str(v)) for k, v in msg.raw_items()]
    except Exception:
        return []


def _iter_parts(msg: Message, depth: int = 0) -> Iterator[Message]:
    """Every part, depth first, including parts inside enclosed messages."""
    yield msg
    if depth >= _MAX_DEPTH:
        return
    try:
        payload = msg.get_payload()
    except Exception:
        return
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from _iter_parts(sub, depth + 1)


def _first_msgid_in(msg: Message, names: tuple[str, ...]) -> str | None:
    for name, value in _raw_items(msg):
        if name.lower() in names:
            ids = _msg_ids(_unfold(value))
            if ids:
                return ids[0]
    return None


def _report_original_id(msg: Message, defects: _Defects) -> str | None:
    """Message-ID of the mail a delivery/disposition report is about."""
    reports = [p for p in _iter_parts(msg) if _safe_ctype(p) == "multipart/report"]
    for report in reports:
        parts = list(_iter_parts(report))
        for part in parts:
            ctype = _safe_ctype(part)
            if ctype in ("message/rfc822", "message/global", "message/rfc822-headers"):
                payload = defects.guard("report", part.get_payload, None)
                if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                    found = _first_msgid_in(payload[0], ("message-id",))
                    if found:
                        return found
            elif ctype in ("text/rfc822-headers", "text/global-headers"):
                data = _payload_bytes(part, defects)
                text = _decode_bytes(data, "utf-8", ctype, defects)
                parse = HeaderParser(policy=policy.compat32).parsestr
                headers = defects.guard("report", functools.partial(parse, text), None)
                if headers is not None:
                    found = _first_msgid_in(headers, ("message-id",))
                    if found:
                        return found
        for part in parts:
            found = _first_msgid_in(part, ("original-message-id", "x-original-message-id"))
            if found:
                return found
    return None


def _parse_bytes(data: bytes, defects: _Defects) -> Message | None:
    try:
        return BytesParser(policy=mailpolicy.DEFAULT).parsebytes(data)
    except Exception as exc:  # the default policy's header parser can crash mid-parse
        defects.add(f"parser: {type(exc).__name__}; parsed with compat32")
    try:
        return BytesParser(policy=policy.compat32).parsebytes(data)
    except Exception as exc:  # RecursionError on absurdly deep MIME nesting
        defects.add(f"parser: {type(exc).__name__}; body kept as raw text")
    for fallback in (mailpolicy.DEFAULT, policy.compat32):
        with contextlib.suppress(Exception):
            return BytesParser(policy=fallback).parsebytes(data, headersonly=True)
    return None


_MAX_ADDRESS_HEADER = 32 * 1024


# address header values read once a process: the same people write again and again.
# A 256-character value parses to at most ~18 KiB (a hundred one-letter addresses),
# so the cache holds ~18 MiB at worst; like the log, it keeps the addresses and
# names of the last thousand or so senders for the life of the process
_ADDRESSES_CACHED = 1024
_MAX_CACHED_ADDRESS_VALUE = 256


_AddressRead = tuple[tuple[tuple[str, str], ...], tuple[str, ...]]
# the parser ran out of stack or memory: another call may not, so it is not kept
_NOT_KEPT = (": RecursionError", ": MemoryError")


def _addresses(name: str, values: list[str], defects: _Defects) -> list[tuple[str, str]]:
    """(display name, lowercased addr-spec) for every address in the header values."""
    out: list[tuple[str, str]] = []
    for value in values:
        if len(value) > _MAX_ADDRESS_HEADER:
            # SPEC 11: nobody mails a crowd through us; past this many addresses
            # none would join a ticket, so parsing them all only costs time
            cut = value.rfind(",", 0, _MAX_ADDRESS_HEADER)
            value = value[: cut if cut > 0 else _MAX_ADDRESS_HEADER]
            defects.add(
                f"{name}: only the first {_MAX_ADDRESS_HEADER // 1024} KB of addresses read"
            )
        if len(value) <= _MAX_CACHED_ADDRESS_VALUE:
            found, problems = _address_value_cached(name, value)
        else:
            found, problems = _address_value(name, value)
        out.extend(found)
        for problem in problems:
            defects.add(problem)
    return out


def _address_value(name: str, value: str) -> _AddressRead:
    """The addresses of one header value, and the defects met reading them.

    A function of the name and the value (and of how deep the stack is when
    the parser recurses), so :func:`_address_value_cached` can keep its
    answers: the header registry's parse is most of a mail's.
    """
    defects = _Defects()
    out: list[tuple[str, str]] = []
    parsed: list[tuple[str, str]] | None = None
    try:
        if len(value) <= _MAX_STRUCTURED:
            header = mailpolicy.DEFAULT.header_factory(name, value)
            parsed = [
                (_clean_str(a.display_name or ""), _clean_str(a.addr_spec or ""))
                for a in getattr(header, "addresses", ())
            ]
    except Exception as exc:
        defects.add(f"{name}: {type(exc).__name__}")
    if not parsed:
        try:
            parsed = [(_decode_header_value(d), _clean_str(a)) for d, a in getaddresses([value])]
        except Exception as exc:
            defects.add(f"{name}: {type(exc).__name__}")
            parsed = []
    if len(parsed) == 1 and not parsed[0][0]:
        # Old style "addr (Full Name)": the name lives in a comment.
        try:
            comment_name, _ = parseaddr(value)
        except Exception:
            comment_name = ""
        if comment_name:
            parsed = [(_decode_header_value(comment_name), parsed[0][1])]
    for display, addr in parsed:
        addr = addr.strip().strip("<>").strip().lower()
        if not addr or any(ch.isspace() or not ch.isprintable() for ch in addr):
            continue
        display = strip_header_unsafe(display).strip()
        out.append((display, addr))
    return tuple(out), tuple(defects.items)


_address_value_cached = CacheIf(
    _address_value,
    _ADDRESSES_CACHED,
    keep=lambda read: not any(problem.endswith(_NOT_KEPT) for problem in read[1]),
)


def _parse_date(value: str | None, defects: _Defects) -> datetime | None:
    if not value:
        return None
    result: datetime | None = None
    try:
        header = mailpolicy.DEFAULT.header_factory("date", value)
        result = getattr(header, "datetime", None)
    except Exception:
        result = None
    if result is None:
        try:
            result = parsedate_to_datetime(value)
        except Exception:
            defects.add("invalid Date header")
            return None
    if result is None:
        return None
    if result.tzinfo is None:
        result = result.replace(tzinfo=UTC)
    return result


def logged_message_id(raw: bytes) -> str:
    """The Message-ID of raw mail for a log line; "no Message-ID" when there is none.

    A search of the header block (its first 64 KiB), not a parse: it runs for
    every mail fetched and sent, also for mail :func:`parse_mail` would reject.
    """
    head = raw[:65536]
    for blank in (b"\r\n\r\n", b"\n\n"):
        end = head.find(blank)
        if end >= 0:
            head = head[:end]
    found = _LOGGED_MSGID_RE.search(head)
    return found.group(1).decode("ascii", "replace") if found else "no Message-ID"


def parse_mail(raw: bytes) -> InboundMail:
    """Parse raw RFC 5322 bytes into an :class:`InboundMail`.

    Raises :class:`ParseError` only if ``raw`` is not a mail at all; any
    other problem is recorded in ``defects`` and parsing carries on.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ParseError("not bytes")
    raw = bytes(raw)
    data = _strip_envelope(raw)
    _check_is_mail(data)
    defects = _Defects()
    msg = _parse_bytes(data, defects)
    if msg is None:
        return _minimal(raw, data, defects)
    try:
        return _build(raw, msg, defects)
    except ParseError:
        raise
    except Exception as exc:  # a last line of defence: keep the mail, say why
        log.warning("parse_mail fell back to a minimal parse: %r", exc)
        defects.add(f"internal: {type(exc).__name__}")
        return _minimal(raw, data, defects)


def _synthesized_id(raw: bytes) -> str:
    return f"sha256-{hashlib.sha256(raw).hexdigest()[:40]}@maild.invalid"


def _minimal(raw: bytes, data: bytes, defects: _Defects) -> InboundMail:
    head, _, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
    text = body.decode("utf-8", "replace")
    headers: list[tuple[str, str]] = []
    try:
        parsed = HeaderParser(policy=policy.compat32).parsestr(head.decode("utf-8", "replace"))
        headers = [(k.lower(), _clean_str(str(v))) for k, v in parsed.raw_items()]
    except Exception:
        headers = []
    parts = split_reply(text)
    return InboundMail(
        raw=raw,
        size=len(raw),
        message_id=_synthesized_id(raw),
        message_id_synthesized=True,
        from_addr=None,
        from_name="",
        sender_addrs=(),
        to=(),
        cc=(),
        reply_to=(),
        return_path=None,
        subject="",
        date=None,
        in_reply_to=(),
        references=(),
        thread_index=None,
        thread_topic=None,
        headers=tuple(headers),
        content_type="text/plain",
        text=text,
        html=None,
        new_text=parts.new_text,
        quoted_text=parts.quoted,
        signature=parts.signature,
        attachments=(),
        defects=tuple(defects.items),
        report_original_message_id=None,
    )


def _build(raw: bytes, msg: Message, defects: _Defects) -> InboundMail:
    top_charset = defects.guard("charset", lambda: msg.get_content_charset(), None)

    raw_headers: list[tuple[str, str]] = []  # (lowercased name, unfolded raw text)
    headers: list[tuple[str, str]] = []
    for name, value in _raw_items(msg):
        lname = _clean_str(name).strip().lower()
        text = _unfold(_raw_header_text(value, top_charset)).strip()
        raw_headers.append((lname, text))
        # Decoded as unstructured text whatever the header: RFC 2047 words are
        # decoded, but dates, ids and addresses keep the sender's spelling.
        headers.append((lname, _decode_header_value(text)))

    def raw_all(name: str) -> list[str]:
        return [v for k, v in raw_headers if k == name]

    def decoded_first(name: str) -> str | None:
        for k, v in headers:
            if k == name:
                return v
        return None

    ids = [i for v in raw_all("message-id") for i in _msg_ids(v)]
    message_id = ids[0] if ids else _synthesized_id(raw)

    from_list = _addresses("from", raw_all("from"), defects)
    from_addr = from_list[0][1] if from_list else None
    from_name = from_list[0][0] if from_list else ""
    sender = _addresses("sender", raw_all("sender"), defects)
    reply_to = _addresses("reply-to", raw_all("reply-to"), defects)
    to = _addresses("to", raw_all("to"), defects)
    cc = _addresses("cc", raw_all("cc"), defects)

    return_path: str | None = None
    rp_values = raw_all("return-path")
    if rp_values:
        rp = rp_values[0].strip()
        inner = _MSGID_BRACKETED_RE.search(rp)
        rp = (inner.group(1) if inner else rp).strip().lower()
        return_path = _clean_str(rp)

    subject = strip_header_unsafe(decoded_first("subject") or "").strip()
    date = _parse_date(decoded_first("date"), defects)
    in_reply_to = _dedupe([i for v in raw_all("in-reply-to") for i in _msg_ids(v)])
    references = _dedupe([i for v in raw_all("references") for i in _msg_ids(v)])
    thread_index = next((v.strip() for v in raw_all("thread-index") if v.strip()), None)
    topic = decoded_first("thread-topic")
    thread_topic = strip_header_unsafe(topic).strip() if topic is not None else None

    walker = _Walker(defects)
    defects.guard("body", lambda: walker.walk(msg), None)
    text = "\n".join(walker.plain)
    html = walker.html[0] if walker.html else None
    if not text.strip() and walker.html:
        text = "\n".join(html_to_text(h) for h in walker.html)
    parts = split_reply(text)

    for part in _iter_parts(msg):
        for defect in getattr(part, "defects", ()):
            defects.add(type(defect).__name__)

    report_id = defects.guard("report", lambda: _report_original_id(msg, defects), None)

    return InboundMail(
        raw=raw,
        size=len(raw),
        message_id=message_id,
        message_id_synthesized=not ids,
        from_addr=from_addr,
        from_name=from_name,
        sender_addrs=_dedupe([a for _, a in from_list + sender + reply_to]),
        to=_dedupe([a for _, a in to]),
        cc=_dedupe([a for _, a in cc]),
        reply_to=_dedupe([a for _, a in reply_to]),
        return_path=return_path,
        subject=subject,
        date=date,
        in_reply_to=in_reply_to,
        references=references,
        thread_index=thread_index,
        thread_topic=thread_topic,
        headers=tuple(headers),
        content_type=_safe_ctype(msg),
        text=text,
        html=html,
        new_text=parts.new_text,
        quoted_text=parts.quoted,
        signature=parts.signature,
        attachments=tuple(walker.attachments),
        defects=tuple(defects.items),
        report_original_message_id=report_id,
    )
