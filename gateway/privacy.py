"""Privacy: forget a customer (GDPR art. 17), or export what we hold about them (art. 15, 20).

The operator runs both from the CLI (``ticket-gateway customers forget`` and
``customers export``) inside a connection; ``forget`` also inside one
transaction, so an erasure that fails half-way leaves nothing half-erased.
Both are for customers only: agents are the team, configured in
mailboxes.toml, and the CLI refuses an agent's address.

Forgetting keeps what reports count and drops what tells who someone is.

Kept: ticket numbers, mailboxes, timings, statuses, priorities, categories,
languages, SLA clocks, the rating (not its comment), message directions and
roles, delivery statuses, and every event (scrubbed).

Erased, everywhere the address is found (case-insensitively):

- tickets they requested: requester, subject and rating comment; every
  message on them (agents quote and address the customer), its attachments
  and the raw mail behind it (an agent's mail of commands only too), every
  outbound mail of the ticket, and agents' escalation notes in its history;
- on tickets where they were only copied: the messages they wrote, their
  attachments and raw mail, and outbound mail that names them; the address
  in other people's messages is replaced (their raw mail is theirs and kept);
- the raw mail they sent that became no message (quarantined, ignored);
- their participant rows, reply keys, portal links, codes and sessions (so
  nothing they hold opens a ticket any more), mail to them (mail not sent
  yet is marked failed, never sent), their suppression; the address in the
  history, quarantine reasons and delivery errors.

Names elsewhere in free text (another customer writing "my colleague Hoa")
cannot be found reliably and stay.

The address becomes :func:`placeholder`, the same for every erasure of one
address, so reports still count distinct requesters. RFC 2606 reserves
``.invalid``: no mail can ever go there. It is a pseudonym, not a secret:
whoever guesses the address can recompute it.
"""

from __future__ import annotations

import email.errors
import email.policy
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import peewee as pw

from gateway import models
from gateway.db import utcnow
from gateway.events import record
from gateway.outbox import rate_key
from gateway.parse import sanitize_filename
from gateway.queries import iso

# Characters that may stand beside an address in text without being part of
# it; "an@example.vn" must not match inside "lan@example.vn" or
# "an@example.vn.evil".
_BEFORE = r"(?<![\w.!#$%&'*+/=?^`{|}~-])"
_AFTER = r"(?![\w-]|\.\w)"
_PENDING = (models.Outbox.QUEUED, models.Outbox.DEFERRED, models.Outbox.SENDING)
_NOT_SENT = "not sent: the recipient's personal data was erased"
_UNPROCESSED = "erased before processing: the sender's personal data was erased"
_MAX_NAME_BYTES = 200  # file names: most file systems allow 255 bytes


@dataclass(frozen=True)
class Forgotten:
    """What :func:`forget` changed, for the CLI to print; all zero when nothing was stored."""

    placeholder: str  # what the address became
    tickets: int = 0  # tickets they requested or took part in
    messages: int = 0  # messages blanked, or with the address replaced
    attachments: int = 0  # attachment rows deleted
    raw_messages: int = 0  # raw mails blanked
    participants: int = 0  # participant rows deleted
    reply_keys: int = 0  # reply keys deleted
    portal: int = 0  # guest links, codes and sessions deleted
    outbox: int = 0  # outbound mails blanked
    suppressions: int = 0  # suppression rows deleted
    events: int = 0  # history entries scrubbed


