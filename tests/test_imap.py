"""IMAP intake against a real Dovecot: import, IDLE, crashes, restarts, UIDVALIDITY.

Messages are delivered into the test Dovecot with imaplib's APPEND; the
gateway runs in-process (GatewayThread) or as ``python -m gateway serve``
for the crash test. Every test checks what an operator would: inbound rows,
tickets, what is left in the folders, the poller's state in ``imap_checkpoint``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from gateway import models
from gateway.db import open_database
from tests.dovecot import PASSWORD, USER, Dovecot
from tests.helpers import SUPPORT, GatewayThread, mail, wire

DEADLINE = 60.0


def imap_config(
    folder: Path,
    database_url: str,
    server: Dovecot,
    *,
    security: str = "plain",
    password: str = PASSWORD,
    extra: str = "",
    smtp_listen: str = "127.0.0.1:0",
    poll_interval: str = "1s",
) -> Path:
    """A one-mailbox configuration reading support@ from the test Dovecot."""
    (folder / "imap.pw").write_text(password + "\n")
    port = server.imaps_port if security == "tls" else server.imap_port
    insecure = "insecure = true\n" if security == "plain" else ""
    ca = f'ca_file = "{server.cafile}"\n' if security != "plain" else ""
    path = folder / "mailboxes.toml"
    path.write_text(
        f"""
[gateway]
hostname = "gw.test"
database = "{database_url}"
smtp_listen = "{smtp_listen}"
max_message_size = "1MiB"
ack_limit = "1000/1min"
ack_daily_limit = "100000/1d"
auto_mail_per_recipient = "100000/1min"
auto_mail_per_ticket = "100000/1min"
auto_mail_per_mailbox = "100000/1min"

[[mailbox]]
address = "{SUPPORT}"
name = "Example Support"

[mailbox.imap]
host = "127.0.0.1"
port = {port}
security = "{security}"
{insecure}{ca}username = "{USER}"
password_file = "imap.pw"
poll_interval = "{poll_interval}"
{extra}
""",
        encoding="utf-8",
    )
    return path


def message(n: int, tag: str = "imap") -> bytes:
    """A customer message with a unique Message-ID (one ticket each)."""
    m = mail(subject=f"{tag} {n}", body=f"message {n}\n", sender=f"c{n}@example.org")
    m.replace_header("Message-ID", make_msgid(idstring=f"{tag}{n}", domain="test.example"))
    return wire(m)


def wait_for(what: Callable[[], Any], deadline: float = DEADLINE, message: str = "") -> Any:
    """Poll ``what`` until it is truthy; fail after a generous deadline."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(message or f"condition not reached in {deadline:.0f}s")


def inbound_ids(gw: GatewayThread) -> list[str]:
    with gw.db():
        return [r.message_id for r in models.Inbound.select(models.Inbound.message_id)]


def checkpoint(gw: GatewayThread) -> models.ImapCheckpoint | None:
    with gw.db():
        row: models.ImapCheckpoint | None = models.ImapCheckpoint.get_or_none()
        return row


def processed(gw: GatewayThread, count: int) -> bool:
    with gw.db():
        done = (
            models.Inbound.select().where(models.Inbound.status == models.Inbound.PROCESSED).count()
        )
    return bool(done >= count)


def test_import_and_move(tmp_path: Path, database_url: str, dovecot: Dovecot) -> None:
    raws = [message(n) for n in range(5)]
    dovecot.append(*raws)
    with GatewayThread(imap_config(tmp_path, database_url, dovecot, security="tls")) as gw:
        wait_for(lambda: processed(gw, 5) and dovecot.count("Imported") == 5)
        tickets = gw.tickets()
        assert sorted(t["subject"] for t in tickets) == [f"imap {n}" for n in range(5)]
        assert dovecot.count("INBOX") == 0
        with gw.db():
            rows = list(models.Inbound.select())
        assert {r.protocol for r in rows} == {"imap"}
        assert {r.peer for r in rows} == {"127.0.0.1"}
        assert sorted(r.mail_from for r in rows) == [f"c{n}@example.org" for n in range(5)]
        row = wait_for(lambda: (c := checkpoint(gw)) and c.connected and c)
        assert row.last_uid == 5 and row.last_error is None and row.backlog == 0


