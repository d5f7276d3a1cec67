"""The command line at its edges (issue 10): hostile mail on a terminal, and input past a range.

- SPEC section 11, "Terminal": text output shows the control characters of
  stored mail escaped, never raw; a subject that sets the terminal's title or
  clears the screen is shown as the characters it is made of.
- ``maild run`` without a readable config exits 78 (EX_CONFIG), which the
  systemd unit's ``RestartPreventExitStatus`` keeps from restart-looping.
- Ticket numbers past what the store can hold and ``--now`` past the
  calendar's range get the usual one-line ``Error:`` and exit 1.
- ``check-config`` warns about a listener beyond loopback.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.conftest import Instance

# Terminal control sequences (xterm's ctlseqs): OSC 0 sets the window title
# and ends at BEL; CSI 2 J clears the screen; 0x9b is the 8-bit CSI; CR
# returns to the line's start to write over it.
TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\x7f")


def hostile_mail() -> bytes:
    """Controls in the subject (RFC 2047), the body and an attachment's name (RFC 2231)."""
    subject = f"{TITLE}Hub down{CLEAR} \x9b31m red \rover\x7f"
    encoded = base64.b64encode(subject.encode()).decode()
    body = f"Hello,\n{TITLE}the hub is down{CLEAR}\r\x9b1mover\nthanks\x07\x1b[5m blink\x7f\n"
    filename = "%1B%5D0%3Bpwned%07log%9B.txt"  # percent-encoded ESC ] 0 ; pwned BEL log CSI
    return (
        "From: Mallory <mallory@pangeo.example>\r\n"
        "To: support@example.org\r\n"
        f"Subject: =?utf-8?b?{encoded}?=\r\n"
        "Date: Wed, 25 Nov 2026 15:00:00 +0000\r\n"
        "Message-ID: <esc-1@pangeo.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n'
        "\r\n--b\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" + body.replace("\n", "\r\n") + "--b\r\n"
        "Content-Type: text/plain\r\n"
        f"Content-Disposition: attachment; filename*=iso-8859-1''{filename}\r\n"
        "\r\nlog\r\n--b--\r\n"
    ).encode("utf-8")


def assert_no_raw_controls(text: str) -> None:
    found = sorted({c for c in RAW if c in text})
    assert not found, f"raw control characters {found} in:\n{text!r}"


def test_text_output_shows_mail_controls_escaped(instance: Instance) -> None:
    path = instance.write(hostile_mail())

    ingested = instance.ok("ingest", str(path)).out
    shown = instance.ok("show", "1").out
    queue = instance.ok("queue").out
    explained = instance.ok("explain", str(path)).out
    outbox = instance.ok("outbox").out
    for text in (ingested, shown, queue, explained, outbox):
        assert_no_raw_controls(text)

    # the body is shown escaped, not dropped: the operator sees what the mail
    # tried, with its lines kept (headers are already cleaned when the mail is stored)
    assert "\n      \\x1b]0;pwned\\x07the hub is down\\x1b[2J\n" in shown
    assert "\n      \\x9b1mover\n" in shown
    assert "\n      thanks\\x07\\x1b[5m blink\\x7f\n" in shown
    assert "\n      Hello,\n" in shown

    # JSON carries the text itself, escaped the JSON way, DEL and C1 included
    raw_json = instance.ok("show", "1", "--json").out
    assert_no_raw_controls(raw_json)
    assert "\\u009b1mover" in raw_json
    text = json.loads(raw_json)["timeline"][0]["text"]
    assert f"{TITLE}the hub is down{CLEAR}" in text and "blink\x7f" in text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("a\rb\x0bc\x0cd\x01e\x7f", "a\\x0db\\x0bc\\x0cd\\x01e\\x7f"),  # argv has no NUL
        ("csi \x9b2J nel \x85 end", "csi \\x9b2J nel \\x85 end"),
        ("lines\n\tand tabs\n", "lines\n      \tand tabs\n"),  # indented under its line
        ("admin\u202etxt.exe", "admin\\u202etxt.exe"),  # right-to-left override
        ("Grüße, 日本, emoji 🙂", "Grüße, 日本, emoji 🙂"),
    ],
)
def test_notes_on_a_ticket_are_shown_escaped(instance: Instance, text: str, shown: str) -> None:
    """An operator note is stored text like any other: ``maild show`` escapes it too."""
    instance.ingest(hostile_mail())
    instance.ok("note", "1", text)

    out = instance.ok("show", "1").out

    assert "note by " in out
    assert shown.rstrip("\n") in out
    assert_no_raw_controls(out)


# -- maild run without a config --------------------------------------------------


def run_with(instance: Instance, config: Path) -> tuple[int, str]:
    instance.config = config
    result = instance.cli("run")
    return result.status, result.err


