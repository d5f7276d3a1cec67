"""IMAP ingestion: fetch new mail by UID, hand it to the pipeline, mark it afterwards.

:class:`ImapSource` keeps one connection to the support mailbox. It hands every
unprocessed mail of the configured folder to a *handler* (the pipeline), one at a
time in UID order, and only after the handler has returned -- that is, after the
pipeline committed its transaction -- moves the mail to the processed (or
quarantine) folder, or flags it ``$MaildProcessed`` in place.

Delivery is *at least once*: a crash between the commit and the mark leaves the
mail in the folder, it is fetched again on the next pass, and the pipeline
recognises it by its Message-ID. Nothing here depends on remembered UIDs for
correctness; the per-folder :class:`~maild.store.models.ImapState` row
(UIDVALIDITY, highest UID handed over, time of the last sync) is a progress
marker for operators and an ordering aid only.

aioimaplib quirks this module works around (see ``recipes/aioimaplib-notes.md``):
commands carry at most 200 UIDs and stores are ``.SILENT`` (its parser recurses
once per response line); every command is bounded by our own timeout and cut
short as soon as the connection is lost (a dead connection otherwise just hangs
until the timeout); and since it drops ``EXISTS`` that arrives outside IDLE or
NOOP, the client's untagged-response hook is wrapped so that no new-mail
notification is missed between a search and the next IDLE. (Dovecot makes new
mail visible to a session only when a command ends, announcing it with that
EXISTS, so a search can miss a mail whose EXISTS rides on the search's own
reply; every pass therefore searches again until no EXISTS came in meanwhile.)
The same hook notices an untagged ``NO``/``BAD`` about the selected folder --
all Dovecot says when the folder is deleted and recreated under us -- and the
folder is then selected afresh, which picks up the new UIDVALIDITY.

A cancelled task is treated like a crash: nothing is marked after the
cancellation, the mail in flight is handed over again later.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Literal, Self

import aioimaplib
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from maild.config import MailboxConfig
from maild.core.backoff import Backoff
from maild.core.inbound import logged_message_id
from maild.logs import describe
from maild.store.models import ImapState

__all__ = [
    "PROCESSED_KEYWORD",
    "QUARANTINED_KEYWORD",
    "FetchedMail",
    "Handler",
    "ImapCommandError",
    "ImapConnectionLost",
    "ImapError",
    "ImapLoginError",
    "ImapSource",
    "ImapUnreachable",
    "Verdict",
    "imap_quote",
    "imap_utf7_decode",
    "imap_utf7_encode",
    "parse_fetch",
    "uid_set",
]

log = logging.getLogger(__name__)

Verdict = Literal["processed", "quarantined", "retry"]
"""What the handler did with a mail.

