"""Outgoing mail as a client reads it: attachments, followup and references (maild.mail.render)."""

from __future__ import annotations

import email
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from maild.config import Config, parse_config
from maild.core import mailpolicy
from maild.core.subjects import strip_header_unsafe
from maild.mail.render import _TOKEN, OutAttachment, Rendered, _header_text, build_message

CONFIG = parse_config({"support": {"address": "support@example.org", "name": "Support"}})
NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def build(**kwargs: object) -> EmailMessage:
    fields: dict[str, object] = {
        "config": CONFIG,
        "rendered": Rendered("[support #1] Hub is down", "Hello.\n", None),
        "to": ["rosa@pangeo.example"],
        "message_id": "maild-1-x@example.org",
        "in_reply_to": None,
        "references": (),
        "now": NOW,
        "auto": None,
    }
    fields.update(kwargs)
    raw = build_message(**fields).as_bytes()  # type: ignore[arg-type]
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_attachments_keep_their_type_name_and_charset() -> None:
    latin = "name: Zoë\n".encode("iso-8859-1")
    msg = build(
        attachments=[
            OutAttachment("values.yaml", "text/x-yaml", b"replicas: 2\n", "utf-8"),
            OutAttachment("notes.txt", "text/plain", latin, "ISO-8859-1"),
            OutAttachment("error.png", "image/png", b"\x89PNG"),
            OutAttachment("raw.log", "text/plain", b"plain bytes\n"),
        ]
    )
    parts = {p.get_filename(): p for p in msg.iter_attachments()}
    assert [(n, p.get_content_type(), p.get_content_charset()) for n, p in parts.items()] == [
        ("values.yaml", "text/x-yaml", "utf-8"),
        ("notes.txt", "text/plain", "iso-8859-1"),
        ("error.png", "image/png", None),
        ("raw.log", "text/plain", None),
    ]
    assert parts["notes.txt"].get_content() == "name: Zoë\n"  # a client decodes it right
    assert parts["raw.log"].get_payload(decode=True) == b"plain bytes\n"  # bytes as they came


@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=20)))
def test_a_hostile_type_or_charset_never_adds_a_header(ctype: str, charset: str | None) -> None:
    msg = build(attachments=[OutAttachment("x.bin", ctype, b"data", charset)])
    [part] = list(msg.iter_attachments())
    allowed = {"Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "MIME-Version"}
    assert set(part.keys()) <= allowed
    assert part.get_payload(decode=True) == b"data"
    assert msg["Bcc"] is None


def test_a_forwarded_mail_stays_a_mail_the_client_opens() -> None:
    inner = (
        b"From: Rosa Rep <rep@pangeo.example>\r\nSubject: Quota warning\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nThe quota is at 95 %, gr\xc3\xbc\xc3\x9fe.\r\n"
    )
    msg = build(attachments=[OutAttachment("Quota warning.eml", "message/rfc822", inner)])
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] in (None, "7bit", "8bit")  # never base64
    forwarded = part.get_content()
    assert forwarded["Subject"] == "Quota warning"
    assert "grüße" in forwarded.get_content()
    # bytes that are no mail at all still arrive, as a file
    [junk] = list(
        build(attachments=[OutAttachment("x.eml", "message/rfc822", b"")]).iter_attachments()
    )
    assert junk.get_content_type() == "application/octet-stream"


@pytest.mark.parametrize(
    "body",
    [b"y" * 3000 + b"\r\n", b"a NUL \x00 in it\r\n"],
    ids=["a line of 3000 octets", "NUL"],
)
def test_a_forwarded_mail_that_is_no_sound_smtp_text_goes_as_a_file(body: bytes) -> None:
    """A forwarded part goes as 8bit text: one a relay would refuse goes in base64."""
    inner = b"From: Rosa Rep <rep@pangeo.example>\r\nSubject: Log\r\n\r\n" + body
    fields = {"attachments": [OutAttachment("log.eml", "message/rfc822", inner)]}
    msg = build(**fields)
    [part] = list(msg.iter_attachments())
    assert part.get_content_type() == "application/octet-stream"
    assert part.get_content() == inner  # nothing lost: the stewards can open the file
    raw = msg.as_bytes()
    assert b"\x00" not in raw and max(len(line) for line in raw.splitlines()) <= 998


def test_group_replies_go_to_the_support_address() -> None:
    msg = build(reply_to="support@example.org", followup_to="support@example.org")
    assert msg["Mail-Followup-To"] == "support@example.org"
    assert msg["Reply-To"].addresses[0].addr_spec == "support@example.org"
    assert build()["Mail-Followup-To"] is None


