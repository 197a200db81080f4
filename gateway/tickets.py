"""Tickets: the sole writer of ticket state.

Called by ``process`` inside its transaction, with a parsed and classified
message and the mailbox it came to. It decides, from the threading
candidates, whether the message opens a ticket, follows one up, or (for
machine mail) is only recorded; then writes the ticket, the message, its
attachments, the participants and an event for every change. Nothing else
in the gateway writes these tables, so every rule about who may change a
ticket lives here.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from gateway import bounces, keys, language, models, sla, thread
from gateway.classify import Verdict, is_automated_address
from gateway.config import Config, Mailbox
from gateway.db import utcnow
from gateway.events import record
from gateway.intake import OWN_PROTOCOLS
from gateway.notify import Notifier
from gateway.parse import Address, ParsedMessage
from gateway.quotes import strip_reply

REOPENING = ("waiting_on_customer", "resolved", "closed")


@dataclass(frozen=True)
class Outcome:
    """What applying a message did, for the log line and the caller."""

    action: str  # created | followed_up | auto_added | ignored | agent_* | held | rejected
    ticket_number: int | None = None
    reason: str = ""  # why a message was held for review


@dataclass(frozen=True)
class Incoming:
    """Everything the ticket step needs to know about one inbound message."""

    inbound: models.Inbound
    parsed: ParsedMessage
    verdict: Verdict
    mailbox: Mailbox
    config: Config
    notifier: Notifier

    @property
    def own_addresses(self) -> frozenset[str]:
        return self.config.own_addresses()

    @property
    def sender(self) -> Address:
        """The author: the From header, else the envelope sender."""
        if self.parsed.from_addr is not None:
            return self.parsed.from_addr
        return Address("", self.inbound.mail_from.lower())

    def details(self) -> list[str]:
        """The +details of the envelope recipients (reply keys, bounce tokens)."""
        routed = (self.config.route(r) for r in json.loads(self.inbound.rcpt_to))
        return [r[1] for r in routed if r is not None and r[1]]


def apply(incoming: Incoming) -> Outcome:
    """Turn one processed message into ticket state.

    Threading order (DESIGN.md): the VERP bounce address, the reply key in
    the recipient address, then In-Reply-To/References and the subject tag.
    """
    details = incoming.details()
    bounced = bounces.outbox_row(details)
    if bounced is None and incoming.verdict.bounce:
        bounced = bounces.outbox_row_by_message_id(incoming.verdict.original_message_ids)
    if bounced is not None:
        return _apply_bounce(incoming, bounced)
    # Imported here: agent_mail writes through this module's functions.
    from gateway import agent_mail

    key = next(filter(None, (keys.lookup(d) for d in details)), None)
    if (
        key is not None
        and key.ticket is not None
        and key.ticket.mailbox == incoming.mailbox.address
    ):
        if key.role == "agent":
            return agent_mail.on_reply_key(incoming, key, key.ticket)
        return _apply_key(incoming, key, key.ticket)
    personal = agent_mail.personal_owner(incoming, details)
    if personal is not None:
        return agent_mail.on_personal_address(incoming, personal)
    parsed, verdict = incoming.parsed, incoming.verdict
    ids = thread.header_ids(
        parsed.in_reply_to,
        parsed.references,
        verdict.original_message_ids if verdict.bounce else (),
    )
    # An erased customer's ticket is no one's to point at any more: nothing
    # more is written onto it, and its old requester starts afresh.
    candidates = [
        c
        for c in thread.candidates(incoming.mailbox, parsed.subject, ids)
        if c.ticket.erased_at is None
    ]
    sender = incoming.sender.email
    joined = next((c for c in candidates if thread.is_participant(c.ticket, sender)), None)
    if verdict.auto:
        return _apply_auto(incoming, joined, candidates)
    if joined is not None:
        return _follow_up(incoming, joined)
    # A stranger pointing at someone else's ticket gets a ticket of their own
    # but no acknowledgement: an autoresponder that rotates its address and
    # replies to our mail would otherwise ping-pong with us forever.
    ticket = _create(incoming, auto=False, acknowledge=not candidates)
    for refused in candidates:
        _refuse(incoming, refused, ticket)
    return Outcome("created", ticket.number)


def _apply_key(incoming: Incoming, key: models.ReplyKey, ticket: models.Ticket) -> Outcome:
    """Mail to support+KEY@: joins the key's ticket only when From is the key's owner."""
    sender = incoming.sender.email.lower()
    candidate = thread.Candidate(ticket, "reply-key")
    if sender == key.email:
        if incoming.verdict.auto:
            return _apply_auto(incoming, candidate, [candidate])
        return _follow_up(incoming, candidate)
    if incoming.verdict.auto:
        record(
            ticket,
            "thread_refused",
            actor=sender,
            inbound=incoming.inbound,
            via="reply-key",
            why=_key_mismatch(sender, ticket),
            auto=True,
        )
        return Outcome("ignored")
    new = _create(incoming, auto=False, acknowledge=False)
    _refuse(incoming, candidate, new, why=_key_mismatch(sender, ticket))
    return Outcome("created", new.number)


def _key_mismatch(sender: str, ticket: models.Ticket) -> str:
    return (
        f"{sender or 'the sender'} wrote to a reply key of ticket #{ticket.number} "
        "that belongs to someone else"
    )


def _apply_bounce(incoming: Incoming, row: models.Outbox) -> Outcome:
    """A report about mail we sent: noted on its ticket; permanent failures suppress."""
    code = bounces.status(incoming.parsed)
    permanent = code.startswith("5")
    if permanent:
        bounces.suppress(
            row.recipient,
            f"{code} bounce of {row.event} mail",
            incoming.config.gateway.bounce_suppression,
        )
    if row.ticket is None:
        record(
            None,
            "delivery_failed",
            inbound=incoming.inbound,
            recipient=row.recipient,
            status=code,
            outbox=row.id,
        )
        return Outcome("ignored")
    add_message(incoming, row.ticket, text=incoming.parsed.text, visibility="internal", auto=True)
    record(
        row.ticket,
        "delivery_failed",
        actor=incoming.sender.email,
        inbound=incoming.inbound,
        recipient=row.recipient,
        status=code,
        permanent=permanent,
        outbox=row.id,
    )
    return Outcome("auto_added", row.ticket.number)


def set_status(
    ticket: models.Ticket,
    status: str,
    *,
    mailbox: Mailbox,
    actor: str,
    inbound: models.Inbound | None = None,
    why: str = "",
) -> bool:
    """Change the status, recording the transition and moving the SLA clocks.

    Returns False (and does nothing) when the status is already ``status``.
    """
    if ticket.status == status:
        return False
    now = utcnow()
    old, ticket.status, ticket.updated_at = ticket.status, status, now
    ticket.status_changed_at = now
    if status == "resolved":
        ticket.resolved_at = now
    if status == "closed":
        ticket.closed_at = now
    if status in sla.RUNNING:
        ticket.reminded_at = None  # a later wait gets its own reminder
    ticket.save()
    sla.on_status(ticket, mailbox, old, status, now)
    record(ticket, "status_changed", actor=actor, inbound=inbound, old=old, new=status, why=why)
    return True


def _apply_auto(
    incoming: Incoming, joined: thread.Candidate | None, candidates: list[thread.Candidate]
) -> Outcome:
    """Machine mail: recorded, never reopens, never opens a ticket from a bounce.

    A bounce may name a ticket without its sender (mailer-daemon) being a
    participant; it is then kept as an internal note of the delivery failure.
    """
    verdict = incoming.verdict
    target = joined or (candidates[0] if verdict.bounce and candidates else None)
    if target is not None:
        visibility = "public" if joined is not None else "internal"
        add_message(incoming, target.ticket, text=incoming.parsed.text, visibility=visibility)
        record(
            target.ticket,
            "bounce_received" if verdict.bounce else "auto_message_added",
            actor=incoming.sender.email,
            inbound=incoming.inbound,
            via=target.via,
            reasons=list(verdict.reasons),
        )
        return Outcome("auto_added", target.ticket.number)
    sender = incoming.sender.email
    if verdict.bounce or sender in incoming.own_addresses or is_automated_address(sender):
        record(
            None,
            "auto_message_ignored",
            actor=sender,
            inbound=incoming.inbound,
            reasons=list(verdict.reasons),
        )
        return Outcome("ignored")
    ticket = _create(incoming, auto=True)
    return Outcome("created", ticket.number)


def _follow_up(incoming: Incoming, joined: thread.Candidate) -> Outcome:
    """A participant's reply: added with quotes stripped; reopens a finished ticket.

    A ticket closed longer ago than the reopen window is not reopened: the
    reply starts a new ticket that continues it.
    """
    ticket = joined.ticket
    if _closed_long_ago(incoming, ticket):
        return _continue(incoming, ticket)
    message = add_message(incoming, ticket, text=strip_reply(incoming.parsed.text))
    if joined.via == "reply-key":
        # Only a sender proven by their key may widen the circle. A From is
        # no proof: "From: customer, Cc: attacker" with the ticket's tag would
        # otherwise make the attacker a participant, able to fetch a portal
        # link and read the whole ticket (found in review).
        add_participants(ticket, _copied(incoming))
    record(
        ticket,
        "message_added",
        actor=incoming.sender.email,
        inbound=incoming.inbound,
        via=joined.via,
        message=message.id,
    )
    if ticket.status in REOPENING:
        set_status(
            ticket,
            "open",
            mailbox=incoming.mailbox,
            actor=incoming.sender.email,
            inbound=incoming.inbound,
            why="customer replied",
        )
    else:
        ticket.updated_at = utcnow()
        ticket.save()
    sla.on_customer_message(ticket, incoming.mailbox, utcnow())
    incoming.notifier.agents_customer_reply(ticket, message)
    return Outcome("followed_up", ticket.number)


def _closed_long_ago(incoming: Incoming, ticket: models.Ticket) -> bool:
    """Whether ``ticket`` was closed longer ago than the mailbox's reopen window."""
    if ticket.status != "closed" or ticket.closed_at is None:
        return False
    window = dt.timedelta(seconds=incoming.mailbox.lifecycle.reopen_window)
    return bool(ticket.closed_at < utcnow() - window)


