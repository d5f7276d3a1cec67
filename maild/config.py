"""Load and validate maild's TOML configuration (SPEC sections 9 and 10).

The file is read once, at start and on SIGHUP, into immutable named tuples. Every
problem in it is collected and reported together in one :class:`ConfigError`,
one line per problem, each naming the key's path
(``mailbox.port: expected an integer, got "abc"``), so an operator fixes the
whole file in one pass instead of one error per restart.

Durations are strings such as ``"30s"``, ``"45m"``, ``"1h30m"``, ``"1.5h"``,
``"2d"`` or ``"4w"`` (see :func:`maild.core.durations.parse_duration`). Relative paths (the
templates directory, a ``password_file``, a relative SQLite database) are taken
relative to the directory of the config file, never the current directory.
Secrets (``password``, ``password_file``, ``password_env``) are resolved at
load time into a ``password`` field, which is left out of the section's repr.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar

from maild.core.vocabulary import TYPES

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DATABASE_URL",
    "Community",
    "CommandsConfig",
    "HygieneConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "HoursConfig",
    "IncidentsConfig",
    "LmtpConfig",
    "LmtpProtocol",
    "MailboxConfig",
    "Receipts",
    "ReportsConfig",
    "RosterConfig",
    "Security",
    "SlaClock",
    "SlaConfig",
    "SlaTarget",
    "SmtpConfig",
    "Steward",
    "SupportConfig",
    "TemplatesConfig",
    "TicketsConfig",
    "config_path_from",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/maild/maild.toml")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:////var/lib/maild/maild.db"

Security = Literal["tls", "starttls", "none"]
LmtpProtocol = Literal["lmtp", "smtp"]
SlaClock = Literal["working", "wall"]
Receipts = Literal["errors", "always"]

_SECURITIES: tuple[Security, ...] = ("tls", "starttls", "none")
_PROTOCOLS: tuple[LmtpProtocol, ...] = ("lmtp", "smtp")
_CLOCKS: tuple[SlaClock, ...] = ("working", "wall")
_RECEIPTS: tuple[Receipts, ...] = ("errors", "always")
_TICKET_TYPES = TYPES

_IMAP_PORTS: Mapping[Security, int] = {"tls": 993, "starttls": 143, "none": 143}
_SMTP_PORTS: Mapping[Security, int] = {"tls": 465, "starttls": 587, "none": 25}


class ConfigError(Exception):
    """The configuration is invalid or could not be read.

    ``errors`` lists every problem found, one string each, in the form
    ``"<key path>: <what was expected>, got <value>"`` (or
    ``"<key path>: required"``); ``str()`` joins them with newlines.
    ``source`` is the config file, when there was one.
    """

    def __init__(self, errors: Sequence[str], source: Path | None = None) -> None:
        self.errors: list[str] = list(errors)
        self.source = source
        super().__init__("\n".join(self.errors))


# --- the configuration -------------------------------------------------------
#
# Named tuples, not dataclasses: every command loads the config, and on
# Python 3.11 building these 20 classes as frozen dataclasses (six methods
# compiled by exec each, plus importing dataclasses with inspect) cost
# ~35 ms of CPU, a fifth of `maild queue` (issue 12). A named tuple is
# built without exec; ``_replace`` stands in for ``dataclasses.replace``.


class SupportConfig(NamedTuple):
    """``[support]``: who maild is.

    ``address`` (lowercased) is the support mailbox and the From of everything
    maild sends; ``name`` its display name (empty: none). ``tag`` is the
    subject tag (``[support #42]``), matched in any case. ``message_id_domain``
    is the domain of ``address`` unless configured (the loader fills it in).
    """

    address: str
    name: str = ""
    tag: str = "support"
    message_id_domain: str = ""


class MailboxConfig(NamedTuple):
    """``[mailbox]``: the IMAP mailbox maild reads.

    ``processed_folder`` empty means: leave processed mail in place and flag it
    ``$MaildProcessed``. ``poll_interval`` is used when IDLE is off or
    unsupported.
    """

    host: str
    port: int
    security: Security
    username: str
    password: str | None = None
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    quarantine_folder: str = "Quarantine"
    idle: bool = True
    poll_interval: timedelta = timedelta(seconds=60)

    def __repr__(self) -> str:
        return _repr_without_password(self)


class LmtpConfig(NamedTuple):
    """``[lmtp]``: where to listen for push delivery from an MTA.

    ``host`` is bare (``"::1"``, no brackets); port 0 asks for any free port.
    ``allow``: the client networks that may connect; empty means any client,
    which the loader permits only on a loopback address (SPEC section 11).
    """

    host: str
    port: int
    protocol: LmtpProtocol = "lmtp"
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the listener."""
        return _is_loopback(self.host)


def _repr_without_password(section: MailboxConfig | SmtpConfig) -> str:
    """The section's repr with its fields but the password (logs and tracebacks show reprs)."""
    shown = ", ".join(
        f"{name}={getattr(section, name)!r}" for name in section._fields if name != "password"
    )
    return f"{type(section).__name__}({shown})"


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address; any other name may reach beyond the machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpConfig(NamedTuple):
    """``[smtp]``: the relay maild sends through.

    ``retry_for`` is how long temporary (4xx) failures are retried before the
    message is marked failed. ``username`` and ``password`` are both set or
    both ``None``.
    """

    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = None
    retry_for: timedelta = timedelta(days=2)

    def __repr__(self) -> str:
        return _repr_without_password(self)


class DatabaseConfig(NamedTuple):
    """``[database]``: an SQLAlchemy async URL.

    A relative SQLite path has been made absolute against the config file's
    directory. A configured password is already inside the URL: do not log it.
    """

    url: str = DEFAULT_DATABASE_URL
    # several daemons on one database: how long the leader's claim on IMAP
    # ingestion and the scheduler lasts without renewal (the failover time)
    leader_lease: timedelta = timedelta(seconds=30)


class HoursConfig(NamedTuple):
    """``[hours]``: the working-hours calendar.

    ``days``: weekday numbers, 0 = Monday .. 6 = Sunday, sorted. ``ranges``:
    daily ``(start, end)`` local times, sorted by start and not overlapping;
    an end at or before its start means the range runs past midnight into the
    next day, so ``"22:00-06:00"`` is a night shift and ``"00:00-24:00"``
    (stored as ``(time(0), time(0))``) the whole day. ``holidays`` are extra
    non-working dates, on top of ``holiday_country``'s public holidays
    (``holiday_subdivision`` being e.g. a state) from the ``holidays`` library.
    """

    timezone: str = "UTC"
    days: tuple[int, ...] = (0, 1, 2, 3, 4)
    ranges: tuple[tuple[time, time], ...] = ((time(9), time(17)),)
    holidays: tuple[date, ...] = ()
    holiday_country: str | None = None
    holiday_subdivision: str | None = None

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The time zone of the working hours (validated at load)."""
        return zoneinfo.ZoneInfo(self.timezone)


class SlaTarget(NamedTuple):
    """Service-level targets for one ticket type.

    ``triage`` (type set) and ``first_response`` (first relayed steward reply)
    count from arrival; ``None`` means no target. ``clock`` says whether they
    are measured in working hours or on the wall clock.
    """

    triage: timedelta | None = timedelta(hours=8)
    first_response: timedelta | None = timedelta(hours=24)
    clock: SlaClock = "working"


def _default_sla_targets() -> Mapping[str, SlaTarget]:
    default = SlaTarget()
    return MappingProxyType(
        {"default": default, "incident": _builtin_sla_target("incident", default)}
    )


def _builtin_sla_target(ticket_type: str, default: SlaTarget) -> SlaTarget:
    # SPEC 4: incidents want a first human response within an hour, wall clock.
    if ticket_type == "incident":
        return default._replace(first_response=timedelta(hours=1), clock="wall")
    return default


class SlaConfig(NamedTuple):
    """``[sla]``: targets per ticket type and when to warn.

    ``warn_at`` is the fraction of a target (0 < x < 1) at which stewards are
    reminded. ``targets`` always has ``"default"`` (for any type without its own
    entry, and for untriaged tickets) and ``"incident"``; ``"change"`` and
    ``"guidance"`` only when configured. It is a read-only mapping, so this section is
    not hashable.
    """

    warn_at: float = 0.75
    # one read-only mapping shared by every default SlaConfig
    targets: Mapping[str, SlaTarget] = _default_sla_targets()

    def target_for(self, type: str | None) -> SlaTarget:
        """The targets for a ticket of ``type`` (``None``: untriaged)."""
        if type is not None and type in self.targets:
            return self.targets[type]
        return self.targets["default"]


class TicketsConfig(NamedTuple):
    """``[tickets]``.

    ``auto_close_after`` is in working hours after resolution;
    ``subject_match_days`` bounds threading rule 4; ``ack_rate_per_hour`` caps
    automatic mails per address in any hour and ``auto_per_day`` in any 24
    hours; ``max_cc`` caps the addresses on a ticket's cc; larger mails than
    ``max_message_bytes`` are kept as a stub (IMAP) or refused (LMTP).
    """

    auto_close_after: timedelta = timedelta(hours=48)
    confirmation_closes: bool = True
    subject_match_days: int = 30
    ack_rate_per_hour: int = 5
    auto_per_day: int = 20
    max_cc: int = 10
    max_message_bytes: int = 26214400


class HygieneConfig(NamedTuple):
    """``[hygiene]``: ``max_automatic_per_hour`` is the ceiling over all addresses."""

    max_automatic_per_hour: int = 300


class IncidentsConfig(NamedTuple):
    """``[incidents]``: update cadence (wall clock) and how early to nudge.

    ``nudge_before`` is shorter than ``update_every``; zero means no nudge.
    """

    update_every: timedelta = timedelta(hours=3)
    nudge_before: timedelta = timedelta(minutes=30)
    # mail the post-mortem outline to the incident commander on resolution
    postmortem_mail: bool = False


class ReportsConfig(NamedTuple):
    """``[reports]``: when the weekly report goes out, in ``hours.timezone``.

    ``weekly`` is (weekday 0 = Monday, local time), or ``None`` for never.
    """

    weekly: tuple[int, time] | None = None


class CommandsConfig(NamedTuple):
    """``[commands]``: trust and feedback for subject tag commands.

    With ``require_authenticated`` (the default) a steward's commands and
    relays need an authenticated mail (maild's own DKIM check, or the
    ``Authentication-Results`` of ``authserv_id``), else a confirmation by
    reply within ``confirm_within``.
    """

    require_authenticated: bool = True
    authserv_id: str | None = None
    receipts: Receipts = "errors"
    confirm_within: timedelta = timedelta(hours=24)
    dns_timeout: timedelta = timedelta(seconds=5)


class TemplatesConfig(NamedTuple):
    """``[templates]``: an existing directory of overrides, or ``None``."""

    dir: Path | None = None


class Steward(NamedTuple):
    """A ``[[stewards]]`` entry; ``name`` and ``addresses`` are lowercased."""

    name: str
    display_name: str
    addresses: tuple[str, ...]


class RosterConfig(NamedTuple):
    """``[roster]``: who is on duty when (see :mod:`maild.core.roster`).

    ``order`` holds steward names; ``tenure`` and ``stagger`` are whole days,
    ``tenure`` a multiple of ``stagger``, and ``tenure / stagger`` (the number
    on duty at once) is at most ``len(order)``.
    """

    order: tuple[str, ...]
    start: date
    tenure: timedelta = timedelta(weeks=4)
    stagger: timedelta = timedelta(weeks=2)


class Community(NamedTuple):
    """A ``[[communities]]`` entry; addresses and domains are lowercased."""

    name: str
    representatives: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    budget_hours_per_month: float | None = None


class Config(NamedTuple):
    """The whole validated configuration.

    ``mailbox``, ``lmtp``, ``smtp`` and ``roster`` are ``None`` when their
    section is absent; without a roster every steward counts as on duty.
    ``source`` is the file it was loaded from, if any.
    """

    support: SupportConfig
    mailbox: MailboxConfig | None = None
    lmtp: LmtpConfig | None = None
    smtp: SmtpConfig | None = None
    database: DatabaseConfig = DatabaseConfig()
    hours: HoursConfig = HoursConfig()
    sla: SlaConfig = SlaConfig()
    tickets: TicketsConfig = TicketsConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    reports: ReportsConfig = ReportsConfig()
    commands: CommandsConfig = CommandsConfig()
    hygiene: HygieneConfig = HygieneConfig()
    templates: TemplatesConfig = TemplatesConfig()
    stewards: tuple[Steward, ...] = ()
    roster: RosterConfig | None = None
    communities: tuple[Community, ...] = ()
    source: Path | None = None

    @property
    def internal_addresses(self) -> frozenset[str]:
        """The support address and every steward address: the team, never "external"."""
        return frozenset({self.support.address, *(a for s in self.stewards for a in s.addresses)})

    def steward_by_address(self, addr: str) -> Steward | None:
        """The steward one of whose addresses is ``addr`` (a bare address, any case)."""
        wanted = addr.strip().lower()
        return next((s for s in self.stewards if wanted in s.addresses), None)

    def steward_by_name(self, name: str) -> Steward | None:
        """The steward called ``name`` (any case)."""
        wanted = name.strip().lower()
        return next((s for s in self.stewards if s.name == wanted), None)

    def community_for(self, addr: str) -> Community | None:
        """The community a bare address ``addr`` belongs to (any case), or ``None``.

        A representative's exact address wins; otherwise the address's domain
        or any parent domain of it is looked up, the longest configured domain
        winning (``x@lab.pangeo.example`` matches ``pangeo.example``).
        """
        wanted = addr.strip().lower()
        if "@" not in wanted:
            return None
        for community in self.communities:
            if wanted in community.representatives:
                return community
        domain = wanted.rpartition("@")[2]
        best: Community | None = None
        best_length = 0
        for community in self.communities:
            for candidate in community.domains:
                matches = domain == candidate or domain.endswith("." + candidate)
                if matches and len(candidate) > best_length:
                    best, best_length = community, len(candidate)
        return best

    def community_by_name(self, name: str) -> Community | None:
        """The community called ``name`` (any case)."""
        wanted = name.strip().lower()
        return next((c for c in self.communities if c.name.lower() == wanted), None)


# --- loading -----------------------------------------------------------------


def config_path_from(arg: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to use: ``arg``, else ``$MAILD_CONFIG``, else the default."""
    env = os.environ if environ is None else environ
    if arg:
        return Path(arg)
    if env.get("MAILD_CONFIG"):
        return Path(env["MAILD_CONFIG"])
    return DEFAULT_CONFIG_PATH


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the TOML file at ``path``.

    Relative paths inside it are resolved against its directory; secrets are
    read from ``environ`` (default ``os.environ``) and files. Raises
    :class:`ConfigError` listing every problem, or naming the file (and line)
    when it cannot be read or is not valid TOML.
    """
    source = Path(path).absolute()
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read: {exc.strerror or exc}"], source) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text: {exc}"], source) from exc
    except tomllib.TOMLDecodeError as exc:
        # The message ends "(at line N, column M)".
        raise ConfigError([f"{source}: invalid TOML: {exc}"], source) from exc
    return _build(data, _Context(source.parent, os.environ if environ is None else environ), source)


def parse_config(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate an already-loaded config table (as :mod:`tomllib` returns it).

    Relative paths are resolved against ``base_dir`` (``None``: left relative,
    that is, to the current directory). Raises :class:`ConfigError` listing
    every problem.
    """
    return _build(data, _Context(base_dir, os.environ if environ is None else environ), None)


def _build(data: Mapping[str, Any], context: _Context, source: Path | None) -> Config:
    errors: list[str] = []
    root = _Reader(data, "", errors, context)
    support = _support(root.table("support"))
    mailbox = _mailbox(section) if (section := root.optional_table("mailbox")) else None
    lmtp = _lmtp(section) if (section := root.optional_table("lmtp")) else None
    smtp = _smtp(section) if (section := root.optional_table("smtp")) else None
    database = _database(root.table("database"))
    hours = _hours(root.table("hours"))
    sla = _sla(root.table("sla"))
    tickets = _tickets(root.table("tickets"))
    incidents = _incidents(root.table("incidents"))
    reports = _reports(root.table("reports"))
    commands = _commands(root.table("commands"))
    hygiene = _hygiene(root.table("hygiene"))
    templates = _templates(root.table("templates"))
    stewards = _stewards(root.tables("stewards"), support.address)
    roster = _roster(section, stewards) if (section := root.optional_table("roster")) else None
    communities = _communities(root.tables("communities"))
    root.finish()
    if errors:
        raise ConfigError(errors, source)
    return Config(
        support=support,
        mailbox=mailbox,
        lmtp=lmtp,
        smtp=smtp,
        database=database,
        hours=hours,
        sla=sla,
        tickets=tickets,
        incidents=incidents,
        reports=reports,
        commands=commands,
        hygiene=hygiene,
        templates=templates,
        stewards=stewards,
        roster=roster,
        communities=communities,
        source=source,
    )


# --- validation helpers --------------------------------------------------------


class _Context(NamedTuple):
    """Where relative paths start and which environment ``*_env`` keys read."""

    base_dir: Path | None
    environ: Mapping[str, str]

    def path(self, text: str) -> Path:
        path = Path(text)
        if path.is_absolute() or self.base_dir is None:
            return path
        return self.base_dir / path


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING = _Missing.MISSING
_L = TypeVar("_L", bound=str)

_DOMAIN_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
_DOMAIN = re.compile(_DOMAIN_PATTERN, re.ASCII | re.IGNORECASE)
_ADDRESS = re.compile(rf"[^@\s<>()\[\],;:\"\\]+@{_DOMAIN_PATTERN}", re.ASCII | re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9][a-z0-9._-]*", re.ASCII | re.IGNORECASE)
_LISTEN = re.compile(
    r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>[0-9]{1,5})", re.I
)
_CLOCK_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])|24:00", re.ASCII)
_CREDENTIALS_VAR = re.compile(r"\$(?:\{CREDENTIALS_DIRECTORY\}|CREDENTIALS_DIRECTORY\b)")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SECRET_KEYS = ("password", "password_file", "password_env")
_ADDRESS_EXPECTED = 'an email address like "name@example.org"'


