"""Every command is documented: help with an example, and a place in the README."""

from __future__ import annotations

import pytest

from maild.cli.main import COMMANDS, build_parser
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
build_parser()  # fills COMMANDS


def test_the_spec_commands_all_exist() -> None:
    spec = {
        "run", "demo", "explain", "ingest", "tick", "queue", "show", "stats", "roster",
        "resolve", "close", "reopen", "assign", "note", "outbox", "check-config",
        "db upgrade", "status", "tag", "postmortem", "attachment", "replies",
    }  # fmt: skip
    assert spec <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_has_help_with_an_example(name: str) -> None:
    _fn, help_text, example = COMMANDS[name]
    assert help_text.strip()
    assert example.startswith("maild ")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_is_in_the_readme(name: str) -> None:
    assert f"`maild {name}" in README


def test_help_shows_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["queue", "--help"])
    assert exit_.value.code == 0
    assert "maild queue --overdue --json" in capsys.readouterr().out


def test_ci_runs_the_readme_test_command() -> None:
    assert "tests/run.sh" in README
    assert "tests/run.sh" in (REPO / ".ci" / "run").read_text()


def test_run_sh_installs_each_dovecot_part_the_fixtures_need() -> None:
    # dovecot-core alone passes `command -v dovecot` and fails every LMTP test
    from tests.integration.dovecot import NEEDED

    script = (REPO / "tests" / "run.sh").read_text()
    for name, package in NEEDED.items():
        assert f"need {package} /usr/lib/dovecot/{name}" in script
    assert "-rfEs" in script  # each skip is shown with its reason, failures too
