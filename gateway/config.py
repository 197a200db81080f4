"""Configuration: mailboxes.toml parsed once into frozen, typed objects.

The daemon and the CLI call :func:`load` and pass the resulting
:class:`Config` explicitly; nothing reads the file twice or keeps a global.
Every problem is reported as one line naming the file, the key and what is
wrong, and all problems are collected before failing, so an operator fixes a
file in one go instead of one error per restart. Unknown keys are errors:
a typo such as ``smtp_listn`` must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.businesstime import Hours
from gateway.errors import ConfigError
from gateway.parse import ParseLimits

DEFAULT_PATH = Path("mailboxes.toml")
ENV_CONFIG = "GATEWAY_CONFIG"
ENV_DATABASE = "GATEWAY_DATABASE_URL"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$")
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")

# Every key each table knows; anything else is an error (a typo must not pass).
GATEWAY_KEYS = frozenset(
    {
        "hostname",
        "database",
        "smtp_listen",
        "lmtp_listen",
        "max_message_size",
        "max_recipients",
        "ticket_number_start",
        "max_header_size",
        "max_mime_depth",
        "max_mime_parts",
        "log_level",
        "outbound",
        "outbound_max_age",
        "templates_dir",
        "portal_url",
        "portal_listen",
        "link_lifetime",
        "ack_limit",
        "ack_daily_limit",
        "auto_mail_per_recipient",
        "auto_mail_per_ticket",
        "auto_mail_per_mailbox",
        "bounce_suppression",
        "dkim_key_file",
        "dkim_selector",
        "dkim_domain",
        "trusted_authserv_id",
        "secret_file",
        "pid_file",
        "api_rate",
        "tls_cert_file",
        "tls_key_file",
        "tls_required",
        "metrics_listen",
        "log_format",
        "timed_jobs_every",
        "processing",
    }
)
MAILBOX_KEYS = frozenset(
    {
        "address",
        "aliases",
        "name",
        "language",
        "category",
        "tag",
        "categories",
        "agent",
        "max_agents",
        "copy_agents",
        "imap",
        "timezone",
        "hours",
        "holidays",
        "sla",
        "category_priority",
        "subaddress_categories",
        "remind_after",
        "auto_resolve_after",
        "auto_close_after",
        "reopen_window",
    }
)
SLA_KEYS = frozenset({"first_response", "next_response", "resolution", "warn_at"})
PRIORITIES = ("low", "medium", "high", "urgent")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
_ADDRESS_RE = re.compile(r"^[^@\s+]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class ListenAddress:
    """Where a listener binds: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str = ""

    def __str__(self) -> str:
        if self.unix_path:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Rate:
    """At most ``count`` events per ``seconds``, e.g. ``1/10min``."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}s"


@dataclass(frozen=True)
class LoopLimits:
    """Caps on automatic mail that hold even when every loop detector misses."""

    ack_per_sender: Rate = Rate(1, 600)
    ack_per_sender_daily: Rate = Rate(20, 86400)
    auto_per_recipient: Rate = Rate(30, 600)
    auto_per_ticket: Rate = Rate(10, 600)
    auto_per_mailbox: Rate = Rate(500, 600)


@dataclass(frozen=True)
class Agent:
    """Someone who answers a mailbox's tickets from their own mail client."""

    email: str
    name: str
    role: str = "agent"  # agent | admin


@dataclass(frozen=True)
class OAuth2:
    """Where an XOAUTH2 access token comes from: a file, or a command's output.

    Either is read (or run) afresh before every login, so a token refreshed
    by another program (or by the command itself) is always the one used.
    """

    token_file: Path | None = None
    token_command: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImapSettings:
    """The [mailbox.imap] table: read this mailbox from an IMAP account."""

    host: str
    username: str
    port: int = 993
    security: str = "tls"  # tls | starttls | plain (plain only with insecure = true)
    password_file: Path | None = None
    oauth2: OAuth2 | None = None
    folder: str = "INBOX"
    after_import: str = "move:Imported"  # move:FOLDER | flag | delete
    poll_interval: int = 60
    idle: bool = True
    ca_file: Path | None = None

    @property
    def move_to(self) -> str:
        """The folder imported messages are moved to, or "" (flag or delete)."""
        return self.after_import[5:] if self.after_import.startswith("move:") else ""


