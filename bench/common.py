"""Shared helpers for the benchmarks: a config, a store, realistic mail, timing, tables.

Mail is generated from a seed, so two runs with the same ``--seed`` ingest
byte-identical mail. It is built by hand (not with :mod:`email`) so that the
generator's own cost stays out of the way and every header looks the way real
clients write it: CRLF line ends, folded ``References``, RFC 2047 encoded
words for non-ASCII names and subjects, RFC 2231 file names, quoted-printable
and base64 bodies.

Importing this module puts the repository root on ``sys.path``, so the
benchmarks run from a checkout without installing maild.
"""

from __future__ import annotations

import base64
import html
import quopri
import random
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from maild.cli.labconfig import Lab, LabCommunity, lab_config  # noqa: E402  (needs REPO)

__all__ = [
    "BENCH_LAB",
    "COMMUNITY_DOMAINS",
    "REPO",
    "STEWARDS",
    "SUPPORT",
    "TAG",
    "GeneratedMail",
    "MailSpec",
    "Person",
    "Timer",
    "build_mail",
    "generate_mails",
    "make_people",
    "print_table",
    "random_subject",
    "rate",
    "time_each",
    "write_config",
]

SUPPORT = "support@example.org"
TAG = "support"

# The tests' lab with one more community, and no limit on automatic mail a run reaches.
BENCH_LAB = Lab(
    communities=(*Lab().communities, LabCommunity("xarray", ("xarray.example",))),
    automatic_limits=True,
)

# (domain, weight): three configured communities and a few that are not.
COMMUNITY_DOMAINS: tuple[tuple[str, int], ...] = (
    ("pangeo.example", 30),
    ("jupyter.example", 25),
    ("xarray.example", 15),
    ("lab.pangeo.example", 5),
    ("uni-hamburg.example", 10),
    ("gmail.example", 10),
    ("outlook.example", 5),
)

STEWARDS: tuple[tuple[str, str], ...] = (
    ("Alice Liddell", "alice@example.org"),
    ("Bob Builder", "bob@example.org"),
    ("Carol", "carol@example.org"),
)


def write_config(root: Path, db: Path, ack_rate: int = 1_000_000) -> Path:
    """Write ``maild.toml`` into ``root`` for a SQLite store at ``db``; return its path.

    ``ack_rate`` defaults to a value no run reaches, so every new request is
    acknowledged and the benchmark measures the full amount of work per mail.
    """
    path = root / "maild.toml"
    path.write_text(lab_config(db, ack_rate=ack_rate, lab=BENCH_LAB))
    return path


# -- people and words --------------------------------------------------------

_FIRST_ASCII = (
    "Anna Ben Chloe David Emma Felix Grace Henry Iris Jack Kate Liam Mia Noah Olivia "
    "Paul Quinn Rosa Sam Tara Umar Vera Will Xena Yusuf Zoe Ravi Priya Chen Wei "
    "Tom Lucy Hannah Oscar Nina Leo Ada Alan Grace Linus"
).split()
_LAST_ASCII = (
    "Smith Jones Brown Taylor Wilson Evans Thomas Roberts Walker Wright Patel Khan "
    "Nguyen Kim Garcia Rossi Weber Novak Larsen Dubois Silva Ito Sato Clark Hughes"
).split()
# Names that need RFC 2047 in a header.
_FIRST_INTL = ("José", "Zoë", "Łukasz", "Søren", "Jürgen", "Ana María", "Çağla", "Björn", "Dvořák")
_LAST_INTL = ("Müller", "Nuñez", "Wójcik", "Østergaard", "Gonçalves", "Šimková", "Öztürk", "Lévy")
_CJK = ("田中 太郎", "李 娜", "김 민준", "Андрей Смирнов", "Γιώργος Παπαδόπουλος")

