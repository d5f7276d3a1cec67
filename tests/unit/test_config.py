"""Config loading as an operator meets it: the example, defaults, error reports, secrets."""

from __future__ import annotations

import textwrap
from datetime import date, time, timedelta
from pathlib import Path

import pytest

from maild.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_DATABASE_URL,
    Config,
    ConfigError,
    SlaTarget,
    config_path_from,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
MINIMAL = {"support": {"address": "support@example.org"}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "maild.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def errors_of(data: dict[str, object], **kwargs: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, **kwargs)  # type: ignore[arg-type]
    return caught.value.errors


# --- the shipped example ------------------------------------------------------


def test_example_config_loads_with_its_documented_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILD_IMAP_PASSWORD", "imap-secret")
    monkeypatch.setenv("MAILD_SMTP_PASSWORD", "smtp-secret")

    config = load_config(REPO / "config.example.toml")

    assert config.source == REPO / "config.example.toml"
    assert config.support.address == "support@example.org"
    assert config.support.name == "Example Support"
    assert config.support.message_id_domain == "example.org"
    assert config.mailbox is not None
    assert (config.mailbox.host, config.mailbox.port, config.mailbox.security) == (
        "imap.example.org",
        993,
        "tls",
    )
    assert config.mailbox.password == "imap-secret"
    assert config.mailbox.poll_interval == timedelta(seconds=60)
    assert config.lmtp is not None
    assert (config.lmtp.host, config.lmtp.port, config.lmtp.protocol) == ("127.0.0.1", 2424, "lmtp")
    assert config.smtp is not None
    assert (config.smtp.port, config.smtp.security) == (587, "starttls")
    assert config.smtp.password == "smtp-secret"
    assert config.smtp.retry_for == timedelta(days=2)
    assert config.database.url == DEFAULT_DATABASE_URL
    assert config.hours.timezone == "America/Chicago"
    assert str(config.hours.tz) == "America/Chicago"
    assert config.hours.days == (0, 1, 2, 3, 4)
    assert config.hours.ranges == ((time(8), time(12)), (time(13), time(17)))
    assert config.hours.holidays == (date(2026, 12, 24), date(2026, 12, 25))
    assert (config.hours.holiday_country, config.hours.holiday_subdivision) == ("US", "TX")
    assert config.sla.target_for("incident") == SlaTarget(
        triage=timedelta(hours=8), first_response=timedelta(hours=1), clock="wall"
    )
    assert config.sla.target_for(None) == SlaTarget(timedelta(hours=8), timedelta(hours=24))
    assert config.commands.authserv_id == "mx.example.org"
    assert [s.name for s in config.stewards] == ["alice", "bob", "carol", "dave"]
    assert config.roster is not None
    assert config.roster.order == ("alice", "bob", "carol", "dave")
    assert config.roster.start == date(2026, 11, 2)
    assert (config.roster.tenure, config.roster.stagger) == (timedelta(weeks=4), timedelta(weeks=2))
    assert config.community_by_name("Pangeo") is not None
    assert config.communities[0].budget_hours_per_month == 10.0


def test_example_config_does_not_show_passwords_in_its_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILD_IMAP_PASSWORD", "imap-secret")
    monkeypatch.setenv("MAILD_SMTP_PASSWORD", "smtp-secret")

    shown = repr(load_config(REPO / "config.example.toml"))

    assert "imap-secret" not in shown
    assert "smtp-secret" not in shown


def test_example_config_needs_its_password_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILD_IMAP_PASSWORD", raising=False)
    monkeypatch.delenv("MAILD_SMTP_PASSWORD", raising=False)

    with pytest.raises(ConfigError) as caught:
        load_config(REPO / "config.example.toml")

    assert caught.value.errors == [
        "mailbox.password_env: environment variable MAILD_IMAP_PASSWORD is not set",
        "smtp.password_env: environment variable MAILD_SMTP_PASSWORD is not set",
    ]


# --- defaults -----------------------------------------------------------------


def test_minimal_config_gets_every_default() -> None:
    config = parse_config(MINIMAL)

    assert config == Config(support=config.support)
    assert config.support.tag == "support"
    assert config.support.message_id_domain == "example.org"
    assert (config.mailbox, config.lmtp, config.smtp, config.roster) == (None, None, None, None)
    assert config.database.url == "sqlite+aiosqlite:////var/lib/maild/maild.db"
    assert config.hours.timezone == "UTC"
    assert config.hours.days == (0, 1, 2, 3, 4)
    assert config.hours.ranges == ((time(9), time(17)),)
    assert config.sla.warn_at == 0.75
    assert config.sla.target_for("change") == SlaTarget(
        triage=timedelta(hours=8), first_response=timedelta(hours=24), clock="working"
    )
    assert config.sla.target_for("incident").first_response == timedelta(hours=1)
    assert config.sla.target_for("incident").clock == "wall"
    assert config.tickets.auto_close_after == timedelta(hours=48)
    assert config.tickets.max_message_bytes == 26214400
    assert config.incidents.update_every == timedelta(hours=3)
    assert config.incidents.nudge_before == timedelta(minutes=30)
    assert config.commands.receipts == "errors"
    assert config.templates.dir is None
    assert config.stewards == ()
    assert config.communities == ()


def test_ports_default_by_security() -> None:
    config = parse_config(
        {
            **MINIMAL,
            "mailbox": {"host": "h", "username": "u", "password": "p", "security": "starttls"},
            "smtp": {"host": "h", "security": "tls"},
        }
    )

    assert config.mailbox is not None and config.mailbox.port == 143
    assert config.smtp is not None and config.smtp.port == 465


def test_lmtp_listen_accepts_ipv6_in_brackets() -> None:
    config = parse_config({**MINIMAL, "lmtp": {"listen": "[::1]:2525", "protocol": "smtp"}})

    assert config.lmtp is not None
    assert (config.lmtp.host, config.lmtp.port, config.lmtp.protocol) == ("::1", 2525, "smtp")


@pytest.mark.parametrize(
    ("listen", "allow", "expected"),
    [
        ("127.0.0.1:2424", None, ()),
        ("localhost:2424", None, ()),
        ("[::1]:2424", ["::1"], ("::1/128",)),
        ("0.0.0.0:24", ["10.0.0.0/8", "192.168.1.7/24"], ("10.0.0.0/8", "192.168.1.0/24")),
        ("[::]:24", ["2001:db8::/32", "10.1.2.3"], ("2001:db8::/32", "10.1.2.3/32")),
        ("mx.internal.example:24", ["10.0.0.0/8"], ("10.0.0.0/8",)),
    ],
)
def test_lmtp_allow_is_a_list_of_networks(
    listen: str, allow: list[str] | None, expected: tuple[str, ...]
) -> None:
    lmtp: dict[str, object] = {"listen": listen}
    if allow is not None:
        lmtp["allow"] = allow
    config = parse_config({**MINIMAL, "lmtp": lmtp})

    assert config.lmtp is not None
    assert tuple(str(network) for network in config.lmtp.allow) == expected


@pytest.mark.parametrize(
    ("lmtp", "error"),
    [
        (
            {"listen": "0.0.0.0:2424"},
            "lmtp.allow: required when listen is not a loopback address (0.0.0.0:2424)",
        ),
        ({"listen": "[::]:2424"}, "lmtp.allow: required when listen is not a loopback"),
        ({"listen": "mx.example:24"}, "lmtp.allow: required when listen is not a loopback"),
        (
            {"allow": ["10.0.0.0/8", "10.0.0.0/33"]},
            'lmtp.allow[1]: expected a network like "10.0.0.0/8" or "::1", got "10.0.0.0/33"',
        ),
        (
            {"listen": "0.0.0.0:24", "allow": ["office"]},
            'lmtp.allow[0]: expected a network like "10.0.0.0/8" or "::1", got "office"',
        ),
        ({"allow": "10.0.0.0/8"}, 'lmtp.allow: expected an array of strings, got "10.0.0.0/8"'),
        ({"allow": []}, 'lmtp.allow: expected at least one network like "10.0.0.0/8", got []'),
    ],
)
def test_lmtp_allow_problems_name_the_key(lmtp: dict[str, object], error: str) -> None:
    errors = errors_of({**MINIMAL, "lmtp": lmtp})

    assert any(line.startswith(error) for line in errors), errors


def test_sla_type_section_inherits_from_default() -> None:
    config = parse_config(
        {
            **MINIMAL,
            "sla": {
                "default": {"triage": "4h", "first_response": "2d"},
                "change": {"triage": "none"},
                "incident": {"first_response": "30m"},
            },
        }
    )

    assert config.sla.target_for("change") == SlaTarget(None, timedelta(days=2), "working")
    assert config.sla.target_for("incident") == SlaTarget(
        timedelta(hours=4), timedelta(minutes=30), "wall"
    )
    assert config.sla.target_for("guidance") == config.sla.target_for(None)


# --- error reports ------------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [support]
        name = "Support"

        [mailbox]
        host = "imap.example.org"
        hots = "typo"
        port = "abc"
        username = "support@example.org"
        password = "x"

        [hours]
        timezone = "Mars/Olympus"

        [incidents]
        update_every = "3 hours"

        [[stewards]]
        name = "alice"
        addresses = ["alice@example.org"]

        [[stewards]]
        name = "bob"
        addresses = ["Alice@example.org"]

        [roster]
        order = ["alice", "bob", "eve"]
        start = "2026-11-02"
        """,
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    errors = caught.value.errors
    assert errors == [
        "support.address: required",
        'mailbox.port: expected an integer, got "abc"',
        'mailbox.hots: unknown key (did you mean "host"?)',
        'hours.timezone: expected an IANA time zone like "America/Chicago", got "Mars/Olympus"',
        "incidents.update_every: expected a duration such as "
        '"30s", "45m", "3h", "1h30m", "1.5h", "2d" or "4w" '
        '(units s, m, h, d, w; largest first), got "3 hours"',
        'stewards[1].addresses[0]: "alice@example.org" is already an address of steward "alice"',
        'roster.order[2]: expected the name of a [[stewards]] entry, got "eve"',
    ]
    assert str(caught.value) == "\n".join(errors)
    assert caught.value.source == path


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            {"mailbox": {"host": "h", "username": "u", "password": "p", "port": True}},
            "mailbox.port: expected an integer, got true",
        ),
        (
            {"mailbox": {"host": "h", "username": "u", "password": "p", "port": 70000}},
            "mailbox.port: expected an integer from 1 to 65535, got 70000",
        ),
        (
            {"mailbox": {"host": "h", "username": "u"}},
            "mailbox.password: required (set password, password_file or password_env)",
        ),
        (
            {"mailbox": {"host": "h", "username": "u", "password": "p", "security": "ssl"}},
            'mailbox.security: expected one of "tls", "starttls", "none", got "ssl"',
        ),
        (
            {"lmtp": {"listen": "::1:2424"}},
            'lmtp.listen: expected a host and port like "127.0.0.1:2424" or "[::1]:2424", '
            'got "::1:2424"',
        ),
        ({"mailbx": {}}, 'mailbx: unknown key (did you mean "mailbox"?)'),
        (
            {"hours": {"timezone": "america/chicago"}},
            'hours.timezone: expected an IANA time zone like "America/Chicago", '
            'got "america/chicago" (did you mean "America/Chicago"?)',
        ),
        (
            {"hours": {"ranges": ["08:00-12:00", "11:00-13:00"]}},
            'hours.ranges: "08:00-12:00" and "11:00-13:00" overlap',
        ),
        (
            {"hours": {"days": ["mon", "thurs"]}},
            'hours.days[1]: expected a weekday "mon" .. "sun", got "thurs" (did you mean "thu"?)',
        ),
        (
            {"hours": {"holidays": ["2026-13-01"]}},
            'hours.holidays[0]: expected a date like "2026-11-02", got "2026-13-01"',
        ),
        (
            {"sla": {"warn_at": 1}},
            "sla.warn_at: expected a number between 0 and 1 (exclusive), got 1.0",
        ),
        ({"sla": {"incidnet": {}}}, 'sla.incidnet: unknown key (did you mean "incident"?)'),
        (
            {"tickets": {"auto_close_after": 48}},
            "tickets.auto_close_after: expected a duration such as "
            '"30s", "45m", "3h", "1h30m", "1.5h", "2d" or "4w" '
            "(units s, m, h, d, w; largest first), got 48",
        ),
        (
            {"tickets": {"confirmation_closes": "yes"}},
            'tickets.confirmation_closes: expected true or false, got "yes"',
        ),
        (
            {"incidents": {"update_every": "20m"}},
            'incidents.nudge_before: expected less than update_every (20m), got "30m"',
        ),
        (
            {"commands": {"confirm_within": "soon"}},
            'commands.confirm_within: expected a duration such as "30s", "45m", "3h", "1h30m", '
            '"1.5h", "2d" or "4w" (units s, m, h, d, w; largest first), got "soon"',
        ),
        (
            {"tickets": {"max_cc": -1}},
            "tickets.max_cc: expected an integer of at least 0, got -1",
        ),
        (
            {"hygiene": {"max_automatic_per_hour": "lots"}},
            'hygiene.max_automatic_per_hour: expected an integer, got "lots"',
        ),
        (
            {"database": {"url": "sqlite:///maild.db"}},
            "database.url: expected a URL with an async driver, like "
            '"sqlite+aiosqlite:///…" or "postgresql+asyncpg://…", got "sqlite:///maild.db"',
        ),
        (
            {"stewards": [{"name": 3, "addresses": ["a@example.org"]}]},
            "stewards[0].name: expected a string, got 3",
        ),
        (
            {"stewards": [{"name": "me", "addresses": ["a@example.org"]}]},
            'stewards[0].name: expected a name other than "me" or "none", got "me"',
        ),
        (
            {"stewards": [{"name": "a", "addresses": ["not an address"]}]},
            'stewards[0].addresses[0]: expected an email address like "name@example.org", '
            'got "not an address"',
        ),
        (
            {"stewards": {"name": "a"}},
            "stewards: expected an array of tables ([[stewards]]), got a table",
        ),
        ({"roster": {"order": ["a"]}}, "roster.start: required"),
        (
            {
                "communities": [
                    {"name": "x", "domains": ["x.example"]},
                    {"name": "y", "domains": ["X.example"]},
                ]
            },
            'communities[1].domains[0]: "x.example" is already in community "x"',
        ),
    ],
)
def test_each_problem_names_its_key(data: dict[str, object], error: str) -> None:
    assert error in errors_of({**MINIMAL, **data})


def test_roster_needs_enough_stewards_for_two_on_duty() -> None:
    errors = errors_of(
        {
            **MINIMAL,
            "stewards": [{"name": "alice", "addresses": ["alice@example.org"]}],
            "roster": {"order": ["alice"], "start": "2026-11-02"},
        }
    )

    assert errors == [
        "roster.order: expected at least 2 stewards (tenure / stagger are on duty at once), "
        'got ["alice"]'
    ]


def test_roster_rotates_in_whole_days() -> None:
    errors = errors_of(
        {**MINIMAL, "roster": {"order": [], "start": "2026-11-02", "stagger": "36h"}}
    )

    assert errors == [
        'roster.stagger: expected whole days (the roster changes at midnight), got "1d12h"',
        'roster.tenure: expected a multiple of stagger (1d12h), got "4w"',
    ]


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[support]\naddress = "support@example.org"\nport 993\n')

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    (error,) = caught.value.errors
    assert error.startswith(f"{path}: invalid TOML: ")
    assert "line 3" in error


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


# --- secrets ------------------------------------------------------------------


def smtp_with(**secret: str) -> dict[str, object]:
    return {**MINIMAL, "smtp": {"host": "smtp.example.org", "username": "u", **secret}}


def test_password_file_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "smtp").write_text("s3cret\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    for spelling in ("$CREDENTIALS_DIRECTORY/smtp", "${CREDENTIALS_DIRECTORY}/smtp"):
        config = parse_config(smtp_with(password_file=spelling))
        assert config.smtp is not None and config.smtp.password == "s3cret"


def test_relative_password_file_is_next_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "smtp.secret").write_text("s3cret", encoding="utf-8")
    monkeypatch.chdir("/")

    config = parse_config(smtp_with(password_file="smtp.secret"), base_dir=tmp_path)

    assert config.smtp is not None and config.smtp.password == "s3cret"


def test_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PW", "from-env")

    config = parse_config(smtp_with(password_env="SMTP_PW"))

    assert config.smtp is not None and config.smtp.password == "from-env"


def test_password_env_can_come_from_an_explicit_environment() -> None:
    config = parse_config(smtp_with(password_env="SMTP_PW"), environ={"SMTP_PW": "given"})

    assert config.smtp is not None and config.smtp.password == "given"


def test_secret_problems_name_the_key_and_never_the_secret(tmp_path: Path) -> None:
    assert errors_of(smtp_with(password_file=str(tmp_path / "absent")), environ={}) == [
        f'smtp.password_file: cannot read "{tmp_path / "absent"}": No such file or directory'
    ]
    assert errors_of(smtp_with(password_file="$CREDENTIALS_DIRECTORY/x"), environ={}) == [
        "smtp.password_file: $CREDENTIALS_DIRECTORY is not set "
        "(systemd sets it for a unit with LoadCredential=)"
    ]
    assert errors_of(smtp_with(password_env="NOPE"), environ={}) == [
        "smtp.password_env: environment variable NOPE is not set"
    ]
    conflict = errors_of(smtp_with(password="hunter2", password_env="X"), environ={"X": "y"})
    assert conflict == [
        "smtp.password_env: conflicts with smtp.password: "
        "set only one of password, password_file or password_env"
    ]
    numeric = errors_of({**MINIMAL, "smtp": {"host": "h", "username": "u", "password": 123456}})
    assert numeric == ["smtp.password: expected a non-empty string, got an integer"]


# --- paths --------------------------------------------------------------------


def test_relative_sqlite_url_is_resolved_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        """
        [support]
        address = "support@example.org"
        [database]
        url = "sqlite+aiosqlite:///data/maild.db"
        """,
    )
    monkeypatch.chdir("/")

    config = load_config(path)

    assert config.database.url == f"sqlite+aiosqlite:///{tmp_path}/data/maild.db"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:////var/lib/maild/maild.db",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite://",
        "postgresql+asyncpg://maild@db.example.org/maild",
    ],
)
def test_other_database_urls_are_kept_as_written(tmp_path: Path, url: str) -> None:
    config = parse_config({**MINIMAL, "database": {"url": url}}, base_dir=tmp_path)

    assert config.database.url == url


def test_database_password_goes_into_the_url() -> None:
    config = parse_config(
        {
            **MINIMAL,
            "database": {"url": "postgresql+asyncpg://maild@db/maild", "password_env": "DB"},
        },
        environ={"DB": "p@ss"},
    )

    assert config.database.url == "postgresql+asyncpg://maild:p%40ss@db/maild"


def test_templates_dir_is_relative_to_the_config_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()

    config = parse_config({**MINIMAL, "templates": {"dir": "templates"}}, base_dir=tmp_path)

    assert config.templates.dir == tmp_path / "templates"
    assert errors_of({**MINIMAL, "templates": {"dir": "nope"}}, base_dir=tmp_path) == [
        f'templates.dir: expected an existing directory, got "{tmp_path / "nope"}"'
    ]


def test_config_path_from_argument_then_environment_then_default() -> None:
    assert config_path_from("/x.toml", {"MAILD_CONFIG": "/y.toml"}) == Path("/x.toml")
    assert config_path_from(None, {"MAILD_CONFIG": "/y.toml"}) == Path("/y.toml")
    assert config_path_from(None, {}) == DEFAULT_CONFIG_PATH == Path("/etc/maild/maild.toml")


# --- lookups ------------------------------------------------------------------


@pytest.fixture
def people() -> Config:
    return parse_config(
        {
            **MINIMAL,
            "stewards": [
                {"name": "Alice", "addresses": ["Alice@Example.org", "alice@home.example"]},
                {"name": "bob", "address": "bob@example.org"},
            ],
            "communities": [
                {
                    "name": "pangeo",
                    "representatives": ["rep@pangeo.example"],
                    "domains": ["pangeo.example"],
                },
                {"name": "Lab", "domains": ["lab.pangeo.example"]},
                {"name": "solo", "representatives": ["boss@lab.pangeo.example"]},
            ],
        }
    )


def test_stewards_are_found_by_address_or_name_in_any_case(people: Config) -> None:
    alice = people.steward_by_name("ALICE")
    assert alice is not None and alice.name == "alice" and alice.display_name == "alice"
    assert people.steward_by_address("alice@HOME.example") is alice
    bob = people.steward_by_address("bob@example.org")
    assert bob is not None and bob.addresses == ("bob@example.org",)
    assert people.steward_by_address("eve@example.org") is None
    assert people.steward_by_name("eve") is None


@pytest.mark.parametrize(
    ("address", "community"),
    [
        ("rep@pangeo.example", "pangeo"),  # a representative
        ("Someone@PANGEO.example", "pangeo"),  # the domain, any case
        ("x@hub.pangeo.example", "pangeo"),  # a subdomain
        ("x@lab.pangeo.example", "Lab"),  # the most specific domain wins
        ("boss@lab.pangeo.example", "solo"),  # a representative beats any domain
        ("x@notpangeo.example", None),  # a suffix that is not a subdomain
        ("x@example.com", None),
        ("pangeo.example", None),  # not an address
    ],
)
def test_community_for(people: Config, address: str, community: str | None) -> None:
    found = people.community_for(address)

    assert (found.name if found else None) == community


def test_community_by_name_ignores_case(people: Config) -> None:
    lab = people.community_by_name("lab")
    assert lab is not None and lab.name == "Lab"
    assert people.community_by_name("nope") is None
