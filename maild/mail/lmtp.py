"""Push delivery: an LMTP (or SMTP) listener an MTA such as Postfix delivers to.

A mail is accepted (250) only after its transaction has committed; when it
cannot be stored the MTA gets ``451`` and keeps the mail for a later try.

What the listener refuses (SPEC section 11, "Listener"): a client outside
``lmtp.allow`` gets ``554`` instead of a greeting and is disconnected; a
message over ``tickets.max_message_bytes`` gets ``552`` once its data has
arrived, and what came past the limit was dropped as it came, never held.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from maild.config import LmtpConfig

__all__ = ["Network", "allowed", "serve"]

log = logging.getLogger(__name__)

Handler = Callable[[bytes, str], Awaitable[str]]


class _Delivery:
    """aiosmtpd handler: hand DATA to the pipeline and answer after the commit."""

    def __init__(self, handler: Handler, lmtp: bool, max_bytes: int = 0) -> None:
        self.handler = handler
        self.lmtp = lmtp
        self.max_bytes = max_bytes

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        # the envelope sender is what tells a bounce (null sender) from a person;
        # an MTA delivering by LMTP leaves adding Return-Path to us
        sender = envelope.mail_from or ""
        if not bytes(raw[:4096]).lower().startswith(b"return-path:"):
            raw = f"Return-Path: <{sender}>\r\n".encode("utf-8", "surrogateescape") + bytes(raw)
        if self.max_bytes and len(raw) > self.max_bytes:
            # within the limit as sent, over it with the Return-Path we add: the
            # pipeline would keep only a stub, so it is the MTA's to bounce, as above
            count = max(1, len(envelope.rcpt_tos)) if self.lmtp else 1
            reply = f"552 5.3.4 Message too big: the limit is {self.max_bytes} bytes"
            return "\r\n".join([reply] * count)
        peer = session.peer[0] if session.peer else "?"
        try:
            verdict = await self.handler(bytes(raw), f"lmtp:{peer}")
        except Exception:
            log.exception("LMTP delivery from %s failed; the MTA will retry", peer)
            verdict = "retry"
        if verdict == "retry":
            reply = "451 4.3.0 Temporary failure storing the message, try again later"
        else:
            reply = "250 2.0.0 Message accepted"
        # LMTP answers DATA once per accepted recipient (RFC 2033); it is one mail here
        count = max(1, len(envelope.rcpt_tos)) if self.lmtp else 1
        return "\r\n".join([reply] * count)


class _BoundedSMTP(SMTP):
    """SMTP whose DATA never holds more than ``data_size_limit`` bytes of a message.

    aiosmtpd's own DATA stops keeping lines past the limit, but keeps every
    fragment of a line that has no end yet: one enormous line is held whole.
    This reading keeps nothing once the message is refused, whatever its
    shape, and answers once per recipient under LMTP (RFC 2033 section 4.2).
    """

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        if envelope is None or not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            lines, size = await self._receive()
        except (asyncio.CancelledError, asyncio.IncompleteReadError) as exc:
            # the client went away mid-DATA: nobody to answer
            log.info("connection lost during DATA from %s", self._peer())
            self._writer.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if lines is None:
            limit = self.data_size_limit
            if limit and size > limit:
                log.warning(
                    "refused a message of over %d bytes from %s: tickets.max_message_bytes is %d",
                    size,
                    self._peer(),
                    limit,
                )
                reply = f"552 5.3.4 Message too big: the limit is {limit} bytes"
            else:
                reply = "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)"
            count = len(envelope.rcpt_tos) if isinstance(self, LMTP) else 1
            self.envelope = self._create_envelope()
            await self.push("\r\n".join([reply] * count))
            return
        content = b"".join(lines)
        lines.clear()
        envelope.content = envelope.original_content = content
        status = await self.event_handler.handle_DATA(self, self.session, envelope)
        self.envelope = self._create_envelope()
        await self.push(status)

    async def _receive(self) -> tuple[list[bytes] | None, int]:
        """Read DATA to its lone dot: the unstuffed lines, or None when refused; the size.

        The reader's buffer holds at most about a line (``line_length_limit``):
        a longer line comes in pieces. Once the message is too big or has an
        overlong line, every piece is counted and dropped as it comes.
        """
        limit = self.data_size_limit
        kept: list[bytes] | None = []
        size = 0
        at_line_start = True
        while True:
            try:
                piece = await self._reader.readuntil(b"\r\n")  # a whole line, CRLF included
            except asyncio.LimitOverrunError as exc:
                # a line longer than the buffer: take what is there (never a CRLF's CR)
                piece = await self._reader.read(exc.consumed)
                kept = None
            if at_line_start and piece == b".\r\n":
                return kept, size
            at_line_start = piece.endswith(b"\r\n")
            size += len(piece)
            if kept is None or (limit and size > limit) or len(piece) > self.line_length_limit:
                kept = None
            else:
                kept.append(piece[1:] if piece.startswith(b".") else piece)

    def _peer(self) -> str:
        peer = self.session.peer if self.session else None
        return str(peer[0]) if peer else "?"


class _BoundedLMTP(_BoundedSMTP, LMTP):
    """LMTP (LHLO, one DATA reply per recipient) with the bounded DATA above."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed(peer: str, networks: tuple[Network, ...]) -> bool:
    """Whether a client address is in one of ``networks`` (none given: every client)."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(peer.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client of a dual-stack socket
    return any(address in network for network in networks)


class _Gate(asyncio.Protocol):
    """Looks at the client before any SMTP is spoken: 554 and close, or hand over."""

    def __init__(self, networks: tuple[Network, ...], inner: Callable[[], SMTP]) -> None:
        self.networks = networks
        self.inner = inner

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, base)  # a TCP server's transports are
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if allowed(host, self.networks):
            protocol = self.inner()
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            return
        log.warning("refused a connection from %s: not in lmtp.allow", host)
        transport.write(b"554 5.7.1 Not accepting mail from this address\r\n")
        transport.close()


async def serve(
    config: LmtpConfig, handler: Handler, stop: asyncio.Event, *, max_bytes: int
) -> None:
    """Listen on ``config.host:config.port`` until ``stop`` is set.

    ``max_bytes`` is ``tickets.max_message_bytes``: a longer message is
    refused with 552 (the MTA bounces it to its sender), unlike a mail fetched
    by IMAP, which is already ours to keep as a stub.
    """
    loop = asyncio.get_running_loop()
    delivery = _Delivery(handler, config.protocol == "lmtp", max_bytes)
    protocol: type[SMTP] = _BoundedLMTP if config.protocol == "lmtp" else _BoundedSMTP

    def factory() -> SMTP:
        return protocol(
            delivery, enable_SMTPUTF8=True, decode_data=False, data_size_limit=max_bytes
        )

    server = await loop.create_server(
        lambda: _Gate(config.allow, factory), config.host, config.port
    )
    log.info("%s listener on %s:%s", config.protocol.upper(), config.host, config.port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
