"""A raw mail parsed the way ingest needs it, as plain values that pickle cheaply.

:func:`parse_for_ingest` is the first step of :meth:`Pipeline.ingest
<maild.service.pipeline.Pipeline.ingest>`: a mail over the size limit is
parsed from its header only, a mail that is no mail at all becomes an error
string instead of an exception. :func:`parse_many` does it for a list, in
one call, so that a worker process can parse the next mails of an mbox while
the main process writes (``maild.service.batch``); its result crosses the
process boundary as one pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maild.core.inbound import InboundMail, ParseError, parse_mail

__all__ = ["HEADER_LIMIT", "Parsed", "header_only", "parse_for_ingest", "parse_many"]

# a mail over the size limit keeps (and is parsed from) at most this much of its header
HEADER_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed mail, or why it could not be parsed (``mail`` is None then)."""

    mail: InboundMail | None
    too_large: bool
    error: str | None = None


def header_only(raw: bytes) -> bytes:
    """The header of ``raw`` up to its blank line (at most :data:`HEADER_LIMIT` bytes)."""
    head = raw[:HEADER_LIMIT]
    for sep in (b"\r\n\r\n", b"\n\n"):
        pos = head.find(sep)
        if pos != -1:
            return head[: pos + len(sep)]
    return head


def parse_for_ingest(raw: bytes, max_bytes: int) -> Parsed:
    """Parse ``raw``; over ``max_bytes`` only its header is parsed."""
    too_large = len(raw) > max_bytes
    try:
        return Parsed(parse_mail(header_only(raw) if too_large else raw), too_large)
    except ParseError as exc:
        return Parsed(None, too_large, str(exc))


def parse_many(raws: Sequence[bytes], max_bytes: int) -> list[Parsed]:
    """:func:`parse_for_ingest` for each of ``raws``, in order."""
    return [parse_for_ingest(raw, max_bytes) for raw in raws]
