"""describe(): the one line a log message gives an exception."""

from __future__ import annotations

import pytest

from maild.logs import describe


class Wrapper(Exception):
    """Like SQLAlchemy's DBAPIError: the driver's error is kept as ``orig``."""

    def __init__(self, orig: BaseException) -> None:
        super().__init__("(sqlite3.OperationalError) database is locked [SQL: SELECT 1]")
        self.orig = orig


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            ConnectionRefusedError(111, "Connect call failed"),
            "ConnectionRefusedError: [Errno 111] Connect call failed",
        ),
        (RuntimeError("database is locked."), "RuntimeError: database is locked"),
        (RuntimeError(), "RuntimeError"),
        (RuntimeError("RuntimeError"), "RuntimeError"),
        (ValueError("ValueError in the text already"), "ValueError in the text already"),
        (TimeoutError(), "timed out"),
        (TimeoutError("slow relay"), "TimeoutError: slow relay"),
        (Wrapper(OSError("database is locked")), "OSError: database is locked"),
    ],
)
def test_describe(exc: BaseException, expected: str) -> None:
    assert describe(exc) == expected
