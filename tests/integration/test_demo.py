"""``maild demo --scenario``: the newcomer's first minute, run for real."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
from pathlib import Path


def test_demo_scenario_plays_the_whole_loop(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "maild", "demo", "--dir", str(root), "--scenario"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Done." in result.stdout
    assert "Traceback" not in result.stderr
    queue = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(root / "maild.toml"), "queue", "--all",
         "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert queue.returncode == 0, queue.stderr
    [ticket] = json.loads(queue.stdout)
    assert ticket["status"] == "closed"
    assert ticket["type"] == "incident"
    assert ticket["incident_commander"] == "alice"
    assert ticket["time_spent_minutes"] == 45
    sent = mailbox.Maildir(str(root / "outgoing"), create=False)
    subjects = sorted(str(m["Subject"]) for m in sent)
    assert len(subjects) == 7
    assert "[support #1] Update: Hub is down" in subjects
