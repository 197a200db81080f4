"""mailboxes.toml: the sample is valid, and every mistake gets a clear line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mailboxes.toml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_sample_configuration_is_valid() -> None:
    cfg = config.load(ROOT / "mailboxes.toml")
    assert cfg.gateway.smtp_listen == config.ListenAddress("127.0.0.1", 2525)
    assert cfg.gateway.lmtp_listen is None
    assert cfg.gateway.max_message_size == 25 * 1024 * 1024
    assert cfg.gateway.database == "sqlite:///var/gateway.db"
    [mailbox] = cfg.mailboxes
    assert mailbox.addresses == ("support@example.com", "help@example.com")
    assert mailbox.format_tag(10023) == "[#10023]"


def test_sample_documents_every_key() -> None:
    """Each key the reader knows appears in the sample, so operators can find it."""
    sample = (ROOT / "mailboxes.toml").read_text()
    tables = {"agent", "imap", "hours", "sla"}
    for key in sorted(config.GATEWAY_KEYS | config.MAILBOX_KEYS - tables | config.SLA_KEYS):
        assert f"\n{key} = " in sample, key
    assert "\n[mailbox.sla]\n" in sample
    assert "\n# [mailbox.hours]\n# monday = " in sample
    for key in ("email", "name", "role"):  # [[mailbox.agent]]: the sample has one
        assert f"\n{key} = " in sample, key


def test_check_config_ok_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(ROOT / "mailboxes.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK (1 mailbox(es))" in result.stdout


def test_every_problem_is_one_line_with_file_and_key(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        """
[gateway]
smtp_listn = "127.0.0.1:25"
max_message_size = "lots"
smtp_listen = "localhost"
max_recipients = 0
database = "mysql://x"
processing = "threads"

[[mailbox]]
address = "support+x@example.com"
tag = "[#]"

[[mailbox]]
name = "No address"
""",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    path = str(tmp_path / "mailboxes.toml")
    assert all(line.startswith(path + ": ") for line in lines), lines
    text = "\n".join(lines)
    assert "gateway.smtp_listn: unknown key" in text
    assert "gateway.max_message_size: 'lots' is not a size" in text
    assert "gateway.smtp_listen: 'localhost' is not host:port" in text
    assert "gateway.max_recipients: must be a positive whole number" in text
    assert "gateway.database: 'mysql://x' is neither" in text
    assert 'gateway.processing: \'threads\' is neither "worker" nor "inline"' in text
    assert "mailbox[0].address: 'support+x@example.com' is not an address" in text
    assert "mailbox[1].address: missing" in text
    assert "Traceback" not in result.stderr
    assert len(lines) == 8


def test_outbound_keys(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        """
[gateway]
outbound = "sendmail:/usr/sbin/sendmail"
ack_limit = "often"
outbound_max_age = "5 weeks"
portal_url = "support.example.com"
dkim_selector = "gw"

[[mailbox]]
address = "a@example.com"
""",
    )
    assert result.returncode == 2
    text = result.stderr
    assert "gateway.outbound: 'sendmail:/usr/sbin/sendmail' is neither maildir:PATH" in text
    assert "gateway.ack_limit: 'often' is not a rate such as 1/10min" in text
    assert "gateway.outbound_max_age: '5 weeks' is not a duration" in text
    assert "gateway.portal_url: 'support.example.com' is not an http(s) URL" in text
    assert "gateway.dkim_key_file: DKIM needs dkim_key_file, dkim_selector and dkim_domain" in text


def test_rates_and_durations() -> None:
    assert config.parse_rate("1/10min") == config.Rate(1, 600)
    assert config.parse_rate("20 / 1d") == config.Rate(20, 86400)
    assert config.parse_duration("24h") == 86400
    cfg = config.load(ROOT / "mailboxes.toml")
    assert cfg.gateway.loops.ack_per_sender == config.Rate(1, 600)
    assert cfg.gateway.outbound == "maildir:var/outbox"
    assert cfg.gateway.templates_dir is None


def test_agents(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        """
[[mailbox]]
address = "support@example.com"
max_agents = 1

[[mailbox.agent]]
email = "lan@example.com"
role = "boss"

[[mailbox.agent]]
email = "LAN@example.com"

[[mailbox.agent]]
email = "support@example.com"