@dataclass(frozen=True)
class _Person:
    """The customer being forgotten: how to find and how to replace them."""

    email: str  # lower-case
    placeholder: str
    names: frozenset[str]  # casefolded display names they used

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the address replaced by the placeholder."""
        pattern = _BEFORE + re.escape(self.email) + _AFTER
        return re.sub(pattern, self.placeholder, text, flags=re.IGNORECASE)

    def named_in(self, text: str) -> bool:
        """Whether ``text`` names them: their address, or a name they used, as whole words.

        Bounded matches only: "an@example.vn" is not in "lan@example.vn", and
        the Vietnamese name "An" is not in "Thank you".
        """
        if re.search(_BEFORE + re.escape(self.email) + _AFTER, text, re.IGNORECASE):
            return True
        folded = text.casefold()
        return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", folded) for n in self.names)


def placeholder(email: str, secret: bytes = b"") -> str:
    """What ``email`` becomes: ``erased-<12 hex digits>@invalid``, one per address.

    With the gateway's secret it is an HMAC: whoever guesses the address
    cannot recompute the placeholder from a copy of the database and so
    re-identify the erased tickets.
    """
    data = email.strip().lower().encode("utf-8")
    if secret:
        digest = hmac.new(secret, b"forget\0" + data, hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(data).hexdigest()
    return f"erased-{digest[:12]}@invalid"


def forget(email: str, *, actor: str = "operator", secret: bytes = b"") -> Forgotten:
    """Erase a customer's personal data everywhere; run it inside a transaction.

    Idempotent: a second run finds nothing and returns zero counts. Each
    ticket touched gets a ``customer_forgotten`` event by ``actor`` naming
    the placeholder, never the address.
    """
    address = _address(email)
    requested = _ids(
        models.Ticket.select(models.Ticket.id).where(_is(models.Ticket.requester_email, address))
    )
    involved = _involved(address) - requested
    person = _Person(address, placeholder(address, secret), _names(address, requested))
    erased = _erasable_messages(address, requested)
    # In this order: messages are found by the authors and tickets that the
    # later steps erase, and the history is scrubbed before it gets new events.
    counts = {
        "attachments": _delete_attachments(erased),
        "raw_messages": _blank_raw_mail(address, requested, erased),
        "messages": _blank_messages(person, erased) + _scrub_messages(person, involved, erased),
        "outbox": _blank_outbox(person, requested, involved),
        "portal": _forget_portal(address),
        "participants": _delete(models.Participant, _is(models.Participant.email, address)),
        "reply_keys": _delete(models.ReplyKey, _is(models.ReplyKey.email, address)),
        "suppressions": _delete(
            models.Suppression, models.Suppression.email << sorted({address, rate_key(address)})
        ),
        "events": _scrub_events(person, requested),
    }
    _scrub_reasons(person)
    _blank_tickets(person, requested)
    for ticket in models.Ticket.select().where(models.Ticket.id << sorted(requested | involved)):
        record(ticket, "customer_forgotten", actor=actor, subject=person.placeholder)
    return Forgotten(person.placeholder, tickets=len(requested | involved), **counts)


# --- finding them ---------------------------------------------------------------


def _address(email: str) -> str:
    """The address as stored (lower case); refuses what is no address.

    An empty string would match every system message and every bounce
    (their sender is empty), so it must never get this far.
    """
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if not (local and at and domain) or any(c.isspace() for c in address):
        raise ValueError(f"not an email address: {email!r}")
    return address


def _is(field: Any, address: str) -> Any:
    """``field`` equals ``address``, whatever the case it was stored in."""
    return pw.fn.LOWER(field) == address


def _ids(query: Any) -> set[int]:
    """The one column of ``query``: ids, as a set."""
    return {int(value) for value in query.scalars() if value is not None}


def _rows(query: Any) -> list[tuple[Any, ...]]:
    """The rows of ``query`` as plain tuples (columns in select order)."""
    return list(query.tuples())


def _involved(address: str) -> set[int]:
    """Tickets they are on in any way: participant, author, link, key or recipient."""
    sources = (
        (models.Participant.ticket, models.Participant.email),
        (models.Message.ticket, models.Message.author_email),
        (models.GuestLink.ticket, models.GuestLink.email),
        (models.ReplyKey.ticket, models.ReplyKey.email),
        (models.Outbox.ticket, models.Outbox.recipient),
    )
    found: set[int] = set()
    for ticket, owner in sources:
        found |= _ids(ticket.model.select(ticket).where(_is(owner, address)))
    return found


def _names(address: str, requested: set[int]) -> frozenset[str]:
    """The display names they used, casefolded, to find them in outbound mail."""
    queries = (
        models.Ticket.select(models.Ticket.requester_name).where(
            models.Ticket.id << sorted(requested)
        ),
        models.Participant.select(models.Participant.name).where(
            _is(models.Participant.email, address)
        ),
        models.Message.select(models.Message.author_name).where(
            _is(models.Message.author_email, address)
        ),
    )
    names = {str(value).strip().casefold() for query in queries for value in query.scalars()}
    # A one-letter "name" would match every mail.
    return frozenset(n for n in names if len(n) > 1)


def _erasable_messages(address: str, requested: set[int]) -> set[int]:
    """Every message of their tickets, and the messages they wrote anywhere."""
    query = models.Message.select(models.Message.id).where(
        (models.Message.ticket << sorted(requested)) | _is(models.Message.author_email, address)
    )
    return _ids(query)


# --- erasing ----------------------------------------------------------------------


def _delete(model: type[models.BaseModel], where: Any) -> int:
    return int(model.delete().where(where).execute())


def _blank_messages(person: _Person, ids: set[int]) -> int:
    """Empty the messages; their own messages' author becomes the placeholder."""
    message = models.Message
    message.update(text="", full_text="", html=None, subject="", author_name="").where(
        message.id << sorted(ids)
    ).execute()
    message.update(author_email=person.placeholder).where(
        (message.id << sorted(ids)) & _is(message.author_email, person.email)
    ).execute()
    _scrub_message_ids(person, message.id << sorted(ids))
    return len(ids)


