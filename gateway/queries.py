"""Read-side queries: tickets and the quarantine as plain, JSON-ready dicts.

The CLI today, and the API and portal later, read through here, so every
consumer sees the same shape. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import peewee as pw

from gateway import models


@dataclass(frozen=True)
class TicketFilter:
    """Filters for listing tickets; None means "any"."""

    status: str | None = None
    mailbox: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    search: str | None = None


def iso(moment: dt.datetime | None) -> str | None:
    """A stored naive-UTC time as ISO 8601 with a Z."""
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def list_tickets(flt: TicketFilter, limit: int = 500) -> list[dict[str, Any]]:
    """Tickets matching ``flt``, newest first."""
    query = models.Ticket.select().order_by(
        models.Ticket.created_at.desc(), models.Ticket.number.desc()
    )
    if flt.status:
        query = query.where(models.Ticket.status == flt.status)
    if flt.mailbox:
        query = query.where(models.Ticket.mailbox == flt.mailbox.lower())
    if flt.since:
        query = query.where(models.Ticket.created_at >= flt.since)
    if flt.until:
        query = query.where(models.Ticket.created_at < flt.until)
    if flt.search:
        term = flt.search.lower()
        query = query.where(
            pw.fn.LOWER(models.Ticket.subject).contains(term)
            | pw.fn.LOWER(models.Ticket.requester_email).contains(term)
            | pw.fn.LOWER(models.Ticket.requester_name).contains(term)
        )
    return [ticket_summary(t) for t in query.limit(limit)]


def ticket_summary(ticket: models.Ticket) -> dict[str, Any]:
    """The ticket's own fields."""
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "category": ticket.category,
        "mailbox": ticket.mailbox,
        "requester": {"email": ticket.requester_email, "name": ticket.requester_name},
        "language": ticket.language,
        "assignee": ticket.assignee,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "resolved_at": iso(ticket.resolved_at),
        "closed_at": iso(ticket.closed_at),
        "rating": ticket.rating,
        "continues": ticket.continues,
    }


def ticket_detail(number: int) -> dict[str, Any] | None:
    """The ticket with its messages in order, its participants and its history."""
    ticket = models.Ticket.get_or_none(models.Ticket.number == number)
    if ticket is None:
        return None
    messages = ticket.messages.order_by(models.Message.created_at, models.Message.id)
    events = ticket.events.order_by(models.Event.created_at, models.Event.id)
    return {
        **ticket_summary(ticket),
        "participants": [
            {"email": p.email, "name": p.name, "role": p.role}
            for p in ticket.participants.order_by(models.Participant.id)
        ],
        "messages": [message_view(m) for m in messages],
        "events": [event_view(e) for e in events],
    }


def message_view(message: models.Message) -> dict[str, Any]:
    """One message as people and programs see it."""
    attachments = message.attachments.order_by(models.Attachment.id)
    return {
        "id": message.id,
        "message_id": message.message_id,
        "direction": message.direction,
        "author": {
            "email": message.author_email,
            "name": message.author_name,
            "role": message.author_role,
        },
        "visibility": message.visibility,
        "auto": message.auto,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "attachments": [
            {
                "id": a.id,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
            }
            for a in attachments
        ],
        "created_at": iso(message.created_at),
    }


def event_view(event: models.Event) -> dict[str, Any]:
    """One history entry."""
    return {
        "kind": event.kind,
        "actor": event.actor,
        "detail": json.loads(event.detail),
        "created_at": iso(event.created_at),
    }


def quarantined() -> list[dict[str, Any]]:
    """Messages accepted but not processable, oldest first, with the reason."""
    query = (
        models.Inbound.select()
        .where(models.Inbound.status == models.Inbound.QUARANTINED)
        .order_by(models.Inbound.id)
    )
    return [
        {
            "id": row.id,
            "queue_id": row.queue_id,
            "mailbox": row.mailbox,
            "mail_from": row.mail_from,
            "message_id": row.message_id,
            "received_at": iso(row.received_at),
            "attempts": row.attempts,
            "reason": row.reason,
        }
        for row in query
    ]


def find_inbound(ref: str) -> models.Inbound | None:
    """An inbound row by numeric id or queue id."""
    if ref.isdigit():
        found: models.Inbound | None = models.Inbound.get_or_none(models.Inbound.id == int(ref))
        if found is not None:
            return found
    return models.Inbound.get_or_none(models.Inbound.queue_id == ref.upper())


def counts_by_status() -> dict[str, dict[str, int]]:
    """Inbound and outbox rows per status: the queues at a glance."""
    result: dict[str, dict[str, int]] = {}
    for name, model in (("inbound", models.Inbound), ("outbox", models.Outbox)):
        query = model.select(model.status, pw.fn.COUNT(model.id)).group_by(model.status)
        rows: list[tuple[str, int]] = list(query.tuples())  # type: ignore[arg-type]
        result[name] = {str(status): int(n) for status, n in rows}
    return result


def status_line(counts: dict[str, dict[str, int]]) -> str:
    """One line for systemd's STATUS= and the log: what waits, what failed."""
    inbound, outbox = counts["inbound"], counts["outbox"]
    return (
        f"inbound {inbound.get('received', 0)} waiting, "
        f"{inbound.get('quarantined', 0)} quarantined; outbox "
        f"{outbox.get('queued', 0) + outbox.get('sending', 0)} queued, "
        f"{outbox.get('deferred', 0)} deferred, {outbox.get('failed', 0)} failed"
    )
