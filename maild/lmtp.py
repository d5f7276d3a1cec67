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

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if session.peer else "?"
        verdict = await self.handler(bytes(raw), f"lmtp:{peer}")
        if verdict == "retry":
            return "451 4.3.0 Temporary failure storing the message, try again later"
        return "250 2.0.0 Message accepted"


async def serve(config: LmtpConfig, handler: Handler, stop: asyncio.Event) -> None:
    """Listen on ``config.host:config.port`` until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    delivery = _Delivery(handler)
    protocol: type[SMTP] = LMTP if config.protocol == "lmtp" else SMTP

    def factory() -> SMTP:
        return protocol(delivery, enable_SMTPUTF8=True, decode_data=False)

    server = await loop.create_server(factory, config.host, config.port)
    log.info("%s listener on %s:%s", config.protocol.upper(), config.host, config.port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