def _scrub_message_ids(person: _Person, where: Any) -> None:
    """A Message-ID stays for threading, unless it spells out the address."""
    query = models.Message.select(models.Message.id, models.Message.message_id).where(
        where & pw.fn.LOWER(models.Message.message_id).contains(person.email)
    )
    for row in query:
        models.Message.update(message_id=person.scrub(row.message_id)).where(
            models.Message.id == row.id
        ).execute()


def _scrub_messages(person: _Person, involved: set[int], erased: set[int]) -> int:
    """Replace the address in other people's messages on tickets they were copied on."""
    message = models.Message
    fields = (message.subject, message.text, message.full_text, message.html)
    query = message.select().where(
        (message.ticket << sorted(involved))
        & ~(message.id << sorted(erased))
        & _any_contains(fields, person.email)
    )
    changed = 0
    for row in query:
        texts = {f.name: getattr(row, f.name) for f in fields}
        scrubbed = {k: person.scrub(v) if v is not None else None for k, v in texts.items()}
        if scrubbed != texts:
            message.update(**scrubbed).where(message.id == row.id).execute()
            changed += 1
    _scrub_message_ids(person, message.ticket << sorted(involved))
    return changed


def _any_contains(fields: Iterable[Any], needle: str) -> Any:
    """Any of ``fields`` contains ``needle``, ignoring case (SQL)."""
    condition: Any = None
    for field in fields:
        term = pw.fn.LOWER(field).contains(needle)
        condition = term if condition is None else condition | term
    return condition


def _delete_attachments(message_ids: set[int]) -> int:
    """Delete the messages' attachments, and the bytes nothing else refers to."""
    attachment = models.Attachment
    mine = attachment.message << sorted(message_ids)
    blobs = _ids(attachment.select(attachment.blob).where(mine))
    count = _delete(attachment, mine)
    still = attachment.select(attachment.id).where(attachment.blob == models.Blob.id)
    _delete(models.Blob, (models.Blob.id << sorted(blobs)) & ~pw.fn.EXISTS(still))
    return count


def _blank_raw_mail(address: str, requested: set[int], message_ids: set[int]) -> int:
    """Blank the raw mail behind their tickets and the mail they sent; return how many.

    RawMessage rows are referenced ON DELETE RESTRICT by the inbound rows we
    keep, so the bytes are emptied instead. Every delivery of the same bytes
    (one raw row, several mailboxes) is theirs too.
    """
    inbound_ids = _ids(
        models.Message.select(models.Message.inbound).where(
            models.Message.id << sorted(message_ids)
        )
    )
    inbound_ids |= _ids(
        models.Inbound.select(models.Inbound.id).where(_is(models.Inbound.mail_from, address))
    )
    inbound_ids |= _causes(requested)
    raw_ids = _ids(
        models.Inbound.select(models.Inbound.raw_message).where(
            models.Inbound.id << sorted(inbound_ids)
        )
    )
    _blank_inbound(models.Inbound.raw_message << sorted(raw_ids))
    return sum(
        _blank_raw(row)
        for row in models.RawMessage.select().where(models.RawMessage.id << sorted(raw_ids))
    )


