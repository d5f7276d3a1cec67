"""Outgoing mail: durable outbox rows delivered over SMTP, with retry and backoff.

Every mail maild sends is first an :class:`~maild.store.models.Outbox` row,
committed in the same transaction as the change that caused it. This module
moves rows from ``queued`` to ``sent`` or ``failed``:

- **sent**: the server accepted the mail for at least one recipient. Recipients
  it refused are named in ``last_error``; they are not retried, because the
  row is one message with one envelope.
- **failed**: a permanent refusal (5xx to every recipient, to MAIL FROM or
  after DATA), an address that cannot be sent at all, or a temporary failure
  that lasted longer than ``smtp.retry_for``.
- **queued** with ``attempts`` + 1 and a later ``next_attempt_at``: a 4xx, a
  refused/reset/timed-out connection, or a relay that rejects our login (a
  configuration mistake must not burn the queue; it is logged as an ERROR and
  the mail fails only after ``retry_for``).

Delivery is at least once. Each row's outcome is committed right after the
server's answer and before the next row is sent, so a crash or a failed
commit can re-send at most the one mail the server had just accepted. SMTP
has no way to close that window. On PostgreSQL the outcome is an UPDATE of
the row in its own transaction; on SQLite, whose one write lock the
daemon's chunks hold for a second at a time, it goes to the outcome
journal beside the store (:mod:`maild.mail.journal`) and is folded into the
row by the sender's next write transaction, its next claim at the latest.

Several instances share the outbox: a sender first *claims* a burst of due
rows in one short transaction (``claimed_by``, and ``next_attempt_at`` moved
to the end of the claim), sends them one by one with no transaction open,
then records each outcome only if the row is still its claim. The claims are
renewed while the relay works; a sender that froze or died stops renewing,
and once a claim runs out the row is due again for every instance, which
sends it again with the same Message-ID. A sender checks before each mail
that its claims surely still hold, so one that wakes from a freeze sends
nothing another instance may have taken over. When one mail keeps the relay
busy for a whole renewal step, the rows waiting behind it are released.

Times are aware UTC datetimes from the injected ``clock``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import random
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import aiosmtplib
from sqlalchemy import Table, Update, bindparam, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.core.backoff import Backoff
from maild.core.durations import format_duration
from maild.core.inbound import logged_message_id
from maild.logs import describe
from maild.mail.journal import Pending, pending_outcomes
from maild.store.models import Outbox

if TYPE_CHECKING:
    from maild.config import SmtpConfig
    from maild.mail.journal import Fold, OutcomeJournal
    from maild.store.inline import StoreThread

__all__ = ["BATCH_SIZE", "OutboxSender", "fold_journaled"]

log = logging.getLogger(__name__)

#: Rows claimed per query; a pass keeps going until no due row is left.
BATCH_SIZE = 50
#: Rows a turn claims at most (take_turn: what a chunk of the daemon queued).
TURN_SIZE = 500
#: With outcomes in the journal and nothing to send, the next fold comes this soon (s).
FOLD_AFTER = 1.0
#: The longest run() sleeps without looking at the table: other processes
#: (``maild outbox --retry``) queue mail without calling wake().
POLL_INTERVAL = 60.0
#: How long a claimed row stays with its sender without a renewal; then
#: another instance may send it (the daemon passes its leader lease).
CLAIM_FOR = timedelta(seconds=30)
#: Backoff gets up to this fraction added, so rows failed together spread out.
JITTER = 0.1
#: run(): a failed pass (store or relay code trouble) is tried again 2 s, 4 s ... 1 min later.
PASS_RETRY = Backoff(base=2.0, cap=60.0)
#: 530 to MAIL FROM: the relay wants a login that is not configured.
AUTH_REQUIRED = 530

_rng = random.SystemRandom()

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Outcome:
    kind: Literal["sent", "failed", "retry"]
    detail: str = ""


@dataclass(slots=True)
class _Burst:
    """The rows one claim took, while the pass sends them one by one."""

    pending: set[int]
    # time.monotonic() until which our claims surely hold (moved on by each renewal)
    valid_until: float
    released: set[int] = field(default_factory=set)
    in_flight: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class _Unusable(Exception):
    """The relay cannot take any mail this pass; the remaining rows wait too."""

    def __init__(self, detail: str, *, config_problem: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.config_problem = config_problem


class OutboxSender:
    """Delivers due outbox rows through one SMTP relay.

    ``sessions`` makes sessions on the maild database. ``clock`` returns the
    current aware UTC time. ``timeout`` (seconds) bounds every SMTP step.
    Temporary failures wait ``min(backoff_cap, backoff_base * 2**(attempts-1))``
    plus up to 10 % jitter before the next attempt. ``instance`` names this
    sender in its claims (``claimed_by``); ``claim_for`` is how long a claim
    lasts without a renewal. ``store`` (SQLite): a thread of this sender's own
    that runs each of its write transactions (claims, renewals, releases, the
    outcome of each mail) whole, one hop from the event loop instead of one
    through aiosqlite's thread for every begin, statement, commit and close.
    ``journal`` (SQLite, with a ``store``): where the outcome of each mail is
    committed, to be folded into its row by the next write transaction
    (:mod:`maild.mail.journal`).
    """

    def __init__(
        self,
        config: SmtpConfig,
        sessions: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout: float = 30.0,
        backoff_base: timedelta = timedelta(seconds=30),
        backoff_cap: timedelta = timedelta(hours=1),
        poll_interval: float = POLL_INTERVAL,
        instance: str | None = None,
        claim_for: timedelta = CLAIM_FOR,
        store: StoreThread | None = None,
        journal: OutcomeJournal | None = None,
    ) -> None:
        self._config = config
        self._sessions = sessions
        self._store = store
        if journal is not None and store is None:
            # a fold must hold the store's write lock before the journal's:
            # only the store thread's BEGIN IMMEDIATE takes it at once
            raise ValueError("an outcome journal needs a store thread")
        self._journal = journal
        self._clock = clock
        self._timeout = timeout
        # a row's attempts are persisted in the row; this turns them into its next wait
        self._row_backoff = Backoff(
            base=backoff_base.total_seconds(), cap=backoff_cap.total_seconds(), jitter=JITTER
        )
        self._poll_interval = poll_interval
        # the daemon passes its instance id; a sender on its own gets a unique name
        self._instance = instance or f"outbox:{os.getpid()}:{secrets.token_hex(4)}"
        self._claim_for = claim_for
        self._wake = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._lock_rows: bool | None = None
        # two passes in one process must not overlap
        self._pass_lock = asyncio.Lock()
        # rows a turn claimed, with when, for the pass to send (take_turn)
        self._taken: collections.deque[tuple[float, list[int]]] = collections.deque()
        # the burst the pass is sending
        self._burst: _Burst | None = None

    def wake(self) -> None:
        """New rows were committed: start a pass now. Call it from the event loop's thread."""
        self._wake.set()

    async def send_due(self) -> int:
        """Deliver every queued row whose ``next_attempt_at`` has come, oldest first.

        Uses one SMTP connection for the pass (reconnecting if the server drops
        it between mails). Returns the number of rows handled, whatever their
        outcome. Stops after the row in flight when run()'s stop event is set.
        Raises only on database errors. Concurrent calls run one after the other.
        """
        async with self._pass_lock:
            handled = await self._pass()
        await self._fold_now()  # the rows say what happened when this returns
        return handled

    async def take_turn(self) -> int:
        """SQLite, the daemon's turn between two chunks: claim what is due now (folding
        the journal in the same transaction) and return once that committed, the
        number of rows claimed; a pass sends them while the next chunk holds the
        store's write lock, their outcomes going to the journal. Without a
        journal the outcomes need that lock: a whole pass, as :meth:`send_due`.
        """
        if self._journal is None:
            return await self.send_due()
        claiming = time.monotonic()
        ids = await self._claim_due(self._clock(), 0, TURN_SIZE)
        # rows this sender holds already whose claims ran out while they waited:
        # the claim renewed them; taken twice they would be sent twice
        held = self._held()
        ids = [row_id for row_id in ids if row_id not in held]
        if ids:
            self._taken.append((claiming, ids))
            self.wake()
        return len(ids)

    def _held(self) -> set[int]:
        """The rows this sender has claimed and not yet sent or handed back."""
        held = {row_id for _, ids in self._taken for row_id in ids}
        burst = self._burst
        if burst is not None:
            held |= burst.pending - burst.released
        return held

    async def _pass(self) -> int:
        now = self._clock()
        handled = 0
        after = 0
        smtp: aiosmtplib.SMTP | None = None
        unusable: _Unusable | None = None
        burst: _Burst | None = None
        try:
            while not self._stopping():
                if self._taken:
                    claiming, ids = await self._from_turn()
                    if not ids:
                        continue
                else:
                    claiming = time.monotonic()
                    ids = await self._claim_due(now, after, BATCH_SIZE)
                    if not ids:
                        break
                    after = ids[-1]
                burst = self._burst = _Burst(set(ids), claiming + self._claim_for.total_seconds())
                holding = asyncio.create_task(self._hold(burst))
                try:
                    rows = await self._read_claimed(burst)
                    for row in rows:
                        if self._stopping():
                            break
                        if row.id in burst.released:
                            continue  # the relay was slow: another instance may send it
                        if time.monotonic() >= burst.valid_until - self._renew_step():
                            # frozen, or the renewals failed: the claims may have run
                            # out and another instance be sending these rows; the
                            # ones still ours are handed back below
                            log.warning("outbox: our claims ran short; the burst stops here")
                            break
                        burst.in_flight = row.id
                        if unusable is None:
                            try:
                                smtp = await self._connection(smtp)
                                outcome = await self._deliver(smtp, row)
                            except _Unusable as exc:
                                unusable = exc
                                _drop(smtp)
                                smtp = None
                                self._report_unusable(exc)
                                outcome = _Outcome("retry", exc.detail)
                            except Exception as exc:
                                # A bug or a surprise from the library: this row
                                # waits, the next one gets a fresh connection.
                                log.exception("outbox %d: unexpected error while sending", row.id)
                                _drop(smtp)
                                smtp = None
                                outcome = _Outcome("retry", f"unexpected error: {exc!r}")
                        else:
                            outcome = _Outcome("retry", unusable.detail)
                        burst.in_flight = None
                        await self._finish(row, outcome)
                        burst.pending.discard(row.id)
                        handled += 1
                finally:
                    burst.done.set()
                    await holding
                # stopped mid-burst: the rest is due again at once, for any instance
                await self._release(set(burst.pending), burst)
                burst = self._burst = None
            while self._taken and self._stopping():  # what turns claimed too
                _, ids = self._taken.popleft()
                await self._release(set(ids))
        except BaseException:
            # Cancelled or the database failed: no time for a polite QUIT. The
            # claims left run out after claim_for.
            self._burst = None
            _drop(smtp)
            raise
        if smtp is not None:
            await _quit(smtp)
        return handled

    async def _from_turn(self) -> tuple[float, list[int]]:
        """The oldest rows a turn claimed, renewed first if their claims have aged
        (a burst before them kept the relay busy); those no longer ours left out."""
        claiming, ids = self._taken.popleft()
        if time.monotonic() - claiming < self._renew_step():
            return claiming, ids
        claiming = time.monotonic()
        try:
            renewed = await self._write(functools.partial(self._renew_in, ids=set(ids)))
        except (OperationalError, InterfaceError) as exc:
            log.warning("outbox %s: could not renew the claims: %s", ids, exc.orig)
            return claiming, []  # they run out on their own
        return claiming, sorted(renewed)

    async def run(self, stop: asyncio.Event) -> None:
        """Send due mail until ``stop`` is set.

        After each pass, sleeps until wake(), the earliest ``next_attempt_at``,
        ``stop`` or the poll interval, whichever comes first. Errors are logged
        and retried with a growing pause; only cancellation propagates. When
        ``stop`` is set mid-pass, the mail in flight is finished first.
        """
        self._stop = stop
        failures = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    async with self._pass_lock:
                        handled = await self._pass()
                    delay = await self._idle_delay(handled)
                    if self._journal is not None and await self._journal.has_pending():
                        # the daemon's next turn usually folds them before this
                        delay = min(delay, FOLD_AFTER)
                    failures = 0
                except (OperationalError, InterfaceError) as exc:
                    # the store is locked, restarting or ended our session: the
                    # rows stay queued (a claimed one is taken over when its claim ends)
                    failures += 1
                    delay = PASS_RETRY.delay(failures)
                    log.warning(
                        "outbox pass failed, store unavailable: %s; trying again in %.0f s",
                        describe(exc),
                        delay,
                    )
                except Exception:
                    failures += 1
                    delay = PASS_RETRY.delay(failures)
                    log.exception("outbox pass failed; trying again in %.0f s", delay)
                await self._sleep(stop, delay)
            with contextlib.suppress(OperationalError, InterfaceError):
                await self._fold_now()  # or the next start folds them
        finally:
            if not stop.is_set():
                self._stop = None
            # else kept: a pass still running (the daemon's turn between chunks)
            # ends after its mail in flight instead of sending the whole backlog

    # -- the database ------------------------------------------------------------

    async def _claim_due(self, now: datetime, after: int, limit: int) -> list[int]:
        """The ids of up to ``limit`` due rows, oldest first, claimed for this instance.

        One short transaction that returns only the ids: the mail itself is read
        after the commit (:meth:`_read_claimed`), so no row lock is held while
        the bytes travel, and none while the relay talks. A frozen or dead sender
        holds nothing but its claims, which last ``claim_for`` (renewed while
        the relay works) and then let another instance send the rows.
        """
        return await self._write(
            functools.partial(self._claim_in, now=now, after=after, limit=limit)
        )

    async def _claim_in(
        self, sessions: async_sessionmaker[AsyncSession], now: datetime, after: int, limit: int
    ) -> list[int]:
        async with self._transaction(sessions) as session:
            if self._lock_rows is None:
                self._lock_rows = session.get_bind().dialect.name == "postgresql"
            due = (
                select(Outbox.id)
                .where(Outbox.status == "queued", Outbox.next_attempt_at <= now, Outbox.id > after)
                .order_by(Outbox.id)
                .limit(limit)
            )
            if self._lock_rows:
                # Rows another instance is claiming right now: skip, do not wait.
                # A statement of its own: as a subquery of the UPDATE, PostgreSQL
                # may rescan it for every row updated (a nested loop semi join),
                # each rescan skipping the rows just updated, and claim every
                # due row instead of BATCH_SIZE.
                locked = (await session.scalars(due.with_for_update(skip_locked=True))).all()
                if not locked:
                    return []
                which = Outbox.id.in_(locked)
            else:
                which = Outbox.id.in_(due.scalar_subquery())
            claim = (
                update(Outbox)
                .where(
                    which,
                    Outbox.status == "queued",
                    Outbox.next_attempt_at <= now,
                )
                .values(claimed_by=self._instance, next_attempt_at=self._clock() + self._claim_for)
                .returning(Outbox.id)
                .execution_options(synchronize_session=False)
            )
            return sorted((await session.scalars(claim)).all())

    async def _read_claimed(self, burst: _Burst) -> Sequence[Outbox]:
        """The burst's rows that are still ours, oldest first, read after the claim's commit.

        A row that is no longer ours (we stalled between the claim and this
        read, and another instance took it over) is left out of the burst.
        """
        async with self._sessions() as session:
            rows = (
                await session.scalars(
                    select(Outbox)
                    .where(
                        Outbox.id.in_(burst.pending),
                        Outbox.status == "queued",
                        Outbox.claimed_by == self._instance,
                    )
                    .order_by(Outbox.id)
                )
            ).all()
        burst.released |= burst.pending - {row.id for row in rows}
        return rows

    async def _hold(self, burst: _Burst) -> None:
        """Until the burst is done, keep our claims on its rows from running out.

        When one mail keeps the relay busy for a whole renewal step (in flight
        at two renewals in a row), the rows still waiting behind it are released
        instead, for another instance to send. A relay that keeps answering
        keeps the burst: a mail in flight at one renewal only is the usual case.
        """
        step = self._renew_step()
        seen: int | None = None  # the mail in flight at the last renewal
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(burst.done.wait(), step)
            if burst.done.is_set():
                return
            stuck = burst.in_flight is not None and burst.in_flight == seen
            seen = burst.in_flight
            waiting = burst.pending - burst.released - {burst.in_flight}
            if stuck and waiting:
                await self._release(waiting, burst)
            ids = burst.pending - burst.released
            if not ids:
                continue
            renewing = time.monotonic()
            try:
                renewed = await self._write(functools.partial(self._renew_in, ids=ids))
            except (OperationalError, InterfaceError) as exc:
                log.warning("outbox %s: could not renew the claims: %s", sorted(ids), exc.orig)
                continue
            burst.valid_until = renewing + self._claim_for.total_seconds()
            # a row no longer ours (taken over while we were away) is not sent by us
            burst.released |= ids - renewed

    async def _renew_in(
        self, sessions: async_sessionmaker[AsyncSession], ids: set[int]
    ) -> set[int]:
        async with self._transaction(sessions) as session:
            renewed = self._update_ours(ids).values(next_attempt_at=self._clock() + self._claim_for)
            return set((await session.scalars(renewed.returning(Outbox.id))).all())

    def _update_ours(self, ids: set[int]) -> Update:
        """An UPDATE of those of ``ids`` still queued and claimed by this sender."""
        return (
            update(Outbox)
            .where(
                Outbox.id.in_(ids),
                Outbox.status == "queued",
                Outbox.claimed_by == self._instance,
            )
            .execution_options(synchronize_session=False)
        )

    def _renew_step(self) -> float:
        """How often a burst's claims are renewed: a third of their length."""
        return max(self._claim_for.total_seconds() / 3, 0.2)

    async def _release(self, ids: set[int], burst: _Burst | None = None) -> None:
        """Give claimed rows we will not send now back to every instance, due at once."""
        if not ids:
            return
        if burst is not None:
            burst.released |= ids  # first: the pass must not send them any more

        async def release(sessions: async_sessionmaker[AsyncSession]) -> None:
            async with self._transaction(sessions) as session:
                await session.execute(
                    self._update_ours(ids).values(claimed_by=None, next_attempt_at=self._clock())
                )

        try:
            await self._write(release)
        except (OperationalError, InterfaceError) as exc:
            # the claims run out on their own
            log.warning("outbox %s: could not release the claims: %s", sorted(ids), exc.orig)

    async def _finish(self, claimed: Outbox, outcome: _Outcome) -> None:
        """Record the outcome, if the row is still ours; otherwise say what happened.

        One conditional UPDATE in its own transaction, committed before the
        next mail is sent; with a journal, the outcome committed there instead
        (whether the row was still ours shows when it is folded).
        """
        outcome, values = self._record(claimed, outcome)
        try:
            mine = await self._commit_outcome(claimed, outcome, values)
        except Exception:
            if outcome.kind == "sent":
                log.error(
                    "outbox %d was delivered but recording it failed; it will be sent again",
                    claimed.id,
                )
            raise
        if mine:
            self._log_outcome(claimed, outcome, values)
        else:
            _lost(_who(claimed), outcome.kind)

    async def _commit_outcome(
        self, claimed: Outbox, outcome: _Outcome, values: dict[str, object]
    ) -> bool:
        """Commit the outcome: whether the row was still ours (with a journal, the
        fold tells; this says yes)."""
        if self._journal is not None:
            who = _who(claimed)
            await self._journal.record(claimed.id, self._instance, outcome.kind, values, who)
            return True
        statement = _finish_statement(tuple(values))
        parameters = {**values, "row_id": claimed.id, "instance": self._instance}

        async def finish(sessions: async_sessionmaker[AsyncSession]) -> bool:
            async with sessions() as session, session.begin():
                done = await session.execute(statement, parameters)
                return bool(done.rowcount == 1)  # type: ignore[attr-defined]

        return await self._write(finish)

    @contextlib.asynccontextmanager
    async def _transaction(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AsyncIterator[AsyncSession]:
        """A write transaction on the store that first folds the journal's outcomes
        into their rows (with a journal; the store thread's ``BEGIN IMMEDIATE``
        holds the store's write lock before the journal is taken)."""
        async with sessions() as session:
            fold: Fold | None = None
            try:
                async with session.begin():
                    if self._journal is not None:
                        # the store's write lock first (BEGIN IMMEDIATE); a fold that
                        # took the journal and then waited for a chunk would stop
                        # every sender's records until the chunk ends
                        await session.connection()
                        fold = self._journal.fold()
                        await _apply(session, fold)
                    yield session
            except BaseException:
                if fold is not None:
                    fold.keep()
                raise
            if fold is not None:
                fold.forget()

    async def _fold_now(self) -> None:
        """Fold the journal's outcomes into their rows now, if any wait (without them,
        no write transaction: it would wait for the store's lock for nothing)."""
        if self._journal is None or not await self._journal.has_pending():
            return

        async def fold(sessions: async_sessionmaker[AsyncSession]) -> None:
            async with self._transaction(sessions):
                pass

        await self._write(fold)

    async def _write(
        self, transaction: Callable[[async_sessionmaker[AsyncSession]], Coroutine[Any, Any, T]]
    ) -> T:
        """Run a write transaction: in this sender's store thread if it has one."""
        if self._store is not None:
            return await self._store.run(transaction)
        return await transaction(self._sessions)

    def _record(self, row: Outbox, outcome: _Outcome) -> tuple[_Outcome, dict[str, object]]:
        """The final outcome for ``row`` (claimed as given) and the columns that record it."""
        now = self._clock()
        attempts = row.attempts + 1
        if outcome.kind == "sent":
            return outcome, {
                "attempts": attempts,
                "status": "sent",
                "sent_at": now,
                "last_error": outcome.detail or None,
            }
        if outcome.kind == "retry" and now - row.created_at > self._config.retry_for:
            outcome = _Outcome(
                "failed",
                f"gave up after {format_duration(self._config.retry_for)}: {outcome.detail}",
            )
        if outcome.kind == "failed":
            return outcome, {"attempts": attempts, "status": "failed", "last_error": outcome.detail}
        return outcome, {
            "attempts": attempts,
            "last_error": outcome.detail,
            "next_attempt_at": now + self._backoff(attempts),
        }

    def _log_outcome(self, row: Outbox, outcome: _Outcome, values: dict[str, object]) -> None:
        who = _who(row)
        to = ", ".join(str(r) for r in row.rcpt_tos)
        if outcome.kind == "sent":
            if outcome.detail:
                log.warning("%s sent to %s; %s", who, to, outcome.detail)
            else:
                log.info("%s sent to %s", who, to)
        elif outcome.kind == "failed":
            log.error("%s to %s failed: %s", who, to, outcome.detail)
        else:
            later = values["next_attempt_at"]
            when = later.isoformat(timespec="seconds") if isinstance(later, datetime) else later
            log.warning(
                "%s to %s deferred (attempt %d, next at %s): %s",
                who,
                to,
                values["attempts"],
                when,
                outcome.detail,
            )

    def _backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=self._row_backoff.delay(attempts, _rng.random()))

    async def _idle_delay(self, handled: int) -> float:
        async with self._sessions() as session:
            earliest = await session.scalar(
                select(func.min(Outbox.next_attempt_at)).where(Outbox.status == "queued")
            )
        if earliest is None:
            return self._poll_interval
        delay = (earliest - self._clock()).total_seconds()
        if delay <= 0 and handled == 0:
            # Due but not ours to take (locked by another maild): do not spin.
            return 1.0
        return max(0.0, min(delay, self._poll_interval))

    # -- the relay -----------------------------------------------------------------

    async def _connection(self, smtp: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP:
        """``smtp`` if still connected, else a new logged-in connection."""
        if smtp is not None and smtp.is_connected:
            return smtp
        _drop(smtp)
        cfg = self._config
        fresh = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.security == "tls",
            # False, not None: "none" must not upgrade just because the server offers it.
            start_tls=cfg.security == "starttls",
            username=cfg.username,
            password=cfg.password if cfg.username is not None else None,
            timeout=self._timeout,
        )
        where = f"{cfg.host}:{cfg.port}"
        try:
            await fresh.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            _drop(fresh)
            raise _Unusable(
                f"{where} refused the login as {cfg.username!r}: {exc.code} {exc.message}; "
                "check smtp.username and smtp.password",
                config_problem=True,
            ) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            _drop(fresh)
            raise _Unusable(
                f"{where}: {exc.message}; check smtp.security", config_problem=True
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            _drop(fresh)
            raise _Unusable(f"{where} refused the session: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            _drop(fresh)
            if _is_tls_problem(exc):
                raise _Unusable(
                    f"TLS with {where} failed: {describe(exc)}; check smtp.security and smtp.port",
                    config_problem=True,
                ) from exc
            raise _Unusable(f"cannot connect to {where}: {describe(exc)}") from exc
        return fresh

    async def _deliver(self, smtp: aiosmtplib.SMTP, row: Outbox) -> _Outcome:
        """One SMTP transaction for ``row``; raises :class:`_Unusable` if the relay is."""
        recipients = [str(r) for r in row.rcpt_tos]
        if not recipients:
            return _Outcome("failed", "no recipients")
        addresses = [row.mail_from, *recipients]
        options = [] if all(a.isascii() for a in addresses) else ["SMTPUTF8"]
        try:
            refused, _reply = await smtp.sendmail(
                row.mail_from, recipients, row.raw, mail_options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            permanent = all(r.code >= 500 for r in exc.recipients)
            return _Outcome("failed" if permanent else "retry", f"recipients refused: {detail}")
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code == AUTH_REQUIRED:
                raise _Unusable(
                    f"{self._config.host}:{self._config.port} requires a login: "
                    f"{exc.code} {exc.message}; set smtp.username and smtp.password",
                    config_problem=True,
                ) from exc
            return _by_code(exc.code, f"sender {exc.sender} refused: {exc.code} {exc.message}")
        except aiosmtplib.SMTPDataError as exc:
            return _by_code(exc.code, f"message refused: {exc.code} {exc.message}")
        except aiosmtplib.SMTPNotSupported as exc:
            return _Outcome("failed", exc.message)
        except aiosmtplib.SMTPResponseException as exc:
            # 421 and friends: this mail waits; a dropped connection is noticed
            # and reopened before the next one.
            return _by_code(exc.code, f"{exc.code} {exc.message}")
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Timeouts and disconnects leave the session in an unknown state.
            where = f"{self._config.host}:{self._config.port}"
            raise _Unusable(f"connection to {where} failed: {describe(exc)}") from exc
        except ValueError as exc:
            return _Outcome("failed", f"cannot be sent: {exc}")
        if refused:
            detail = "; ".join(f"{addr}: {r.code} {r.message}" for addr, r in refused.items())
            return _Outcome("sent", f"some recipients refused: {detail}")
        return _Outcome("sent")

    def _report_unusable(self, exc: _Unusable) -> None:
        if exc.config_problem:
            log.error("SMTP configuration problem, outgoing mail stays queued: %s", exc.detail)
        else:
            log.warning("SMTP relay unavailable, outgoing mail stays queued: %s", exc.detail)

    # -- run() helpers ---------------------------------------------------------------

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _sleep(self, stop: asyncio.Event, delay: float) -> None:
        if stop.is_set() or self._wake.is_set() or delay <= 0:
            return
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


# the UPDATE recording an outcome, one per set of columns (sent, failed,
# retry): built once, so a sent mail costs no statement building or cache key
_FINISH: dict[tuple[str, ...], Update] = {}


def _finish_statement(columns: tuple[str, ...]) -> Update:
    """``UPDATE outbox SET claimed_by = NULL, <columns>`` for a row still queued and ours."""
    statement = _FINISH.get(columns)
    if statement is None:
        table = cast(Table, Outbox.__table__)
        statement = (
            update(table)
            .where(
                table.c.id == bindparam("row_id"),
                table.c.status == "queued",
                table.c.claimed_by == bindparam("instance"),
            )
            .values(claimed_by=None, **{name: bindparam(name) for name in columns})
        )
        _FINISH[columns] = statement
    return statement


async def _set_outcomes(session: AsyncSession, outcomes: Iterable[Pending]) -> list[Pending]:
    """Set journaled outcomes on their rows, each only if its sender still claims it;
    the ones that found their row no longer so."""
    missed = []
    for pending in outcomes:
        done = await session.execute(
            _finish_statement(tuple(pending.columns)),
            {**pending.columns, "row_id": pending.row_id, "instance": pending.instance},
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            missed.append(pending)
    return missed


async def fold_journaled(session: AsyncSession, url: str, row_ids: set[int]) -> bool:
    """Set on ``row_ids`` now what the next fold would set: the outcomes their senders
    journaled (SQLite, :mod:`maild.mail.journal`), with the fold's own statement. For a
    bounce that arrives before the fold: it must find its mail sent. Whether any row
    took an outcome."""
    pending = pending_outcomes(url, row_ids) if row_ids else {}
    if not pending:
        return False
    return len(await _set_outcomes(session, pending.values())) < len(pending)


async def _apply(session: AsyncSession, fold: Fold) -> None:
    """Set the fold's outcomes on their rows, each only if its sender still claims it."""
    missed = await _set_outcomes(session, fold.pending)
    if not missed:
        return
    table = cast(Table, Outbox.__table__)
    names = sorted({"status"} | {name for pending in missed for name in pending.columns})
    rows = {
        row.id: row._mapping
        for row in await session.execute(
            select(table.c.id, *(table.c[name] for name in names)).where(
                table.c.id.in_({pending.row_id for pending in missed})
            )
        )
    }
    for pending in missed:
        row = rows.get(pending.row_id)
        if row is None:
            continue  # no such row any more
        # a row that holds this very outcome was folded before (a crash between
        # the store's commit and the journal's), a bounced one by the bounce that
        # came first (fold_journaled); any other was taken over
        if row["status"] == "bounced" and pending.kind == "sent":
            continue
        if any(row[name] != value for name, value in pending.columns.items()):
            _lost(pending.who, pending.kind)


def _lost(who: str, kind: str) -> None:
    """The sender's claim ran out while it was stalled and another instance took the row."""
    if kind == "sent":
        log.warning(
            "%s was sent after its sender's claim ran out; another instance "
            "took it over, so it may arrive twice (with the same Message-ID)",
            who,
        )
    else:
        log.info("%s: another instance took it over while this one was stalled", who)


def _who(row: Outbox) -> str:
    return f"outbox {row.id} (ticket {row.ticket_id}, {logged_message_id(row.raw)})"


def _by_code(code: int, detail: str) -> _Outcome:
    return _Outcome("failed" if code >= 500 else "retry", detail)


def _is_tls_problem(exc: BaseException) -> bool:
    """A handshake or certificate failure, or STARTTLS asked of a server without it."""
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        return True
    # aiosmtplib raises a bare SMTPException for a missing STARTTLS extension.
    return type(exc) is aiosmtplib.SMTPException and "STARTTLS" in str(exc)


def _drop(smtp: aiosmtplib.SMTP | None) -> None:
    """Close without a goodbye: the session is broken or not worth a QUIT."""
    if smtp is not None:
        smtp.close()


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
