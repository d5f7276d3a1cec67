"""Push delivery: an LMTP (or SMTP) listener an MTA such as Postfix delivers to.

A mail is accepted (250) only after its transaction has committed; when it
cannot be stored the MTA gets ``451`` and keeps the mail for a later try.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from maild.config import LmtpConfig

__all__ = ["serve"]

log = logging.getLogger(__name__)

Handler = Callable[[bytes, str], Awaitable[str]]


class _Delivery:
    """aiosmtpd handler: hand DATA to the pipeline and answer after the commit."""

    def __init__(self, handler: Handler, lmtp: bool) -> None:
        self.handler = handler
        self.lmtp = lmtp

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        # the envelope sender is what tells a bounce (null sender) from a person;
        # an MTA delivering by LMTP leaves adding Return-Path to us
        sender = envelope.mail_from or ""
        if not bytes(raw[:4096]).lower().startswith(b"return-path:"):
            raw = f"Return-Path: <{sender}>\r\n".encode("utf-8", "surrogateescape") + bytes(raw)
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


async def serve(config: LmtpConfig, handler: Handler, stop: asyncio.Event) -> None:
    """Listen on ``config.host:config.port`` until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    delivery = _Delivery(handler, config.protocol == "lmtp")
    protocol: type[SMTP] = LMTP if config.protocol == "lmtp" else SMTP

    def factory() -> SMTP:
        # no size cap at the protocol: an oversized mail is kept as a stub with
        # its headers and the sender told, which a 552 here would prevent
        return protocol(delivery, enable_SMTPUTF8=True, decode_data=False, data_size_limit=None)

    server = await loop.create_server(factory, config.host, config.port)
    log.info("%s listener on %s:%s", config.protocol.upper(), config.host, config.port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