def _causes(requested: set[int]) -> set[int]:
    """Mail that changed their tickets without becoming a message there.

    An agent's mail of commands only ("#resolve") quotes the notification,
    and so the customer's words. Mail that became a message of another
    ticket (a stranger refused by threading) is that ticket's, and stays.
    """
    event, message = models.Event, models.Message
    caused = _ids(event.select(event.inbound).where(event.ticket << sorted(requested)))
    elsewhere = message.select(message.inbound).where(
        (message.inbound << sorted(caused)) & ~(message.ticket << sorted(requested))
    )
    return caused - _ids(elsewhere)


def _blank_inbound(where: Any) -> None:
    """Blank the envelope; a row not yet processed is set aside, never processed empty."""
    inbound = models.Inbound
    inbound.update(status=inbound.QUARANTINED, reason=_UNPROCESSED).where(
        where & (inbound.status == inbound.RECEIVED)
    ).execute()
    inbound.update(mail_from="", peer="", helo="", message_id="", rcpt_to="[]").where(
        where
    ).execute()


def _blank_raw(row: models.RawMessage) -> int:
    """Empty one raw mail; 1 if it held anything.

    The sha256 changes too: intake finds stored bytes by their hash, and the
    same bytes arriving again must be stored again, not matched to this
    empty row. A hash of the old hash can collide with no real content.
    """
    if row.size == 0 and not bytes(row.data):
        return 0
    erased_hash = hashlib.sha256(b"erased\0" + row.sha256.encode("ascii")).hexdigest()
    models.RawMessage.update(data=b"", size=0, sha256=erased_hash).where(
        models.RawMessage.id == row.id
    ).execute()
    return 1


def _blank_outbox(person: _Person, requested: set[int], involved: set[int]) -> int:
    """Blank mail to them and all mail of their tickets; cancel what is not sent yet.

    Mail to someone else on a ticket they were only copied on is that
    person's: once sent, its copy here is blanked if it names them; while
    it waits to be sent, it is left to go out (cancelling it would break
    the other customer's conversation).
    """
    outbox = models.Outbox
    theirs = _is(outbox.recipient, person.email) | (outbox.rate_key == person.email)
    ids = _ids(outbox.select(outbox.id).where(theirs | (outbox.ticket << sorted(requested))))
    nearby = outbox.select(outbox.id, outbox.data).where(
        (outbox.ticket << sorted(involved))
        & ~(outbox.id << sorted(ids))
        & ~(outbox.status << _PENDING)
    )
    named = {row.id for row in nearby if person.named_in(_readable(bytes(row.data)))}
    outbox.update(recipient=person.placeholder, rate_key=person.placeholder).where(theirs).execute()
    outbox.update(
        status=outbox.FAILED, last_error=_NOT_SENT, claimed_by=None, claimed_until=None
    ).where((outbox.id << sorted(ids)) & (outbox.status << _PENDING)).execute()
    outbox.update(data=b"").where(outbox.id << sorted(ids | named)).execute()
    return len(ids | named)


def _readable(data: bytes) -> str:
    """A rendered mail's headers and text parts, decoded, to look for a name in."""
    try:
        message = BytesParser(policy=email.policy.default).parsebytes(data)
        texts = [str(value) for value in message.values()]
        for part in message.walk():
            if part.get_content_maintype() == "text":
                texts.append(str(part.get_content()))
    except (LookupError, ValueError, email.errors.MessageError):
        return data.decode("utf-8", "replace")
    return "\n".join(texts)


def _forget_portal(address: str) -> int:
    """Delete their links, sessions and codes: nothing they hold opens a ticket."""
    session = models.GuestSession
    sessions = session.select(session.id).where(
        _is(session.email, address) | _is(session.pending_email, address)
    )
    code = models.GuestCode
    count = _delete(code, _is(code.email, address) | (code.session << sessions))
    count += _delete(session, session.id << sorted(_ids(sessions)))
    return count + _delete(models.GuestLink, _is(models.GuestLink.email, address))


