"""The command line as a newcomer meets it: help, version, pipes, times, rehearsals, wording."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.conftest import REPO, Instance, make_mail

CHICAGO = ZoneInfo("America/Chicago")  # the test config's hours.timezone
REQUEST_ID = "<req-1@pangeo.example>"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def ct(text: str) -> str:
    """A local Chicago time as ISO 8601 with its offset."""
    return datetime.fromisoformat(text).replace(tzinfo=CHICAGO).isoformat()


def maild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maild", *args], capture_output=True, text=True, env=ENV, timeout=60
    )


def test_version_and_bare_maild_print_and_succeed() -> None:
    version = maild("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("maild ")
    bare = maild()
    assert bare.returncode == 0, bare.stderr
    assert "usage: maild" in bare.stdout
    assert "queue" in bare.stdout and "demo" in bare.stdout


def test_a_reader_that_stops_early_ends_it_quietly(instance: Instance) -> None:
    for n in range(3):
        instance.ingest(make_mail(message_id=f"<m{n}@pangeo.example>", subject=f"Question {n}"))
    for args in (["outbox"], ["show", "1"], ["queue", "--all"], ["queue", "--json"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "maild", "--config", str(instance.config), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # like `| head` that is done before maild writes
        status = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert (status, err) == (0, ""), args
    head = subprocess.run(  # noqa: S602 - the README's own pipeline
        f"{sys.executable} -m maild --config {instance.config} queue --all | head -1",
        shell=True,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert head.stderr == "" and head.stdout.startswith("ID")


def test_show_lists_the_timeline_in_time_order_in_local_minutes(instance: Instance) -> None:
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-11-26T09:15"))
    instance.ok("tag", "1", "[incident] [ic=alice]", "--now", ct("2026-11-26T09:16"))
    instance.ok("tick", "--now", ct("2026-11-26T12:16"))  # the incident update, 3 h on
    # recorded after the update, but it happened before it
    instance.ok("note", "1", "called them", "--now", ct("2026-11-26T09:30"))
    text = instance.ok("show", "1").out
    stamps = [line[:16] for line in text.splitlines() if line[:4] == "2026"]
    assert stamps == sorted(stamps)
    assert "2026-11-26 09:15  <- rep@pangeo.example" in text
    assert "2026-11-26 09:30  note by" in text
    assert "12:16  -> rep@pangeo.example [incident_update" in "\n".join(text.splitlines()[-2:])
    assert "created 2026-11-26 09:15" in text and "America/Chicago" in text
    # JSON keeps ISO 8601 in UTC, in the same order
    timeline = instance.show(1)["timeline"]
    assert timeline[0]["at"].startswith("2026-11-26T15:15:00") and timeline[0]["at"].endswith(
        "+00:00"
    )
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    due = instance.ok("queue", "--now", ct("2026-11-26T12:20")).out
    # the incident's first response was due an hour after 09:15, local (UTC says 16:15)
    assert "first_response 2026-11-26 10:15" in due


def test_tick_dry_run_shows_the_pass_and_changes_nothing(instance: Instance) -> None:
    instance.ingest(make_mail(message_id=REQUEST_ID), "--now", ct("2026-11-25T09:00"))
    instance.ok("tag", "1", "[incident] [ic=alice]", "--now", ct("2026-11-25T09:05"))

    def state() -> object:
        return (
            instance.show(1),
            instance.sql("select id, template, status from outbox order by id"),
            instance.sql("select * from reminders"),
        )

    before = state()
    rehearsal = instance.ok("tick", "--dry-run", "--now", ct("2026-11-25T14:00"))
    assert state() == before
    assert "would do: #1 incident update" in rehearsal.out
    assert "would queue incident_update (#1) to rep@pangeo.example" in rehearsal.out
    assert "nothing was changed" in rehearsal.out
    data = instance.ok("tick", "--dry-run", "--json", "--now", ct("2026-11-25T14:00")).json()
    assert data["dry_run"] is True and data["sent"] == 2
    assert state() == before
    real = instance.ok("tick", "--now", ct("2026-11-25T14:00")).out
    assert "queued incident_update (#1) to rep@pangeo.example" in real
    assert "2 actions, 2 mails queued as of 2026-11-25 14:00 America/Chicago" in real
    assert state() != before


def test_each_verb_says_what_it_queued_and_to_whom(instance: Instance) -> None:
    instance.ingest(make_mail(message_id=REQUEST_ID))
    resolved = instance.ok("resolve", "1").out
    assert resolved.splitlines()[0] == "#1: status: new -> resolved"
    assert any("queued" in ln and "to rep@pangeo.example" in ln for ln in resolved.splitlines())
    silent = instance.ok("close", "1", "--silent").out
    assert "queued" not in silent
    assert instance.ok("note", "1", "called them").out.strip() == "#1: note added"


def test_wording_counts_and_the_roster_handover(instance: Instance) -> None:
    assert "(3 stewards, 2 communities)" in instance.ok("check-config").out
    roster = instance.ok("roster", "--at", "2026-11-27").out
    assert "bob rotates off, alice comes on" in roster
    assert "(then on duty: carol, alice)" in roster
    tick = instance.ok("tick", "--now", ct("2026-11-27T10:00")).out
    assert "1 action," in tick or "0 actions," in tick
    help_text = maild("queue", "--help").stdout
    assert "only tickets in this status" in help_text and "not yet triaged" in help_text


def _mbox(path: Path, count: int, domain: str = "pangeo.example") -> None:
    with path.open("wb") as fh:
        for n in range(count):
            mail = make_mail(
                frm=f"user{n}@{domain}",
                subject=f"Question {n}",
                message_id=f"<q{n}@{domain}>",
            )
            fh.write(b"From user@pangeo.example Wed Nov 25 15:00:00 2026\n")
            fh.write(mail.as_bytes().replace(b"\nFrom ", b"\n>From ") + b"\n")


def _queue_lines(out: str) -> tuple[list[str], list[str]]:
    """The ticket rows of ``maild queue``'s table, and the lines after them."""
    lines = out.splitlines()
    rows = [ln for ln in lines[1:] if ln.startswith("#")]
    return rows, lines[1 + len(rows) :]


