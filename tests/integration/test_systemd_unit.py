"""systemd/maild.service: systemd accepts it, it matches the daemon, its sandbox stays tight.

``systemd-analyze`` (Debian package ``systemd``) works offline: no running
systemd, no machine-id needed. Without it these tests skip, or fail when
``MAILD_REQUIRE_SERVERS=1`` or ``CI`` is set.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from maild.cli.main import EX_CONFIG
from maild.config import DEFAULT_DATABASE_URL
from maild.service.daemon import SHUTDOWN_TIMEOUT

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "maild.service"
MAX_EXPOSURE = 2.5
# Warnings (unknown keys, unparsable values) are logged but leave the exit
# status at 0, so the tests also demand empty output; pin the level so a
# SYSTEMD_LOG_LEVEL=debug in the caller's environment does not add noise.
ENV = {**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}

Settings = dict[tuple[str, str], list[str]]


def _analyze() -> str:
    """The systemd-analyze binary; skip the test without it, fail in CI."""
    path = shutil.which("systemd-analyze")
    if path:
        return path
    message = "systemd-analyze is not installed: apt-get install systemd"
    if os.environ.get("MAILD_REQUIRE_SERVERS") == "1" or os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_analyze(), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=ENV,
        timeout=60,
        check=False,
    )


def _settings(text: str) -> Settings:
    """``(section, key) -> values`` in file order; systemd keys may repeat."""
    settings: Settings = defaultdict(list)
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {raw!r}"
        settings[section, key.strip()].append(value.strip())
    return settings


def _one(settings: Settings, key: str, section: str = "Service") -> str:
    values = settings.get((section, key), [])
    assert len(values) == 1, f"{section}.{key}: expected one value, got {values}"
    return values[0]


def _seconds(span: str) -> float:
    """A systemd time span such as ``60``, ``30s``, ``1min 30s`` or ``500ms``, in seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit or "s"]
    return total


def _verifiable_copy(directory: Path) -> Path:
    """The unit with ExecStart= pointing at the maild this test runs.

    ``verify`` checks that the ExecStart binary exists; the shipped path
    (/usr/local/bin/maild) usually does not on a development machine.
    """
    maild = shutil.which("maild")
    command = [maild] if maild else [sys.executable, "-m", "maild"]
    text, count = re.subn(
        r"^ExecStart=\S+",
        lambda _: "ExecStart=" + shlex.join(command),
        UNIT.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert count == 1
    # the name matters: systemd derives the unit name from it
    copy = directory / "maild.service"
    copy.write_text(text, encoding="utf-8")
    return copy


def test_unit_matches_the_daemon() -> None:
    settings = _settings(UNIT.read_text(encoding="utf-8"))
    assert _one(settings, "Type") == "notify"
    assert _one(settings, "NotifyAccess") == "main"
    exec_start = shlex.split(_one(settings, "ExecStart"))
    assert exec_start[0] == "/usr/local/bin/maild"
    assert exec_start[1:] == ["--config", "/etc/maild/maild.toml", "run"]
    assert _one(settings, "ExecReload") == "/bin/kill -HUP $MAINPID"

    # a reload stops the loops for up to SHUTDOWN_TIMEOUT without watchdog
    # pings; the watchdog must outlast that with room to spare
    assert _seconds(_one(settings, "WatchdogSec")) >= 2 * SHUTDOWN_TIMEOUT
    assert _seconds(_one(settings, "TimeoutStopSec")) > SHUTDOWN_TIMEOUT
    assert _one(settings, "Restart") == "on-failure"
    assert str(EX_CONFIG) in _one(settings, "RestartPreventExitStatus").split()

    dynamic = settings.get(("Service", "DynamicUser"), [])
    assert dynamic == ["yes"] or settings.get(("Service", "User"))
    assert _one(settings, "StateDirectory") == "maild"
    assert DEFAULT_DATABASE_URL.startswith("sqlite+aiosqlite:////var/lib/maild/")
    assert _one(settings, "ConfigurationDirectory") == "maild"
    credentials = settings.get(("Service", "LoadCredential"), [])
    assert sorted(c.split(":", 1)[0] for c in credentials) == ["imap", "smtp"]
    assert _one(settings, "UMask") == "0077"
    # the mail servers are remote: an IP allow list would cut them off
    assert ("Service", "IPAddressDeny") not in settings


def test_systemd_verify_accepts_the_unit(tmp_path: Path) -> None:
    copy = _verifiable_copy(tmp_path)
    # --recursive-errors=no: judge this unit, not whatever else the host has
    result = _run("verify", "--man=no", "--recursive-errors=no", str(copy))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", output


def test_systemd_verify_reports_a_bad_key(tmp_path: Path) -> None:
    """The check above is only worth something if a typo makes noise."""
    copy = _verifiable_copy(tmp_path)
    copy.write_text(copy.read_text(encoding="utf-8").replace("UMask=", "UMaks="), encoding="utf-8")
    result = _run("verify", "--man=no", "--recursive-errors=no", str(copy))
    assert "UMaks" in result.stdout + result.stderr


def test_sandbox_exposure_is_low() -> None:
    result = _run("security", "--offline=yes", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(r"Overall exposure level for maild\.service: (\d+(?:\.\d+)?)", output)
    assert match, output
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, output