def _scrub_events(person: _Person, requested: set[int]) -> int:
    """Replace the address in the history; blank agents' notes about their tickets."""
    event = models.Event
    query = event.select(event.id, event.ticket, event.actor, event.detail).where(
        _is(event.actor, person.email)
        | pw.fn.LOWER(event.detail).contains(person.email)
        | ((event.ticket << sorted(requested)) & event.detail.contains('"note":'))
    )
    changed = 0
    for event_id, ticket_id, actor, detail in _rows(query):
        new_actor = person.placeholder if actor.lower() == person.email else actor
        new_detail = person.scrub(detail)
        if ticket_id in requested:
            new_detail = _without_notes(new_detail)
        if (new_actor, new_detail) != (actor, detail):
            event.update(actor=new_actor, detail=new_detail).where(event.id == event_id).execute()
            changed += 1
    return changed


def _without_notes(detail: str) -> str:
    """An escalation's note is an agent's text about the customer, like an internal note."""
    data = json.loads(detail)
    if not isinstance(data, dict) or not data.get("note"):
        return detail
    data["note"] = ""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def _scrub_reasons(person: _Person) -> None:
    """The address in quarantine reasons and delivery errors."""
    for model, field in (
        (models.Inbound, models.Inbound.reason),
        (models.Outbox, models.Outbox.last_error),
    ):
        query = model.select(model.id, field).where(pw.fn.LOWER(field).contains(person.email))
        for row in _rows(query):
            model.update({field: person.scrub(row[1])}).where(model.id == row[0]).execute()


def _blank_tickets(person: _Person, requested: set[int]) -> None:
    """The requester becomes the placeholder; numbers, times and states stay."""
    models.Ticket.update(
        requester_email=person.placeholder,
        requester_name="",
        subject="",
        rating_comment=None,
        erased_at=utcnow(),
    ).where(models.Ticket.id << sorted(requested)).execute()


# --- export ---------------------------------------------------------------------


def export(email: str, folder: Path) -> Path:
    """Write what we hold about a customer to ``folder``; return the JSON file's path.

    ``customer-<address>.json`` lists their tickets with the public
    conversation (internal notes are the team's, not theirs), the mail we
    received from them and sent to them, their portal access and any
    suppression. The attachments of those messages go under
    ``attachments/<ticket number>/<message id>-<name>``; the files are
    readable by the operator only, as they hold customers' mail.
    """
    address = _address(email)
    folder.mkdir(parents=True, exist_ok=True)
    files = _Files(folder)
    document = {
        "email": address,
        "exported_at": iso(utcnow()),
        "tickets": [_ticket_export(t, role, files) for t, role in _tickets_of(address)],
        "mail_received": _mail_received(address),
        "mail_sent": _mail_sent(address),
        "portal": _portal_access(address),
        "suppression": _suppression(address),
    }
    path = folder / f"customer-{_safe(address)}.json"
    _write(path, json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8") + b"\n")
    return path


def _tickets_of(address: str) -> list[tuple[models.Ticket, str]]:
    """Their tickets, by number, each with their role on it."""
    ticket, participant, message = models.Ticket, models.Participant, models.Message
    requested = _ids(ticket.select(ticket.id).where(_is(ticket.requester_email, address)))
    on = _ids(participant.select(participant.ticket).where(_is(participant.email, address)))
    on |= _ids(message.select(message.ticket).where(_is(message.author_email, address)))
    query = ticket.select().where(ticket.id << sorted(requested | on)).order_by(ticket.number)
    return [(t, "requester" if t.id in requested else "participant") for t in query]


def _ticket_export(ticket: models.Ticket, role: str, files: _Files) -> dict[str, Any]:
    messages = ticket.messages.where(models.Message.visibility == "public").order_by(
        models.Message.created_at, models.Message.id
    )
    return {
        "number": ticket.number,
        "mailbox": ticket.mailbox,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "category": ticket.category,
        "language": ticket.language,
        "created_at": iso(ticket.created_at),
        "resolved_at": iso(ticket.resolved_at),
        "closed_at": iso(ticket.closed_at),
        "rating": ticket.rating,
        "rating_comment": ticket.rating_comment,
        "role": role,
        "messages": [_message_export(ticket, m, files) for m in messages],
    }


def _message_export(
    ticket: models.Ticket, message: models.Message, files: _Files
) -> dict[str, Any]:
    return {
        "id": message.id,
        "created_at": iso(message.created_at),
        "direction": message.direction,
        "author_name": message.author_name,
        "author_role": message.author_role,
        "subject": message.subject,
        "text": message.text,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "sha256": a.sha256,
                "path": files.save(ticket.number, message.id, a),
            }
            for a in message.attachments.order_by(models.Attachment.id)
        ],
    }


