"""The outbox's outcome journal: on SQLite, a sent mail recorded without the store's write lock.

SQLite has one write lock for the whole store, and ``maild run`` holds it
for a chunk of mail at a time (up to a tenth of the leader lease). A sender
that committed each mail's outcome to its outbox row had to wait for that
lock mail by mail, so the daemon gave it a turn between chunks and waited
until it had sent everything (bench/README.md, e2e). Instead, right after
the relay's answer, a sender on SQLite commits the outcome to this journal:
a small SQLite file of its own beside the store (``maild.db`` →
``maild.db.outcomes``) whose lock only senders take, for a moment each. The
outcomes are *folded* into the outbox rows by the sender's next write
transaction on the store (its next claim, renewal or release, or a moment
after it goes idle), with the same conditional UPDATE as before: only a row
still queued and claimed by the sender that sent it takes the outcome. A
bounce ingested before the fold reads the outcomes of its mail's rows
(:func:`pending_outcomes`) and records them with the bounce.

- **Durable.** The journal runs in WAL mode with ``synchronous=NORMAL``, like
  the store: a journaled outcome survives ``kill -9`` of any process. A
  sender folds the journal in the same transaction as its claim, before it
  claims, so no sender (a restarted one, another instance) takes a mail
  whose outcome is journaled for unsent. SMTP's own window (accepted, not
  yet journaled) is still the one mail.
- **Folded once.** A fold holds the store's write lock, then the journal's,
  from reading the pending outcomes until it deletes them after the store
  committed; a second folder waits for both and finds them gone. A crash
  between that commit and the deletion leaves outcomes whose rows are no
  longer claimed; the next fold matches nothing with them and drops them.
- **No cycle.** Locks are taken in that order only, and a sender writing an
  outcome holds the journal's alone.

The journal belongs with the store: a copy of ``maild.db`` taken without it
while mail was going out may lack the last outcomes (those mails would be
sent again, with the same Message-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy.exc import OperationalError

from maild.store.sqlite_read import sqlite_path

__all__ = ["SUFFIX", "Fold", "OutcomeJournal", "Pending", "journal_path", "pending_outcomes"]

#: The journal's file name: the store's, with this added.
SUFFIX = ".outcomes"
#: How long a sender waits for a folder's hold on the journal (milliseconds).
BUSY_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcome (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    row_id INTEGER NOT NULL,
    instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    columns TEXT NOT NULL,
    who TEXT NOT NULL
)
"""

Kind = Literal["sent", "failed", "retry"]


@contextlib.contextmanager
def _store_error() -> Iterator[None]:
    """The journal's failures (locked past the busy timeout, a disk error) raised as
    the store's are: the sender's handlers for an unavailable store take them."""
    try:
        yield
    except sqlite3.Error as exc:
        raise OperationalError("outcome journal", None, exc) from exc


@dataclass(frozen=True, slots=True)
class Pending:
    """One journaled outcome: the outbox columns to set on ``row_id`` if ``instance``
    still claims it; ``who`` names the mail in the log."""

    row_id: int
    instance: str
    kind: Kind
    columns: dict[str, object]
    who: str


