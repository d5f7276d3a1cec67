"""One aioimaplib session: connect, TLS, login, select, the commands the sync needs, IDLE.

:class:`ImapSession` is everything :mod:`maild.mail.imap.sync` knows about
aioimaplib. Every failure it raises is an :class:`ImapError`, and each kind
also inherits the builtin a caller would catch (as aiosmtplib does):
:class:`ImapUnreachable` and :class:`ImapConnectionLost` are ``ConnectionError``,
:class:`ImapLoginError` is ``PermissionError``.

aioimaplib quirks worked around here (see ``recipes/aioimaplib-notes.md``):
commands carry at most 200 UIDs and stores are ``.SILENT`` (its parser recurses
once per response line); every command is bounded by our own timeout and cut
short as soon as the connection is lost (a dead connection otherwise just hangs
until the timeout); and since it drops ``EXISTS`` that arrives outside IDLE or
NOOP, the client's untagged-response hook is wrapped so that no new-mail
notification is missed between a search and the next IDLE. The same hook
notices an untagged ``NO``/``BAD`` about the selected folder -- all Dovecot
says when the folder is deleted and recreated under us -- and
:meth:`ImapSession.reopen` then selects it afresh, which picks up the new
UIDVALIDITY.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import aioimaplib

from maild.config import MailboxConfig
from maild.logs import describe
from maild.mail.imap.codec import (
    FetchedMail,
    astring,
    changed_uidvalidity,
    chunks,
    is_exists,
    mailbox_name,
    parse_fetch,
    parse_search,
    response_text,
    uid_set,
    uidvalidity_of,
)

__all__ = [
    "IDLE_RENEW_SECONDS",
    "ImapCommandError",
    "ImapConnectionLost",
    "ImapError",
    "ImapLoginError",
    "ImapSession",
    "ImapUnreachable",
    "Stopped",
    "address",
    "seconds_text",
    "sleep_unless",
]

log = logging.getLogger(__name__)

# RFC 2177: a server may log out a client idle for 30 minutes; re-issue IDLE well before.
IDLE_RENEW_SECONDS = 25 * 60.0
MAX_UIDS_PER_COMMAND = 200
FETCH_ITEMS = "(UID FLAGS BODY.PEEK[])"
LOGOUT_TIMEOUT_SECONDS = 2.0
REOPEN_INTERVAL_SECONDS = 60.0


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


class Stopped(Exception):
    """The stop event was set while an interruptible command was pending."""


def address(config: MailboxConfig) -> str:
    """``host:port`` of the server, as log lines name it."""
    return f"{config.host}:{config.port}"


def seconds_text(value: float) -> str:
    """A number of seconds as log lines write it: ``0.5``, ``60``."""
    return f"{value:g}"


def _describe_safely(exc: BaseException) -> str:
    """:func:`maild.logs.describe`, but an aioimaplib timeout's text (the command line,
    which may carry the password) is left out."""
    return "timed out" if isinstance(exc, aioimaplib.CommandTimeout) else describe(exc)


class ImapSession:
    """One connection to the server of ``config``, its folder once :meth:`select` ran.

    Creating it starts connecting; :meth:`login` waits for the greeting, does
    STARTTLS when configured and logs in. Every command is bounded by
    ``command_timeout`` and raises :class:`ImapError` on failure; those given a
    ``stop`` event raise :class:`Stopped` when it is set first. A session whose
    command timed out or was abandoned is :attr:`broken`; one the server
    closed has :attr:`lost` set. Neither is used again: :meth:`close` it.
    """

    def __init__(
        self,
        config: MailboxConfig,
        *,
        command_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.command_timeout = command_timeout
        self.lost = asyncio.Event()
        # set whenever the server announces EXISTS, whichever command it rides on
        self.new_mail = asyncio.Event()
        # set when the server reports a problem with the selected folder (untagged NO/BAD, or
        # a new UIDVALIDITY): Dovecot does this when the folder is deleted and recreated
        self.trouble = asyncio.Event()
        self.alert = ""
        self.last_reopen = -1e9
        self.bye = ""
        self.lost_reason = ""
        self.broken = False  # a command timed out or was abandoned: state unknown, do not reuse
        self.established = False  # logged in and folder selected
        self.uidvalidity = 0
        self._context: ssl.SSLContext | None = None
        if config.security in ("tls", "starttls"):
            self._context = ssl_context or ssl.create_default_context()
        self.client: Any = aioimaplib.IMAP4(  # untyped
            host=config.host,
            port=config.port,
            timeout=command_timeout,
            conn_lost_cb=self._on_lost,
            ssl_context=self._context if config.security == "tls" else None,
        )
        self._watch_untagged()

    @property
    def where(self) -> str:
        return address(self.config)

    def has_capability(self, name: str) -> bool:
        return bool(self.client.has_capability(name))

    # -- connection state ----------------------------------------------------------------------

    def _on_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.lost_reason = _describe_safely(exc)
        elif self.bye:
            self.lost_reason = f"closed by the server ({self.bye})"
        else:
            self.lost_reason = "closed by the server"
        self.lost.set()

    def _watch_untagged(self) -> None:
        """Wrap aioimaplib's untagged-response handler to see every EXISTS, NO, BAD and BYE."""
        protocol = self.client.protocol
        original = protocol._untagged_response

        def spy(line: bytes) -> Any:  # called for every untagged line, IDLE or not
            text = line[2:] if line.startswith(b"* ") else line
            if is_exists(text):
                self.new_mail.set()
            elif text.startswith(b"BYE"):
                self.bye = text.decode("utf-8", "replace")
            elif self.established and (
                text.startswith((b"NO ", b"BAD ")) or changed_uidvalidity(text, self.uidvalidity)
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

    async def close(self) -> None:
        """Log out when the session is healthy (briefly), then drop the connection."""
        try:
            if self.established and not self.broken and not self.lost.is_set():
                await asyncio.wait_for(self.client.logout(), LOGOUT_TIMEOUT_SECONDS)
        except (TimeoutError, aioimaplib.AioImapException, OSError):
            pass
        finally:
            self.abort()

    # -- running one command ---------------------------------------------------------------------

    async def _call(
        self,
        what: str,
        command: Callable[[], Awaitable[Any]],
        stop: asyncio.Event | None = None,
        *,
        phase: type[ImapError] = ImapConnectionLost,
    ) -> Any:
        """Run one aioimaplib call, bounded by ``command_timeout``.

        Returns its response. Raises ``phase`` (an :class:`ImapError`) on a
        timeout, a lost connection or a client error, and :class:`Stopped`
        when ``stop`` is given and gets set first. A command we stop waiting for
        leaves the connection in an unknown state, so it is marked broken.
        """
        prefix = f"{what}: " if what else ""
        if self.lost.is_set():
            raise phase(f"{prefix}connection lost: {self.lost_reason}")
        task = asyncio.ensure_future(command())
        task.add_done_callback(_consume_result)
        lost = asyncio.ensure_future(self.lost.wait())
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
                self.broken = True
        if task in done:
            try:
                return task.result()
            except (TimeoutError, aioimaplib.AioImapException, OSError) as exc:
                self.broken = True
                raise phase(f"{prefix}{_describe_safely(exc)}") from exc
        if lost in done:
            raise phase(f"{prefix}connection lost: {self.lost_reason}")
        if stopped is not None and stopped in done:
            raise Stopped
        raise phase(f"{prefix}no answer within {seconds_text(self.command_timeout)}s")

    # -- logging in and selecting ----------------------------------------------------------------

    async def login(self, stop: asyncio.Event | None) -> None:
        """Wait for the greeting, STARTTLS if configured, log in, learn the capabilities."""
        cfg, client, context = self.config, self.client, self._context
        await self._call("", client.wait_hello_from_server, stop, phase=ImapUnreachable)
        if cfg.security == "starttls" and context is not None:
            await self._call(
                "STARTTLS", lambda: self._starttls(context), stop, phase=ImapUnreachable
            )
        if cfg.password is None:
            raise ImapLoginError("no password configured")
        password = cfg.password
        response = await self._call(
            "LOGIN", lambda: client.login(astring(cfg.username), password), stop
        )
        if response.result != "OK":
            raise ImapLoginError(response_text(response))
        if not any(b"CAPABILITY" in line for line in response.lines if isinstance(line, bytes)):
            await self._call("CAPABILITY", client.protocol.capability, stop)

    async def _starttls(self, context: ssl.SSLContext) -> None:
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapUnreachable("the server does not offer STARTTLS")
        response = await protocol.execute(
            aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        )
        if response.result != "OK":
            raise ImapUnreachable(f"STARTTLS refused: {response_text(response)}")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, context, server_hostname=self.config.host
        )
        # RFC 3501 6.2.1: forget what the server said before TLS
        await protocol.capability()

    async def create(self, name: str, stop: asyncio.Event | None) -> None:
        """CREATE folder ``name``; that it exists already is fine."""
        response = await self._call(
            f"CREATE {name}", lambda: self.client.create(mailbox_name(name)), stop
        )
        text = response_text(response)
        if response.result == "OK":
            log.info("IMAP created folder %s", name)
        elif "EXISTS" not in text.upper():  # [ALREADYEXISTS], or a server's own wording
            raise ImapCommandError(f"cannot create folder {name!r}: {response.result} {text}")

    async def select(self, stop: asyncio.Event | None) -> None:
        """SELECT the configured folder; :attr:`uidvalidity` says which one we got."""
        folder = self.config.folder
        select = partial(self.client.select, mailbox_name(folder))
        response = await self._call(f"SELECT {folder}", select, stop)
        if response.result != "OK":
            raise ImapCommandError(f"cannot select folder {folder!r}: {response_text(response)}")
        self.uidvalidity = uidvalidity_of(response.lines)
        self.established = True
        self.trouble.clear()

    async def reopen(self, stop: asyncio.Event) -> bool:
        """Re-SELECT the folder after the server reported a problem with it; True if it did.

        Dovecot answers a folder deleted and recreated under an open session
        with ``* NO Internal error`` and keeps serving the stale view; selecting
        again yields the new folder (and its new UIDVALIDITY). At most once a
        minute, so a server that repeats a warning cannot make us spin.
        """
        now = asyncio.get_running_loop().time()
        if now - self.last_reopen < REOPEN_INTERVAL_SECONDS:
            log.info("IMAP %s says: %s", self.where, self.alert)
            self.trouble.clear()
            return False
        self.last_reopen = now
        log.warning(
            "IMAP %s reported a problem with folder %s (%s); reopening it",
            self.where,
            self.config.folder,
            self.alert,
        )
        await self.select(stop)
        return True

    # -- the commands of a sync ----------------------------------------------------------------

    async def search(self, criteria: Sequence[str], stop: asyncio.Event | None) -> list[int]:
        """``UID SEARCH criteria``: the matching UIDs, sorted."""
        response = await self._call(
            "UID SEARCH", lambda: self.client.uid_search(*criteria, charset=None), stop
        )
        if response.result != "OK":
            raise ImapCommandError(
                f"UID SEARCH failed: {response.result} {response_text(response)}"
            )
        return parse_search(response.lines)

    async def fetch(self, uids: Sequence[int], stop: asyncio.Event | None) -> list[FetchedMail]:
        """The mails ``uids`` (flags and whole message, not marked seen), in UID order."""
        fetch = partial(self.client.uid, "fetch", uid_set(uids), FETCH_ITEMS)
        response = await self._call("UID FETCH", fetch, stop)
        if response.result != "OK":
            raise ImapCommandError(f"UID FETCH failed: {response.result} {response_text(response)}")
        return parse_fetch(response.lines)

    async def add_flags(self, uids: Sequence[int], flags: str) -> None:
        """``UID STORE +FLAGS.SILENT flags``, at most 200 UIDs a command. Not cut short by stop."""
        for chunk in chunks(sorted(uids), MAX_UIDS_PER_COMMAND):
            store = partial(self.client.uid, "store", uid_set(chunk), "+FLAGS.SILENT", flags)
            response = await self._call("UID STORE", store)
            if response.result != "OK":
                raise ImapCommandError(f"UID STORE {flags} failed: {response_text(response)}")

    async def move(self, uids: Sequence[int], folder: str) -> None:
        """Move ``uids`` to ``folder`` (creating it when the server asks us to).

        MOVE when the server has it, else COPY, flag ``\\Deleted`` and expunge.
        Not cut short by stop.
        """
        client = self.client
        box = mailbox_name(folder)
        for chunk in chunks(sorted(uids), MAX_UIDS_PER_COMMAND):
            uidset = uid_set(chunk)
            verb = "move" if client.has_capability("MOVE") else "copy"
            transfer = partial(client.uid, verb, uidset, box)
            response = await self._call(f"UID {verb.upper()}", transfer)
            if response.result != "OK" and "TRYCREATE" in response_text(response).upper():
                await self.create(folder, None)
                response = await self._call(f"UID {verb.upper()}", transfer)
            if response.result != "OK":
                raise ImapCommandError(
                    f"UID {verb.upper()} to {folder!r} failed: {response_text(response)}"
                )
            if verb == "move":
                continue
            await self.add_flags(chunk, r"(\Deleted)")
            if client.has_capability("UIDPLUS"):
                expunge = partial(client.uid, "expunge", uidset)
                response = await self._call("UID EXPUNGE", expunge)
            else:
                # without UIDPLUS this also expunges anything else flagged \Deleted
                response = await self._call("EXPUNGE", client.expunge)
            if response.result != "OK":
                raise ImapCommandError(f"EXPUNGE failed: {response_text(response)}")

    # -- waiting for new mail ----------------------------------------------------------------------

    async def idle(self, stop: asyncio.Event, seconds: float) -> None:
        """IDLE until new mail is announced, ``seconds`` pass, or ``stop`` is set."""
        client = self.client
        if self.new_mail.is_set() or self.trouble.is_set():  # arrived during the last sync
            return
        queue = client.protocol.idle_queue
        while not queue.empty():  # pushes we already acted on (or keepalives)
            queue.get_nowait()
        idle = await self._call("IDLE", lambda: client.idle_start(timeout=IDLE_RENEW_SECONDS), stop)
        try:
            await _first_of(
                (self.new_mail.wait(), self.trouble.wait(), self.lost.wait(), stop.wait()),
                seconds,
            )
        except BaseException:
            idle.cancel()
            raise
        if self.lost.is_set():
            idle.cancel()
            raise ImapConnectionLost(f"connection lost: {self.lost_reason}")
        client.idle_done()
        response = await self._call("IDLE DONE", lambda: idle)
        if response.result != "OK":
            raise ImapCommandError(f"IDLE ended with {response.result} {response_text(response)}")

    async def poll_wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Wait ``seconds`` (or until stop), then NOOP: new mail shows up as EXISTS there."""
        await _first_of((self.lost.wait(), stop.wait()), seconds)
        if self.lost.is_set():
            raise ImapConnectionLost(f"connection lost: {self.lost_reason}")
        if not stop.is_set():
            # also proves the connection is alive
            await self._call("NOOP", self.client.noop, stop)


def _consume_result(task: asyncio.Future[Any]) -> None:
    # a command we stopped waiting for may still fail later; don't log that as unretrieved
    if not task.cancelled():
        task.exception()


async def _first_of(waits: Sequence[Awaitable[Any]], seconds: float) -> None:
    """Wait until one of ``waits`` finishes or ``seconds`` pass; cancel the rest."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    await _first_of((stop.wait(),), seconds)
