"""Where ``maild run`` may send from a process of its own (service/sendproc.py)."""

from __future__ import annotations

import json
import logging
import multiprocessing

import pytest

from maild.logs import JsonFormatter
from maild.service.sendproc import PipeLogHandler, can_run_apart


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////var/lib/maild/maild.db",
        "sqlite+aiosqlite:///relative.db",
        "sqlite+aiosqlite:///file:maild.db?uri=true",
        "postgresql+asyncpg://maild@db.example.org/maild",
    ],
)
def test_a_store_on_disk_or_a_server_is_shared_with_the_sender_process(url: str) -> None:
    assert can_run_apart(url)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:box?mode=memory&cache=shared&uri=true",
    ],
)
def test_an_in_memory_store_keeps_the_sender_in_the_daemon(url: str) -> None:
    # the child's connection would open another, empty database: nothing would be sent
    assert not can_run_apart(url)


def test_a_traceback_from_the_sender_process_keeps_its_own_field_in_the_json_log() -> None:
    # the record crosses a real pipe as the child sends it, and is rebuilt in the daemon
    child_end, daemon_end = multiprocessing.Pipe()

    class Pipe:
        def put_nowait(self, record: logging.LogRecord) -> None:
            child_end.send(("log", record.__dict__))

    logger = logging.getLogger("maild.test.sender")
    logger.propagate = False
    logger.handlers[:] = [PipeLogHandler(Pipe())]  # type: ignore[arg-type]
    try:
        raise ValueError("relay said no")
    except ValueError:
        logger.exception("outbox pass failed; trying again in %d s", 5)
    kind, values = daemon_end.recv()
    assert kind == "log"
    record = logging.makeLogRecord(values)

    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "outbox pass failed; trying again in 5 s"
    assert "ValueError: relay said no" in line["exception"]
    assert "Traceback" in line["exception"]
    text = logging.Formatter("%(message)s").format(record)
    assert text.startswith("outbox pass failed; trying again in 5 s\nTraceback")
