"""Fixtures the integration tests share beyond tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_proc import MaildProcess


@pytest.fixture
def maild(tmp_path: Path) -> Iterator[MaildProcess]:
    """A ``maild run`` of the test's own (configure, start, stop, kill), closed after it."""
    proc = MaildProcess(tmp_path)
    try:
        yield proc
    finally:
        proc.close()