[[mailbox.agent]]
name = "No address"
""",
    )
    assert result.returncode == 2
    text = result.stderr
    assert 'mailbox[0].agent[0].role: \'boss\' is neither "agent" nor "admin"' in text
    assert "mailbox[0].agent[1].email: lan@example.com is listed twice" in text
    assert "mailbox[0].agent[3].email: missing" in text
    assert "mailbox[0].agent: 2 agents, over max_agents = 1" in text
    assert "support@example.com is a mailbox address" in text


def test_agents_parsed(tmp_path: Path) -> None:
    text = (ROOT / "mailboxes.toml").read_text()
    text = text.replace("# [[mailbox.agent]]\n# email", "[[mailbox.agent]]\nemail")
    text = text.replace('# name = "Lan"\n# role', 'name = "Lan"\nrole')
    (tmp_path / "m.toml").write_text(text)
    [mailbox] = config.load(tmp_path / "m.toml").mailboxes
    assert mailbox.agents == (config.Agent("lan@example.com", "Lan", "admin"),)
    assert mailbox.admins == mailbox.agents
    assert mailbox.categories == ("general", "billing", "technical")


def test_bad_tag_and_language(tmp_path: Path) -> None:
    result = check(
        tmp_path, '[[mailbox]]\naddress = "a@example.com"\ntag = "[#]"\nlanguage = "Vietnamese"\n'
    )
    assert result.returncode == 2
    assert "mailbox[0].tag: '[#]' must contain {number}" in result.stderr
    assert "mailbox[0].language: 'Vietnamese' is not a language tag" in result.stderr


def test_duplicate_address_across_mailboxes(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        '[[mailbox]]\naddress = "a@example.com"\n'
        '[[mailbox]]\naddress = "b@example.com"\naliases = ["A@example.com"]\n',
    )
    assert result.returncode == 2
    assert "mailbox[1].address: a@example.com is already used by mailbox[0]" in result.stderr


def test_toml_syntax_error_names_line(tmp_path: Path) -> None:
    result = check(tmp_path, "[gateway]\nhostname = \n")
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    assert "line 2" in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "nope.toml: cannot read" in result.stderr


def test_no_mailbox(tmp_path: Path) -> None:
    result = check(tmp_path, '[gateway]\nhostname = "x.example"\n')
    assert result.returncode == 2
    assert ": mailbox: at least one [[mailbox]]" in result.stderr


def test_database_url_from_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[[mailbox]]\naddress = "a@example.com"\n')
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql://gw@db.internal/gateway")
    assert config.load(path).gateway.database == "postgresql://gw@db.internal/gateway"


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('[[mailbox]]\naddress = "a@example.com"\n')
    monkeypatch.setenv("GATEWAY_CONFIG", str(path))
    assert config.load().path == path


@pytest.mark.parametrize(
    ("text", "expected"),
    [("25MiB", 25 * 1024**2), ("512KiB", 512 * 1024), ("1000000", 1_000_000), ("10 MB", 10**7)],
)
def test_sizes(text: str, expected: int) -> None:
    assert config.parse_size(text) == expected


def test_listen_forms() -> None:
    assert config.parse_listen("[::1]:2424") == config.ListenAddress("::1", 2424)
    assert config.parse_listen("unix:/run/gw/lmtp.sock") == config.ListenAddress(
        unix_path="/run/gw/lmtp.sock"
    )
    assert config.parse_listen("") is None


def test_route_plus_addresses() -> None:
    cfg = config.load(ROOT / "mailboxes.toml")
    routed = cfg.route("Support+KEY123@Example.com")
    assert routed is not None
    assert routed[0].address == "support@example.com"
    assert routed[1] == "KEY123"
    assert cfg.route("support@example.net") is None
    with pytest.raises(ConfigError):
        config.load(ROOT / "does-not-exist.toml")


LIFECYCLE_MAILBOX = """
[[mailbox]]
address = "support@example.com"
categories = ["general", "billing"]
category_priority = { billing = "high" }
subaddress_categories = { hoadon = "billing" }
timezone = "Asia/Tehran"
holidays = ["2027-03-21"]
remind_after = "3d"
auto_resolve_after = "off"
auto_close_after = "48h"

[mailbox.hours]
saturday = "08:00-17:00"
thu = "08:00-13:00"

[mailbox.sla]
first_response = { urgent = "1h" }
resolution = { urgent = "8h" }
warn_at = "80%"
"""


def test_lifecycle_keys_are_read(tmp_path: Path) -> None:
    path = tmp_path / "mailboxes.toml"
    path.write_text(LIFECYCLE_MAILBOX, encoding="utf-8")
    [mailbox] = config.load(path).mailboxes
    assert mailbox.default_priority("billing") == "high"
    assert mailbox.default_priority("general") == "medium"
    assert mailbox.category_for(["HoaDon"]) == "billing"
    assert mailbox.hours.timezone == "Asia/Tehran"
    assert mailbox.hours.week[4] == ()  # friday: not named, so off
    assert mailbox.sla.target("first_response", "urgent") == 3600
    assert mailbox.sla.target("first_response", "medium") is None  # only what is listed
    assert mailbox.sla.target("resolution", "urgent") == 8 * 3600
    assert mailbox.sla.warn_at == 0.8
    assert (mailbox.lifecycle.remind_after, mailbox.lifecycle.auto_resolve_after) == (259200, None)
    assert mailbox.lifecycle.auto_close_after == 48 * 3600


def test_bad_lifecycle_keys_name_file_and_key(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        """
[[mailbox]]
address = "support@example.com"
categories = ["general"]
category_priority = { billing = "high" }
subaddress_categories = { bounce-x = "general" }
timezone = "Asia/Saigon City"
remind_after = "soon"

[[mailbox]]
address = "help@example.com"
holidays = ["2027-02-30"]

[[mailbox]]
address = "sales@example.com"
[mailbox.hours]
monday = "9-5"
[mailbox.sla]
first_response = { critical = "1h" }
warn_at = 150
speed = "fast"
""",
    )
    assert result.returncode == 2
    path = str(tmp_path / "mailboxes.toml")
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith(path + ": ") for line in lines), lines
    keys = {line.split(": ")[1] for line in lines}
    assert keys == {
        "mailbox[0].category_priority",
        "mailbox[0].subaddress_categories",
        "mailbox[0].timezone",
        "mailbox[0].remind_after",
        "mailbox[1].holidays",
        "mailbox[2].hours",
        "mailbox[2].sla.first_response",
        "mailbox[2].sla.warn_at",
        "mailbox[2].sla.speed",
    }, lines
