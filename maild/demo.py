"""``maild demo``: a self-contained local instance for a first look.

No mail server and no config needed: the demo writes a config into a local
folder, stores tickets in SQLite there, listens for mail on localhost as the
support address (plain SMTP, so ``swaks`` or Python's smtplib can send to it)
and delivers everything maild sends into a local Maildir instead of the
internet. ``--scenario`` plays a short conversation through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import signal
import smtplib
import socket
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP
from sqlalchemy import update

from maild.config import Config, load_config
from maild.store.models import Outbox

__all__ = ["run_demo"]

SUPPORT = "support@demo.localhost"
REP = "rep@community.example"

CONFIG = """\
# Written by `maild demo`. Every key is explained in config.example.toml.
[support]
address = "{support}"
name = "Demo Support"
tag = "support"

[lmtp]                       # the support address: plain SMTP on localhost
listen = "127.0.0.1:{inbound}"
protocol = "smtp"

[smtp]                       # outgoing mail goes to the demo's local Maildir
host = "127.0.0.1"
port = {outbound}
security = "none"

[database]
url = "sqlite+aiosqlite:///{db}"

[commands]
# a demo lab: the demo's steward mail carries no DKIM signature
require_authenticated = false

[hours]
timezone = "UTC"
days = ["mon", "tue", "wed", "thu", "fri"]
ranges = ["09:00-17:00"]

[[stewards]]
name = "alice"
display_name = "Alice (demo steward)"
addresses = ["alice@demo.localhost"]

[[stewards]]
name = "bob"
display_name = "Bob (demo steward)"
addresses = ["bob@demo.localhost"]

[roster]
order = ["alice", "bob"]
start = "2026-01-05"

[[communities]]
name = "example"
representatives = ["{rep}"]
domains = ["community.example"]
budget_hours_per_month = 10
"""


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class _MaildirSink:
    """aiosmtpd handler: every outgoing mail lands in a Maildir."""

    def __init__(self, path: Path, on_mail: Callable[[bytes], None] | None = None) -> None:
        self.box = mailbox.Maildir(str(path), create=True)
        self.on_mail = on_mail

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self.box.add(bytes(raw))
        if self.on_mail is not None:
            self.on_mail(bytes(raw))
        return "250 2.0.0 Delivered to the demo Maildir"


def prepare_dir(root: Path) -> Path:
    """Write the demo config (fresh ports each start); returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    inbound, outbound = _free_ports(2)
    path = root / "maild.toml"
    path.write_text(
        CONFIG.format(
            support=SUPPORT, inbound=inbound, outbound=outbound, db=root / "maild.db", rep=REP
        )
    )
    return path


def _send(config: Config, frm: str, subject: str, body: str, **headers: str) -> str:
    lmtp = config.lmtp
    assert lmtp is not None  # noqa: S101 - the demo config always has it
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = frm, SUPPORT, subject
    msg["Message-ID"] = f"<demo-{datetime.now(UTC).timestamp()}@{frm.split('@')[1]}>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    with smtplib.SMTP(lmtp.host, lmtp.port, timeout=10) as client:
        client.send_message(msg)
    return str(msg["Message-ID"])


def instructions(config_path: Path, config: Config) -> str:
    lmtp = config.lmtp
    assert lmtp is not None  # noqa: S101 - the demo config always has it
    c = str(config_path)
    return textwrap.dedent(
        f"""
        maild demo is running. Config and store: {config_path.parent}
        Mail maild sends is delivered to the Maildir {config_path.parent / "outgoing"}

        Send a request as a community representative:
          python3 -c "import smtplib; smtplib.SMTP('{lmtp.host}', {lmtp.port}).sendmail('{REP}', \\
            ['{SUPPORT}'], 'From: {REP}\\nSubject: Hub is down\\n\\nIt returns 502.')"
        or with swaks:
          swaks --server {lmtp.host}:{lmtp.port} --from {REP} --to {SUPPORT} \\
            --header 'Subject: Hub is down' --body 'It returns 502.'

        Reply as steward alice, with tags in the subject:
          swaks --server {lmtp.host}:{lmtp.port} --from alice@demo.localhost --to {SUPPORT} \\
            --header 'Subject: Re: [support #1] Hub is down [incident] [ic=me]' \\
            --body 'We are on it.'

        Watch the queue and a ticket in another terminal:
          maild --config {c} queue
          maild --config {c} show 1

        Ctrl-C stops the demo.
        """
    ).strip()


