"""Templates and outgoing messages.

Templates are Jinja2 files ``<name>.j2`` with the blocks ``subject``, ``text``
and optionally ``html``, rendered with ``StrictUndefined`` so a typo in a
template fails loudly instead of mailing a blank. A configured directory
overrides the shipped templates one file at a time.

Messages are built with :mod:`email.headerregistry` (``policy.SMTP``): every
header value goes through it after control characters are removed, so a
subject carrying CR/LF or encoded garbage cannot add a header.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
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


def _addresses(addrs: Iterable[str]) -> list[Address]:
    out = []
    for addr in addrs:
        clean = strip_header_unsafe(addr).strip()
        local, _, domain = clean.rpartition("@")
        # username/domain rather than addr_spec: an RFC 6532 address with a
        # non-ASCII local part is valid mail, not a parse error.
        out.append(Address(username=local, domain=domain) if local else Address(username=clean))
    return out


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


def _msgid(mid: str) -> str:
    return f"<{strip_header_unsafe(mid).strip()}>"


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
) -> EmailMessage:
    """An outgoing mail from the support address, threaded and loop-safe.

    ``attachments`` keep their content type and charset (a ``text/x-yaml``
    file arrives as one), their names already sanitized on the way in.
    ``references`` longer than 20 ids keep the first (the thread's root) and
    the last 19, as RFC 5322 section 3.6.4 suggests for trimming.
    ``followup_to`` sets ``Mail-Followup-To``: where a group reply goes.
    """
    utf8 = not all(addr.isascii() for addr in (*to, *cc))
    msg = EmailMessage(policy=mailpolicy.SMTPUTF8 if utf8 else mailpolicy.SMTP)
    display = _header_text(from_name or config.support.name)
    local, _, domain = config.support.address.partition("@")
    msg["From"] = Address(display_name=display, username=local, domain=domain)
    msg["To"] = _addresses(to)
    if cc:
        msg["Cc"] = _addresses(cc)
    if reply_to:
        msg["Reply-To"] = _addresses([reply_to])
    if followup_to:
        # not in the stdlib's header registry: an unstructured header with an address
        msg["Mail-Followup-To"] = ", ".join(str(a) for a in _addresses([followup_to]))
    msg["Subject"] = _header_text(rendered.subject)
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = _msgid(message_id)
    if in_reply_to:
        msg["In-Reply-To"] = _msgid(in_reply_to)
    refs = list(dict.fromkeys(r for r in references if r))
    if len(refs) > 20:
        refs = [refs[0], *refs[-19:]]
    if refs:
        msg["References"] = " ".join(_msgid(r) for r in refs)
    if auto is not None:
        msg["Auto-Submitted"] = auto
        # Exchange and others honour this instead of RFC 3834.
        msg["X-Auto-Response-Suppress"] = "All"
    msg["X-Loop"] = config.support.address
    if thread_index:
        msg["Thread-Index"] = thread_index
    if thread_topic:
        msg["Thread-Topic"] = _header_text(thread_topic)
    if ticket_id is not None:
        msg["X-Maild-Ticket"] = str(ticket_id)
    msg.set_content(rendered.text)
    if rendered.html:
        msg.add_alternative(rendered.html, subtype="html")
    for att in attachments:
        maintype, _, subtype = att.content_type.partition("/")
        maintype, subtype = maintype.strip().lower(), subtype.strip().lower()
        if not _TOKEN.match(maintype) or not _TOKEN.match(subtype) or maintype == "multipart":
            maintype, subtype = "application", "octet-stream"
        filename = strip_header_unsafe(att.filename) or "attachment"
        if (maintype, subtype) == ("message", "rfc822"):
            # RFC 2046 5.2.1: never base64; attached as the mail it is, a client opens it
            inner = _as_message(att.content)
            if inner is not None:
                msg.add_attachment(inner, filename=filename)
                continue
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(
            att.content,
            maintype=maintype,
            subtype=subtype,
            filename=filename,
        )
        charset = (att.charset or "").strip()
        if maintype == "text" and _TOKEN.match(charset):
            # the bytes go as they came (base64); the charset says how to read them
            part = list(msg.iter_attachments())[-1]
            part.set_param("charset", charset.lower())
    return msg


def _as_message(raw: bytes) -> EmailMessage | None:
    """A forwarded mail's bytes as a message to attach, or None if they cannot be one."""
    try:
        inner = message_from_bytes(raw, policy=mailpolicy.SMTP)
        inner.as_bytes()  # fails here, not halfway through the outer mail
    except Exception:  # any bytes may arrive: they go as a plain file then
        return None
    return inner if isinstance(inner, EmailMessage) and len(inner.keys()) > 0 else None


# an RFC 2045 token, a little stricter: what a type, subtype or charset may be
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&.+^_-]{0,63}$")
