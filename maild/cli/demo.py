"""``maild demo``: a self-contained local instance for a first look.

No mail server and no config needed: the demo writes a config into a local
folder, stores tickets in SQLite there, listens for mail on localhost as the
support address (plain SMTP, so ``swaks`` or Python's smtplib can send to it)
and delivers everything maild sends into a local Maildir instead of the
internet. ``--scenario`` plays a short conversation through it, as many times
as you like, in a fresh folder or the same one. One demo runs per folder at a
time (a lock file says which process has it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mailbox
import os
import shlex
import signal
import smtplib
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select, update

from maild.cli.labconfig import Lab, LabCommunity, LabSteward, lab_config
from maild.config import Config, load_config
from maild.store.models import Message, Outbox, Ticket

__all__ = ["run_demo"]

SUPPORT = "support@demo.localhost"
REP = "rep@community.example"

# A lab of its own (the config's one source is maild.cli.labconfig); every key is
# explained in config.example.toml.
LAB = Lab(
    support=SUPPORT,
    support_name="Demo Support",
    timezone="UTC",
    ranges=("09:00-17:00",),
    stewards=(
        LabSteward("alice", ("alice@demo.localhost",), "Alice"),
        LabSteward("bob", ("bob@demo.localhost",), "Bob"),
    ),
    roster_start="2026-01-05",
    communities=(
        LabCommunity("example", ("community.example",), (REP,), budget_hours_per_month=10),
    ),
    header="# Written by `maild demo`. Every key is explained in config.example.toml.",
)
# the scenario may be replayed many times an hour: no rate limit on its acks
ACK_RATE = 1000

TABLES = """\
[lmtp]                       # the support address: plain SMTP on localhost
listen = "127.0.0.1:{inbound}"
protocol = "smtp"

[smtp]                       # outgoing mail goes to the demo's local Maildir
host = "127.0.0.1"
port = {outbound}
security = "none"

[incidents]
# the scenario shows the outline maild mails the incident commander on resolution
postmortem_mail = true
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
    lab = replace(LAB, tables=TABLES.format(inbound=inbound, outbound=outbound))
    path.write_text(lab_config(root / "maild.db", ack_rate=ACK_RATE, lab=lab))
    return path


# what each template is, as the demo's narration names it
LABELS = {
    "ack": "the acknowledgment to the requester",
    "steward_new": "the new-ticket notice to the stewards",
    "relay": "the steward's reply, relayed to the requester",
    "requester_reply": "the requester's reply, forwarded to the stewards",
    "incident_update": "the incident update to the requester",
    "incident_resolved": "the resolution notice to the requester",
    "closed": "the closing notice to the requester",
    "sla_reminder": "an SLA reminder to the stewards",
    "receipt": "a receipt to the steward",
    "command_error": "the list of bad tags to the steward",
    "handoff": "the roster handoff to the stewards",
    "postmortem": "the post-mortem outline to the incident commander",
    "confirm_command": "a request to confirm a held mail to the steward",
}


class DemoBusy(Exception):
    """Another demo is running in the folder."""


