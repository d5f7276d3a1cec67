"""Several instances as an operator sees them: who is alive, who leads, who sends.

- ``maild status`` calls an instance gone once three of its heartbeats are
  missing, and names as leader the lease's holder now, whatever the last
  heartbeat said.
- Mail queued by the CLI (``maild ingest``, ``maild resolve``) is sent by a
  running daemon within a couple of seconds, not at its next minute poll.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from maild.store.db import make_engine, make_sessionmaker
from maild.store.models import Lease, State
from tests.conftest import Instance, make_mail
from tests.integration.daemon_proc import MaildProcess, wait_until
from tests.integration.smtp_sink import ThreadedSink

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def beat(instance: str, at: datetime, *, says_leader: bool, every: float = 3.0) -> State:
    host, pid, _ = instance.split(":")
    value = {
        "instance": instance,
        "pid": int(pid),
        "host": host,
        "started_at": (NOW - timedelta(hours=1)).isoformat(),
        "leader": says_leader,
        "tasks": ["leader", "outbox"],
        "every": every,
    }
    return State(key=f"heartbeat:{instance}", value=json.dumps(value), at=at)


def test_status_shows_silent_instances_as_gone_and_the_lease_holder_as_leader(
    instance: Instance,
) -> None:
    instance.ok("db", "upgrade")

    async def seed() -> None:
        engine = make_engine(instance.url)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                session.add_all(
                    [
                        # took the lease a moment ago; its last heartbeat predates that
                        beat("web1:101:aaaa", NOW - timedelta(seconds=2), says_leader=False),
                        # killed: led until it died 20 s ago, silent since
                        beat("web2:202:bbbb", NOW - timedelta(seconds=20), says_leader=True),
                        beat("web3:303:cccc", NOW - timedelta(seconds=8), says_leader=False),
                        Lease(
                            role="leader",
                            holder="web1:101:aaaa",
                            acquired_at=NOW - timedelta(seconds=1),
                            expires_at=NOW + timedelta(seconds=2),
                            epoch=4,
                        ),
                    ]
                )
        finally:
            await engine.dispose()

    asyncio.run(seed())
    data = instance.cli("status", "--json", "--now", NOW.isoformat()).json()
    roles = {i["instance"]: i["role"] for i in data["instances"]}
    assert roles == {
        "web1:101:aaaa": "leader",
        "web2:202:bbbb": "gone",  # three heartbeats (9 s) missed
        "web3:303:cccc": "standby",  # 8 s: not yet
    }
    assert data["leader"]["holder"] == "web1:101:aaaa"
    assert data["daemon"]["instance"] == "web1:101:aaaa"

    text = instance.cli("status", "--now", NOW.isoformat()).out
    assert "instance web2:202:bbbb (gone)" in text
    assert "instance web1:101:aaaa (leader)" in text

    # the lease runs out and nobody renews it: nobody leads, whatever was said
    later = (NOW + timedelta(seconds=5)).isoformat()
    data = instance.cli("status", "--json", "--now", later).json()
    assert data["leader"] is None
    assert {i["instance"]: i["role"] for i in data["instances"]} == {
        "web1:101:aaaa": "standby",
        "web2:202:bbbb": "gone",
        "web3:303:cccc": "gone",
    }


# Far below the sender's one-minute poll, with room for a CLI process on a busy
# machine (the whole measure includes `maild ingest` itself: 1-4 s under load).
WITHIN = 20


def test_a_running_daemon_sends_mail_the_cli_queued_within_seconds(tmp_path: Path) -> None:
    with ThreadedSink() as sink:
        maild = MaildProcess(tmp_path)
        try:
            maild.configure(smtp_port=sink.port)
            maild.start()
            maild.notify.wait("READY=1")
            time.sleep(1.5)  # the sender has made its first pass and sleeps for a minute

            mail = tmp_path / "request.eml"
            mail.write_bytes(make_mail(message_id="<cli-1@pangeo.example>").as_bytes())
            queued = time.monotonic()
            maild.cli("ingest", str(mail))  # an ack and a copy to the stewards
            sink.wait_for(2, timeout=WITHIN)
            took = time.monotonic() - queued
            assert took < WITHIN, f"the CLI's mail waited {took:.1f}s for the daemon"

            queued = time.monotonic()
            maild.cli("resolve", "1")  # the resolution notice to the requester
            sink.wait_for(3, timeout=WITHIN)
            took = time.monotonic() - queued
            assert took < WITHIN, f"the CLI's mail waited {took:.1f}s for the daemon"
            assert "rep@pangeo.example" in sink.received[-1].rcpt_tos
            assert maild.stop() == 0
        finally:
            maild.close()
        assert "Traceback" not in maild.logtext()


def test_a_restarted_daemon_is_not_wedged_by_what_a_hung_one_held(tmp_path: Path) -> None:
    """SQLite, one host: a daemon hangs mid-send and is killed; its successor carries on.

    The hung daemon had claimed an outbox row and held the leader lease: the
    restarted one takes the lease of a dead process at once, sends the row once
    the claim has run out, and sends new mail as before.
    """
    with ThreadedSink() as sink:
        maild = MaildProcess(tmp_path)
        try:
            maild.configure(smtp_port=sink.port, leader_lease="2s")
            sink.set_mode("hang")
            maild.start()
            maild.notify.wait("READY=1")
            mail = tmp_path / "request.eml"
            mail.write_bytes(make_mail(message_id="<hung-1@pangeo.example>").as_bytes())
            maild.cli("ingest", str(mail))
            deadline = time.monotonic() + 10
            while sink.handler.hanging == 0:
                assert time.monotonic() < deadline, "the daemon never reached DATA"
                time.sleep(0.05)
            assert maild.proc is not None
            maild.signal(signal.SIGSTOP)
            time.sleep(0.5)
            maild.kill()  # what systemd does to a service that stopped answering
            sink.set_mode("accept")

            restarted = time.monotonic()
            maild.start()
            maild.notify.wait("READY=1", after=len(maild.notify.lines))
            sink.wait_for(2, timeout=2 + 15)  # the ack and the stewards' copy
            took = time.monotonic() - restarted
            assert took < 2 + 15, took

            second = tmp_path / "second.eml"
            second.write_bytes(
                make_mail(message_id="<hung-2@pangeo.example>", subject="Other").as_bytes()
            )
            maild.cli("ingest", str(second))
            sink.wait_for(4, timeout=5)
            wait_until(
                lambda: maild.count("select count(*) from outbox where status = 'sent'") == 4,
                5,
                "all four recorded as sent",
            )
            assert maild.stop() == 0
        finally:
            maild.close()
        assert "Traceback" not in maild.logtext()