def test_idle_delivers_within_seconds(tmp_path: Path, database_url: str, dovecot: Dovecot) -> None:
    config = imap_config(tmp_path, database_url, dovecot, poll_interval="10min")
    with GatewayThread(config) as gw:
        wait_for(lambda: (c := checkpoint(gw)) and c.connected)
        time.sleep(0.5)  # let the poller enter IDLE
        dovecot.append(message(1, "idle"))
        wait_for(lambda: processed(gw, 1), deadline=20, message="IDLE did not wake the poller")
        assert [t["subject"] for t in gw.tickets()] == ["idle 1"]


def test_dovecot_restart_reconnects(tmp_path: Path, database_url: str, dovecot: Dovecot) -> None:
    with GatewayThread(imap_config(tmp_path, database_url, dovecot)) as gw:
        dovecot.append(message(1, "before"))
        wait_for(lambda: processed(gw, 1))
        dovecot.restart()
        dovecot.append(message(2, "after"))
        wait_for(lambda: processed(gw, 2), message="no reconnect after the restart")
        wait_for(lambda: (c := checkpoint(gw)) and c.connected)
        assert sorted(t["subject"] for t in gw.tickets()) == ["after 2", "before 1"]


def test_uidvalidity_reset_imports_nothing_twice(
    tmp_path: Path, database_url: str, dovecot: Dovecot
) -> None:
    raws = [message(n, "uv") for n in range(3)]
    extra = 'after_import = "flag"\nfolder = "Support"'
    config = imap_config(tmp_path, database_url, dovecot, extra=extra)
    with dovecot.client() as client:
        client.create("Support")
        client.logout()
    dovecot.append(*raws, folder="Support")
    with GatewayThread(config) as gw:
        wait_for(lambda: processed(gw, 3))
        first = wait_for(lambda: (c := checkpoint(gw)) and c.last_uid == 3 and c)
    # Delete and recreate the folder: the same messages under a new UIDVALIDITY
    # (RFC 3501 2.3.1.1), as after a server migration.
    with dovecot.client() as client:
        client.delete("Support")
        client.create("Support")
        client.logout()
    dovecot.append(*raws, message(9, "uv"), folder="Support")
    with GatewayThread(config) as gw:
        wait_for(lambda: processed(gw, 4))
        row = wait_for(lambda: (c := checkpoint(gw)) and c.last_uid >= 4 and c)
        assert row.uidvalidity != first.uidvalidity
        ids = inbound_ids(gw)
        assert len(ids) == len(set(ids)) == 4
        assert len(gw.tickets()) == 4


def test_bad_password_is_reported_and_retried(
    tmp_path: Path, database_url: str, dovecot: Dovecot
) -> None:
    config = imap_config(tmp_path, database_url, dovecot, password="wrong")
    with GatewayThread(config) as gw:
        row = wait_for(lambda: (c := checkpoint(gw)) and c.last_error and c)
        assert "authentication failed" in row.last_error
        assert not row.connected
        wait_for(
            lambda: dovecot.log_text().count("user=<support>") >= 3,
            message="no retries after a failed login",
        )
        assert "Login: user=<support>" not in dovecot.log_text()


def test_starttls_missing_refuses_to_log_in(
    tmp_path: Path, database_url: str, dovecot_factory: Callable[..., Dovecot]
) -> None:
    plain_only = dovecot_factory("plain-only", ssl=False)
    config = imap_config(tmp_path, database_url, plain_only, security="starttls")
    with GatewayThread(config) as gw:
        row = wait_for(lambda: (c := checkpoint(gw)) and c.last_error and c)
        assert "STARTTLS" in row.last_error and "refusing" in row.last_error
        time.sleep(1.5)  # at least one retry
    log = plain_only.log_text()
    assert "Login:" not in log and "auth failed" not in log and "method=" not in log