def _mail_received(address: str) -> list[dict[str, Any]]:
    """Mail they sent us, including mail that became no message (quarantined, ignored)."""
    inbound = models.Inbound
    behind = models.Message.select(models.Message.inbound).where(
        _is(models.Message.author_email, address)
    )
    query = (
        inbound.select(inbound.received_at, inbound.message_id, inbound.mailbox, inbound.status)
        .where((inbound.id << sorted(_ids(behind))) | _is(inbound.mail_from, address))
        .order_by(inbound.id)
    )
    keys = ("received_at", "message_id", "mailbox", "status")
    return [dict(zip(keys, (iso(r[0]), *r[1:]), strict=True)) for r in _rows(query)]


def _mail_sent(address: str) -> list[dict[str, Any]]:
    """Mail we wrote to them, without its content (the messages hold that)."""
    outbox = models.Outbox
    query = (
        outbox.select(outbox.created_at, outbox.event, outbox.status, models.Ticket.number)
        .join(models.Ticket, pw.JOIN.LEFT_OUTER)
        .where(_is(outbox.recipient, address) | (outbox.rate_key == address))
        .order_by(outbox.id)
    )
    keys = ("created_at", "event", "status", "ticket")
    return [dict(zip(keys, (iso(r[0]), *r[1:]), strict=True)) for r in _rows(query)]


def _portal_access(address: str) -> dict[str, int]:
    session = models.GuestSession
    sessions = session.select().where(
        _is(session.email, address) | _is(session.pending_email, address)
    )
    links = models.GuestLink.select().where(_is(models.GuestLink.email, address))
    return {"links": int(links.count()), "sessions": int(sessions.count())}


def _suppression(address: str) -> dict[str, Any] | None:
    row = models.Suppression.get_or_none(
        models.Suppression.email << sorted({address, rate_key(address)})
    )
    if row is None:
        return None
    return {"reason": row.reason, "until": iso(row.until), "created_at": iso(row.created_at)}


class _Files:
    """Writes attachments under ``folder/attachments``, never anywhere else.

    A stored file name is the sender's choice ("../../etc/passwd"): it is
    sanitized to one path segment, prefixed with the message id, and the
    result is checked to be inside the folder before anything is written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.used: set[Path] = set()

    def save(self, number: int, message_id: int, attachment: models.Attachment) -> str:
        """Write the attachment's bytes; its path relative to the folder."""
        relative = self._name(number, message_id, attachment)
        target = self.folder / relative
        if not target.resolve().is_relative_to(self.folder):
            raise ValueError(f"attachment {attachment.id}: {relative} is outside the export")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(target, bytes(attachment.blob.data))
        return relative.as_posix()

    def _name(self, number: int, message_id: int, attachment: models.Attachment) -> Path:
        name = sanitize_filename(attachment.filename, attachment.content_type)
        relative = Path("attachments", str(number), _fit(f"{message_id}-{name}"))
        if relative in self.used:  # two files of one message with the same name
            relative = relative.with_name(_fit(f"{message_id}-{attachment.id}-{name}"))
        self.used.add(relative)
        return relative


def _fit(name: str) -> str:
    """``name`` cut to what file systems allow, keeping a short extension."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > 16:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    while len((stem + suffix).encode("utf-8")) > _MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + suffix


def _safe(address: str) -> str:
    """The address as a file name: ASCII letters, digits and ``.@+-`` only."""
    return re.sub(r"[^A-Za-z0-9.@+-]", "_", address)[:100].lstrip(".") or "customer"


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by the owner only; never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
