"""End to end: mail in Dovecot, ``maild run``, acknowledgments at an SMTP sink.

N generated mails (``common.generate_mails``: requests and replies, the same
mix as ``ingest.py``) are appended to a throwaway Dovecot's INBOX. Then, in
one run:

(a) a bare batched ``UID FETCH (UID FLAGS BODY.PEEK[])`` of all N with
    aioimaplib, 100 UIDs per command (the daemon's fetch, without maild);
(b) ``maild ingest`` of the same mails as .eml files into a fresh SQLite
    store: one process, one call with all files (it processes and queues,
    it sends nothing);
(c) end to end: a fresh store, the N mails in INBOX, ``maild run`` started;
    timed from the start of the process until every mail it queued is at the
    sink and INBOX is empty. The number of mails to expect is what the store
    says after the fact (acks, steward copies, relays of replies); it is
    checked against (b)'s outbox, which must be the same;
(d) IDLE latency: with that daemon idle, one new request at a time is
    delivered over LMTP into Dovecot, 20 times; the time from the start of the
    delivery until its ack is at the sink (median and max).

It prints the rates beside each other (end to end / ingest, ingest / bare
fetch) and the aims: end to end at 85 % or more of the ``maild ingest`` rate,
and a median IDLE latency of at most 1 s.

With ``--rounds K``, (b) and (c) are taken K times, (b) first in one round
and (c) first in the next, each (c) on a fresh store with the mails put back
in INBOX; the aim is judged on the median of the rounds' ratios, since one
round's ratio moves by +-0.1 on a shared machine. (d) runs once, at the end.

    python bench/e2e.py [--n 2000] [--seed 1] [--probes 20] [--rounds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aioimaplib
from common import (
    REPO,
    SUPPORT,
    MailSpec,
    Person,
    Timer,
    build_mail,
    generate_mails,
    print_table,
    rate,
    write_config,
)

from tests.integration.dovecot import Dovecot
from tests.integration.smtp_sink import ThreadedSink

USER = "support"  # the IMAP account maild reads (any name logs in)
BATCH = 100  # UIDs per UID FETCH, as the daemon does
FETCH_ITEMS = "(UID FLAGS BODY.PEEK[])"  # what the daemon fetches
AIM_RATIO = 0.85  # issue 12
AIM_IDLE_SECONDS = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
BARE_LF = re.compile(rb"(?<!\r)\n")


class Failed(Exception):
    """Something went wrong that is a bug (or a broken setup), not a number."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def maild_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "maild", "--config", str(config), *args]


def maild_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO))


def run_maild(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        maild_cmd(config, *args), cwd=REPO, env=maild_env(), capture_output=True, timeout=3600
    )
    if result.returncode != 0:
        raise Failed(f"maild {' '.join(args[:2])} exited {result.returncode}: {result.stderr!r}")
    return result


# -- (a) the bare fetch ------------------------------------------------------


async def _call(coro: Any, seconds: float = 60.0) -> Any:
    return await asyncio.wait_for(coro, seconds)


async def bare_fetch(dovecot: Dovecot, user: str) -> tuple[float, int, int]:
    """Fetch every mail of INBOX in batches; (seconds, mails, bytes). Login is not timed."""
    client = aioimaplib.IMAP4(host=dovecot.host, port=dovecot.imap_port, timeout=60)
    try:
        await _call(client.wait_hello_from_server(), 10)
        await _call(client.login(user, dovecot.password), 10)
        await _call(client.select("INBOX"), 10)
        found = await _call(client.uid_search("ALL", charset=None))
        uids = sorted(int(w) for line in found.lines[:-1] for w in line.split() if w.isdigit())
        count = size = 0
        with Timer() as timer:
            for start in range(0, len(uids), BATCH):
                chunk = ",".join(str(u) for u in uids[start : start + BATCH])
                response = await _call(client.uid("fetch", chunk, FETCH_ITEMS))
                if response.result != "OK":
                    raise Failed(f"UID FETCH failed: {response}")
                for line in response.lines:
                    if isinstance(line, bytearray):
                        count += 1
                        size += len(line)
        await _call(client.logout(), 5)
    finally:
        if client.protocol is not None and client.protocol.transport is not None:
            client.protocol.transport.close()
    return timer.seconds, count, size


# -- the store, read from outside --------------------------------------------


