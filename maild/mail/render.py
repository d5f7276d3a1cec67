"""Templates and outgoing messages.

Templates are Jinja2 files ``<name>.j2`` with the blocks ``subject``, ``text``
and optionally ``html``, rendered with ``StrictUndefined`` so a typo in a
template fails loudly instead of mailing a blank. A configured directory
overrides the shipped templates one file at a time.

Outgoing mail is written as bytes (:func:`build_message`), not built as an
``EmailMessage``: every header value has its control characters replaced and
encoded-word lookalikes defused first, so a subject carrying CR/LF or encoded
garbage cannot add a header; tests/unit/test_render_outgoing.py holds the bytes
against what the stdlib's ``EmailMessage`` would give.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import struct
import sys
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, quoprimime
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal

import jinja2

from maild.config import Config
from maild.core import mailpolicy
from maild.core.subjects import strip_header_unsafe

__all__ = [
    "TEMPLATE_NAMES",
    "CannedReply",
    "OutAttachment",
    "OutgoingMail",
    "Rendered",
    "Renderer",
    "TemplateError",
    "sample_context",
    "support_context",
    "build_message",
    "new_message_id",
    "new_thread_root",
    "shipped_template_dir",
    "thread_index_for",
]

TEMPLATE_NAMES = (
    "ack",
    "steward_new",
    "relay",
    "requester_reply",
    "resolved_footer",
    "closed",
    "command_error",
    "receipt",
    "confirm_command",
    "automatic_ceiling",
    "too_large",
    "incident_update",
    "incident_resolved",
    "sla_reminder",
    "handoff",
    "postmortem",
    "weekly_report",
    "budget_warning",
)

_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


class TemplateError(RuntimeError):
    """A template is missing or failed to render."""


@dataclass(frozen=True, slots=True)
class OutAttachment:
    """A file passed on in an outgoing mail: as it came, with its type and charset."""

    filename: str
    content_type: str
    content: bytes
    charset: str | None = None


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str | None


def shipped_template_dir() -> Path:
    """The templates shipped with maild: inside the package when installed, else the repo's."""
    package = Path(__file__).resolve().parents[1]  # maild/
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "ack.j2").is_file():
            return candidate
    raise TemplateError(f"shipped templates not found next to {package}")


class Renderer:
    """Renders the named templates with the override directory first."""

    def __init__(self, config: Config) -> None:
        search = [str(shipped_template_dir())]
        if config.templates.dir is not None:
            search.insert(0, str(config.templates.dir))
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - plain-text mail; html blocks escape with |e
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        try:
            template = self.env.get_template(f"{name}.j2")
            ctx = template.new_context(dict(context))
            blocks = template.blocks
            subject = "".join(blocks["subject"](ctx)) if "subject" in blocks else ""
            # a template without blocks (resolved_footer) is all text
            text = "".join(blocks["text"](ctx)) if "text" in blocks else template.render(ctx)
            html = "".join(blocks["html"](ctx)) if "html" in blocks else None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name!r}: {exc}") from exc
        return Rendered(" ".join(subject.split()), text.strip() + "\n", html)

    # -- canned replies (templates/replies/NAME.j2) -------------------------------

    def _reply_dirs(self) -> list[Path]:
        loader = self.env.loader
        paths = loader.searchpath if isinstance(loader, jinja2.FileSystemLoader) else []
        return [Path(p) / "replies" for p in paths]

    def replies(self) -> list[CannedReply]:
        """The canned replies ``[reply=NAME]`` accepts, by name; an override wins."""
        found: dict[str, CannedReply] = {}
        for rank, folder in enumerate(self._reply_dirs()):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.j2")):
                name = path.name[: -len(".j2")].lower()
                if name in found or not _REPLY_NAME.match(name):
                    continue
                try:
                    source = path.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                overridden = rank == 0 and len(self._reply_dirs()) > 1
                found[name] = CannedReply(name, _first_line(source), path, overridden)
        return [found[n] for n in sorted(found)]

    def reply_names(self) -> list[str]:
        return [r.name for r in self.replies()]

    def canned(self, name: str, context: Mapping[str, Any]) -> str:
        """The text of the canned reply ``name`` rendered with ``context``."""
        if not _REPLY_NAME.match(name):
            raise TemplateError(f"canned reply {name!r}: not a reply name")
        try:
            text = self.env.get_template(f"replies/{name}.j2").render(dict(context))
        except jinja2.TemplateError as exc:
            raise TemplateError(f"canned reply {name!r}: {exc}") from exc
        return text.strip()

    def check(self, context: Mapping[str, Any]) -> list[str]:
        """Render every template with ``context``; return the problems found."""
        problems = []
        for name in TEMPLATE_NAMES:
            try:
                self.render(name, context)
            except TemplateError as exc:
                problems.append(str(exc))
        # canned replies see the steward as a person, not a name (Stewards._canned_context)
        canned_context = {
            **context,
            "steward": {"name": "alice", "display_name": "Alice Liddell"},
            "budget_hours": 10.0,
        }
        for reply in self.replies():
            try:
                self.canned(reply.name, canned_context)
            except TemplateError as exc:
                problems.append(str(exc))
        return problems


