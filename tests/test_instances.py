"""Two daemons on one PostgreSQL behave as one.

Two ``ticket-gateway serve`` processes share a PostgreSQL schema and send
through one SMTP sink. Mail goes to both at once, some of it to both (as
two MX hosts would get one message twice). Then: ticket numbers are
unique, each message is stored and ticketed once, each outbound mail
reaches the sink once, and each timed job's step (here, the SLA breach of
every ticket, with a 2-second target) happens once.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway import models
from gateway.db import open_database
from tests.helpers import SUPPORT, free_port, mail, wire, write_config
from tests.smtp_sink import ServerFactory
from tests.test_crash import Daemon

pytestmark = pytest.mark.postgres

EACH, BOTH = 25, 15  # messages to one instance each, and to both


def instance_config(folder: Path, url: str, sink_port: int, smtp_port: int) -> Path:
    folder.mkdir()
    path = write_config(
        folder,
        url,
        f'outbound = "smtp://127.0.0.1:{sink_port}?security=none"\n'
        'timed_jobs_every = "1s"\n'
        'auto_mail_per_recipient = "1000/10min"\nauto_mail_per_ticket = "100/10min"',
        smtp_port=smtp_port,
        lmtp=False,
        processing="worker",
    )
    text = path.read_text().replace(
        'auto_mail_per_mailbox = "10/10min"', 'auto_mail_per_mailbox = "5000/10min"'
    )
    head, first, second = text.split("[[mailbox]]")
    first += (
        '\n[mailbox.sla]\nfirst_response = { medium = "2s" }\n'
        '\n[[mailbox.agent]]\nemail = "boss@team.example"\nname = "Boss"\nrole = "admin"\n'
    )
    path.write_text(f"{head}[[mailbox]]{first}[[mailbox]]{second}")
    return path


def send(port: int, messages: list[bytes], senders: list[str]) -> None:
    for raw, sender in zip(messages, senders, strict=True):
        while True:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.sendmail(sender, [SUPPORT], raw)
                break
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)


def test_two_instances_on_one_postgresql_act_as_one(
    tmp_path: Path, postgres_schema: str, smtp_server: ServerFactory
) -> None:
    sink, sink_port = smtp_server()
    ports = [free_port(), free_port()]
    daemons = [
        Daemon(
            instance_config(tmp_path / name, postgres_schema, sink_port, port),
            port,
            tmp_path / f"{name}.log",
        )
        for name, port in zip(("a", "b"), ports, strict=True)
    ]
    batches: list[tuple[int, list[bytes], list[str]]] = []
    for index, port in enumerate(ports):
        senders = [f"c{index}-{n}@example.org" for n in range(EACH)]
        batches.append((port, [wire(mail(sender=s)) for s in senders], senders))
    shared_senders = [f"both-{n}@example.org" for n in range(BOTH)]
    shared = [wire(mail(sender=s, subject="To both MX")) for s in shared_senders]
    for port in ports:
        batches.append((port, shared, shared_senders))
    for daemon in daemons:
        daemon.start()
    try:
        threads = [threading.Thread(target=send, args=batch) for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        total = 2 * EACH + BOTH
        database = open_database(postgres_schema, tmp_path)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                with database.connection_context():
                    breached = (
                        models.Event.select().where(models.Event.kind == "sla_breached").count()
                    )
                    unsent = models.Outbox.select().where(models.Outbox.status != "sent").count()
                if breached >= total and unsent == 0:
                    break
                time.sleep(0.5)
            time.sleep(2)  # a few more job runs on both instances: nothing may happen twice
            with database.connection_context():
                numbers = [t.number for t in models.Ticket.select()]
                inbound = models.Inbound.select().count()
                breaches = Counter(
                    e.ticket_id
                    for e in models.Event.select().where(models.Event.kind == "sla_breached")
                )
                outbox = {r.message_id: r.status for r in models.Outbox.select()}
        finally:
            database.close_all()
        assert sorted(numbers) == list(range(10000, 10000 + total))  # unique, none skipped
        assert inbound == total  # the message sent to both is stored once
        assert len(breaches) == total and set(breaches.values()) == {1}
        assert set(outbox.values()) == {"sent"}
        delivered = Counter(
            str(
                email.message_from_bytes(r.content, policy=email.policy.default)["Message-ID"]
            ).strip("<>")  # type: ignore[arg-type]
            for r in sink.received
        )
        assert set(delivered) == set(outbox)  # every queued mail arrived ...
        assert set(delivered.values()) == {1}  # ... once
    finally:
        assert [d.terminate() for d in daemons] == [0, 0]
