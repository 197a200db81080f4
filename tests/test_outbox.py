"""The outbox worker: claiming on SQLite and PostgreSQL, and delivery over real SMTP.

The delivery tests run the real gateway with ``outbound = smtp://...``
pointing at an aiosmtpd server whose answers the test chooses, and follow
one acknowledgement through queued, deferred, sent and failed.
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import threading
import time
from pathlib import Path

import dkim as dkimpy

from gateway import outbox
from gateway.db import open_database, utcnow
from gateway.models import Outbox
from tests.helpers import GatewayThread, free_port, mail, write_config
from tests.smtp_sink import ServerFactory


def fill(count: int) -> None:
    for i in range(count):
        outbox.enqueue(
            ticket=None,
            event="ticket_created",
            mailbox="support@example.com",
            recipient=f"r{i}@example.org",
            envelope_from="support@example.com",
            bounce_token=outbox.new_bounce_token(),
            message_id=f"m{i}@gw.test",
            data=b"Subject: x\r\n\r\nx\r\n",
            auto=True,
        )


def test_two_workers_never_claim_the_same_row(tmp_path: Path, database_url: str) -> None:
    database = open_database(database_url, tmp_path)
    try:
        with database.connection_context():
            fill(60)
        claimed: dict[str, list[int]] = {"a": [], "b": []}

        def worker(name: str) -> None:
            with database.connection_context():
                while batch := outbox.claim_due(name, limit=3):
                    claimed[name] += [row.id for row in batch]

        threads = [threading.Thread(target=worker, args=(n,)) for n in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not set(claimed["a"]) & set(claimed["b"])
        assert sorted(claimed["a"] + claimed["b"]) == list(range(1, 61))
        with database.connection_context():
            assert {r.status for r in Outbox.select()} == {"sending"}
            # A lease that ran out (the worker died) makes the row claimable again.
            Outbox.update(claimed_until=utcnow() - dt.timedelta(seconds=1)).where(
                Outbox.id == 7
            ).execute()
            assert [r.id for r in outbox.claim_due("c")] == [7]
    finally:
        database.close_all()


def smtp_gateway(tmp_path: Path, database_url: str, port: int, extra: str = "") -> GatewayThread:
    path = write_config(
        tmp_path,
        database_url,
        extra_gateway=f'outbound = "smtp://127.0.0.1:{port}?security=none"\n' + extra,
    )
    return GatewayThread(path)


def row(gateway: GatewayThread) -> Outbox:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with gateway.db():
            found = Outbox.get_or_none()
            if found is not None and found.status not in ("queued", "sending"):
                return found
        time.sleep(0.05)
    raise AssertionError("the outbox row was not attempted")


def retry_now(gateway: GatewayThread, row_id: int) -> None:
    """What `ticket-gateway outbox retry` does, then a nudge to the running worker."""
    with gateway.db():
        assert outbox.retry(row_id)
    assert gateway.gateway.outbox is not None
    gateway.loop.call_soon_threadsafe(gateway.gateway.outbox.wake)


def test_queued_then_sent(tmp_path: Path, database_url: str, smtp_server: ServerFactory) -> None:
    sink, port = smtp_server()
    with smtp_gateway(tmp_path, database_url, port) as gateway:
        gateway.send(mail(sender="lan@example.vn"))
        sent = row(gateway)
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, None)
    [received] = sink.received
    assert received.rcpt_tos == ["lan@example.vn"]
    assert received.mail_from.startswith("support+bounce-")
    assert b"Auto-Submitted: auto-replied" in received.content


def test_4xx_defers_with_backoff_then_sends(
    tmp_path: Path, database_url: str, smtp_server: ServerFactory
) -> None:
    sink, port = smtp_server()
    sink.replies["RCPT"] = "451 4.7.1 Greylisted, try again later"
    with smtp_gateway(tmp_path, database_url, port) as gateway:
        gateway.send(mail(sender="lan@example.vn"))
        deferred = row(gateway)
        assert deferred.status == "deferred"
        assert "451 4.7.1 Greylisted" in deferred.last_error
        wait = (deferred.next_attempt_at - utcnow()).total_seconds()
        assert 30 < wait <= 60  # the first retry is a minute later
        del sink.replies["RCPT"]
        retry_now(gateway, deferred.id)
        sent = row(gateway)
        assert (sent.status, sent.attempts) == ("sent", 2)
    assert len(sink.received) == 1


def test_5xx_fails_with_the_servers_reply(
    tmp_path: Path, database_url: str, smtp_server: ServerFactory
) -> None:
    sink, port = smtp_server()
    sink.replies["RCPT"] = "550 5.1.1 <lan@example.vn>: user unknown"
    with smtp_gateway(tmp_path, database_url, port) as gateway:
        gateway.send(mail(sender="lan@example.vn"))
        failed = row(gateway)
    assert failed.status == "failed"
    assert "550 5.1.1 <lan@example.vn>: user unknown" in failed.last_error
    assert sink.received == []


def test_server_down_then_up(tmp_path: Path, database_url: str, smtp_server: ServerFactory) -> None:
    port = free_port()
    with smtp_gateway(tmp_path, database_url, port) as gateway:
        gateway.send(mail(sender="lan@example.vn"))
        deferred = row(gateway)
        assert deferred.status == "deferred"
        assert "refused" in deferred.last_error
        sink, _ = smtp_server(port)
        retry_now(gateway, deferred.id)
        assert row(gateway).status == "sent"
    assert len(sink.received) == 1


def test_too_old_fails_instead_of_deferring(
    tmp_path: Path, database_url: str, smtp_server: ServerFactory
) -> None:
    sink, port = smtp_server()
    sink.replies["RCPT"] = "451 4.3.0 try later"
    with smtp_gateway(tmp_path, database_url, port, 'outbound_max_age = "1s"') as gateway:
        gateway.send(mail(sender="lan@example.vn"))
        first = row(gateway)
        assert first.status == "deferred"
        time.sleep(1.2)
        retry_now(gateway, first.id)
        last = row(gateway)
    assert last.status == "failed"
    assert last.last_error.startswith("gave up after")


def test_dkim_signed_mail_verifies(tmp_path: Path, database_url: str) -> None:
    key = tmp_path / "dkim.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    extra = f'dkim_key_file = "{key}"\ndkim_selector = "gw"\ndkim_domain = "example.com"\n'
    path = write_config(tmp_path, database_url, extra_gateway=extra)
    with GatewayThread(path) as gateway:
        gateway.send(mail(sender="lan@example.vn"))
        [ack] = gateway.outbound(1)
    raw = next((gateway.maildir / "new").iterdir()).read_bytes()
    signed = raw.split(b"\n", 2)[2]  # without the Return-Path and Delivered-To of delivery
    assert str(ack["DKIM-Signature"]).startswith("v=1; a=rsa-sha256; c=relaxed/relaxed;")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"gw._domainkey.example.com."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    assert dkimpy.verify(signed, dnsfunc=dns)


def test_bounce_to_the_plain_address_is_matched_by_message_id(gateway: GatewayThread) -> None:
    gateway.send(mail(sender="gone@example.org"))
    [ack] = gateway.outbound(1)
    dsn = f"""From: MAILER-DAEMON@mx.example.org
To: support@example.com
Subject: Mail delivery failed
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

The following address failed: gone@example.org

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.1.1

--b
Content-Type: text/rfc822-headers

From: Example Support <support@example.com>
To: gone@example.org
Message-ID: {ack["Message-ID"]}

--b--
""".replace("\n", "\r\n").encode()
    with gateway.smtp() as client:
        client.sendmail("<>", ["support@example.com"], dsn)
    gateway.settle()
    [ticket] = gateway.tickets()
    [failed] = [e for e in ticket["events"] if e["kind"] == "delivery_failed"]
    assert (failed["detail"]["recipient"], failed["detail"]["status"]) == (
        "gone@example.org",
        "5.1.1",
    )
