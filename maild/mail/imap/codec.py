"""The IMAP wire format, without I/O: folder names, UID sets, and reading responses.

Everything here works on plain strings, bytes and the line lists aioimaplib
returns; nothing talks to a server. :mod:`maild.mail.imap.connection` builds
its commands and reads their answers with these.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FetchedMail",
    "astring",
    "changed_uidvalidity",
    "chunks",
    "imap_quote",
    "imap_utf7_decode",
    "imap_utf7_encode",
    "is_exists",
    "mailbox_name",
    "parse_fetch",
    "parse_search",
    "response_text",
    "uid_set",
    "uidvalidity_of",
]


def imap_utf7_encode(name: str) -> str:
    """Encode a folder name in IMAP's modified UTF-7 (RFC 3501 section 5.1.3).

    Printable ASCII stays as is (``&`` becomes ``&-``); every run of other
    characters becomes ``&`` + modified base64 of its UTF-16BE + ``-``.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def imap_utf7_decode(name: str) -> str:
    """Inverse of :func:`imap_utf7_encode`. Raises ``ValueError`` on a malformed name."""
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            raise ValueError(f"unterminated modified UTF-7 run in {name!r}")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            data = chunk.replace(",", "/")
            try:
                out.append(base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"bad modified UTF-7 run {chunk!r} in {name!r}") from exc
        i = end + 1
    return "".join(out)


def imap_quote(text: str) -> str:
    """``text`` as an IMAP quoted string (backslash and double quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_name(name: str) -> str:
    """A folder name as a command argument: modified UTF-7, quoted."""
    return imap_quote(imap_utf7_encode(name))


_ATOM = re.compile(r"^[!#$&'*+\-./0-9:;<=>?@A-Z^_`a-z|~]+$")


def astring(text: str) -> str:
    """An atom when that is safe, else a quoted string (aioimaplib sends user names as is)."""
    return text if _ATOM.match(text) else imap_quote(text)


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP UID set: ``[1, 2, 3, 7]`` -> ``"1:3,7"``. ``uids`` must not be empty."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    """``items`` in slices of at most ``size``, in order."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True, slots=True)
class FetchedMail:
    uid: int
    flags: frozenset[str]
    raw: bytes


_FETCH_LINE = re.compile(rb"^(?:\* )?\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


def parse_fetch(lines: Sequence[Any]) -> list[FetchedMail]:
    """Mails in an aioimaplib ``UID FETCH ... (UID FLAGS BODY.PEEK[])`` response, in UID order.

    aioimaplib returns a header line ending in ``{size}``, the literal as a
    ``bytearray``, then a closing line (which may also carry UID or FLAGS).
    Entries without a UID or a body (unsolicited flag updates, vanished mail)
    are skipped. A leading ``* `` is tolerated: aioimaplib leaves it on when
    it loses track of parentheses.
    """
    mails: dict[int, FetchedMail] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if type(line) is not bytes or not _FETCH_LINE.match(line):
            continue
        meta = line
        body: bytes | None = None
        if line.endswith(b"}") and i < len(lines) and isinstance(lines[i], bytearray):
            body = bytes(lines[i])
            i += 1
            if i < len(lines) and type(lines[i]) is bytes and not _FETCH_LINE.match(lines[i]):
                meta += b" " + lines[i]
                i += 1
        uid = _UID.search(meta)
        if uid is None or body is None:
            continue
        flags = _FLAGS.search(meta)
        names = flags.group(1).decode("ascii", "replace").split() if flags else []
        mails[int(uid.group(1))] = FetchedMail(int(uid.group(1)), frozenset(names), body)
    return [mails[uid] for uid in sorted(mails)]


def parse_search(lines: Sequence[Any]) -> list[int]:
    """The UIDs of an aioimaplib ``UID SEARCH`` response (its untagged lines), sorted."""
    uids: set[int] = set()
    for line in lines[:-1]:  # the last line is the tagged status
        if not isinstance(line, bytes):
            continue
        words = line.split()
        if words[:1] == [b"SEARCH"]:
            words = words[1:]
        if all(word.isdigit() for word in words):
            uids.update(int(word) for word in words)
    return sorted(uids)


def response_text(response: Any) -> str:
    """The tagged status text of an aioimaplib response, for log lines."""
    lines = getattr(response, "lines", None) or [b""]
    last = lines[-1]
    if isinstance(last, bytes | bytearray):
        return bytes(last).decode("utf-8", "replace").strip()
    return str(last)


_EXISTS = re.compile(rb"^(?:\* )?\d+ EXISTS")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


def is_exists(text: bytes) -> bool:
    """An untagged ``n EXISTS``: the server announces new mail."""
    return _EXISTS.match(text) is not None


def changed_uidvalidity(text: bytes, known: int) -> bool:
    """``OK [UIDVALIDITY n]`` with a new ``n``: RFC 3501 2.3.1.1 says a server sends this."""
    found = _UIDVALIDITY.search(text) if text.startswith(b"OK [UIDVALIDITY") else None
    return found is not None and int(found.group(1)) != known


def uidvalidity_of(lines: Sequence[Any]) -> int:
    """The UIDVALIDITY a ``SELECT`` response announces (0 if none)."""
    for line in lines:
        if isinstance(line, bytes):
            found = _UIDVALIDITY.search(line)
            if found:
                return int(found.group(1))
    return 0
