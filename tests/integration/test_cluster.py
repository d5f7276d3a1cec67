"""Three daemons, one PostgreSQL, one mailbox: the leader is killed and frozen while mail flows.

What must hold: every mail on exactly one ticket, every expected mail at the
SMTP sink (once: a SIGKILL between the server's "250" and our commit is the
one window SMTP leaves, so duplicates are bounded by the number of kills),
nothing left on the server, and a new leader within the lease time.

A leader frozen (SIGSTOP) in the middle of a wave must not stall the others:
the server ends its open transaction, another instance takes the lease and
tickets and acknowledges the rest of the wave while it stays frozen, and once
resumed it commits nothing of the role it lost. A sender frozen while holding
a claimed outbox row loses the row to another instance after its claim.
"""

from __future__ import annotations

import email
import json
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

    def log_of(self, pid: int) -> Path:
        n = next(i for i, p in enumerate(self.procs) if p.pid == pid)
        return self.root / f"daemon-{n}.log"

    def upgrade(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(self.config), "db", "upgrade"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr

    def status(self) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(self.config), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        data: dict[str, Any] = json.loads(result.stdout)
        return data

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


def wait_until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds it took for ``predicate`` to hold; AssertionError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def freeze(pid: int) -> None:
    """SIGSTOP, and wait until the kernel has actually stopped the process."""
    os.kill(pid, signal.SIGSTOP)
    stat = Path(f"/proc/{pid}/stat")
    wait_until(lambda: stat.read_text().rpartition(")")[2].split()[0] == "T", 5, "SIGSTOP")


def frozen(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"


def cluster_pid(cluster: Cluster, pid: int) -> int:
    """The daemon of the cluster that is ``pid`` or started it (its sender process)."""
    daemons = {p.pid for p in cluster.procs}
    if pid in daemons:
        return pid
    parent = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    assert parent in daemons, f"{pid} is no daemon of the cluster nor started by one"
    return parent


def senders(cluster: Cluster) -> set[str]:
    """The daemon logs that record a mail sent."""
    return {p.name for p in cluster.root.glob("daemon-*.log") if " sent to " in p.read_text()}


def test_three_daemons_survive_a_killed_and_a_frozen_leader(
    tmp_path: Path, postgres: Postgres, dovecot: Dovecot, imap_user: str
) -> None:
    rng = random.Random(20261125)
    with ThreadedSink() as sink:
        cluster = Cluster(tmp_path, postgres.new_database(), dovecot, imap_user, sink)
        cluster.upgrade()
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
        # every instance sends: NOTIFY wakes them all, not only the one that ingested
        assert len(senders(cluster)) >= 2, senders(cluster)
        assert "Traceback" not in cluster.logs()


WAVE = 15


def test_a_leader_frozen_mid_wave_is_replaced_and_commits_nothing_when_resumed(
    tmp_path: Path, postgres: Postgres, dovecot: Dovecot, imap_user: str
) -> None:
    with ThreadedSink() as sink:
        cluster = Cluster(tmp_path, postgres.new_database(), dovecot, imap_user, sink)
        cluster.upgrade()
        try:
            for _ in range(3):
                cluster.start()
            cluster.wait_leader(None, timeout=30)
            holder, pid = cluster.leader() or ("", 0)
            mails = [
                make_mail(
                    frm=f"Rep {i} <rep{i}@pangeo.example>",
                    subject=f"Wave {i}",
                    message_id=f"<wave-{i}@pangeo.example>",
                ).as_bytes()
                for i in range(WAVE)
            ]
            dovecot.deliver_many(imap_user, mails)

            def tickets() -> int:
                return int(cluster.sql("select count(*) from tickets")[0][0])

            wait_until(lambda: tickets() >= 3, 30, "the wave to start")
            freeze(pid)  # busy: most likely inside a mail's transaction
            frozen_at = time.monotonic()
            committed_before = int(cluster.sql("select coalesce(max(id), 0) from tickets")[0][0])
            old_log = cluster.log_of(pid)
            offset = old_log.stat().st_size
            assert committed_before < WAVE, "the wave was over before the freeze"

            def acknowledged() -> bool:
                acks = cluster.sql(
                    "select count(*) from outbox where template = 'ack' and status = 'sent'"
                )[0][0]
                return tickets() == WAVE and acks == WAVE and dovecot.count(imap_user) == 0

            took = wait_until(acknowledged, LEASE + 15, "the rest of the wave, leader frozen")
            assert frozen(pid), "the old leader must stay frozen throughout"
            new_holder, new_pid = cluster.leader() or ("", 0)
            assert new_pid != pid
            print(f"wave done {took:.1f}s after the freeze (lease {LEASE}s)")

            os.kill(pid, signal.SIGCONT)
            # it notices the lost lease within one renewal step; give it a few
            wait_until(
                lambda: "lost the leader lease" in old_log.read_text()[offset:],
                LEASE * 3,
                "the resumed leader to step down",
            )
            time.sleep(LEASE)
            assert cluster.procs[[p.pid for p in cluster.procs].index(pid)].poll() is None
            after = old_log.read_text(errors="replace")[offset:]
            late = [
                int(line.split("ticket=#")[1].split()[0])
                for line in after.splitlines()
                if " maild.service.pipeline: " in line and "ticket=#" in line
            ]
            # a line written after SIGCONT may report a commit made before the freeze;
            # anything committed later would carry a ticket number above those
            assert all(n <= committed_before for n in late), (late, committed_before, after)
            assert "quarantined" not in after
            status = cluster.status()
            roles = {i["pid"]: i["role"] for i in status["instances"]}
            assert roles.get(new_pid) == "leader" and roles.get(pid) != "leader", roles
            assert status["leader"]["holder"] == new_holder
            assert time.monotonic() - frozen_at < 60
        finally:
            cluster.stop_all()

        stored = Counter(
            r[0] for r in cluster.sql("select message_id from messages where direction = 'in'")
        )
        assert len(stored) == WAVE and set(stored.values()) == {1}
        assert cluster.sql("select count(*) from quarantine")[0][0] == 0
        at_sink = Counter(
            str(email.message_from_bytes(r.content, policy=policy.default)["In-Reply-To"])
            for r in sink.received
            if r.rcpt_tos[0].startswith("rep")
        )
        assert len(at_sink) == WAVE, "every requester got an acknowledgment"
        # one mail may have been in flight at the freeze: sent again after its claim
        assert sum(n - 1 for n in at_sink.values()) <= 1, at_sink.most_common(3)
        assert "Traceback" not in cluster.logs()


def test_a_sender_frozen_on_a_claimed_row_loses_it_to_another_instance(
    tmp_path: Path, postgres: Postgres, dovecot: Dovecot, imap_user: str
) -> None:
    with ThreadedSink() as sink:
        cluster = Cluster(tmp_path, postgres.new_database(), dovecot, imap_user, sink)
        cluster.upgrade()
        try:
            for _ in range(3):
                cluster.start()
            cluster.wait_leader(None, timeout=30)
            sink.set_mode("hang")  # whoever claims a row waits for the sink's answer
            mail = make_mail(frm="Rosa <rep@pangeo.example>", message_id="<claim@pangeo.example>")
            dovecot.deliver(imap_user, mail.as_bytes())

            claimed: list[tuple[Any, ...]] = []

            def claimers_in_data() -> bool:
                # frozen before DATA, a sender would send it after SIGCONT: a duplicate
                # SMTP allows, but not the case this test is about
                claimed[:] = cluster.sql(
                    "select id, claimed_by from outbox where status = 'queued' "
                    "and claimed_by is not null order by id"
                )
                return bool(claimed) and sink.handler.hanging >= len(claimed)

            wait_until(claimers_in_data, 30, "a sender to claim a row and send it")
            row_id, claimer = claimed[0]
            pid = int(claimer.split(":")[1])  # the sending process: a daemon's sender process
            daemon = cluster_pid(cluster, pid)
            freeze(pid)
            frozen_at = time.monotonic()
            offset = cluster.log_of(daemon).stat().st_size
            sink.set_mode("accept")

            def sent_by_another() -> bool:
                rows = cluster.sql("select status, claimed_by from outbox where id = ?", row_id)
                return rows[0] == ("sent", None)

            took = wait_until(sent_by_another, LEASE + 15, "another instance to send the row")
            assert frozen(pid)
            print(f"claimed row sent {took:.1f}s after its sender froze (lease {LEASE}s)")

            os.kill(pid, signal.SIGCONT)
            wait_until(
                lambda: (
                    "another instance took it over" in cluster.log_of(daemon).read_text()[offset:]
                ),
                LEASE * 3,
                "the resumed sender to notice",
            )
            assert cluster.sql("select status from outbox where id = ?", row_id) == [("sent",)]
            assert time.monotonic() - frozen_at < 60

            # mail the CLI queues wakes the daemons' senders through NOTIFY
            before = len(sink.received)
            queued = time.monotonic()
            resolve = subprocess.run(
                [sys.executable, "-m", "maild", "--config", str(cluster.config), "resolve", "1"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert resolve.returncode == 0, resolve.stderr
            took = wait_until(lambda: len(sink.received) > before, 5, "the CLI's mail at the sink")
            print(f"CLI-queued mail at the sink {time.monotonic() - queued:.1f}s after `resolve`")
            assert took < 3
        finally:
            cluster.stop_all()
        raw = cluster.sql("select raw from outbox where id = ?", row_id)[0][0]
        mid = email.message_from_bytes(raw, policy=policy.default)["Message-ID"]
        copies = [
            r
            for r in sink.received
            if email.message_from_bytes(r.content, policy=policy.default)["Message-ID"] == mid
        ]
        assert len(copies) == 1, "the frozen sender's DATA was never answered with 250"
        assert "Traceback" not in cluster.logs()