def test_long_references_keep_the_root_and_the_newest() -> None:
    refs = [f"m{i}@x" for i in range(30)]
    msg = build(references=refs, in_reply_to="m29@x")
    kept = str(msg["References"]).split()
    assert kept == ["<m0@x>", *(f"<m{i}@x>" for i in range(11, 30))]
    assert msg["In-Reply-To"] == "<m29@x>"


def test_a_strangers_huge_or_non_ascii_message_id_is_not_threaded_under() -> None:
    """RFC 5322 sets no length on a Message-ID: ours must stay within 998 octets a
    line and be ASCII in mail that is not SMTPUTF8, whatever we thread under."""
    huge, accented = "x" * 990 + "@pangeo.example", "caf\u00e9@pangeo.example"
    msg = build(references=["m0@x", huge, accented, "m1@x"], in_reply_to=huge)
    assert msg["In-Reply-To"] is None
    assert str(msg["References"]).split() == ["<m0@x>", "<m1@x>"]
    raw = msg.as_bytes()
    assert max(len(line) for line in raw.splitlines()) <= 998
    assert raw.split(b"\n\n", 1)[0].isascii()


# --- the bytes against the stdlib's EmailMessage -------------------------------------
#
# build_message writes the bytes itself. What a client parses back must be what
# the stdlib's own EmailMessage (policy.SMTP header objects, set_content and
# add_attachment: how maild built mail before) gives for the same values.


def stdlib_message(
    *,
    config: Config,
    rendered: Rendered,
    to: Sequence[str],
    cc: Sequence[str] = (),
    message_id: str,
    in_reply_to: str | None,
    references: Sequence[str],
    now: datetime,
    auto: str | None,
    from_name: str | None = None,
    reply_to: str | None = None,
    followup_to: str | None = None,
    thread_index: str | None = None,
    thread_topic: str | None = None,
    ticket_id: int | None = None,
    attachments: Sequence[OutAttachment] = (),
) -> bytes:
    """The mail as maild built it with the stdlib's header objects (the oracle)."""

    def addresses(addrs: Iterable[str]) -> list[Address]:
        out = []
        for addr in addrs:
            clean = strip_header_unsafe(addr).strip()
            local, _, domain = clean.rpartition("@")
            out.append(Address(username=local, domain=domain) if local else Address(username=clean))
        return out

    def msgid(mid: str) -> str:
        return f"<{strip_header_unsafe(mid).strip()}>"

    utf8 = not all(addr.isascii() for addr in (*to, *cc))
    msg = EmailMessage(policy=mailpolicy.SMTPUTF8 if utf8 else mailpolicy.SMTP)
    display = _header_text(from_name or config.support.name)
    local, _, domain = config.support.address.partition("@")
    msg["From"] = Address(display_name=display, username=local, domain=domain)
    msg["To"] = addresses(to)
    if cc:
        msg["Cc"] = addresses(cc)
    if reply_to:
        msg["Reply-To"] = addresses([reply_to])
    if followup_to:
        msg["Mail-Followup-To"] = ", ".join(str(a) for a in addresses([followup_to]))
    msg["Subject"] = _header_text(rendered.subject)
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["Message-ID"] = msgid(message_id)
    if in_reply_to:
        msg["In-Reply-To"] = msgid(in_reply_to)
    refs = list(dict.fromkeys(r for r in references if r))
    if len(refs) > 20:
        refs = [refs[0], *refs[-19:]]
    if refs:
        msg["References"] = " ".join(msgid(r) for r in refs)
    if auto is not None:
        msg["Auto-Submitted"] = auto
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
            try:
                inner = email.message_from_bytes(att.content, policy=mailpolicy.SMTP)
                inner.as_bytes()
            except Exception:
                inner = None
            if isinstance(inner, EmailMessage) and len(inner.keys()) > 0:
                msg.add_attachment(inner, filename=filename)
                continue
            maintype, subtype = "application", "octet-stream"
        msg.add_attachment(att.content, maintype=maintype, subtype=subtype, filename=filename)
        charset = (att.charset or "").strip()
        if maintype == "text" and _TOKEN.match(charset):
            part = list(msg.iter_attachments())[-1]
            part.set_param("charset", charset.lower())
    return msg.as_bytes()


ADDRESS_HEADERS = {"from", "to", "cc", "reply-to"}
TEXT_HEADERS = {"subject", "thread-topic"}