def test_run_without_a_config_exits_78(instance: Instance, tmp_path: Path) -> None:
    status, err = run_with(instance, tmp_path / "nowhere.toml")

    assert status == 78
    assert err.startswith("Error: no config at ") and err.count("\n") == 1, err


@pytest.mark.parametrize("kind", ["directory", "broken symlink"])
def test_run_with_an_unreadable_config_exits_78(
    instance: Instance, tmp_path: Path, kind: str
) -> None:
    # mode 000 would not do: the tests may run as root, who reads it anyway
    path = tmp_path / "maild-conf.toml"
    if kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "gone.toml")

    status, err = run_with(instance, path)

    assert status == 78
    assert err.startswith("Error: ") and err.count("\n") == 1, err
    assert str(path) in err
    assert "Traceback" not in err


# -- numbers past a range --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "99999999999999999999"), "Error: no ticket #99999999999999999999\n"),
        (("resolve", "9223372036854775808"), "Error: no ticket #9223372036854775808\n"),
        (("show", "2147483648"), "Error: no ticket #2147483648\n"),
        (("note", "18446744073709551616", "hi"), "Error: no ticket #18446744073709551616\n"),
        (
            ("outbox", "--retry", "99999999999999999999"),
            "Error: no failed outbox row 99999999999999999999\n",
        ),
    ],
)
def test_ticket_numbers_past_the_store_are_no_ticket(
    instance: Instance, args: tuple[str, ...], message: str
) -> None:
    instance.ingest(hostile_mail())

    result = instance.cli(*args)

    assert (result.status, result.err) == (1, message)


@pytest.mark.parametrize(
    ("command", "now"),
    [
        ("tick", "9999-12-31T23:00:00+00:00"),
        ("tick", "9999-12-31T23:00:00-05:00"),  # past 9999 once in UTC
        ("tick", "10000-01-01T00:00:00+00:00"),
        ("tick", "0001-01-01T00:00:00+00:00"),
        ("queue", "9999-12-31"),
        ("show", "9999-12-31T23:59:59+00:00"),
        ("stats", "9999-12-31T00:00:00+00:00"),
    ],
)
def test_now_past_the_calendar_is_a_one_line_error(
    instance: Instance, command: str, now: str
) -> None:
    instance.ingest(hostile_mail(), "--now", "2026-11-25T15:00:00+00:00")
    instance.ok("tag", "1", "[type=incident]", "--now", "2026-11-25T16:00:00+00:00")
    args = (command, "1") if command == "show" else (command,)

    result = instance.cli(*args, "--now", now)

    assert result.status == 1
    assert result.err == f"Error: out of range: {now!r} (give a time from 1900 to 8999)\n"
    # the same commands work at a time in range
    assert instance.cli(*args, "--now", "8999-12-01T00:00:00+00:00").status == 0


# -- check-config warnings -------------------------------------------------------


def test_check_config_warns_about_a_listener_beyond_loopback(instance: Instance) -> None:
    text = instance.config.read_text()
    instance.config.write_text(text + '\n[lmtp]\nlisten = "0.0.0.0:2424"\nallow = ["10.0.0.0/8"]\n')

    result = instance.cli("check-config")

    assert result.status == 0, result.err
    assert (
        "warning: lmtp.listen is not loopback (0.0.0.0): only clients in lmtp.allow "
        "(10.0.0.0/8) are served" in result.err
    )


def test_check_config_warns_when_steward_mail_needs_no_authentication(
    instance: Instance,
) -> None:
    # the test instance is a lab with authentication off; the shipped default is on
    lab = instance.config.read_text()
    assert "require_authenticated = false" in lab
    instance.config.write_text(lab.replace("require_authenticated = false", ""))
    quiet = instance.cli("check-config")
    assert quiet.status == 0 and "require_authenticated" not in quiet.err
    instance.config.write_text(lab)

    result = instance.cli("check-config")

    assert result.status == 0, result.err
    assert "warning: commands.require_authenticated is off" in result.err
    assert "lmtp" not in result.err


def test_check_config_is_quiet_about_a_loopback_listener(instance: Instance) -> None:
    text = instance.config.read_text()
    instance.config.write_text(text + '\n[lmtp]\nlisten = "[::1]:2424"\n')

    result = instance.cli("check-config")

    assert result.status == 0, result.err
    assert "lmtp" not in result.err


def test_the_config_option_may_come_after_the_command(instance: Instance) -> None:
    """Operators type `maild queue --config X` as often as `maild --config X queue`."""
    instance.ok("db", "upgrade")
    before = instance.cli("queue", "--json")
    assert before.status == 0
    elsewhere = str(instance.config)
    instance.config = instance.root / "nowhere.toml"  # what the option before it says
    after = instance.cli("queue", "--json", "--config", elsewhere)
    assert (after.status, after.out) == (0, before.out), after.err
    assert instance.cli("check-config", "--config", elsewhere).status == 0
    # and without it, the config given before the command is the one read
    assert instance.cli("queue").status != 0
