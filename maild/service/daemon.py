"""``maild run``: ingestion, the outbox sender and the scheduler as supervised tasks.

With 2 CPUs or more the outbox sender runs in a child process
(:mod:`maild.service.sendproc`) that this process starts, drives and ends.

Lifecycle (after uvicorn's server): one stop event set by SIGTERM/SIGINT; a
second SIGINT forces the exit. Shutdown lets the mail in flight finish (its
transaction commits and it is marked on the server) and then cancels what is
left after a timeout. SIGHUP reloads config and templates; a bad new config
is reported and the old one kept. systemd learns READY=1 once the store is
checked and the first IMAP login was tried (STATUS= says how it went),
WATCHDOG=1 while the loops are alive, STOPPING=1 on the way out; without
NOTIFY_SOCKET nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker

from maild.config import Config, ConfigError, load_config
from maild.core.backoff import Backoff
from maild.core.intake import Parsed, parse_for_ingest
from maild.mail.imap import ImapSource, Verdict
from maild.mail.journal import OutcomeJournal
from maild.mail.outbox import OutboxSender
from maild.mail.render import Renderer, TemplateError, sample_context
from maild.service.batch import CHUNK, ChunkIngest
from maild.service.lease import Deposed, Lease, instance_id
from maild.service.pipeline import Outcome, Pipeline
from maild.service.sendproc import SenderProcess, SenderStoreUnavailable, can_run_apart
from maild.store.db import make_engine, make_sessionmaker, prepare
from maild.store.inline import StoreThread
from maild.store.models import State

__all__ = ["Daemon", "Notifier", "run_daemon"]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 20.0
#: The daemon parses IMAP chunks in a worker process from this many usable CPUs on
#: (beside the sender's process, which gives way to both: sendproc.SENDER_NICE).
PARSE_AHEAD_CORES = 2
#: The outbox sender runs in a process of its own from this many usable CPUs on.
SENDER_PROCESS_CORES = 2
#: Between two chunks the sender sends for up to this long a mail of the chunk to come.
SENDER_TURN_PER_MAIL = 0.03
HEARTBEAT_SECONDS = 30.0
FORGET_GONE = timedelta(days=1)
#: A failed component is restarted after 1 s, 2 s ... at most a minute later ...
RESTART = Backoff(base=1.0, cap=60.0)
#: ... and after 1 s again once it had run this long before failing.
RESTART_RESET_SECONDS = 5 * RESTART.cap


class Notifier:
    """sd_notify(3) over $NOTIFY_SOCKET; silent when systemd is not listening."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 1_000_000

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(addr)
                # never block: a notify socket nobody reads must not freeze us
                sock.send("\n".join(lines).encode(), socket.MSG_DONTWAIT)
        except OSError as exc:
            log.debug("sd_notify failed: %s", exc)


@dataclass
class _Task:
    name: str
    start: Callable[[asyncio.Event], Awaitable[None]]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    alive_at: float = field(default_factory=time.monotonic)


