"""The outbox sender in a process of its own: ``maild run`` on a second core.

In the daemon's process the sender's work (the SMTP dialogue, a transaction
for the outcome of every mail) shared one core with the pipeline: on SQLite,
where the pipeline's chunks and the sender take turns with the one write
lock, that time added up with the pipeline's. :class:`SenderProcess` runs the
same :class:`~maild.mail.outbox.OutboxSender` in a spawned child, with its
own engine (and, on SQLite, its own store thread), under an instance name of
its own (``host:pid:random:sender``, its own pid: the process that holds a
claim is the one named in ``claimed_by``), so the claims work between it and
any other sender as between two instances. The daemon drives it over a
pipe: ``wake`` (new rows), ``turn`` (the daemon's turn between chunks on
SQLite: claim what is due now and say when that committed) and ``stop``
(finish the mail in flight, then exit). The child's log records come back
over the same pipe and are logged by the daemon's own handlers. The child
runs ``SENDER_NICE`` below the daemon's CPU priority: with a backlog on two
CPUs the daemon's chunks and its parsing worker come first, and the child
sends in the time they leave (bench/README.md, e2e).

Nothing about delivery changes: each mail's outcome is committed right after
the relay's answer, before the next mail, in the child (on SQLite to the
outcome journal, :mod:`maild.mail.journal`). The child ends with
the daemon however the daemon ends (``kill -9`` too: a thread in the child
watches its parent), which for its mail is a sender killed, as before: a mail
accepted and not yet recorded is sent again, with the same Message-ID, once
its claim runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import itertools
import logging
import logging.handlers
import multiprocessing
import os
import signal
import threading
from datetime import timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maild.config import SmtpConfig

__all__ = ["SenderProcess", "SenderStoreUnavailable", "can_run_apart"]

log = logging.getLogger(__name__)

#: How much lower the child's CPU priority is than the daemon's (``nice``).
SENDER_NICE = 10
#: How long a stopping child may take for the mail in flight before it is killed:
#: within the daemon's own shutdown limit, itself within systemd's TimeoutStopSec.
STOP_GRACE = 15.0
#: How long a child ended by a stop signal waits for the daemon's own stop to show.
STOP_SIGNAL_WAIT = 5.0


class SenderStoreUnavailable(Exception):
    """A turn in the child failed as the store was unavailable (locked, gone): a retry."""


def can_run_apart(url: str) -> bool:
    """False for an in-memory SQLite store: the child's own connection would open
    another, empty database and never see the daemon's outbox."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    return parsed.database not in (None, "", ":memory:") and "mode=memory" not in url


class SenderProcess:
    """An :class:`~maild.mail.outbox.OutboxSender` in a child process, driven from this loop.

    Offers what the daemon uses of a sender: :meth:`wake`, :meth:`take_turn`
    and :meth:`run`. The child lives while :meth:`run` runs.
    """

    def __init__(self, config: SmtpConfig, url: str, *, claim_for: timedelta) -> None:
        self._args = (config, url, claim_for)
        self._conn: Connection | None = None
        self._tokens = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[int]] = {}

    def wake(self) -> None:
        """New rows were committed: the child starts a pass now."""
        self._send(("wake",))

    async def take_turn(self) -> int:
        """:meth:`~maild.mail.outbox.OutboxSender.take_turn` in the child: the rows
        claimed, once that committed.

        Returns 0 at once when no child runs; raises if the child ends meanwhile.
        """
        if self._conn is None:
            return 0
        token = next(self._tokens)
        waiting = self._waiting[token] = asyncio.get_running_loop().create_future()
        if not self._send(("turn", token)):
            self._waiting.pop(token, None)
            return 0
        handled: int = await waiting
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        """Start the child and keep it until ``stop``; raises if it ends on its own."""
        loop = asyncio.get_running_loop()
        parent_end, child_end = multiprocessing.Pipe()
        process = _start(child_end, self._args, logging.getLogger().getEffectiveLevel())
        child_end.close()
        ended = asyncio.Event()
        self._conn = parent_end
        loop.add_reader(parent_end.fileno(), self._receive)
        loop.add_reader(process.sentinel, ended.set)
        try:
            stopping = asyncio.ensure_future(stop.wait())
            exited = asyncio.ensure_future(ended.wait())
            try:
                await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                exited.cancel()
            if not ended.is_set():
                self._send(("stop",))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), STOP_GRACE)
                if not ended.is_set():
                    log.warning("the sender process did not stop; killing it")
                return
            # ended: reaped at once (its sentinel can fire a moment before that)
            await asyncio.to_thread(process.join, STOP_SIGNAL_WAIT)
            if process.exitcode in (-signal.SIGTERM, -signal.SIGINT):
                # the unit's stop signal reached the child while it started, before it
                # could ignore it: the daemon's own stop follows, nothing failed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), STOP_SIGNAL_WAIT)
            if stop.is_set():
                return
            raise RuntimeError(f"the sender process ended (exit code {process.exitcode})")
        finally:
            loop.remove_reader(process.sentinel)
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(parent_end.fileno())
            try:
                self._receive()  # its last log records and answers
            except Exception:  # an unreadable message must not leave the child behind
                log.exception("the sender process's last messages were unreadable")
            self._conn = None
            parent_end.close()
            if process.is_alive():
                process.kill()  # cancelled, or it did not stop: as after a kill -9
            await asyncio.to_thread(process.join)
            for waiting in self._waiting.values():
                if not waiting.done():
                    if stop.is_set():
                        waiting.set_result(0)
                    else:
                        waiting.set_exception(RuntimeError("the sender process ended"))
            self._waiting.clear()

    def _send(self, message: tuple[Any, ...]) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.send(message)
        except (OSError, ValueError):
            return False  # the child is gone: run() notices it
        return True

    def _receive(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            while conn.poll():
                self._handle(conn.recv())
        except (EOFError, OSError):
            loop = asyncio.get_running_loop()
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(conn.fileno())

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "log":
            record = logging.makeLogRecord(message[1])
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):
                logger.handle(record)
        elif kind == "done":
            _kind, token, handled, error, store = message
            waiting = self._waiting.pop(token, None)
            if waiting is not None and not waiting.done():
                if error is None:
                    waiting.set_result(handled)
                elif store:
                    waiting.set_exception(SenderStoreUnavailable(error))
                else:
                    waiting.set_exception(RuntimeError(error))


