"""Where ``maild run`` may send from a process of its own (service/sendproc.py)."""

from __future__ import annotations

import pytest

from maild.service.sendproc import can_run_apart


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
