"""The ``maild`` command: a thin layer over the library.

Exit status: 0 on success, 1 on a user error (one line ``Error: …`` on stderr,
no traceback), 2 on a usage error (argparse), 78 when ``maild run`` is given a
bad config (so systemd does not restart-loop). Every listing takes ``--json``.
Only this module prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO
from zoneinfo import ZoneInfo

from maild.config import Config, ConfigError, config_path_from, load_config

__all__ = ["main"]

log = logging.getLogger("maild")

EX_CONFIG = 78


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit 1."""


# -- helpers -----------------------------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    path = config_path_from(args.config)
    if not path.exists():
        raise UserError(
            f"no config at {path} (pass --config PATH or set MAILD_CONFIG; see config.example.toml)"
        )
    return load_config(path)


def _now(args: argparse.Namespace, config: Config | None = None) -> datetime:
    value = getattr(args, "now", None)
    if not value:
        return datetime.now(UTC)
    return parse_instant(value, config.hours.timezone if config else "UTC")


def parse_instant(value: str, timezone: str) -> datetime:
    """ISO 8601 with any offset, or a bare date meaning midnight in ``timezone``."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UserError(f"not an ISO 8601 date or time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(timezone))
    return parsed.astimezone(UTC)


def _print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    # indented for people; compact (the C encoder, many times faster) for scripts
    indent = 2 if out.isatty() else None
    out.write(json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def _short(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
    path = config_path_from(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    from maild.render import Renderer, TemplateError, sample_context

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
    print(f"{path}: OK ({len(config.stewards)} stewards, {len(config.communities)} communities)")
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

    before, after = asyncio.run(go())
    if before == after:
        print(f"database already at revision {after}")
    else:
        print(f"database upgraded from {before or 'empty'} to revision {after}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.pipeline import Outcome, Pipeline

    async def go(sessions: Any) -> list[Outcome]:
        pipeline = Pipeline(config, sessions)
        results = []
        for label, raw in _iter_inputs(args.files):
            outcome = await pipeline.ingest(raw, label, now, dry_run=args.dry_run)
            results.append(outcome)
            if not args.json:
                _print_outcome(outcome, args.dry_run)
        return results

    results = asyncio.run(_with_store(config, go))
    if args.json:
        _print_json([r.as_json() for r in results])
    return 0


def _print_outcome(outcome: Any, dry_run: bool) -> None:
    ticket = f"#{outcome.ticket}" if outcome.ticket is not None else "-"
    prefix = "would be " if dry_run else ""
    print(f"{outcome.source}: {prefix}{outcome.action} {ticket} ({outcome.reason})")
    for mail in outcome.sends:
        verb = "would send" if dry_run else "queued"
        print(f"  {verb} {mail.template} to {', '.join(mail.to)}")
    for why in outcome.suppressed:
        print(f"  not sent: {why}")


def cmd_explain(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.pipeline import Outcome, Pipeline

    async def go(sessions: Any) -> list[Outcome]:
        pipeline = Pipeline(config, sessions)
        return [
            await pipeline.ingest(raw, label, now, dry_run=True)
            for label, raw in _iter_inputs([args.file])
        ]

    results = asyncio.run(_with_store(config, go))
    if args.json:
        _print_json([_explain_json(o) for o in results])
        return 0
    for outcome in results:
        print(_explain_text(outcome))
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
    for mail in outcome.sends:
        lines.append(f"  would send {mail.template} to {', '.join(mail.to)}: {mail.subject}")
    for why in outcome.suppressed:
        lines.append(f"  would not send: {why}")
    if not outcome.sends and not outcome.suppressed:
        lines.append("  would send nothing")
    return "\n".join(lines)


def cmd_queue(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.store.queries import queue

    async def go(sessions: Any) -> list[dict[str, Any]]:
        async with sessions() as session:
            rows: list[dict[str, Any]] = await queue(
                session,
                now,
                statuses=args.status,
                types=args.type,
                community=args.community,
                overdue=args.overdue,
                include_all=args.all,
            )
            return rows

    rows = asyncio.run(_with_store(config, go))
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
            _due_text(r["next_due"]),
            _short(r["requester"], 28),
            _short(r["subject"], 50),
        )
        for r in rows
    ]
    print(
        _table(
            table,
            ("ID", "STATUS", "TYPE", "PRIO", "COMMUNITY", "ASSIGNEE", "DUE", "FROM", "SUBJECT"),
        )
    )
    return 0


def _due_text(due: dict[str, Any] | None) -> str:
    if not due:
        return "-"
    mark = "BREACHED " if due["breached"] else ""
    return f"{mark}{due['kind']} {due['at'][:16].replace('T', ' ')}"


def cmd_show(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.store.queries import ticket_detail

    async def go(sessions: Any) -> dict[str, Any] | None:
        async with sessions() as session:
            detail: dict[str, Any] | None = await ticket_detail(session, args.id, now)
            return detail

    detail = asyncio.run(_with_store(config, go))
    if detail is None:
        raise UserError(f"no ticket #{args.id}")
    if args.json:
        _print_json(detail)
        return 0
    print(_show_text(detail))
    return 0


def _show_text(t: dict[str, Any]) -> str:
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
        f"  created {t['created_at']}, updated {t['updated_at']}, "
        f"{t['time_spent_minutes']} min logged"
    )
    lines.append("")
    for ev in t["timeline"]:
        at = ev["at"][:16].replace("T", " ")
        kind = ev["kind"]
        if kind in ("received", "sent") and "message_id" in ev:
            arrow = "<-" if kind == "received" else "->"
            who = ev["from"] if kind == "received" else ", ".join(ev["to"])
            extra = f" [{ev['template']}, {ev['delivery']}]" if kind == "sent" else ""
            lines.append(f"{at}  {arrow} {who}{extra}: {ev['subject']}")
            body = ev.get("new_text") or ev.get("text") or ""
            if kind == "received":
                lines.extend("      " + ln for ln in body.strip().splitlines()[:40])
            for att in ev.get("attachments", []):
                size = f"{att['content_type']}, {att['size']} bytes"
                lines.append(f"      [attachment] {att['filename']} ({size})")
        elif kind == "change":
            lines.append(
                f"{at}  {ev['actor']}: {ev['field']} {ev['old'] or '-'} -> {ev['new'] or '-'}"
            )
        else:
            lines.append(f"{at}  {kind} by {ev['actor']}: {ev.get('text', '')}")
    return "\n".join(lines)


def cmd_outbox(args: argparse.Namespace) -> int:
    config = _load(args)
    from maild.store.queries import outbox_rows

    async def go(sessions: Any) -> list[dict[str, Any]]:
        from sqlalchemy import update

        from maild.store.models import Outbox

        async with sessions() as session:
            if args.retry is not None:
                async with session.begin():
                    result = await session.execute(
                        update(Outbox)
                        .where(Outbox.id == args.retry, Outbox.status.in_(("failed", "bounced")))
                        .values(status="queued", next_attempt_at=datetime.now(UTC), last_error=None)
                    )
                    if result.rowcount == 0:
                        raise UserError(f"no failed outbox row {args.retry}")
                return []
            rows: list[dict[str, Any]] = await outbox_rows(session, failed_only=args.failed)
            return rows

    rows = asyncio.run(_with_store(config, go))
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
    print(_table(table, ("ID", "TICKET", "TEMPLATE", "STATUS", "TRIES", "TO", "ERROR")))
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    config = _load(args)
    from maild.store.queries import quarantine_rows

    async def go(sessions: Any) -> list[dict[str, Any]]:
        async with sessions() as session:
            rows: list[dict[str, Any]] = await quarantine_rows(session)
            return rows

    rows = asyncio.run(_with_store(config, go))
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("quarantine is empty")
        return 0
    table = [
        (str(r["id"]), r["at"][:16], _short(r["source"], 30), _short(r["reason"], 70)) for r in rows
    ]
    print(_table(table, ("ID", "AT", "SOURCE", "REASON")))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from maild.demo import run_demo

    return run_demo(Path(args.dir).resolve(), args.scenario)


def cmd_run(args: argparse.Namespace) -> int:
    path = config_path_from(args.config)
    config = _load(args)
    from maild.daemon import run_daemon
    from maild.store.db import SchemaError

    try:
        return run_daemon(config, path)
    except SchemaError as exc:
        raise UserError(str(exc)) from exc


EX_UNHEALTHY = 3


def _health_problems(config: Config, data: dict[str, Any], now: datetime) -> list[str]:
    """Why the daemon looks unhealthy, judged from what it left in the store."""
    problems = []
    daemon = data["daemon"]
    if daemon is None:
        problems.append("no daemon is running against this store (no heartbeat)")
    else:
        beat = datetime.fromisoformat(daemon["heartbeat_at"])
        if now - beat > timedelta(minutes=2):
            problems.append(
                f"no heartbeat since {daemon['heartbeat_at']}: the daemon is not running"
            )
    mailbox = config.mailbox
    if mailbox is not None and daemon is not None:
        # with IDLE a quiet mailbox is re-synced at each IDLE renewal (under 30 min)
        limit = max(mailbox.poll_interval * 3, timedelta(minutes=35 if mailbox.idle else 10))
        last = data["last_imap_sync_at"]
        if last is None or now - datetime.fromisoformat(last) > limit:
            problems.append(f"no successful IMAP sync since {last or 'ever'}")
    behind = data["next_scheduler_action_at"]
    if (
        daemon is not None
        and behind
        and now - datetime.fromisoformat(behind) > timedelta(minutes=10)
    ):
        problems.append(f"the scheduler is behind: work was due at {behind}")
    oldest = data["outbox"]["oldest_queued_at"]
    if oldest is not None and now - datetime.fromisoformat(oldest) > timedelta(hours=1):
        problems.append(f"outbox backlog: the oldest queued mail is from {oldest}")
    return problems


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.store.queries import health

    async def go(sessions: Any) -> dict[str, Any]:
        async with sessions() as session:
            data: dict[str, Any] = await health(session, now)
            return data

    data = asyncio.run(_with_store(config, go))
    problems = _health_problems(config, data, now)
    data["healthy"] = not problems
    data["problems"] = problems
    if args.json:
        _print_json(data)
    else:
        state = "healthy" if not problems else "UNHEALTHY"
        print(f"maild: {state}")
        for inst in data["instances"]:
            role = inst["role"]
            print(f"  instance {inst['instance']} ({role}), heartbeat {inst['heartbeat_at']}")
        if data["leader"] is not None:
            lead = data["leader"]
            print(
                f"  leader lease: {lead['holder']} since {lead['since']}, "
                f"until {lead['expires_at']}"
            )
        print(f"  last IMAP sync: {data['last_imap_sync_at'] or 'never'}")
        box = data["outbox"]
        print(
            f"  outbox: {box['queued']} queued (oldest {box['oldest_queued_at'] or '-'}), "
            f"{box['failed']} failed"
        )
        print(f"  quarantine: {data['quarantined']} mails")
        print(f"  next scheduler action: {data['next_scheduler_action_at'] or 'none'}")
        for problem in problems:
            print(f"  problem: {problem}")
    return 0 if not problems else EX_UNHEALTHY


def cmd_tick(args: argparse.Namespace) -> int:
    config = _load(args)
    now = _now(args, config)
    from maild.pipeline import Pipeline
    from maild.scheduler import PassResult, Scheduler

    async def go(sessions: Any) -> PassResult:
        pipeline = Pipeline(config, sessions)
        return await Scheduler(config, sessions, pipeline).run_pass(now)

    result = asyncio.run(_with_store(config, go))
    if args.json:
        _print_json({"at": now.isoformat(), "sent": result.sent, "actions": result.actions})
        return 0
    for line in result.actions:
        print(line)
    print(f"{len(result.actions)} actions, {result.sent} mails queued as of {now.isoformat()}")
    return 0


def cmd_roster(args: argparse.Namespace) -> int:
    config = _load(args)
    value = getattr(args, "at", None)
    at = parse_instant(value, config.hours.timezone) if value else datetime.now(UTC)
    from maild.roster import duty_at

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
        print(f"next change: {local:%a %Y-%m-%d %H:%M %Z} -> {', '.join(duty.next_on_duty)}")
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

    data = asyncio.run(_with_store(config, go))
    if args.json:
        _print_json(data)
        return 0
    print(
        f"since {data['since'][:10]}: {data['opened_this_week']} opened, "
        f"{data['closed_this_week']} closed"
    )
    print(f"all time: {data['opened_total']} opened, {data['closed_total']} closed")
    mean, median = data["mean_hours_to_resolution"], data["median_hours_to_resolution"]
    if mean is not None:
        print(f"time to resolution: mean {mean} h, median {median} h (working hours)")
    print(
        f"open tickets older than {args.older_than} days: "
        + (", ".join(f"#{a['id']} ({a['age_days']} d)" for a in data["aged"]) or "none")
    )
    breaches = data["sla_breaches"]
    print("SLA breaches: " + (", ".join(f"{k} {v}" for k, v in breaches.items()) or "none"))
    for row in data["budget"]:
        budget = row["budget_hours"]
        left = f", {budget - row['used_hours']:.1f} h left" if budget is not None else ""
        print(f"budget {row['community']}: {row['used_hours']} h of {budget or '-'} h{left}")
    return 0


def _operator() -> str:
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "operator"


def _operate(args: argparse.Namespace, tags: str, note: str | None = None) -> int:
    config = _load(args)
    now = _now(args, config)
    actor = _operator()
    from maild.pipeline import Pipeline

    async def go(sessions: Any) -> Any:
        try:
            return await Pipeline(config, sessions).operate(args.id, tags, actor, now, note=note)
        except LookupError as exc:
            raise UserError(str(exc)) from exc

    planned, errors = asyncio.run(_with_store(config, go))
    if errors:
        for line in errors:
            print(f"Error: {line}", file=sys.stderr)
        return 1
    lines = planned.describe() if planned is not None else []
    if note:
        lines.append("note added")
    print(f"#{args.id}: " + ("; ".join(lines) if lines else "nothing to change"))
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
        "open tickets, most urgent first",
        "maild queue --status waiting --community pangeo\nmaild queue --overdue --json",
    )
    p.add_argument(
        "--status", action="append", choices=("new", "open", "waiting", "resolved", "closed")
    )
    p.add_argument("--type", action="append", choices=("incident", "change", "guidance", "null"))
    p.add_argument("--community", metavar="NAME")
    p.add_argument("--overdue", action="store_true", help="only tickets past a due time")
    p.add_argument("--all", action="store_true", help="include resolved and closed tickets")
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
        "maild tick\nmaild tick --now 2026-12-01T09:00:00-06:00",
    )
    p.add_argument("--now", metavar="ISO8601", help="the pass's idea of now (any offset)")
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
    return parser


def _ticket_id(text: str) -> int:
    try:
        value = int(text.lstrip("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a ticket number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a ticket number: {text!r}")
    return value


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
    _setup_logging(args)
    try:
        status: int = args.func(args)
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
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