_PRODUCTS = (
    "JupyterHub",
    "the hub",
    "Dask gateway",
    "the binder",
    "our cluster",
    "the S3 bucket",
    "the staging hub",
    "the notebook server",
    "the GPU nodes",
    "the shared filesystem",
)
_PROBLEMS = (
    "returns 502",
    "is very slow",
    "times out on login",
    "cannot spawn servers",
    "lost my home directory",
    "shows a 403 error",
    "runs out of memory",
    "does not mount the bucket",
    "kills my kernel",
    "rejects my token",
    "hangs at 'Server requested'",
    "is down",
)
_TOPICS = (
    "Request: more memory for {who}",
    "{product} {problem}",
    "{product} {problem} since {when}",
    "Access for {who} to {product}",
    "Quota increase for {who}",
    "Question about {product}",
    "Billing question for {month}",
    "New user onboarding: {who}",
    "{product}: {problem} ({n} users affected)",
    "Cannot log in to {product}",
    "Help with {product} image {n}",
    "Workshop on {month} {day}: need {n} seats",
)
# Short subjects many people use; they make reply-subject matching meet many tickets.
_COMMON_SUBJECTS = (
    "Help",
    "Question",
    "Password reset",
    "Access request",
    "Hub down",
    "urgent",
    "Problem",
)
_INTL_SUBJECTS = (
    "Problème de connexion à {product}",
    "Frage zu {product}: Größe des Speichers",
    "Zugang für {who} – bitte prüfen",
    "{product} funktioniert nicht (Fehler „{n}“)",
    "Проблема с {product}",
    "{product} 无法登录",
    "Solicitud de acceso: {who} ✔",
)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August")
_WHEN = ("this morning", "yesterday", "Monday", "the upgrade", "last night", "the weekend")

_SENTENCES = (
    "Since {when} {product} {problem} for me and my colleagues.",
    "We are running a workshop next week and need this fixed before {month} {day}.",
    "I tried clearing the browser cache and logging in again, without luck.",
    "The error message says: ConnectionResetError: [Errno 104] Connection reset by peer.",
    "Could you please have a look at the logs around {hour}:{minute} UTC?",
    "Our group has {n} users on {product} and all of them see the same behaviour.",
    "Is there a way to raise the memory limit to {n} GB for our course?",
    "I attached the output of kubectl describe pod, in case it helps.",
    "Thanks a lot for the quick reply, that fixed it for most of us.",
    "Unfortunately the problem came back after the restart.",
    "The image we use is pangeo/pangeo-notebook:2026.{n}.1.",
    "It works from the university network but not from home.",
    "Please add {who} to the allow list, she starts on Monday.",
    "We can live with a workaround for now, but a real fix would be great.",
    "Let me know if you need anything else from our side.",
    "I am not sure whether this is related to the maintenance announced last week.",
    "The notebook reaches about {n} percent of the memory limit and then the kernel dies.",
)
_INTL_SENTENCES = (
    "Vielen Dank für die schnelle Antwort, das Problem tritt aber weiterhin auf.",
    "Merci beaucoup, ça marche à nouveau après la mise à jour.",
    "Gracias por la ayuda, ¿podrían revisar también el acceso de mi compañera?",
    "Spasibo! Всё работает, но медленно.",
)
_CLIENTS = (
    "Mozilla Thunderbird 128.5.0",
    "Apple Mail (2.3776.700.51)",
    "Microsoft Outlook 16.0",
    "Roundcube Webmail/1.6.9",
    "K-9 Mail for Android",
)


@dataclass(frozen=True, slots=True)
class Person:
    """A correspondent: display name (maybe non-ASCII) and a lowercase address."""

    name: str
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


def _weighted(rng: random.Random, items: Sequence[tuple[str, int]]) -> str:
    return rng.choices([d for d, _ in items], weights=[w for _, w in items])[0]


