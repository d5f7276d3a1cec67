"""``maild run`` as a real subprocess, for tests that kill, restart and watch it.

:class:`MaildProcess` owns a temp dir with a config (``tests.conftest.CONFIG_TEMPLATE``
plus the sections a test needs), the SQLite store and the daemon's log. It
starts ``python -m maild run`` with a NOTIFY_SOCKET (:class:`Notify`) like
systemd's, can SIGKILL it and start it again on the same store, runs the real
CLI as a subprocess, and reads the store with :mod:`sqlite3` for assertions.
"""

from __future__ import annotations

import email
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from email.policy import compat32
from pathlib import Path
from typing import Any

from tests.conftest import CONFIG_TEMPLATE, REPO

__all__ = ["MaildProcess", "Notify", "maild_env", "message_id_of", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "it") -> None:
    """Poll ``predicate`` every 50 ms until it is truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def message_id_of(raw: bytes) -> str:
    """The Message-ID of a raw mail without angle brackets, the way maild stores it."""
    value = email.message_from_bytes(raw, policy=compat32).get("Message-ID", "")
    return str(value).strip().strip("<>")


class Notify:
    """A NOTIFY_SOCKET like systemd's: collects what the daemon reports.

    A thread reads it all the time, as systemd does: the daemon's sd_notify
    send blocks once about ten datagrams wait unread, and with it the daemon.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ntf-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.05)
        self.lines: list[str] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(data.decode().splitlines())

    def wait(self, prefix: str, timeout: float = 30.0, after: int = 0) -> str:
        """The first line starting with ``prefix`` (from index ``after`` on)."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[after:]:
                if line.startswith(prefix):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {prefix!r} from the daemon; got {self.lines[after:]}")
            time.sleep(0.02)

    def close(self) -> None:
        self._closing.set()
        self._reader.join(timeout=5)
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


def maild_env(**extra: str) -> dict[str, str]:
    """This environment, with the checkout importable whatever the working directory."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class MaildProcess:
    """One maild instance (config, store, log) and the daemon process running on it."""

    def __init__(self, root: Path, *, ack_rate: int = 5) -> None:
        self.root = root
        self.db = root / "maild.db"
        self.config = root / "maild.toml"
        self.log = root / "daemon.log"
        self.ack_rate = ack_rate
        self.notify = Notify()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.configure()

    # -- config ----------------------------------------------------------------

    def configure(
        self,
        *,
        imap: tuple[Any, str] | None = None,
        smtp_port: int | None = None,
        lmtp: str | None = None,
        lmtp_protocol: str = "lmtp",
        leader_lease: str | None = None,
        extra: str = "",
    ) -> None:
        """Write the config: ``imap`` is (Dovecot, user); ``lmtp`` a ``host:port``."""
        text = CONFIG_TEMPLATE.format(db=self.db, ack_rate=self.ack_rate)
        if leader_lease is not None:
            text = text.replace("[database]\n", f'[database]\nleader_lease = "{leader_lease}"\n', 1)
            assert "leader_lease" in text, "CONFIG_TEMPLATE has no [database] table"
        if imap is not None:
            dovecot, user = imap
            text += f"""
[mailbox]
host = "{dovecot.host}"
port = {dovecot.imap_port}
security = "none"
username = "{user}"
password = "{dovecot.password}"
poll_interval = "5s"
"""
        if smtp_port is not None:
            text += f"""
[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
"""
        if lmtp is not None:
            text += f'\n[lmtp]\nlisten = "{lmtp}"\nprotocol = "{lmtp_protocol}"\n'
        self.config.write_text(text + extra)

    # -- the process -----------------------------------------------------------

    def start(self) -> None:
        """Start ``maild run``; its stderr is appended to :attr:`log`."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = maild_env(
            NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC="2000000", WATCHDOG_PID=""
        )
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"=== start {self.starts} ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "maild", "--config", str(self.config), "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=self.root,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL and reap: no cleanup of any kind runs in the daemon."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.notify.close()

    def logtext(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def this_run(self) -> str:
        """The log of the latest start only."""
        return self.logtext().rpartition(f"=== start {self.starts} ===")[2]

    # -- the store and the CLI ----------------------------------------------------

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -m maild --config … ARGS`` as a subprocess."""
        result = subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
            env=maild_env(),
        )
        if check:
            assert result.returncode == 0, f"maild {' '.join(args)}: {result.stderr}"
        return result

    def sql(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of one query on the store; [] while the store has no such table yet."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            return conn.execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def count(self, query: str, *params: object) -> int:
        rows = self.sql(query, *params)
        return int(rows[0][0]) if rows else 0


def children(pid: int) -> set[int]:
    """The processes ``pid`` started and that still run."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except FileNotFoundError:
            continue
    return found


def spawned(pid: int) -> bool:
    """A process that multiprocessing's spawn started to run a target."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def gone(pid: int) -> bool:
    """No such process any more (a zombie waiting for its parent counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status