_REPLY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


@dataclass(frozen=True, slots=True)
class CannedReply:
    """A canned reply: its name, first line, file, and whether it overrides a shipped one."""

    name: str
    first_line: str
    path: Path
    override: bool


def _first_line(source: str) -> str:
    """The first line of a canned reply as written (Jinja comments left out)."""
    for line in _COMMENT.sub("", source).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def support_context(config: Config) -> dict[str, str]:
    """What every template knows of the support desk: ``support.name``, ``.address``, ``.tag``."""
    support = config.support
    return {"name": support.name, "address": support.address, "tag": support.tag}


def sample_context(config: Config) -> dict[str, Any]:
    """Every name the shipped templates may use, with plausible values: for checking
    templates (and overrides) before they are needed."""
    support = config.support
    ticket = {
        "id": 42,
        "subject": "Hub is down",
        "status": "open",
        "type": "incident",
        "priority": "high",
        "community": "example",
        "requester": "rep@community.example",
        "cc": ["other@community.example"],
        "assignee": "alice",
        "incident_commander": "alice",
        "follow_up_of": None,
        "requester_name": "Rosa Rep",
    }
    message = {
        "from_addr": "rep@community.example",
        "from_name": "Rosa Rep",
        "subject": "Hub is down",
        "text": "Hello,\nthe hub returns 502.",
        "new_text": "Hello,\nthe hub returns 502.",
        "attachments": [{"filename": "log.txt", "content_type": "text/plain", "size": 120}],
        "text_cut": False,
    }
    return {
        "support": support_context(config),
        "tag": f"[{support.tag} #42]",
        "ticket": ticket,
        "message": message,
        "quoted_tag": None,
        "status_before": "resolved",
        "subject": f"Re: [{support.tag} #42] Hub is down",
        "body": "We are on it.",
        "resolved": True,
        "closed": False,
        "auto_close_hours": 48,
        "next_update": "Wed 2026-11-25 18:00 UTC",
        "errors": [{"tag": "[priority=asap]", "message": "'asap' is not a priority"}],
        "accepted": ["[priority=low|normal|high|urgent]"],
        "changes": ["priority: normal -> high"],
        "steward": "alice",
        "findings": ["dkim=fail (example.org)"],
        "token": "Xy3kP0q9LmN2",
        "commands": ["[resolved]", "[assign=alice]"],
        "relays": True,
        "expires": "Thu 2026-11-26 15:00 UTC",
        "not_on_ticket": False,
        "cc_refused": None,
        "why": "maild already sent 300 automatic mails this hour",
        "limit": 300,
        "size_mb": 30.0,
        "limit_mb": 25.0,
        "latest_reply": None,
        "since": "Wed 2026-11-25 15:00 UTC",
        "kind": "triage",
        "what": "triage",
        "stage": "warn",
        "due": "Wed 2026-11-25 17:00 UTC",
        "reason": None,
        "on_duty": ["alice", "bob"],
        "incoming": ["bob"],
        "outgoing": ["carol"],
        "next_change": "Mon 2026-12-07 00:00 UTC",
        "pm": {
            "ticket": {
                **ticket,
                "links": ["https://tracker.example/issues/7"],
                "time_spent_minutes": 95,
                "created_at": "2026-11-25T15:00:00+00:00",
                "first_response_at": "2026-11-25T15:20:00+00:00",
                "resolved_at": "2026-11-25T18:00:00+00:00",
            },
            "opened": "Wed 2026-11-25 09:00 CST",
            "first_response": {"wall_hours": 0.33, "working_hours": 0.33},
            "first_response_local": "Wed 2026-11-25 09:20 CST",
            "resolution": {"wall_hours": 3.0, "working_hours": 2.0},
            "resolved_local": "Wed 2026-11-25 12:00 CST",
            "timeline": [
                {
                    "at": "2026-11-25T15:00:00+00:00",
                    "local": "Wed 2026-11-25 09:00 CST",
                    "kind": "received",
                    "actor": "rep@community.example",
                    "summary": "received from rep@community.example: Hub is down",
                },
            ],
            "went_well": [],
            "went_wrong": [],
            "action_items": [],
        },
        "report": {
            "since": "Mon 2026-11-23 09:00 CST",
            "until": "Mon 2026-11-30 09:00 CST",
            "older_than": 14,
            "stats": {
                "opened_this_week": 3,
                "closed_this_week": 2,
                "opened_total": 40,
                "closed_total": 35,
                "mean_hours_to_resolution": 5.5,
                "median_hours_to_resolution": 4.0,
                "aged": [{"id": 7, "age_days": 20}],
                "sla_breaches": {"incident": 1},
                "budget": [
                    {
                        "community": "example",
                        "used_hours": 8.5,
                        "budget_hours": 10.0,
                        "percent_used": 85.0,
                        "warning": "80%",
                    },
                ],
            },
            "incidents": [
                {
                    "tag": f"[{support.tag} #42]",
                    "subject": "Hub is down",
                    "status": "resolved",
                    "opened": "Wed 2026-11-25 09:00 CST",
                    "postmortem": True,
                },
            ],
        },
        "budget": {
            "community": "example",
            "month": "2026-11",
            "used_hours": 8.5,
            "budget_hours": 10.0,
            "percent_used": 85.0,
            "threshold": "80%",
        },
        "tickets": [
            {
                "tag": f"[{support.tag} #42]",
                "subject": "Hub is down",
                "status": "open",
                "type": "incident",
                "priority": "high",
                "due_kind": "first_response",
                "due": "Wed 2026-11-25 17:00 UTC",
            }
        ],
    }


