"""``maild run`` as a real process: Dovecot in, aiosmtpd out, systemd's notify socket watching."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import CONFIG_TEMPLATE, make_mail
from tests.integration.dovecot import Dovecot
from tests.integration.smtp_sink import ThreadedSink


class Notify:
    """A NOTIFY_SOCKET like systemd's: collects what the daemon reports."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ntf-", dir="/tmp"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []

    def wait(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.lines.extend(data.decode().splitlines())
        raise AssertionError(f"no {prefix!r} from the daemon; got {self.lines}")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
        self.dir.rmdir()


class Running:
    def __init__(self, root: Path, dovecot: Dovecot, user: str, sink: ThreadedSink) -> None:
        self.root = root
        self.config = root / "maild.toml"
        self.config.write_text(self.render())
        self.dovecot, self.user, self.sink = dovecot, user, sink
        self.notify = Notify()
        self.log = root / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def render(self, extra: str = "") -> str:
        return CONFIG_TEMPLATE.format(db=self.root / "maild.db", ack_rate=5) + extra

    def write_config(
        self, dovecot: Dovecot, user: str, sink: ThreadedSink, extra: str = ""
    ) -> None:
        self.config.write_text(
            self.render(
                f"""
[mailbox]
host = "127.0.0.1"
port = {dovecot.imap_port}
security = "none"
username = "{user}"
password = "{dovecot.password}"
poll_interval = "5s"

[smtp]
host = "127.0.0.1"
port = {sink.port}
security = "none"
{extra}
"""
            )
        )

    def start(self) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), WATCHDOG_USEC="2000000")
        env["WATCHDOG_PID"] = ""
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "maild", "-v", "--config", str(self.config), "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def logtext(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def running(tmp_path: Path, dovecot: Dovecot, imap_user: str) -> Iterator[Running]:
    with ThreadedSink() as sink:
        run = Running(tmp_path, dovecot, imap_user, sink)
        run.write_config(dovecot, imap_user, sink)
        try:
            yield run
        finally:
            if run.proc is not None and run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
            run.notify.close()


def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_mail_end_to_end_with_reload_and_clean_stop(running: Running) -> None:
    running.start()
    ready = running.notify.wait("READY=1")
    assert ready
    status = running.notify.wait("STATUS=")
    assert "login ok" in status

    running.dovecot.deliver(running.user, make_mail(message_id="<d-1@pangeo.example>").as_bytes())
    sink = running.sink
    wait_until(lambda: len(sink.received) >= 2, what="ack and steward copy at the sink")
    by_rcpt = {tuple(r.rcpt_tos): r for r in sink.received}
    assert ("rep@pangeo.example",) in by_rcpt
    assert b"[support #1] Hub is down" in by_rcpt[("rep@pangeo.example",)].content
    assert any("bob@example.org" in r.rcpt_tos for r in sink.received)
    wait_until(lambda: running.dovecot.count(running.user, "INBOX") == 0, what="INBOX empty")
    assert running.dovecot.count(running.user, "Processed") == 1

    queue = running.cli("queue", "--json")
    assert queue.returncode == 0, queue.stderr
    assert '"subject": "Hub is down"' in queue.stdout
    running.notify.wait("WATCHDOG=1", timeout=5)
    healthy = running.cli("status", "--json")
    assert healthy.returncode == 0, healthy.stdout
    assert '"healthy": true' in healthy.stdout

    # a bad config on SIGHUP is refused and the old one keeps running
    good = running.config.read_text()
    running.config.write_text(good + "\n[mailbox2]\n")
    assert running.proc is not None
    running.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in running.logtext(), what="reload refused")
    running.config.write_text(good)
    running.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in running.logtext(), what="reload")

    running.dovecot.deliver(
        running.user, make_mail(message_id="<d-2@pangeo.example>", subject="Second").as_bytes()
    )
    wait_until(lambda: len(sink.received) >= 4, what="mail after reload")

    assert running.stop() == 0
    running.notify.wait("STOPPING=1", timeout=5)
    # ten minutes later nobody is beating the heart: monitoring hears about it
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    down = running.cli("status", "--now", later)
    assert down.returncode == 3
    assert "no daemon is running" in down.stdout
    assert "Traceback" not in running.logtext()


def test_old_schema_is_refused_with_the_fix(running: Running) -> None:
    import sqlite3

    assert running.cli("db", "upgrade").returncode == 0
    with sqlite3.connect(running.root / "maild.db") as conn:
        conn.execute("update alembic_version set version_num = '0000'")
    running.start()
    assert running.proc is not None
    status = running.proc.wait(timeout=30)
    assert status == 1
    assert "maild db upgrade" in running.logtext()


def test_bad_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[support]\naddress = "support@example.org"\n[mailbox]\nport = "abc"\n')
    result = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    assert "mailbox.port" in result.stderr