def _continue(incoming: Incoming, closed: models.Ticket) -> Outcome:
    """A reply to a ticket closed long ago opens a new ticket that names the old one.

    The old ticket's history stays as it was (its figures are in reports
    already); the new one gets the customer's whole message, the old
    ticket's participants and the usual acknowledgement.
    """
    ticket = _create(incoming, auto=False, continues=closed)
    people = [Address(p.name, p.email) for p in closed.participants if p.role == "customer"]
    add_participants(ticket, people)
    record(
        closed,
        "continued_in",
        actor=incoming.sender.email,
        inbound=incoming.inbound,
        new_ticket=ticket.number,
    )
    return Outcome("created", ticket.number)


def _create(
    incoming: Incoming,
    *,
    auto: bool,
    acknowledge: bool = True,
    continues: models.Ticket | None = None,
) -> models.Ticket:
    """A new ticket with the message as its first, whole, message.

    The requester is acknowledged unless the message was automatic (never
    answer a machine) or ``acknowledge`` is False; the agents hear of every
    ticket a person opened.
    """
    parsed, sender = incoming.parsed, incoming.sender
    ticket = open_ticket(incoming, sender)
    if incoming.inbound.protocol in OWN_PROTOCOLS:
        _requested_choices(incoming, ticket)
    if continues is not None:
        ticket.continues = continues.number
        ticket.save()
    sla.on_created(ticket, incoming.mailbox, ticket.created_at)
    add_participants(ticket, [sender, *_copied(incoming)])
    message = add_message(incoming, ticket, text=parsed.text, auto=auto)
    record(
        ticket,
        "ticket_created",
        actor=sender.email,
        inbound=incoming.inbound,
        message=message.id,
        auto=auto,
        **({"continues": continues.number} if continues is not None else {}),
    )
    if not auto:
        if acknowledge and sender.email:
            incoming.notifier.acknowledge(ticket, parsed.message_id, parsed.references)
        incoming.notifier.agents_new_ticket(ticket, message)
    return ticket


