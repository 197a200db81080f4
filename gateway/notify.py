"""Notify: from an event to outbox rows.

Called by the ticket step inside its transaction: decides who hears about
an event, renders the mail in the recipient's language, gives it a fresh
reply key and a VERP bounce address, and queues it. Automatic mail passes
the loop guards first (DESIGN.md "Loops"): never to our own or to
automated addresses, never to a suppressed recipient, and never over the
caps per sender, recipient, ticket and mailbox, which hold even when every
detector of automatic mail has missed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Any

import peewee as pw

from gateway import keys, models, outbox
from gateway.classify import is_automated_address
from gateway.config import Config, Mailbox, Rate
from gateway.db import utcnow
from gateway.events import record
from gateway.queries import iso
from gateway.render import Headers, Renderer, compose

log = logging.getLogger("gateway.notify")

RESPONSE_HOURS = 24  # first-response target shown in acknowledgements
AUTO_CLOSE_HOURS = 24  # resolved tickets close after this long without a reply
MAX_REFERENCES = 20


@dataclass(frozen=True)
class Recipient:
    """Someone we write to."""

    email: str
    name: str = ""


class Notifier:
    """Renders and queues the mail that events cause."""

    def __init__(self, config: Config, renderer: Renderer) -> None:
        self.config = config
        self.renderer = renderer

    def languages(self) -> list[str]:
        """Languages we can write acknowledgements in."""
        return self.renderer.languages("ticket_created")

    def acknowledge(
        self, ticket: models.Ticket, message_id: str, references: Sequence[str]
    ) -> models.Outbox | None:
        """Tell the requester we received their request (RFC 3834: auto-replied)."""
        return self.send(
            ticket,
            "ticket_created",
            Recipient(ticket.requester_email, ticket.requester_name),
            in_reply_to=message_id,
            references=[*references, message_id],
            auto_submitted="auto-replied",
        )

    def send(
        self,
        ticket: models.Ticket,
        event: str,
        recipient: Recipient,
        *,
        in_reply_to: str = "",
        references: Sequence[str] = (),
        auto_submitted: str | None = "auto-generated",
        auto: bool = True,
        **context: Any,
    ) -> models.Outbox | None:
        """Queue ``event`` for ``recipient``; None when a loop guard held it back."""
        mailbox = self._mailbox(ticket)
        held = self.held_back(ticket, event, recipient.email, mailbox, auto=auto)
        if held:
            log.warning("#%s %s to %s held back: %s", ticket.number, event, recipient.email, held)
            record(ticket, "mail_held_back", event=event, recipient=recipient.email, why=held)
            return None
        key = keys.new_key(ticket, recipient.email)
        rendered = self.renderer.render(
            event,
            [ticket.language, mailbox.language],
            self.context(ticket, mailbox, recipient, **context),
        )
        headers = Headers(
            from_name=mailbox.name,
            from_address=mailbox.address,
            to_name=recipient.name,
            to_address=recipient.email,
            hostname=self.config.gateway.hostname,
            reply_to=keys.address(mailbox.address, key),
            in_reply_to=in_reply_to or None,
            references=tuple(r for r in references if r)[-MAX_REFERENCES:],
            auto_submitted=auto_submitted,
            message_id=make_msgid(domain=self.config.gateway.hostname),
        )
        message = compose(rendered, headers)
        token = outbox.new_bounce_token()
        row = outbox.enqueue(
            ticket=ticket,
            event=event,
            mailbox=mailbox.address,
            recipient=recipient.email,
            envelope_from=keys.address(mailbox.address, f"bounce-{token}"),
            bounce_token=token,
            message_id=headers.message_id.strip("<>"),
            data=message.as_bytes(),
            auto=auto,
        )
        record(
            ticket,
            "mail_queued",
            event=event,
            recipient=recipient.email,
            language=rendered.language,
            outbox=row.id,
        )
        return row

    def context(
        self, ticket: models.Ticket, mailbox: Mailbox, recipient: Recipient, **extra: Any
    ) -> dict[str, Any]:
        """The variables every template may use (see templates/mail/README)."""
        values: dict[str, Any] = {
            "mailbox": {"address": mailbox.address, "name": mailbox.name},
            "ticket": {
                "number": ticket.number,
                "tag": mailbox.format_tag(ticket.number),
                "subject": ticket.subject,
                "status": ticket.status,
                "priority": ticket.priority,
                "category": ticket.category,
                "created_at": iso(ticket.created_at),
            },
            "requester": {"name": ticket.requester_name, "email": ticket.requester_email},
            "recipient": {"name": recipient.name, "email": recipient.email},
            "portal_url": None,
            "response_hours": RESPONSE_HOURS,
            "back_at": None,
            "auto_close_hours": AUTO_CLOSE_HOURS,
            "message": None,
            "agent": None,
            "status": None,
            "old_status": None,
            "rating_good_url": None,
            "rating_bad_url": None,
            "code": None,
            "code_minutes": None,
        }
        values.update(extra)
        return values

    def held_back(
        self, ticket: models.Ticket | None, event: str, email: str, mailbox: Mailbox, *, auto: bool
    ) -> str | None:
        """Why a mail must not go out, or None. Checked in order of certainty."""
        target = outbox.rate_key(email)
        if target in self.config.own_addresses():
            return "the recipient is one of our own addresses"
        if is_automated_address(email):
            return "the recipient is an automated address"
        blocked = outbox.suppressed(email)
        if blocked is not None:
            return f"the recipient bounced permanently ({blocked.reason})"
        if not auto:
            return None
        loops = self.config.gateway.loops
        rows = models.Outbox
        checks: list[tuple[Rate, Any, str]] = [
            (loops.auto_per_recipient, rows.rate_key == target, "automatic mail to this recipient"),
            (
                loops.auto_per_mailbox,
                rows.mailbox == mailbox.address,
                "automatic mail from this mailbox",
            ),
        ]
        if ticket is not None:
            checks.append(
                (loops.auto_per_ticket, rows.ticket == ticket, "automatic mail on this ticket")
            )
        if event == "ticket_created":
            acks = (rows.rate_key == target) & (rows.event == "ticket_created")
            checks = [
                (loops.ack_per_sender, acks, "acknowledgements to this sender"),
                (loops.ack_per_sender_daily, acks, "acknowledgements to this sender"),
                *checks,
            ]
        for rate, where, what in checks:
            if _count(where, rate) >= rate.count:
                return f"cap reached: {rate.count} {what} per {_human(rate.seconds)}"
        return None

    def _mailbox(self, ticket: models.Ticket) -> Mailbox:
        mailbox = self.config.mailbox(ticket.mailbox)
        if mailbox is None:  # the ticket's mailbox was removed from the configuration
            return Mailbox(address=ticket.mailbox, name=ticket.mailbox)
        return mailbox


def _count(where: Any, rate: Rate) -> int:
    since = utcnow() - dt.timedelta(seconds=rate.seconds)
    rows = models.Outbox
    return int(
        rows.select(pw.fn.COUNT(rows.id))
        .where(where & (rows.auto == True) & (rows.created_at > since))  # noqa: E712 (SQL)
        .scalar()
    )


def _human(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
