"""Log output: one line per event on stderr, as text or JSON (for log shippers).

journald adds its own time stamp and priority; the text format keeps both
anyway so the lines read the same when maild runs in a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "describe", "setup"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def describe(exc: BaseException) -> str:
    """One line naming an exception: ``ConnectionRefusedError: [Errno 111] Connect call failed``.

    The class name is left out when the text already carries it, a trailing
    full stop is dropped, and a timeout without text reads "timed out". An
    error that wraps a database driver's (SQLAlchemy's ``DBAPIError``, which
    keeps it as ``orig``) is described by the driver's, without the SQL.
    """
    orig = getattr(exc, "orig", None)
    if isinstance(orig, BaseException):
        return describe(orig)
    text = str(exc).strip().rstrip(".")
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    name = type(exc).__name__
    if not text:
        return name
    return text if name in text else f"{name}: {text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted in another process (the sender's)
            data["exception"] = record.exc_text
        return json.dumps(data, ensure_ascii=False)


def setup(level: int, fmt: str = "text") -> None:
    """Configure the root logger for the CLI and the daemon."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("maild")
    root = logging.getLogger()
    # replace our own handler on a second call, leave anyone else's alone
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "maild"] + [handler]
    root.setLevel(level)
    # aioimaplib reports every ignored untagged response at INFO
    logging.getLogger("aioimaplib").setLevel(max(level, logging.WARNING))
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # aiosmtpd logs every SMTP command of every session at INFO
    logging.getLogger("mail.log").setLevel(max(level, logging.WARNING))