def _requested_choices(incoming: Incoming, ticket: models.Ticket) -> None:
    """Category and priority picked in the portal's form or given to the API.

    Only the portal and the API spool with their protocols, so these headers
    are ours; the same headers in mail from outside are ignored.
    """
    headers = dict(incoming.parsed.headers)
    category = headers.get("x-gateway-category", "").strip().lower()
    priority = headers.get("x-gateway-priority", "").strip().lower()
    categories = incoming.mailbox.categories
    if category and (not categories or category in categories or category == ticket.category):
        ticket.category = category
        ticket.priority = incoming.mailbox.default_priority(category)
    if priority in models.Ticket.PRIORITIES:
        ticket.priority = priority
    ticket.save()


def open_ticket(incoming: Incoming, requester: Address) -> models.Ticket:
    """Insert a ticket for ``requester`` in the message's mailbox, numbered and dated."""
    mailbox, parsed = incoming.mailbox, incoming.parsed
    now = utcnow()
    category = mailbox.category_for(incoming.details()) or mailbox.category
    ticket: models.Ticket = models.Ticket.create(
        number=next_ticket_number(),
        mailbox=mailbox.address,
        subject=thread.strip_tags(mailbox, parsed.subject),
        requester_email=requester.email.lower(),
        requester_name=requester.name,
        category=category,
        priority=mailbox.default_priority(category),
        status_changed_at=now,
        language=language.detect(
            parsed.subject,
            parsed.text,
            parsed.content_language,
            mailbox.language,
            incoming.notifier.languages(),
        ),
        created_at=now,
        updated_at=now,
    )
    return ticket


