"""``maild demo``: the newcomer's first minute, run for real."""

from __future__ import annotations

import json
import mailbox
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _maild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maild", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )


def test_demo_scenario_plays_the_whole_loop_again_and_again(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    for run in (1, 2):
        result = _maild("demo", "--dir", str(root), "--scenario")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        # the run talks about the ticket it opened, not a fixed #1
        assert f"Steward alice replies to ticket #{run}" in result.stdout
        assert f"show {run}" in result.stdout.splitlines()[-1]
        assert "acknowledgment to the requester" in result.stdout
        assert "ack or steward" not in result.stdout
        # a canned reply went out after alice's words, and the post-mortem outline shows
        assert "treating it as an incident" in result.stdout
        assert "## Timeline" in result.stdout
        assert "the post-mortem outline to the incident commander" in result.stdout
    tickets = json.loads(
        _maild("--config", str(root / "maild.toml"), "queue", "--all", "--json").stdout
    )
    assert [t["id"] for t in sorted(tickets, key=lambda t: t["id"])] == [1, 2]
    for ticket in tickets:
        # the second run left the first ticket alone: still 45 minutes, still closed
        assert ticket["status"] == "closed"
        assert ticket["type"] == "incident"
        assert ticket["incident_commander"] == "alice"
        assert ticket["time_spent_minutes"] == 45
    sent = mailbox.Maildir(str(root / "outgoing"), create=False)
    subjects = sorted(str(m["Subject"]) for m in sent)
    assert len(subjects) == 16  # 8 a run: ack, steward copy, relay, update, resolved,
    # post-mortem, closing, requester's reply
    assert "[support #1] Update: Hub is down" in subjects
    assert "[support #2] Update: Hub is down" in subjects


def test_the_live_demo_gives_real_numbers_and_keeps_its_folder(tmp_path: Path) -> None:
    root = tmp_path / "live"
    demo = subprocess.Popen(
        [sys.executable, "-m", "maild", "demo", "--dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    assert demo.stdout is not None
    lines: list[str] = []
    arrived: queue.Queue[str] = queue.Queue()
    stdout = demo.stdout
    reader = threading.Thread(target=lambda: [arrived.put(x) for x in stdout], daemon=True)
    reader.start()

    def read_until(text: str) -> None:
        deadline = time.monotonic() + 60
        while not any(text in line for line in lines):
            try:
                lines.append(arrived.get(timeout=max(deadline - time.monotonic(), 0)).rstrip("\n"))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {lines}") from None

    try:
        read_until("Ctrl-C stops the demo")
        config = (root / "maild.toml").read_text()
        # every command printed runs as is: no activated venv needed
        assert f"{sys.executable} -m maild --config {root / 'maild.toml'} queue" in [
            x.strip() for x in lines
        ]
        assert not any("swaks" in line for line in lines)

        second = _maild("demo", "--dir", str(root))
        assert second.returncode == 1
        assert f"already running in {root}" in second.stderr
        assert (root / "maild.toml").read_text() == config  # not rewritten under the first

        request = lines[lines.index(next(x for x in lines if "Send a request" in x)) + 1]
        subprocess.run(request.strip(), shell=True, check=True, timeout=30)  # noqa: S602
        read_until("Ticket #1 is open")
        read_until("show 1")
        reply = lines[lines.index(next(x for x in lines if "Ticket #1 is open" in x)) + 1]
        # alice answers the stewards' "New request" mail as her client would
        assert "Re: [support #1] New request: Hub is down [incident] [ic=me]" in reply
        subprocess.run(reply.strip(), shell=True, check=True, timeout=30)  # noqa: S602
        read_until("relayed to the requester")
        detail = json.loads(
            _maild("--config", str(root / "maild.toml"), "show", "1", "--json").stdout
        )
        assert detail["type"] == "incident" and detail["incident_commander"] == "alice"
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
        reader.join(timeout=10)
        stdout.close()
