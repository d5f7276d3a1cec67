"""SQLite against PostgreSQL at 100,000 tickets: ingest and ``maild queue``, in the same run.

A throwaway PostgreSQL cluster is started (``initdb``/``pg_ctl`` as the
``postgres`` user, on a free loopback port, fsync off as in the tests). Both
stores are filled with the same N tickets (default 100,000; 10 % active, the
rest closed) the fast way, with ``clock.fill``. Then, in each store:

- ingest of the same M generated mails (default 500: requests and replies,
  ``common.generate_mails``) in one asyncio loop, exactly the code path of
  ``maild ingest`` (``BatchIngest``: chunks of mails in one transaction,
  parsing in a worker process; SQLite's transactions in a store thread). The
  mails go in two halves,
  alternating stores (SQLite, PostgreSQL, SQLite, PostgreSQL), so that a busy
  spell on a shared machine hits both; 20 other mails warm each store up first;
- ``maild queue --json`` (the active tickets) as a whole process, median of 5,
  the two stores alternating; ``maild --help`` beside it as the floor
  (interpreter start and imports).

SQLite is the baseline: each PostgreSQL number is printed beside it with the
ratio. Both stores must thread every mail the same way and list the same
queue (exit 1 otherwise). The cluster and every temporary file are removed at
the end, also after an error, Ctrl-C or SIGTERM.

    python bench/backends.py [--tickets 100000] [--mails 500] [--seed 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import clock
from common import REPO, GeneratedMail, Timer, generate_mails, print_table, rate
from sqlalchemy import event, text

from maild.config import load_config
from maild.service.batch import BatchIngest
from maild.service.pipeline import Outcome, Pipeline
from maild.store.db import make_engine, make_sessionmaker, prepare
from maild.store.inline import StoreThread
from tests.integration.postgres import Postgres

CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP = 20

# asyncpg calls that each wait for the server once: a prepare, a prepared statement's
# fetch (every SQLAlchemy execute), an executemany (pipelined, one wait), a bare
# execute (BEGIN, COMMIT). Counted while ROUND_TRIPS["on"] is set.
ROUND_TRIPS = {"on": 0, "count": 0}


def _count_round_trips() -> None:
    from asyncpg.connection import Connection
    from asyncpg.prepared_stmt import PreparedStatement

    def wrap(cls: type, name: str) -> None:
        original = getattr(cls, name)

        async def counted(self: object, *args: object, **kwargs: object) -> object:
            if ROUND_TRIPS["on"]:
                ROUND_TRIPS["count"] += 1
            return await original(self, *args, **kwargs)

        setattr(cls, name, counted)

    for cls, name in (
        (Connection, "prepare"),
        (Connection, "execute"),
        (Connection, "executemany"),
        (PreparedStatement, "fetch"),
    ):
        wrap(cls, name)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def find_bindir() -> Path | None:
    """Debian keeps the server tools out of PATH, per major version."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    return None


def server_cpu(pg: Postgres) -> float:
    """utime + stime of the postmaster and its live children, in seconds."""
    pidfile = pg.data / "postmaster.pid"
    try:
        master = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(entry.name) == master or int(fields[1]) == master:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


@dataclass
class Store:
    name: str
    config: Path
    url: str
    pg: Postgres | None = None
    fill_seconds: float = 0.0
    seconds: float = 0.0  # ingest wall time, summed over the halves
    cpu: float = 0.0  # this process
    server: float = 0.0  # PostgreSQL's processes
    statements: int = 0
    round_trips: int = 0  # PostgreSQL only
    outcomes: list[Outcome] = field(default_factory=list)
    queue_times: list[float] = field(default_factory=list)
    queue_rows: int = -1


async def ingest(
    store: Store, mails: Sequence[GeneratedMail], warmup: Sequence[GeneratedMail]
) -> None:
    """Ingest ``mails`` (after ``warmup``, untimed) into the store as ``maild ingest`` does.

    ``BatchIngest``: chunked transactions, parsing in a worker process; on
    SQLite the transactions run in a store thread. Adds to the store's totals.
    """
    config = load_config(store.config)
    engine = make_engine(config.database.url)
    thread = StoreThread.for_url(config.database.url)
    statements = 0

    @event.listens_for((thread.engine if thread else engine).sync_engine, "before_cursor_execute")
    def _count(*_args: object) -> None:
        nonlocal statements
        statements += 1

    try:
        await prepare(engine)
        pipeline = Pipeline(config, make_sessionmaker(engine), store=thread)
        for i, mail in enumerate(warmup):
            await pipeline.ingest(mail.raw, f"warmup#{i}", mail.when)
        async with engine.connect() as conn:  # a pooled connection, open and ready
            await conn.execute(text("SELECT 1"))
        statements = 0
        server = server_cpu(store.pg) if store.pg is not None else 0.0
        first = len(store.outcomes)
        items = [(f"bench#{first + i}", mail.raw, mail.when) for i, mail in enumerate(mails)]
        cpu = time.process_time()
        ROUND_TRIPS.update(on=1, count=0)
        with Timer() as timer:
            async for outcome in BatchIngest(pipeline).run(items):
                store.outcomes.append(outcome)
        store.cpu += time.process_time() - cpu
        ROUND_TRIPS["on"] = 0
        store.round_trips += ROUND_TRIPS["count"]
        if store.pg is not None:
            store.server += server_cpu(store.pg) - server
        store.seconds += timer.seconds
        store.statements += statements
    finally:
        if thread is not None:
            await thread.aclose()
        await engine.dispose()


def maild_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO))