@dataclass(frozen=True)
class Sla:
    """Targets per priority, in business seconds; a priority not listed has no target."""

    first_response: tuple[tuple[str, int], ...] = (
        ("urgent", 2 * 3600),
        ("high", 6 * 3600),
        ("medium", 24 * 3600),
        ("low", 24 * 3600),
    )
    next_response: tuple[tuple[str, int], ...] = ()
    resolution: tuple[tuple[str, int], ...] = ()
    warn_at: float = 0.75  # share of a target after which the agents are warned

    def target(self, kind: str, priority: str) -> int | None:
        """The target in business seconds for ``kind`` (first_response, ...), or None."""
        targets: tuple[tuple[str, int], ...] = getattr(self, kind)
        return dict(targets).get(priority)


@dataclass(frozen=True)
class Lifecycle:
    """Timed steps of a ticket's life, in seconds; None is off."""

    remind_after: int | None = None  # remind a customer we wait for, after this long
    auto_resolve_after: int | None = None  # resolve a ticket still waiting, after this long
    auto_close_after: int = 24 * 3600  # close a resolved ticket nobody answered
    reopen_window: int = 30 * 86400  # a reply to a ticket closed longer ago opens a new one


@dataclass(frozen=True)
class Mailbox:
    """One support address, how its tickets look, and who answers them."""

    address: str
    name: str
    language: str = "en"
    category: str = "general"
    tag: str = "[#{number}]"
    aliases: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    agents: tuple[Agent, ...] = ()
    max_agents: int = 0  # 0: no limit
    copy_agents: bool = True  # other agents get a copy of each agent's reply
    imap: ImapSettings | None = None  # also read from this IMAP account
    hours: Hours = field(default_factory=Hours)  # business hours; always open by default
    sla: Sla = field(default_factory=Sla)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    category_priority: tuple[tuple[str, str], ...] = ()  # category -> default priority
    subaddress_categories: tuple[tuple[str, str], ...] = ()  # support+DETAIL@ -> category

    def agent(self, email: str) -> Agent | None:
        """The agent with this address, if any."""
        return next((a for a in self.agents if a.email == email.lower()), None)

    @property
    def admins(self) -> tuple[Agent, ...]:
        return tuple(a for a in self.agents if a.role == "admin")

    @property
    def addresses(self) -> tuple[str, ...]:
        """The main address and its aliases, lower-case."""
        return (self.address, *self.aliases)

    def default_priority(self, category: str) -> str:
        """The priority a new ticket in ``category`` starts with."""
        return dict(self.category_priority).get(category, "medium")

    def category_for(self, details: Sequence[str]) -> str | None:
        """The category named by a recipient's +detail (support+billing@), if any."""
        mapping = dict(self.subaddress_categories)
        return next((mapping[d.lower()] for d in details if d.lower() in mapping), None)

    def format_tag(self, number: int) -> str:
        """The ticket tag as it appears in subjects, e.g. ``[#10023]``."""
        return self.tag.replace("{number}", str(number))