class Daemon:
    """The running service. Construct, then ``await run()``; returns the exit status."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.stop = asyncio.Event()
        self.notifier = Notifier()
        lease = config.database.leader_lease
        self.engine = make_engine(config.database.url, lease=lease)
        self.sessions = make_sessionmaker(self.engine)
        self.pipeline = Pipeline(config, self.sessions)
        self.sender: OutboxSender | SenderProcess | None = None
        # SQLite: the sender's write transactions in a thread of their own (see run())
        self.sender_store: StoreThread | None = None
        # and its outcomes in the journal beside the store (maild.mail.journal)
        self.sender_journal: OutcomeJournal | None = None
        self.imap: ImapSource | None = None
        self.tasks: dict[str, _Task] = {}
        self._interrupts = 0
        self.started_at = datetime.now(UTC)
        self.instance = instance_id()
        self.lease = Lease(self.sessions, "leader", self.instance, lease)
        # the leader's work (IMAP ingestion, the scheduler) commits only under the lease
        self.leader_sessions = self.lease.fenced_sessions()
        self.leader_pipeline = Pipeline(config, self.leader_sessions)
        # IMAP mail a fetch at a time, one transaction each; parsed ahead in a worker
        # process with 2 CPUs or more, the sender's process running at a lower
        # priority (bench/README.md, e2e)
        self.chunks = ChunkIngest(self.leader_pipeline, parse_ahead=_cores() >= PARSE_AHEAD_CORES)
        # SQLite: the sender's turn between chunks (see _sender_turn)
        self._queued = False
        self._sending: asyncio.Task[int] | None = None
        # three missed heartbeats and `maild status` calls an instance gone
        self.heartbeat_every = min(HEARTBEAT_SECONDS, max(1.0, lease.total_seconds()))

    # -- handling one mail ---------------------------------------------------

    async def handle_mail(self, raw: bytes, source: str) -> Verdict:
        """Run one mail through the pipeline; tell the transport what to do with it."""
        pipeline = self.pipeline
        if source.startswith("imap:"):
            if not self.lease.valid:
                # we may have been frozen and replaced: leave it to the leader
                return "retry"
            pipeline = self.leader_pipeline
        try:
            outcome: Outcome = await pipeline.ingest(raw, source, datetime.now(UTC))
        except Deposed as exc:
            log.info("%s left for the new leader, nothing of it committed: %s", source, exc)
            return "retry"
        except (OperationalError, InterfaceError) as exc:
            # the database is locked or away: leave the mail where it is
            log.warning("store unavailable for %s, will retry: %s", source, exc.orig)
            return "retry"
        except Exception:
            log.exception("mail %s could not be stored; left on the server for a retry", source)
            return "retry"
        if outcome.sends and self.sender is not None:
            self.sender.wake()
        return "quarantined" if outcome.action == "quarantined" else "processed"

    async def handle_batch(
        self, mails: Sequence[tuple[bytes, str]], upcoming: Sequence[bytes]
    ) -> list[Verdict]:
        """Run the mails of one IMAP fetch through the pipeline in one transaction (a
        savepoint each, see :mod:`maild.service.batch`); a verdict for each, in order.

        The transaction commits under the leader lease or not at all: a
        deposed leader's chunk is left on the server whole for the new leader.
        """
        if not self.lease.valid:
            return ["retry"] * len(mails)
        parsed = None
        if len(mails) > 1:
            parsed = await self._sender_turn(
                len(mails) * SENDER_TURN_PER_MAIL, [raw for raw, _ in mails]
            )
        if not await self._lease_for_a_chunk():
            return ["retry"] * len(mails)
        now = datetime.now(UTC)
        try:
            items = [(source, raw, now) for raw, source in mails]
            outcomes = await self.chunks.ingest(items, upcoming, parsed)
        except Deposed as exc:
            log.info("%d mails left for the new leader, none committed: %s", len(mails), exc)
            return ["retry"] * len(mails)
        except (OperationalError, InterfaceError) as exc:
            log.warning("store unavailable for %d mails, will retry: %s", len(mails), exc.orig)
            return ["retry"] * len(mails)
        except Exception:
            log.exception(
                "%d mails could not be stored; left on the server for a retry", len(mails)
            )
            return ["retry"] * len(mails)
        if self.sender is not None and any(outcome.sends for outcome in outcomes):
            self._queued = True
            self.sender.wake()
        return ["quarantined" if o.action == "quarantined" else "processed" for o in outcomes]

    async def _sender_turn(self, budget: float, raws: Sequence[bytes]) -> list[Parsed] | None:
        """SQLite: let the sender claim what the last chunk queued before the next one
        starts; the coming chunk's mails parsed meanwhile (None: not parsed here).

        A chunk's transaction holds SQLite's only write lock throughout. The
        sender needs it to claim rows (it writes each mail's outcome to the
        journal beside the store, :mod:`maild.mail.journal`); left to SQLite's
        busy handler, which looks again only every 100 ms, it would claim
        little until a backlog is all in (no acknowledgment for minutes). So
        the sender takes a turn first: it folds the journal and claims what is
        due in one transaction, and sends it while the chunk runs. The turn is
        waited for at most ``budget`` seconds after the parsing. Without a
        parse worker the chunk is parsed here meanwhile, a mail at a time
        (bench/README.md, e2e).
        """
        sender = self.sender
        outbox = self.tasks.get("outbox")
        if (
            sender is None
            or not self._queued
            or self.leader_pipeline.store is None  # not SQLite: no single writer
            or self.stop.is_set()
            or outbox is None
            or outbox.stop.is_set()
        ):
            return None
        self._queued = False
        task = self._sending
        if task is None or task.done():
            task = self._sending = asyncio.create_task(sender.take_turn(), name="maild-send-turn")
            task.add_done_callback(_report_turn)
        parsed = None
        if not self.chunks.parse_ahead:
            limit = self.config.tickets.max_message_bytes
            parsed = []
            for raw in raws:
                parsed.append(parse_for_ingest(raw, limit))
                if not task.done():
                    await asyncio.sleep(0)  # the pass's next step, if it has one ready
        await asyncio.wait({task}, timeout=budget)
        return parsed

    async def _end_sender_turn(self) -> None:
        task = self._sending
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=SHUTDOWN_TIMEOUT)

    async def _lease_for_a_chunk(self) -> bool:
        """Whether we lead, with the lease renewed first unless it was renewed lately.

        A chunk's transaction holds SQLite's write lock, so the election's
        renewal waits for it (and may lose the race for the lock to the next
        chunk): renewed here, between chunks, a lease outlasts any chunk of
        :meth:`chunk_size` mails.
        """
        lease = self.lease
        until = lease.valid_until
        if until is None or not lease.valid:
            return False
        if until - lease.clock() < lease.ttl * 0.55:
            try:
                await lease.acquire()
            except (OperationalError, InterfaceError) as exc:
                log.warning("could not renew the leader lease: %s", exc.orig)
        return lease.valid

    @staticmethod
    def chunk_size(lease: timedelta) -> int:
        """Mails per IMAP fetch and transaction: two a second of lease, at most 100 (the
        default 30 s lease: 60; 2 s: 4). A chunk holds SQLite's write lock throughout, so
        at ~50 ms a mail on a busy machine it takes a tenth of the lease at most."""
        return max(1, min(CHUNK, int(lease.total_seconds() * 2)))

    # -- tasks -------------------------------------------------------------------

    def _sender_apart(self) -> bool:
        """Whether the outbox sender runs in a process of its own (sendproc)."""
        return _cores() >= SENDER_PROCESS_CORES and can_run_apart(self.config.database.url)

    def _components(self) -> list[_Task]:
        """What every instance runs: sending, the LMTP listener, the leader election."""
        tasks: list[_Task] = []
        config = self.config
        if config.smtp is not None:
            if self._sender_apart():
                # its own core (at a lower priority): the daemon's chunks do not wait
                # for its sending (bench/README.md, e2e)
                self.sender = SenderProcess(
                    config.smtp, config.database.url, claim_for=config.database.leader_lease
                )
            else:
                self.sender = OutboxSender(
                    config.smtp,
                    self.sessions,
                    instance=self.instance,
                    claim_for=config.database.leader_lease,
                    store=self.sender_store,
                    journal=self.sender_journal,
                )
            tasks.append(_Task("outbox", self.sender.run))
            tasks.append(_Task("outbox-wakeup", self._run_wakeups))
        else:
            self.sender = None
            log.warning("no [smtp] configured: mail is queued in the outbox but not sent")
        if config.lmtp is not None:
            tasks.append(_Task("lmtp", self._run_lmtp))
        tasks.append(_Task("leader", self._run_leadership))
        return tasks

    def _leader_components(self) -> list[_Task]:
        """What only the leader runs: IMAP ingestion and the scheduler."""
        tasks: list[_Task] = []
        if self.config.mailbox is not None:
            self.imap = ImapSource(
                self.config.mailbox,
                self.leader_sessions,
                self.handle_mail,
                batch_handler=self.handle_batch,
                batch=self.chunk_size(self.config.database.leader_lease),
            )
            tasks.append(_Task("imap", self.imap.run))
        tasks.append(_Task("scheduler", self._run_scheduler))
        return tasks

    async def _run_leadership(self, stop: asyncio.Event) -> None:
        """Hold (or wait for) the leader lease; run the leader's tasks while we hold it."""
        lease = self.lease
        step = max(0.25, lease.ttl.total_seconds() / 4)
        running: list[_Task] = []
        try:
            while not stop.is_set():
                try:
                    held = await lease.acquire()
                except (OperationalError, InterfaceError) as exc:
                    log.warning("could not renew the leader lease: %s", exc.orig)
                    held = lease.valid
                if held and not running:
                    self.notifier.send("STATUS=running as leader")
                    running = self._leader_components()
                    for item in running:
                        item.task = asyncio.create_task(
                            self._supervise(item), name=f"maild-{item.name}"
                        )
                        self.tasks[item.name] = item
                elif not held and running:
                    log.warning("lost the leader lease: stopping IMAP ingestion and the scheduler")
                    self.notifier.send("STATUS=running as standby")
                    await self._stop_tasks(running, SHUTDOWN_TIMEOUT)
                    running = []
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), step)
        finally:
            if running:
                await self._stop_tasks(running, SHUTDOWN_TIMEOUT)
            with contextlib.suppress(Exception):
                await lease.release()

    async def _supervise(self, item: _Task) -> None:
        """Run a component until its stop is set; restart it with backoff when it fails."""
        failures = 0
        while not item.stop.is_set() and not self.stop.is_set():
            started = time.monotonic()
            failure: Exception | None = None
            try:
                await item.start(item.stop)
                if item.stop.is_set() or self.stop.is_set():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = exc
            if time.monotonic() - started > RESTART_RESET_SECONDS:
                failures = 0
            failures += 1
            delay = RESTART.delay(failures)
            if failure is None:
                log.error("%s ended unexpectedly; restarting in %.0fs", item.name, delay)
            else:
                log.error("%s failed; restarting in %.0fs", item.name, delay, exc_info=failure)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    def _start_all(self) -> None:
        for item in self._components():
            item.task = asyncio.create_task(self._supervise(item), name=f"maild-{item.name}")
            self.tasks[item.name] = item

    async def _stop_tasks(self, items: list[_Task], grace: float) -> None:
        for item in items:
            item.stop.set()
        pending = [t.task for t in items if t.task is not None]
        if pending:
            _done, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                log.warning("%s did not stop within %.0fs; cancelling it", task.get_name(), grace)
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        for item in items:
            if self.tasks.get(item.name) is item:
                del self.tasks[item.name]

    async def _stop_all(self, grace: float) -> None:
        # the election last: it stops the leader's tasks and gives up the lease
        items = list(self.tasks.values())
        leader = [t for t in items if t.name == "leader"]
        others = [t for t in items if t.name not in ("leader", "imap", "scheduler")]
        await self._stop_tasks(others, grace)
        await self._stop_tasks(leader, grace)
        self.tasks.clear()

    async def _run_scheduler(self, stop: asyncio.Event) -> None:
        from maild.service.scheduler import Scheduler

        scheduler = Scheduler(self.config, self.leader_sessions, self.leader_pipeline)
        while not stop.is_set():
            try:
                if self.lease.valid:  # a frozen-and-resumed ex-leader does nothing
                    result = await scheduler.run_pass(datetime.now(UTC))
                    if result.sent and self.sender is not None:
                        self.sender.wake()
            except Deposed as exc:
                log.info("scheduler pass left for the new leader: %s", exc)
            except (OperationalError, InterfaceError) as exc:
                log.warning("scheduler pass skipped, store unavailable: %s", exc.orig)
            except Exception:
                log.exception("scheduler pass failed; trying again in a minute")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 60)

    async def _run_wakeups(self, stop: asyncio.Event) -> None:
        from maild.service.wakeup import watch_outbox

        sender = self.sender
        if sender is not None:
            await watch_outbox(self.engine, sender.wake, stop)

    async def _run_lmtp(self, stop: asyncio.Event) -> None:
        from maild.mail.lmtp import serve

        lmtp = self.config.lmtp
        if lmtp is None:
            return
        await serve(lmtp, self.handle_mail, stop, max_bytes=self.config.tickets.max_message_bytes)

    # -- signals ----------------------------------------------------------------

    def _on_term(self) -> None:
        log.info("stopping on request")
        self.stop.set()

    def _on_int(self) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            log.warning("second interrupt: exiting now")
            os._exit(130)
        self._on_term()

    async def reload(self) -> bool:
        """Reload config and templates; keep the old ones if the new config is bad."""
        if self.config_path is None:
            return False
        try:
            new = load_config(self.config_path)
            renderer = Renderer(new)
            problems = renderer.check(sample_context(new))
            if problems:
                raise TemplateError("; ".join(problems))
        except (ConfigError, TemplateError, OSError) as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.send("STATUS=reload refused: bad config, running on the old one")
            return False
        if new.database.url != self.config.database.url:
            log.warning("database.url changed: takes effect at the next restart")
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        await self._stop_all(SHUTDOWN_TIMEOUT)
        self.config = new
        for pipeline in (self.pipeline, self.leader_pipeline):
            pipeline.reconfigure(new, renderer)
        self._start_all()
        self.notifier.send("READY=1", "STATUS=running (config reloaded)")
        log.info("config and templates reloaded from %s", self.config_path)
        return True

    # -- the whole run -------------------------------------------------------------

    async def _first_login(self) -> str:
        mailbox = self.config.mailbox
        if mailbox is None:
            return "no IMAP mailbox configured"
        source = ImapSource(mailbox, self.sessions, self.handle_mail)
        try:
            # log in only: reading mail is the IMAP task's job, under the lease
            await asyncio.wait_for(source.check_login(), 30)
            return f"IMAP {mailbox.host}:{mailbox.port} login ok"
        except Exception as exc:
            return f"IMAP {mailbox.host}:{mailbox.port} not reachable yet: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await source.aclose()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGINT, self._on_int)
        reloads: set[asyncio.Task[bool]] = set()

        def _on_hup() -> None:
            task = asyncio.create_task(self.reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, _on_hup)
        try:
            await prepare(self.engine)
            # each mail's transaction in a thread of its own (SQLite): see maild.store.inline
            self.pipeline.store = StoreThread.for_url(self.config.database.url)
            # the leader's: its transactions commit only under the lease, like leader_sessions
            self.leader_pipeline.store = self._fenced_store()
            # the sender's: a mail's outcome is one hop to this thread, not one through
            # aiosqlite's for each of begin, UPDATE, commit and close (bench/README.md, e2e)
            if not self._sender_apart():
                self.sender_store = StoreThread.for_url(self.config.database.url)
                if self.sender_store is not None:
                    self.sender_journal = OutcomeJournal.for_url(self.config.database.url)
            if self.config.stewards and not self.config.commands.require_authenticated:
                # check-config says it as a warning; here once, as a fact
                log.info(
                    "commands.require_authenticated is off: steward commands are trusted on "
                    "the From header alone"
                )
            if await self.lease.acquire():
                status = await self._first_login()
            else:
                status = "standby: another instance holds the leader lease"
            log.info("maild running: %s", status)
            self._start_all()
            self.notifier.send("READY=1", f"STATUS=running; {status}")
            await self._watch()
            self.notifier.send("STOPPING=1")
            log.info("shutting down")
            # a sending pass begun between chunks ends while the sender still runs: it
            # sends what is due then, or stops after the mail in flight with the sender
            await self._end_sender_turn()
            await self._stop_all(SHUTDOWN_TIMEOUT)
            await self._end_sender_turn()
            await self._forget_heartbeat()
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.chunks.aclose()
            for store in (self.pipeline.store, self.leader_pipeline.store, self.sender_store):
                if store is not None:
                    await store.aclose()
            if self.sender_journal is not None:
                self.sender_journal.close()
            await self.engine.dispose()

    def _fenced_store(self) -> StoreThread | None:
        """A store thread (SQLite) whose sessions are fenced by the leader lease."""
        store = StoreThread.for_url(self.config.database.url)
        if store is not None:
            fenced = self.leader_sessions.kw
            store.sessions = async_sessionmaker(**{**fenced, "bind": store.engine})
        return store

    async def _watch(self) -> None:
        """Until stop: ping the watchdog while every component task is alive, and leave
        a heartbeat in the store for ``maild status``."""
        interval = (self.notifier.watchdog or 20.0) / 2
        last_beat = 0.0
        while not self.stop.is_set():
            alive = all(t.task is not None and not t.task.done() for t in self.tasks.values())
            if alive and self.notifier.watchdog:
                self.notifier.send("WATCHDOG=1")
            if alive and time.monotonic() - last_beat >= self.heartbeat_every:
                try:
                    await self._heartbeat()
                    last_beat = time.monotonic()
                except (OperationalError, InterfaceError) as exc:
                    log.warning("could not write the heartbeat: %s", exc.orig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), min(interval, 5.0, self.heartbeat_every))

    async def _heartbeat(self) -> None:
        now = datetime.now(UTC)
        value = json.dumps(
            {
                "instance": self.instance,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": self.started_at.isoformat(),
                "leader": self.lease.valid,
                "tasks": sorted(self.tasks),
                "every": self.heartbeat_every,
            }
        )
        key = f"heartbeat:{self.instance}"
        async with self.sessions() as session, session.begin():
            row = await session.get(State, key)
            if row is None:
                session.add(State(key=key, value=value, at=now))
            else:
                row.value, row.at = value, now
            # instances gone for a day (killed, host lost) leave `maild status`
            await session.execute(
                delete(State).where(State.key.like("heartbeat:%"), State.at < now - FORGET_GONE)
            )

    async def _forget_heartbeat(self) -> None:
        with contextlib.suppress(Exception):
            async with self.sessions() as session, session.begin():
                row = await session.get(State, f"heartbeat:{self.instance}")
                if row is not None:
                    await session.delete(row)


def _cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _report_turn(task: asyncio.Task[int]) -> None:
    """A sender turn between chunks failed: log it (the sender's own loop retries)."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, OperationalError | InterfaceError):
        log.warning("outbox turn between chunks failed, store unavailable: %s", exc.orig)
    elif isinstance(exc, SenderStoreUnavailable):
        log.warning("outbox turn between chunks failed, store unavailable: %s", exc)
    elif exc is not None:
        log.error("outbox turn between chunks failed", exc_info=exc)


def run_daemon(config: Config, config_path: Path | None) -> int:
    """Entry point for ``maild run``."""

    async def main() -> int:
        return await Daemon(config, config_path).run()

    return asyncio.run(main())