def _show(value: object) -> str:
    """A TOML value as an error message shows it: TOML-like and cut short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 200 else value[:197] + "...", ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, list):
        shown = ", ".join(_show(item) for item in value[:5])
        return f"[{shown}{', ...' if len(value) > 5 else ''}]"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


def _kind(value: object) -> str:
    """A TOML value's type, for values (secrets) that must not be echoed."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _duration_text(value: timedelta) -> str:
    """:func:`maild.core.durations.format_duration`, imported for a message only: that
    module brings :mod:`decimal`, which a config without durations never needs."""
    from maild.core.durations import format_duration

    return format_duration(value)


def _suggest(word: str, choices: Sequence[str]) -> str:
    import difflib  # only a config with a mistake needs it

    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


class _Reader:
    """Reads one TOML table for validation, remembering where it is.

    Every getter returns a usable value (the default when the key is missing
    or wrong) and records any problem instead of raising, so one pass finds
    every error. Keys asked for are remembered; :meth:`finish` reports the
    others as unknown.
    """

    def __init__(
        self, table: Mapping[str, Any], path: str, errors: list[str], context: _Context
    ) -> None:
        self.path = path
        self.context = context
        self._table = table
        self._errors = errors
        self._known: list[str] = []

    def path_of(self, key: str) -> str:
        if not key:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> None:
        self._errors.append(f"{self.path_of(key)}: {message}")

    def expected(self, key: str, what: str, value: object, hint: str = "") -> None:
        self.error(key, f"expected {what}, got {_show(value)}{hint}")

    def get(self, key: str) -> Any:
        if key not in self._known:
            self._known.append(key)
        return self._table.get(key, _MISSING)

    def given(self, key: str) -> bool:
        return self.get(key) is not _MISSING

    def finish(self) -> None:
        for key in self._table:
            if key not in self._known:
                self.error(key, "unknown key" + _suggest(key, self._known))

    # Scalars.

    def optional_text(self, key: str, *, nonempty: bool = False) -> str | None:
        value = self.get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            self.expected(key, "a string", value)
            return None
        if nonempty and not value.strip():
            self.expected(key, "a non-empty string", value)
            return None
        return value.strip() if nonempty else value

    def text(self, key: str, default: str, *, nonempty: bool = False) -> str:
        value = self.optional_text(key, nonempty=nonempty)
        return default if value is None else value

    def required_text(self, key: str) -> str:
        if not self.given(key):
            self.error(key, "required")
            return ""
        return self.text(key, "", nonempty=True)

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.get(key)
        if value is _MISSING:
            return default
        # bool is an int subclass; `port = true` is a mistake, not port 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.expected(key, "an integer", value)
            return default
        if maximum is not None and minimum is not None and not minimum <= value <= maximum:
            self.expected(key, f"an integer from {minimum} to {maximum}", value)
        elif minimum is not None and value < minimum:
            self.expected(key, f"an integer of at least {minimum}", value)
        return value

    def number(
        self, key: str, default: float | None, *, minimum: float | None = None
    ) -> float | None:
        value = self.get(key)
        if value is _MISSING:
            return default
        # Integers are fine where a number is expected (`budget = 10`); booleans are not.
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.expected(key, "a number", value)
            return default
        if not math.isfinite(value):
            self.expected(key, "a finite number", value)
            return default
        if minimum is not None and value < minimum:
            self.expected(key, f"a number of at least {minimum:g}", value)
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.expected(key, "true or false", value)
            return default
        return value

    def choice(self, key: str, choices: tuple[_L, ...], default: _L) -> _L:
        value = self.get(key)
        if value is _MISSING:
            return default
        for candidate in choices:
            if isinstance(value, str) and value.strip().lower() == candidate:
                return candidate
        self.expected(key, "one of " + ", ".join(f'"{c}"' for c in choices), value)
        return default

    def duration(self, key: str, default: timedelta, *, allow_zero: bool = False) -> timedelta:
        value = self.get(key)
        if value is _MISSING:
            return default
        parsed = self.duration_value(key, value, allow_zero=allow_zero)
        return default if parsed is None else parsed

    def duration_value(self, key: str, value: object, *, allow_zero: bool) -> timedelta | None:
        # imported when a duration is given (it brings Decimal): many configs give none
        from maild.core.durations import DURATION_EXPECTED, parse_duration

        if not isinstance(value, str):
            self.expected(key, DURATION_EXPECTED, value)
            return None
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            self.error(key, str(exc))
            return None
        if not allow_zero and not parsed:
            self.expected(key, "a duration longer than zero", value)
            return None
        return parsed

    def required_date(self, key: str) -> date | None:
        """A required date: a TOML date or an ISO ``"YYYY-MM-DD"`` string."""
        value = self.get(key)
        if value is _MISSING:
            self.error(key, "required")
            return None
        return self.date_value(key, value)

    def date_value(self, key: str, value: object) -> date | None:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        self.expected(key, 'a date like "2026-11-02"', value)
        return None

    # Collections.

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(key)
        if value is _MISSING:
            return default
        if not isinstance(value, list):
            self.expected(key, "an array of strings", value)
            return default
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.expected(f"{key}[{index}]", "a string", item)
        return tuple(item.strip() for item in value if isinstance(item, str))

    def addresses(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Email addresses, lowercased; each malformed one is reported."""
        found = self.strings(key, default)
        for index, address in enumerate(found):
            if not _ADDRESS.fullmatch(address):
                self.expected(f"{key}[{index}]", _ADDRESS_EXPECTED, address)
        return tuple(address.lower() for address in found)

    def table(self, key: str) -> _Reader:
        """A sub-table; an absent one reads as empty, so its defaults apply."""
        return self.optional_table(key) or _Reader(
            {}, self.path_of(key), self._errors, self.context
        )

    def optional_table(self, key: str) -> _Reader | None:
        value = self.get(key)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.expected(key, f"a table ([{self.path_of(key)}])", value)
            return None
        return _Reader(value, self.path_of(key), self._errors, self.context)

    def tables(self, key: str) -> list[_Reader]:
        value = self.get(key)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.expected(key, f"an array of tables ([[{self.path_of(key)}]])", value)
            return []
        return [
            _Reader(item, f"{self.path_of(key)}[{index}]", self._errors, self.context)
            for index, item in enumerate(value)
        ]

    # Secrets.

    def secret(self) -> str | None:
        """The password from ``password``, ``password_file`` or ``password_env``.

        ``None`` when none is given (or it could not be read: then an error is
        recorded). Values are never echoed in errors.
        """
        given = [key for key in _SECRET_KEYS if self.given(key)]
        if not given:
            return None
        if len(given) > 1:
            self.error(
                given[1],
                f"conflicts with {self.path_of(given[0])}: "
                "set only one of password, password_file or password_env",
            )
            return None
        key = given[0]
        value = self.get(key)
        if not isinstance(value, str) or not value:
            self.error(key, f"expected a non-empty string, got {_kind(value)}")
            return None
        if key == "password":
            return value
        if key == "password_env":
            return self._secret_from_env(key, value)
        return self._secret_from_file(key, value)

    def _secret_from_env(self, key: str, name: str) -> str | None:
        secret = self.context.environ.get(name)
        if secret is None:
            self.error(key, f"environment variable {name} is not set")
        elif not secret:
            self.error(key, f"environment variable {name} is empty")
        return secret or None

    def _secret_from_file(self, key: str, text: str) -> str | None:
        if _CREDENTIALS_VAR.search(text):
            directory = self.context.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                self.error(
                    key,
                    "$CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit "
                    "with LoadCredential=)",
                )
                return None
            text = _CREDENTIALS_VAR.sub(lambda _: directory, text)
        path = self.context.path(text)
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            self.error(key, f'cannot read "{path}": {reason or exc}')
            return None
        # Editors and `echo` add a final newline that is not part of the secret.
        secret = content.rstrip("\r\n")
        if not secret:
            self.error(key, f'"{path}" is empty')
        return secret or None


# --- sections ------------------------------------------------------------------


def _support(r: _Reader) -> SupportConfig:
    address = r.required_text("address")
    if address and not _ADDRESS.fullmatch(address):
        r.expected("address", _ADDRESS_EXPECTED, address)
    name = r.text("name", "")
    if "\n" in name or "\r" in name:
        r.expected("name", "a single line", name)
    tag = r.text("tag", "support", nonempty=True)
    if not _WORD.fullmatch(tag):
        r.expected("tag", "a word of letters, digits, '.', '_' or '-'", tag)
    domain = r.optional_text("message_id_domain", nonempty=True)
    if domain is not None and not _DOMAIN.fullmatch(domain):
        r.expected("message_id_domain", 'a domain like "example.org"', domain)
    r.finish()
    return SupportConfig(
        address=address.lower(),
        name=name,
        tag=tag,
        message_id_domain=(domain or address.rpartition("@")[2]).lower(),
    )


def _mailbox(r: _Reader) -> MailboxConfig:
    host = r.required_text("host")
    security = r.choice("security", _SECURITIES, "tls")
    port = r.integer("port", _IMAP_PORTS[security], minimum=1, maximum=65535)
    username = r.required_text("username")
    password = r.secret()
    if not any(r.given(key) for key in _SECRET_KEYS):
        r.error("password", "required (set password, password_file or password_env)")
    config = MailboxConfig(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        folder=r.text("folder", "INBOX", nonempty=True),
        # Empty is meaningful: leave processed mail in place, flagged.
        processed_folder=r.text("processed_folder", "Processed"),
        quarantine_folder=r.text("quarantine_folder", "Quarantine", nonempty=True),
        idle=r.flag("idle", True),
        poll_interval=r.duration("poll_interval", timedelta(seconds=60)),
    )
    r.finish()
    return config


def _lmtp(r: _Reader) -> LmtpConfig:
    listen = r.text("listen", "127.0.0.1:2424")
    match = _LISTEN.fullmatch(listen.strip())
    host, port = "127.0.0.1", 2424
    if match is None or int(match["port"]) > 65535:
        r.expected("listen", 'a host and port like "127.0.0.1:2424" or "[::1]:2424"', listen)
    else:
        host, port = match["v6"] or match["host"], int(match["port"])
    protocol = r.choice("protocol", _PROTOCOLS, "lmtp")
    allow = _networks(r, "allow")
    if not r.given("allow") and match is not None and not _is_loopback(host):
        r.error(
            "allow",
            f"required when listen is not a loopback address ({listen.strip()}): "
            'the client networks that may deliver, like ["10.0.0.0/8"]',
        )
    r.finish()
    return LmtpConfig(host=host, port=port, protocol=protocol, allow=allow)


def _networks(r: _Reader, key: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """IPv4 or IPv6 networks (a bare address is a network of one); each bad one reported."""
    if r.given(key) and r.get(key) == []:
        r.expected(key, 'at least one network like "10.0.0.0/8"', [])
    networks = []
    for index, text in enumerate(r.strings(key, ())):
        try:
            # host bits set ("192.168.1.7/24") mean the network they are in
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            r.expected(f"{key}[{index}]", 'a network like "10.0.0.0/8" or "::1"', text)
    return tuple(networks)


def _smtp(r: _Reader) -> SmtpConfig:
    host = r.required_text("host")
    security = r.choice("security", _SECURITIES, "starttls")
    port = r.integer("port", _SMTP_PORTS[security], minimum=1, maximum=65535)
    username = r.optional_text("username", nonempty=True)
    password = r.secret()
    has_secret = any(r.given(key) for key in _SECRET_KEYS)
    if has_secret and username is None and not r.given("username"):
        r.error("username", "required when a password is set")
    if username is not None and not has_secret:
        r.error("password", "required with a username (password, password_file or password_env)")
    config = SmtpConfig(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        retry_for=r.duration("retry_for", timedelta(days=2)),
    )
    r.finish()
    return config


def _database(r: _Reader) -> DatabaseConfig:
    text = r.text("url", DEFAULT_DATABASE_URL, nonempty=True)
    lease = r.duration("leader_lease", timedelta(seconds=30))
    if lease < timedelta(seconds=2):
        r.expected("leader_lease", "at least 2s", _duration_text(lease))
        lease = timedelta(seconds=2)
    password = r.secret()
    plain = _plain_sqlite_url(text, r.context.base_dir) if password is None else None
    if plain is not None:  # what make_url below gives, without importing SQLAlchemy
        r.finish()
        return DatabaseConfig(url=plain, leader_lease=lease)
    # imported here: SQLAlchemy costs ~150 ms, and `maild --help` or a config
    # check need none of it otherwise
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        r.expected("url", f'an SQLAlchemy URL like "{DEFAULT_DATABASE_URL}"', text)
        r.finish()
        return DatabaseConfig(leader_lease=lease)
    changed = False
    if "+" not in url.drivername:
        # The store runs on asyncio: a bare "sqlite://" would pick a blocking driver.
        r.expected(
            "url",
            'a URL with an async driver, like "sqlite+aiosqlite:///…" or "postgresql+asyncpg://…"',
            text,
        )
    database = url.database or ""
    base_dir = r.context.base_dir
    relative = database not in ("", ":memory:") and not database.startswith(("/", "file:"))
    if url.get_backend_name() == "sqlite" and relative and base_dir is not None:
        # Otherwise the database would move with the daemon's working directory.
        url = url.set(database=str(base_dir / database))
        changed = True
    if password is not None:
        url = url.set(password=password)
        changed = True
    r.finish()
    # Rendering re-quotes some characters (":memory:"), so only when needed.
    return DatabaseConfig(
        url=url.render_as_string(hide_password=False) if changed else text, leader_lease=lease
    )


# a SQLite URL with a driver and nothing SQLAlchemy would unquote or parse
_PLAIN_SQLITE = re.compile(r"(sqlite\+\w+):///([^?%]*)", re.ASCII)


def plain_sqlite(url: str) -> tuple[str, str] | None:
    """The driver and database of a SQLite URL that means what it says (no query
    string, nothing %-quoted), as ``make_url`` would read them; None for any other."""
    match = _PLAIN_SQLITE.fullmatch(url)
    return (match[1], match[2]) if match is not None else None


def _plain_sqlite_url(text: str, base_dir: Path | None) -> str | None:
    """``_database``'s URL for a plain SQLite URL, or None for any other.

    ``maild queue`` reads SQLite without SQLAlchemy (``maild.store.sqlite_read``),
    so its config must not import SQLAlchemy for ``make_url`` either: for these
    URLs the result is the same (``tests/unit/test_sqlite_read.py`` compares).
    """
    plain = plain_sqlite(text)
    if plain is None:
        return None
    driver, database = plain
    relative = database not in ("", ":memory:") and not database.startswith(("/", "file:"))
    if not relative or base_dir is None:
        return text
    from urllib.parse import quote

    return f"{driver}:///" + quote(str(base_dir / database), safe=" +/")


def _hours(r: _Reader) -> HoursConfig:
    timezone = r.text("timezone", "UTC", nonempty=True)
    _check_timezone(r, timezone)
    days = _days(r)
    ranges = _ranges(r)
    holidays: list[date] = []
    value = r.get("holidays")
    if value is not _MISSING and not isinstance(value, list):
        r.expected("holidays", 'an array of dates like ["2026-12-25"]', value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            day = r.date_value(f"holidays[{index}]", item)
            if day is not None:
                holidays.append(day)
    country = r.optional_text("holiday_country", nonempty=True)
    subdivision = r.optional_text("holiday_subdivision", nonempty=True)
    if country is not None:
        country, subdivision = _check_holiday_region(r, country, subdivision)
    elif subdivision is not None:
        r.error("holiday_subdivision", "needs holiday_country")
    r.finish()
    return HoursConfig(
        timezone=timezone,
        days=days,
        ranges=ranges,
        holidays=tuple(sorted(set(holidays))),
        holiday_country=country,
        holiday_subdivision=subdivision,
    )


def _check_timezone(r: _Reader, name: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        known = sorted(zoneinfo.available_timezones())
        same = [zone for zone in known if zone.lower() == name.lower()]
        hint = f' (did you mean "{same[0]}"?)' if same else _suggest(name, known)
        r.expected("timezone", 'an IANA time zone like "America/Chicago"', name, hint)


def _days(r: _Reader) -> tuple[int, ...]:
    names = r.strings("days", ("mon", "tue", "wed", "thu", "fri"))
    days: set[int] = set()
    for index, name in enumerate(names):
        lowered = name.lower()
        if lowered in _DAYS:
            days.add(_DAYS.index(lowered))
        elif lowered in _FULL_DAYS:
            days.add(_FULL_DAYS.index(lowered))
        else:
            hint = _suggest(lowered, _DAYS)
            r.expected(f"days[{index}]", 'a weekday "mon" .. "sun"', name, hint)
    if not names:
        r.expected("days", "at least one working day", [])
    return tuple(sorted(days)) or (0, 1, 2, 3, 4)


def _ranges(r: _Reader) -> tuple[tuple[time, time], ...]:
    texts = r.strings("ranges", ("09:00-17:00",))
    found: list[tuple[time, time, str]] = []
    for index, text in enumerate(texts):
        start_text, dash, end_text = text.partition("-")
        start = _clock_time(start_text.strip())
        end = _clock_time(end_text.strip())
        if not dash or start is None or end is None or start_text.strip() == "24:00":
            r.expected(f"ranges[{index}]", 'a time range like "08:00-12:00"', text)
            continue
        found.append((start, end, text))
    if not texts:
        r.expected("ranges", 'at least one time range like "09:00-17:00"', [])
    # Overlapping ranges would count the same hour twice in SLA arithmetic.
    for i, (start_a, end_a, text_a) in enumerate(found):
        for start_b, end_b, text_b in found[i + 1 :]:
            if _ranges_overlap(start_a, end_a, start_b, end_b):
                r.error("ranges", f'"{text_a}" and "{text_b}" overlap')
    found.sort(key=lambda item: item[0])
    return tuple((start, end) for start, end, _ in found) or ((time(9), time(17)),)


def _clock_time(text: str) -> time | None:
    """``"HH:MM"`` as a time; ``"24:00"`` is midnight, ``time(0)``."""
    if not _CLOCK_TIME.fullmatch(text):
        return None
    hour, minute = (int(part) for part in text.split(":"))
    return time(hour % 24, minute)


def _ranges_overlap(start_a: time, end_a: time, start_b: time, end_b: time) -> bool:
    def minutes(start: time, end: time) -> tuple[int, int]:
        low, high = start.hour * 60 + start.minute, end.hour * 60 + end.minute
        return low, high if high > low else high + 1440  # runs past midnight

    a_low, a_high = minutes(start_a, end_a)
    b_low, b_high = minutes(start_b, end_b)
    # A range past midnight also meets the next day's early ranges.
    return any(a_low < b_high + shift and b_low + shift < a_high for shift in (-1440, 0, 1440))


def _check_holiday_region(
    r: _Reader, country: str, subdivision: str | None
) -> tuple[str | None, str | None]:
    """Check the region with the ``holidays`` library; return its spelling of it."""
    try:
        import holidays
    except ImportError:
        r.error("holiday_country", "needs the holidays package (pip install holidays)")
        return None, None
    country = country.upper()
    supported = holidays.list_supported_countries()
    if country not in supported:
        r.expected(
            "holiday_country", 'a country code known to the holidays library, like "US"', country
        )
        return None, None
    if subdivision is None:
        return country, None
    for spelling in (subdivision, subdivision.upper()):
        try:
            holidays.country_holidays(country, subdiv=spelling)
        except NotImplementedError:
            continue
        return country, spelling
    codes = supported[country]
    examples = ", ".join(f'"{code}"' for code in codes[:6]) + (", ..." if len(codes) > 6 else "")
    what = f"a subdivision of {country} ({examples})" if codes else f"none: {country} has none"
    r.expected("holiday_subdivision", what, subdivision)
    return country, None


def _sla(r: _Reader) -> SlaConfig:
    warn_at = r.number("warn_at", 0.75) or 0.0  # never None: it has a default
    if not 0 < warn_at < 1:
        r.expected("warn_at", "a number between 0 and 1 (exclusive)", warn_at)
    default = _sla_target(r.table("default"), SlaTarget())
    targets = {"default": default}
    for ticket_type in _TICKET_TYPES:
        base = _builtin_sla_target(ticket_type, default)
        section = r.optional_table(ticket_type)
        if section is not None:
            targets[ticket_type] = _sla_target(section, base)
        elif base is not default:
            targets[ticket_type] = base
    r.finish()
    return SlaConfig(warn_at=warn_at, targets=MappingProxyType(targets))


def _sla_target(r: _Reader, base: SlaTarget) -> SlaTarget:
    """A target section; unspecified fields come from ``base``; "none" disables one."""

    def target(key: str, inherited: timedelta | None) -> timedelta | None:
        value = r.get(key)
        if value is _MISSING:
            return inherited
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        return r.duration_value(key, value, allow_zero=False)

    result = SlaTarget(
        triage=target("triage", base.triage),
        first_response=target("first_response", base.first_response),
        clock=r.choice("clock", _CLOCKS, base.clock),
    )
    r.finish()
    return result


def _tickets(r: _Reader) -> TicketsConfig:
    config = TicketsConfig(
        auto_close_after=r.duration("auto_close_after", timedelta(hours=48)),
        confirmation_closes=r.flag("confirmation_closes", True),
        subject_match_days=r.integer("subject_match_days", 30, minimum=0),
        ack_rate_per_hour=r.integer("ack_rate_per_hour", 5, minimum=0),
        auto_per_day=r.integer("auto_per_day", 20, minimum=0),
        max_cc=r.integer("max_cc", 10, minimum=0),
        max_message_bytes=r.integer("max_message_bytes", 26214400, minimum=1),
    )
    r.finish()
    return config


def _incidents(r: _Reader) -> IncidentsConfig:
    update_every = r.duration("update_every", timedelta(hours=3))
    nudge_before = r.duration("nudge_before", timedelta(minutes=30), allow_zero=True)
    if nudge_before >= update_every:
        r.expected(
            "nudge_before",
            f"less than update_every ({_duration_text(update_every)})",
            _duration_text(nudge_before),
        )
    postmortem_mail = r.flag("postmortem_mail", False)
    r.finish()
    return IncidentsConfig(
        update_every=update_every, nudge_before=nudge_before, postmortem_mail=postmortem_mail
    )


def _reports(r: _Reader) -> ReportsConfig:
    text = r.optional_text("weekly")
    weekly = None
    if text is not None and text.strip():
        weekly = parse_weekly(text)
        if weekly is None:
            r.expected("weekly", 'a weekday and a local time such as "mon 09:00", or ""', text)
    r.finish()
    return ReportsConfig(weekly=weekly)


def parse_weekly(text: str) -> tuple[int, time] | None:
    """``"mon 09:00"`` (or ``"Monday 9:00"``) -> (0, 09:00); None if it is not that."""
    parts = text.strip().lower().split()
    if len(parts) != 2:
        return None
    day, clock = parts
    if day in _DAYS:
        weekday = _DAYS.index(day)
    elif day in _FULL_DAYS:
        weekday = _FULL_DAYS.index(day)
    else:
        return None
    hour, sep, minute = clock.partition(":")
    if not sep or not hour.isdigit() or not minute.isdigit() or len(minute) != 2:
        return None
    if not (0 <= int(hour) <= 23 and 0 <= int(minute) <= 59):
        return None
    return weekday, time(int(hour), int(minute))


def _hygiene(r: _Reader) -> HygieneConfig:
    config = HygieneConfig(
        max_automatic_per_hour=r.integer("max_automatic_per_hour", 300, minimum=0),
    )
    r.finish()
    return config


def _commands(r: _Reader) -> CommandsConfig:
    # without authserv_id maild's own DKIM check is the only way to authenticate
    require = r.flag("require_authenticated", True)
    authserv_id = r.optional_text("authserv_id", nonempty=True)
    receipts = r.choice("receipts", _RECEIPTS, "errors")
    confirm_within = r.duration("confirm_within", timedelta(hours=24))
    dns_timeout = r.duration("dns_timeout", timedelta(seconds=5))
    r.finish()
    return CommandsConfig(
        require_authenticated=require,
        authserv_id=authserv_id,
        receipts=receipts,
        confirm_within=confirm_within,
        dns_timeout=dns_timeout,
    )


def _templates(r: _Reader) -> TemplatesConfig:
    text = r.optional_text("dir", nonempty=True)
    directory = None if text is None else r.context.path(text)
    if directory is not None and not directory.is_dir():
        # Checked now: a template loader would silently fall back to the shipped ones.
        r.expected("dir", "an existing directory", str(directory))
    r.finish()
    return TemplatesConfig(dir=directory)


def _stewards(readers: list[_Reader], support_address: str) -> tuple[Steward, ...]:
    stewards: list[Steward] = []
    names: dict[str, str] = {}  # name -> path of the steward who has it
    owners: dict[str, str] = {}  # address -> name of the steward who has it
    for r in readers:
        name = r.required_text("name").lower()
        if not name:
            pass  # already reported
        elif not _WORD.fullmatch(name):
            r.expected("name", "a word of letters, digits, '.', '_' or '-'", name)
        elif name in ("me", "none"):
            # [assign=me] and [assign=none] already mean something.
            r.expected("name", 'a name other than "me" or "none"', name)
        elif name in names:
            r.error("name", f'"{name}" is already the name of {names[name]}')
        else:
            names[name] = r.path
        display_name = r.text("display_name", name, nonempty=True)
        if "\n" in display_name or "\r" in display_name:
            r.expected("display_name", "a single line", display_name)
        addresses = _steward_addresses(r)
        for index, address in enumerate(addresses):
            key = f"addresses[{index}]" if r.given("addresses") else "address"
            if address == support_address:
                r.error(key, f'"{address}" is the support address itself')
            elif owners.get(address, name) != name:
                r.error(key, f'"{address}" is already an address of steward "{owners[address]}"')
            owners.setdefault(address, name)
        r.finish()
        stewards.append(Steward(name=name, display_name=display_name, addresses=addresses))
    return tuple(stewards)


def _steward_addresses(r: _Reader) -> tuple[str, ...]:
    """``addresses = [...]``, or a single ``address = "..."``."""
    if r.given("address") and r.given("addresses"):
        r.error("address", f"conflicts with {r.path_of('addresses')}: set only one")
        return ()
    if r.given("address"):
        address = r.required_text("address")
        if address and not _ADDRESS.fullmatch(address):
            r.expected("address", _ADDRESS_EXPECTED, address)
        return (address.lower(),) if address else ()
    if not r.given("addresses"):
        r.error("addresses", "required")
        return ()
    addresses = r.addresses("addresses", ())
    if not addresses and isinstance(r.get("addresses"), list):
        r.expected("addresses", "at least one email address", [])
    return addresses


def _roster(r: _Reader, stewards: tuple[Steward, ...]) -> RosterConfig:
    known = [steward.name for steward in stewards]
    if not r.given("order"):
        r.error("order", "required")
    given = r.strings("order", ())
    order: list[str] = []
    for index, name in enumerate(given):
        lowered = name.lower()
        if lowered not in known:
            hint = _suggest(lowered, known)
            r.expected(f"order[{index}]", "the name of a [[stewards]] entry", name, hint)
        elif lowered in order:
            r.expected(f"order[{index}]", "each steward once", name)
        else:
            order.append(lowered)
    start = r.required_date("start")
    tenure = r.duration("tenure", timedelta(weeks=4))
    stagger = r.duration("stagger", timedelta(weeks=2))
    day = timedelta(days=1)
    # Changes happen at local midnight (SPEC 5), so only whole days make sense.
    for key, value in (("tenure", tenure), ("stagger", stagger)):
        if value % day:
            r.expected(key, "whole days (the roster changes at midnight)", _duration_text(value))
    if tenure % stagger:
        what = f"a multiple of stagger ({_duration_text(stagger)})"
        r.expected("tenure", what, _duration_text(tenure))
    elif given and tenure // stagger > len(given):
        r.expected(
            "order",
            f"at least {tenure // stagger} stewards (tenure / stagger are on duty at once)",
            r.get("order"),
        )
    r.finish()
    return RosterConfig(
        order=tuple(order), start=start or date(1970, 1, 1), tenure=tenure, stagger=stagger
    )


def _communities(readers: list[_Reader]) -> tuple[Community, ...]:
    communities: list[Community] = []
    names: dict[str, str] = {}  # lowercased name -> path
    owners: dict[str, str] = {}  # address or domain -> community name
    for r in readers:
        name = r.required_text("name")
        if not name:
            pass  # already reported
        elif any(char in name for char in "[];=\r\n"):
            # It has to fit in a subject tag: [community=NAME].
            r.expected("name", "a name without [ ] ; = or line breaks", name)
        elif name.lower() in names:
            r.error("name", f'"{name}" is already the name of {names[name.lower()]}')
        else:
            names[name.lower()] = r.path
        representatives = r.addresses("representatives", ())
        domains = tuple(domain.lower() for domain in r.strings("domains", ()))
        for index, domain in enumerate(domains):
            if not _DOMAIN.fullmatch(domain):
                r.expected(f"domains[{index}]", 'a domain like "pangeo.example"', domain)
        for key, values in (("representatives", representatives), ("domains", domains)):
            for index, value in enumerate(values):
                if value in owners and owners[value] != name:
                    owner = owners[value]
                    r.error(f"{key}[{index}]", f'"{value}" is already in community "{owner}"')
                owners.setdefault(value, name)
        budget = r.number("budget_hours_per_month", None, minimum=0)
        r.finish()
        communities.append(
            Community(
                name=name,
                representatives=representatives,
                domains=domains,
                budget_hours_per_month=budget,
            )
        )
    return tuple(communities)