@dataclass(frozen=True)
class GatewaySettings:
    """The [gateway] table."""

    hostname: str = "support.example.com"
    database: str = "sqlite:///var/gateway.db"
    smtp_listen: ListenAddress | None = ListenAddress("127.0.0.1", 2525)
    lmtp_listen: ListenAddress | None = None
    max_message_size: int = 25 * 1024**2
    max_recipients: int = 50
    ticket_number_start: int = 10000
    limits: ParseLimits = field(default_factory=ParseLimits)
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (one object per line)
    outbound: str = "maildir:var/outbox"
    outbound_max_age: int = 5 * 86400
    templates_dir: Path | None = None
    portal_url: str = ""
    portal_listen: ListenAddress | None = None
    link_lifetime: int = 30 * 86400
    loops: LoopLimits = field(default_factory=LoopLimits)
    bounce_suppression: int = 7 * 86400
    dkim_key_file: Path | None = None
    dkim_selector: str = ""
    dkim_domain: str = ""
    trusted_authserv_id: str = ""
    secret_file: Path | None = None
    pid_file: Path | None = None
    api_rate: Rate = Rate(120, 60)  # requests per API token
    tls_cert_file: Path | None = None  # STARTTLS on the SMTP listener, with
    tls_key_file: Path | None = None  # both set; reloaded on SIGHUP
    tls_required: bool = False  # refuse MAIL before STARTTLS
    metrics_listen: ListenAddress | None = None  # GET /metrics for Prometheus
    timed_jobs_every: int = 60  # seconds between runs of the SLA and lifecycle jobs
    processing: str = "worker"  # worker (a process of its own) | inline (the daemon's)


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``base_dir`` anchors relative paths (the file's folder)."""

    path: Path
    gateway: GatewaySettings
    mailboxes: tuple[Mailbox, ...]

    @property
    def base_dir(self) -> Path:
        return self.path.resolve().parent

    def own_addresses(self) -> frozenset[str]:
        """Every address we receive mail for; mail from these is our own."""
        return frozenset(a for m in self.mailboxes for a in m.addresses)

    def route(self, recipient: str) -> tuple[Mailbox, str] | None:
        """The mailbox for ``local+detail@domain`` and the detail, or None.

        The plus-detail carries reply keys and category hints; any detail on
        a known address is ours, anything else is not (we are never a relay).
        """
        local, sep, domain = recipient.strip().rpartition("@")
        if not sep or not local:
            return None
        base, _, detail = local.partition("+")
        wanted = f"{base}@{domain}".lower()
        for mailbox in self.mailboxes:
            if wanted in mailbox.addresses:
                return mailbox, detail
        return None

    def mailbox(self, address: str) -> Mailbox | None:
        """The mailbox whose main address is ``address``."""
        return next((m for m in self.mailboxes if m.address == address.lower()), None)

    def mailbox_of(self, address: str) -> Mailbox:
        """The mailbox a ticket belongs to; one removed from the configuration since
        is stood in for by a bare mailbox (no agents, default hours and targets)."""
        return self.mailbox(address) or Mailbox(address=address, name=address)


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The config file to use: the argument, else $GATEWAY_CONFIG, else ./mailboxes.toml."""
    if path:
        return Path(path)
    return Path(os.environ.get(ENV_CONFIG) or DEFAULT_PATH)


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the configuration, raising ConfigError with every problem."""
    file = resolve_path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from exc
    reader = _Reader(file)
    config = reader.config(data)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def parse_size(text: str) -> int:
    """``"25MiB"`` -> 26214400; raises ValueError on anything else."""
    match = _SIZE_RE.match(text)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as 25MiB, 512KiB or 1000000")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


def parse_listen(text: str) -> ListenAddress | None:
    """``"127.0.0.1:2525"``, ``"[::1]:25"``, ``"unix:/path"`` or ``""`` (off)."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("unix:"):
        if not text[5:]:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/ticket-gateway/lmtp.sock")
        return ListenAddress(unix_path=text[5:])
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not host:port (e.g. 127.0.0.1:2525) or unix:PATH")
    return ListenAddress(host=host, port=int(port))


class _Reader:
    """Walks the TOML data, converting values and collecting problems."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.problems: list[str] = []

    def problem(self, key: str, what: str) -> None:
        self.problems.append(f"{self.file}: {key}: {what}")

    def config(self, data: Mapping[str, Any]) -> Config:
        self.unknown(data, "", {"gateway", "mailbox"})
        gateway = self.gateway(self.table(data, "gateway"))
        mailboxes = self.mailboxes(data.get("mailbox", []))
        return Config(path=self.file, gateway=gateway, mailboxes=mailboxes)

    def table(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, Mapping):
            self.problem(key, "must be a table ([" + key + "])")
            return {}
        return value

    def unknown(self, data: Mapping[str, Any], prefix: str, known: Set[str]) -> None:
        for key in data:
            if key not in known:
                self.problem(
                    f"{prefix}{key}", "unknown key (known: " + ", ".join(sorted(known)) + ")"
                )

    def value(
        self,
        data: Mapping[str, Any],
        prefix: str,
        key: str,
        default: Any,
        convert: Callable[[Any], Any],
    ) -> Any:
        """``convert(data[key])``, or ``default`` when absent; a failure is a problem."""
        if key not in data:
            return default
        try:
            return convert(data[key])
        except (ValueError, TypeError) as exc:
            self.problem(prefix + key, str(exc))
            return default

    def path(self, value: Any) -> Path | None:
        """A path relative to the configuration file's folder; "" means unset."""
        if not isinstance(value, str):
            raise TypeError(f"must be a path string, not {value!r}")
        if not value.strip():
            return None
        path = Path(value.strip())
        return path if path.is_absolute() else self.file.resolve().parent / path

    def gateway(self, data: Mapping[str, Any]) -> GatewaySettings:
        p = "gateway."
        d = GatewaySettings()
        self.unknown(data, p, GATEWAY_KEYS)
        loops = LoopLimits(
            ack_per_sender=self.value(data, p, "ack_limit", d.loops.ack_per_sender, _rate),
            ack_per_sender_daily=self.value(
                data, p, "ack_daily_limit", d.loops.ack_per_sender_daily, _rate
            ),
            auto_per_recipient=self.value(
                data, p, "auto_mail_per_recipient", d.loops.auto_per_recipient, _rate
            ),
            auto_per_ticket=self.value(
                data, p, "auto_mail_per_ticket", d.loops.auto_per_ticket, _rate
            ),
            auto_per_mailbox=self.value(
                data, p, "auto_mail_per_mailbox", d.loops.auto_per_mailbox, _rate
            ),
        )
        dkim = (
            self.value(data, p, "dkim_key_file", None, self.path),
            self.value(data, p, "dkim_selector", "", _optional(_text)),
            self.value(data, p, "dkim_domain", "", _optional(_hostname)),
        )
        if any(dkim) and not all(dkim):
            self.problem(
                p + "dkim_key_file",
                "DKIM needs dkim_key_file, dkim_selector and dkim_domain together",
            )
        limits = ParseLimits(
            max_header_bytes=self.value(
                data, p, "max_header_size", d.limits.max_header_bytes, _size
            ),
            max_mime_depth=self.value(
                data, p, "max_mime_depth", d.limits.max_mime_depth, _positive_int
            ),
            max_mime_parts=self.value(
                data, p, "max_mime_parts", d.limits.max_mime_parts, _positive_int
            ),
        )
        database = os.environ.get(ENV_DATABASE) or self.value(
            data, p, "database", d.database, _database_url
        )
        return GatewaySettings(
            hostname=self.value(data, p, "hostname", d.hostname, _hostname),
            database=database,
            smtp_listen=self.value(data, p, "smtp_listen", d.smtp_listen, _listen),
            lmtp_listen=self.value(data, p, "lmtp_listen", d.lmtp_listen, _listen),
            max_message_size=self.value(data, p, "max_message_size", d.max_message_size, _size),
            max_recipients=self.value(data, p, "max_recipients", d.max_recipients, _positive_int),
            ticket_number_start=self.value(
                data, p, "ticket_number_start", d.ticket_number_start, _positive_int
            ),
            limits=limits,
            log_level=self.value(data, p, "log_level", d.log_level, _log_level),
            log_format=self.value(data, p, "log_format", d.log_format, _log_format),
            outbound=self.value(data, p, "outbound", d.outbound, _outbound),
            outbound_max_age=self.value(data, p, "outbound_max_age", d.outbound_max_age, _duration),
            templates_dir=self.value(data, p, "templates_dir", None, self.path),
            portal_url=self.value(data, p, "portal_url", "", _url),
            portal_listen=self.value(data, p, "portal_listen", None, _listen),
            link_lifetime=self.value(data, p, "link_lifetime", d.link_lifetime, _duration),
            loops=loops,
            bounce_suppression=self.value(
                data, p, "bounce_suppression", d.bounce_suppression, _duration
            ),
            dkim_key_file=dkim[0],
            dkim_selector=dkim[1],
            dkim_domain=dkim[2],
            trusted_authserv_id=self.value(
                data, p, "trusted_authserv_id", "", _optional(_hostname)
            ),
            secret_file=self.value(data, p, "secret_file", None, self.path)
            or self.path("var/secret.key"),
            pid_file=self.value(data, p, "pid_file", None, self.path)
            or self.path("var/ticket-gateway.pid"),
            api_rate=self.value(data, p, "api_rate", d.api_rate, _rate),
            **self.tls(data, p),
            metrics_listen=self.value(data, p, "metrics_listen", None, _listen),
            timed_jobs_every=self.value(data, p, "timed_jobs_every", d.timed_jobs_every, _duration),
            processing=self.value(data, p, "processing", d.processing, _processing),
        )

    def tls(self, data: Mapping[str, Any], p: str) -> dict[str, Any]:
        """tls_cert_file and tls_key_file (both or neither), and tls_required."""
        cert = self.value(data, p, "tls_cert_file", None, self.path)
        key = self.value(data, p, "tls_key_file", None, self.path)
        required = self.value(data, p, "tls_required", False, _bool)
        if (cert is None) != (key is None):
            self.problem(p + "tls_cert_file", "STARTTLS needs tls_cert_file and tls_key_file")
        elif required and cert is None:
            self.problem(p + "tls_required", "needs tls_cert_file and tls_key_file")
        return {"tls_cert_file": cert, "tls_key_file": key, "tls_required": required}

    def mailboxes(self, items: Any) -> tuple[Mailbox, ...]:
        if not isinstance(items, list) or not items:
            self.problem("mailbox", "at least one [[mailbox]] with an address is required")
            return ()
        result: list[Mailbox] = []
        seen: dict[str, str] = {}
        for index, item in enumerate(items):
            prefix = f"mailbox[{index}]."
            if not isinstance(item, Mapping):
                self.problem(prefix[:-1], "must be a table ([[mailbox]])")
                continue
            mailbox = self.mailbox(item, prefix)
            if mailbox is None:
                continue
            for address in mailbox.addresses:
                if address in seen:
                    self.problem(
                        prefix + "address", f"{address} is already used by {seen[address]}"
                    )
                seen[address] = prefix[:-1]
            result.append(mailbox)
        own = {a for m in result for a in m.addresses}
        for index, mailbox in enumerate(result):
            for agent in mailbox.agents:
                if agent.email in own:
                    self.problem(
                        f"mailbox[{index}].agent",
                        f"{agent.email} is a mailbox "
                        "address; an agent needs an address of their own",
                    )
        return tuple(result)

    def mailbox(self, data: Mapping[str, Any], p: str) -> Mailbox | None:
        self.unknown(data, p, MAILBOX_KEYS)
        if "address" not in data:
            self.problem(p + "address", "missing: every mailbox needs its support address")
            return None
        address = self.value(data, p, "address", None, _address)
        if address is None:
            return None
        mailbox = Mailbox(
            address=address,
            aliases=self.value(data, p, "aliases", (), _address_list),
            name=self.value(data, p, "name", address, _text),
            language=self.value(data, p, "language", "en", _language),
            category=self.value(data, p, "category", "general", _text),
            tag=self.value(data, p, "tag", "[#{number}]", _tag),
            categories=self.value(data, p, "categories", (), _name_list),
            max_agents=self.value(data, p, "max_agents", 0, _count),
            copy_agents=self.value(data, p, "copy_agents", True, _bool),
            agents=self.agents(data.get("agent", []), p),
            imap=self.imap(data["imap"], p + "imap.") if "imap" in data else None,
            hours=self.hours(data, p),
            sla=self.sla(data.get("sla", {}), p + "sla."),
            lifecycle=self.lifecycle(data, p),
        )
        categories = set(mailbox.categories) | {mailbox.category}
        mailbox = replace(
            mailbox,
            category_priority=self.value(
                data, p, "category_priority", (), _category_map(categories, PRIORITIES)
            ),
            subaddress_categories=self.value(
                data, p, "subaddress_categories", (), _subaddress_map(categories)
            ),
        )
        if mailbox.max_agents and len(mailbox.agents) > mailbox.max_agents:
            self.problem(
                p + "agent", f"{len(mailbox.agents)} agents, over max_agents = {mailbox.max_agents}"
            )
        return mailbox

    def hours(self, data: Mapping[str, Any], p: str) -> Hours:
        """timezone, [mailbox.hours] and holidays, checked together."""
        timezone = self.value(data, p, "timezone", "UTC", _text)
        week = data.get("hours", {})
        holidays = data.get("holidays", [])
        if not isinstance(week, Mapping) or not all(isinstance(v, str) for v in week.values()):
            self.problem(p + "hours", 'must be a table of day = "07:00-22:00" (or "off")')
            week = {}
        if not isinstance(holidays, list) or not all(isinstance(d, str) for d in holidays):
            self.problem(p + "holidays", 'must be a list of dates such as ["2027-01-01"]')
            holidays = []
        # Built in steps, so that each problem is reported under its own key.
        steps: tuple[tuple[str, Mapping[str, str], list[str]], ...] = (
            ("timezone", {}, []),
            ("holidays", {}, holidays),
            ("hours", week, holidays),
        )
        hours = Hours()
        for key, days, dates in steps:
            try:
                hours = Hours.build(timezone, days, dates)
            except ValueError as exc:
                self.problem(p + key, str(exc))
                return Hours()
        return hours

    def sla(self, data: Any, p: str) -> Sla:
        """[mailbox.sla]: targets per priority and the warning share."""
        if not isinstance(data, Mapping):
            self.problem(p[:-1], "must be a table ([mailbox.sla])")
            return Sla()
        self.unknown(data, p, SLA_KEYS)
        d = Sla()
        return Sla(
            first_response=self.value(data, p, "first_response", d.first_response, _targets),
            next_response=self.value(data, p, "next_response", (), _targets),
            resolution=self.value(data, p, "resolution", (), _targets),
            warn_at=self.value(data, p, "warn_at", d.warn_at, _percent),
        )

    def lifecycle(self, data: Mapping[str, Any], p: str) -> Lifecycle:
        d = Lifecycle()
        return Lifecycle(
            remind_after=self.value(data, p, "remind_after", None, _optional_duration),
            auto_resolve_after=self.value(data, p, "auto_resolve_after", None, _optional_duration),
            auto_close_after=self.value(data, p, "auto_close_after", d.auto_close_after, _duration),
            reopen_window=self.value(data, p, "reopen_window", d.reopen_window, _duration),
        )

    def imap(self, data: Any, p: str) -> ImapSettings | None:
        """The [mailbox.imap] table; None (with problems noted) when unusable."""
        if not isinstance(data, Mapping):
            self.problem(p[:-1], "must be a table ([mailbox.imap])")
            return None
        self.unknown(data, p, set(_IMAP_KEYS))
        for key in ("host", "username"):
            if key not in data:
                self.problem(p + key, "missing: [mailbox.imap] needs host and username")
        security = self.value(data, p, "security", "tls", _security)
        insecure = self.value(data, p, "insecure", False, _bool)
        if security == "plain" and not insecure:
            # A password in clear text on the network: only when someone said so.
            self.problem(
                p + "security",
                'security = "plain" sends the password unencrypted; '
                "it needs insecure = true beside it (use tls or starttls)",
            )
        password_file = self.value(data, p, "password_file", None, self.path)
        oauth2 = self.value(data, p, "oauth2", None, self.oauth2)
        if (password_file is None) == (oauth2 is None):
            self.problem(p + "password_file", "exactly one of password_file or oauth2 is needed")
        default_port = 993 if security == "tls" else 143
        return ImapSettings(
            host=self.value(data, p, "host", "", _hostname),
            username=self.value(data, p, "username", "", _text),
            port=self.value(data, p, "port", default_port, _port),
            security=security,
            password_file=password_file,
            oauth2=oauth2,
            folder=self.value(data, p, "folder", "INBOX", _text),
            after_import=self.value(data, p, "after_import", "move:Imported", _after_import),
            poll_interval=self.value(data, p, "poll_interval", 60, _duration),
            idle=self.value(data, p, "idle", True, _bool),
            ca_file=self.value(data, p, "ca_file", None, self.path),
        )

    def oauth2(self, value: Any) -> OAuth2:
        """``{ token_file = PATH }`` or ``{ token_command = "cmd args" }``."""
        if not isinstance(value, Mapping) or len(value) != 1:
            raise TypeError(
                'must be { token_file = "PATH" } or { token_command = "COMMAND" }, '
                f"not {value!r}"
            )
        if "token_file" in value:
            path = self.path(value["token_file"])
            if path is None:
                raise ValueError("token_file must not be empty")
            return OAuth2(token_file=path)
        if "token_command" in value:
            command = tuple(shlex.split(_text(value["token_command"])))
            return OAuth2(token_command=command)
        raise ValueError(f"unknown key {next(iter(value))!r} (known: token_command, token_file)")

    def agents(self, items: Any, prefix: str) -> tuple[Agent, ...]:
        if not isinstance(items, list):
            self.problem(prefix + "agent", "must be a list of tables ([[mailbox.agent]])")
            return ()
        found: dict[str, Agent] = {}
        for index, item in enumerate(items):
            p = f"{prefix}agent[{index}]."
            if not isinstance(item, Mapping):
                self.problem(p[:-1], "must be a table ([[mailbox.agent]])")
                continue
            self.unknown(item, p, {"email", "name", "role"})
            email = self.value(item, p, "email", None, _agent_email)
            if email is None:
                if "email" not in item:
                    self.problem(p + "email", "missing: every agent needs an address")
                continue
            if email in found:
                self.problem(p + "email", f"{email} is listed twice")
            found[email] = Agent(
                email=email,
                name=self.value(item, p, "name", email, _text),
                role=self.value(item, p, "role", "agent", _role),
            )
        return tuple(found.values())


_IMAP_KEYS = (
    "host",
    "port",
    "security",
    "insecure",
    "username",
    "password_file",
    "oauth2",
    "folder",
    "after_import",
    "poll_interval",
    "idle",
    "ca_file",
)


def _security(value: Any) -> str:
    text = _text(value).lower()
    if text not in {"tls", "starttls", "plain"}:
        raise ValueError(f'{text!r} is not one of "tls", "starttls", "plain"')
    return text


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise TypeError(f"must be a port number (1-65535), not {value!r}")
    return value


def _after_import(value: Any) -> str:
    text = _text(value)
    if text in {"flag", "delete"}:
        return text
    if text.startswith("move:") and text[5:].strip():
        return "move:" + text[5:].strip()
    raise ValueError(f'{text!r} is not "move:FOLDER", "flag" or "delete"')


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"must be a non-empty string, not {value!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must be one line (no CR, LF or NUL)")
    return value.strip()


