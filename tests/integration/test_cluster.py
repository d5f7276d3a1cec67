"""Three daemons, one PostgreSQL, one mailbox: the leader is killed and frozen while mail flows.

What must hold: every mail on exactly one ticket, every expected mail at the
SMTP sink (once: a SIGKILL between the server's "250" and our commit is the
one window SMTP leaves, so duplicates are bounded by the number of kills),
nothing left on the server, and a new leader within the lease time.
"""

from __future__ import annotations

import email
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from email import policy
from pathlib import Path
from typing import Any

from tests.conftest import CONFIG_TEMPLATE, Instance, make_mail
from tests.integration.dovecot import Dovecot
from tests.integration.postgres import Postgres
from tests.integration.smtp_sink import ThreadedSink

LEASE = 3.0
MAILS = 36


class Cluster:
    def __init__(self, root: Path, url: str, dovecot: Dovecot, user: str, sink: ThreadedSink):
        self.root = root
        self.url = url
        self.config = root / "maild.toml"
        text = CONFIG_TEMPLATE.format(db=root / "unused.db", ack_rate=5).replace(
            f'url = "sqlite+aiosqlite:///{root / "unused.db"}"',
            f'url = "{url}"\nleader_lease = "{int(LEASE)}s"',
        )
        text += f"""
[mailbox]
host = "127.0.0.1"
port = {dovecot.imap_port}
security = "none"
username = "{user}"
password = "{dovecot.password}"
poll_interval = "2s"

[smtp]
host = "127.0.0.1"
port = {sink.port}
security = "none"
"""
        self.config.write_text(text)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        self.stops = 0
        self.failovers: list[float] = []

    def start(self) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        with (self.root / f"daemon-{n}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "maild", "-v", "--config", str(self.config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        probe = Instance.__new__(Instance)
        probe.url = self.url
        return probe.sql(query, *args)

    def leader(self) -> tuple[str, int] | None:
        rows = self.sql("select holder, expires_at from leases where role = 'leader'")
        if not rows:
            return None
        holder = rows[0][0]
        pid = int(holder.split(":")[1])
        return holder, pid

    def wait_leader(self, not_holder: str | None, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            found = self.leader()
            if found is not None and found[0] != not_holder:
                live = [p for p in self.procs if p.pid == found[1] and p.poll() is None]
                if live:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"no new leader within {timeout}s (was {not_holder})")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_daemons_survive_a_killed_and_a_frozen_leader(
    tmp_path: Path, postgres: Postgres, dovecot: Dovecot, imap_user: str
) -> None:
    rng = random.Random(20261125)
    with ThreadedSink() as sink:
        cluster = Cluster(tmp_path, postgres.new_database(), dovecot, imap_user, sink)
        upgrade = subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(cluster.config), "db", "upgrade"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert upgrade.returncode == 0, upgrade.stderr
        try:
            for _ in range(3):
                cluster.start()
            cluster.wait_leader(None, timeout=30)
            sent_ids = []
            for i in range(MAILS):
                mid = f"<flow-{i}@pangeo{i % 7}.example>"
                sent_ids.append(mid.strip("<>"))
                mail = make_mail(
                    frm=f"Rep {i} <rep{i}@pangeo.example>",
                    subject=f"Request {i}",
                    message_id=mid,
                )
                dovecot.deliver(imap_user, mail.as_bytes())
                if i % 9 == 4:
                    holder, pid = cluster.leader() or ("", 0)
                    victim = next(p for p in cluster.procs if p.pid == pid)
                    if cluster.kills <= cluster.stops:
                        victim.kill()
                        victim.wait()
                        cluster.kills += 1
                        cluster.failovers.append(cluster.wait_leader(holder, LEASE * 3))
                        cluster.start()
                    else:
                        os.kill(pid, signal.SIGSTOP)
                        cluster.stops += 1
                        cluster.failovers.append(cluster.wait_leader(holder, LEASE * 3))
                        time.sleep(rng.uniform(0.5, 2.0))
                        os.kill(pid, signal.SIGCONT)
                time.sleep(rng.uniform(0.05, 0.3))

            def settled() -> bool:
                tickets = cluster.sql("select count(*) from tickets")[0][0]
                queued = cluster.sql("select count(*) from outbox where status = 'queued'")[0][0]
                return tickets == MAILS and queued == 0 and dovecot.count(imap_user) == 0

            wait_until(settled, 120, "all mail ingested and sent")
        finally:
            cluster.stop_all()

        print(f"kills={cluster.kills} stops={cluster.stops} failovers={cluster.failovers}")
        assert cluster.kills >= 2 and cluster.stops >= 1
        # a new leader within the lease (plus one renewal step and our polling)
        assert max(cluster.failovers) < LEASE * 2, cluster.failovers

        stored = Counter(
            r[0] for r in cluster.sql("select message_id from messages where direction = 'in'")
        )
        assert sorted(stored) == sorted(sent_ids)
        assert set(stored.values()) == {1}, "a mail was stored twice"
        assert dovecot.count(imap_user, "Processed") == MAILS

        outbound = {
            r[0]: r[1]
            for r in cluster.sql(
                "select m.message_id, o.status from outbox o join messages m on m.id = o.message_pk"
            )
        }
        assert len(outbound) == 2 * MAILS  # an ack and a steward copy per request
        assert set(outbound.values()) == {"sent"}
        at_sink = Counter(
            str(email.message_from_bytes(r.content, policy=policy.default)["Message-ID"]).strip(
                "<>"
            )
            for r in sink.received
        )
        assert set(outbound) <= set(at_sink), "an expected mail never reached the sink"
        duplicates = sum(n - 1 for n in at_sink.values())
        assert duplicates <= cluster.kills, at_sink.most_common(3)
        assert "Traceback" not in cluster.logs()
