"""Many mails, few transactions: the driver of ``maild ingest``.

:meth:`Pipeline.ingest` gives every mail a transaction of its own and parses
it in the caller's process. For a file or an mbox of many mails,
:class:`BatchIngest` instead

- commits the mails in chunks (``chunk`` mails, one transaction each), every
  mail in a SAVEPOINT of its own (:meth:`Pipeline.ingest_within`): a mail that
  fails is rolled back and quarantined alone, the others of its chunk commit;
- parses the next chunk in a worker process (the second core) while this one
  writes: :func:`maild.core.intake.parse_many`, whose result pickles cheaply;
- hands out each outcome only after the transaction holding its mail
  committed, so a caller that acknowledges mails (prints them, deletes them
  from a source) never acknowledges one that a crash could still lose.

A store error (locked, gone) loses the chunk's transaction and propagates:
nothing of that chunk was committed. Any other failure of a chunk's commit
(which no single mail's savepoint caught) makes its mails go again one by
one through :meth:`Pipeline.ingest`, so a mail is never lost for another's
sake. The first chunk is parsed here while the worker starts up; an input
of one chunk never starts one (it would cost more than it saves).

:class:`ChunkIngest` is the same for a caller that has its chunks one at a
time (the daemon's IMAP fetches): it commits each chunk it is given the same
way, and parses the chunk announced as next in a worker process that lives
until :meth:`ChunkIngest.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.intake import Parsed, parse_many
from maild.service.pipeline import Outcome, Pipeline
from maild.service.worker import start_worker
from maild.store.batch import defer_write_only, write_deferred

__all__ = [
    "CHUNK",
    "CHUNK_BYTES",
    "BatchIngest",
    "ChunkIngest",
    "Item",
    "commit_chunk",
    "split_chunks",
]

log = logging.getLogger(__name__)

# mails per transaction: large enough that a commit's cost spreads thin, small
# enough that the chunks in flight stay small and a crash loses little work
CHUNK = 100
# and at most about this many bytes of mail per chunk: two chunks are in flight
# (one committing, one parsing) and each mail is held raw and parsed, so an mbox
# of large attachments stays within a bounded memory too
CHUNK_BYTES = 32 * 1024 * 1024

# (source label, raw bytes, the time it counts as received)
Item = tuple[str, bytes, datetime]
# a chunk's transaction, as StoreThread.run takes it
Transaction = Callable[[async_sessionmaker[AsyncSession]], Coroutine[Any, Any, list[Outcome]]]


class BatchIngest:
    """Ingest an iterable of mails in chunked transactions, parsing ahead in a worker."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        chunk: int = CHUNK,
        dry_run: bool = False,
        parse_ahead: bool = True,
    ) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.pipeline = pipeline
        self.chunk = chunk
        self.dry_run = dry_run
        # False: parse in this process (tests, profiles)
        self.parse_ahead = parse_ahead

    async def run(self, items: Iterable[Item]) -> AsyncGenerator[Outcome, None]:
        """Yield one outcome per mail, in order, each after its transaction committed.

        An error reading ``items`` (a missing file) is raised after the mails
        read before it are committed and yielded, as one by one would.
        """
        chunks = split_chunks(items, self.chunk, CHUNK_BYTES)
        current, failure = _pull(chunks)
        loop = asyncio.get_running_loop()
        limit = self.pipeline.config.tickets.max_message_bytes
        pool: Executor | None = None
        ahead: asyncio.Future[list[Parsed]] | None = None
        try:
            while current is not None:
                upcoming, failure = _pull(chunks) if failure is None else (None, failure)
                following: asyncio.Future[list[Parsed]] | None = None
                if upcoming is not None and self.parse_ahead:
                    if pool is None:
                        # more than a chunk: worth a worker
                        pool = _parse_worker()
                    try:
                        following = loop.run_in_executor(pool, parse_many, _raws(upcoming), limit)
                    except BrokenProcessPool:
                        # it died while we were committing: no worker from here on
                        log.warning("the parsing worker died; parsing in this process")
                        self.parse_ahead = False
                if ahead is not None and not self.parse_ahead:
                    _drop(ahead)
                    ahead = None
                if ahead is None:
                    # the first chunk is parsed here while the worker starts up (or
                    # every chunk, once the worker is gone)
                    parsed = self._parse(current)
                else:
                    try:
                        parsed = await ahead
                    except Exception as exc:  # any failure of the worker: parse here
                        # the worker died, ran out of memory or could not send its
                        # result back: the mails are still here, parse them ourselves
                        log.warning("the parsing worker failed (%s); parsing in this process", exc)
                        parsed = self._parse(current)
                        self.parse_ahead = False
                        _drop(following)
                        following = None
                ahead = following
                if ahead is None and pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
                    pool = None
                for outcome in await self._commit(current, parsed):
                    yield outcome
                current = upcoming
            if failure is not None:
                raise failure
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _parse(self, chunk: Sequence[Item]) -> list[Parsed]:
        return parse_many(_raws(chunk), self.pipeline.config.tickets.max_message_bytes)

    async def _commit(self, chunk: Sequence[Item], parsed: Sequence[Parsed]) -> list[Outcome]:
        return await commit_chunk(self.pipeline, chunk, parsed, dry_run=self.dry_run)


