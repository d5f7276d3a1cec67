"""A throwaway PostgreSQL cluster on loopback for the test session.

``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package, run as the
``postgres`` user when the tests run as root (PostgreSQL refuses root), on a
free port with its socket in the cluster's own folder. Each test gets a fresh
database from :meth:`Postgres.new_database`.

When PostgreSQL is not installed the fixture skips, or fails when
``MAILD_REQUIRE_SERVERS=1`` or ``CI`` is set: in CI a missing server is an error.
PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_counter = itertools.count(1)


def _bindir() -> Path | None:
    # Debian keeps the server tools out of PATH, per major version
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists() and (candidate / "psql").exists():
            return candidate
    found = shutil.which("pg_ctl")
    if found and shutil.which("psql"):
        return Path(found).parent
    return None


def require_postgres() -> Path:
    bindir = _bindir()
    if bindir is not None:
        return bindir
    message = "PostgreSQL is not installed: apt-get install postgresql"
    if os.environ.get("MAILD_REQUIRE_SERVERS") == "1" or os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """One cluster; :meth:`new_database` hands out empty databases."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "maild"
        self.password = "maild-test"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, input=input, timeout=120
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
            f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def psql(self, sql: str, database: str = "postgres") -> str:
        env_cmd = ["env", f"PGPASSWORD={self.password}"]
        return self._run(
            *env_cmd, str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
            "-U", self.user, "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql,
        )  # fmt: skip

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy async URL."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                 "-w", "stop"],
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = require_postgres()
    server = Postgres(bindir)
    try:
        server.start()
    except Exception:
        log = server.root / "log"
        detail = log.read_text() if log.exists() else ""
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start:\n{detail}") from None
    started = time.monotonic()
    try:
        yield server
    finally:
        server.stop()
        del started
