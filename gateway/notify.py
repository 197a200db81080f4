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
import email.errors
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import make_msgid
from typing import Any
from zoneinfo import ZoneInfo

import peewee as pw

from gateway import keys, models, outbox, ratings
from gateway.agents import personal_address
from gateway.classify import is_automated_address
from gateway.config import Agent, Config, Mailbox, Rate
from gateway.db import utcnow
from gateway.events import record
from gateway.portal import access
from gateway.queries import iso
from gateway.render import Headers, Renderer, compose

log = logging.getLogger("gateway.notify")

# A code mail carries no link: whoever reads it already has the session.
NO_LINK = frozenset({"verification_code"})
MAX_REFERENCES = 20


@dataclass(frozen=True)
class Recipient:
    """Someone we write to."""

    email: str
    name: str = ""


@dataclass(frozen=True)
class Attached:
    """A file that goes along with a mail."""

    filename: str
    content_type: str
    data: bytes


class Notifier:
    """Renders and queues the mail that events cause."""

    def __init__(self, config: Config, renderer: Renderer, secret: bytes = b"") -> None:
        self.config = config
        self.renderer = renderer
        self.secret = secret  # for agents' personal addresses in their notifications

    def languages(self) -> list[str]:
        """Languages we can write acknowledgements in."""
        return self.renderer.languages("ticket_created")

    # --- to customers ---------------------------------------------------------

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

    def agent_reply(
        self,
        ticket: models.Ticket,
        agent: Agent,
        text: str,
        attachments: Sequence[Attached],
        recipients: Sequence[Recipient],
    ) -> None:
        """An agent's answer, from the mailbox address under the agent's name.

        Human mail, not automatic: no Auto-Submitted, no loop caps (an agent
        answering a busy customer must not be throttled), but never to our own,
        automated or suppressed addresses.
        """
        mailbox = self._mailbox(ticket)
        self._to_customers(
            ticket,
            "agent_reply",
            recipients,
            from_name=f"{agent.name} ({mailbox.name})",
            files=attachments,
            auto_submitted=None,
            auto=False,
            agent={"name": agent.name, "email": ""},
            message={"author_name": agent.name, "author_email": "", "text": text},
            status=ticket.status,
        )

    def status_to_customers(
        self, ticket: models.Ticket, old_status: str, recipients: Sequence[Recipient]
    ) -> None:
        """Tell the customers their ticket was resolved or closed, with the rating links."""
        event = "ticket_closed" if ticket.status == "closed" else "status_changed"
        self._to_customers(ticket, event, recipients, status=ticket.status, old_status=old_status)

    def waiting_reminder(
        self, ticket: models.Ticket, recipients: Sequence[Recipient], resolve_days: int | None
    ) -> None:
        """Remind the customers that we are waiting for their answer."""
        self._to_customers(ticket, "waiting_reminder", recipients, resolve_days=resolve_days)

    def _to_customers(
        self,
        ticket: models.Ticket,
        event: str,
        recipients: Sequence[Recipient],
        **options: Any,
    ) -> None:
        """``event`` to each customer, threaded under their ticket's messages.

        Each gets their own rating links when the ticket is resolved (and
        not rated yet); ``_rating`` gives none otherwise.
        """
        in_reply_to, references = thread_of(ticket)
        for recipient in recipients:
            self.send(
                ticket,
                event,
                recipient,
                in_reply_to=in_reply_to,
                references=references,
                **options,
                **self._rating(ticket, recipient.email),
            )

    def customers(self, ticket: models.Ticket) -> list[Recipient]:
        """The ticket's customer participants: who hears an agent's answer."""
        staff = {a.email for a in self._mailbox(ticket).agents} | self.config.own_addresses()
        query = ticket.participants.where(models.Participant.role == "customer").order_by(
            models.Participant.id
        )
        return [Recipient(p.email, p.name) for p in query if p.email not in staff]

    def _rating(self, ticket: models.Ticket, email: str) -> dict[str, Any]:
        """Rating links for mail that tells a customer their ticket is resolved (or,
        once resolved, closed), until they have rated it."""
        resolved = ticket.status == "resolved" or (
            ticket.status == "closed" and ticket.resolved_at is not None
        )
        if not resolved or ticket.rating is not None:
            return {}
        return ratings.links(self.config.gateway.portal_url, self.secret, ticket, email)

    # --- to agents ------------------------------------------------------------

    def agents_new_ticket(self, ticket: models.Ticket, message: models.Message) -> None:
        """ticket_created_for_agents to every agent of the mailbox."""
        for agent in self._mailbox(ticket).agents:
            self.to_agent(ticket, "ticket_created_for_agents", agent, message=message)

    def agents_customer_reply(self, ticket: models.Ticket, message: models.Message) -> None:
        """customer_reply to the assignee, or to every agent when nobody is assigned."""
        for agent in self.responsible(ticket):
            self.to_agent(ticket, "customer_reply", agent, message=message)

    def responsible(self, ticket: models.Ticket) -> tuple[Agent, ...]:
        """The assignee, or every agent of the mailbox when nobody (known) is assigned."""
        mailbox = self._mailbox(ticket)
        assignee = mailbox.agent(ticket.assignee) if ticket.assignee else None
        return (assignee,) if assignee else mailbox.agents

    def to_agent(
        self,
        ticket: models.Ticket | None,
        event: str,
        to: Agent,
        *,
        mailbox: Mailbox | None = None,
        message: models.Message | None = None,
        **context: Any,
    ) -> models.Outbox | None:
        """An automatic mail to an agent, with a reply key bound to that agent."""
        mailbox = mailbox or self._mailbox(ticket)
        extra: dict[str, Any] = {
            "personal_address": personal_address(self.secret, mailbox, to.email)
            if self.secret
            else None,
        }
        if message is not None:
            extra["message"] = message_context(message)
            extra["attachments"] = [a.filename for a in message.attachments]
        return self.send(
            ticket,
            event,
            Recipient(to.email, to.name),
            mailbox=mailbox,
            role="agent",
            **extra,
            **context,
        )

    # --- the one way out ------------------------------------------------------

    def send(
        self,
        ticket: models.Ticket | None,
        event: str,
        recipient: Recipient,
        *,
        mailbox: Mailbox | None = None,
        role: str = "customer",
        from_name: str | None = None,
        files: Sequence[Attached] = (),
        in_reply_to: str = "",
        references: Sequence[str] = (),
        auto_submitted: str | None = "auto-generated",
        auto: bool = True,
        **context: Any,
    ) -> models.Outbox | None:
        """Queue ``event`` for ``recipient``; None when a loop guard held it back."""
        mailbox = mailbox or self._mailbox(ticket)
        if files:
            context.setdefault("attachments", [item.filename for item in files])
        held = self.held_back(ticket, event, recipient.email, mailbox, auto=auto)
        if held:
            log.warning(
                "%s %s to %s held back: %s", ticket_ref(ticket), event, recipient.email, held
            )
            record(ticket, "mail_held_back", event=event, recipient=recipient.email, why=held)
            return None
        key = keys.new_key(ticket, recipient.email, role)
        if role == "customer" and ticket is not None and event not in NO_LINK:
            context.setdefault("portal_url", self.guest_link(ticket, recipient.email))
        languages = (
            [ticket.language, mailbox.language]
            if ticket is not None and role == "customer"
            else [mailbox.language]
        )
        rendered = self.renderer.render(
            event, languages, self.context(ticket, mailbox, recipient, **context)
        )
        headers = Headers(
            from_name=from_name or mailbox.name,
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
        try:
            message = compose(rendered, headers)
        except (ValueError, email.errors.MessageError) as exc:
            # An address that parsed but cannot be written in a header (a..b@x)
            # must not take the whole transaction down with it (found in review).
            why = f"the address cannot be written in a mail header: {exc}"
            record(ticket, "mail_held_back", event=event, recipient=recipient.email, why=why)
            log.warning(
                "%s %s to %s held back: %s", ticket_ref(ticket), event, recipient.email, why
            )
            return None
        for item in files:
            maintype, _, subtype = item.content_type.partition("/")
            message.add_attachment(
                item.data,
                maintype=maintype or "application",
                subtype=subtype or "octet-stream",
                filename=item.filename,
            )
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

    def guest_link(self, ticket: models.Ticket, email: str) -> str | None:
        """A fresh portal link for ``email`` on ``ticket``, or None without a portal."""
        base = self.config.gateway.portal_url
        if not base:
            return None
        token = access.new_link(ticket, email, self.config.gateway.link_lifetime)
        return f"{base}/t/{token}"

    def context(
        self, ticket: models.Ticket | None, mailbox: Mailbox, recipient: Recipient, **extra: Any
    ) -> dict[str, Any]:
        """The variables every template may use (see templates/mail/README.md)."""
        values: dict[str, Any] = {
            "mailbox": {"address": mailbox.address, "name": mailbox.name},
            "ticket": None,
            "requester": {"name": "", "email": ""},
            "recipient": {"name": recipient.name, "email": recipient.email},
            "portal_url": None,
            "response_hours": None,
            "back_at": None,
            "auto_close_hours": round(mailbox.lifecycle.auto_close_after / 3600),
            "message": None,
            "agent": None,
            "status": None,
            "old_status": None,
            "rating_good_url": None,
            "rating_bad_url": None,
            "code": None,
            "code_minutes": None,
            "applied": [],
            "errors": [],
            "intruder": None,
            "note": "",
            "attachments": [],
            "personal_address": None,
            "sla": None,
            "resolve_days": None,
        }
        if ticket is not None:
            values["ticket"] = {
                "number": ticket.number,
                "tag": mailbox.format_tag(ticket.number),
                "subject": ticket.subject,
                "status": ticket.status,
                "priority": ticket.priority,
                "category": ticket.category,
                "assignee": ticket.assignee,
                "created_at": iso(ticket.created_at),
            }
            values["requester"] = {"name": ticket.requester_name, "email": ticket.requester_email}
            target = mailbox.sla.target("first_response", ticket.priority)
            values["response_hours"] = math.ceil(target / 3600) if target else None
            values["back_at"] = back_at(mailbox, utcnow())
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

    def _mailbox(self, ticket: models.Ticket | None) -> Mailbox:
        if ticket is None:
            return self.config.mailboxes[0]
        return self.config.mailbox_of(ticket.mailbox)


def local_time(mailbox: Mailbox, moment: dt.datetime) -> str:
    """A UTC instant as the mailbox's team reads it: ``2026-11-30 07:00 (Asia/Tehran)``."""
    zone = ZoneInfo(mailbox.hours.timezone)
    local = moment.replace(tzinfo=dt.UTC).astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M} ({mailbox.hours.timezone})"