def summary(msg: EmailMessage, skip: Iterable[str] = (), filenames: bool = True) -> list[object]:
    """What a client reads in a parsed mail: headers, addresses, every part's type,
    parameters, file name and content (a forwarded mail's own summary).

    Display names, subjects and topics are compared without their whitespace:
    the stdlib cuts a long display name into encoded words in the middle of a
    word, which its own parser reads as a space (RFC 2047 says it is none); it
    drops the space between two non-ASCII words of a subject that it encodes
    separately, and may start a folded value with a space. The test checks ours
    against the text exactly.
    """
    out: list[object] = []
    for name in msg.keys():
        key = name.lower()
        if key in ("mime-version", "content-type", *skip):
            continue
        value = msg[name]
        if key in ADDRESS_HEADERS:
            addrs = value.addresses
            found = [("".join(a.display_name.split()), a.username, a.domain) for a in addrs]
            out.append((key, found))
        elif key == "references":  # the stdlib encodes an id longer than a line
            out.append((key, str(value).split()))
        elif key in TEXT_HEADERS:
            out.append((key, "".join(str(value).split())))
        else:
            out.append((key, str(value)))
    out.sort(key=repr)
    for part in msg.walk():
        ctype = part["Content-Type"]  # a forwarded mail may have none
        params = {k: v for k, v in ctype.params.items() if k != "boundary"} if ctype else {}
        item: list[object] = [part.get_content_type(), params, part.get_content_disposition()]
        item.append(part.get_filename() if filenames else None)
        if part.is_multipart():
            item.append(len(part.get_payload()))
        elif part.get_content_type() == "message/rfc822":
            item.append(summary(part.get_content()))
        elif part.get_content_maintype() == "text" and part.get_filename() is None:
            item.append(part.get_content())
        else:
            item.append(part.get_payload(decode=True))
        out.append(item)
    return out


def words(text: str) -> list[str]:
    """The words of a display name: the stdlib's parser collapses its whitespace."""
    return text.split()


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# text that is hard to put in a header: specials, quotes, encoded-word lookalikes,
# CR/LF, long words, runs of spaces, non-ASCII of every width
PIECES = [
    " ", "  ", ",", "@", '"', "\\", "(", ")", "<", ">", ";", ":", ".", "[", "]", "=?",
    "?=", "_", "=", "\r\n", "\n", "\r", "\t", "\x00", "\u2028", "é", "Zoë", "Łódź",
    "日本語", "😀", "\u200b", "\u00a0", "Re:", "[support #42]", "Bcc: x@y.z",
    "=?utf-8?q?Hub_down=0D=0ABcc:_victim@example.com?=", "=?utf-8?b?w7xAej4=?=",
    "=?iso-8859-1?q?caf=E9?=", "x" * 90, "é" * 40,
]  # fmt: skip
hard_text = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=12).map(
    "".join
)
LINES = [
    "", "From here on", "From ", ".", "..", ". ", "> quoted", "-- ", "Grüße",
    "=3D", "=", "x" * 77, "x" * 78, "x" * 79, "word " * 40, "é" * 50, "日本" * 30,
    "trailing space ", "tab\there", "\x0c", "end.",
]  # fmt: skip
body_text = st.lists(st.one_of(st.sampled_from(LINES), st.text(max_size=30)), max_size=25).flatmap(
    lambda lines: st.sampled_from(["\n", "\r\n"]).map(lambda sep: sep.join(lines))
)
# a local part with a dot at an end or two in a row: the stdlib left it bare and
# cannot parse what it wrote (see the test below), so the oracle gets none
local_part = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True),
    st.text(
        st.characters(exclude_characters="@", exclude_categories=["Cs"]), min_size=1, max_size=15
    ),
).filter(lambda lp: not (lp.startswith(".") or lp.endswith(".") or ".." in lp))
domain = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True) | st.just(
    "exämple.net"
)
address = st.builds(lambda lp, d: f"{lp}@{d}", local_part, domain)
INNER_MAIL = (
    b"From: Rosa Rep <rep@pangeo.example>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
    b"Message-ID: <inner@pangeo.example>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"\r\nThe quota is at 95 %, gr\xc3\xbc\xc3\x9fe.\r\nFrom here\r\n"
)
attachment = st.builds(
    OutAttachment,
    hard_text,
    st.sampled_from(
        [
            "text/plain",
            "text/x-yaml",
            "image/png",
            "application/pdf",
            "message/rfc822",
            "multipart/mixed",
            "text/html; x",
            "TEXT/Plain",
            "",
        ]
    ),  # fmt: skip
    st.one_of(st.binary(max_size=300), st.just(INNER_MAIL), st.just(b"")),
    st.one_of(st.none(), st.sampled_from(["utf-8", "ISO-8859-1", "bad charset", ""])),
)
message_id = st.from_regex(r"[A-Za-z0-9.$_-]{1,30}@[a-z0-9.-]{1,20}", fullmatch=True)


