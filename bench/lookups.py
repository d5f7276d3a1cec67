"""Threading look-ups stay index hits as the store grows.

Fills two fresh SQLite stores, one with ``--small`` tickets (1,000) and one
with ``--tickets`` (100,000), straight through SQLAlchemy Core bulk inserts
(tickets, participants, messages with their Message-IDs, outbox rows), then
times ``Pipeline.ingest`` of ``--replies`` replies (1,000: a third per rule)
and a third as many new requests against both:

- a reply found by ``In-Reply-To``/``References``;
- a reply found by the subject tag ``[support #N]`` (no references);
- a reply found by its ``Re:`` subject (no references, no tag);
- a new request (exercises the per-sender rate limit on the outbox).

It prints the rates at both sizes and their ratio, and replays every SELECT
the pipeline issued straight on SQLite at both sizes. Finally it runs
``EXPLAIN QUERY PLAN`` on every statement the pipeline issued against the
large store (those of ``_candidates``, ``_view``, ``_may_autoreply``, the
duplicate check, and a bounce and an Outlook ``Thread-Index`` reply for the
rarer paths) and exits 1 if any of them scans a whole table of tickets,
messages, participants or outbox, or if a mail went astray.

    python bench/lookups.py                          # 1,000 vs 100,000 tickets
    python bench/lookups.py --tickets 20000 --replies 300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import re
import sqlite3
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import greenlet
from common import (
    STEWARDS,
    SUPPORT,
    MailSpec,
    Person,
    Timer,
    build_mail,
    make_people,
    print_table,
    random_subject,
    write_config,
)
from sqlalchemy import create_engine, event, insert

from maild.config import load_config
from maild.core.subjects import normalize_for_match
from maild.service.pipeline import Outcome, Pipeline
from maild.store.db import make_engine, make_sessionmaker, prepare
from maild.store.models import Message, Outbox, Participant, Ticket

WATCHED = ("tickets", "messages", "participants", "outbox")
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
RECENT = 2000  # tickets active in the last 20 days; the rest are closed
_CHUNK = 5000
_SCAN_RE = re.compile(r"^SCAN (\w+)")


@dataclass(slots=True)
class Store:
    """What the fill put in one store, for building replies that must find it."""

    path: Path
    tickets: int
    recent: list[int] = field(default_factory=list)
    requester: dict[int, Person] = field(default_factory=dict)
    subject: dict[int, str] = field(default_factory=dict)
    request_id: dict[int, str] = field(default_factory=dict)
    thread_root: dict[int, str] = field(default_factory=dict)
    outbound: list[tuple[int, str, str]] = field(default_factory=list)  # ticket, msgid, rcpt
    people: list[Person] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Capture:
    """Every statement the pipeline sent, with its parameters and where it came from."""

    statements: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)

    def record(self, statement: str, parameters: Any) -> None:
        head = statement.lstrip().split(None, 1)[0].upper()
        where = _caller()
        if head in ("SELECT", "UPDATE", "DELETE") and where != "?":
            if isinstance(parameters, list) and parameters and isinstance(parameters[0], tuple):
                parameters = parameters[0]  # executemany: one row's worth explains the plan
            params = tuple(parameters) if isinstance(parameters, list | tuple) else ()
            self.statements.append((where, statement, params))


# -- filling a store -----------------------------------------------------------


def fill(path: Path, tickets: int, seed: int) -> Store:
    """Bulk-insert ``tickets`` tickets with their people, messages and outbox rows."""
    rng = random.Random(seed)
    store = Store(path, tickets)
    store.people = make_people(rng, max(10, tickets // 3))
    engine = create_engine(f"sqlite:///{path}")
    recent_from = max(1, tickets - RECENT + 1)
    seen_keys: set[tuple[str, str]] = set()
    message_pk = 0
    t_rows: list[dict[str, Any]] = []
    p_rows: list[dict[str, Any]] = []
    m_rows: list[dict[str, Any]] = []
    o_rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        for ticket_id in range(1, tickets + 1):
            recent = ticket_id >= recent_from
            if recent:
                share = (ticket_id - recent_from) / max(1, tickets - recent_from + 1)
                created = NOW - timedelta(days=20) + timedelta(days=19.5) * share
            else:
                share = ticket_id / recent_from
                created = NOW - timedelta(days=760) + timedelta(days=720) * share
            requester = rng.choice(store.people)
            subject = random_subject(rng)
            key = normalize_for_match(subject, "support")
            while recent and (requester.address, key) in seen_keys:
                subject = random_subject(rng)
                key = normalize_for_match(subject, "support")
            if recent:
                seen_keys.add((requester.address, key))
                store.recent.append(ticket_id)
            cc = [p.address for p in rng.sample(store.people, rng.choice((0, 0, 0, 1, 2)))]
            # Reply-subject matching must be unambiguous for the recent tickets:
            # nobody is on two of them with the same subject.
            cc = [a for a in cc if a != requester.address and (a, key) not in seen_keys]
            if recent:
                seen_keys.update((a, key) for a in cc)
            root = base64.b64encode(b"\x01" + rng.randbytes(21)).decode("ascii")
            last = created + timedelta(hours=rng.randrange(1, 72))
            status = rng.choice(("new", "open", "open", "waiting")) if recent else "closed"
            t_rows.append(
                {
                    "id": ticket_id,
                    "subject": subject,
                    "subject_key": key,
                    "status": status,
                    "priority": "normal",
                    "community": _community(requester),
                    "requester": requester.address,
                    "cc": cc,
                    "links": [],
                    "time_spent_minutes": 0,
                    "created_at": created,
                    "updated_at": last,
                    "last_activity_at": last,
                    "last_requester_at": created,
                    "closed_at": None if recent else last + timedelta(days=7),
                    "thread_root": root,
                    "message_count": 0,
                }
            )
            p_rows.append(
                {"ticket_id": ticket_id, "address": requester.address, "role": "requester"}
            )
            p_rows += [{"ticket_id": ticket_id, "address": a, "role": "cc"} for a in cc]
            store.requester[ticket_id] = requester
            store.subject[ticket_id] = subject
            store.thread_root[ticket_id] = root
            steward = rng.choice(STEWARDS)[1]
            thread = [
                ("in", requester.address, [SUPPORT], None, created),
                ("out", SUPPORT, [requester.address], "ack", created),
                ("out", SUPPORT, [steward], "steward_new", created),
            ]
            if rng.random() < 0.5:
                thread += [
                    ("in", requester.address, [SUPPORT], None, last),
                    ("out", SUPPORT, [steward], "requester_reply", last),
                ]
            for direction, sender, to, template, at in thread:
                message_pk += 1
                domain = sender.rpartition("@")[2]
                mid = f"{int(at.timestamp())}.{rng.getrandbits(64):016x}@{domain}"
                if direction == "in" and ticket_id not in store.request_id:
                    store.request_id[ticket_id] = mid
                m_rows.append(_message_row(message_pk, ticket_id, direction, mid, sender, to, at))
                m_rows[-1]["template"] = template
                if direction == "out":
                    store.outbound.append((ticket_id, mid, to[0]))
                    o_rows.append(_outbox_row(ticket_id, message_pk, template or "", to, at))
            t_rows[-1]["message_count"] = len(thread)
            if len(t_rows) >= _CHUNK:
                _flush(conn, store.rows, t_rows, p_rows, m_rows, o_rows)
        _flush(conn, store.rows, t_rows, p_rows, m_rows, o_rows)
    engine.dispose()
    return store


def _community(person: Person) -> str | None:
    for name in ("pangeo", "jupyter", "xarray"):
        if person.domain == f"{name}.example" or person.domain.endswith(f".{name}.example"):
            return name
    return None


def _message_row(
    pk: int, ticket: int, direction: str, mid: str, sender: str, to: list[str], at: datetime
) -> dict[str, Any]:
    raw = (
        f"From: {sender}\r\nTo: {', '.join(to)}\r\nMessage-ID: <{mid}>\r\n"
        f"Date: {at:%a, %d %b %Y %H:%M:%S +0000}\r\nSubject: ticket {ticket}\r\n\r\n"
        "Hello, the hub returns 502 since this morning.\r\n"
    ).encode()
    return {
        "id": pk,
        "ticket_id": ticket,
        "direction": direction,
        "message_id": mid,
        "from_addr": sender,
        "from_name": "",
        "to_addrs": to,
        "cc_addrs": [],
        "subject": f"ticket {ticket}",
        "date": at,
        "at": at,
        "in_reply_to": [],
        "references": [],
        "headers": [],
        "text": "Hello, the hub returns 502 since this morning.\n",
        "new_text": "Hello, the hub returns 502 since this morning.\n",
        "classification": "normal",
        "defects": [],
        "is_note": False,
        "template": None,
        "stub": False,
        "raw": raw,
    }


def _outbox_row(
    ticket: int, message_pk: int, template: str, to: list[str], at: datetime
) -> dict[str, Any]:
    return {
        "ticket_id": ticket,
        "message_pk": message_pk,
        "template": template,
        "automatic": True,
        "mail_from": SUPPORT,
        "rcpt_tos": to,
        "primary_rcpt": to[0],
        "raw": b"(sent)",
        "status": "sent",
        "attempts": 1,
        "created_at": at,
        "next_attempt_at": at,
        "sent_at": at + timedelta(seconds=5),
    }


def _flush(conn: Any, counts: Counter[str], *batches: list[dict[str, Any]]) -> None:
    for model, rows in zip((Ticket, Participant, Message, Outbox), batches, strict=True):
        if rows:
            conn.execute(insert(model), rows)
            counts[model.__tablename__] += len(rows)
            rows.clear()


# -- the mails to ingest -------------------------------------------------------


def replies(store: Store, count: int, seed: int) -> dict[str, list[tuple[bytes, int | None]]]:
    """``count`` replies spread over the three rules, and ``count / 3`` new requests.

    Each is (raw, the ticket it must land on; None for a new one).
    """
    rng = random.Random(seed + 1)
    support = Person("Example Support", SUPPORT)
    kinds: dict[str, list[tuple[bytes, int | None]]] = defaultdict(list)
    at = NOW
    share = max(1, count // 3)
    for kind in ("references", "subject-tag", "reply-subject"):
        targets = rng.sample(store.recent, min(share, len(store.recent)))
        for ticket in targets:
            at += timedelta(seconds=7)
            person = store.requester[ticket]
            subject = store.subject[ticket]
            spec = _spec(rng, person, support, f"Re: {subject}", at)
            if kind == "references":
                spec.in_reply_to = store.request_id[ticket]
                spec.references = [store.request_id[ticket]]
            elif kind == "subject-tag":
                spec.subject = f"Re: [support #{ticket}] {subject}"
            kinds[kind].append((build_mail(spec), ticket))
    for _ in range(share):
        at += timedelta(seconds=7)
        person = rng.choice(store.people)
        spec = _spec(rng, person, support, random_subject(rng), at)
        kinds["new request"].append((build_mail(spec), None))
    return kinds


def rare_paths(store: Store, seed: int) -> list[tuple[bytes, int | None]]:
    """A few mails for the paths the timed kinds miss: Thread-Index and bounces."""
    rng = random.Random(seed + 2)
    support = Person("Example Support", SUPPORT)
    out: list[tuple[bytes, int | None]] = []
    at = NOW + timedelta(days=1)
    for ticket in rng.sample(store.recent, min(5, len(store.recent))):
        at += timedelta(seconds=30)
        raw_root = base64.b64decode(store.thread_root[ticket])
        index = base64.b64encode(raw_root + rng.randbytes(5)).decode("ascii")
        spec = _spec(rng, store.requester[ticket], support, f"RE: {store.subject[ticket]}", at)
        spec.thread_index = index
        spec.extra_headers.append(("Thread-Topic", store.subject[ticket]))
        out.append((build_mail(spec), ticket))
    for ticket, mid, rcpt in rng.sample(store.outbound[-RECENT:], 5):
        at += timedelta(seconds=30)
        out.append((_bounce(mid, rcpt, at), ticket))
    return out


def _spec(rng: random.Random, sender: Person, to: Person, subject: str, at: datetime) -> MailSpec:
    body = [
        "Thanks for looking into this. The problem is still there this morning.",
        f"We have {rng.randrange(2, 300)} users waiting for the workshop, so any news helps.",
    ]
    domain = sender.domain
    return MailSpec(
        sender=sender,
        to=[to],
        subject=subject,
        date=at,
        message_id=f"{int(at.timestamp())}.{rng.getrandbits(64):016x}@{domain}",
        body=body,
    )


def _bounce(original: str, rcpt: str, at: datetime) -> bytes:
    boundary = "=_dsn_boundary"
    date = at.strftime("%a, %d %b %Y %H:%M:%S +0000")
    return (
        "Return-Path: <>\r\n"
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: {SUPPORT}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {date}\r\nMessage-ID: <dsn.{zlib.crc32(original.encode())}@mx.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        f"\r\n--{boundary}\r\nContent-Type: text/plain\r\n\r\n"
        f"I'm sorry to have to inform you that your message could not be delivered to {rcpt}.\r\n"
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: {SUPPORT}\r\nTo: {rcpt}\r\nMessage-ID: <{original}>\r\nSubject: ticket\r\n"
        f"\r\n--{boundary}--\r\n"
    ).encode()


# -- running the pipeline ------------------------------------------------------


def _caller() -> str:
    """The innermost pipeline function on the stack (across SQLAlchemy's greenlets)."""
    current = greenlet.getcurrent()
    glet: Any = current
    while glet is not None:
        frame = sys._getframe() if glet is current else glet.gr_frame
        while frame is not None:
            if frame.f_code.co_filename.endswith(
                ("maild/service/pipeline.py", "maild\\pipeline.py")
            ):
                return frame.f_code.co_name
            frame = frame.f_back
        glet = glet.parent
    return "?"


async def run_store(
    store: Store,
    kinds: dict[str, list[tuple[bytes, int | None]]],
    extra: list[tuple[bytes, int | None]],
    config_dir: Path,
) -> tuple[dict[str, float], Capture, list[str]]:
    """Ingest each kind in turn; (seconds per kind, captured statements, problems)."""
    config = load_config(write_config(config_dir, store.path))
    engine = make_engine(config.database.url)
    capture = Capture()

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        capture.record(statement, parameters)

    seconds: dict[str, float] = {}
    problems: list[str] = []
    try:
        await prepare(engine)
        pipeline = Pipeline(config, make_sessionmaker(engine))
        at = NOW
        for kind, mails in kinds.items():
            outcomes: list[Outcome] = []
            with Timer() as timer:
                for i, (raw, _) in enumerate(mails):
                    at += timedelta(seconds=3)
                    outcomes.append(await pipeline.ingest(raw, f"{kind}#{i}", at))
            seconds[kind] = timer.seconds
            problems += _check(kind, mails, outcomes)
        for i, (raw, ticket) in enumerate(extra):
            at += timedelta(seconds=3)
            outcome = await pipeline.ingest(raw, f"rare#{i}", at)
            if outcome.ticket != ticket:
                problems.append(
                    f"rare path #{i}: {outcome.action} #{outcome.ticket}, want #{ticket}"
                )
    finally:
        await engine.dispose()
    return seconds, capture, problems


def _check(kind: str, mails: list[tuple[bytes, int | None]], outcomes: list[Outcome]) -> list[str]:
    problems = []
    for (_, ticket), outcome in zip(mails, outcomes, strict=True):
        want = "created" if ticket is None else "appended"
        if outcome.action != want or (ticket is not None and outcome.ticket != ticket):
            problems.append(
                f"{kind}: {outcome.action} #{outcome.ticket} ({outcome.reason}), "
                f"expected {want} {'#' + str(ticket) if ticket else ''}"
            )
    return problems


# -- query plans and replay ------------------------------------------------------


def distinct(capture: Capture) -> Iterator[tuple[str, str, tuple[Any, ...]]]:
    """Each distinct (caller, statement) once, with the parameters of its first use."""
    seen: set[tuple[str, str]] = set()
    for where, statement, params in capture.statements:
        if (where, statement) not in seen:
            seen.add((where, statement))
            yield where, statement, params


def plans(db: Path, capture: Capture) -> list[tuple[str, str, list[str]]]:
    """(caller, statement, plan lines) for every distinct statement captured."""
    out = []
    with sqlite3.connect(db) as conn:
        for where, statement, params in distinct(capture):
            rows = conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            out.append((where, statement, [row[3] for row in rows]))
    return out


def full_scans(plan: list[str]) -> list[str]:
    """Plan lines that read a whole watched table (or a whole index of one)."""
    bad = []
    for line in plan:
        m = _SCAN_RE.match(line)
        if m and any(m.group(1) == t or m.group(1).startswith(f"{t}_") for t in WATCHED):
            bad.append(line)
    return bad


def replay(db: Path, capture: Capture) -> dict[str, tuple[int, float, float]]:
    """Run every captured SELECT again straight on SQLite: label -> (count, seconds, worst)."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    with sqlite3.connect(db) as conn:
        for where, statement, params in capture.statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            start = time.perf_counter()
            conn.execute(statement, params).fetchall()
            elapsed = time.perf_counter() - start
            label = f"{where}: {_what(statement)}"
            totals[label][0] += 1
            totals[label][1] += elapsed
            totals[label][2] = max(totals[label][2], elapsed)
    return {k: (int(v[0]), v[1], v[2]) for k, v in totals.items()}


def _what(statement: str) -> str:
    """A short name for a statement: what it reads or updates, and the columns it filters on."""
    flat = " ".join(statement.split())
    update = re.match(r"UPDATE (\w+)", flat)
    table = re.search(r"\bFROM (\w+)", flat)
    name = f"UPDATE {update.group(1)}" if update else table.group(1) if table else flat[:20]
    where = flat.split(" WHERE ", 1)[1] if " WHERE " in flat else ""
    cols = re.findall(r"(\w+\.\w+) (?:=|IN|>=|>|IS)", where)
    return f"{name} by {', '.join(dict.fromkeys(cols)) or '-'}"


# -- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000, help="large store (100000)")
    parser.add_argument("--small", type=int, default=1_000, help="small store (1000)")
    parser.add_argument(
        "--replies", type=int, default=1_000, help="replies, a third per rule (1000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument("--keep", metavar="DIR", help="leave both stores in DIR to inspect")
    args = parser.parse_args(argv)

    results: dict[int, dict[str, float]] = {}
    captures: dict[int, Capture] = {}
    replays: dict[int, dict[str, tuple[int, float, float]]] = {}
    problems: list[str] = []
    plan_rows: list[tuple[str, str, list[str]]] = []
    with tempfile.TemporaryDirectory(prefix="maild-lookups-") as scratch:
        tmp = args.keep or scratch
        for size in (args.small, args.tickets):
            root = Path(tmp) / str(size)
            root.mkdir(parents=True)
            db = root / "maild.db"
            asyncio.run(_prepare_only(root, db))
            with Timer() as filling:
                store = fill(db, size, args.seed)
            kinds = replies(store, args.replies, args.seed)
            counts = ", ".join(f"{n:,} {t}" for t, n in store.rows.items())
            print(f"store of {size:,} tickets filled in {filling.seconds:.1f}s ({counts})")
            seconds, capture, bad = asyncio.run(
                run_store(store, kinds, rare_paths(store, args.seed), root)
            )
            results[size] = {k: len(kinds[k]) / s for k, s in seconds.items()}
            captures[size] = capture
            replays[size] = replay(db, capture)
            problems += [f"{size:,} tickets: {p}" for p in bad]
            if size == args.tickets:
                plan_rows = plans(db, capture)

    small, large = args.small, args.tickets
    per_kind = max(1, args.replies // 3)
    print(f"\nPipeline.ingest, {per_kind:,} mails of each kind (mails/s)")
    print_table(
        [
            [
                kind,
                f"{results[small][kind]:.1f}",
                f"{results[large][kind]:.1f}",
                f"{results[small][kind] / results[large][kind]:.2f}x",
            ]
            for kind in results[small]
        ],
        ["found by", f"{small:,} tickets", f"{large:,} tickets", "slowdown"],
    )

    print("\nthe same SELECTs replayed straight on SQLite (microseconds per query)")
    rows = []
    for label, (count, secs, worst) in sorted(replays[large].items()):
        small_count, small_secs, small_worst = replays[small].get(label, (0, 0.0, 0.0))
        small_us = small_secs / small_count * 1e6 if small_count else float("nan")
        large_us = secs / count * 1e6
        rows.append(
            [
                label,
                f"{count}",
                f"{small_us:.1f}",
                f"{large_us:.1f}",
                f"{large_us / small_us:.2f}x",
                f"{small_worst * 1e6:.0f}",
                f"{worst * 1e6:.0f}",
            ]
        )
    print_table(
        rows,
        ["statement", "runs", f"{small:,}", f"{large:,}", "slowdown", "worst small", "worst large"],
    )

    print(f"\nEXPLAIN QUERY PLAN at {large:,} tickets")
    scans = []
    shown: set[tuple[str, ...]] = set()
    for where, statement, plan in plan_rows:
        bad = full_scans(plan)
        key = (where, _what(statement), *plan)
        if key not in shown:  # UPDATEs of different columns share one plan
            shown.add(key)
            print(f"- {where}: {_what(statement)}  [{'FULL SCAN' if bad else 'index'}]")
            for line in plan:
                print(f"    {line}")
        if bad:
            scans.append(f"{where}: {' '.join(statement.split())[:160]} -> {'; '.join(bad)}")

    status = 0
    if scans:
        print(f"\nFAILED: {len(scans)} statements scan a whole table:", file=sys.stderr)
        for line in scans:
            print(f"  {line}", file=sys.stderr)
        status = 1
    else:
        print(f"\nOK: every statement is an index search (none scans {', '.join(WATCHED)})")
    if problems:
        print(f"\nFAILED: {len(problems)} mails went astray:", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        status = 1
    return status


async def _prepare_only(root: Path, db: Path) -> None:
    config = load_config(write_config(root, db))
    engine = make_engine(config.database.url)
    try:
        await prepare(engine)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