def new_message_id(config: Config, ticket_id: int | None) -> str:
    """A fresh Message-ID on our domain (without angle brackets)."""
    token = secrets.token_hex(6)
    stem = f"maild-{ticket_id}-{token}" if ticket_id is not None else f"maild-{token}"
    return f"{stem}@{config.support.message_id_domain}"


def new_thread_root(now: datetime) -> str:
    """A new Outlook conversation root (22 bytes, base64): time stamp and a GUID."""
    filetime = int((now - _FILETIME_EPOCH).total_seconds() * 10_000_000)
    header = b"\x01" + struct.pack(">Q", filetime)[:5]
    return base64.b64encode(header + uuid.uuid4().bytes).decode("ascii")


def thread_index_for(root: str, now: datetime) -> str:
    """A Thread-Index for a new message in the conversation ``root``."""
    raw = base64.b64decode(root)
    filetime = int((now - _FILETIME_EPOCH).total_seconds() * 10_000_000)
    child = struct.pack(">I", (filetime >> 18) & 0x7FFFFFFF) + os.urandom(1)
    return base64.b64encode(raw + child).decode("ascii")


def _header_text(value: str) -> str:
    """Untrusted text made safe for an unstructured header or a display name.

    The stdlib decodes RFC 2047 encoded words in a value again when the header
    is set, so CR/LF hidden inside one (even several layers deep) would come
    back as a header break. Decode the way the header parser does until
    nothing changes, then replace every control character (SPEC 6).
    """
    text = strip_header_unsafe(value)
    for _ in range(8):
        if "=?" not in text:
            break
        decoded = strip_header_unsafe(str(mailpolicy.SMTP.header_factory("x-maild", text)))
        if decoded == text:
            break
        text = decoded
    # what is still encoded-word syntax is left undecodable: a word joiner
    # after "=" keeps the header parser from decoding it once more
    return text.replace("=?", "=\u2060?").strip()