def duration_text(seconds: float) -> str:
    """``1 h 30 min``, ``3 d``, ``45 min``: a duration as people write it."""
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else ""]
    parts.append(f"{minutes} min" if minutes or not any(parts) else "")
    return " ".join(p for p in parts if p)


def back_at(mailbox: Mailbox, now: dt.datetime) -> str | None:
    """When the team is back, if it is outside business hours now; else None."""
    hours = mailbox.hours
    if hours.always_open or hours.is_open(now):
        return None
    try:
        return local_time(mailbox, hours.next_open(now))
    except ValueError:  # closed for years: say nothing rather than something wrong
        return None


def message_context(message: models.Message | None) -> dict[str, str] | None:
    """A stored message as templates see it."""
    if message is None:
        return None
    return {
        "author_name": message.author_name or message.author_email,
        "author_email": message.author_email,
        "text": message.text,
    }


def thread_of(ticket: models.Ticket) -> tuple[str, list[str]]:
    """In-Reply-To and References for a mail on ``ticket``: its latest customer
    message, and the ticket's messages before it, so clients thread it."""
    ids = [
        m.message_id
        for m in ticket.messages.order_by(models.Message.id)
        if m.message_id and m.direction == "inbound"
    ]
    customer = [
        m.message_id
        for m in ticket.messages.order_by(models.Message.id.desc())
        if m.message_id and m.author_role == "customer"
    ]
    return (customer[0] if customer else ""), ids


def ticket_ref(ticket: models.Ticket | None) -> str:
    """``#10023`` for log lines, ``-`` when there is no ticket."""
    return f"#{ticket.number}" if ticket is not None else "-"


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
