"""One leader among several daemons on one database: a lease row per role.

The holder renews its lease well before it runs out; another instance takes
the role only once the lease has expired, so a dead or frozen (SIGSTOP)
leader is replaced within one lease time. Claims are conditional UPDATEs, so
two instances cannot both win. A holder that could not renew in time stops
acting as leader before its lease runs out (``valid``), which keeps a frozen
and then resumed process from working beside its successor.

Fencing: the lease row carries an epoch, one more each time the role changes
hands. Work done in the role uses :meth:`Lease.fenced_sessions`: every such
transaction remembers the epoch it began under and, in the same transaction,
just before it commits, checks that the lease is still ours with that epoch
and not expired (on PostgreSQL with a share lock on the lease row, so the
role cannot change hands before the commit; on SQLite the check is a write,
which serialises it with any takeover). A deposed leader's commit raises
:class:`Deposed` and nothing of it is written: the new leader does that work.

Time is the hosts' clocks (keep them in NTP sync); the lease is tens of
seconds, far above any sane skew.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, event, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from maild.store.models import Lease as LeaseRow

__all__ = ["Deposed", "Lease", "instance_id"]

log = logging.getLogger(__name__)

_EPOCH = "maild.lease_epoch"


class Deposed(OperationalError):
    """Work done in a role this instance no longer holds; nothing of it was committed.

    An OperationalError, so that every caller treats it as "leave the work for
    later" (IMAP leaves the mail on the server, the scheduler skips the pass).
    """

    def __init__(self, role: str, why: str) -> None:
        super().__init__(f"-- fencing check of the {role} lease", None, RuntimeError(why))
        self.role = role
        self.why = why

    def __str__(self) -> str:
        return f"{self.role}: {self.why}"


def _dead_here(holder: str) -> bool:
    """Whether ``holder`` (host:pid:token) is a process of this host that no longer runs."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def instance_id() -> str:
    """host:pid:random — unique per process, readable in ``maild status``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Lease:
    """The claim of ``holder`` on ``role``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        role: str,
        holder: str,
        ttl: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sessions = sessions
        self.role = role
        self.holder = holder
        self.ttl = ttl
        self.clock = clock
        self.valid_until: datetime | None = None
        # the fencing token of our current hold; None while we do not hold the role
        self.epoch: int | None = None

    @property
    def valid(self) -> bool:
        """Whether we may act as the holder now (with a margin before expiry)."""
        return self.valid_until is not None and self.clock() < self.valid_until

    def _mark(self, now: datetime) -> None:
        # stop acting a fifth of the lease before it runs out: others only
        # take over after it has run out
        self.valid_until = now + self.ttl * 0.8

    async def acquire(self) -> bool:
        """Take or renew the role; True if we hold it now."""
        now = self.clock()
        async with self.sessions() as session, session.begin():
            epoch = await self._claim(session, now)
        if epoch is None:
            self.valid_until = None
            self.epoch = None
            return False
        if self.valid_until is None or epoch != self.epoch:
            log.info("%s: this instance (%s) holds the role now", self.role, self.holder)
        self.epoch = epoch
        self._mark(now)
        return True

    async def _claim(self, session: AsyncSession, now: datetime) -> int | None:
        """The epoch we hold the role with, or None if another holds it."""
        ours = LeaseRow.holder == self.holder
        renewed = await session.execute(
            update(LeaseRow)
            .where(LeaseRow.role == self.role, or_(ours, LeaseRow.expires_at < now))
            .values(
                holder=self.holder,
                expires_at=now + self.ttl,
                acquired_at=case((ours, LeaseRow.acquired_at), else_=now),
                epoch=case((ours, LeaseRow.epoch), else_=LeaseRow.epoch + 1),
            )
        )
        if renewed.rowcount == 1:  # type: ignore[attr-defined]
            return await self._epoch(session)
        holder = await session.scalar(select(LeaseRow.holder).where(LeaseRow.role == self.role))
        if holder is not None:
            if not _dead_here(holder):
                return None
            # the holder was a process on this host that is gone (a crash, kill -9):
            # no need to wait out its lease before reading mail again
            taken = await session.execute(
                update(LeaseRow)
                .where(LeaseRow.role == self.role, LeaseRow.holder == holder)
                .values(
                    holder=self.holder,
                    acquired_at=now,
                    expires_at=now + self.ttl,
                    epoch=LeaseRow.epoch + 1,
                )
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                log.info("%s: took over from %s, which is no longer running", self.role, holder)
                return await self._epoch(session)
            return None
        try:
            async with session.begin_nested():
                session.add(
                    LeaseRow(
                        role=self.role,
                        holder=self.holder,
                        acquired_at=now,
                        expires_at=now + self.ttl,
                        epoch=1,
                    )
                )
        except IntegrityError:
            return None
        return 1

    async def _epoch(self, session: AsyncSession) -> int | None:
        return await session.scalar(select(LeaseRow.epoch).where(LeaseRow.role == self.role))

    # -- fencing -------------------------------------------------------------------

    def fenced_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions like :attr:`sessions` whose commits succeed only while we hold the role.

        Each transaction takes the epoch current when it begins; its commit
        raises :class:`Deposed` (and rolls back) unless the lease row still
        names us, with that epoch, unexpired.
        """

        class Fenced(Session):
            pass

        event.listen(Fenced, "after_transaction_create", self._remember_epoch)
        event.listen(Fenced, "before_commit", self._fence)
        return async_sessionmaker(**{**self.sessions.kw, "sync_session_class": Fenced})

    def _remember_epoch(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            session.info[_EPOCH] = self.epoch

    def _fence(self, session: Session) -> None:
        """Runs inside the commit, before it: raise Deposed unless the role is still ours."""
        epoch = session.info.get(_EPOCH)
        if epoch is None or epoch != self.epoch or not self.valid:
            raise Deposed(self.role, "this instance no longer holds the lease")
        session.flush()
        now = self.clock()
        if session.get_bind().dialect.name == "postgresql":
            # a share lock: another instance's takeover (an UPDATE) waits until we commit
            row = session.execute(
                select(LeaseRow.holder, LeaseRow.epoch, LeaseRow.expires_at)
                .where(LeaseRow.role == self.role)
                .with_for_update(read=True)
            ).first()
            ours = (
                row is not None
                and row.holder == self.holder
                and row.epoch == epoch
                and row.expires_at > now
            )
        else:
            # SQLite: a write takes the database's write lock until we commit
            checked = session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.role == self.role,
                    LeaseRow.holder == self.holder,
                    LeaseRow.epoch == epoch,
                    LeaseRow.expires_at > now,
                )
                .values(epoch=LeaseRow.epoch)
            )
            ours = checked.rowcount == 1  # type: ignore[attr-defined]
        if not ours:
            raise Deposed(self.role, f"the lease has passed to another instance (epoch {epoch})")

    async def release(self) -> None:
        """Give the role up at once (clean shutdown), so another can take it."""
        self.valid_until = None
        self.epoch = None
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(LeaseRow)
                .where(LeaseRow.role == self.role, LeaseRow.holder == self.holder)
                .values(expires_at=self.clock() - timedelta(seconds=1))
            )