class ChunkIngest:
    """Chunks handed in one at a time, each committed as :class:`BatchIngest` commits one.

    :meth:`prepare` announces the next chunk's mails: they are parsed in a
    worker process meanwhile (started at the first call, spawned, ended by
    :meth:`aclose` or with this process). A chunk that was not announced, or
    whose parse failed, is parsed here. Without ``parse_ahead`` nothing is
    parsed elsewhere.
    """

    def __init__(self, pipeline: Pipeline, *, parse_ahead: bool = True) -> None:
        self.pipeline = pipeline
        self.parse_ahead = parse_ahead
        self._pool: ProcessPoolExecutor | None = None
        self._ahead: tuple[list[bytes], asyncio.Future[list[Parsed]]] | None = None

    def prepare(self, raws: Sequence[bytes]) -> None:
        """Start parsing the mails of the next :meth:`ingest` call elsewhere."""
        self._forget()
        if not self.parse_ahead or not raws:
            return
        raws = list(raws)
        limit = self.pipeline.config.tickets.max_message_bytes
        try:
            if self._pool is None:
                self._pool = _parse_worker()
            future = asyncio.get_running_loop().run_in_executor(self._pool, parse_many, raws, limit)
        except BrokenProcessPool:
            log.warning("the parsing worker died; parsing in this process")
            self._stop_worker()
            return
        self._ahead = (raws, future)

    async def ingest(
        self,
        chunk: Sequence[Item],
        upcoming: Sequence[bytes] = (),
        parsed: Sequence[Parsed] | None = None,
    ) -> list[Outcome]:
        """Commit the chunk (one transaction, a savepoint per mail); its outcomes once committed.

        ``upcoming``: the mails of the next call, parsed in the worker meanwhile
        (see :meth:`prepare`). ``parsed``: the chunk's mails already parsed by
        the caller (:func:`maild.core.intake.parse_for_ingest` each, in order).

        Raises what :func:`commit_chunk` raises: a store error (nothing of
        the chunk committed).
        """
        raws = _raws(chunk)
        ahead, self._ahead = self._ahead, None
        self.prepare(upcoming)
        if parsed is not None:
            if ahead is not None:
                _drop(ahead[1])
            return await commit_chunk(self.pipeline, chunk, parsed)
        if ahead is not None and ahead[0] == raws:
            try:
                parsed = await ahead[1]
            except Exception as exc:  # any failure of the worker: parse here
                log.warning("the parsing worker failed (%s); parsing in this process", exc)
                self._stop_worker()
        elif ahead is not None:
            _drop(ahead[1])
        if parsed is None:
            parsed = parse_many(raws, self.pipeline.config.tickets.max_message_bytes)
        return await commit_chunk(self.pipeline, chunk, parsed)

    async def aclose(self) -> None:
        """End the worker (waiting for it), if one was started."""
        self._forget()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _forget(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            _drop(ahead[1])

    def _stop_worker(self) -> None:
        # a worker that failed once is not trusted again: parse here from now on
        self.parse_ahead = False
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _parse_worker() -> ProcessPoolExecutor:
    """One process that parses mail, started now. Spawned, not forked: this process has
    threads (the store's, the loop's helpers); Ctrl-C is ours to handle and it ends with us.

    Its stderr (and that of multiprocessing's resource tracker, started with it) is
    /dev/null: a worker whose parent is killed while it starts up prints a traceback
    from multiprocessing's bootstrap, and the tracker a warning about the dead
    parent's semaphores, into the daemon's log. A worker that fails is reported here
    (the pool breaks and the chunk is parsed in this process).
    """
    with _stderr_to_devnull():
        pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker
        )
        pool.submit(int)  # spawns the process, inside this block
    return pool


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block: what a child started in it inherits."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


