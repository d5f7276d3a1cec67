"""The ``maild`` command: a thin layer over the library.

Exit status: 0 on success, 1 on a user error (one line ``Error: …`` on stderr,
no traceback), 2 on a usage error (argparse), 78 when ``maild run`` is given a
bad config (so systemd does not restart-loop). Every listing takes ``--json``.
Only this module prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import textwrap
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar
from zoneinfo import ZoneInfo

from maild.core.vocabulary import STATUSES, TYPES

if TYPE_CHECKING:
    from maild.config import Config
    from maild.store.serialize import QueuePage

__all__ = ["main"]

log = logging.getLogger("maild")

EX_CONFIG = 78
T = TypeVar("T")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit 1."""


# -- helpers -----------------------------------------------------------------


def _run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, imported on first use: ``maild --help`` needs no event loop."""
    import asyncio

    return asyncio.run(main)


def _load(args: argparse.Namespace) -> Config:
    from maild.config import config_path_from, load_config

    path = config_path_from(args.config)
    if not path.exists():
        raise UserError(
            f"no config at {path} (pass --config PATH or set MAILD_CONFIG; see config.example.toml)"
        )
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise UserError(f"cannot read the config {path}: {exc.strerror or exc}") from exc
    return load_config(path)


def _now(args: argparse.Namespace, config: Config | None = None) -> datetime:
    value = getattr(args, "now", None)
    if not value:
        return datetime.now(UTC)
    return parse_instant(value, config.hours.timezone if config else "UTC")


# Times a command may be asked about: the scheduler reaches weeks around its
# "now", which Python's calendar (years 1 to 9999) cannot do at its very ends.
_EARLIEST, _LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def parse_instant(value: str, timezone: str) -> datetime:
    """ISO 8601 with any offset, or a bare date meaning midnight in ``timezone``."""
    out_of_range = UserError(f"out of range: {value!r} (give a time from 1900 to 8999)")
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            parsed = datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone))
        else:
            parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
        parsed = parsed.astimezone(UTC)
    except OverflowError as exc:  # past the calendar's ends once moved to UTC
        raise out_of_range from exc
    except ValueError as exc:
        if re.match(r"[+-]?\d{5}", value.strip()):  # a year past 9999
            raise out_of_range from exc
        raise UserError(f"not an ISO 8601 date or time: {value!r}") from exc
    if not _EARLIEST <= parsed < _LATEST:
        raise out_of_range
    return parsed


# What a terminal acts on instead of showing (SPEC section 11, "Terminal"):
# C0 controls but newline and tab, DEL, C1, and the bidirectional overrides
# and isolates that reorder what is shown.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_JSON_RAW = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    # indented for people; compact (the C encoder, many times faster) for scripts
    indent = 2 if out.isatty() else None
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    # json escapes C0 controls but leaves DEL and C1 (0x9b is a CSI) raw;
    # they can only be inside strings, where \u escapes mean the same (an ASCII
    # text, known without a scan, has none: 10,000 tickets are 5 MB of JSON)
    if not text.isascii():
        text = _JSON_RAW.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
    out.write(text + "\n")


def _safe(text: str) -> str:
    """``text`` with its control characters shown escaped (``\\x1b``), never raw."""
    return _CONTROLS.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )


def _out(text: str) -> None:
    """Print text output that may carry stored mail: every such print goes through here."""
    print(_safe(text))


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    # escaped before measuring; a printable cell (a C check) has nothing to escape,
    # which spares 10,000 tickets' cells 90,000 regular-expression calls
    rows = [[c if c.isprintable() else _safe(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    if rows:
        columns = zip(*rows, strict=True)
        widths = [max(w, *map(len, cells)) for w, cells in zip(widths, columns, strict=True)]
    lines = ["  ".join(map(str.ljust, headers, widths)).rstrip()]
    lines.extend("  ".join(map(str.ljust, row, widths)).rstrip() for row in rows)
    return "\n".join(lines)


def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _local(value: str | datetime | None, timezone: str, default: str = "-") -> str:
    """A stored UTC time as people read it: local minutes in ``timezone`` (JSON keeps UTC)."""
    if value is None or value == "":
        return default
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def _plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count} {word if count == 1 else words or word + 's'}"


async def _with_store(
    config: Config, fn: Callable[[Any], Awaitable[Any]], *, prepare: bool = True
) -> Any:
    from maild.store.db import SchemaError, make_engine, make_sessionmaker
    from maild.store.db import prepare as prepare_db

    engine = make_engine(config.database.url)
    try:
        if prepare:
            try:
                await prepare_db(engine)
            except SchemaError as exc:
                raise UserError(str(exc)) from exc
        return await fn(make_sessionmaker(engine))
    finally:
        await engine.dispose()


async def _with_rehearsal(config: Config, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Like :func:`_with_store`, inside one transaction that is rolled back: changes nothing."""
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from maild.store.db import SchemaError, begin_explicitly, make_engine
    from maild.store.db import prepare as prepare_db

    engine = make_engine(config.database.url)
    if engine.dialect.name == "sqlite":
        begin_explicitly(engine)  # or the first SAVEPOINT's RELEASE would commit

    try:
        try:
            await prepare_db(engine)
        except SchemaError as exc:
            raise UserError(str(exc)) from exc
        async with engine.connect() as conn:
            outer = await conn.begin()
            try:
                # every session.begin() below is a savepoint inside ``outer``
                sessions = async_sessionmaker(
                    bind=conn,
                    class_=AsyncSession,
                    expire_on_commit=False,
                    join_transaction_mode="create_savepoint",
                )
                return await fn(sessions)
            finally:
                await outer.rollback()
    finally:
        await engine.dispose()


async def _outbox_top(sessions: Any) -> int:
    """The highest outbox id so far: mail queued later has a higher one."""
    from maild.store.queries import outbox_top

    async with sessions() as session:
        return await outbox_top(session)


