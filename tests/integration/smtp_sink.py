"""A recording SMTP sink (real aiosmtpd) for integration tests.

Two flavours share one handler:

- :class:`SmtpSink` listens on the **test's own event loop** (port 0), so a test
  can ``await sink.wait_for(1)`` without threads. Fixture: ``smtp_sink``.
- :class:`ThreadedSink` runs aiosmtpd's ``Controller`` in its own thread on a
  free port, for tests where maild runs as a subprocess. Fixture: ``threaded_sink``.

The sink's behaviour is switched at runtime with ``mode``:

``accept``         record the mail, ``250``
``tempfail_rcpt``  ``451`` to every RCPT TO
``permfail_rcpt``  ``550`` to every RCPT TO
``tempfail_data``  ``451`` after DATA
``permfail_data``  ``554`` after DATA
``hang``           never answer DATA (until the mode changes or the sink closes);
                   ``handler.hanging`` counts the sessions waiting so
``down``           not listening at all; open connections are dropped

``refuse`` maps single addresses to an RCPT reply (``{"gone@x": "550 5.1.1 gone"}``)
for partial refusals. With ``auth=(user, password)`` the sink offers AUTH
without TLS and records every attempt in ``logins``; ``auth_required=True``
also answers ``530`` to MAIL FROM before a login, and makes aiosmtpd warn
"Requiring AUTH while not requiring TLS" (a ``UserWarning``: filter it in the
test with ``@pytest.mark.filterwarnings("ignore:Requiring AUTH:UserWarning")``).

Pytest only sees these fixtures when they are imported into a conftest or the
test module; in a test module, bind them by assignment (``smtp_sink =
sink_mod.smtp_sink``) so ruff does not report the argument as a redefinition.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

if TYPE_CHECKING:
    from maild.config import SmtpConfig

__all__ = [
    "HOST",
    "Login",
    "Mode",
    "Received",
    "SinkHandler",
    "SmtpSink",
    "ThreadedSink",
    "free_port",
    "smtp_sink",
    "threaded_sink",
]

HOST = "127.0.0.1"
SERVER_NAME = "sink.test"  # spares aiosmtpd a socket.getfqdn() per connection

Mode = Literal[
    "accept", "tempfail_rcpt", "permfail_rcpt", "tempfail_data", "permfail_data", "hang", "down"
]
MODES: frozenset[str] = frozenset(get_args(Mode))


class Received(NamedTuple):
    """One accepted mail: the envelope and the bytes exactly as the server got them."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes


class Login(NamedTuple):
    mechanism: str
    login: str
    password: str
    success: bool


class SinkHandler:
    """aiosmtpd handler: records accepted mail, fails on demand by ``mode``."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.mode: Mode = "accept"
        self.refuse: dict[str, str] = {}
        self.received: list[Received] = []
        self.logins: list[Login] = []
        self.credentials = credentials
        self.closing = False
        # sessions waiting in DATA under "hang" right now
        self.hanging = 0

    async def arrived(self) -> None:
        """Called after a mail is recorded (on the server's loop); flavours wake waiters."""

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if self.mode == "tempfail_rcpt":
            return "451 4.3.0 Try again later"
        if self.mode == "permfail_rcpt":
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.mode == "tempfail_data":
            return "451 4.3.0 Queue full, try later"
        if self.mode == "permfail_data":
            return "554 5.6.0 Message content rejected"
        if self.mode == "hang":
            # Polling keeps this usable from both flavours (no cross-thread events).
            self.hanging += 1
            try:
                while self.mode == "hang" and not self.closing:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            finally:
                self.hanging -= 1
            return "451 4.3.0 Released from hang, not delivered"
        content = envelope.content
        assert isinstance(content, bytes)
        assert envelope.mail_from is not None
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), content))
        await self.arrived()
        return "250 2.0.0 OK queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.credentials is not None and (login, password) == self.credentials
        self.logins.append(Login(mechanism, login, password, ok))
        if ok:
            return AuthResult(success=True)
        # handled=False makes aiosmtpd answer 535; with True it would say nothing.
        return AuthResult(success=False, handled=False)

    def smtp_kwargs(self, auth_required: bool) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"hostname": SERVER_NAME}
        if self.credentials is not None:
            kwargs.update(
                authenticator=self.authenticate,
                auth_require_tls=False,
                auth_required=auth_required,
            )
        return kwargs


def _config(host: str, port: int, credentials: tuple[str, str] | None, **overrides: Any) -> Any:
    from maild.config import SmtpConfig

    fields: dict[str, Any] = {
        "host": host,
        "port": port,
        "security": "none",
        "username": credentials[0] if credentials else None,
        "password": credentials[1] if credentials else None,
        "retry_for": timedelta(days=2),
    }
    fields.update(overrides)
    return SmtpConfig(**fields)


