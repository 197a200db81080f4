"""Outbox: the durable queue between "we decided to send" and "it was sent".

``enqueue`` writes a rendered mail as a row, inside the caller's transaction,
so a mail exists exactly when the event that caused it committed. The
worker claims due rows (status "sending" with a lease; ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so instances sharing a database never take the same
row), hands each to the transport, and records the outcome:

    queued/deferred --claim--> sending --2xx--> sent
                                      --4xx or no connection--> deferred (backoff)
                                      --5xx, or older than the maximum age--> failed

A worker that dies mid-send leaves the lease to expire; the row is then
claimed again. That is at-least-once: a crash after the server's 250 and
before our commit can send a row twice, the one gap no SMTP client can close.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import socket
from dataclasses import dataclass
from typing import Any

import peewee as pw

from gateway import metrics, models
from gateway.config import Config
from gateway.db import Store, transaction, utcnow
from gateway.deliver import DeliveryResult, Transport
from gateway.queries import iso

log = logging.getLogger("gateway.outbox")

LEASE = dt.timedelta(minutes=5)
FIRST_RETRY = 60  # seconds; doubles per attempt
MAX_RETRY = 3600
BATCH = 20
POLL = 30.0  # seconds between looks at the queue when nothing wakes the worker
# The reason on mail ``ticket-gateway demo`` queued: it is never to be sent.
NEVER_SENT = "demo data, never sent"


@dataclass(frozen=True)
class Claimed:
    """A row taken by this worker, with what the transport needs."""

    id: int
    envelope_from: str
    recipient: str
    data: bytes
    message_id: str


def rate_key(email: str) -> str:
    """The address that caps count against: lower-case, without +detail.

    An autoresponder that rotates bot+1@, bot+2@ ... is still one recipient.
    """
    local, _, domain = email.lower().rpartition("@")
    return f"{local.partition('+')[0]}@{domain}"


def enqueue(
    *,
    ticket: models.Ticket | None,
    event: str,
    mailbox: str,
    recipient: str,
    envelope_from: str,
    bounce_token: str,
    message_id: str,
    data: bytes,
    auto: bool,
) -> models.Outbox:
    """Queue a rendered mail (call inside the transaction of its event)."""
    now = utcnow()
    return models.Outbox.create(
        ticket=ticket,
        event=event,
        mailbox=mailbox,
        recipient=recipient,
        rate_key=rate_key(recipient),
        envelope_from=envelope_from,
        bounce_token=bounce_token,
        message_id=message_id,
        data=data,
        auto=auto,
        next_attempt_at=now,
        created_at=now,
    )


def new_bounce_token() -> str:
    """The VERP token in our envelope sender: support+bounce-TOKEN@example.com."""
    return secrets.token_hex(10)


def claim_due(instance: str, limit: int = BATCH) -> list[Claimed]:
    """Take up to ``limit`` rows that are due, for this instance, under a lease."""
    now = utcnow()
    outbox = models.Outbox
    due = (
        (outbox.status << (outbox.QUEUED, outbox.DEFERRED)) & (outbox.next_attempt_at <= now)
    ) | ((outbox.status == outbox.SENDING) & (outbox.claimed_until < now))
    with transaction(models.database.obj):
        query = outbox.select().where(due).order_by(outbox.next_attempt_at, outbox.id).limit(limit)
        if isinstance(models.database.obj, pw.PostgresqlDatabase):
            query = query.for_update(skip_locked=True)
        rows = list(query)
        if rows:
            outbox.update(
                status=outbox.SENDING, claimed_by=instance, claimed_until=now + LEASE
            ).where(outbox.id << [r.id for r in rows]).execute()
    return [Claimed(r.id, r.envelope_from, r.recipient, bytes(r.data), r.message_id) for r in rows]


def finish(row_id: int, instance: str, result: DeliveryResult, max_age: int) -> str:
    """Record a delivery attempt; returns the row's new status."""
    outbox = models.Outbox
    now = utcnow()
    with transaction(models.database.obj):
        row = outbox.get_by_id(row_id)
        if row.claimed_by != instance or row.status != outbox.SENDING:
            return str(row.status)  # our lease expired and someone else took it
        row.attempts += 1
        row.last_error = None if result.status == "sent" else result.detail
        row.claimed_by = row.claimed_until = None
        if result.status == "sent":
            row.status, row.sent_at = outbox.SENT, now
        elif result.status == "failed":
            row.status = outbox.FAILED
        elif (now - row.created_at).total_seconds() > max_age:
            row.status = outbox.FAILED
            row.last_error = f"gave up after {max_age // 86400} day(s): {result.detail}"
        else:
            row.status = outbox.DEFERRED
            delay = min(FIRST_RETRY * 2 ** (row.attempts - 1), MAX_RETRY)
            row.next_attempt_at = now + dt.timedelta(seconds=delay)
        row.save()
    metrics.MAILS.labels(str(row.status)).inc()
    return str(row.status)