async def _mail_queued_after(sessions: Any, after: int) -> list[dict[str, Any]]:
    """What went into the outbox after :func:`_outbox_top` said ``after``: template, to."""
    from maild.store.queries import outbox_after

    async with sessions() as session:
        return await outbox_after(session, after)


def _mail_lines(mails: Sequence[dict[str, Any]], verb: str) -> list[str]:
    return [
        f"  {verb} {m['template']}"
        + (f" (#{m['ticket']})" if m["ticket"] else "")
        + f" to {', '.join(m['to'])}"
        for m in mails
    ]


def _iter_inputs(paths: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """(label, raw bytes) for each mail in the given .eml files, mbox files or stdin."""
    import mailbox

    for path in paths:
        if path == "-":
            yield "<stdin>", sys.stdin.buffer.read()
            continue
        p = Path(path)
        if not p.is_file():
            raise UserError(f"no such file: {path}")
        with p.open("rb") as fh:
            head = fh.read(5)
        if head == b"From ":
            box = mailbox.mbox(str(p), create=False)
            try:
                for i, key in enumerate(box.iterkeys(), start=1):
                    yield f"{path}#{i}", box.get_bytes(key)
            finally:
                box.close()
        else:
            yield path, p.read_bytes()


# -- commands ----------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    from maild.config import ConfigError, config_path_from, load_config

    path = config_path_from(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    from maild.mail.render import Renderer, TemplateError, sample_context

    try:
        problems = Renderer(config).check(sample_context(config))
    except TemplateError as exc:
        raise UserError(str(exc)) from exc
    if problems:
        for line in problems:
            print(f"templates: {line}", file=sys.stderr)
        return 1
    if config.stewards and not config.commands.require_authenticated:
        print(
            "warning: commands.require_authenticated is off: anyone who forges a steward's "
            "From can steer tickets",
            file=sys.stderr,
        )
    if config.lmtp is not None and not config.lmtp.loopback:
        networks = ", ".join(str(network) for network in config.lmtp.allow)
        print(
            f"warning: lmtp.listen is not loopback ({config.lmtp.host}): "
            f"only clients in lmtp.allow ({networks}) are served; keep it to your MTAs",
            file=sys.stderr,
        )
    stewards = _plural(len(config.stewards), "steward")
    communities = _plural(len(config.communities), "community", "communities")
    print(f"{path}: OK ({stewards}, {communities})")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    config = _load(args)
    from maild.store.db import make_engine, upgrade

    async def go() -> tuple[str | None, str]:
        engine = make_engine(config.database.url)
        try:
            return await upgrade(engine)
        finally:
            await engine.dispose()

    before, after = _run(go())
    if before == after:
        print(f"database already at revision {after}")
    else:
        print(f"database upgraded from {before or 'empty'} to revision {after}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.service.pipeline import Pipeline

    on_terminal = sys.stderr.isatty()
    progress = _Progress(_count_inputs(args.files) if on_terminal else 0)

    async def go(sessions: Any) -> list[dict[str, Any]]:
        from contextlib import aclosing

        from maild.service.batch import BatchIngest
        from maild.store.inline import StoreThread

        store = StoreThread.for_url(config.database.url)
        pipeline = Pipeline(config, sessions, store=store)
        # a transaction per chunk of mails, the next chunk parsed in a worker meanwhile;
        # each outcome comes once its mail is committed
        batch = BatchIngest(pipeline, dry_run=args.dry_run)
        # only the JSON rows are kept: a whole Outcome per mail of a large mbox adds up
        results = []
        try:
            inputs = ((label, raw, now) for label, raw in _iter_inputs(args.files))
            async with aclosing(batch.run(inputs)) as outcomes:
                async for outcome in outcomes:
                    if args.json:
                        results.append(outcome.as_json())
                    else:
                        progress.clear()
                        _print_outcome(outcome, args.dry_run)
                    progress.step()
        finally:
            if store is not None:
                await store.aclose()
        return results

    try:
        results = _run(_with_store(config, go))
    finally:
        progress.finish()
    if args.json:
        _print_json(results)
    return 0


def _count_inputs(paths: Sequence[str]) -> int:
    """How many mails the files hold (0 with stdin: no progress can be told).

    Counting an mbox reads it once more, which is quick next to ingesting it.
    """
    import mailbox

    if "-" in paths:
        return 0
    total = 0
    for path in paths:
        p = Path(path)
        if not p.is_file():
            continue
        with p.open("rb") as fh:
            head = fh.read(5)
        if head != b"From ":
            total += 1
            continue
        box = mailbox.mbox(str(p), create=False)
        try:
            total += len(box)
        finally:
            box.close()
    return total


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


class _Progress:
    """A self-rewriting line on stderr while a long ingest runs: only on a terminal."""

    EVERY = 0.5  # seconds between updates

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.on = self.total > 0 and self.stream.isatty()
        self.started = self.last = monotonic()
        self.count = 0
        self.shown = False

    def step(self) -> None:
        self.count += 1
        now = monotonic()
        if not self.on or now - self.last < self.EVERY:
            return
        self.last = now
        elapsed = now - self.started
        rate = self.count / elapsed
        left = max(self.total - self.count, 0) / rate
        self.stream.write(
            f"\r\x1b[K{self.count} of {self.total} mails, {rate:.0f} mails/s, "
            f"about {_duration(left)} left"
        )
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = False

    def finish(self) -> None:
        if not self.on:
            return
        self.clear()
        elapsed = monotonic() - self.started
        rate = f" ({self.count / elapsed:.0f} mails/s)" if elapsed >= 1 else ""
        self.stream.write(f"{self.count} mails in {_duration(elapsed)}{rate}\n")
        self.stream.flush()


def _print_outcome(outcome: Any, dry_run: bool) -> None:
    ticket = f"#{outcome.ticket}" if outcome.ticket is not None else "-"
    prefix = "would be " if dry_run else ""
    _out(f"{outcome.source}: {prefix}{outcome.action} {ticket} ({outcome.reason})")
    for mail in outcome.sends:
        verb = "would send" if dry_run else "queued"
        _out(f"  {verb} {mail.template} to {', '.join(mail.to)}")
    for why in outcome.suppressed:
        _out(f"  not sent: {why}")


def cmd_explain(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.service.pipeline import Outcome, Pipeline

    async def go(sessions: Any) -> list[Outcome]:
        pipeline = Pipeline(config, sessions)
        return [
            await pipeline.ingest(raw, label, now, dry_run=True)
            for label, raw in _iter_inputs([args.file])
        ]

    results = _run(_with_store(config, go))
    if args.json:
        _print_json([_explain_json(o) for o in results])
        return 0
    for outcome in results:
        _out(_explain_text(outcome))
    return 0


def _explain_json(outcome: Any) -> dict[str, Any]:
    data: dict[str, Any] = outcome.as_json()
    cls = outcome.classification
    if cls is not None:
        data["classification"] = {
            "kind": cls.kind,
            "reasons": list(cls.reasons),
            "role": cls.role,
            "steward": cls.steward.name if cls.steward else None,
            "community": cls.community.name if cls.community else None,
        }
    dec = outcome.decision
    if dec is not None:
        data["rule"] = dec.rule
        data["follow_up_of"] = dec.follow_up_of
    data["commands"] = list(outcome.commands)
    data["command_errors"] = list(outcome.command_errors)
    data["would_send"] = [
        {"template": m.template, "to": list(m.to), "cc": list(m.cc), "subject": m.subject}
        for m in outcome.sends
    ]
    data["not_sent"] = list(outcome.suppressed)
    data["policy"] = list(outcome.policy)
    return data


def _explain_text(outcome: Any) -> str:
    lines = [f"{outcome.source}", f"  Message-ID: <{outcome.message_id}>"]
    cls = outcome.classification
    if cls is not None:
        who = cls.role + (f" ({cls.steward.name})" if cls.steward else "")
        lines.append(f"  sender: {who}; community: {cls.community.name if cls.community else '-'}")
        kind = cls.kind + (": " + "; ".join(cls.reasons) if cls.reasons else "")
        lines.append(f"  kind: {kind}")
    dec = outcome.decision
    target = f"#{outcome.ticket}" if outcome.ticket is not None else "-"
    if dec is not None:
        lines.append(f"  threading: rule {dec.rule}: {dec.reason}")
    if outcome.commands:
        lines.append(f"  commands: {' '.join(outcome.commands)}")
    for error in outcome.command_errors:
        lines.append(f"  bad tag: {error}")
    lines.append(f"  result: {outcome.action} {target} ({outcome.reason})")
    for rule in outcome.policy:
        lines.append(f"  policy: {rule}")
    for mail in outcome.sends:
        lines.append(f"  would send {mail.template} to {', '.join(mail.to)}: {mail.subject}")
    for why in outcome.suppressed:
        lines.append(f"  would not send: {why}")
    if not outcome.sends and not outcome.suppressed:
        lines.append("  would send nothing")
    return "\n".join(lines)


# what `maild queue` shows without --limit: a screenful, most urgent first
QUEUE_LIMIT = 50


def cmd_queue(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    filters: dict[str, Any] = {
        "statuses": args.status,
        "types": args.type,
        "community": args.community,
        "overdue": args.overdue,
        "include_all": args.all,
    }
    # --json lists every ticket unless told (scripts read SPEC 8's "a list of
    # tickets"); the table stops at a screenful; --limit 0 is all
    limit = args.limit if args.limit is not None else None if args.json else QUEUE_LIMIT
    page = _queue_rows(config, now, filters, limit or None)
    rows = page.tickets
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no tickets")
        return 0
    table = [
        (
            f"#{r['id']}",
            r["status"],
            r["type"] or "-",
            r["priority"],
            r["community"] or "-",
            r["assignee"] or "-",
            _due_text(r["next_due"], config.hours.timezone),
            _short(r["requester"], 28),
            _short(r["subject"], 50),
        )
        for r in rows
    ]
    _out(
        _table(
            table,
            ("ID", "STATUS", "TYPE", "PRIO", "COMMUNITY", "ASSIGNEE", "DUE", "FROM", "SUBJECT"),
        )
    )
    if page.total > len(rows):
        print(
            f"{len(rows)} of {page.total:,} tickets shown, most urgent first; "
            "--limit N shows more, --limit 0 all"
        )
    return 0


def _queue_rows(
    config: Config, now: datetime, filters: dict[str, Any], limit: int | None
) -> QueuePage:
    """The queue: from SQLite by ``sqlite3`` alone when it can (a short command should
    not import SQLAlchemy: issue 12), else through the store like every other verb."""
    from maild.store.schema import SchemaError
    from maild.store.sqlite_read import read_queue

    try:
        fast = read_queue(config.database.url, now, limit=limit, **filters)
    except SchemaError as exc:
        raise UserError(str(exc)) from exc
    if fast is not None:
        return fast
    from maild.store.queries import queue_page

    async def go(sessions: Any) -> QueuePage:
        async with sessions() as session:
            return await queue_page(session, now, limit=limit, **filters)

    page: QueuePage = _run(_with_store(config, go))
    return page


def _due_text(due: dict[str, Any] | None, timezone: str) -> str:
    if not due:
        return "-"
    mark = "BREACHED " if due["breached"] else ""
    return f"{mark}{due['kind']} {_local(due['at'], timezone)}"


def cmd_show(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    _stored_id(args.id, f"no ticket #{args.id}")
    from maild.store.queries import ticket_detail

    async def go(sessions: Any) -> dict[str, Any] | None:
        async with sessions() as session:
            detail: dict[str, Any] | None = await ticket_detail(session, args.id, now)
            return detail

    detail = _run(_with_store(config, go))
    if detail is None:
        raise UserError(f"no ticket #{args.id}")
    if args.json:
        _print_json(detail)
        return 0
    _out(_show_text(detail, config.hours.timezone))
    return 0


def _show_text(t: dict[str, Any], timezone: str) -> str:
    lines = [
        f"#{t['id']} {t['subject']}",
        f"  status {t['status']}, type {t['type'] or '-'}, priority {t['priority']}, "
        f"community {t['community'] or '-'}",
        f"  requester {t['requester']}" + (f", cc {', '.join(t['cc'])}" if t["cc"] else ""),
        f"  assignee {t['assignee'] or '-'}, incident commander {t['incident_commander'] or '-'}",
    ]
    if t["links"]:
        lines.append(f"  links {' '.join(t['links'])}")
    if t.get("follow_up_of"):
        lines.append(f"  follow-up to #{t['follow_up_of']}")
    lines.append(
        f"  created {_local(t['created_at'], timezone)}, "
        f"updated {_local(t['updated_at'], timezone)}, "
        f"{t['time_spent_minutes']} min logged (times in {timezone})"
    )
    lines.append("")
    for ev in t["timeline"]:
        at = _local(ev["at"], timezone)
        kind = ev["kind"]
        if kind in ("received", "sent", "note") and "message_id" in ev:
            arrow = {"received": "<-", "sent": "->", "note": "<- note"}[kind]
            who = ", ".join(ev["to"]) if kind == "sent" else ev["from"] or "-"
            if kind == "sent":
                # everyone it went to: the Cc and the stewards' blind copy too
                for label in ("cc", "bcc"):
                    if ev.get(label):
                        who += f", {label} {', '.join(ev[label])}"
            extra = f" [{ev['template']}, {ev['delivery']}]" if kind == "sent" else ""
            lines.append(f"{at}  {arrow} {who}{extra}: {ev['subject']}")
            if ev.get("held"):
                held = ev["held"]
                lines.append(
                    f"      [{held['state']}] steward mail held until {held['steward']} confirms"
                    f" (expires {held['expires_at'][:16].replace('T', ' ')})"
                )
            if kind != "sent":
                lines.extend(_show_body(ev.get("new_text") or "", ev.get("text") or ""))
            for att in ev.get("attachments", []):
                size = f"{att['content_type']}, {att['size']} bytes"
                lines.append(f"      [attachment] {att['filename']} ({size})")
        elif kind == "change":
            lines.append(
                f"{at}  {ev['actor']}: {ev['field']} {ev['old'] or '-'} -> {ev['new'] or '-'}"
            )
        else:
            # split on newlines only: other line breaks (NEL, FF) are shown escaped
            first, *more = (ev.get("text") or "").strip().split("\n")
            lines.append(f"{at}  {kind} by {ev['actor']}: {first}")
            lines.extend(_INDENT + ln for ln in more[: _SHOW_LINES - 1])
    return "\n".join(lines)


_INDENT = "      "
_SHOW_LINES = 40


def _show_body(new_text: str, text: str) -> list[str]:
    """A mail's own words, indented: without the quoted history (``--json`` has it all).

    Split on newlines only: other line breaks (NEL, FF) are shown escaped.
    """
    body = new_text.strip()
    if not body:
        # nothing new was found apart from quotes: the text without its quoted lines
        body = "\n".join(ln for ln in text.split("\n") if not ln.lstrip().startswith(">"))
        body = body.strip()
    lines = body.split("\n")
    out = [_INDENT + ln if ln.strip() else "" for ln in lines[:_SHOW_LINES]]
    if len(lines) > _SHOW_LINES:
        out.append(f"{_INDENT}[... {len(lines) - _SHOW_LINES} more lines]")
    if text.strip() and text.strip() != body:
        out.append(f"{_INDENT}[quoted history or signature left out; show --json has it all]")
    return out


def cmd_outbox(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.retry is not None:
        _stored_id(args.retry, f"no failed outbox row {args.retry}")
    from maild.store.queries import outbox_rows

    async def go(sessions: Any) -> list[dict[str, Any]]:
        from maild.store.queries import requeue_outbox

        async with sessions() as session:
            if args.retry is not None:
                async with session.begin():
                    if not await requeue_outbox(session, args.retry, datetime.now(UTC)):
                        raise UserError(f"no failed outbox row {args.retry}")
                return []
            rows: list[dict[str, Any]] = await outbox_rows(session, failed_only=args.failed)
            return rows

    rows = _run(_with_store(config, go))
    if args.retry is not None:
        print(f"outbox row {args.retry} queued again")
        return 0
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("outbox is empty")
        return 0
    table = [
        (
            str(r["id"]),
            f"#{r['ticket']}" if r["ticket"] else "-",
            r["template"],
            r["status"],
            str(r["attempts"]),
            _short(", ".join(r["to"]), 40),
            _short(r["last_error"], 40),
        )
        for r in rows
    ]
    _out(_table(table, ("ID", "TICKET", "TEMPLATE", "STATUS", "TRIES", "TO", "ERROR")))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    config = _load(args)
    from maild.store.queries import quarantine_rows

    async def go(sessions: Any) -> list[dict[str, Any]]:
        async with sessions() as session:
            rows: list[dict[str, Any]] = await quarantine_rows(session)
            return rows

    rows = _run(_with_store(config, go))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("quarantine is empty")
        return 0
    table = [
        (
            str(r["id"]),
            _local(r["at"], config.hours.timezone),
            _short(r["source"], 30),
            _short(r["reason"], 70),
        )
        for r in rows
    ]
    _out(_table(table, ("ID", "AT", "SOURCE", "REASON")))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from maild.cli.demo import run_demo

    return run_demo(Path(args.dir).resolve(), args.scenario)


def cmd_run(args: argparse.Namespace) -> int:
    from maild.config import config_path_from

    path = config_path_from(args.config)
    try:
        config = _load(args)
    except UserError as exc:  # missing or unreadable: EX_CONFIG, which systemd does not restart
        print(f"Error: {exc}", file=sys.stderr)
        return EX_CONFIG
    from maild.service.daemon import run_daemon
    from maild.store.db import SchemaError

    try:
        return run_daemon(config, path)
    except SchemaError as exc:
        raise UserError(str(exc)) from exc


EX_UNHEALTHY = 3


def _health_problems(config: Config, data: dict[str, Any], now: datetime) -> list[str]:
    """Why the daemon looks unhealthy, judged from what it left in the store."""
    problems = []
    tz = config.hours.timezone
    daemon = data["daemon"]
    if daemon is None:
        problems.append("no daemon is running against this store (no heartbeat)")
    else:
        beat = datetime.fromisoformat(daemon["heartbeat_at"])
        if now - beat > timedelta(minutes=2):
            problems.append(
                f"no heartbeat since {_local(daemon['heartbeat_at'], tz)}: "
                "the daemon is not running"
            )
    mailbox = config.mailbox
    if mailbox is not None and daemon is not None:
        # with IDLE a quiet mailbox is re-synced at each IDLE renewal (under 30 min)
        limit = max(mailbox.poll_interval * 3, timedelta(minutes=35 if mailbox.idle else 10))
        last = data["last_imap_sync_at"]
        if last is None or now - datetime.fromisoformat(last) > limit:
            problems.append(f"no successful IMAP sync since {_local(last, tz, 'ever')}")
    behind = data["next_scheduler_action_at"]
    if (
        daemon is not None
        and behind
        and now - datetime.fromisoformat(behind) > timedelta(minutes=10)
    ):
        problems.append(f"the scheduler is behind: work was due at {_local(behind, tz)}")
    oldest = data["outbox"]["oldest_queued_at"]
    if oldest is not None and now - datetime.fromisoformat(oldest) > timedelta(hours=1):
        problems.append(f"outbox backlog: the oldest queued mail is from {_local(oldest, tz)}")
    return problems


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.store.queries import health

    async def go(sessions: Any) -> dict[str, Any]:
        async with sessions() as session:
            data: dict[str, Any] = await health(session, now)
            return data

    data = _run(_with_store(config, go))
    problems = _health_problems(config, data, now)
    data["healthy"] = not problems
    data["problems"] = problems
    if args.json:
        _print_json(data)
    else:
        state = "healthy" if not problems else "UNHEALTHY"
        tz = config.hours.timezone
        print(f"maild: {state} (times in {tz})")
        for inst in data["instances"]:
            role = inst["role"]
            beat = _local(inst["heartbeat_at"], tz)
            print(f"  instance {inst['instance']} ({role}), heartbeat {beat}")
        if data["leader"] is not None:
            lead = data["leader"]
            print(
                f"  leader lease: {lead['holder']} since {_local(lead['since'], tz)}, "
                f"until {_local(lead['expires_at'], tz)}"
            )
        print(f"  last IMAP sync: {_local(data['last_imap_sync_at'], tz, 'never')}")
        box = data["outbox"]
        print(
            f"  outbox: {box['queued']} queued (oldest {_local(box['oldest_queued_at'], tz)}), "
            f"{box['failed']} failed"
        )
        print(f"  quarantine: {_plural(data['quarantined'], 'mail')}")
        print(f"  next scheduler action: {_local(data['next_scheduler_action_at'], tz, 'none')}")
        for problem in problems:
            print(f"  problem: {problem}")
    return 0 if not problems else EX_UNHEALTHY


def cmd_tick(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.service.pipeline import Pipeline
    from maild.service.scheduler import PassResult, Scheduler

    async def go(sessions: Any) -> tuple[PassResult, list[dict[str, Any]]]:
        pipeline = Pipeline(config, sessions)
        top = await _outbox_top(sessions)
        result = await Scheduler(config, sessions, pipeline).run_pass(now)
        return result, await _mail_queued_after(sessions, top)

    # --dry-run rehearses: the same pass, in a transaction that is rolled back
    result, mails = _run((_with_rehearsal if args.dry_run else _with_store)(config, go))
    if args.json:
        data: dict[str, Any] = {"at": now.isoformat(), "sent": result.sent}
        data["actions"] = result.actions
        data["mails"] = [{k: m[k] for k in ("ticket", "template", "to")} for m in mails]
        data["dry_run"] = args.dry_run
        _print_json(data)
        return 0
    prefix = "would do: " if args.dry_run else ""
    for line in result.actions:
        _out(prefix + line)
    for line in _mail_lines(mails, "would queue" if args.dry_run else "queued"):
        _out(line)
    when = _local(now, config.hours.timezone) + f" {config.hours.timezone}"
    actions = _plural(len(result.actions), "action")
    sent = _plural(result.sent, "mail")
    if args.dry_run:
        print(f"dry run as of {when}: {actions}, {sent} would be queued; nothing was changed")
    else:
        print(f"{actions}, {sent} queued as of {when}")
        if result.sent and now > datetime.now(UTC) + timedelta(minutes=1):
            print(
                f"note: that mail is dated {when} and waits until then; "
                "`maild tick --dry-run --now …` rehearses without acting",
                file=sys.stderr,
            )
    return 0


def cmd_roster(args: argparse.Namespace) -> int:
    config = _load(args)
    value = getattr(args, "at", None)
    at = parse_instant(value, config.hours.timezone) if value else datetime.now(UTC)
    from maild.core.roster import duty_at

    duty = duty_at(config, at)
    data = {
        "at": at.isoformat(),
        "on_duty": list(duty.on_duty),
        "next_change": (
            {"at": duty.next_change.astimezone(UTC).isoformat(), "on_duty": list(duty.next_on_duty)}
            if duty.next_change is not None
            else None
        ),
    }
    if args.json:
        _print_json(data)
        return 0
    print(f"on duty: {', '.join(duty.on_duty) or 'nobody'}")
    if duty.next_change is not None:
        local = duty.next_change.astimezone(ZoneInfo(config.hours.timezone))
        going = [n for n in duty.on_duty if n not in duty.next_on_duty]
        coming = [n for n in duty.next_on_duty if n not in duty.on_duty]
        print(
            f"next change {local:%a %Y-%m-%d %H:%M %Z}: "
            f"{', '.join(going) or 'nobody'} {'rotates' if len(going) < 2 else 'rotate'} off, "
            f"{', '.join(coming) or 'nobody'} {'comes' if len(coming) < 2 else 'come'} on"
            f" (then on duty: {', '.join(duty.next_on_duty) or 'nobody'})"
        )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    since = parse_instant(args.since, config.hours.timezone) if args.since else None
    from maild.store.reports import stats

    async def go(sessions: Any) -> dict[str, Any]:
        async with sessions() as session:
            data: dict[str, Any] = await stats(
                session, config, now, since=since, older_than_days=args.older_than
            )
            return data

    data = _run(_with_store(config, go))
    if args.json:
        _print_json(data)
        return 0
    start = _local(data["since"], config.hours.timezone)[:10]  # the local date, not UTC's
    _out(f"since {start}: {data['opened_this_week']} opened, {data['closed_this_week']} closed")
    _out(f"all time: {data['opened_total']} opened, {data['closed_total']} closed")
    mean, median = data["mean_hours_to_resolution"], data["median_hours_to_resolution"]
    if mean is not None:
        _out(f"time to resolution: mean {mean} h, median {median} h (working hours)")
    _out(
        f"open tickets older than {args.older_than} days: "
        + (", ".join(f"#{a['id']} ({a['age_days']} d)" for a in data["aged"]) or "none")
    )
    breaches = data["sla_breaches"]
    _out("SLA breaches: " + (", ".join(f"{k} {v}" for k, v in breaches.items()) or "none"))
    for row in data["budget"]:
        budget = row["budget_hours"]
        left = f", {budget - row['used_hours']:.1f} h left" if budget is not None else ""
        if row.get("percent_used") is not None:
            left += f", {row['percent_used']} % used"
        if row.get("warning"):
            left += f"  ** past {row['warning']} of the budget **"
        _out(f"budget {row['community']}: {row['used_hours']} h of {budget or '-'} h{left}")
    return 0


def _operator() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"


def _operate(args: argparse.Namespace, tags: str, note: str | None = None) -> int:
    config = _load(args)
    now = _now(args, config)
    _stored_id(args.id, f"no ticket #{args.id}")
    actor = _operator()
    from maild.service.operator import Operator

    async def go(sessions: Any) -> Any:
        top = await _outbox_top(sessions)
        try:
            done = await Operator(config, sessions).operate(args.id, tags, actor, now, note=note)
        except LookupError as exc:
            raise UserError(str(exc)) from exc
        return done, await _mail_queued_after(sessions, top)

    (planned, errors), mails = _run(_with_store(config, go))
    if errors:
        for line in errors:
            print(f"Error: {line}", file=sys.stderr)
        return 1
    lines = planned.describe() if planned is not None else []
    if note:
        # the [note] tag that carries it would say "kept as an internal note"
        lines = [line for line in lines if "internal note" not in line] + ["note added"]
    _out(f"#{args.id}: " + ("; ".join(lines) if lines else "nothing to change"))
    for line in _mail_lines([m for m in mails if m["ticket"] == args.id], "queued"):
        _out(line)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    return _operate(args, " ".join(args.tags))


def cmd_resolve(args: argparse.Namespace) -> int:
    return _operate(args, "[status=resolved]" + (" [silent]" if args.silent else ""))


def cmd_close(args: argparse.Namespace) -> int:
    return _operate(args, "[status=closed]" + (" [silent]" if args.silent else ""))


def cmd_reopen(args: argparse.Namespace) -> int:
    return _operate(args, "[status=open]")


def cmd_assign(args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or any(c in name for c in "[];=") or name.lower() == "me":
        raise UserError(f"not a steward name: {args.name!r} (use a name from [[stewards]] or none)")
    return _operate(args, f"[assign={name}]")


def cmd_note(args: argparse.Namespace) -> int:
    text = " ".join(args.text).strip()
    if not text:
        raise UserError("a note needs text")
    return _operate(args, "[note]", note=text)


def cmd_replies(args: argparse.Namespace) -> int:
    config = _load(args)
    from maild.mail.render import Renderer

    replies = Renderer(config).replies()
    if args.json:
        _print_json(
            [
                {
                    "name": r.name,
                    "first_line": r.first_line,
                    "path": str(r.path),
                    "override": r.override,
                }
                for r in replies
            ]
        )
        return 0
    if not replies:
        print("no canned replies")
        return 0
    width = max(len(r.name) for r in replies)
    for r in replies:
        mark = " (override)" if r.override else ""
        print(f"{r.name.ljust(width)}  {r.first_line}{mark}")
    return 0


def cmd_postmortem(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.store.reports import postmortem

    async def go(sessions: Any) -> dict[str, Any] | None:
        async with sessions() as session:
            data: dict[str, Any] | None = await postmortem(session, config, args.id, now)
            return data

    data = _run(_with_store(config, go))
    if data is None:
        raise UserError(f"no ticket #{args.id}")
    if data["ticket"]["type"] != "incident":
        kind = data["ticket"]["type"] or "not triaged"
        raise UserError(f"#{args.id} is not an incident ({kind}); a post-mortem is for incidents")
    if args.json:
        _print_json(data)
        return 0
    from maild.mail.render import Renderer, TemplateError
    from maild.store.reports import postmortem_context

    try:
        rendered = Renderer(config).render("postmortem", postmortem_context(config, data))
    except TemplateError as exc:
        raise UserError(str(exc)) from exc
    sys.stdout.write(_safe(rendered.text))
    return 0


def cmd_attachment(args: argparse.Namespace) -> int:
    config = _load(args)
    from maild.cli.export import write_attachments
    from maild.store.queries import ticket_attachments

    async def go(sessions: Any) -> list[dict[str, Any]] | None:
        async with sessions() as session:
            items: list[dict[str, Any]] | None = await ticket_attachments(session, args.id)
            return items

    items = _run(_with_store(config, go))
    if items is None:
        raise UserError(f"no ticket #{args.id}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"not a folder: {out}")
    try:
        written = write_attachments(items, out)
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}") from exc
    if args.json:
        _print_json(written)
        return 0
    if not written:
        print(f"#{args.id} has no attachments")
        return 0
    for row in written:
        print(f"wrote {row['path']} ({row['content_type']}, {row['size']} bytes)")
    return 0


# -- parser ------------------------------------------------------------------

COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {}


def _command(
    sub: Any, name: str, fn: Callable[[argparse.Namespace], int], help_text: str, example: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog="example:\n" + textwrap.indent(example, "  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=fn)
    # `maild queue --config X` as well as `maild --config X queue`: operators type
    # options after the command too (SUPPRESS keeps the one given before it)
    parser.add_argument(
        "--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    COMMANDS[name] = (fn, help_text, example)
    return parser


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _now_option(parser: argparse.ArgumentParser) -> None:
    # for rehearsals and tests: the command's idea of now (any offset)
    parser.add_argument("--now", metavar="ISO8601", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maild",
        description="maild: an email-driven helpdesk daemon.",
        epilog="example:\n  maild --config /etc/maild/maild.toml queue",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $MAILD_CONFIG, then /etc/maild/maild.toml)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors in the log")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr as text (default) or one JSON object per line",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(
        sub,
        "demo",
        cmd_demo,
        "a self-contained local instance for a first look: no mail server, no config needed",
        "maild demo\nmaild demo --scenario",
    )
    p.add_argument("--dir", default="maild-demo", help="folder for config, store and mail")
    p.add_argument("--scenario", action="store_true", help="play a short scripted conversation")

    _command(
        sub,
        "run",
        cmd_run,
        "the daemon: IMAP/LMTP ingestion, the outbox sender and the scheduler, until SIGTERM",
        "maild --config /etc/maild/maild.toml run",
    )

    _command(
        sub,
        "check-config",
        cmd_check_config,
        "validate the config and print each problem with its key path",
        "maild --config maild.toml check-config",
    )

    db = _command(
        sub,
        "db",
        lambda a: _usage(db),
        "database schema management",
        "maild db upgrade",
    )
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    _command(db_sub, "upgrade", cmd_db_upgrade, "apply schema migrations", "maild db upgrade")
    COMMANDS["db upgrade"] = COMMANDS.pop("upgrade")

    p = _command(
        sub,
        "ingest",
        cmd_ingest,
        "process .eml or mbox files through the pipeline the daemon uses",
        "maild ingest request.eml replies.mbox\nmaild ingest --dry-run --json - < mail.eml",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".eml or mbox file; - for stdin")
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--json", action="store_true", help="one JSON object per mail")
    p.add_argument("--now", metavar="ISO8601", help="process as of this time")

    p = _command(
        sub,
        "explain",
        cmd_explain,
        "how one mail would be classified and threaded, and what would be sent; changes nothing",
        "maild explain reply.eml",
    )
    p.add_argument("file", metavar="FILE", help=".eml file (or - for stdin)")
    _json_option(p)
    p.add_argument("--now", metavar="ISO8601", help="explain as of this time")

    p = _command(
        sub,
        "queue",
        cmd_queue,
        "open tickets, most urgent first (50 unless --limit)",
        "maild queue --status waiting --community pangeo\nmaild queue --limit 0\n"
        "maild queue --overdue --json",
    )
    p.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        help="only tickets in this status (repeat for several); "
        "resolved and closed ones need no --all",
    )
    p.add_argument(
        "--type",
        action="append",
        choices=(*TYPES, "null"),
        help="only tickets of this type; null: not yet triaged (repeat for several)",
    )
    p.add_argument("--community", metavar="NAME", help="only this community's tickets")
    p.add_argument("--overdue", action="store_true", help="only tickets past a due time")
    p.add_argument("--all", action="store_true", help="include resolved and closed tickets")
    p.add_argument(
        "--limit",
        type=_how_many,
        metavar="N",
        help=f"show the N most urgent (default: {QUEUE_LIMIT}, and all with --json; "
        "0: all); filters apply first",
    )
    _json_option(p)
    _now_option(p)

    p = _command(sub, "show", cmd_show, "one ticket with its timeline", "maild show 42 --json")
    p.add_argument("id", type=_ticket_id, metavar="ID")
    _json_option(p)
    _now_option(p)

    for name, fn, what in (
        ("resolve", cmd_resolve, "mark a ticket resolved; the requester is told it closes later"),
        ("close", cmd_close, "close a ticket; the requester gets the closing mail"),
        ("reopen", cmd_reopen, "reopen a resolved or closed ticket"),
    ):
        p = _command(sub, name, fn, what, f"maild {name} 42")
        p.add_argument("id", type=_ticket_id, metavar="ID")
        if name != "reopen":
            p.add_argument("--silent", action="store_true", help="tell the requester nothing")
        _now_option(p)

    p = _command(
        sub,
        "assign",
        cmd_assign,
        "assign a ticket to a steward (none clears)",
        "maild assign 42 alice\nmaild assign 42 none",
    )
    p.add_argument("id", type=_ticket_id, metavar="ID")
    p.add_argument("name", metavar="NAME")
    _now_option(p)

    p = _command(
        sub,
        "note",
        cmd_note,
        "add an internal note (never sent to the requester)",
        "maild note 42 'called them, waiting for logs'",
    )
    p.add_argument("id", type=_ticket_id, metavar="ID")
    p.add_argument("text", nargs="+", metavar="TEXT")
    _now_option(p)

    p = _command(
        sub,
        "tag",
        cmd_tag,
        "apply subject-tag commands to a ticket, as a steward's mail would",
        "maild tag 42 '[type=incident] [ic=alice] [priority=urgent]'",
    )
    p.add_argument("id", type=_ticket_id, metavar="ID")
    p.add_argument("tags", nargs="+", metavar="TAGS")
    _now_option(p)

    p = _command(
        sub,
        "status",
        cmd_status,
        "is the daemon running and healthy? exit 0 if so, 3 if not (for monitoring)",
        "maild status\nmaild status --json",
    )
    _json_option(p)
    _now_option(p)

    p = _command(
        sub,
        "tick",
        cmd_tick,
        "run one scheduler pass (auto-close, incident updates, reminders) now or as of --now",
        "maild tick --dry-run --now 2026-12-01T09:00:00-06:00\nmaild tick",
    )
    p.add_argument(
        "--now",
        metavar="ISO8601",
        help="the pass's idea of now (any offset); without --dry-run it really acts, "
        "and the mail it queues waits until then",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="rehearse: show what the pass would do and queue, change nothing",
    )
    _json_option(p)

    p = _command(
        sub,
        "roster",
        cmd_roster,
        "stewards on duty now (or at --at) and the next change",
        "maild roster\nmaild roster --at 2026-12-24 --json",
    )
    p.add_argument("--at", metavar="DATE", help="ISO date or time; a bare date is local midnight")
    _json_option(p)

    p = _command(
        sub,
        "stats",
        cmd_stats,
        "the weekly report: opened/closed, time to resolution, aged tickets, SLA, budgets",
        "maild stats\nmaild stats --since 2026-11-01 --json",
    )
    p.add_argument("--since", metavar="DATE", help="period start (default: this week's Monday)")
    p.add_argument(
        "--older-than",
        type=int,
        default=14,
        metavar="DAYS",
        help="list open tickets older than this (default 14)",
    )
    _json_option(p)
    _now_option(p)

    p = _command(
        sub,
        "outbox",
        cmd_outbox,
        "outgoing mail and its delivery state",
        "maild outbox --failed\nmaild outbox --retry 17",
    )
    p.add_argument("--failed", action="store_true", help="only failed or bounced mail")
    p.add_argument("--retry", type=int, metavar="ID", help="queue a failed row again")
    _json_option(p)

    p = _command(
        sub,
        "quarantine",
        cmd_quarantine,
        "mail that could not be processed, with the reason",
        "maild quarantine --json",
    )
    _json_option(p)

    p = _command(
        sub,
        "replies",
        cmd_replies,
        "the canned replies a steward can send with [reply=NAME], with their first line",
        "maild replies\nmaild replies --json",
    )
    _json_option(p)

    p = _command(
        sub,
        "postmortem",
        cmd_postmortem,
        "a Markdown outline for an incident's post-mortem, built from its timeline",
        "maild postmortem 42 > postmortem-42.md\nmaild postmortem 42 --json",
    )
    p.add_argument("id", type=_ticket_id, metavar="ID")
    _json_option(p)
    _now_option(p)

    p = _command(
        sub,
        "attachment",
        cmd_attachment,
        "write a ticket's stored attachments into a folder, never outside it",
        "maild attachment 42\nmaild attachment 42 --out ~/tickets/42 --json",
    )
    p.add_argument("id", type=_ticket_id, metavar="ID")
    p.add_argument(
        "--out", default=".", metavar="DIR", help="folder to write into (default: current)"
    )
    _json_option(p)
    return parser


# Row ids are `integer` columns: 32 bits in PostgreSQL (SQLite's 64 are never
# reached by counting up from 1), so a larger number names no row.
_MAX_ID = 2**31 - 1


def _stored_id(value: int, missing: str) -> None:
    """Refuse, with ``missing``, an id no row can have (the store would fail on it)."""
    if not 1 <= value <= _MAX_ID:
        raise UserError(missing)


def _ticket_id(text: str) -> int:
    try:
        value = int(text.lstrip("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a ticket number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a ticket number: {text!r}")
    return value


def _how_many(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of tickets: {text!r}")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("maild")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """``--version``: asks importlib.metadata (~35 ms) only when given, not on every run."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> NoReturn:
        print(f"maild {_version()}")
        parser.exit()


def _usage(parser: argparse.ArgumentParser) -> NoReturn:
    parser.print_usage(sys.stderr)
    raise SystemExit(2)


def _setup_logging(args: argparse.Namespace) -> None:
    from maild.logs import setup

    # the daemon tells what it does by default; one-shot commands only warn
    scripted = getattr(args, "scenario", False)  # the scenario tells its own story
    base = logging.INFO if args.command in ("run", "demo") and not scripted else logging.WARNING
    level = logging.ERROR if args.quiet else base - 10 * min(args.verbose, 2)
    setup(max(level, logging.DEBUG), args.log_format)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `maild` alone: what can it do?
        parser.print_help()
        return 0
    _setup_logging(args)
    # after parse_args: `--help` and usage errors never pay for the config module
    from maild.config import ConfigError, config_path_from

    try:
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        # the reader (`| head`) stopped early: end quietly, and keep Python's
        # own flush at exit from failing on the same pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ConfigError as exc:
        print(f"Error: bad config {config_path_from(args.config)}:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EX_CONFIG if args.command == "run" else 1
    except UserError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything else: one line, and the details in the log
        log.debug("unexpected error", exc_info=True)
        print(f"Error: {type(exc).__name__}: {exc} (run with -v -v for details)", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