def _optional(convert: Callable[[Any], str]) -> Callable[[Any], str]:
    """``convert``, but an empty string stays empty (the key is unset)."""
    return lambda value: "" if value == "" else convert(value)


def _hostname(value: Any) -> str:
    text = _text(value)
    if not re.fullmatch(r"[A-Za-z0-9.-]+", text):
        raise ValueError(f"{text!r} is not a host name such as support.example.com")
    return text.lower()


def _size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        return parse_size(value)
    raise TypeError(f'must be a size such as "25MiB", not {value!r}')


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TypeError(f"must be a positive whole number, not {value!r}")
    return value


def _listen(value: Any) -> ListenAddress | None:
    if not isinstance(value, str):
        raise TypeError(f'must be a string such as "127.0.0.1:2525", not {value!r}')
    return parse_listen(value)


def _database_url(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("sqlite://", "postgresql://", "postgres://")):
        raise ValueError(f"{text!r} is neither sqlite:///PATH nor postgresql://user@host/db")
    return text


def _address(value: Any) -> str:
    text = _text(value).lower()
    if not _ADDRESS_RE.match(text):
        raise ValueError(
            f"{text!r} is not an address such as support@example.com "
            "(no '+': it separates reply keys)"
        )
    return text


def _address_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"must be a list of addresses, not {value!r}")
    return tuple(_address(v) for v in value)