def suppressed(email: str) -> models.Suppression | None:
    """A live suppression of ``email`` (it bounced permanently), if any."""
    found: models.Suppression | None = models.Suppression.get_or_none(
        (models.Suppression.email == rate_key(email)) & (models.Suppression.until > utcnow())
    )
    return found


def retry(row_id: int) -> bool:
    """Send a deferred or failed row again now (operator action).

    Never a row the demo made or one whose mail was erased: the first would
    write to made-up customers, the second send an empty mail.
    """
    outbox = models.Outbox
    with transaction(models.database.obj):
        updated = (
            outbox.update(
                status=outbox.QUEUED, next_attempt_at=utcnow(), claimed_by=None, claimed_until=None
            )
            .where(
                (outbox.id == row_id)
                & (outbox.status << (outbox.DEFERRED, outbox.FAILED, outbox.QUEUED))
                & (pw.fn.LENGTH(outbox.data) > 0)
                & ((outbox.last_error != NEVER_SENT) | outbox.last_error.is_null())
            )
            .execute()
        )
    return bool(updated)


def drop(row_id: int) -> bool:
    """Never send a row that is not sent yet (operator action); it stays listed as failed."""
    outbox = models.Outbox
    with transaction(models.database.obj):
        updated = (
            outbox.update(
                status=outbox.FAILED,
                last_error="dropped by the operator",
                claimed_by=None,
                claimed_until=None,
            )
            .where((outbox.id == row_id) & (outbox.status << (outbox.QUEUED, outbox.DEFERRED)))
            .execute()
        )
    return bool(updated)


def listing(status: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Outbox rows, newest first, for the CLI."""
    query = models.Outbox.select().order_by(models.Outbox.id.desc()).limit(limit)
    if status:
        query = query.where(models.Outbox.status == status)
    return [
        {
            "id": r.id,
            "status": r.status,
            "event": r.event,
            "recipient": r.recipient,
            "ticket": r.ticket.number if r.ticket is not None else None,
            "attempts": r.attempts,
            "next_attempt_at": iso(r.next_attempt_at),
            "last_error": r.last_error,
            "message_id": r.message_id,
            "created_at": iso(r.created_at),
            "sent_at": iso(r.sent_at),
        }
        for r in query
    ]


class OutboxWorker:
    """Delivers due rows through the configured transport, one at a time."""

    def __init__(
        self, store: Store, config: Config, transport: Transport, signer: Any = None
    ) -> None:
        self.store = store
        self.config = config
        self.transport = transport
        self.signer = signer  # bytes -> bytes (DKIM), or None
        self.instance = f"{socket.gethostname()}:{secrets.token_hex(4)}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look at the queue now (new rows were committed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            try:
                claimed = await self.store.run(claim_due, self.instance)
            except pw.PeeweeException as exc:
                log.error("outbox: database error, retrying: %s", exc)
                claimed = []
            for row in claimed:
                await self._deliver(row)
            if len(claimed) < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)
                self._wake.clear()

    async def _deliver(self, row: Claimed) -> None:
        data = self.signer(row.data) if self.signer else row.data
        blocked = await self.store.run(suppressed, row.recipient)
        if blocked is not None:
            result = DeliveryResult(
                "failed", f"recipient suppressed until {blocked.until:%Y-%m-%d}: {blocked.reason}"
            )
        else:
            result = await self.transport.send(row.envelope_from, row.recipient, data)
        status = await self.store.run(
            finish, row.id, self.instance, result, self.config.gateway.outbound_max_age
        )
        log.info(
            "outbox %d <%s> to %s: %s (%s)",
            row.id,
            row.message_id,
            row.recipient,
            status,
            result.detail,
        )