@contextlib.contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Hold ``root/demo.lock`` while a demo runs; :class:`DemoBusy` if another holds it."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "demo.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DemoBusy(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def maild_command() -> str:
    """The running ``maild`` as a command that works from any shell, venv activated or not."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "maild" and argv0.is_file():
        return shlex.quote(str(argv0.absolute()))
    return f"{shlex.quote(sys.executable)} -m maild"


def _py_string(text: str) -> str:
    """A double-quoted Python literal: reads well inside the shell's '…' around the code."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:  # newlines, controls, lone surrogates: Python's own escape
            out.append(repr(ch)[1:-1])
    return '"' + "".join(out) + '"'


def python_send(host: str, port: int, frm: str, subject: str, body: str) -> str:
    """A shell command that sends one mail with nothing but Python's standard library."""
    q = _py_string
    code = (
        "import smtplib; from email.message import EmailMessage; m = EmailMessage(); "
        f'm["From"], m["To"], m["Subject"] = {q(frm)}, {q(SUPPORT)}, {q(subject)}; '
        f"m.set_content({q(body)}); smtplib.SMTP({q(host)}, {port}).send_message(m)"
    )
    return f"python3 -c {shlex.quote(code)}"


def _send(config: Config, frm: str, subject: str, body: str, **headers: str) -> str:
    lmtp = config.lmtp
    assert lmtp is not None  # noqa: S101 - the demo config always has it
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = frm, SUPPORT, subject
    msg["Message-ID"] = make_msgid("demo", frm.split("@")[1])
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    with smtplib.SMTP(lmtp.host, lmtp.port, timeout=10) as client:
        client.send_message(msg)
    return str(msg["Message-ID"])


def instructions(config_path: Path, config: Config) -> str:
    lmtp = config.lmtp
    assert lmtp is not None  # noqa: S101 - the demo config always has it
    maild = f"{maild_command()} --config {shlex.quote(str(config_path))}"
    request = python_send(
        lmtp.host, lmtp.port, REP, "Hub is down", "Hello, the hub returns 502 since this morning."
    )
    return "\n".join(
        [
            f"maild demo is running. Config and store: {config_path.parent}",
            f"Mail maild sends is delivered to the Maildir {config_path.parent / 'outgoing'}",
            "",
            "Send a request as a community representative (from another terminal):",
            f"  {request}",
            "",
            "When maild opens the ticket this terminal shows its number and how to",
            "reply as steward alice, with tags in the subject.",
            "",
            "Watch the queue:",
            f"  {maild} queue",
            "",
            "Ctrl-C stops the demo.",
        ]
    )


def reply_instructions(config_path: Path, config: Config, ticket: int, subject: str) -> str:
    """How to answer ticket ``ticket`` as alice: printed when its notice goes out."""
    lmtp = config.lmtp
    assert lmtp is not None  # noqa: S101 - the demo config always has it
    maild = f"{maild_command()} --config {shlex.quote(str(config_path))}"
    reply = python_send(
        lmtp.host,
        lmtp.port,
        "alice@demo.localhost",
        f"Re: {subject} [incident] [ic=me]",
        "We are on it.",
    )
    return textwrap.indent(
        "\n".join(
            [
                f"Ticket #{ticket} is open. Reply as steward alice, declaring an incident:",
                f"  {reply}",
                "Then see the whole ticket:",
                f"  {maild} show {ticket}",
            ]
        ),
        "   ",
    )


async def _describe(sessions: Any, raw: bytes) -> tuple[EmailMessage, str | None, int | None]:
    """The sent mail, the template it came from and its ticket (from the store)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)  # noqa: S101
    mid = str(msg["Message-ID"] or "").strip().strip("<>")
    async with sessions() as session:
        template = await session.scalar(
            select(Message.template)
            .where(Message.message_id == mid, Message.direction == "out")
            .limit(1)
        )
    ticket = str(msg["X-Maild-Ticket"] or "")
    return msg, template, int(ticket) if ticket.isdigit() else None


def _sent_line(msg: EmailMessage, template: str | None) -> str:
    to = ", ".join(a.addr_spec for a in msg["To"].addresses)
    label = LABELS.get(template or "", template or "a mail")
    return f"  <- maild sent {label}, to {to}: {msg['Subject']}"


async def _outline(config: Config, sessions: Any, ticket: int) -> str:
    """The post-mortem outline of ``ticket``, as ``maild postmortem`` prints it."""
    from maild.mail.render import Renderer
    from maild.store.reports import postmortem, postmortem_context

    async with sessions() as session:
        data = await postmortem(session, config, ticket, datetime.now(UTC))
    if data is None:
        return ""
    return Renderer(config).render("postmortem", postmortem_context(config, data)).text


async def _top_ticket(sessions: Any) -> int:
    async with sessions() as session:
        top: int | None = await session.scalar(select(func.max(Ticket.id)))
        return top or 0


async def _scenario(config_path: Path, out: Callable[[str], None]) -> None:
    """Play request -> ack -> steward [incident] -> update -> resolution -> confirmation.

    Each step waits for the mails it causes, found by template and ticket number
    (the number this run's request got), so earlier runs in the folder do not matter.
    """
    from maild.service.daemon import Daemon
    from maild.service.pipeline import Pipeline
    from maild.service.scheduler import Scheduler
    from maild.store.db import prepare

    config = load_config(config_path)
    arrived: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    sink = _MaildirSink(config_path.parent / "outgoing", arrived.put_nowait)
    assert config.smtp is not None  # noqa: S101 - the demo config always has it
    server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", config.smtp.port)
    daemon = Daemon(config, config_path)
    await prepare(daemon.engine)
    before = await _top_ticket(daemon.sessions)
    runner = asyncio.create_task(daemon.run())

    async def expect(*templates: str, ticket: int | None) -> dict[str, EmailMessage]:
        """Wait for one mail of each template about ``ticket`` (None: this run's new one)."""
        got: dict[str, EmailMessage] = {}
        while not set(templates) <= got.keys():
            try:
                raw = await asyncio.wait_for(arrived.get(), 20)
            except TimeoutError:
                missing = ", ".join(sorted(set(templates) - got.keys()))
                raise RuntimeError(f"maild sent no {missing} within 20 s") from None
            msg, template, about = await _describe(daemon.sessions, raw)
            out(_sent_line(msg, template))
            mine = about == ticket if ticket is not None else (about or 0) > before
            if template in templates and mine:
                got[template] = msg
        return got

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
        steward_copy = (await expect("ack", "steward_new", ticket=None))["steward_new"]
        n = int(str(steward_copy["X-Maild-Ticket"]))
        tag = f"[{config.support.tag} #{n}]"
        out(
            f"2. Steward alice replies to ticket #{n} from her mail client: an incident, "
            "with the canned first answer [reply=incident_received] after her own words."
        )
        await asyncio.to_thread(
            _send,
            config,
            "alice@demo.localhost",
            f"Re: {tag} Hub is down [incident] [ic=me] [priority=high] [reply=incident_received]",
            "We are on it: the proxy ran out of memory.",
            In_Reply_To=str(steward_copy["Message-ID"]),
        )
        relay = (await expect("relay", ticket=n))["relay"]
        body = relay.get_body(preferencelist=("plain",))
        canned = str(body.get_content()) if body is not None else ""
        out("   The requester reads:")
        for line in canned.strip().splitlines()[:8]:
            out(f"   | {line}")
        out("3. Three quiet hours later the scheduler sends an incident update.")
        scheduler = Scheduler(config, daemon.sessions, Pipeline(config, daemon.sessions))
        await scheduler.run_pass(datetime.now(UTC) + timedelta(hours=3, minutes=1))
        async with daemon.sessions() as session, session.begin():
            # the rehearsed pass queued its mail for its own "now": send it at once
            await session.execute(
                update(Outbox)
                .where(Outbox.status == "queued", Outbox.ticket_id == n)
                .values(next_attempt_at=datetime.now(UTC))
            )
        if daemon.sender is not None:
            daemon.sender.wake()
        await expect("incident_update", ticket=n)
        out("4. Alice resolves it.")
        await asyncio.to_thread(
            _send,
            config,
            "alice@demo.localhost",
            f"Re: {tag} Hub is down [resolved] [time=45m]",
            "Fixed: we gave the proxy more memory and restarted it.",
        )
        await expect("incident_resolved", "postmortem", ticket=n)
        out("5. The representative confirms; the ticket closes.")
        await asyncio.to_thread(
            _send,
            config,
            REP,
            f"Re: {tag} Hub is down",
            "Thanks, that works now!",
            In_Reply_To=request,
        )
        await expect("closed", "requester_reply", ticket=n)
        out(f"6. The post-mortem outline for #{n}, as `maild postmortem {n}` prints it:")
        for line in (await _outline(config, daemon.sessions, n)).splitlines()[:60]:
            out(f"   | {line}")
        out(
            f"Done. See it all: {maild_command()} --config {shlex.quote(str(config_path))} show {n}"
        )
    finally:
        daemon.stop.set()
        await asyncio.wait_for(runner, 30)
        server.close()
        await server.wait_closed()


async def _interactive(config_path: Path, out: Callable[[str], None]) -> None:
    from maild.service.daemon import Daemon

    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    daemon = Daemon(config, config_path)
    told: set[int] = set()
    tasks: set[asyncio.Task[None]] = set()

    async def narrate(raw: bytes) -> None:
        msg, template, ticket = await _describe(daemon.sessions, raw)
        out(_sent_line(msg, template))
        if template == "steward_new" and ticket is not None and ticket not in told:
            told.add(ticket)
            subject = str(msg["Subject"])
            out(reply_instructions(config_path, config, ticket, subject))

    def on_mail(raw: bytes) -> None:
        task = loop.create_task(narrate(raw))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sink = _MaildirSink(config_path.parent / "outgoing", on_mail)
    assert config.smtp is not None  # noqa: S101 - the demo config always has it
    server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", config.smtp.port)
    out(instructions(config_path, config))
    try:
        await daemon.run()
    finally:
        server.close()
        await server.wait_closed()


def _say(text: str) -> None:
    print(text, flush=True)  # at once, also into a pipe (`maild demo | tee demo.log`)


def run_demo(root: Path, scenario: bool, out: Callable[[str], None] = _say) -> int:
    """Entry point for ``maild demo``; returns the exit status."""

    async def main(config_path: Path) -> None:
        if scenario:
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None  # noqa: S101
            loop.add_signal_handler(signal.SIGINT, task.cancel)
            await _scenario(config_path, out)
        else:
            await _interactive(config_path, out)

    try:
        with folder_lock(root):
            config_path = prepare_dir(root)
            asyncio.run(main(config_path))
    except DemoBusy as busy:
        print(
            f"Error: a maild demo is already running in {root} (process {busy}); "
            "use that one, stop it with Ctrl-C, or pick another folder with --dir",
            file=sys.stderr,
        )
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        out("demo stopped")
    return 0