async def _scenario(config_path: Path, out: Callable[[str], None]) -> None:
    """Play request -> ack -> steward [incident] -> update -> resolution -> confirmation."""
    from maild.daemon import Daemon
    from maild.pipeline import Pipeline
    from maild.scheduler import Scheduler

    config = load_config(config_path)
    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    sink = _MaildirSink(config_path.parent / "outgoing", arrived.put_nowait)
    assert config.smtp is not None  # noqa: S101 - the demo config always has it
    server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", config.smtp.port)
    daemon = Daemon(config, config_path)
    runner = asyncio.create_task(daemon.run())

    async def expect(template_hint: str) -> EmailMessage:
        raw = await asyncio.wait_for(arrived.get(), 20)
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(msg, EmailMessage)  # noqa: S101
        to = ", ".join(a.addr_spec for a in msg["To"].addresses)
        out(f"  <- maild sent to {to}: {msg['Subject']}  ({template_hint})")
        return msg

    async def wait_ready() -> None:
        lmtp = config.lmtp
        assert lmtp is not None  # noqa: S101
        for _ in range(200):
            with contextlib.suppress(OSError):
                socket.create_connection((lmtp.host, lmtp.port), timeout=0.2).close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the demo listener did not come up")

    try:
        await wait_ready()
        out("1. A community representative reports a problem.")
        request = await asyncio.to_thread(
            _send, config, REP, "Hub is down", "Hello, the hub returns 502 since this morning."
        )
        msgs = [await expect("ack or steward notification") for _ in range(2)]
        steward_copy = next(m for m in msgs if "alice@demo.localhost" in str(m["To"]))
        out("2. Steward alice replies from her mail client and declares an incident.")
        await asyncio.to_thread(
            _send,
            config,
            "alice@demo.localhost",
            "Re: [support #1] Hub is down [incident] [ic=me] [priority=high]",
            "We are on it: the proxy ran out of memory.",
            In_Reply_To=str(steward_copy["Message-ID"]),
        )
        await expect("relay of alice's reply")
        out("3. Three quiet hours later the scheduler sends an incident update.")
        scheduler = Scheduler(config, daemon.sessions, Pipeline(config, daemon.sessions))
        await scheduler.run_pass(datetime.now(UTC) + timedelta(hours=3, minutes=1))
        async with daemon.sessions() as session, session.begin():
            # the rehearsed pass queued its mail for its own "now": send it at once
            await session.execute(
                update(Outbox)
                .where(Outbox.status == "queued")
                .values(next_attempt_at=datetime.now(UTC))
            )
        if daemon.sender is not None:
            daemon.sender.wake()
        await expect("incident_update")
        out("4. Alice resolves it.")
        await asyncio.to_thread(
            _send,
            config,
            "alice@demo.localhost",
            "Re: [support #1] Hub is down [resolved] [time=45m]",
            "Fixed: we gave the proxy more memory and restarted it.",
        )
        await expect("incident_resolved")
        out("5. The representative confirms; the ticket closes.")
        await asyncio.to_thread(
            _send,
            config,
            REP,
            "Re: [support #1] Hub is down",
            "Thanks, that works now!",
            In_Reply_To=request,
        )
        for _ in range(2):
            await expect("closed, and the stewards' copy of the thanks")
        out(f"Done. See it all: maild --config {config_path} show 1")
    finally:
        daemon.stop.set()
        await asyncio.wait_for(runner, 30)
        server.close()
        await server.wait_closed()


async def _interactive(config_path: Path, out: Callable[[str], None]) -> None:
    from maild.daemon import Daemon

    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    sink = _MaildirSink(config_path.parent / "outgoing")
    assert config.smtp is not None  # noqa: S101 - the demo config always has it
    server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", config.smtp.port)
    out(instructions(config_path, config))
    try:
        await Daemon(config, config_path).run()
    finally:
        server.close()
        await server.wait_closed()


def run_demo(root: Path, scenario: bool, out: Callable[[str], None] = print) -> int:
    """Entry point for ``maild demo``; returns the exit status."""
    config_path = prepare_dir(root)

    async def main() -> None:
        if scenario:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None  # noqa: S101
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            await _scenario(config_path, out)
        else:
            await _interactive(config_path, out)

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        out("demo stopped")
    return 0