def store_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        one = conn.execute

        def count(sql: str) -> int:
            return int(one(sql).fetchone()[0])

        return {
            "tickets": count("SELECT count(*) FROM tickets"),
            "inbound": count("SELECT count(*) FROM messages WHERE direction = 'in'"),
            "outbox": count("SELECT count(*) FROM outbox"),
            "queued": count("SELECT count(*) FROM outbox WHERE status = 'queued'"),
            "sent": count("SELECT count(*) FROM outbox WHERE status = 'sent'"),
            "quarantine": count("SELECT count(*) FROM quarantine"),
        }


def _ts(value: str | None) -> float | None:
    """A naive-UTC timestamp as SQLite holds it -> epoch seconds."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def store_times(db: Path) -> dict[str, Any]:
    """When the first and last mail entered the pipeline and the last mail was sent;
    how many mails were sent after the last one entered the pipeline."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        first, last = conn.execute(
            "SELECT min(at), max(at) FROM messages WHERE direction = 'in'"
        ).fetchone()
        sent = conn.execute("SELECT max(sent_at) FROM outbox").fetchone()[0]
        late = conn.execute("SELECT count(*) FROM outbox WHERE sent_at > ?", (last,)).fetchone()
    return {
        "first_in": _ts(first),
        "last_in": _ts(last),
        "last_sent": _ts(sent),
        "sent_after_last_in": late[0],
    }


def picked_up(db: Path, message_id: str) -> float | None:
    """When the mail ``message_id`` entered the pipeline (its ``messages.at``)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(
            "SELECT at FROM messages WHERE message_id = ? AND direction = 'in'", (message_id,)
        ).fetchone()
    return None if row is None else _ts(row[0])


# -- CPU time of processes ------------------------------------------------------


def cpu_of(pids: list[int]) -> float:
    """utime + stime of the given live processes, in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def children_of(pid: int) -> list[int]:
    """The live processes ``pid`` started (the daemon's sender process, a parse worker)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def dovecot_pids(dovecot: Dovecot) -> list[int]:
    prefix = f"dovecot-{dovecot.name}/".encode()
    pids = [dovecot.proc.pid] if dovecot.proc is not None else []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(prefix):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


# -- the daemon -------------------------------------------------------------------


class Daemon:
    def __init__(self, root: Path, dovecot: Dovecot, sink: ThreadedSink) -> None:
        self.dovecot, self.sink = dovecot, sink
        self.proc: subprocess.Popen[bytes] | None = None
        self.renew(root)

    def renew(self, root: Path) -> None:
        """Start over (stopped) with a fresh store, config and log under ``root``."""
        self.root = root
        root.mkdir()
        self.db = root / "maild.db"
        self.config = write_config(root, self.db)
        with self.config.open("a") as fh:
            fh.write(
                f"""
[mailbox]
host = "{self.dovecot.host}"
port = {self.dovecot.imap_port}
security = "none"
username = "{USER}"
password = "{self.dovecot.password}"

{self.sink.toml()}"""
            )
        self.log = root / "daemon.log"
        self.proc = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                maild_cmd(self.config, "run"),
                cwd=REPO,
                env=maild_env(),
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 20) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_until(
    what: str, predicate: Callable[[], bool], timeout: float, daemon: Daemon, step: float = 0.1
) -> float:
    """Poll until ``predicate()``; return the epoch time it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.time()
        if not daemon.alive():
            raise Failed(f"the daemon exited while waiting for {what}:\n{daemon.tail()}")
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f}s waiting for {what}:\n{daemon.tail()}")
        time.sleep(step)


def settled(db: Path, inbound: int) -> Callable[[], bool]:
    """True once ``inbound`` mails are stored and nothing is waiting in the outbox."""

    def check() -> bool:
        counts = store_counts(db)
        return counts["queued"] == 0 and counts["inbound"] >= inbound

    return check


# -- (d) one probe ---------------------------------------------------------------


def probe_mail(i: int, seed: int) -> tuple[Person, str, bytes]:
    sender = Person(f"Idle Probe {i}", f"idle.probe{i}.s{seed}@pangeo.example")
    message_id = f"idle-probe-{seed}-{i}-{time.time_ns()}@pangeo.example"
    spec = MailSpec(
        sender=sender,
        to=[Person("Example Support", SUPPORT)],
        subject=f"Probe {i}: the staging hub is slow",
        date=datetime.now(UTC),
        message_id=message_id,
        body=["The staging hub takes a minute to start a server since this morning.", "Thanks!"],
    )
    return sender, message_id, build_mail(spec)


def lmtp_deliver(dovecot: Dovecot, sender: str, raw: bytes) -> None:
    with smtplib.LMTP(dovecot.host, dovecot.lmtp_port, timeout=30) as lmtp:
        refused = lmtp.sendmail(sender, [USER], raw)
    if refused:
        raise Failed(f"LMTP refused the probe: {refused}")