def make_people(rng: random.Random, count: int) -> list[Person]:
    """``count`` distinct people spread over the community domains, about 20 % non-ASCII."""
    people: list[Person] = []
    seen: set[str] = set()
    reps = [
        Person("Rosa Rep", "rep@pangeo.example"),
        Person("Rick Rep", "rep2@pangeo.example"),
        Person("Jo Lead", "lead@jupyter.example"),
    ]
    for rep in reps[: max(0, min(3, count // 10))]:
        people.append(rep)
        seen.add(rep.address)
    while len(people) < count:
        roll = rng.random()
        if roll < 0.02:
            name = rng.choice(_CJK)
        elif roll < 0.12:
            name = f"{rng.choice(_FIRST_INTL)} {rng.choice(_LAST_INTL)}"
        else:
            name = f"{rng.choice(_FIRST_ASCII)} {rng.choice(_LAST_ASCII)}"
        ascii_name = name.encode("ascii", "ignore").decode().lower().split()
        stem = ".".join(ascii_name) or "user"
        domain = _weighted(rng, COMMUNITY_DOMAINS)
        address = f"{stem}{rng.randrange(1, 10_000)}@{domain}"
        if address in seen:
            continue
        seen.add(address)
        people.append(Person(name, address))
    return people


def _fill(rng: random.Random, template: str, people: Sequence[Person] = ()) -> str:
    who = rng.choice(people).name.split()[0] if people else rng.choice(_FIRST_ASCII)
    return template.format(
        who=who,
        product=rng.choice(_PRODUCTS),
        problem=rng.choice(_PROBLEMS),
        when=rng.choice(_WHEN),
        month=rng.choice(_MONTHS),
        day=rng.randrange(1, 29),
        n=rng.randrange(2, 400),
        hour=f"{rng.randrange(24):02d}",
        minute=f"{rng.randrange(60):02d}",
    )


def random_subject(rng: random.Random, intl: bool = False) -> str:
    """A request subject: mostly specific, sometimes a common one-word subject."""
    if intl:
        return _fill(rng, rng.choice(_INTL_SUBJECTS))
    if rng.random() < 0.08:
        return rng.choice(_COMMON_SUBJECTS)
    subject = _fill(rng, rng.choice(_TOPICS))
    return subject[0].upper() + subject[1:]


def _paragraphs(rng: random.Random, size: int, intl: bool) -> list[str]:
    """Paragraphs of plausible support text, about ``size`` characters in all."""
    out: list[str] = []
    total = 0
    while total < size:
        count = rng.randrange(1, 5)
        sentences = []
        for _ in range(count):
            if intl and rng.random() < 0.3:
                sentences.append(rng.choice(_INTL_SENTENCES))
            else:
                sentences.append(_fill(rng, rng.choice(_SENTENCES)))
        para = " ".join(sentences)
        out.append(para)
        total += len(para) + 2
    return out


# -- building one mail -------------------------------------------------------


@dataclass(slots=True)
class MailSpec:
    """What one generated mail says; :func:`build_mail` turns it into bytes."""

    sender: Person
    to: list[Person]
    subject: str
    date: datetime
    message_id: str
    body: list[str]
    cc: list[Person] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    quote: list[str] | None = None  # the quoted mail's paragraphs
    quote_from: Person | None = None
    quote_date: datetime | None = None
    signature: str | None = None
    html: bool = False
    attachment: tuple[str, str, bytes] | None = None  # filename, content type, content
    encoding: Literal["7bit", "8bit", "quoted-printable", "base64"] = "7bit"
    client: str = _CLIENTS[0]
    thread_index: str | None = None
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


def _header(value: str) -> str:
    """RFC 2047 encode a header value if it is not ASCII."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode()


def _addr(person: Person) -> str:
    return formataddr((person.name, person.address), charset="utf-8")


def _fold_ids(name: str, ids: Sequence[str]) -> str:
    return f"{name}: " + "\r\n ".join(f"<{i}>" for i in ids)


def _wrap(paragraphs: Iterable[str], prefix: str = "", width: int = 72) -> list[str]:
    """Greedy word wrap (textwrap is the slowest part of the generator otherwise)."""
    lines: list[str] = []
    for para in paragraphs:
        line = prefix
        for word in para.split():
            if len(line) > len(prefix) and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = prefix
            line = f"{line} {word}" if len(line) > len(prefix) else line + word
        lines.append(line)
        lines.append(prefix.rstrip())
    return lines


def _plain_text(spec: MailSpec) -> str:
    lines = _wrap(spec.body)
    if spec.signature:
        lines += ["-- ", *spec.signature.splitlines()]
    if spec.quote is not None and spec.quote_from is not None and spec.quote_date is not None:
        when = spec.quote_date.strftime("%a, %d %b %Y at %H:%M")
        lines += ["", f"On {when}, {spec.quote_from.name} <{spec.quote_from.address}> wrote:"]
        lines += _wrap(spec.quote, "> ")
    return "\n".join(lines).rstrip("\n") + "\n"


def _html_text(spec: MailSpec) -> str:
    parts = ['<html><head><meta charset="utf-8"></head><body>']
    parts += [f"<p>{html.escape(p)}</p>" for p in spec.body]
    if spec.signature:
        sig = "<br>".join(html.escape(s) for s in spec.signature.splitlines())
        parts.append(f'<div class="signature">-- <br>{sig}</div>')
    if spec.quote is not None and spec.quote_from is not None and spec.quote_date is not None:
        when = spec.quote_date.strftime("%a, %d %b %Y at %H:%M")
        parts.append(
            f"<div>On {when}, {html.escape(spec.quote_from.name)} "
            f'&lt;{spec.quote_from.address}&gt; wrote:</div><blockquote type="cite">'
        )
        parts += [f"<p>{html.escape(p)}</p>" for p in spec.quote]
        parts.append("</blockquote>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _encode_body(text: str, encoding: str) -> tuple[str, bytes]:
    """(charset, transfer-encoded body with CRLF line ends) for a text part."""
    data = text.encode("utf-8")
    if text.isascii() and encoding != "base64":
        return "us-ascii", data.replace(b"\n", b"\r\n")
    if encoding == "base64":
        return "utf-8", base64.encodebytes(data).replace(b"\n", b"\r\n")
    if encoding == "8bit":
        return "utf-8", data.replace(b"\n", b"\r\n")
    return "utf-8", quopri.encodestring(data).replace(b"\n", b"\r\n")


def _text_part(text: str, subtype: str, encoding: str) -> bytes:
    charset, body = _encode_body(text, encoding)
    cte = "7bit" if charset == "us-ascii" else encoding if encoding != "7bit" else "8bit"
    head = (
        f'Content-Type: text/{subtype}; charset="{charset}"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _boundary(spec: MailSpec, kind: str) -> str:
    return f"=_{kind}_{zlib.crc32(spec.message_id.encode()):010d}"


def _attachment_part(filename: str, ctype: str, content: bytes) -> bytes:
    if filename.isascii():
        disp = f'attachment; filename="{filename}"'
        name = f'; name="{filename}"'
    else:
        from urllib.parse import quote

        disp = f"attachment; filename*=utf-8''{quote(filename)}"
        name = ""
    head = (
        f"Content-Type: {ctype}{name}\r\n"
        f"Content-Disposition: {disp}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + base64.encodebytes(content).replace(b"\n", b"\r\n")


def _multipart(subtype: str, boundary: str, parts: Sequence[bytes]) -> bytes:
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()]
    if subtype == "mixed":
        out.append(b"This is a multi-part message in MIME format.\r\n")
    for part in parts:
        out.append(f"--{boundary}\r\n".encode())
        out.append(part if part.endswith(b"\r\n") else part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out)


def build_mail(spec: MailSpec) -> bytes:
    """The raw bytes (CRLF) of the mail ``spec`` describes."""
    date = format_datetime(spec.date)
    host = spec.sender.domain
    ip = f"192.0.2.{zlib.crc32(host.encode()) % 250 + 1}"
    headers = [
        f"Return-Path: <{spec.sender.address}>",
        f"Received: from mail.{host} (mail.{host} [{ip}])\r\n"
        f"\tby mx.example.org (Postfix) with ESMTPS id {spec.message_id[:10].upper()}\r\n"
        f"\tfor <{SUPPORT}>; {date}",
        f"Received: from [10.0.0.{len(spec.sender.address) % 250}] (unknown)\r\n"
        f"\tby mail.{host} with ESMTPSA; {date}",
        f"Authentication-Results: mx.example.org; dkim=pass header.d={host};\r\n"
        f"\tspf=pass smtp.mailfrom={spec.sender.address}",
        f"From: {_addr(spec.sender)}",
        "To: " + ", ".join(_addr(p) for p in spec.to),
    ]
    if spec.cc:
        headers.append("Cc: " + ", ".join(_addr(p) for p in spec.cc))
    headers += [
        f"Subject: {_header(spec.subject)}",
        f"Date: {date}",
        f"Message-ID: <{spec.message_id}>",
    ]
    if spec.in_reply_to:
        headers.append(f"In-Reply-To: <{spec.in_reply_to}>")
    if spec.references:
        headers.append(_fold_ids("References", spec.references))
    if spec.thread_index:
        headers.append(f"Thread-Index: {spec.thread_index}")
    headers += [f"{k}: {v}" for k, v in spec.extra_headers]
    headers += [f"User-Agent: {spec.client}", "MIME-Version: 1.0", "Content-Language: en-US"]

    text = _text_part(_plain_text(spec), "plain", spec.encoding)
    body = text
    if spec.html:
        body = _multipart(
            "alternative",
            _boundary(spec, "alt"),
            [text, _text_part(_html_text(spec), "html", "quoted-printable")],
        )
    if spec.attachment is not None:
        filename, ctype, content = spec.attachment
        body = _multipart(
            "mixed", _boundary(spec, "mix"), [body, _attachment_part(filename, ctype, content)]
        )
    return ("\r\n".join(headers) + "\r\n").encode("ascii") + body


# -- a whole mailbox of threads ----------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratedMail:
    """One generated mail and what the benchmark expects maild to do with it.

    ``thread`` numbers threads from 0 in the order their first mail arrives, so
    the first mail of thread ``k`` should create ticket ``k + 1`` in an empty
    store. ``via`` is the threading rule a reply is meant to match.
    """

    raw: bytes
    when: datetime
    thread: int
    position: int
    message_id: str
    via: Literal["new", "references", "subject-tag", "reply-subject"]


@dataclass(slots=True)
class _Thread:
    start: datetime
    requester: Person
    subject: str
    colleagues: list[Person]
    length: int
    intl: bool
    number: int = 0  # the ticket number it should get


_LENGTH_WEIGHTS = (30, 25, 18, 12, 9, 6)  # threads of 1..6 messages
_ATTACHMENTS = (
    ("kubectl-describe.txt", "text/plain"),
    ("screenshot.png", "image/png"),
    ("error.log", "text/plain"),
    ("Übersicht_Kosten.pdf", "application/pdf"),
    ("environment.yml", "application/x-yaml"),
)


def _message_id(rng: random.Random, person: Person, when: datetime) -> str:
    token = f"{rng.getrandbits(64):016x}"
    return f"{int(when.timestamp())}.{token}@{person.domain}"


def _zone(rng: random.Random) -> timezone:
    return timezone(timedelta(hours=rng.choice((-8, -5, 0, 1, 2, 5.5, 9))))


def generate_mails(
    n: int, seed: int, start: datetime | None = None, senders: int | None = None
) -> list[GeneratedMail]:
    """``n`` mails in threads of 1-6, sorted by arrival time.

    Each thread is a request followed by replies (requester ~55 %, a steward
    ~30 %, a colleague on Cc ~15 %) that carry In-Reply-To/References and a
    ``Re:`` subject. Some replies carry only what a real client would leave
    when the references are lost: ~15 % of requester replies answer our
    acknowledgment (unknown Message-ID, ``[support #N]`` in the subject) and
    ~5 % have no references at all (``Re:`` subject only). About ``n / 3``
    distinct senders (~12 % with non-ASCII names), 40 % multipart/alternative
    with HTML, 10 % with an attachment, ~8 % non-ASCII (RFC 2047) subjects,
    70 % of replies quote the previous mail ("On ... wrote:" and ``>`` lines);
    1-8 KB each (a few quote-heavy ones up to ~13 KB).
    """
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    # of a pool of 2n/3 people, about n/3 end up sending something
    people = make_people(rng, senders or max(10, n * 2 // 3))
    span = timedelta(days=max(1.0, n / 100))  # about 100 mails a day

    threads: list[_Thread] = []
    total = 0
    while total < n:
        length = min(rng.choices(range(1, 7), weights=_LENGTH_WEIGHTS)[0], n - total)
        requester = rng.choice(people)
        intl_subject = rng.random() < 0.08
        colleagues = []
        if rng.random() < 0.3:
            same = [p for p in rng.sample(people, min(20, len(people))) if p != requester]
            colleagues = same[: rng.randrange(1, 3)]
        threads.append(
            _Thread(
                start=start + span * rng.random(),
                requester=requester,
                subject=random_subject(rng, intl_subject),
                colleagues=colleagues,
                length=length,
                intl=intl_subject or not requester.name.isascii(),
            )
        )
        total += length
    threads.sort(key=lambda t: t.start)
    # Reply-subject matching is only unambiguous when the requester has one
    # thread of that subject; others keep their references.
    subject_count: dict[tuple[str, str], int] = {}
    for number, thread in enumerate(threads, start=1):
        thread.number = number
        key = (thread.requester.address, thread.subject.casefold())
        subject_count[key] = subject_count.get(key, 0) + 1

    out: list[GeneratedMail] = []
    for index, thread in enumerate(threads):
        out.extend(_thread_mails(rng, index, thread, subject_count, people))
    out.sort(key=lambda m: (m.when, m.thread, m.position))
    return out


def _thread_mails(
    rng: random.Random,
    index: int,
    thread: _Thread,
    subject_count: dict[tuple[str, str], int],
    people: Sequence[Person],
) -> list[GeneratedMail]:
    support = Person("Example Support", SUPPORT)
    mails: list[GeneratedMail] = []
    when = thread.start
    chain: list[str] = []
    previous: MailSpec | None = None
    unique_subject = subject_count[(thread.requester.address, thread.subject.casefold())] == 1
    steward = Person(*rng.choice(STEWARDS))
    for position in range(thread.length):
        via: Literal["new", "references", "subject-tag", "reply-subject"] = "new"
        if position == 0:
            sender = thread.requester
            to, cc = [support], list(thread.colleagues)
            subject = thread.subject
        else:
            when += timedelta(minutes=rng.randrange(5, 3 * 24 * 60))
            roll = rng.random()
            if roll < 0.30:
                sender = steward
                to, cc = [thread.requester], [support, *thread.colleagues]
            elif roll < 0.45 and thread.colleagues:
                sender = rng.choice(thread.colleagues)
                to, cc = [support], [thread.requester]
            else:
                sender = thread.requester
                to, cc = [support], list(thread.colleagues)
            subject = rng.choice(("Re: ", "Re: ", "Re: ", "RE: ", "AW: ")) + thread.subject
            via = "references"
        sender_zone = _zone(rng)
        size = int(1024 * 2 ** (rng.random() * 3)) - 700  # 1-8 KB with the headers
        spec = MailSpec(
            sender=sender,
            to=to,
            cc=cc,
            subject=subject,
            date=when.astimezone(sender_zone),
            message_id=_message_id(rng, sender, when),
            body=[],
            html=rng.random() < 0.4,
            encoding="7bit",
            client=rng.choice(_CLIENTS),
        )
        if previous is not None:
            spec.in_reply_to = previous.message_id
            spec.references = chain[-12:]
            if sender is steward:
                # A steward answers our notification, which referenced the request.
                ours = f"maild-{thread.number}-{rng.getrandbits(48):012x}@example.org"
                spec.subject = f"Re: [{TAG} #{thread.number}] {thread.subject}"
                spec.in_reply_to = ours
                spec.references = [*chain[-12:], ours]
            elif sender == thread.requester:
                roll = rng.random()
                if roll < 0.15:
                    # An answer to our acknowledgment: its Message-ID is unknown here.
                    ours = f"maild-{thread.number}-{rng.getrandbits(48):012x}@example.org"
                    spec.subject = f"Re: [{TAG} #{thread.number}] {thread.subject}"
                    spec.in_reply_to = ours
                    spec.references = [ours]
                    via = "subject-tag"
                elif roll < 0.20 and unique_subject:
                    spec.in_reply_to = None
                    spec.references = []
                    via = "reply-subject"
            if rng.random() < 0.7:
                spec.quote = previous.body
                spec.quote_from = previous.sender
                spec.quote_date = previous.date
        if thread.intl or not sender.name.isascii():
            spec.encoding = rng.choice(("quoted-printable", "quoted-printable", "8bit", "base64"))
        if rng.random() < 0.4:
            spec.signature = f"{sender.name}\n{sender.domain.split('.')[0].title()} project"
        if rng.random() < 0.10:
            filename, ctype = rng.choice(_ATTACHMENTS)
            spec.attachment = (filename, ctype, rng.randbytes(rng.randrange(300, 2500)))
            size -= 1500
        budget = size // (2 if spec.html else 1)  # the HTML part repeats the text
        if spec.quote:
            # Keep the quote to about half the mail, as clients that trim quotes do.
            kept, length = [], 0
            for para in spec.quote:
                if length + len(para) > budget // 2:
                    break
                kept.append(para)
                length += len(para) + 2
            spec.quote = kept or spec.quote[:1]
            budget -= length
        own = max(150, budget)
        spec.body = _paragraphs(rng, own, thread.intl or not sender.name.isascii())
        raw = build_mail(spec)
        mails.append(GeneratedMail(raw, when, index, position, spec.message_id, via))
        chain.append(spec.message_id)
        previous = spec
    return mails


# -- timing and output -------------------------------------------------------


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def time_each(fn: Callable[[bytes], Any], items: Sequence[bytes]) -> float:
    """Seconds to call ``fn`` on every item once."""
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    """A plain aligned table; numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(_is_number(r[i]) for r in cells[1:]) and len(cells) > 1 for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%x").replace(",", ""))
    except ValueError:
        return False
    return True
