"""maild ingest's driver: chunked transactions and parsing in a worker decide as one by one."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from maild.config import load_config
from maild.core.intake import parse_for_ingest, parse_many
from maild.service.batch import BatchIngest, ChunkIngest, commit_chunk
from maild.service.pipeline import Outcome, Pipeline
from maild.store.batch import (
    CHAIN,
    STEWARDS_WHO_WROTE,
    defer_write_only,
    flush_in_bulk,
    load_reply,
    stored_chain,
)
from maild.store.db import make_engine, make_sessionmaker
from maild.store.dues import reminders_sent
from maild.store.inline import StoreThread
from maild.store.models import Event
from tests.conftest import Factory, Instance, make_mail

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def _pipeline(inst: Instance) -> AsyncIterator[tuple[Pipeline, Engine]]:
    """``inst``'s pipeline as ``maild ingest`` builds it (on SQLite with a store thread),
    and the engine its statements go through (for listeners); closed after."""
    engine = make_engine(inst.url)
    store = StoreThread.for_url(inst.url)
    try:
        pipeline = Pipeline(load_config(inst.config), make_sessionmaker(engine), store=store)
        yield pipeline, (store.engine if store else engine).sync_engine
    finally:
        if store is not None:
            await store.aclose()
        await engine.dispose()


def _mails() -> list[bytes]:
    first = make_mail(subject="Printer on fire", message_id="<p1@pangeo.example>")
    reply = make_mail(
        subject="Re: Printer on fire",
        message_id="<p2@pangeo.example>",
        in_reply_to="<p1@pangeo.example>",
        references="<p1@pangeo.example>",
    )
    other = make_mail(
        frm="Olga <olga@pangeo.example>", subject="Disk full", message_id="<d1@pangeo.example>"
    )
    return [first.as_bytes(), reply.as_bytes(), first.as_bytes(), b"not a mail at all"] + [
        other.as_bytes()
    ]


async def _ingest(
    new_instance: Factory,
    batched: bool,
    dry_run: bool = False,
    kill_worker: bool = False,
    handed: bool = False,
) -> tuple[list[tuple[str, int | None]], int, int, int]:
    """(action, ticket) per mail, and the messages, outbox rows and quarantined mails stored."""
    inst = new_instance()
    assert inst.run("db", "upgrade").returncode == 0
    items = [(f"m{i}", raw, NOW) for i, raw in enumerate(_mails())]
    async with _pipeline(inst) as (pipeline, _):
        outcomes: list[Outcome] = []
        if handed:
            # the daemon's way: chunks handed in one at a time, the next one announced
            chunks = ChunkIngest(pipeline)
            pairs = [items[i : i + 2] for i in range(0, len(items), 2)]
            try:
                for i, chunk in enumerate(pairs):
                    upcoming = [raw for _, raw, _ in pairs[i + 1]] if i + 1 < len(pairs) else []
                    outcomes += await chunks.ingest(chunk, upcoming)
                    if kill_worker and i == 0:
                        for child in multiprocessing.active_children():
                            os.kill(child.pid or 0, signal.SIGKILL)
                        await asyncio.sleep(1)
            finally:
                await chunks.aclose()
            assert not multiprocessing.active_children()  # the worker ended with aclose
        elif batched:
            # chunks of two: the next chunk is parsed in the worker process meanwhile
            async for outcome in BatchIngest(pipeline, chunk=2, dry_run=dry_run).run(items):
                outcomes.append(outcome)
                if kill_worker and len(outcomes) == 1:
                    # the worker dies (the OOM killer, say) while this chunk commits
                    for child in multiprocessing.active_children():
                        os.kill(child.pid or 0, signal.SIGKILL)
                    await asyncio.sleep(1)  # the pool has seen it die before the next chunk
        else:
            for source, raw, now in items:
                outcomes.append(await pipeline.ingest(raw, source, now, dry_run=dry_run))
        async with pipeline.sessions() as session:
            counts = (
                await session.execute(
                    text(
                        "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM outbox), "
                        "(SELECT count(*) FROM quarantine)"
                    )
                )
            ).one()
    return ([(o.action, o.ticket) for o in outcomes], *[c or 0 for c in counts])  # type: ignore[return-value]


async def test_chunks_and_a_parsing_worker_decide_and_store_as_one_by_one(
    new_instance: Factory,
) -> None:
    one_by_one = await _ingest(new_instance, batched=False)
    batched = await _ingest(new_instance, batched=True)
    assert batched == one_by_one
    actions = [a for a, _ in batched[0]]
    assert actions == ["created", "appended", "duplicate", "quarantined", "created"]
    assert batched[3] == 1  # the garbage, with its reason


async def test_a_dry_run_in_chunks_stores_nothing_and_says_what_it_would_do(
    new_instance: Factory,
) -> None:
    one_by_one = await _ingest(new_instance, batched=False, dry_run=True)
    batched = await _ingest(new_instance, batched=True, dry_run=True)
    assert batched[1:] == (0, 0, 0)
    # each mail of a dry run is rolled back: the reply finds no ticket to join
    assert batched == one_by_one


async def test_a_parsing_worker_that_dies_loses_no_mail_and_ends_no_ingest(
    new_instance: Factory,
) -> None:
    one_by_one = await _ingest(new_instance, batched=False)
    batched = await _ingest(new_instance, batched=True, kill_worker=True)
    # the chunks after it are parsed in the ingesting process: the same outcome
    assert batched == one_by_one


async def test_chunks_handed_in_one_at_a_time_decide_as_one_by_one_even_if_the_worker_dies(
    new_instance: Factory,
) -> None:
    one_by_one = await _ingest(new_instance, batched=False)
    assert await _ingest(new_instance, batched=False, handed=True) == one_by_one
    assert await _ingest(new_instance, batched=False, handed=True, kill_worker=True) == one_by_one


def test_a_chunk_takes_a_savepoint_a_mail_only_once_one_of_its_mails_failed(
    new_instance: Factory,
) -> None:
    # a chunk goes first without savepoints (a round trip a mail on PostgreSQL); a mail
    # that fails sends the chunk again, a savepoint a mail: it alone is quarantined
    inst = new_instance()
    assert inst.run("db", "upgrade").returncode == 0
    if inst.url.startswith("sqlite"):
        inst.sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages "
            "WHEN NEW.message_id = 'bad@pangeo.example' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the store'); END"
        )
    else:
        inst.sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE integrity_constraint_violation USING MESSAGE = 'refused by the store'; "
            "END $$"
        )
        inst.sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW "
            "WHEN (NEW.message_id = 'bad@pangeo.example') EXECUTE FUNCTION refuse()"
        )
    good = [
        make_mail(frm=f"u{n}@pangeo.example", subject=f"Q{n}", message_id=f"<q{n}@pangeo.example>")
        for n in range(4)
    ]
    bad = make_mail(frm="bad@pangeo.example", subject="Bad", message_id="<bad@pangeo.example>")
    reply = make_mail(
        frm="u2@pangeo.example",
        subject="Re: Q2",
        message_id="<r2@pangeo.example>",
        in_reply_to="<q2@pangeo.example>",
    )
    first = [(f"a{i}", m.as_bytes(), NOW) for i, m in enumerate(good[:2])]
    second = [(f"b{i}", m.as_bytes(), NOW) for i, m in enumerate([good[2], bad, good[3], reply])]
    config = load_config(inst.config)
    savepoints: list[str] = []

    async def go() -> None:
        def _seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if statement.upper().startswith(("SAVEPOINT", "ROLLBACK TO")):
                savepoints.append(statement.split()[0].upper())

        async with _pipeline(inst) as (pipeline, statements):
            event.listen(statements, "before_cursor_execute", _seen)
            limit = config.tickets.max_message_bytes
            parsed = parse_many([raw for _, raw, _ in first], limit)
            done = await commit_chunk(pipeline, first, parsed)
            assert [o.action for o in done] == ["created", "created"]
            assert savepoints == []  # nothing failed: no savepoint
            parsed = parse_many([raw for _, raw, _ in second], limit)
            outcomes = await commit_chunk(pipeline, second, parsed)
            assert [o.action for o in outcomes] == ["created", "quarantined", "created", "appended"]
            assert "refused by the store" in (outcomes[1].reason or "")
            assert outcomes[3].ticket == outcomes[0].ticket
            # the second go: a savepoint each of the four, and the bad one's rolled back
            assert savepoints.count("SAVEPOINT") == 4 and savepoints.count("ROLLBACK") == 1

    asyncio.run(go())
    assert inst.sql("SELECT count(*) FROM messages WHERE direction = 'in'")[0][0] == 5
    assert inst.sql("SELECT count(*) FROM quarantine")[0][0] == 1
    assert inst.sql("SELECT count(*) FROM messages WHERE message_id = 'bad@pangeo.example'") == [
        (0,)
    ]


def test_on_postgresql_a_reply_locks_its_ticket_with_its_first_look_up(
    new_instance: Factory,
) -> None:
    # the reply's look-up of the mails it names reads their tickets FOR UPDATE: the
    # scheduler cannot change the ticket under it, and no second read locks it
    inst = new_instance()
    if inst.url.startswith("sqlite"):
        pytest.skip("PostgreSQL's row locks (SQLite's WAL refuses a stale writer)")
    assert inst.run("db", "upgrade").returncode == 0
    config = load_config(inst.config)
    first = make_mail(subject="Printer on fire", message_id="<p1@pangeo.example>")
    reply = make_mail(
        subject="Re: Printer on fire",
        message_id="<p2@pangeo.example>",
        in_reply_to="<p1@pangeo.example>",
    ).as_bytes()

    async def go() -> None:
        engine = make_engine(inst.url)
        other = make_engine(inst.url)
        sent: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
        try:
            pipeline = Pipeline(config, make_sessionmaker(engine))
            opened = await pipeline.ingest(first.as_bytes(), "m0", NOW)
            sent.clear()
            async with make_sessionmaker(engine)() as session, session.begin():
                parsed = parse_for_ingest(reply, config.tickets.max_message_bytes)
                outcome = await pipeline.ingest_within(
                    session, reply, "m1", NOW, parsed, None, alone=False
                )
                assert (outcome.action, outcome.ticket) == ("appended", opened.ticket)
                async with other.connect() as conn:
                    with pytest.raises(OperationalError):  # 55P03: the row is locked
                        await conn.execute(
                            text("SELECT id FROM tickets WHERE id = :id FOR UPDATE NOWAIT"),
                            {"id": opened.ticket},
                        )
        finally:
            await other.dispose()
            await engine.dispose()
        locking = [s for s in sent if "FOR UPDATE" in s]
        assert len(locking) == 1 and "JOIN tickets" in locking[0]

    asyncio.run(go())


def test_a_replys_look_ups_in_one_query_read_what_the_separate_ones_do(
    new_instance: Factory,
) -> None:
    # store.batch.load_reply: a ticket's reminders, the stewards who wrote on it and its
    # stored mails for a reply chain, in one round trip; the chain rows only until a flush
    inst = new_instance()
    assert inst.run("db", "upgrade").returncode == 0
    inst.ingest(make_mail(message_id="<req@pangeo.example>", subject="Hub is down"))
    for who, body in (("alice", "Could you send the error page?"), ("carol", "[note] seen")):
        inst.ingest(
            make_mail(
                frm=f"{who.title()} <{who}@example.org>",
                subject="Re: [support #1] Hub is down",
                message_id=f"<{who}@example.org>",
                in_reply_to="<req@pangeo.example>",
                body=body + "\n",
            )
        )
    inst.sql(
        "INSERT INTO reminders (ticket_id, kind, stage, at) VALUES (1, 'triage', 'warn', ?)",
        NOW.replace(tzinfo=None),
    )
    config = load_config(inst.config)
    names = [s.name for s in config.stewards]

    async def go() -> None:
        engine = make_engine(inst.url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                reply = await load_reply(session, 1, names)
                chain = stored_chain(session, 1)
                actors = await session.scalars(
                    STEWARDS_WHO_WROTE, {"ticket_id": 1, "names": sorted(names)}
                )
                assert reply.stewards_who_wrote == list(actors.all()) == ["alice", "carol"]
                assert reply.reminders == await reminders_sent(session, 1)
                assert reply.reminders == {("triage", "warn")}
                stored = (await session.execute(CHAIN, {"ticket_id": 1})).all()
                assert chain == [tuple(row) for row in stored] and len(stored) > 3  # in, out, both
                # a flush stores mails the rows do not hold: they are dropped
                session.add(Event(ticket_id=1, at=NOW, kind="note", actor="", text="x"))
                await session.flush()
                assert not stored_chain(session, 1)
                await session.rollback()
        finally:
            await engine.dispose()

    asyncio.run(go())


def _thread_of_one_morning() -> list[bytes]:
    """Mail that reads what earlier mail of the same chunk wrote: a second request from
    the same person (the per-address limit counts the first's acknowledgment), steward
    replies with commands and a note, a requester's reply (the stewards who wrote get
    the relay, whom earlier mail went to is read for the reply chain), an attachment."""

    def mail(n: int, frm: str, subject: str, body: str, parent: int | None = None) -> bytes:
        ref = f"<m{parent}@thread.example>" if parent is not None else None
        msg = make_mail(
            frm=frm,
            subject=subject,
            body=body,
            message_id=f"<m{n}@thread.example>",
            in_reply_to=ref,
            references=ref,
        )
        if n == 6:
            msg.add_attachment(b"Traceback: KeyError\n" * 40, "text", "plain", filename="log.txt")
        return msg.as_bytes()

    rosa, alice, carol = (
        "Rosa Rep <rep@pangeo.example>",
        "Alice Liddell <alice@example.org>",
        "carol@example.org",
    )
    return [
        mail(1, rosa, "Hub is down", "The hub returns 502.\n"),
        mail(2, rosa, "Quota question", "How much disk do we get?\n"),
        mail(3, alice, "Re: [support #1] Hub is down [incident]", "Looking.\n", 1),
        mail(4, rosa, "Re: [support #1] Hub is down", "Still down here.\n", 3),
        mail(5, carol, "Re: [support #2] Quota question [note]", "Ask infra.\n", 2),
        mail(6, "Lead <lead@jupyter.example>", "Kernel dies", "Log attached.\n"),
        mail(7, alice, "Re: [support #1] Hub is down [resolved]", "Fixed, a full disk.\n", 4),
        mail(8, rosa, "Re: [support #1] Hub is down", "Thanks, works again!\n", 7),
    ]


# every row the mails above leave in the tables written at a chunk's end, in id order,
# with the Message-ID of the mail each is about instead of its row id (outgoing mail
# gets a random Message-ID: its ticket, direction and template stand in for it)
_ROWS_WRITTEN_LAST = {
    "events": "SELECT e.ticket_id, e.kind, e.actor, e.field, e.old, e.new, e.text, "
    "m.direction, m.template, CASE WHEN m.direction = 'in' THEN m.message_id END "
    "FROM events e LEFT JOIN messages m ON m.id = e.message_pk ORDER BY e.id",
    "outbox": "SELECT o.ticket_id, o.template, o.automatic, o.mail_from, o.rcpt_tos, "
    "o.primary_rcpt, o.status, m.template FROM outbox o "
    "LEFT JOIN messages m ON m.id = o.message_pk ORDER BY o.id",
    "automatic_sends": "SELECT address, ticket_id, template FROM automatic_sends ORDER BY id",
    "attachments": "SELECT m.message_id, a.filename, a.content_type, a.size FROM attachments a "
    "JOIN messages m ON m.id = a.message_pk ORDER BY a.id",
}


async def _ingest_all(inst: Instance, raws: list[bytes], batched: bool) -> list[Outcome]:
    """The mails through ``inst``'s store: in one chunk (maild ingest's way) or one by one."""
    items = [(f"m{i}", raw, NOW) for i, raw in enumerate(raws)]
    async with _pipeline(inst) as (pipeline, _):
        if batched:
            return [o async for o in BatchIngest(pipeline, chunk=100).run(items)]
        return [await pipeline.ingest(raw, src, now) for src, raw, now in items]


def test_a_chunk_writes_its_events_and_outbox_at_its_end_as_one_by_one_would(
    new_instance: Factory,
) -> None:
    # maild ingest and the daemon write a chunk's events, outbox rows, automatic sends
    # and attachments once, before its commit (store.batch.defer_write_only); what later
    # mail of the chunk reads of them, and the rows themselves, are as one by one
    raws = _thread_of_one_morning()
    dumps = []
    for batched in (False, True):
        inst = new_instance(ack_rate=1)
        assert inst.run("db", "upgrade").returncode == 0
        outcomes = asyncio.run(_ingest_all(inst, raws, batched))
        assert [(o.action, o.ticket) for o in outcomes] == [
            ("created", 1),
            ("created", 2),
            ("appended", 1),
            ("appended", 1),
            ("appended", 2),
            ("created", 3),
            ("appended", 1),
            ("appended", 1),
        ]
        dumps.append({table: inst.sql(query) for table, query in _ROWS_WRITTEN_LAST.items()})
    one_by_one, chunk = dumps
    for table in _ROWS_WRITTEN_LAST:
        assert chunk[table] == one_by_one[table], table
    sends = chunk["automatic_sends"]
    # the second request got no acknowledgment: Rosa's limit is one an hour, and the
    # first one's was queued earlier in the same chunk
    assert [(a, t) for a, t, _ in sends if a == "rep@pangeo.example"] == [("rep@pangeo.example", 1)]
    # Rosa's replies went on to Alice, the steward who wrote on #1 earlier in the chunk
    replies = [r[4] for r in chunk["outbox"] if r[1] == "requester_reply"]
    assert replies == ['["alice@example.org"]'] * 2
    assert chunk["attachments"] == [("m6@thread.example", "log.txt", "text/plain", 800)]


def _inserts_into_attachments(new_instance: Factory, size: int) -> tuple[int, int]:
    """A chunk of four requests with a ``size``-byte attachment each: the INSERTs into
    attachments it took, and the attachments stored."""
    inst = new_instance()
    assert inst.run("db", "upgrade").returncode == 0
    raws = []
    for n in range(4):
        msg = make_mail(subject=f"Logs {n}", message_id=f"<logs{n}@pangeo.example>")
        msg.add_attachment(os.urandom(size), "application", "octet-stream", filename="dump.bin")
        raws.append(msg.as_bytes())

    async def go() -> int:
        inserts = 0

        def _count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            nonlocal inserts
            inserts += statement.startswith("INSERT INTO attachments")

        async with _pipeline(inst) as (pipeline, statements):
            event.listen(statements, "before_cursor_execute", _count)
            items = [(f"m{i}", raw, NOW) for i, raw in enumerate(raws)]
            outcomes = [o async for o in BatchIngest(pipeline, chunk=100).run(items)]
            assert [o.action for o in outcomes] == ["created"] * 4
        return inserts

    inserts = asyncio.run(go())
    return inserts, inst.sql("SELECT count(*) FROM attachments")[0][0]


def test_a_chunk_keeps_no_more_than_a_few_megabytes_of_mail_for_its_end(
    new_instance: Factory,
) -> None:
    # the rows written at a chunk's end hold mail (attachments, outgoing mail): past
    # store.batch.DEFERRED_BYTES they are written at once, not all held to the end
    assert _inserts_into_attachments(new_instance, 2 * 1024) == (1, 4)
    inserts, stored = _inserts_into_attachments(new_instance, 1536 * 1024)
    assert stored == 4 and inserts >= 2


def test_sql_text_in_a_chunk_reads_the_rows_kept_for_its_end(new_instance: Factory) -> None:
    # a statement of SQL text may read anything: the kept rows are written first
    inst = new_instance()
    assert inst.run("db", "upgrade").returncode == 0
    inst.ingest(make_mail(message_id="<req@pangeo.example>"))

    async def go() -> tuple[int, int]:
        engine = make_engine(inst.url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                defer_write_only(session)
                before = await session.scalar(text("SELECT count(*) FROM events"))
                session.add(Event(ticket_id=1, at=NOW, kind="note", actor="", text="kept"))
                await flush_in_bulk(session)
                after = await session.scalar(text("SELECT count(*) FROM events"))
                await session.rollback()
        finally:
            await engine.dispose()
        return before or 0, after or 0

    before, after = asyncio.run(go())
    assert after == before + 1