def wait_for_ack(sink: ThreadedSink, before: int, address: str, timeout: float) -> float:
    """Block until a mail to ``address`` arrives after index ``before``; its arrival time."""
    deadline = time.monotonic() + timeout
    want = before + 1
    while True:
        got = sink.wait_for(want, max(0.01, deadline - time.monotonic()))
        for received in got[before:]:
            if address in received.rcpt_tos:
                return time.time()
        want = len(got) + 1


# -- main --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="mails (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--probes", type=int, default=20, help="IDLE latency probes")
    parser.add_argument("--keep", type=Path, help="copy the stores and logs here at the end")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="(b) and (c) this many times, taking turns; the aim is judged on the median",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)

    tmp = Path(tempfile.mkdtemp(prefix="maild-e2e-"))
    dovecot: Dovecot | None = None
    daemon: Daemon | None = None
    try:
        dovecot = Dovecot()
        dovecot.start()
        with ThreadedSink() as sink:
            daemon = Daemon(tmp / "e2e", dovecot, sink)
            return run(args, tmp, dovecot, sink, daemon)
    except Failed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        return 130
    finally:
        if daemon is not None:
            daemon.stop()
        if dovecot is not None:
            dovecot.close()
        if args.keep is not None and tmp.exists():
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class EndToEnd:
    """One (c): its seconds, what it cost, when things happened, what the store holds."""

    seconds: float
    daemon_cpu: float
    children_cpu: float
    dovecot_cpu: float
    sink_cpu: float
    t0: float
    times: dict[str, Any]
    last_ack: float
    inbox_empty: float
    got: dict[str, int]


@dataclass
class Round:
    """One round's (b) and (c), taken one right after the other."""

    ingest: float
    ingest_cpu: float
    run: EndToEnd
    e2e_first: bool

    @property
    def ratio(self) -> float:
        return self.ingest / self.run.seconds  # the rates' ratio, for the same n


def ingest_phase(
    root: Path, raws: list[bytes], threads: int
) -> tuple[float, float, dict[str, int]]:
    """(b) ``maild ingest`` of the mails as .eml files into a fresh store under ``root``:
    (wall seconds, CPU seconds, the store's counts)."""
    n = len(raws)
    (root / "eml").mkdir(parents=True)
    files = []
    for i, raw in enumerate(raws):
        path = root / "eml" / f"{i:06d}.eml"
        path.write_bytes(raw)
        files.append(str(path))
    db = root / "maild.db"
    config = write_config(root, db)
    run_maild(config, "db", "upgrade")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Timer() as timer:
        run_maild(config, "ingest", *files)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    counts = store_counts(db)
    print(
        f"(b) maild ingest: {timer.seconds:.1f}s, {counts['tickets']} tickets, "
        f"{counts['outbox']} mails queued"
    )
    if counts["tickets"] != threads or counts["inbound"] != n:
        raise Failed(f"maild ingest: {counts}, expected {threads} tickets and {n} inbound")
    return timer.seconds, cpu, counts


def e2e_phase(n: int, dovecot: Dovecot, sink: ThreadedSink, daemon: Daemon) -> EndToEnd:
    """(c) ``maild run`` on a fresh store with the n mails in INBOX, until every mail it
    queued is at the sink and INBOX is empty."""
    run_maild(daemon.config, "db", "upgrade")
    sink.clear()
    arrivals: list[float] = []
    original = sink.handler.arrived

    async def stamped() -> None:
        arrivals.append(time.time())
        await original()

    sink.handler.arrived = stamped  # type: ignore[method-assign]
    try:
        dovecot_before = cpu_of(dovecot_pids(dovecot))
        sink_cpu = time.process_time()
        timeout = 120 + n / 5
        t0 = time.time()
        daemon.start()
        assert daemon.proc is not None

        def all_stored() -> bool:
            return store_counts(daemon.db)["inbound"] >= n if daemon.db.exists() else False

        wait_until("every mail in the store", all_stored, timeout, daemon, step=0.25)
        # the last batch is moved to Processed right after its last mail is stored
        inbox_empty = wait_until(
            "INBOX empty", lambda: dovecot.count(USER, "INBOX") == 0, 60, daemon, step=0.1
        )
        # the store is the authority on what must reach the sink: wait until the
        # outbox is drained, then until the sink holds every mail it sent
        wait_until(
            "the outbox to drain",
            lambda: store_counts(daemon.db)["queued"] == 0,
            timeout,
            daemon,
            step=0.1,
        )
        got = store_counts(daemon.db)
        wait_until("the sink", lambda: len(sink.received) >= got["sent"], 30, daemon, step=0.02)
    finally:
        sink.handler.arrived = original  # type: ignore[method-assign]
    last_ack = max(arrivals)
    measured = EndToEnd(
        seconds=max(last_ack, inbox_empty) - t0,
        daemon_cpu=cpu_of([daemon.proc.pid]),
        children_cpu=cpu_of(children_of(daemon.proc.pid)),
        dovecot_cpu=cpu_of(dovecot_pids(dovecot)) - dovecot_before,
        sink_cpu=time.process_time() - sink_cpu,
        t0=t0,
        times=store_times(daemon.db),
        last_ack=last_ack,
        inbox_empty=inbox_empty,
        got=got,
    )
    if len(sink.received) != got["sent"] or got["sent"] != got["outbox"]:
        raise Failed(f"{len(sink.received)} mails at the sink, store: {got}")
    print(
        f"(c) end to end: {measured.seconds:.1f}s, {got['tickets']} tickets, "
        f"{len(sink.received)} mails at the sink"
    )
    return measured