def set_field(
    ticket: models.Ticket,
    field: str,
    value: str | None,
    *,
    mailbox: Mailbox,
    actor: str,
    inbound: models.Inbound | None = None,
) -> None:
    """Change priority, category or assignee, recording the change (no-op when unchanged).

    A new priority gives the running SLA clocks that priority's targets.
    """
    assert field in {"priority", "category", "assignee"}
    old = getattr(ticket, field)
    if old == value:
        return
    setattr(ticket, field, value)
    ticket.updated_at = utcnow()
    ticket.save()
    if field == "priority":
        sla.on_priority(ticket, mailbox)
    record(ticket, f"{field}_changed", actor=actor, inbound=inbound, old=old, new=value)


def _refuse(
    incoming: Incoming, refused: thread.Candidate, ticket: models.Ticket, why: str = ""
) -> None:
    """Record, on both tickets, that a non-participant pointed at a ticket."""
    sender = incoming.sender.email
    why = why or f"{sender or 'the sender'} is not a participant of ticket #{refused.ticket.number}"
    record(
        ticket,
        "thread_refused",
        actor=sender,
        inbound=incoming.inbound,
        refused_ticket=refused.ticket.number,
        via=refused.via,
        why=why,
    )
    record(
        refused.ticket,
        "thread_refused",
        actor=sender,
        inbound=incoming.inbound,
        new_ticket=ticket.number,
        via=refused.via,
        why=why,
    )


def next_ticket_number() -> int:
    """The next ticket number. The UPDATE locks the counter row until commit,
    so instances sharing one PostgreSQL never hand out the same number."""
    models.Counter.update(value=models.Counter.value + 1).where(
        models.Counter.name == "ticket"
    ).execute()
    return int(models.Counter.get_by_id("ticket").value)


def _copied(incoming: Incoming) -> list[Address]:
    """People the author put on To/Cc besides us: they may follow up too."""
    own = incoming.own_addresses
    return [
        a
        for a in (*incoming.parsed.to, *incoming.parsed.cc)
        if a.email and a.email not in own and not _is_own_subaddress(a.email, own)
    ]


def _is_own_subaddress(email: str, own: frozenset[str]) -> bool:
    local, _, domain = email.rpartition("@")
    return f"{local.partition('+')[0]}@{domain}" in own


def add_participants(ticket: models.Ticket, people: list[Address]) -> None:
    """Add each address once; the first name we saw for it stays."""
    now = utcnow()
    for person in thread.unique((p for p in people if p.email), key=lambda p: p.email.lower()):
        email = person.email.lower()
        if thread.is_participant(ticket, email):
            continue
        models.Participant.insert(
            ticket=ticket, email=email, name=person.name, role="customer", created_at=now
        ).on_conflict_ignore().execute()
        if email != ticket.requester_email:
            record(ticket, "participant_added", email=email)


def add_message(
    incoming: Incoming,
    ticket: models.Ticket,
    *,
    text: str,
    visibility: str = "public",
    auto: bool | None = None,
    role: str = "customer",
    author_name: str | None = None,
) -> models.Message:
    """Store the message and its attachments on ``ticket``."""
    parsed, sender = incoming.parsed, incoming.sender
    message = models.Message.create(
        ticket=ticket,
        inbound=incoming.inbound,
        message_id=parsed.message_id,
        direction="outbound" if role == "agent" else "inbound",
        author_email=sender.email.lower(),
        author_name=sender.name if author_name is None else author_name,
        author_role=role,
        visibility=visibility,
        auto=incoming.verdict.auto if auto is None else auto,
        subject=parsed.subject,
        text=text,
        full_text=parsed.text,
        html=parsed.html,
        created_at=utcnow(),
    )
    for attachment in parsed.attachments:
        _store_attachment(
            message,
            attachment.filename,
            attachment.content_type,
            attachment.data,
            attachment.content_id,
            attachment.inline,
        )
    return message


def _store_attachment(
    message: models.Message,
    filename: str,
    content_type: str,
    data: bytes,
    content_id: str | None,
    inline: bool,
) -> None:
    """Store the bytes once per hash and link them to the message."""
    sha = hashlib.sha256(data).hexdigest()
    models.Blob.insert(sha256=sha, size=len(data), data=data).on_conflict_ignore().execute()
    blob = models.Blob.get(models.Blob.sha256 == sha)
    models.Attachment.create(
        message=message,
        blob=blob,
        filename=filename,
        content_type=content_type,
        size=len(data),
        sha256=sha,
        content_id=content_id,
        inline=inline,
    )


def latest_customer_message(ticket: models.Ticket) -> models.Message | None:
    """The customer's most recent message on ``ticket``, for agents' notifications."""
    found: models.Message | None = (
        ticket.messages.where(models.Message.author_role == "customer")
        .order_by(models.Message.id.desc())
        .first()
    )
    return found