class SmtpSink:
    """An aiosmtpd server on the running loop. Use ``async with SmtpSink() as sink``."""

    host = HOST

    def __init__(self, *, auth: tuple[str, str] | None = None, auth_required: bool = False) -> None:
        self.handler = _AsyncHandler(auth)
        self.auth_required = auth_required
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    # -- recording -------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def logins(self) -> list[Login]:
        return self.handler.logins

    @property
    def refuse(self) -> dict[str, str]:
        return self.handler.refuse

    # A default timeout keeps a missing mail from hanging the suite.
    async def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[Received]:  # noqa: ASYNC109
        """Wait until at least ``n`` mails have arrived in total; ``TimeoutError`` if not."""
        cond = self.handler.cond
        async with asyncio.timeout(timeout), cond:
            await cond.wait_for(lambda: len(self.received) >= n)
        return list(self.received)

    def clear(self) -> None:
        self.received.clear()
        self.logins.clear()

    # -- mode ------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return "down" if self._server is None else self.handler.mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown sink mode {mode!r}")
        if mode == "down" or self._server is None:
            raise ValueError("going down or coming back up needs `await sink.set_mode(...)`")
        self.handler.mode = mode

    async def set_mode(self, mode: Mode) -> None:
        """Switch behaviour; ``down`` closes the listener, any other mode reopens it."""
        if mode not in MODES:
            raise ValueError(f"unknown sink mode {mode!r}")
        if mode == "down":
            await self._close()
            return
        self.handler.mode = mode
        if self._server is None:
            await self._listen()

    # -- lifecycle -------------------------------------------------------------

    def _protocol(self) -> SMTP:
        self.connections += 1
        proto = SMTP(self.handler, **self.handler.smtp_kwargs(self.auth_required))
        self._protocols.append(proto)
        return proto

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        # Coming back up reuses the port; asyncio sets SO_REUSEADDR on POSIX.
        self._server = await loop.create_server(self._protocol, HOST, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.handler.closing = False

    async def _close(self) -> None:
        server, self._server = self._server, None
        self.handler.closing = True  # releases a hanging DATA
        if server is not None:
            server.close()
            await server.wait_closed()
        for proto in self._protocols:
            if proto.transport is not None:
                proto.transport.close()
        self._protocols.clear()
        await asyncio.sleep(0)  # let connection_lost run

    async def __aenter__(self) -> SmtpSink:
        await self._listen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()
        # Give cancelled handler tasks one more turn so none outlive the test.
        await asyncio.sleep(0.01)

    def smtp_config(self, **overrides: Any) -> SmtpConfig:
        """A ``SmtpConfig`` pointing at this sink (security "none", its credentials)."""
        config: SmtpConfig = _config(HOST, self.port, self.handler.credentials, **overrides)
        return config


class _AsyncHandler(SinkHandler):
    def __init__(self, credentials: tuple[str, str] | None) -> None:
        super().__init__(credentials)
        self.cond = asyncio.Condition()

    async def arrived(self) -> None:
        async with self.cond:
            self.cond.notify_all()


def free_port() -> int:
    """A TCP port that was free a moment ago (``Controller`` cannot use port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class _ThreadHandler(SinkHandler):
    def __init__(self, credentials: tuple[str, str] | None) -> None:
        super().__init__(credentials)
        self.cond = threading.Condition()

    async def arrived(self) -> None:
        with self.cond:
            self.cond.notify_all()


class ThreadedSink:
    """aiosmtpd's ``Controller`` in its own thread, for a maild running elsewhere.

    Everything here is blocking and thread-safe enough for tests; from async
    code use :meth:`wait_for_async`.
    """

    host = HOST

    def __init__(self, *, auth: tuple[str, str] | None = None, auth_required: bool = False) -> None:
        self.handler = _ThreadHandler(auth)
        self.auth_required = auth_required
        self.port = 0
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def logins(self) -> list[Login]:
        return self.handler.logins

    @property
    def refuse(self) -> dict[str, str]:
        return self.handler.refuse

    @property
    def mode(self) -> Mode:
        return "down" if self._controller is None else self.handler.mode

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown sink mode {mode!r}")
        if mode == "down":
            self.stop()
            return
        self.handler.mode = mode
        if self._controller is None:
            self.start()

    def start(self) -> None:
        for attempt in range(5):
            port = self.port or free_port()
            kwargs = self.handler.smtp_kwargs(self.auth_required)
            controller = Controller(
                self.handler,
                hostname=HOST,
                port=port,
                server_hostname=kwargs.pop("hostname"),
                **kwargs,
            )
            try:
                controller.start()
            except (OSError, RuntimeError):
                # Someone took the free port in between; a fixed port must retry as is.
                if attempt == 4:
                    raise
                time.sleep(0.05)
                continue
            self.port = port
            self._controller = controller
            self.handler.closing = False
            return

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        self.handler.closing = True
        if controller is not None:
            controller.stop()

    def wait_for(self, n: int = 1, timeout: float = 5.0) -> list[Received]:
        """Block until at least ``n`` mails have arrived; ``TimeoutError`` if not."""
        with self.handler.cond:
            if not self.handler.cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise TimeoutError(f"{len(self.received)} of {n} mails arrived in {timeout} s")
            return list(self.received)

    async def wait_for_async(self, n: int = 1, timeout: float = 5.0) -> list[Received]:  # noqa: ASYNC109
        return await asyncio.to_thread(self.wait_for, n, timeout)

    def clear(self) -> None:
        self.received.clear()
        self.logins.clear()

    def __enter__(self) -> ThreadedSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def smtp_config(self, **overrides: Any) -> SmtpConfig:
        config: SmtpConfig = _config(HOST, self.port, self.handler.credentials, **overrides)
        return config

    def toml(self) -> str:
        """An ``[smtp]`` section for a maild config file pointing at this sink."""
        lines = ["[smtp]", f'host = "{HOST}"', f"port = {self.port}", 'security = "none"']
        if self.handler.credentials:
            user, password = self.handler.credentials
            lines += [f'username = "{user}"', f'password = "{password}"']
        return "\n".join(lines) + "\n"


@pytest.fixture
async def smtp_sink() -> AsyncIterator[SmtpSink]:
    """A recording sink on the test's loop, mode "accept", no auth."""
    async with SmtpSink() as sink:
        yield sink


@pytest.fixture
def threaded_sink() -> Iterator[ThreadedSink]:
    """A recording sink in a background thread on a fixed free port, for subprocess tests."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(ThreadedSink())
