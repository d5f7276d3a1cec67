"""IMAP ingestion, in three parts (as imap_tools splits its code):

- :mod:`~maild.mail.imap.codec`       the wire format without I/O: modified
  UTF-7 folder names, UID sets, reading FETCH and SEARCH responses
- :mod:`~maild.mail.imap.connection`  one aioimaplib session: connect, TLS,
  login, select, the commands a sync needs, IDLE; the errors (``ImapError``
  and kinds that also inherit ``ConnectionError``/``PermissionError``)
- :mod:`~maild.mail.imap.sync`        :class:`ImapSource`, the loop: fetch a
  batch, hand each mail to the pipeline, mark it afterwards, keep the
  progress marker, reconnect with backoff

The names below are what the daemon and the tests use.
"""

from __future__ import annotations

from maild.mail.imap.codec import (
    FetchedMail,
    imap_quote,
    imap_utf7_decode,
    imap_utf7_encode,
    parse_fetch,
    uid_set,
)
from maild.mail.imap.connection import (
    ImapCommandError,
    ImapConnectionLost,
    ImapError,
    ImapLoginError,
    ImapUnreachable,
)
from maild.mail.imap.sync import (
    PROCESSED_KEYWORD,
    QUARANTINED_KEYWORD,
    Handler,
    ImapSource,
    Verdict,
)

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