# --- the outgoing bytes ---------------------------------------------------------------
#
# Written directly, not through ``EmailMessage``: what a mail client parses back
# (``email.message_from_bytes(raw, policy=policy.default)``) is what the stdlib's
# own generator gives for the same values (tests/unit/test_render_outgoing.py
# compares the two), at a fraction of the cost. Every header value is one logical
# line without CR or LF, folded only by a CRLF put before a space that is already
# there, so unfolding gives the value back unchanged; header lines are kept to
# 78 characters where the value has room to fold (RFC 5322 2.1.1), and text
# that needs it goes as RFC 2047 encoded words of at most 57 characters (but
# for a long run of non-ASCII words in a display name: see _phrase).

_CRLF = b"\r\n"
_MAX_LINE = 78
# RFC 5322 specials as email.headerregistry.Address judges them
_SPECIALS = frozenset('()<>@,:;."[]\\')
_DOT_ATOM_ENDS = (_SPECIALS - {"."}) | {" ", "\t"}
# what RFC 2047 5(3) lets an encoded word in a phrase carry unencoded
_Q_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_TEXT = 45  # encoded text per word: "=?utf-8?q?" + 45 + "?=" = 57 characters
_PHRASE_WORD = 800  # encoded text of one word in a display name: see _phrase
_LONG_WORD = 70  # a word longer than this cannot fold: it goes encoded
_LONG_GAP = 60  # a run of spaces longer than this goes inside an encoded word
_BOUNDARY_MARK = "=" * 15


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """An outgoing mail as the bytes that are stored and sent.

    ``smtputf8`` says whether a recipient address is not ASCII: then headers
    carry UTF-8 as it is (RFC 6532) and the mail needs the SMTPUTF8 extension.
    """

    raw: bytes
    smtputf8: bool

    def as_bytes(self) -> bytes:
        return self.raw

    @property
    def policy(self) -> EmailPolicy[EmailMessage]:
        """The stdlib policy the bytes follow, for whoever parses them again."""
        return mailpolicy.SMTPUTF8 if self.smtputf8 else mailpolicy.SMTP