def test_backlog_of_2000_exactly_once(tmp_path: Path, database_url: str, dovecot: Dovecot) -> None:
    total = 2000
    dovecot.append(*(message(n, "bulk") for n in range(total)))
    with GatewayThread(imap_config(tmp_path, database_url, dovecot)) as gw:
        wait_for(lambda: processed(gw, total), deadline=400, message="backlog not imported")
        ids = inbound_ids(gw)
        assert len(ids) == len(set(ids)) == total
        wait_for(lambda: dovecot.count("INBOX") == 0)
        assert dovecot.count("Imported") == total
        assert gw.count(models.Ticket) == total


def test_sigkill_between_commit_and_move(
    tmp_path: Path, database_url: str, dovecot: Dovecot
) -> None:
    """Kill the daemon while it imports; restart; every message exactly once."""
    total = 150
    ids = []
    raws = []
    for n in range(total):
        raw = message(n, "kill")
        raws.append(raw)
        ids.append(raw.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode())
    dovecot.append(*raws)
    config = imap_config(tmp_path, database_url, dovecot)
    log_path = tmp_path / "daemon.log"
    for _ in range(3):
        process = start_daemon(config, log_path)
        deadline = time.monotonic() + 60
        while "accepted to" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    process = start_daemon(config, log_path)
    database = open_database(database_url, tmp_path)
    try:
        wait_for(lambda: dovecot.count("INBOX") == 0, deadline=120)
        wait_for(lambda: count_processed(database) == total, deadline=120)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        with database.connection_context():
            stored = [r.message_id for r in models.Inbound.select(models.Inbound.message_id)]
            assert sorted(stored) == sorted(ids)
            assert models.Ticket.select().count() == total
            assert models.Message.select().where(models.Message.direction == "inbound").count() == (
                total
            )
        assert dovecot.count("Imported") == total
    finally:
        if process.poll() is None:
            process.kill()
        database.close_all()


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def count_processed(database: pw.Database) -> int:
    with database.connection_context():
        return int(
            models.Inbound.select().where(models.Inbound.status == models.Inbound.PROCESSED).count()
        )


def test_status_command_shows_the_poller(
    tmp_path: Path, database_url: str, dovecot: Dovecot
) -> None:
    dovecot.append(message(1, "status"))
    config = imap_config(tmp_path, database_url, dovecot)
    with GatewayThread(config) as gw:
        wait_for(lambda: processed(gw, 1))
        wait_for(lambda: (c := checkpoint(gw)) and c.last_uid == 1 and c.connected)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ},
        )
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        [imap] = status["imap"]
        assert imap["mailbox"] == SUPPORT and imap["folder"] == "INBOX"
        assert imap["last_uid"] == 1 and imap["connected"] is True
        assert imap["last_error"] is None and imap["backlog"] == 0
        assert status["inbound"]["processed"] == 1
        text = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert text.returncode == 0 and SUPPORT in text.stdout and "connected" in text.stdout


def test_too_big_is_imported_into_the_quarantine(
    tmp_path: Path, database_url: str, dovecot: Dovecot
) -> None:
    """Over max_message_size (1 MiB here): SMTP would say 552; IMAP quarantines it, visibly."""
    big = mail(subject="huge scan", sender="c9@example.org", body=("x" * 76 + "\n") * 20000)
    dovecot.append(wire(big), message(1, "small"))
    with GatewayThread(imap_config(tmp_path, database_url, dovecot)) as gw:

        def quarantined() -> list[models.Inbound]:
            with gw.db():
                return list(models.Inbound.select().where(models.Inbound.status == "quarantined"))

        wait_for(lambda: dovecot.count("Imported") == 2 and processed(gw, 1))
        [row] = wait_for(quarantined)
        [ticket] = gw.tickets()  # the small one only
        assert ticket["subject"] == "small 1"
        assert "over max_message_size" in (row.reason or "")
        assert dovecot.count("INBOX") == 0  # not stuck on the server either