def test_the_queue_table_shows_the_most_urgent_50_and_says_how_many_it_left_out(
    instance: Instance, tmp_path: Path
) -> None:
    _mbox(tmp_path / "pangeo.mbox", 50)
    _mbox(tmp_path / "jupyter.mbox", 10, domain="jupyter.example")
    instance.ok("ingest", str(tmp_path / "pangeo.mbox"), str(tmp_path / "jupyter.mbox"))
    everything = instance.queue()
    assert len(everything) == 60  # --json lists every ticket unless told

    rows, rest = _queue_lines(instance.ok("queue").out)
    assert len(rows) == 50
    # the head of the queue: the first 50 in the order --json gives
    assert [r.split()[0] for r in rows] == [f"#{t['id']}" for t in everything[:50]]
    assert rest == [
        "50 of 60 tickets shown, most urgent first; --limit N shows more, --limit 0 all"
    ]

    rows, rest = _queue_lines(instance.ok("queue", "--limit", "0").out)
    assert (len(rows), rest) == (60, [])
    rows, rest = _queue_lines(instance.ok("queue", "--limit", "60").out)
    assert (len(rows), rest) == (60, [])
    assert instance.queue("--limit", "5") == everything[:5]
    assert instance.queue("--limit", "0") == everything

    # filters choose the tickets first, the limit cuts what they chose
    rows, rest = _queue_lines(instance.ok("queue", "--community", "jupyter", "--limit", "4").out)
    assert len(rows) == 4 and all(" jupyter " in r for r in rows)
    assert rest == ["4 of 10 tickets shown, most urgent first; --limit N shows more, --limit 0 all"]
    jupyter = instance.queue("--community", "jupyter", "--limit", "4")
    assert [t["community"] for t in jupyter] == ["jupyter"] * 4
    # exactly a screenful: nothing left out, nothing to say
    rows, rest = _queue_lines(instance.ok("queue", "--community", "pangeo").out)
    assert (len(rows), rest) == (50, [])

    bad = instance.cli("queue", "--limit", "-1")
    assert bad.status == 2 and "not a number of tickets: '-1'" in bad.err
    help_text = maild("queue", "--help").stdout
    assert "--limit N" in help_text and "0: all" in help_text


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_killed_ingest_leaves_no_parsing_worker_behind(
    instance: Instance, tmp_path: Path
) -> None:
    box = tmp_path / "big.mbox"
    _mbox(box, 600)  # more than a chunk: a worker parses ahead
    command = [sys.executable, "-m", "maild", "--config", str(instance.config), "ingest"]
    proc = subprocess.Popen([*command, str(box)], stdout=subprocess.DEVNULL, env=ENV)
    try:
        while not (workers := _children(proc.pid)):
            assert proc.poll() is None, "maild ingest ended before its worker was seen"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    # the orphans notice their parent is gone and end
    for _ in range(600):
        left = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        if not left:
            break
        time.sleep(0.1)
    for pid in left:  # not to leak them when this fails
        os.kill(pid, signal.SIGKILL)
    assert left == []


def test_ingest_shows_progress_on_a_terminal_and_nothing_when_piped(
    instance: Instance, tmp_path: Path
) -> None:
    box = tmp_path / "big.mbox"
    _mbox(box, 80)
    command = [sys.executable, "-m", "maild", "--config", str(instance.config), "ingest"]
    # stderr on a terminal
    main, sub = pty.openpty()
    proc = subprocess.Popen([*command, str(box)], stdout=subprocess.PIPE, stderr=sub, env=ENV)
    os.close(sub)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 0
    seen = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        seen += chunk
    os.close(main)
    terminal = seen.decode()
    assert "of 80 mails" in terminal and "mails/s" in terminal and "left" in terminal
    assert "80 mails in" in terminal
    assert len(out.decode().splitlines()) >= 80  # one line per mail, as before
    # piped: the same lines, no progress
    other = tmp_path / "other.mbox"
    _mbox(other, 5)
    piped = subprocess.run(
        [*command, str(other)], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert piped.returncode == 0 and piped.stderr == ""
