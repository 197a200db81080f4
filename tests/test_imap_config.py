"""The [mailbox.imap] table: defaults, and one clear line for each mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def load(tmp_path: Path, imap: str) -> config.Mailbox:
    path = tmp_path / "m.toml"
    path.write_text(f'[[mailbox]]\naddress = "support@example.com"\n[mailbox.imap]\n{imap}\n')
    [mailbox] = config.load(path).mailboxes
    return mailbox


def problems(tmp_path: Path, imap: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, imap)
    return "\n".join(caught.value.problems)


def test_defaults(tmp_path: Path) -> None:
    mailbox = load(tmp_path, 'host = "imap.example.com"\nusername = "u"\npassword_file = "pw"')
    imap = mailbox.imap
    assert imap is not None
    assert (imap.port, imap.security, imap.folder) == (993, "tls", "INBOX")
    assert (imap.after_import, imap.move_to) == ("move:Imported", "Imported")
    assert (imap.poll_interval, imap.idle, imap.oauth2) == (60, True, None)
    assert imap.password_file == tmp_path / "pw"


def test_starttls_port_and_oauth2(tmp_path: Path) -> None:
    imap = load(
        tmp_path,
        'host = "outlook.office365.com"\nusername = "u"\nsecurity = "starttls"\n'
        'oauth2 = { token_command = "get-token --user \'a b\'" }\nafter_import = "flag"\n'
        'poll_interval = "5min"\nidle = false',
    ).imap
    assert imap is not None
    assert imap.port == 143 and imap.security == "starttls"
    assert imap.oauth2 == config.OAuth2(token_command=("get-token", "--user", "a b"))
    assert (imap.after_import, imap.move_to, imap.poll_interval, imap.idle) == (
        "flag",
        "",
        300,
        False,
    )


def test_plain_needs_insecure(tmp_path: Path) -> None:
    text = problems(
        tmp_path, 'host = "h.example"\nusername = "u"\npassword_file = "pw"\nsecurity = "plain"'
    )
    assert 'mailbox[0].imap.security: security = "plain" sends the password unencrypted' in text
    imap = load(
        tmp_path,
        'host = "h.example"\nusername = "u"\npassword_file = "pw"\nsecurity = "plain"\n'
        "insecure = true",
    ).imap
    assert imap is not None and imap.port == 143


def test_every_mistake_is_one_line(tmp_path: Path) -> None:
    text = problems(
        tmp_path,
        'hots = "x"\nsecurity = "ssl"\nport = 0\nafter_import = "archive"\n'
        'poll_interval = "often"\noauth2 = { token_url = "x" }\npassword_file = "pw"',
    )
    path = str(tmp_path / "m.toml")
    lines = text.splitlines()
    assert all(line.startswith(path + ": mailbox[0].imap.") for line in lines), lines
    assert "imap.hots: unknown key" in text
    assert "imap.host: missing" in text and "imap.username: missing" in text
    assert "imap.security: 'ssl' is not one of" in text
    assert "imap.port: must be a port number" in text
    assert "imap.after_import: 'archive' is not \"move:FOLDER\"" in text
    assert "imap.poll_interval: 'often' is not a duration" in text
    assert "imap.oauth2: unknown key 'token_url'" in text
    neither = problems(tmp_path, 'host = "h.example"\nusername = "u"')
    assert "imap.password_file: exactly one of password_file or oauth2" in neither


def test_sample_documents_every_imap_key() -> None:
    sample = (ROOT / "mailboxes.toml").read_text()
    assert "\n# [mailbox.imap]\n" in sample
    for key in config._IMAP_KEYS:
        assert f"\n# {key} = " in sample, key