def _start(conn: Connection, args: tuple[Any, ...], level: int) -> BaseProcess:
    """Spawn the child (not fork: this process has threads), its stderr on /dev/null:
    a child whose parent dies while it starts up prints multiprocessing's traceback
    there; its own log records come over ``conn``."""
    from maild.service.batch import _stderr_to_devnull

    context = multiprocessing.get_context("spawn")
    process = context.Process(
        target=_child, args=(conn, *args, level), name="maild-sender", daemon=True
    )
    with _stderr_to_devnull():
        process.start()
    return process


class PipeLogHandler(logging.handlers.QueueHandler):
    """The child's log handler: each record as plain values, its traceback kept apart.

    The stock ``prepare`` folds the traceback into the message; the daemon's
    JSON log keeps it in its own ``exception`` field (``logs.JsonFormatter``).
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        record.exc_info = None
        return record


_TRACEBACKS = logging.Formatter()


class _PipeQueue:
    """What :class:`logging.handlers.QueueHandler` puts records into: the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def put_nowait(self, record: logging.LogRecord) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._conn.send(("log", record.__dict__))


def _child(
    conn: Connection,
    config: SmtpConfig,
    url: str,
    claim_for: timedelta,
    level: int,
) -> None:
    """The child's main: the sender until the parent says stop or goes away."""
    from maild.service.worker import start_worker

    start_worker()  # Ctrl-C is the parent's; the parent's end is ours
    # a backlog is filed first: when the daemon (or its parsing worker) and this
    # process want the same core, the daemon gets it; idle, this changes nothing
    os.nice(SENDER_NICE)
    # systemd's SIGTERM reaches every process of the unit: the parent tells us when
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    queue = _PipeQueue(conn)
    handler = PipeLogHandler(queue)  # type: ignore[arg-type]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    try:
        asyncio.run(_serve(conn, queue, config, url, claim_for))
    except BaseException:
        # stderr is /dev/null here: the daemon's log is the only place it can show
        log.exception("the sender process failed")
        raise


async def _serve(
    conn: Connection,
    queue: _PipeQueue,
    config: SmtpConfig,
    url: str,
    claim_for: timedelta,
) -> None:
    from sqlalchemy.exc import InterfaceError, OperationalError

    from maild.logs import describe
    from maild.mail.journal import OutcomeJournal
    from maild.mail.outbox import OutboxSender
    from maild.service.lease import instance_id
    from maild.store.db import make_engine, make_sessionmaker
    from maild.store.inline import StoreThread

    loop = asyncio.get_running_loop()
    engine = make_engine(url, lease=claim_for)
    store = StoreThread.for_url(url)
    journal = OutcomeJournal.for_url(url) if store is not None else None
    sender = OutboxSender(
        config,
        make_sessionmaker(engine),
        instance=f"{instance_id()}:sender",
        claim_for=claim_for,
        store=store,
        journal=journal,
    )
    stop = asyncio.Event()
    turns: set[asyncio.Task[int]] = set()

    def answer(token: int, task: asyncio.Task[int]) -> None:
        turns.discard(task)
        error = None
        handled = 0
        store = False
        if task.cancelled():
            error = "cancelled"
        elif (exc := task.exception()) is not None:
            error = f"{type(exc).__name__}: {exc}"
            store = isinstance(exc, OperationalError | InterfaceError)
            if store:
                error = describe(exc)
        else:
            handled = task.result()
        with queue._lock, contextlib.suppress(OSError, ValueError):
            conn.send(("done", token, handled, error, store))

    def receive() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "wake":
                    sender.wake()
                elif message[0] == "turn" and stop.is_set():
                    # stopping: no new claims (the daemon's turn ends at once)
                    with queue._lock, contextlib.suppress(OSError, ValueError):
                        conn.send(("done", message[1], 0, None, False))
                elif message[0] == "turn":
                    task = asyncio.create_task(sender.take_turn())
                    turns.add(task)
                    task.add_done_callback(functools.partial(answer, message[1]))
                elif message[0] == "stop":
                    stop.set()
        except (EOFError, OSError):
            stop.set()  # the parent is gone
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(conn.fileno())

    loop.add_reader(conn.fileno(), receive)
    try:
        await sender.run(stop)
        if turns:
            await asyncio.wait(turns)
    finally:
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(conn.fileno())
        if store is not None:
            await store.aclose()
        if journal is not None:
            journal.close()
        await engine.dispose()
