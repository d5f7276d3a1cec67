"""Log output: one line per event on stderr, as text or JSON (for log shippers).

journald adds its own time stamp and priority; the text format keeps both
anyway so the lines read the same when maild runs in a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "setup"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