def _quote(text: str) -> str:
    """An RFC 5322 quoted-string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr_spec(local: str, domain: str) -> str:
    """``local@domain`` with the local part quoted unless it is a dot-atom.

    A dot at either end or two in a row also need quotes (the stdlib's
    ``Address`` left them bare, which its own parser cannot read back).
    """
    if not _DOT_ATOM_ENDS.isdisjoint(local) or (
        "." in local and (local[0] == "." or local[-1] == "." or ".." in local)
    ):
        local = _quote(local)
    if domain:
        return f"{local}@{domain}"
    return local or "<>"


def _address_list(addrs: Iterable[str]) -> str:
    out = []
    for addr in addrs:
        clean = strip_header_unsafe(addr).strip()
        local, _, domain = clean.rpartition("@")
        # split at the last "@": an RFC 6532 address with a non-ASCII local
        # part is valid mail, not a parse error
        out.append(_addr_spec(local, domain) if local else _addr_spec(clean, ""))
    return ", ".join(out)


def _q_word(ch: str) -> str:
    if ch in _Q_SAFE:
        return ch
    if ch == " ":
        return "_"
    return "".join(f"={b:02X}" for b in ch.encode("utf-8", "replace"))


def _encoded_words(text: str, limit: int = _Q_TEXT) -> list[str]:
    """``text`` as RFC 2047 encoded words (UTF-8, Q or B, whichever is shorter).

    A character is never split between two words, and spaces are inside the
    words: the whitespace between two encoded words is not part of the text.
    """
    q = [_q_word(ch) for ch in text]
    size = len(text.encode("utf-8", "replace"))
    if sum(map(len, q)) <= 5 * -(-size // 3):  # Q unless B is clearly shorter
        words: list[str] = []
        chunk: list[str] = []
        length = 0
        for piece in q:
            if length + len(piece) > limit and chunk:
                words.append("=?utf-8?q?" + "".join(chunk) + "?=")
                chunk, length = [], 0
            chunk.append(piece)
            length += len(piece)
        words.append("=?utf-8?q?" + "".join(chunk) + "?=")
        return words
    words, buf = [], b""
    for ch in text:
        encoded = ch.encode("utf-8", "replace")
        if len(buf) + len(encoded) > limit * 3 // 4 and buf:
            words.append("=?utf-8?b?" + base64.b64encode(buf).decode("ascii") + "?=")
            buf = b""
        buf += encoded
    words.append("=?utf-8?b?" + base64.b64encode(buf).decode("ascii") + "?=")
    return words


def _fold(name: str, segments: Sequence[str]) -> bytes:
    """``Name: value`` with CRLF before a segment that does not fit on the line.

    Every segment after the first starts with a space: a fold only puts CRLF
    before it, so unfolding gives the value back unchanged.
    """
    lines = []
    line = name + ":"
    for i, segment in enumerate(segments):
        if i == 0:
            line += " " + segment.lstrip(" ")
        elif len(line) + len(segment) > _MAX_LINE:
            lines.append(line)
            line = segment
        else:
            line += segment
    lines.append(line)
    return "\r\n".join(lines).encode("utf-8", "replace") + _CRLF


def _split_spaces(value: str) -> list[str]:
    """``value`` cut before each space that starts a run of spaces."""
    return re.findall(r" *[^ ]+| +$", value) or [""]


def _header(name: str, value: str) -> bytes:
    """A structured header (addresses, ids, dates, MIME), folded at its spaces."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name}: a header value cannot contain CR or LF")
    if len(value) + len(name) + 2 <= _MAX_LINE:
        return f"{name}: {value}\r\n".encode("utf-8", "replace")
    return _fold(name, _split_spaces(value))


def _text_segments(text: str, utf8: bool) -> list[str]:
    """Segments of an unstructured value: words as they are where they can be,
    runs of words that cannot (not ASCII, or too long to fold) as encoded words."""
    pieces = _split_spaces(text)
    gaps = [len(p) - len(p.lstrip(" ")) for p in pieces]
    words = [p[g:] for p, g in zip(pieces, gaps, strict=True)]
    encode = [(not utf8 and not w.isascii()) or len(w) > _LONG_WORD or "=?" in w for w in words]
    for i in range(1, len(words)):
        if gaps[i] > _LONG_GAP:
            encode[i - 1] = encode[i] = True
    segments: list[str] = []
    i = 0
    while i < len(words):
        if not encode[i]:
            segments.append(pieces[i])
            i += 1
            continue
        j = i + 1
        while j < len(words) and encode[j]:
            j += 1
        run = words[i] + "".join(pieces[i + 1 : j])
        encoded = _encoded_words(run)
        segments.append(" " * gaps[i] + encoded[0])
        segments.extend(" " + w for w in encoded[1:])
        i = j
    return segments