async def commit_chunk(
    pipeline: Pipeline, chunk: Sequence[Item], parsed: Sequence[Parsed], *, dry_run: bool = False
) -> list[Outcome]:
    """One transaction for the chunk; the outcomes once committed.

    The chunk goes first without savepoints (a round trip a mail on
    PostgreSQL), its mails' events, outbox rows, automatic sends and
    attachments written at its end, an executemany a table
    (:func:`maild.store.batch.defer_write_only`). If any of its mails raises,
    that transaction is rolled back whole and the chunk goes again with a
    savepoint a mail
    (:meth:`Pipeline.ingest_within`): the mail that fails is rolled back and
    quarantined alone, the others commit. A dry run always takes savepoints.

    A store error (``OperationalError``, ``InterfaceError``: locked, gone,
    or a fenced commit refused) propagates and nothing of the chunk is
    committed. Any other failure of the chunk makes its mails go again one
    by one through :meth:`Pipeline.ingest`.
    """
    # decided before the transaction: a steward's DKIM check may wait for DNS
    verdicts = [
        await pipeline.verdict(p, raw) for (_, raw, _), p in zip(chunk, parsed, strict=True)
    ]

    def transaction(alone: bool) -> Transaction:
        async def run(sessions: async_sessionmaker[AsyncSession]) -> list[Outcome]:
            async with sessions() as session:
                try:
                    async with session.begin():
                        if not alone:
                            # the events, outbox rows, ... of all its mails at the end
                            defer_write_only(session)
                        outcomes = [
                            await pipeline.ingest_within(
                                session, raw, source, now, p, verdict, dry_run=dry_run, alone=alone
                            )
                            for (source, raw, now), p, verdict in zip(
                                chunk, parsed, verdicts, strict=True
                            )
                        ]
                        if dry_run:
                            raise _Discard(outcomes)
                        await write_deferred(session)
                except _Discard as discard:
                    return discard.outcomes
            return outcomes

        return run

    async def attempt(alone: bool) -> list[Outcome]:
        if pipeline.store is not None:
            return await pipeline.store.run(transaction(alone))
        return await transaction(alone)(pipeline.sessions)

    try:
        try:
            outcomes = await attempt(alone=dry_run)  # a dry run takes savepoints at once
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            if dry_run:
                raise
            # a mail of the chunk failed: nothing of it stays; again, each mail alone
            log.debug("a mail of a chunk of %d failed (%r); with a savepoint each", len(chunk), exc)
            outcomes = await attempt(True)
    except (OperationalError, InterfaceError):
        raise
    except Exception:
        log.exception("a chunk of %d mails failed to commit; one by one instead", len(chunk))
        return [
            await pipeline.ingest(raw, source, now, dry_run=dry_run, parsed=p)
            for (source, raw, now), p in zip(chunk, parsed, strict=True)
        ]
    if not dry_run:
        for outcome in outcomes:
            pipeline.log_outcome(outcome)
    return outcomes


class _Discard(Exception):
    """Rolls a dry run's transaction back, carrying what it would have done."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes


def _raws(chunk: Sequence[Item]) -> list[bytes]:
    return [raw for _, raw, _ in chunk]


def _pull(chunks: Iterator[list[Item]]) -> tuple[list[Item] | None, Exception | None]:
    """The next chunk, or None at the end; or the error reading it (raised later)."""
    try:
        return next(chunks, None), None
    except Exception as exc:
        return None, exc


def split_chunks(items: Iterable[Item], size: int, max_bytes: int) -> Iterator[list[Item]]:
    """Lists of ``size`` items, or fewer once they hold ``max_bytes`` (never empty);
    an error in ``items`` comes after the items before it."""
    it = iter(items)
    while True:
        chunk: list[Item] = []
        held = 0
        try:
            for item in it:
                chunk.append(item)
                held += len(item[1])
                if len(chunk) == size or held >= max_bytes:
                    break
        except Exception:
            if chunk:
                yield chunk
            raise
        if not chunk:
            return
        yield chunk


def _drop(future: asyncio.Future[list[Parsed]] | None) -> None:
    """Give up on a parse ahead whose worker is gone, without an unread exception."""
    if future is not None:
        future.cancel()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