@settings(max_examples=300, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    subject=hard_text,
    from_name=st.one_of(st.none(), hard_text),
    thread_topic=st.one_of(st.none(), hard_text),
    text=body_text,
    html=st.one_of(st.none(), body_text),
    to=st.lists(address, min_size=1, max_size=3),
    cc=st.lists(address, max_size=2),
    refs=st.lists(st.one_of(message_id, st.just("x" * 90 + "@long.example")), max_size=25),
    attachments=st.lists(attachment, max_size=3),
    auto=st.sampled_from([None, "auto-replied", "auto-generated"]),
    followup=st.booleans(),
)
def test_the_bytes_parse_back_as_the_stdlib_message_would(
    subject: str,
    from_name: str | None,
    thread_topic: str | None,
    text: str,
    html: str | None,
    to: list[str],
    cc: list[str],
    refs: list[str],
    attachments: list[OutAttachment],
    auto: str | None,
    followup: bool,
) -> None:
    fields: dict[str, Any] = {
        "config": CONFIG,
        "rendered": Rendered(subject, text, html),
        "to": to,
        "cc": cc,
        "message_id": "maild-42-0a1b2c@example.org",
        "in_reply_to": refs[-1] if refs else None,
        "references": refs,
        "now": NOW,
        "auto": auto,
        "from_name": from_name,
        "reply_to": "support@example.org" if followup else None,
        "followup_to": "support@example.org" if followup else None,
        "thread_index": "AQHZabc=",
        "thread_topic": thread_topic,
        "ticket_id": 42,
        "attachments": attachments,
    }
    raw = build_message(**fields).as_bytes()

    got = parse(raw)
    utf8 = not all(a.isascii() for a in (*to, *cc))
    display = _header_text(from_name or CONFIG.support.name)
    kept = refs if len(set(refs)) <= 20 else [refs[0], *list(dict.fromkeys(refs))[-19:]]
    assert got["References"] == (" ".join(f"<{r}>" for r in dict.fromkeys(kept)) or None)
    names = [(strip_header_unsafe(a.filename) or "attachment").strip() for a in attachments]
    assert [p.get_filename() for p in got.iter_attachments()] == names
    [sender] = got["From"].addresses
    assert sender.addr_spec == "support@example.org"
    assert got["Subject"] == _header_text(subject)
    assert got["Thread-Topic"] == (_header_text(thread_topic) if thread_topic else None)
    if not utf8:  # else the stdlib reads UTF-8 names as bytes
        assert words(sender.display_name) == words(display)
    # and the bytes are well-formed mail: CRLF only, no line over 998 octets,
    # one header each where RFC 5322 allows one (nothing injected)
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    names = [k.lower() for k in got]
    assert all(names.count(h) == 1 for h in ("from", "to", "subject", "message-id", "date"))
    assert "bcc" not in names

    # and as the stdlib's builder wrote it, where that builder wrote well-formed
    # mail: with SMTPUTF8 and C0/C1 controls in a long display name its folding
    # can end the header block early (its To: then reads as body), ours cannot
    expected = parse(stdlib_message(**fields))
    if "to" not in {k.lower() for k in expected}:
        return
    # with UTF-8 headers the stdlib drops the quotes around a display name with
    # specials, and the address is lost: ours keeps them
    skip = ["from"] if utf8 and any(c in display for c in '()<>@,:;."[]\\') else []
    # the stdlib decodes an encoded word in a quoted file name: ours are never
    filenames = not any("=?" in a.filename for a in attachments)
    assert summary(got, skip, filenames) == summary(expected, skip, filenames)


@pytest.mark.parametrize("local", [".rosa", "rosa.", "ro..sa", "ro sa", 'ro"sa', "rosa"])
def test_a_local_part_that_is_no_dot_atom_is_quoted(local: str) -> None:
    msg = build(to=[f"{local}@pangeo.example"], cc=["c@pangeo.example"])
    [to] = msg["To"].addresses
    assert (to.username, to.domain) == (local, "pangeo.example")