def run(
    args: argparse.Namespace, tmp: Path, dovecot: Dovecot, sink: ThreadedSink, daemon: Daemon
) -> int:
    n = args.n
    with Timer() as gen:
        mails = generate_mails(n, args.seed)
    threads = len({m.thread for m in mails})
    # A folded RFC 2047 subject from the generator can hold a bare LF; IMAP
    # APPEND (imaplib) turns it into CRLF, so every phase gets those bytes.
    raws = [BARE_LF.sub(b"\r\n", m.raw) for m in mails]
    size = sum(len(r) for r in raws)
    print(
        f"{n} mails in {threads} threads (seed {args.seed}, mean {size / n / 1024:.1f} KB, "
        f"generated in {gen.seconds:.1f}s); load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    with Timer() as append:
        dovecot.deliver_many(USER, raws)
    print(f"appended to Dovecot INBOX in {append.seconds:.1f}s ({rate(n, append.seconds):.0f}/s)")

    # (a) bare fetch, three times (it is short; the median evens out a busy spell)
    fetches = []
    for _ in range(3):
        seconds, count, fetched = asyncio.run(bare_fetch(dovecot, USER))
        if count != n or fetched != size:
            raise Failed(f"bare fetch got {count} mails / {fetched} bytes, expected {n} / {size}")
        fetches.append(seconds)
    bare = statistics.median(fetches)
    print(f"(a) bare fetch: {', '.join(f'{s:.2f}' for s in fetches)} s")

    # (b) and (c), once a round: (b) first in even rounds, (c) first in odd ones, so
    # that a machine growing busier or quieter weighs on both alike
    rounds: list[Round] = []
    for number in range(args.rounds):
        if number:
            finish(daemon)
            daemon.renew(tmp / f"e2e-{number}")
            dovecot.delete_folder(USER, "Processed")
            dovecot.deliver_many(USER, raws)
        e2e_first = number % 2 == 1
        if e2e_first:
            measured = e2e_phase(n, dovecot, sink, daemon)
        ingest, ingest_cpu, expected = ingest_phase(tmp / f"ingest-{number}", raws, threads)
        if not e2e_first:
            measured = e2e_phase(n, dovecot, sink, daemon)
        got = measured.got
        if got["tickets"] != expected["tickets"] or got["outbox"] != expected["outbox"]:
            raise Failed(f"maild run stored {got}, maild ingest {expected}: they should agree")
        rounds.append(Round(ingest, ingest_cpu, measured, e2e_first))

    # (d) IDLE latency, the last round's daemon, now idle
    time.sleep(1.0)
    rng = random.Random(args.seed)
    latencies: list[float] = []
    parts: list[tuple[float, float]] = []
    stored = n
    for i in range(args.probes):
        sender, message_id, raw = probe_mail(i, args.seed)
        before = len(sink.received)
        start = time.time()
        lmtp_deliver(dovecot, sender.address, raw)
        arrived = wait_for_ack(sink, before, sender.address, 30)
        latencies.append(arrived - start)
        stored += 1
        wait_until("the probe to settle", settled(daemon.db, stored), 30, daemon, step=0.05)
        picked = picked_up(daemon.db, message_id)
        if picked is not None:
            parts.append((picked - start, arrived - picked))
        time.sleep(rng.uniform(0.3, 0.8))  # not in step with anything
    finish(daemon)

    last = rounds[-1]
    report(n, bare, last.ingest, last.run)
    for r in rounds:
        c = r.run
        print(
            f"CPU during the end-to-end run: maild run {c.daemon_cpu:.1f}s "
            f"({c.daemon_cpu / c.seconds:.0%} of one core) + its child processes "
            f"{c.children_cpu:.1f}s, Dovecot {c.dovecot_cpu:.2f}s, "
            f"this process (sink, polling) {c.sink_cpu:.1f}s; maild ingest used "
            f"{r.ingest_cpu:.1f}s"
        )
    if len(rounds) > 1:
        print()
        print_table(
            [
                (
                    str(i + 1),
                    "(c), (b)" if r.e2e_first else "(b), (c)",
                    f"{r.ingest:.2f}",
                    f"{r.run.seconds:.2f}",
                    f"{r.ratio:.2f}x",
                )
                for i, r in enumerate(rounds)
            ],
            ["round", "order", "(b) ingest s", "(c) run s", "(c) vs (b)"],
        )
    median = statistics.median(latencies)
    print(
        f"\n(d) IDLE latency, LMTP delivery -> ack at the sink, {len(latencies)} probes: "
        f"median {median * 1000:.0f} ms, min {min(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    if parts:
        print(
            "    median split: delivery -> pipeline start "
            f"{statistics.median(p[0] for p in parts) * 1000:.0f} ms (Dovecot's ~500 ms notify "
            f"delay included), pipeline start -> ack at the sink "
            f"{statistics.median(p[1] for p in parts) * 1000:.0f} ms"
        )
    ratio = statistics.median(r.ratio for r in rounds)
    what = f"median of {len(rounds)} rounds" if len(rounds) > 1 else "one round"
    print(
        f"\naims: end to end >= {AIM_RATIO:.0%} of the maild ingest rate: "
        f"{'met' if ratio >= AIM_RATIO else 'NOT met'} ({ratio:.1%} at N = {n}, {what}); "
        f"IDLE median <= {AIM_IDLE_SECONDS:.0f} s: "
        f"{'met' if median <= AIM_IDLE_SECONDS else 'NOT met'} ({median * 1000:.0f} ms)"
    )
    return 0


def finish(daemon: Daemon) -> None:
    """Stop the daemon; a failure if it exits badly or logged a traceback."""
    status = daemon.stop()
    if status != 0:
        raise Failed(f"maild run exited {status} on SIGTERM:\n{daemon.tail()}")
    if "Traceback" in daemon.log.read_text(errors="replace"):
        raise Failed(f"the daemon logged a traceback:\n{daemon.tail(40)}")


def report(n: int, bare: float, ingest: float, run: EndToEnd) -> None:
    e2e, t0, times = run.seconds, run.t0, run.times
    last_ack, inbox_empty, outgoing = run.last_ack, run.inbox_empty, run.got["sent"]
    rows = [
        (f"(a) bare UID FETCH, {BATCH} per command", bare, "-"),
        ("(b) maild ingest, one process", ingest, "1.00x"),
        ("(c) maild run, end to end", e2e, f"{rate(n, e2e) / rate(n, ingest):.2f}x"),
    ]
    table = [
        (name, f"{seconds:.2f}", f"{rate(n, seconds):,.1f}", f"{seconds / n * 1000:.2f}", vs)
        for name, seconds, vs in rows
    ]
    print()
    print_table(table, ["phase", "seconds", "mails/s", "ms/mail", "vs ingest"])
    print(
        f"ingest / bare fetch: {rate(n, ingest) / rate(n, bare):.2%}; "
        f"end to end / ingest: {rate(n, e2e) / rate(n, ingest):.1%}"
    )
    first, last, sent = times["first_in"], times["last_in"], times["last_sent"]
    if first is not None and last is not None and sent is not None:
        print(
            f"end to end timeline (s after the daemon was started): first mail in the "
            f"pipeline {first - t0:.1f}, last {last - t0:.1f} "
            f"({rate(n - 1, last - first):.1f} mails/s in between), last mail sent "
            f"{sent - t0:.1f}, last at the sink {last_ack - t0:.1f}, INBOX seen empty "
            f"{inbox_empty - t0:.1f}"
        )
        late = times["sent_after_last_in"]
        print(
            f"of the {outgoing} mails sent, {late} ({late / outgoing:.0%}) left after the "
            f"last mail entered the pipeline ({rate(late, sent - last):.0f}/s after ingest)"
        )


if __name__ == "__main__":
    sys.exit(main())
