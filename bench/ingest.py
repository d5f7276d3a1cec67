"""Ingest rate against a bare stdlib parse of the same mails.

Generates ``--n`` realistic mails (see :func:`common.generate_mails`), then in
one process and one run times

1. ``email.message_from_bytes(raw)`` (compat32): the floor any mail program pays;
2. the reference parse (issue 12): ``policy.default``, ``get_body()`` and the
   headers any threading ingester reads (Message-ID, In-Reply-To, References,
   Subject, From's address, Date as a datetime, Auto-Submitted);
3. ``maild.core.inbound.parse_mail(raw)``: our parse alone;
4. ``BatchIngest`` (``maild.service.batch``) into a fresh SQLite store, in
   one asyncio loop: exactly what ``maild ingest`` does (chunks of mails in
   one transaction with a savepoint each, the next chunk parsed in a worker
   process meanwhile).

and prints the rates and the ratios against the reference (issue 12's aims:
ingest >= 0.30 and parse_mail >= 0.6 of it). It also checks that every mail
landed where it should: each thread's first mail created a ticket and every
reply was appended to it.
Exit status 0, or 1 if a mail went astray.

    python bench/ingest.py                 # N = 10,000
    python bench/ingest.py --n 2000 --profile /tmp/ingest.prof
    python bench/ingest.py --n 2000 --baseline /tmp/base   # another checkout, same run
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import email
import email.policy
import io
import os
import pstats
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import GeneratedMail, Timer, generate_mails, print_table, rate, time_each, write_config
from sqlalchemy import event

from maild.config import load_config
from maild.core.inbound import parse_mail
from maild.service.batch import BatchIngest
from maild.service.pipeline import Outcome, Pipeline
from maild.store.db import make_engine, make_sessionmaker, prepare
from maild.store.inline import StoreThread

AIM = 0.30  # ingest against the reference parse (issue 12)
PARSE_AIM = 0.6  # parse_mail against the reference parse


def reference_parse(raw: bytes) -> tuple[object, ...]:
    """The least a threading ingester does with a mail (issue 12's reference)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body()
    sender = msg["from"]
    date = msg["date"]
    return (
        body.get_content() if body is not None else None,
        msg["message-id"],
        msg["in-reply-to"],
        msg["references"],
        msg["subject"],
        sender.addresses[0].addr_spec if sender is not None and sender.addresses else None,
        date.datetime if date is not None else None,
        msg["auto-submitted"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="mails to ingest (10000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the ingest under cProfile, write the stats to FILE and print the top",
    )
    parser.add_argument(
        "--before",
        action="store_true",
        help="also ingest without the store thread (each driver call a hop to aiosqlite's "
        "thread, as before issue 12) into another fresh store, for before/after in one run",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run DIR/bench/ingest.py (another checkout of maild, e.g. before a change) "
        "on the same mails, right after this ingest, and print its ingest row against this "
        "run's reference parse",
    )
    args = parser.parse_args(argv)

    with Timer() as gen:
        mails = generate_mails(args.n, args.seed)
    raws = [m.raw for m in mails]
    threads = len({m.thread for m in mails})
    senders = len({_from_line(r) for r in raws})
    size = sum(len(r) for r in raws) / len(raws)
    print(
        f"{len(mails)} mails in {threads} threads from {senders} senders, "
        f"mean {size / 1024:.1f} KB, {_share(raws, b'multipart/alternative')} with HTML, "
        f"{_share(raws, b'Content-Disposition: attachment')} with an attachment, "
        f"{_share(raws, b'=?utf-8?')} with RFC 2047 words (seed {args.seed}, "
        f"generated in {gen.seconds:.1f}s)"
    )

    # Warm up both parsers (imports, regex compilation) outside the timings.
    for raw in raws[:50]:
        email.message_from_bytes(raw)
        reference_parse(raw)
        parse_mail(raw)
    # The machine may be shared: time the bare parse before and after the
    # long ingest and take the mean, so a busy spell does not skew the ratio.
    bare_before = time_each(email.message_from_bytes, raws)
    ref_cpu = time.process_time()
    ref_before = time_each(reference_parse, raws)
    ref_cpu = time.process_time() - ref_cpu
    ours = time_each(parse_mail, raws)

    with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
        db = Path(tmp) / "maild.db"
        config_path = write_config(Path(tmp), db)
        profiler = cProfile.Profile() if args.profile else None
        seconds, cpu, outcomes, stats, steps = asyncio.run(_ingest(config_path, mails, profiler))
        rows_in_db = _count_rows(db)
    before: tuple[float, float] | None = None
    if args.before:
        with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
            config_path = write_config(Path(tmp), Path(tmp) / "maild.db")
            old_seconds, old_cpu, old_outcomes, *_ = asyncio.run(
                _ingest(config_path, mails, None, store_thread=False)
            )
            before = (old_seconds, old_cpu)
            if [(o.action, o.ticket) for o in old_outcomes] != [
                (o.action, o.ticket) for o in outcomes
            ]:
                print("FAILED: the two ingests disagree", file=sys.stderr)
                return 1
    baseline = _baseline(args.baseline, args.n, args.seed) if args.baseline else None
    bare_after = time_each(email.message_from_bytes, raws)
    cpu_after = time.process_time()
    ref_after = time_each(reference_parse, raws)
    ref_cpu = (ref_cpu + time.process_time() - cpu_after) / 2
    bare = (bare_before + bare_after) / 2
    ref = (ref_before + ref_after) / 2

    n = len(mails)
    table = [
        _row("bare email.message_from_bytes", n, bare, bare, ref),
        _row("reference (policy.default, get_body)", n, ref, bare, ref),
        _row("maild.core.inbound.parse_mail", n, ours, bare, ref),
        _row("ingest (BatchIngest, as maild ingest)", n, seconds, bare, ref),
        _row("  same, CPU time of the process", n, cpu, bare, ref),
    ]
    if before is not None:
        table += [
            _row("before: ingest, a hop per driver call", n, before[0], bare, ref),
            _row("  same, CPU time of the process", n, before[1], bare, ref),
        ]
    if baseline is not None:
        table += [
            _row(f"baseline {args.baseline}: ingest", n, baseline[0], bare, ref),
            _row("  same, CPU time of the process", n, baseline[1], bare, ref),
        ]
    tenth = max(1, n // 10)
    first, last = sum(steps[:tenth]), sum(steps[-tenth:])
    print()
    print_table(table, ["phase", "seconds", "mails/s", "ms/mail", "vs bare", "vs reference"])
    print(
        f"\nbare parse before/after the ingest: {rate(n, bare_before):,.0f} / "
        f"{rate(n, bare_after):,.0f} mails/s; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"ingest rate over the first / last tenth of the mails: {rate(tenth, first):.1f} / "
        f"{rate(tenth, last):.1f} mails/s (the store grows as it goes)"
    )
    per_mail = (seconds - ours) / n * 1000
    print(
        f"ingest beyond parse_mail: {per_mail:.2f} ms/mail "
        f"({(seconds - ours) / seconds:.0%} of ingest time); "
        f"{stats['statements'] / n:.1f} SQL statements and "
        f"{stats['commits'] / n:.2f} commits per mail"
    )
    print(
        f"in CPU time (what a busy machine distorts least): reference {ref_cpu / n * 1000:.2f} "
        f"ms/mail, ingest {cpu / n * 1000:.2f} ms/mail in this process = {ref_cpu / cpu:.3f} "
        "of the reference (parsing runs in the worker process, on the other core)"
        + (f"; baseline {ref_cpu / baseline[1]:.3f}" if baseline is not None else "")
    )
    ratio = ref / seconds
    parse_ratio = ref / ours
    print(
        f"aims: ingest >= {AIM:.2f} of the reference parse: "
        f"{'met' if ratio >= AIM else 'NOT met'} ({ratio:.3f}); parse_mail >= {PARSE_AIM:.1f} "
        f"of it: {'met' if parse_ratio >= PARSE_AIM else 'NOT met'} ({parse_ratio:.3f})"
    )
    if profiler is not None:
        note = " (rates above include cProfile overhead)"
        print(f"\nprofile written to {args.profile}{note}")
        _print_profile(profiler, args.profile)

    problems = _check(mails, outcomes, rows_in_db)
    rules = Counter(o.decision.rule if o.decision else o.action for o in outcomes)
    print(
        "\nthreading rules used: "
        + ", ".join(f"{rule} {count}" for rule, count in sorted(rules.items()))
    )
    print(
        f"store: {rows_in_db['tickets']} tickets, {rows_in_db['messages']} messages "
        f"({rows_in_db['inbound']} in), {rows_in_db['outbox']} outbox rows, "
        f"{rows_in_db['events']} events"
    )
    if problems:
        print(f"\nFAILED: {len(problems)} mails went astray", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"correct: {threads} threads -> {threads} tickets, {n - threads} replies appended")
    return 0


async def _ingest(
    config_path: Path,
    mails: list[GeneratedMail],
    profiler: cProfile.Profile | None,
    store_thread: bool = True,
) -> tuple[float, float, list[Outcome], Counter[str], list[float]]:
    """Ingest every mail into a fresh store as ``maild ingest`` does.

    ``store_thread``: each mail's transaction in a :class:`StoreThread` (as
    ``maild ingest`` and the daemon do), or in the loop through aiosqlite's
    own thread (as before issue 12).

    Returns (wall seconds, CPU seconds, outcomes, statement counts, seconds per mail).
    """
    config = load_config(config_path)
    engine = make_engine(config.database.url)
    store = StoreThread.for_url(config.database.url) if store_thread else None
    counted = store.engine if store is not None else engine
    stats: Counter[str] = Counter()

    @event.listens_for(counted.sync_engine, "before_cursor_execute")
    def _count(*_args: object) -> None:
        stats["statements"] += 1

    @event.listens_for(counted.sync_engine, "commit")
    def _commits(*_args: object) -> None:
        stats["commits"] += 1

    try:
        await prepare(engine)
        stats.clear()
        pipeline = Pipeline(config, make_sessionmaker(engine), store=store)
        outcomes = []
        steps = []
        if profiler is not None:
            profiler.enable()
        cpu = time.process_time()
        with Timer() as timer:
            if store_thread:
                # maild ingest's driver: chunked transactions, parsing in a worker
                batch = BatchIngest(pipeline)
                items = [(f"bench#{i}", mail.raw, mail.when) for i, mail in enumerate(mails)]
                last = time.perf_counter()
                async for outcome in batch.run(items):
                    outcomes.append(outcome)
                    # a chunk's mails arrive together at its commit: the first takes its time
                    now = time.perf_counter()
                    steps.append(now - last)
                    last = now
            else:
                for i, mail in enumerate(mails):
                    start = time.perf_counter()
                    outcomes.append(await pipeline.ingest(mail.raw, f"bench#{i}", mail.when))
                    steps.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
        if profiler is not None:
            profiler.disable()
    finally:
        if store is not None:
            await store.aclose()
        await engine.dispose()
    return timer.seconds, cpu, outcomes, stats, steps


def _baseline(directory: str, n: int, seed: int) -> tuple[float, float]:
    """(wall, CPU seconds) of the ingest row of DIR/bench/ingest.py on the same mails."""
    root = Path(directory).resolve()
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "ingest.py"), "--n", str(n), "--seed", str(seed)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = re.findall(r"^(.*?ingest.*?|  same, CPU time.*?)\s{2,}([\d.]+)\s", done.stdout, re.M)
    seconds = [float(value) for name, value in rows if "ingest" in name.lower()]
    cpu = [float(value) for name, value in rows if "CPU" in name]
    if done.returncode != 0 or not seconds or not cpu:
        raise SystemExit(f"baseline run failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds[0], cpu[0]


def _check(mails: list[GeneratedMail], outcomes: list[Outcome], rows: dict[str, int]) -> list[str]:
    """Every thread's first mail created a ticket; every reply joined that ticket."""
    problems = []
    ticket_of: dict[int, int | None] = {}
    for mail, outcome in zip(mails, outcomes, strict=True):
        where = f"thread {mail.thread} mail {mail.position} <{mail.message_id}>"
        if mail.position == 0:
            ticket_of[mail.thread] = outcome.ticket
            if outcome.action != "created":
                problems.append(f"{where}: {outcome.action} ({outcome.reason}), expected created")
            continue
        expected = ticket_of.get(mail.thread)
        if outcome.action != "appended" or outcome.ticket != expected:
            problems.append(
                f"{where} (meant to match by {mail.via}): {outcome.action} "
                f"#{outcome.ticket} ({outcome.reason}), expected appended to #{expected}"
            )
    threads = len(ticket_of)
    if rows["tickets"] != threads:
        problems.append(f"{rows['tickets']} tickets in the store for {threads} threads")
    if rows["inbound"] != len(mails):
        problems.append(f"{rows['inbound']} inbound messages stored for {len(mails)} mails")
    return problems


def _count_rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        one = conn.execute
        return {
            "tickets": one("SELECT count(*) FROM tickets").fetchone()[0],
            "messages": one("SELECT count(*) FROM messages").fetchone()[0],
            "inbound": one("SELECT count(*) FROM messages WHERE direction = 'in'").fetchone()[0],
            "outbox": one("SELECT count(*) FROM outbox").fetchone()[0],
            "events": one("SELECT count(*) FROM events").fetchone()[0],
        }


def _row(name: str, n: int, seconds: float, bare: float, ref: float) -> list[str]:
    return [
        name,
        f"{seconds:.2f}",
        f"{rate(n, seconds):,.0f}",
        f"{seconds / n * 1000:.3f}",
        f"{bare / seconds:.3f}",
        f"{ref / seconds:.3f}",
    ]


def _share(raws: list[bytes], needle: bytes) -> str:
    return f"{sum(needle in r for r in raws) / len(raws):.0%}"


def _from_line(raw: bytes) -> bytes:
    start = raw.find(b"\r\nFrom: ") + 8
    return raw[start : raw.find(b"\r\n", start)]


def _print_profile(profiler: cProfile.Profile, path: str) -> None:
    profiler.dump_stats(path)
    for order in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(25)
        text = out.getvalue()
        print(text[text.find("   ncalls") :] if "   ncalls" in text else text)


if __name__ == "__main__":
    sys.exit(main())