``processed`` and ``quarantined`` mean the handler has committed its work and the
mail may be marked; ``retry`` means a temporary failure: leave the mail alone.
"""

Handler = Callable[[bytes, str], Awaitable[Verdict]]
"""``handler(raw_bytes, source_label) -> Verdict``; the label looks like ``imap:INBOX/uid=42``."""

PROCESSED_KEYWORD = "$MaildProcessed"
QUARANTINED_KEYWORD = "$MaildQuarantined"

# RFC 2177: a server may log out a client idle for 30 minutes; re-issue IDLE well before.
IDLE_RENEW_SECONDS = 25 * 60.0
MAX_UIDS_PER_COMMAND = 200
FETCH_ITEMS = "(UID FLAGS BODY.PEEK[])"
#: Reconnect after 0.5 s, 1 s, 2 s ... at most a minute; back to 0.5 s after a successful sync.
RECONNECT = Backoff(base=0.5, cap=60.0)
LOGOUT_TIMEOUT_SECONDS = 2.0
REOPEN_INTERVAL_SECONDS = 60.0
RETRY_DELAY_SECONDS = 30.0


class ImapError(Exception):
    """The IMAP server could not be reached or a command failed; :meth:`ImapSource.run` retries."""


class ImapUnreachable(ImapError, ConnectionError):
    """Connecting, the greeting or the TLS handshake failed."""


class ImapLoginError(ImapError, PermissionError):
    """The server refused the credentials (the message is the server's text)."""


class ImapConnectionLost(ImapError, ConnectionError):
    """The connection dropped or a command timed out mid-session."""


class ImapCommandError(ImapError):
    """The server answered NO or BAD to a command we need."""


class _Stopped(Exception):
    """The stop event was set while an interruptible command was pending."""


# -- pure helpers --------------------------------------------------------------------------


def imap_utf7_encode(name: str) -> str:
    """Encode a folder name in IMAP's modified UTF-7 (RFC 3501 section 5.1.3).

    Printable ASCII stays as is (``&`` becomes ``&-``); every run of other
    characters becomes ``&`` + modified base64 of its UTF-16BE + ``-``.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ","))
            out.append("-")
            run.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def imap_utf7_decode(name: str) -> str:
    """Inverse of :func:`imap_utf7_encode`. Raises ``ValueError`` on a malformed name."""
    out: list[str] = []
    i = 0
    while i < len(name):
        char = name[i]
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = name.find("-", i)
        if end < 0:
            raise ValueError(f"unterminated modified UTF-7 run in {name!r}")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            data = chunk.replace(",", "/")
            try:
                out.append(base64.b64decode(data + "=" * (-len(data) % 4)).decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"bad modified UTF-7 run {chunk!r} in {name!r}") from exc
        i = end + 1
    return "".join(out)


def imap_quote(text: str) -> str:
    """``text`` as an IMAP quoted string (backslash and double quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mailbox(name: str) -> str:
    return imap_quote(imap_utf7_encode(name))


_ATOM = re.compile(r"^[!#$&'*+\-./0-9:;<=>?@A-Z^_`a-z|~]+$")


def _astring(text: str) -> str:
    """An atom when that is safe, else a quoted string (aioimaplib sends user names as is)."""
    return text if _ATOM.match(text) else imap_quote(text)


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP UID set: ``[1, 2, 3, 7]`` -> ``"1:3,7"``. ``uids`` must not be empty."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True, slots=True)
class FetchedMail:
    uid: int
    flags: frozenset[str]
    raw: bytes


_FETCH_LINE = re.compile(rb"^(?:\* )?\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


def parse_fetch(lines: Sequence[Any]) -> list[FetchedMail]:
    """Mails in an aioimaplib ``UID FETCH ... (UID FLAGS BODY.PEEK[])`` response, in UID order.

    aioimaplib returns a header line ending in ``{size}``, the literal as a
    ``bytearray``, then a closing line (which may also carry UID or FLAGS).
    Entries without a UID or a body (unsolicited flag updates, vanished mail)
    are skipped. A leading ``* `` is tolerated: aioimaplib leaves it on when
    it loses track of parentheses.
    """
    mails: dict[int, FetchedMail] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if type(line) is not bytes or not _FETCH_LINE.match(line):
            continue
        meta = line
        body: bytes | None = None
        if line.endswith(b"}") and i < len(lines) and isinstance(lines[i], bytearray):
            body = bytes(lines[i])
            i += 1
            if i < len(lines) and type(lines[i]) is bytes and not _FETCH_LINE.match(lines[i]):
                meta += b" " + lines[i]
                i += 1
        uid = _UID.search(meta)
        if uid is None or body is None:
            continue
        flags = _FLAGS.search(meta)
        names = flags.group(1).decode("ascii", "replace").split() if flags else []
        mails[int(uid.group(1))] = FetchedMail(int(uid.group(1)), frozenset(names), body)
    return [mails[uid] for uid in sorted(mails)]


def _describe_safely(exc: BaseException) -> str:
    """:func:`maild.logs.describe`, but an aioimaplib timeout's text (the command line,
    which may carry the password) is left out."""
    return "timed out" if isinstance(exc, aioimaplib.CommandTimeout) else describe(exc)


def _text(response: Any) -> str:
    """The tagged status text of an aioimaplib response, for log lines."""
    lines = getattr(response, "lines", None) or [b""]
    last = lines[-1]
    if isinstance(last, bytes | bytearray):
        return bytes(last).decode("utf-8", "replace").strip()
    return str(last)


# -- the connection ------------------------------------------------------------------------


_EXISTS = re.compile(rb"^(?:\* )?\d+ EXISTS")


@dataclass(eq=False)
class _Connection:
    client: Any  # aioimaplib.IMAP4 (untyped)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    # set whenever the server announces EXISTS, whichever command it rides on
    new_mail: asyncio.Event = field(default_factory=asyncio.Event)
    # set when the server reports a problem with the selected folder (untagged NO/BAD, or
    # a new UIDVALIDITY): Dovecot does this when the folder is deleted and recreated
    trouble: asyncio.Event = field(default_factory=asyncio.Event)
    alert: str = ""
    last_reopen: float = -1e9
    bye: str = ""
    lost_reason: str = ""
    broken: bool = False  # a command timed out or was abandoned: state unknown, do not reuse
    established: bool = False  # logged in and folder selected
    uidvalidity: int = 0

    def on_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.lost_reason = _describe_safely(exc)
        elif self.bye:
            self.lost_reason = f"closed by the server ({self.bye})"
        else:
            self.lost_reason = "closed by the server"
        self.lost.set()

    def watch_untagged(self) -> None:
        """Wrap aioimaplib's untagged-response handler to see every EXISTS, NO, BAD and BYE."""
        protocol = self.client.protocol
        original = protocol._untagged_response

        def spy(line: bytes) -> Any:  # called for every untagged line, IDLE or not
            text = line[2:] if line.startswith(b"* ") else line
            if _EXISTS.match(text):
                self.new_mail.set()
            elif text.startswith(b"BYE"):
                self.bye = text.decode("utf-8", "replace")
            elif self.established and (
                text.startswith((b"NO ", b"BAD ")) or _changed_uidvalidity(text, self.uidvalidity)
            ):
                self.alert = text.decode("utf-8", "replace")
                self.trouble.set()
            return original(line)

        protocol._untagged_response = spy

    def abort(self) -> None:
        """Drop the connection at once and cancel the client's background tasks."""
        client = self.client
        connecting = getattr(client, "_client_task", None)
        if connecting is not None and not connecting.done():
            connecting.cancel()
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()
        for task in (*client.tasks, *client.protocol.tasks):
            task.cancel()
        waiter = getattr(client, "_idle_waiter", None)
        if waiter is not None:
            waiter.cancel()
        self.broken = True


def _consume_result(task: asyncio.Future[Any]) -> None:
    # a command we stopped waiting for may still fail later; don't log that as unretrieved
    if not task.cancelled():
        task.exception()


class ImapSource:
    """Feeds the mail of one IMAP folder to a handler; see the module docstring.

    ``batch`` is the number of mails fetched per ``UID FETCH`` (at most 200 are
    marked per command regardless). ``command_timeout`` bounds every IMAP
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
        self.batch = batch
        self.command_timeout = command_timeout
        self.on_sync = on_sync
        self.ssl_context = ssl_context
        self.last_sync_at: datetime | None = None
        self._conn: _Connection | None = None
        self._last_uid = 0
        self._uidvalidity: int | None = None
        # after a "retry" verdict, sync again this soon even if no new mail arrives
        self.retry_delay = RETRY_DELAY_SECONDS
        self._retry_pending = False

    @property
    def _where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

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
            except _Stopped:
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
            await _sleep_unless(stop, RECONNECT.delay(failures))
        await self._disconnect()

    def _log_failure(self, exc: Exception, delay: float) -> None:
        """One line for a failed session: what went wrong and when the next attempt is."""
        if isinstance(exc, ImapLoginError):
            log.error(
                "IMAP login failed for %s at %s: %s; retrying in %ss",
                self.config.username,
                self._where,
                exc,
                _seconds(delay),
            )
        elif isinstance(exc, ImapUnreachable):
            log.warning(
                "IMAP %s unreachable: %s; retrying in %ss", self._where, exc, _seconds(delay)
            )
        elif isinstance(exc, ImapError):
            log.warning("IMAP %s: %s; reconnecting in %ss", self._where, exc, _seconds(delay))
        else:
            log.error(
                "IMAP source failed unexpectedly; retrying in %ss", _seconds(delay), exc_info=exc
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

    # -- commands ----------------------------------------------------------------------------

    async def _call(
        self,
        conn: _Connection,
        what: str,
        command: Callable[[], Awaitable[Any]],
        stop: asyncio.Event | None = None,
        *,
        phase: type[ImapError] = ImapConnectionLost,
    ) -> Any:
        """Run one aioimaplib call, bounded by ``command_timeout``.

        Returns its response. Raises ``phase`` (an :class:`ImapError`) on a
        timeout, a lost connection or a client error, and :class:`_Stopped`
        when ``stop`` is given and gets set first. A command we stop waiting for
        leaves the connection in an unknown state, so it is marked broken.
        """
        prefix = f"{what}: " if what else ""
        if conn.lost.is_set():
            raise phase(f"{prefix}connection lost: {conn.lost_reason}")
        task = asyncio.ensure_future(command())
        task.add_done_callback(_consume_result)
        lost = asyncio.ensure_future(conn.lost.wait())
        waiters: set[asyncio.Future[Any]] = {task, lost}
        stopped: asyncio.Future[Any] | None = None
        if stop is not None:
            stopped = asyncio.ensure_future(stop.wait())
            waiters.add(stopped)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=self.command_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                if waiter is not task:
                    waiter.cancel()
            if not task.done():
                task.cancel()
                conn.broken = True
        if task in done:
            try:
                return task.result()
            except (TimeoutError, aioimaplib.AioImapException, OSError) as exc:
                conn.broken = True
                raise phase(f"{prefix}{_describe_safely(exc)}") from exc
        if lost in done:
            raise phase(f"{prefix}connection lost: {conn.lost_reason}")
        if stopped is not None and stopped in done:
            raise _Stopped
        raise phase(f"{prefix}no answer within {_seconds(self.command_timeout)}s")

    async def _connect(self, stop: asyncio.Event | None) -> _Connection:
        cfg = self.config
        context: ssl.SSLContext | None = None
        if cfg.security in ("tls", "starttls"):
            context = self.ssl_context or ssl.create_default_context()
        conn = _Connection(client=None)
        conn.client = aioimaplib.IMAP4(
            host=cfg.host,
            port=cfg.port,
            timeout=self.command_timeout,
            conn_lost_cb=conn.on_lost,
            ssl_context=context if cfg.security == "tls" else None,
        )
        conn.watch_untagged()
        self._conn = conn
        client = conn.client
        await self._call(conn, "", client.wait_hello_from_server, stop, phase=ImapUnreachable)
        if cfg.security == "starttls" and context is not None:
            await self._call(
                conn, "STARTTLS", lambda: self._starttls(conn, context), stop, phase=ImapUnreachable
            )
        if cfg.password is None:
            raise ImapLoginError("no password configured")
        password = cfg.password
        response = await self._call(
            conn, "LOGIN", lambda: client.login(_astring(cfg.username), password), stop
        )
        if response.result != "OK":
            raise ImapLoginError(_text(response))
        if not any(b"CAPABILITY" in line for line in response.lines if isinstance(line, bytes)):
            await self._call(conn, "CAPABILITY", client.protocol.capability, stop)
        for name in (cfg.processed_folder, cfg.quarantine_folder):
            if name and name != cfg.folder:
                await self._create(conn, name, stop)
        await self._select(conn, stop)
        log.info(
            "IMAP connected to %s as %s, folder %s (UIDVALIDITY %d, %s)",
            self._where,
            cfg.username,
            cfg.folder,
            conn.uidvalidity,
            "IDLE" if cfg.idle and client.has_capability("IDLE") else "polling",
        )
        return conn

    async def _select(self, conn: _Connection, stop: asyncio.Event | None) -> None:
        """SELECT the folder; check its UIDVALIDITY against the progress marker."""
        folder = self.config.folder
        select = partial(conn.client.select, _mailbox(folder))
        response = await self._call(conn, f"SELECT {folder}", select, stop)
        if response.result != "OK":
            raise ImapCommandError(f"cannot select folder {folder!r}: {_text(response)}")
        conn.uidvalidity = _uidvalidity(response.lines)
        conn.established = True
        conn.trouble.clear()
        await self._load_marker(conn.uidvalidity)

    async def _reopen(self, conn: _Connection, stop: asyncio.Event) -> None:
        """Re-SELECT the folder after the server reported a problem with it.

        Dovecot answers a folder deleted and recreated under an open session
        with ``* NO Internal error`` and keeps serving the stale view; selecting
        again yields the new folder (and its new UIDVALIDITY). At most once a
        minute, so a server that repeats a warning cannot make us spin.
        """
        now = asyncio.get_running_loop().time()
        if now - conn.last_reopen < REOPEN_INTERVAL_SECONDS:
            log.info("IMAP %s says: %s", self._where, conn.alert)
            conn.trouble.clear()
            return
        conn.last_reopen = now
        log.warning(
            "IMAP %s reported a problem with folder %s (%s); reopening it",
            self._where,
            self.config.folder,
            conn.alert,
        )
        await self._select(conn, stop)

    async def _starttls(self, conn: _Connection, context: ssl.SSLContext) -> None:
        protocol = conn.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapUnreachable("the server does not offer STARTTLS")
        response = await protocol.execute(
            aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        )
        if response.result != "OK":
            raise ImapUnreachable(f"STARTTLS refused: {_text(response)}")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=self.config.host
        )
        # RFC 3501 6.2.1: forget what the server said before TLS
        await protocol.capability()

    async def _create(self, conn: _Connection, name: str, stop: asyncio.Event | None) -> None:
        response = await self._call(
            conn, f"CREATE {name}", lambda: conn.client.create(_mailbox(name)), stop
        )
        text = _text(response)
        if response.result == "OK":
            log.info("IMAP created folder %s", name)
        elif "EXISTS" not in text.upper():  # [ALREADYEXISTS], or a server's own wording
            raise ImapCommandError(f"cannot create folder {name!r}: {response.result} {text}")

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.established and not conn.broken and not conn.lost.is_set():
                await asyncio.wait_for(conn.client.logout(), LOGOUT_TIMEOUT_SECONDS)
        except (TimeoutError, aioimaplib.AioImapException, OSError):
            pass
        finally:
            conn.abort()

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    # -- syncing -----------------------------------------------------------------------------

    async def _sync(self, conn: _Connection, stop: asyncio.Event | None) -> int:
        """Hand over and mark every unprocessed mail; repeat while new mail was announced."""
        handled = 0
        seen: set[int] = set()
        stopping = False
        self._retry_pending = False
        while not stopping:
            conn.new_mail.clear()
            # an EXISTS during or after this search means it may have missed mail: look again
            todo = [uid for uid in await self._search(conn, stop) if uid not in seen]
            for chunk in _chunks(todo, self.batch):
                if stop is not None and stop.is_set():
                    stopping = True
                    break
                seen.update(chunk)
                fetch = partial(conn.client.uid, "fetch", uid_set(chunk), FETCH_ITEMS)
                mails = await self._call(conn, "UID FETCH", fetch, stop)
                if mails.result != "OK":
                    raise ImapCommandError(f"UID FETCH failed: {mails.result} {_text(mails)}")
                marks: dict[Verdict, list[int]] = {"processed": [], "quarantined": []}
                for mail in parse_fetch(mails.lines):
                    if stop is not None and stop.is_set():
                        stopping = True
                        break
                    verdict = await self._hand_over(mail)
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
            raise _Stopped
        return handled

    async def _search(self, conn: _Connection, stop: asyncio.Event | None) -> list[int]:
        criteria = ["UNDELETED", "UNKEYWORD", QUARANTINED_KEYWORD]
        if self._flag_mode:
            criteria += ["UNKEYWORD", PROCESSED_KEYWORD]
        response = await self._call(
            conn,
            "UID SEARCH",
            lambda: conn.client.uid_search(*criteria, charset=None),
            stop,
        )
        if response.result != "OK":
            raise ImapCommandError(f"UID SEARCH failed: {response.result} {_text(response)}")
        uids: set[int] = set()
        for line in response.lines[:-1]:
            if not isinstance(line, bytes):
                continue
            words = line.split()
            if words[:1] == [b"SEARCH"]:
                words = words[1:]
            if all(word.isdigit() for word in words):
                uids.update(int(word) for word in words)
        return sorted(uids)

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

    async def _mark(self, conn: _Connection, marks: dict[Verdict, list[int]]) -> None:
        cfg = self.config
        processed, quarantined = marks["processed"], marks["quarantined"]
        if processed:
            if self._flag_mode:
                await self._store(conn, processed, rf"(\Seen {PROCESSED_KEYWORD})")
            else:
                await self._move(conn, processed, cfg.processed_folder)
        if quarantined:
            if cfg.quarantine_folder and cfg.quarantine_folder != cfg.folder:
                await self._move(conn, quarantined, cfg.quarantine_folder)
            else:
                await self._store(conn, quarantined, f"({QUARANTINED_KEYWORD})")

    async def _store(self, conn: _Connection, uids: Sequence[int], flags: str) -> None:
        for chunk in _chunks(sorted(uids), MAX_UIDS_PER_COMMAND):
            store = partial(conn.client.uid, "store", uid_set(chunk), "+FLAGS.SILENT", flags)
            response = await self._call(conn, "UID STORE", store)
            if response.result != "OK":
                raise ImapCommandError(f"UID STORE {flags} failed: {_text(response)}")

    async def _move(self, conn: _Connection, uids: Sequence[int], folder: str) -> None:
        client = conn.client
        box = _mailbox(folder)
        for chunk in _chunks(sorted(uids), MAX_UIDS_PER_COMMAND):
            uidset = uid_set(chunk)
            verb = "move" if client.has_capability("MOVE") else "copy"
            transfer = partial(client.uid, verb, uidset, box)
            response = await self._call(conn, f"UID {verb.upper()}", transfer)
            if response.result != "OK" and "TRYCREATE" in _text(response).upper():
                await self._create(conn, folder, None)
                response = await self._call(conn, f"UID {verb.upper()}", transfer)
            if response.result != "OK":
                raise ImapCommandError(
                    f"UID {verb.upper()} to {folder!r} failed: {_text(response)}"
                )
            if verb == "move":
                continue
            await self._store(conn, chunk, r"(\Deleted)")
            if client.has_capability("UIDPLUS"):
                expunge = partial(client.uid, "expunge", uidset)
                response = await self._call(conn, "UID EXPUNGE", expunge)
            else:
                # without UIDPLUS this also expunges anything else flagged \Deleted
                response = await self._call(conn, "EXPUNGE", client.expunge)
            if response.result != "OK":
                raise ImapCommandError(f"EXPUNGE failed: {_text(response)}")

    # -- waiting -----------------------------------------------------------------------------

    async def _watch(self, conn: _Connection, stop: asyncio.Event) -> None:
        """Wait for new mail (IDLE or polling) and sync, until stop or a failure."""
        cfg = self.config
        use_idle = cfg.idle and conn.client.has_capability("IDLE")
        if cfg.idle and not use_idle:
            log.info(
                "IMAP server %s has no IDLE; polling every %ss",
                self._where,
                _seconds(cfg.poll_interval.total_seconds()),
            )
        while not stop.is_set():
            if use_idle:
                # a mail the handler asked to retry must not wait for the next IDLE renewal
                renew = self.retry_delay if self._retry_pending else IDLE_RENEW_SECONDS
                await self._idle(conn, stop, min(renew, IDLE_RENEW_SECONDS))
            else:
                await self._poll_wait(conn, stop, cfg.poll_interval.total_seconds())
            if stop.is_set():
                break
            if conn.trouble.is_set():
                await self._reopen(conn, stop)
            await self._sync(conn, stop)
        raise _Stopped

    async def _idle(self, conn: _Connection, stop: asyncio.Event, seconds: float) -> None:
        """IDLE until new mail is announced, ``seconds`` pass, or ``stop`` is set."""
        client = conn.client
        if conn.new_mail.is_set() or conn.trouble.is_set():  # arrived during the last sync
            return
        queue = client.protocol.idle_queue
        while not queue.empty():  # pushes we already acted on (or keepalives)
            queue.get_nowait()
        idle = await self._call(
            conn, "IDLE", lambda: client.idle_start(timeout=IDLE_RENEW_SECONDS), stop
        )
        try:
            await _first_of(
                (conn.new_mail.wait(), conn.trouble.wait(), conn.lost.wait(), stop.wait()),
                seconds,
            )
        except BaseException:
            idle.cancel()
            raise
        if conn.lost.is_set():
            idle.cancel()
            raise ImapConnectionLost(f"connection lost: {conn.lost_reason}")
        client.idle_done()
        response = await self._call(conn, "IDLE DONE", lambda: idle)
        if response.result != "OK":
            raise ImapCommandError(f"IDLE ended with {response.result} {_text(response)}")

    async def _poll_wait(self, conn: _Connection, stop: asyncio.Event, seconds: float) -> None:
        await _first_of((conn.lost.wait(), stop.wait()), seconds)
        if conn.lost.is_set():
            raise ImapConnectionLost(f"connection lost: {conn.lost_reason}")
        if not stop.is_set():
            # also proves the connection is alive; new mail shows up as EXISTS here
            await self._call(conn, "NOOP", conn.client.noop, stop)

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
            log.warning(
                "cannot read the IMAP progress marker of %s: %s", folder, _describe_safely(exc)
            )
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
            log.warning(
                "cannot save the IMAP progress marker of %s: %s", folder, _describe_safely(exc)
            )


_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")


def _changed_uidvalidity(text: bytes, known: int) -> bool:
    """``OK [UIDVALIDITY n]`` with a new ``n``: RFC 3501 2.3.1.1 says a server sends this."""
    found = _UIDVALIDITY.search(text) if text.startswith(b"OK [UIDVALIDITY") else None
    return found is not None and int(found.group(1)) != known


def _uidvalidity(lines: Sequence[Any]) -> int:
    for line in lines:
        if isinstance(line, bytes):
            found = _UIDVALIDITY.search(line)
            if found:
                return int(found.group(1))
    return 0


def _seconds(value: float) -> str:
    return f"{value:g}"


async def _first_of(waits: Sequence[Awaitable[Any]], seconds: float) -> None:
    """Wait until one of ``waits`` finishes or ``seconds`` pass; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    await _first_of((stop.wait(),), seconds)
