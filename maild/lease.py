"""One leader among several daemons on one database: a lease row per role.

The holder renews its lease well before it runs out; another instance takes
the role only once the lease has expired, so a dead or frozen (SIGSTOP)
leader is replaced within one lease time. Claims are conditional UPDATEs, so
two instances cannot both win. A holder that could not renew in time stops
acting as leader before its lease runs out (``valid``), which keeps a frozen
and then resumed process from working beside its successor.

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

from sqlalchemy import case, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.store.models import Lease as LeaseRow

__all__ = ["Lease", "instance_id"]

log = logging.getLogger(__name__)


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
            held = await self._claim(session, now)
        if not held:
            self.valid_until = None
            return False
        if self.valid_until is None:
            log.info("%s: this instance (%s) holds the role now", self.role, self.holder)
        self._mark(now)
        return True

    async def _claim(self, session: AsyncSession, now: datetime) -> bool:
        renewed = await session.execute(
            update(LeaseRow)
            .where(
                LeaseRow.role == self.role,
                or_(LeaseRow.holder == self.holder, LeaseRow.expires_at < now),
            )
            .values(
                holder=self.holder,
                expires_at=now + self.ttl,
                acquired_at=case((LeaseRow.holder == self.holder, LeaseRow.acquired_at), else_=now),
            )
        )
        if renewed.rowcount == 1:  # type: ignore[attr-defined]
            return True
        holder = await session.scalar(select(LeaseRow.holder).where(LeaseRow.role == self.role))
        if holder is not None:
            if not _dead_here(holder):
                return False
            # the holder was a process on this host that is gone (a crash, kill -9):
            # no need to wait out its lease before reading mail again
            taken = await session.execute(
                update(LeaseRow)
                .where(LeaseRow.role == self.role, LeaseRow.holder == holder)
                .values(holder=self.holder, acquired_at=now, expires_at=now + self.ttl)
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                log.info("%s: took over from %s, which is no longer running", self.role, holder)
                return True
            return False
        try:
            async with session.begin_nested():
                session.add(
                    LeaseRow(
                        role=self.role,
                        holder=self.holder,
                        acquired_at=now,
                        expires_at=now + self.ttl,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def release(self) -> None:
        """Give the role up at once (clean shutdown), so another can take it."""
        self.valid_until = None
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(LeaseRow)
                .where(LeaseRow.role == self.role, LeaseRow.holder == self.holder)
                .values(expires_at=self.clock() - timedelta(seconds=1))
            )
