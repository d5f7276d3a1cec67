"""Shared test fixtures: a configured maild instance in a temp dir, the corpus, mail builders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from maild.cli.labconfig import lab_template
from maild.cli.main import main

# the real servers, shared by every test module of the session
pytest_plugins = [
    "tests.integration.dovecot",
    "tests.integration.smtp_sink",
    "tests.integration.postgres",
]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MAILS = FIXTURES / "mails"


def corpus_dir() -> Path | None:
    """The shared corpus (../shared/corpus beside the checkout, or $MAILD_CORPUS)."""
    env = os.environ.get("MAILD_CORPUS")
    path = Path(env) if env else REPO.parent / "shared" / "corpus"
    return path if path.is_dir() else None


def require_corpus() -> Path:
    """The shared corpus; without it the calling test skips, saying where it looked.

    In CI (``CI=true``) the corpus must be there: a missing one fails the test.
    """
    path = corpus_dir()
    if path is not None:
        return path
    where = os.environ.get("MAILD_CORPUS") or REPO.parent / "shared" / "corpus"
    message = (
        f"shared corpus not found at {where} "
        "(put the shared folder beside the checkout or set MAILD_CORPUS)"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# the test lab (maild.cli.labconfig, shared with bench/ and the demo) with {db} and {ack_rate}
CONFIG_TEMPLATE = lab_template()


@dataclass
class Result:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Instance:
    """A maild config + SQLite file in a temp dir, driven through the real CLI."""

    def __init__(self, root: Path, ack_rate: int = 5, url: str | None = None) -> None:
        self.root = root
        self.db = root / "maild.db"
        self.url = url or f"sqlite+aiosqlite:///{self.db}"
        self.config = root / "maild.toml"
        text = CONFIG_TEMPLATE.format(db=self.db, ack_rate=ack_rate)
        text = text.replace(f'url = "sqlite+aiosqlite:///{self.db}"', f'url = "{self.url}"')
        self.config.write_text(text)
        self.mail_dir = root / "mail"
        self.mail_dir.mkdir()
        self._n = 0

    def cli(self, *args: str) -> Result:
        """Run ``maild --config … ARGS`` in this process (same code path as the command)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(["--config", str(self.config), *args])
            except SystemExit as exc:  # argparse usage errors
                status = int(exc.code or 0)
        return Result(status, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> Result:
        result = self.cli(*args)
        assert result.status == 0, f"maild {' '.join(args)} failed: {result.err}"
        return result

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -m maild`` as a real subprocess."""
        return subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(self.config), *args],
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            # the checkout's maild, installed or not
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            },
        )

    def write(self, raw: bytes | EmailMessage, name: str | None = None) -> Path:
        self._n += 1
        path = self.mail_dir / (name or f"mail-{self._n}.eml")
        path.write_bytes(raw if isinstance(raw, bytes) else raw.as_bytes())
        return path

    def ingest(self, raw: bytes | EmailMessage | Path, *extra: str) -> dict[str, Any]:
        """Ingest one mail; return its ``ingest --json`` row."""
        path = raw if isinstance(raw, Path) else self.write(raw)
        rows = self.ok("ingest", "--json", *extra, str(path)).json()
        assert len(rows) == 1
        row: dict[str, Any] = rows[0]
        return row

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        """Run one SQL statement (``?`` placeholders) on this instance's store, any backend.

        Datetimes come back as ISO strings and JSON as text, the way SQLite gives them.
        """
        import asyncio
        from datetime import datetime

        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        parts = query.split("?")
        sql = parts[0] + "".join(f":p{i}{part}" for i, part in enumerate(parts[1:]))
        params = {f"p{i}": value for i, value in enumerate(args)}

        async def go() -> list[tuple[Any, ...]]:
            engine = create_async_engine(self.url)
            try:
                async with engine.begin() as conn:
                    result = await conn.execute(text(sql), params)
                    return [tuple(row) for row in result.all()] if result.returns_rows else []
            finally:
                await engine.dispose()

        rows = asyncio.run(go())
        return [
            tuple(
                v.replace(tzinfo=None).isoformat(sep=" ")
                if isinstance(v, datetime)
                else bytes(v)
                if isinstance(v, memoryview)
                else json.dumps(v)
                if isinstance(v, list | dict)
                else v
                for v in row
            )
            for row in rows
        ]

    def queue(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.ok("queue", "--json", *args).json()
        return rows

    def show(self, ticket: int) -> dict[str, Any]:
        detail: dict[str, Any] = self.ok("show", str(ticket), "--json").json()
        return detail


def _backend_url(request: pytest.FixtureRequest) -> str | None:
    """MAILD_TEST_DB=postgres runs the store tests on a fresh PostgreSQL database."""
    if os.environ.get("MAILD_TEST_DB") == "postgres":
        return str(request.getfixturevalue("postgres").new_database())
    return None


Factory = Callable[..., Instance]


@pytest.fixture
def instance(tmp_path: Path, request: pytest.FixtureRequest) -> Instance:
    return Instance(tmp_path, url=_backend_url(request))


@pytest.fixture
def new_instance(tmp_path: Path, request: pytest.FixtureRequest) -> Factory:
    """Make more instances (own folder each) on the backend under test."""
    counter = iter(range(1, 1000))

    def make(**kwargs: Any) -> Instance:
        root = tmp_path / f"instance-{next(counter)}"
        root.mkdir()
        return Instance(root, url=_backend_url(request), **kwargs)

    return make


def make_mail(
    *,
    frm: str = "Rosa Rep <rep@pangeo.example>",
    to: str = "support@example.org",
    cc: str | None = None,
    subject: str = "Hub is down",
    body: str = "Hello,\n\nthe hub returns 502 since this morning.\n\nRosa\n",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    date: str = "Wed, 25 Nov 2026 15:00:00 +0000",
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A plain mail built with the stdlib, for tests that need a variant of a fixture."""
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = date
    if message_id is not None:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg


__all__ = [
    "MAILS",
    "Factory",
    "Instance",
    "Result",
    "corpus_dir",
    "format_datetime",
    "make_mail",
    "require_corpus",
]