class Fold:
    """The outcomes one fold read. The journal stays held (no sender can add to it,
    no other folder read it) until :meth:`forget` (the store committed them) or
    :meth:`keep` (it did not: they wait for the next fold)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock
        with _store_error():
            rows = conn.execute(
                "SELECT seq, row_id, instance, kind, columns, who FROM outcome ORDER BY seq"
            ).fetchall()
        self._last = rows[-1][0] if rows else None
        self.pending = [
            Pending(row_id, instance, kind, _decode(columns), who)
            for _seq, row_id, instance, kind, columns, who in rows
        ]
        self._open = True

    def forget(self) -> None:
        """The store committed these outcomes: delete them and let the journal go."""
        self._end(committed=True)

    def keep(self) -> None:
        """The store did not commit: the outcomes stay for the next fold."""
        self._end(committed=False)

    def _end(self, *, committed: bool) -> None:
        if not self._open:
            return
        self._open = False
        try:
            with _store_error():
                if committed and self._last is not None:
                    self._conn.execute("DELETE FROM outcome WHERE seq <= ?", (self._last,))
                self._conn.execute("COMMIT" if committed else "ROLLBACK")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._lock.release()


class OutcomeJournal:
    """The journal beside one SQLite store: :meth:`record` (a sender, after the relay
    answered) and :meth:`fold` (a write transaction on the store, holding its lock).

    Records are written by a thread of the journal's own, so an fsync, or a
    fold holding the journal for a moment, never stops the caller's event
    loop. Call :meth:`close` when done.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maild-journal")
        self._write_conn = _connect(path)
        # folds come from the sender's store thread; one at a time
        self._fold_conn = _connect(path)
        self._fold_lock = threading.Lock()

    @classmethod
    def for_url(cls, url: str) -> OutcomeJournal | None:
        """The journal for an SQLite file store's URL; None for any other store
        (PostgreSQL's senders commit beside the chunks; an in-memory store has
        no file to put one beside)."""
        path = journal_path(url)
        return None if path is None else cls(path)

    async def record(
        self, row_id: int, instance: str, kind: Kind, columns: dict[str, object], who: str
    ) -> None:
        """Commit one outcome; it is durable when this returns."""
        encoded = _encode(columns)
        await asyncio.get_running_loop().run_in_executor(
            self._writer,
            self._insert,
            (row_id, instance, kind, encoded, who),
        )

    def _insert(self, values: tuple[object, ...]) -> None:
        with _store_error():
            self._write_conn.execute(
                "INSERT INTO outcome (row_id, instance, kind, columns, who) VALUES (?, ?, ?, ?, ?)",
                values,
            )

    async def has_pending(self) -> bool:
        """Whether outcomes wait to be folded."""

        def look() -> bool:
            with _store_error():
                found = self._write_conn.execute("SELECT 1 FROM outcome LIMIT 1").fetchone()
            return found is not None

        return await asyncio.get_running_loop().run_in_executor(self._writer, look)

    def fold(self) -> Fold:
        """Hold the journal and read what waits; call only while holding the store's
        write lock, and end with the fold's ``forget()`` or ``keep()``. Blocks (the
        store thread's way) while a sender writes an outcome."""
        self._fold_lock.acquire()
        try:
            with _store_error():
                self._fold_conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._fold_lock.release()
            raise
        try:
            return Fold(self._fold_conn, self._fold_lock)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._fold_conn.execute("ROLLBACK")
            self._fold_lock.release()
            raise

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._write_conn.close()
        with self._fold_lock:
            self._fold_conn.close()


def journal_path(url: str) -> Path | None:
    """Where the journal of an SQLite file store's URL lies; None for any other store
    (and for a URL with a query string or a ``file:`` URI: its senders then record
    each outcome in the store, as on PostgreSQL)."""
    store = sqlite_path(url)
    if store is None:
        return None
    # the file itself, however the URL spells it (a symlink, a relative path):
    # every sender on this store must find the same journal
    store = store.resolve()
    return store.with_name(store.name + SUFFIX)


def pending_outcomes(url: str, row_ids: set[int]) -> dict[int, Pending]:
    """The outcomes of ``row_ids`` still waiting in the journal, the last of each.

    Read without holding the journal, by a store transaction that must know
    what the relay answered before the next fold does (a bounce of a mail
    sent a moment ago). Empty for a store without a journal.
    """
    path = journal_path(url)
    if path is None or not row_ids or not path.exists():
        return {}
    marks = ", ".join("?" * len(row_ids))
    with _store_error(), contextlib.closing(_connect(path)) as conn:
        rows = conn.execute(
            f"SELECT row_id, instance, kind, columns, who FROM outcome "  # noqa: S608 -- marks
            f"WHERE row_id IN ({marks}) ORDER BY seq",
            sorted(row_ids),
        ).fetchall()
    return {
        row_id: Pending(row_id, instance, kind, _decode(columns), who)
        for row_id, instance, kind, columns, who in rows
    }


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        # private like the store (its -wal and -shm files take this mode)
        path.touch(mode=0o600)
    # autocommit: each INSERT is its own transaction; a fold says BEGIN itself
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    # as the store: durable against process crashes; only a power loss can drop
    # the last commits
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)
    return conn


def _encode(columns: dict[str, object]) -> str:
    return json.dumps(
        {
            name: {"datetime": value.isoformat()} if isinstance(value, datetime) else value
            for name, value in columns.items()
        }
    )


def _decode(text: str) -> dict[str, object]:
    return {
        name: datetime.fromisoformat(value["datetime"]) if isinstance(value, dict) else value
        for name, value in json.loads(text).items()
    }