def timed_process(args: list[str]) -> tuple[float, bytes]:
    with Timer() as t:
        result = subprocess.run(
            args, cwd=REPO, env=maild_env(), capture_output=True, timeout=300, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])} exited {result.returncode}: {result.stderr!r}")
    return t.seconds, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000, help="tickets in each store")
    parser.add_argument("--mails", type=int, default=500, help="mails ingested into each store")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each maild command")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    _count_round_trips()

    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL is not installed: apt-get install postgresql", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="maild-backends-"))
    pg: Postgres | None = None
    try:
        pg = Postgres(bindir)
        with Timer() as started:
            try:
                pg.start()
            except Exception:
                log = pg.root / "log"
                print(log.read_text() if log.exists() else "", file=sys.stderr)
                raise
        version = pg.psql("SHOW server_version").strip()
        print(f"PostgreSQL {version} ({bindir}) started in {started.seconds:.1f}s")
        url = pg.new_database()
        return run(args, tmp, pg, url)
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, pg: Postgres, url: str) -> int:
    sqlite = Store("SQLite", clock.config_for(tmp / "sqlite", None), "")
    postgres = Store("PostgreSQL", clock.config_for(tmp / "pg", url), url, pg)
    stores = (sqlite, postgres)
    active = args.tickets // 10
    for store in stores:
        store.url = load_config(store.config).database.url
        with Timer() as fill:
            asyncio.run(clock.fill(store.url, args.tickets, active, 0))
        store.fill_seconds = fill.seconds
        took = fill.seconds
        print(f"{store.name}: filled {args.tickets:,} tickets ({active:,} active) in {took:.1f}s")

    mails = generate_mails(args.mails, args.seed)
    warmup = generate_mails(WARMUP, args.seed + 1000, senders=WARMUP)
    half = len(mails) // 2
    for i, part in enumerate((mails[:half], mails[half:])):
        for store in stores:
            asyncio.run(ingest(store, part, warmup if i == 0 else ()))

    maild = [sys.executable, "-m", "maild"]
    help_times = []
    for _ in range(args.repeat):
        help_times.append(timed_process([*maild, "--help"])[0])
        for store in stores:
            seconds, out = timed_process([*maild, "--config", str(store.config), "queue", "--json"])
            store.queue_times.append(seconds)
            store.queue_rows = len(json.loads(out))

    report(args, stores, statistics.median(help_times))
    return check(mails, sqlite, postgres)


def report(args: argparse.Namespace, stores: tuple[Store, Store], help_time: float) -> None:
    base, other = stores
    m = args.mails
    per_mail = [s.seconds / m * 1000 for s in stores]
    rows = [
        (
            f"fill {args.tickets:,} tickets (s)",
            f"{base.fill_seconds:.1f}",
            f"{other.fill_seconds:.1f}",
            f"{other.fill_seconds / base.fill_seconds:.2f}x time",
        ),
        (
            f"maild ingest, {m} mails (mails/s)",
            f"{rate(m, base.seconds):.1f}",
            f"{rate(m, other.seconds):.1f}",
            f"{rate(m, other.seconds) / rate(m, base.seconds):.2f}x rate",
        ),
        ("  ms per mail", f"{per_mail[0]:.1f}", f"{per_mail[1]:.1f}", ""),
        (
            "  CPU ms per mail, this process",
            f"{base.cpu / m * 1000:.1f}",
            f"{other.cpu / m * 1000:.1f}",
            "",
        ),
        ("  CPU ms per mail, PostgreSQL server", "-", f"{other.server / m * 1000:.1f}", ""),
        (
            "  SQL statements per mail",
            f"{base.statements / m:.1f}",
            f"{other.statements / m:.1f}",
            "",
        ),
        ("  round trips per mail (asyncpg calls)", "-", f"{other.round_trips / m:.1f}", ""),
        (
            f"maild queue --json, {base.queue_rows:,} rows (ms)",
            f"{statistics.median(base.queue_times) * 1000:.0f}",
            f"{statistics.median(other.queue_times) * 1000:.0f}",
            f"{statistics.median(other.queue_times) / statistics.median(base.queue_times):.2f}x"
            " time",
        ),
        ("maild --help, the floor (ms)", f"{help_time * 1000:.0f}", "", ""),
    ]
    print()
    print_table(rows, ["what", base.name, other.name, f"{other.name} vs {base.name}"])
    spread = "; ".join(
        f"{s.name} {min(s.queue_times) * 1000:.0f}-{max(s.queue_times) * 1000:.0f}" for s in stores
    )
    print(
        f"queue runs (ms, min-max of {args.repeat}): {spread}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )


def check(mails: Sequence[GeneratedMail], sqlite: Store, postgres: Store) -> int:
    problems = []
    pairs = zip(mails, sqlite.outcomes, postgres.outcomes, strict=True)
    for mail, a, b in pairs:
        if (a.action, a.ticket) != (b.action, b.ticket):
            problems.append(
                f"<{mail.message_id}>: SQLite {a.action} #{a.ticket}, "
                f"PostgreSQL {b.action} #{b.ticket}"
            )
    if sqlite.queue_rows != postgres.queue_rows:
        problems.append(f"queue: SQLite {sqlite.queue_rows} rows, PostgreSQL {postgres.queue_rows}")
    if problems:
        print(f"\nFAILED: the stores disagree ({len(problems)})", file=sys.stderr)
        for line in problems[:20]:
            print(f"  {line}", file=sys.stderr)
        return 1
    created = sum(o.action == "created" for o in sqlite.outcomes)
    print(f"both stores agree: {created} tickets created, {len(mails) - created} mails appended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