def _language(value: Any) -> str:
    text = _text(value)
    if not _LANGUAGE_RE.match(text):
        raise ValueError(f"{text!r} is not a language tag such as en, vi or fa")
    return text


def _tag(value: Any) -> str:
    text = _text(value)
    if text.count("{number}") != 1:
        raise ValueError(f'{text!r} must contain {{number}} exactly once, e.g. "[#{{number}}]"')
    return text


def parse_duration(text: str) -> int:
    """``"10min"`` -> 600 seconds; units s, min (or m), h, d."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 60s, 10min, 24h or 5d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_rate(text: str) -> Rate:
    """``"1/10min"`` -> Rate(1, 600)."""
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a rate such as 1/10min or 20/1d")
    return Rate(int(match.group(1)), parse_duration(match.group(2)))


def _rate(value: Any) -> Rate:
    if not isinstance(value, str):
        raise TypeError(f'must be a rate string such as "1/10min", not {value!r}')
    return parse_rate(value)


def _duration(value: Any) -> int:
    if not isinstance(value, str):
        raise TypeError(f'must be a duration string such as "5d", not {value!r}')
    return parse_duration(value)


def _optional_duration(value: Any) -> int | None:
    """A duration, or "" / "off" for a step that is switched off."""
    if isinstance(value, str) and value.strip().lower() in {"", "off"}:
        return None
    return _duration(value)


def _targets(value: Any) -> tuple[tuple[str, int], ...]:
    """``{ urgent = "2h", high = "6h" }``: a business-time target per priority."""
    if not isinstance(value, Mapping):
        raise TypeError(f'must be a table such as {{ urgent = "2h", high = "6h" }}, not {value!r}')
    targets = []
    for priority, target in value.items():
        if priority not in PRIORITIES:
            raise ValueError(f"{priority!r} is not a priority (low, medium, high, urgent)")
        seconds = _duration(target)
        if seconds < 1:
            raise ValueError(f"{priority} = {target!r}: a target must be at least 1s")
        targets.append((priority, seconds))
    return tuple(targets)


def _percent(value: Any) -> float:
    """``75`` or ``"75%"``: a share strictly between 0 and 100 percent."""
    number = value.rstrip().removesuffix("%") if isinstance(value, str) else value
    try:
        share = float(number) / 100
    except (TypeError, ValueError):
        raise TypeError(f'must be a percentage such as 75 or "75%", not {value!r}') from None
    if not 0 < share < 1 or isinstance(value, bool):
        raise ValueError(f"{value!r} must be between 0 and 100 (exclusive)")
    return share


def _category_map(
    categories: Set[str], priorities: Sequence[str]
) -> Callable[[Any], tuple[tuple[str, str], ...]]:
    """``{ billing = "high" }``: a known category to its default priority."""

    def convert(value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, Mapping):
            raise TypeError(f'must be a table such as {{ billing = "high" }}, not {value!r}')
        pairs = []
        for category, priority in value.items():
            if category.lower() not in categories:
                raise ValueError(f"{category!r} is not in this mailbox's categories")
            if priority not in priorities:
                raise ValueError(f"{category} = {priority!r}: not one of low, medium, high, urgent")
            pairs.append((category.lower(), str(priority)))
        return tuple(pairs)

    return convert


def _subaddress_map(categories: Set[str]) -> Callable[[Any], tuple[tuple[str, str], ...]]:
    """``{ billing = "billing" }``: mail to support+billing@ opens a billing ticket."""

    def convert(value: Any) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, Mapping):
            raise TypeError(f'must be a table such as {{ billing = "billing" }}, not {value!r}')
        pairs = []
        for detail, category in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", detail.lower()):
                raise ValueError(f"{detail!r} is not a subaddress such as billing")
            if detail.lower().startswith(("bounce-", "agent-")):
                raise ValueError(f"{detail!r}: bounce- and agent- subaddresses are the gateway's")
            if not isinstance(category, str) or category.lower() not in categories:
                raise ValueError(f"{detail} = {category!r}: not one of this mailbox's categories")
            pairs.append((detail.lower(), category.lower()))
        return tuple(pairs)

    return convert


def _outbound(value: Any) -> str:
    text = _text(value)
    if not text.startswith(("maildir:", "smtp://")):
        raise ValueError(f"{text!r} is neither maildir:PATH nor smtp://host:port")
    return text


def _url(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"must be a URL string, not {value!r}")
    text = value.strip().rstrip("/")
    if text and not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(f"{text!r} is not an http(s) URL such as https://support.example.com")
    return text


def _agent_email(value: Any) -> str:
    text = _text(value).lower()
    if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", text):
        raise ValueError(f"{text!r} is not an address such as lan@example.com")
    return text


def _role(value: Any) -> str:
    text = _text(value).lower()
    if text not in {"agent", "admin"}:
        raise ValueError(f'{text!r} is neither "agent" nor "admin"')
    return text


def _name_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"must be a list of names, not {value!r}")
    return tuple(_text(v).lower() for v in value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"must be a whole number, 0 or more, not {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"must be true or false, not {value!r}")
    return value


def _log_format(value: Any) -> str:
    text = _text(value).lower()
    if text not in {"text", "json"}:
        raise ValueError(f'{text!r} is neither "text" nor "json"')
    return text


def _processing(value: Any) -> str:
    text = _text(value).lower()
    if text not in {"worker", "inline"}:
        raise ValueError(f'{text!r} is neither "worker" nor "inline"')
    return text


def _log_level(value: Any) -> str:
    text = _text(value).upper()
    if text not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"{text!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return text
