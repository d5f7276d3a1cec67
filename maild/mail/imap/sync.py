"""The ingestion loop: fetch new mail by UID, hand it to the pipeline, mark it afterwards.

:class:`ImapSource` keeps one :class:`~maild.mail.imap.connection.ImapSession`
to the support mailbox. It hands every unprocessed mail of the configured
folder to a *handler* (the pipeline), one at a time in UID order -- or, with
a *batch handler*, all the mails one ``UID FETCH`` returned at once (the
pipeline commits them in one transaction) -- and only after the handler has
returned -- that is, after the pipeline committed the transaction holding
the mail -- moves the mail to the processed (or quarantine) folder, or flags
it ``$MaildProcessed`` in place.

Delivery is *at least once*: a crash between the commit and the mark leaves the
mail in the folder, it is fetched again on the next pass, and the pipeline
recognises it by its Message-ID. Nothing here depends on remembered UIDs for
correctness; the per-folder :class:`~maild.store.models.ImapState` row
(UIDVALIDITY, highest UID handed over, time of the last sync) is a progress
marker for operators and an ordering aid only.

Dovecot makes new mail visible to a session only when a command ends,
announcing it with an EXISTS, so a search can miss a mail whose EXISTS rides on
the search's own reply; every pass therefore searches again until no EXISTS
came in meanwhile. A cancelled task is treated like a crash: nothing is marked
after the cancellation, the mail in flight is handed over again later.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Self

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.config import MailboxConfig
from maild.core.backoff import Backoff
from maild.core.inbound import logged_message_id
from maild.logs import describe
from maild.mail.imap.codec import FetchedMail, chunks
from maild.mail.imap.connection import (
    IDLE_RENEW_SECONDS,
    ImapError,
    ImapLoginError,
    ImapSession,
    ImapUnreachable,
    Stopped,
    address,
    seconds_text,
    sleep_unless,
)
from maild.store.models import ImapState

__all__ = [
    "PROCESSED_KEYWORD",
    "QUARANTINED_KEYWORD",
    "BatchHandler",
    "Handler",
    "ImapSource",
    "Verdict",
]

log = logging.getLogger(__name__)

Verdict = Literal["processed", "quarantined", "retry"]
"""What the handler did with a mail.

``processed`` and ``quarantined`` mean the handler has committed its work and the
mail may be marked; ``retry`` means a temporary failure: leave the mail alone.
"""

Handler = Callable[[bytes, str], Awaitable[Verdict]]
"""``handler(raw_bytes, source_label) -> Verdict``; the label looks like ``imap:INBOX/uid=42``."""

BatchHandler = Callable[
    [Sequence[tuple[bytes, str]], Sequence[bytes]], Awaitable[Sequence[Verdict]]
]
"""``batch_handler(mails, upcoming) -> verdicts``: one verdict per ``(raw_bytes, label)``, in order.