def _text_header(name: str, text: str, utf8: bool) -> bytes:
    """An unstructured header (Subject and the like) with RFC 2047 where needed."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"{name}: a header value cannot contain CR or LF")
    if len(text) + len(name) + 2 <= _MAX_LINE and (utf8 or text.isascii()) and "=?" not in text:
        return f"{name}: {text}\r\n".encode("utf-8", "replace")
    return _fold(name, _text_segments(text, utf8))


def _phrase(name: str, utf8: bool) -> str:
    """A display name: as it is, quoted if it holds specials, or with encoded words.

    Words that are plain ASCII atoms stay as they are; each run of the others
    becomes one encoded word, spaces inside. Two encoded words side by side are
    avoided: RFC 2047 drops the whitespace between them, the stdlib's parser
    reads it as a space, so one of the two would show the name wrong. A run
    longer than 75 characters encoded is therefore one longer encoded word.
    """
    if utf8 or name.isascii():
        return name if _SPECIALS.isdisjoint(name) else _quote(name)
    out: list[str] = []
    run: list[str] = []
    for word in filter(None, name.split(" ")):
        if word.isascii() and _SPECIALS.isdisjoint(word) and "=?" not in word:
            if run:
                out.extend(_encoded_words(" ".join(run), _PHRASE_WORD))
                run = []
            out.append(word)
        else:
            run.append(word)
    if run:
        out.extend(_encoded_words(" ".join(run), _PHRASE_WORD))
    return " ".join(out)


def _param(name: str, value: str, utf8: bool) -> list[str]:
    """``; name="value"`` as header segments, RFC 2231 where the value needs it:
    not ASCII, too long for a line, or holding what looks like an encoded word
    (which a quoted value would show decoded, in the stdlib and some clients)."""
    if (utf8 or value.isascii()) and len(value) <= _LONG_WORD - len(name) and "=?" not in value:
        return [f" {name}={_quote(value)};"]
    sections: list[str] = []
    chunk: list[str] = []
    length = 0
    room = _MAX_LINE - len(name) - 18  # ' name*NN*=utf-8''' and ';'
    for ch in value:
        piece = urllib.parse.quote(ch, safe="", errors="replace")
        if length + len(piece) > room and chunk:
            sections.append("".join(chunk))
            chunk, length = [], 0
        chunk.append(piece)
        length += len(piece)
    sections.append("".join(chunk))
    if len(sections) == 1:
        return [f" {name}*=utf-8''{sections[0]};"]
    charsets = ["utf-8''"] + [""] * (len(sections) - 1)
    return [
        f" {name}*{n}*={cs}{text};"
        for n, (cs, text) in enumerate(zip(charsets, sections, strict=True))
    ]


def _mime_header(name: str, value: str, params: Sequence[str]) -> bytes:
    """``Content-Type`` or ``Content-Disposition`` with its parameter segments."""
    if not params:
        return _header(name, value)
    segments = [value + ";", *params]
    segments[-1] = segments[-1].rstrip(";")
    line = name + ": " + "".join(segments)
    if len(line) <= _MAX_LINE:
        return line.encode("utf-8", "replace") + _CRLF
    return _fold(name, segments)


def _text_part(text: str, subtype: str) -> tuple[bytes, bytes]:
    """Headers and body of a UTF-8 text part, with the transfer encoding the stdlib's
    ``set_content`` picks: 7bit or 8bit if every line fits in 78 octets, else
    quoted-printable or base64, whichever is shorter on the first ten lines."""
    lines = text.encode("utf-8").splitlines()
    if max(map(len, lines), default=0) <= _MAX_LINE:
        body = _CRLF.join(lines) + _CRLF
        cte = "7bit" if body.isascii() else "8bit"
    else:
        sniff = _CRLF.join(lines[:10]) + _CRLF
        sniff_qp = quoprimime.body_encode(sniff.decode("latin-1"), _MAX_LINE)
        if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
            cte = "base64"
            body = base64.encodebytes(_CRLF.join(lines) + _CRLF).replace(b"\n", _CRLF)
        else:
            cte = "quoted-printable"
            qp = (
                sniff_qp
                if len(lines) <= 10
                else quoprimime.body_encode(
                    (b"\n".join(lines) + b"\n").decode("latin-1"), _MAX_LINE
                )
            )
            body = _NEWLINE.sub("\r\n", qp).encode("ascii")
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    ).encode("ascii")
    return head, body


_NEWLINE = re.compile(r"\r\n|\r|\n")


def _multipart(subtype: str, parts: Sequence[bytes]) -> tuple[bytes, bytes]:
    """Headers and body of a ``multipart/subtype`` holding ``parts`` (each its
    headers, a blank line and its body)."""
    while True:
        boundary = f"{_BOUNDARY_MARK}{secrets.randbelow(sys.maxsize):019d}=="
        delimiter = b"--" + boundary.encode("ascii")
        if not any(delimiter in part for part in parts):
            break
    body = (
        delimiter
        + _CRLF
        + (_CRLF + delimiter + _CRLF).join(parts)
        + _CRLF
        + delimiter
        + b"--"
        + _CRLF
    )
    head = _header("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')
    return head, body


def _attachment(att: OutAttachment, utf8: bool) -> bytes:
    """One attached file as a MIME part: its type and charset kept, base64, or a
    forwarded mail as ``message/rfc822``."""
    maintype, _, subtype = att.content_type.partition("/")
    maintype, subtype = maintype.strip().lower(), subtype.strip().lower()
    if not _TOKEN.match(maintype) or not _TOKEN.match(subtype) or maintype == "multipart":
        maintype, subtype = "application", "octet-stream"
    filename = strip_header_unsafe(att.filename) or "attachment"
    disposition = _mime_header(
        "Content-Disposition", "attachment", _param("filename", filename, utf8)
    )
    if (maintype, subtype) == ("message", "rfc822"):
        # RFC 2046 5.2.1: never base64; attached as the mail it is, a client opens it
        inner = _as_message(att.content, utf8)
        if inner is not None:
            return (
                b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n"
                + disposition
                + _CRLF
                + inner
            )
        maintype, subtype = "application", "octet-stream"
    charset = (att.charset or "").strip()
    params = []
    if maintype == "text" and _TOKEN.match(charset):
        # the bytes go as they came (base64); the charset says how to read them
        params = [f' charset="{charset.lower()}";']
    return (
        _mime_header("Content-Type", f"{maintype}/{subtype}", params)
        + b"Content-Transfer-Encoding: base64\r\n"
        + disposition
        + _CRLF
        + base64.encodebytes(att.content).replace(b"\n", _CRLF)
    )


def _as_message(raw: bytes, utf8: bool) -> bytes | None:
    """A forwarded mail's bytes as the stdlib writes a message it parsed, or None if
    they cannot be a mail (no header, or the stdlib cannot write them again)."""
    try:
        inner = message_from_bytes(raw, policy=mailpolicy.SMTP)
        if len(inner.keys()) == 0:
            return None
        out = inner.as_bytes(policy=mailpolicy.SMTPUTF8) if utf8 else inner.as_bytes()
    except Exception:  # any bytes may arrive: they go as a plain file then
        return None
    # sent as 8bit, so it must be sound SMTP text: no NUL, no bare CR, no line over
    # 998 octets (the stdlib passes a body through as it came); else a plain file
    lines = out.split(b"\r\n")
    if b"\x00" in out or any(b"\r" in line or len(line) > 998 for line in lines):
        return None
    return out


def _msgid(mid: str) -> str:
    return f"<{strip_header_unsafe(mid).strip()}>"


# A Message-ID we thread under comes from the internet (RFC 5322 sets no length):
# one longer than this, or not ASCII, is left out of In-Reply-To/References, or a
# stranger could make us send a line over 998 octets or raw UTF-8 in a mail that
# is not SMTPUTF8 (strict MTAs refuse either). Clients thread on the others.
_THREAD_ID_MAX = 250


def _threadable(mid: str) -> bool:
    return mid.isascii() and 0 < len(mid.strip()) <= _THREAD_ID_MAX


def build_message(
    *,
    config: Config,
    rendered: Rendered,
    to: Sequence[str],
    cc: Sequence[str] = (),
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    auto: Literal["auto-replied", "auto-generated"] | None,
    from_name: str | None = None,
    reply_to: str | None = None,
    followup_to: str | None = None,
    thread_index: str | None = None,
    thread_topic: str | None = None,
    ticket_id: int | None = None,
    attachments: Sequence[OutAttachment] = (),
) -> OutgoingMail:
    """An outgoing mail from the support address, threaded and loop-safe.

    ``attachments`` keep their content type and charset (a ``text/x-yaml``
    file arrives as one), their names already sanitized on the way in.
    ``references`` longer than 20 ids keep the first (the thread's root) and
    the last 19, as RFC 5322 section 3.6.4 suggests for trimming.
    ``followup_to`` sets ``Mail-Followup-To``: where a group reply goes.
    """
    utf8 = not all(addr.isascii() for addr in (*to, *cc))
    display = _phrase(_header_text(from_name or config.support.name), utf8)
    local, _, domain = config.support.address.partition("@")
    sender = _addr_spec(local, domain)
    head = [_header("From", f"{display} <{sender}>" if display else sender)]
    head.append(_header("To", _address_list(to)))
    if cc:
        head.append(_header("Cc", _address_list(cc)))
    if reply_to:
        head.append(_header("Reply-To", _address_list([reply_to])))
    if followup_to:
        # not in the stdlib's header registry: an unstructured header with an address
        head.append(_text_header("Mail-Followup-To", _address_list([followup_to]), utf8))
    head.append(_text_header("Subject", _header_text(rendered.subject), utf8))
    head.append(_header("Date", format_datetime(now.astimezone(UTC))))
    head.append(_header("Message-ID", _msgid(message_id)))
    if in_reply_to and _threadable(in_reply_to):
        head.append(_header("In-Reply-To", _msgid(in_reply_to)))
    refs = list(dict.fromkeys(r for r in references if r and _threadable(r)))
    if len(refs) > 20:
        refs = [refs[0], *refs[-19:]]
    if refs:
        head.append(_header("References", " ".join(_msgid(r) for r in refs)))
    if auto is not None:
        head.append(_header("Auto-Submitted", auto))
        # Exchange and others honour this instead of RFC 3834.
        head.append(b"X-Auto-Response-Suppress: All\r\n")
    head.append(_text_header("X-Loop", config.support.address, utf8))
    if thread_index:
        head.append(_text_header("Thread-Index", strip_header_unsafe(thread_index), utf8))
    if thread_topic:
        head.append(_text_header("Thread-Topic", _header_text(thread_topic), utf8))
    if ticket_id is not None:
        head.append(_header("X-Maild-Ticket", str(ticket_id)))
    head.append(b"MIME-Version: 1.0\r\n")
    content_head, body = _text_part(rendered.text, "plain")
    if rendered.html:
        html_head, html_body = _text_part(rendered.html, "html")
        content_head, body = _multipart(
            "alternative", [content_head + _CRLF + body, html_head + _CRLF + html_body]
        )
    if attachments:
        parts = [content_head + _CRLF + body, *(_attachment(a, utf8) for a in attachments)]
        content_head, body = _multipart("mixed", parts)
    head.append(content_head)
    return OutgoingMail(b"".join(head) + _CRLF + body, utf8)


# an RFC 2045 token, a little stricter: what a type, subtype or charset may be
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&.+^_-]{0,63}$")
