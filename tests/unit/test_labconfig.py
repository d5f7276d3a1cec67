"""The lab config: one source for the tests', the benchmarks' and the demo's instance."""

from __future__ import annotations

import string
from pathlib import Path

from maild.cli import demo
from maild.cli.labconfig import Lab, LabCommunity, LabSteward, lab_config, lab_template
from maild.config import Config, load_config


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "maild.toml"
    path.write_text(text)
    return load_config(path)


def test_the_template_leaves_exactly_the_database_and_the_ack_rate_open() -> None:
    for lab in (Lab(), Lab(automatic_limits=True), demo.LAB):
        fields = {name for _, name, _, _ in string.Formatter().parse(lab_template(lab)) if name}
        assert fields == {"db", "ack_rate"}


def test_the_tests_lab(tmp_path: Path) -> None:
    config = load(tmp_path, lab_config(tmp_path / "maild.db", ack_rate=7))
    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path / 'maild.db'}"
    assert config.tickets.ack_rate_per_hour == 7
    assert [s.name for s in config.stewards] == ["alice", "bob", "carol"]
    assert [c.name for c in config.communities] == ["pangeo", "jupyter"]


def test_braces_in_values_are_written_as_they_are(tmp_path: Path) -> None:
    lab = Lab(
        support_name="Support {weekdays}",
        stewards=(
            LabSteward("dan", ("dan@example.org",), 'Dan "{}" Doe'),
            LabSteward("eve", ("eve@example.org",)),
        ),
        communities=(LabCommunity("c", ("c.example",)),),
        tables='[smtp]\nhost = "relay.example"\n',
    )
    config = load(tmp_path, lab_config(tmp_path / "maild.db", lab=lab))
    assert config.support.name == "Support {weekdays}"
    assert config.stewards[0].display_name == 'Dan "{}" Doe'
    assert config.smtp is not None and config.smtp.host == "relay.example"


def test_the_demo_writes_a_lab_with_its_own_ports(tmp_path: Path) -> None:
    config = load_config(demo.prepare_dir(tmp_path))
    assert config.support.address == demo.SUPPORT
    assert config.lmtp is not None and config.lmtp.protocol == "smtp"
    assert config.smtp is not None and config.smtp.host == "127.0.0.1"
    assert config.tickets.ack_rate_per_hour == demo.ACK_RATE