Each ``processed`` or ``quarantined`` verdict says the transaction holding
that mail has committed. ``upcoming`` is the raw bytes of the mails the
next call will most likely get (already fetched), for the handler to prepare
meanwhile (parse them elsewhere); empty when none are known.
"""

PROCESSED_KEYWORD = "$MaildProcessed"
QUARANTINED_KEYWORD = "$MaildQuarantined"

#: Reconnect after 0.5 s, 1 s, 2 s ... at most a minute; back to 0.5 s after a successful sync.
RECONNECT = Backoff(base=0.5, cap=60.0)
RETRY_DELAY_SECONDS = 30.0


class ImapSource:
    """Feeds the mail of one IMAP folder to a handler; see the module docstring.

    ``batch`` is the number of mails fetched per ``UID FETCH`` (at most 200 are
    marked per command regardless). With ``batch_handler`` the mails of each
    fetch go to it together (and ``handler`` is not used): the next fetch is
    made before handing over, so the handler can prepare it meanwhile; each
    mail is marked once the call returned its verdict; a call that raises
    leaves them all on the server. ``command_timeout`` bounds every IMAP
    command. ``on_sync`` is called after each successful pass (e.g. a
    watchdog ping). ``ssl_context`` replaces ``ssl.create_default_context()``
    for ``tls``/``starttls`` (a private CA, or tests). After a ``retry``
    verdict (or a handler exception, which counts as one) :meth:`run` passes
    over the folder again after :attr:`retry_delay` seconds (default 30) even
    when no new mail arrives.

    :meth:`run` owns the connection while it runs; :meth:`sync_once` is for a
    single pass outside :meth:`run` (tests, a one-shot command) and keeps its
    connection until :meth:`aclose`. Don't call both at once.
    """

    def __init__(
        self,
        config: MailboxConfig,
        sessions: async_sessionmaker[AsyncSession],
        handler: Handler,
        *,
        batch_handler: BatchHandler | None = None,
        batch: int = 100,
        command_timeout: float = 30.0,
        on_sync: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.config = config
        self.sessions = sessions
        self.handler = handler
        self.batch_handler = batch_handler
        self.batch = batch
        self.command_timeout = command_timeout
        self.on_sync = on_sync
        self.ssl_context = ssl_context
        self.last_sync_at: datetime | None = None
        self._conn: ImapSession | None = None
        self._last_uid = 0
        self._uidvalidity: int | None = None
        # after a "retry" verdict, sync again this soon even if no new mail arrives
        self.retry_delay = RETRY_DELAY_SECONDS
        self._retry_pending = False

    @property
    def _where(self) -> str:
        return address(self.config)

    @property
    def _flag_mode(self) -> bool:
        # moving into the folder we read would hand the same mail over forever
        return self.config.processed_folder in ("", self.config.folder)

    # -- public API --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Ingest until ``stop`` is set; never raises except ``CancelledError``.

        Connects, logs in, creates the processed and quarantine folders,
        selects the folder and syncs; then waits with IDLE (re-issued every 25
        minutes) or polls every ``poll_interval``, syncing on each wake-up.
        Every failure is logged as one line and retried with exponential
        backoff (0.5 s doubling up to 60 s, back to 0.5 s after a successful
        sync). After ``stop`` is set it returns within about a second, once
        the mail in flight is handed over and marked.
        """
        failures = 0
        while not stop.is_set():
            try:
                conn = await self._connect(stop)
                await self._sync(conn, stop)
                failures = 0
                await self._watch(conn, stop)
            except Stopped:
                break
            except asyncio.CancelledError:
                self._abort()
                raise
            except Exception as exc:
                failures += 1
                self._log_failure(exc, RECONNECT.delay(failures))
            await self._disconnect()
            if stop.is_set():
                break
            await sleep_unless(stop, RECONNECT.delay(failures))
        await self._disconnect()

    def _log_failure(self, exc: Exception, delay: float) -> None:
        """One line for a failed session: what went wrong and when the next attempt is."""
        if isinstance(exc, ImapLoginError):
            log.error(
                "IMAP login failed for %s at %s: %s; retrying in %ss",
                self.config.username,
                self._where,
                exc,
                seconds_text(delay),
            )
        elif isinstance(exc, ImapUnreachable):
            log.warning(
                "IMAP %s unreachable: %s; retrying in %ss", self._where, exc, seconds_text(delay)
            )
        elif isinstance(exc, ImapError):
            log.warning("IMAP %s: %s; reconnecting in %ss", self._where, exc, seconds_text(delay))
        else:
            log.error(
                "IMAP source failed unexpectedly; retrying in %ss",
                seconds_text(delay),
                exc_info=exc,
            )

    async def sync_once(self) -> int:
        """One pass: hand every unprocessed mail to the handler and mark it.

        Connects first if needed (and stays connected until :meth:`aclose`).
        Returns how many mails got a final verdict (processed or quarantined).
        Raises :class:`ImapError` (after dropping the connection) when the
        server is unreachable, refuses the login, or fails mid-pass.
        """
        try:
            conn = self._conn
            if conn is None or conn.lost.is_set() or conn.broken:
                await self._disconnect()
                conn = await self._connect(None)
            return await self._sync(conn, None)
        except BaseException:
            self._abort()
            raise

    async def check_login(self) -> None:
        """Connect, log in and select the folder, then log out; raises ImapError on failure.

        For the daemon's start-up report: it reads no mail.
        """
        try:
            await self._connect(None)
        finally:
            await self._disconnect()

    async def aclose(self) -> None:
        """Log out and drop the connection (if any)."""
        await self._disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the session -------------------------------------------------------------------------

    async def _connect(self, stop: asyncio.Event | None) -> ImapSession:
        cfg = self.config
        conn = ImapSession(cfg, command_timeout=self.command_timeout, ssl_context=self.ssl_context)
        self._conn = conn  # from here on _disconnect/_abort drop it, whatever happens
        await conn.login(stop)
        for name in (cfg.processed_folder, cfg.quarantine_folder):
            if name and name != cfg.folder:
                await conn.create(name, stop)
        await conn.select(stop)
        await self._load_marker(conn.uidvalidity)
        log.info(
            "IMAP connected to %s as %s, folder %s (UIDVALIDITY %d, %s)",
            self._where,
            cfg.username,
            cfg.folder,
            conn.uidvalidity,
            "IDLE" if cfg.idle and conn.has_capability("IDLE") else "polling",
        )
        return conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    # -- syncing -----------------------------------------------------------------------------

    async def _sync(self, conn: ImapSession, stop: asyncio.Event | None) -> int:
        """Hand over and mark every unprocessed mail; repeat while new mail was announced."""
        handled = 0
        seen: set[int] = set()
        stopping = False
        self._retry_pending = False
        while not stopping:
            conn.new_mail.clear()
            # an EXISTS during or after this search means it may have missed mail: look again
            todo = [uid for uid in await conn.search(self._criteria, stop) if uid not in seen]
            groups = list(chunks(todo, self.batch))
            fetched: list[FetchedMail] | None = None
            for index, chunk in enumerate(groups):
                if stop is not None and stop.is_set():
                    stopping = True
                    break
                seen.update(chunk)
                mails = fetched if fetched is not None else await conn.fetch(chunk, stop)
                marks: dict[Verdict, list[int]] = {"processed": [], "quarantined": []}
                verdicts: list[tuple[FetchedMail, Verdict]] = []
                if self.batch_handler is not None:
                    # the next fetch first: the handler prepares it while it commits these
                    fetched = None
                    if index + 1 < len(groups):
                        fetched = await conn.fetch(groups[index + 1], stop)
                    if stop is not None and stop.is_set():
                        stopping = True
                        break  # nothing handed over yet: nothing to mark
                    if mails:
                        verdicts = await self._hand_over_batch(self.batch_handler, mails, fetched)
                else:
                    for mail in mails:
                        if stop is not None and stop.is_set():
                            stopping = True
                            break
                        verdicts.append((mail, await self._hand_over(mail)))
                for mail, verdict in verdicts:
                    if verdict == "retry":
                        self._retry_pending = True
                    else:
                        marks[verdict].append(mail.uid)
                        handled += 1
                        self._last_uid = max(self._last_uid, mail.uid)
                # marks are never cut short by stop: the handler has committed these
                await self._mark(conn, marks)
                if stopping:
                    break
            if not conn.new_mail.is_set():
                break
        self.last_sync_at = datetime.now(UTC)
        await self._save_marker(conn.uidvalidity)
        if self.on_sync is not None:
            try:
                self.on_sync()
            except Exception:
                log.exception("on_sync callback failed")
        if stopping:
            raise Stopped
        return handled

    @property
    def _criteria(self) -> list[str]:
        """What a pass looks for: mail not yet marked (and not deleted)."""
        criteria = ["UNDELETED", "UNKEYWORD", QUARANTINED_KEYWORD]
        if self._flag_mode:
            criteria += ["UNKEYWORD", PROCESSED_KEYWORD]
        return criteria

    async def _hand_over(self, mail: FetchedMail) -> Verdict:
        label = f"imap:{self.config.folder}/uid={mail.uid}"
        try:
            verdict = await self.handler(mail.raw, label)
        except Exception:
            log.exception(
                "handler failed for %s %s; leaving it on the server for the next pass",
                label,
                logged_message_id(mail.raw),
            )
            return "retry"
        if verdict not in ("processed", "quarantined", "retry"):
            log.error("handler returned %r for %s; treating it as retry", verdict, label)
            return "retry"
        log.debug("%s %s: %s", label, logged_message_id(mail.raw), verdict)
        return verdict

    async def _hand_over_batch(
        self,
        handler: BatchHandler,
        mails: list[FetchedMail],
        upcoming: list[FetchedMail] | None,
    ) -> list[tuple[FetchedMail, Verdict]]:
        folder = self.config.folder
        given = [(mail.raw, f"imap:{folder}/uid={mail.uid}") for mail in mails]
        try:
            verdicts = list(await handler(given, [mail.raw for mail in upcoming or ()]))
        except Exception:
            log.exception(
                "handler failed for %d mails (uid %d to %d); leaving them on the server for "
                "the next pass",
                len(mails),
                mails[0].uid,
                mails[-1].uid,
            )
            return [(mail, "retry") for mail in mails]
        if len(verdicts) != len(mails) or any(
            v not in ("processed", "quarantined", "retry") for v in verdicts
        ):
            log.error(
                "handler returned %r for %d mails; treating them all as retry", verdicts, len(mails)
            )
            return [(mail, "retry") for mail in mails]
        for (raw, label), verdict in zip(given, verdicts, strict=True):
            log.debug("%s %s: %s", label, logged_message_id(raw), verdict)
        return list(zip(mails, verdicts, strict=True))

    async def _mark(self, conn: ImapSession, marks: dict[Verdict, list[int]]) -> None:
        cfg = self.config
        processed, quarantined = marks["processed"], marks["quarantined"]
        if processed:
            if self._flag_mode:
                await conn.add_flags(processed, rf"(\Seen {PROCESSED_KEYWORD})")
            else:
                await conn.move(processed, cfg.processed_folder)
        if quarantined:
            if cfg.quarantine_folder and cfg.quarantine_folder != cfg.folder:
                await conn.move(quarantined, cfg.quarantine_folder)
            else:
                await conn.add_flags(quarantined, f"({QUARANTINED_KEYWORD})")

    # -- waiting -----------------------------------------------------------------------------

    async def _watch(self, conn: ImapSession, stop: asyncio.Event) -> None:
        """Wait for new mail (IDLE or polling) and sync, until stop or a failure."""
        cfg = self.config
        use_idle = cfg.idle and conn.has_capability("IDLE")
        if cfg.idle and not use_idle:
            log.info(
                "IMAP server %s has no IDLE; polling every %ss",
                self._where,
                seconds_text(cfg.poll_interval.total_seconds()),
            )
        while not stop.is_set():
            if use_idle:
                # a mail the handler asked to retry must not wait for the next IDLE renewal
                renew = self.retry_delay if self._retry_pending else IDLE_RENEW_SECONDS
                await conn.idle(stop, min(renew, IDLE_RENEW_SECONDS))
            else:
                await conn.poll_wait(stop, cfg.poll_interval.total_seconds())
            if stop.is_set():
                break
            if conn.trouble.is_set() and await conn.reopen(stop):
                await self._load_marker(conn.uidvalidity)
            await self._sync(conn, stop)
        raise Stopped

    # -- progress marker ---------------------------------------------------------------------

    async def _load_marker(self, uidvalidity: int) -> None:
        folder = self.config.folder
        try:
            async with self.sessions() as session, session.begin():
                state = await session.get(ImapState, folder)
                if state is None:
                    session.add(ImapState(folder=folder, uidvalidity=uidvalidity, last_uid=0))
                    self._last_uid = 0
                elif state.uidvalidity != uidvalidity:
                    log.warning(
                        "IMAP folder %s: UIDVALIDITY changed from %d to %d; resetting the "
                        "progress marker (mail already handled is recognised by Message-ID)",
                        folder,
                        state.uidvalidity,
                        uidvalidity,
                    )
                    state.uidvalidity = uidvalidity
                    state.last_uid = 0
                    self._last_uid = 0
                else:
                    self._last_uid = state.last_uid
        except SQLAlchemyError as exc:
            log.warning("cannot read the IMAP progress marker of %s: %s", folder, describe(exc))
            if self._uidvalidity is not None and self._uidvalidity != uidvalidity:
                self._last_uid = 0
        self._uidvalidity = uidvalidity

    async def _save_marker(self, uidvalidity: int) -> None:
        folder = self.config.folder
        try:
            async with self.sessions() as session, session.begin():
                state = await session.get(ImapState, folder)
                if state is None:
                    state = ImapState(folder=folder, uidvalidity=uidvalidity, last_uid=0)
                    session.add(state)
                state.uidvalidity = uidvalidity
                state.last_uid = self._last_uid
                state.last_sync_at = self.last_sync_at
        except SQLAlchemyError as exc:
            log.warning("cannot save the IMAP progress marker of %s: %s", folder, describe(exc))
