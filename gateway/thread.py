"""Threading: which ticket, if any, a message belongs to.

Runs after classify and before the ticket step applies anything. Candidates
are gathered in the order DESIGN.md fixes:

1. In-Reply-To, then References (newest first), naming a message of a ticket
   of the same mailbox; for bounces also the Message-IDs of the returned mail;
2. the mailbox's tag in the subject (``[#10023]``), then a bare ``#10023``
   when it is a real ticket of that mailbox.

A candidate is a hint, never a credential: the message joins the first
candidate whose participants include the sender. When there were candidates
but the sender is a participant of none, the message opens a new ticket and
the refusal is recorded (see ``tickets``). Reply keys in the recipient
address come first once outbound mail hands them out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gateway import models
from gateway.config import Mailbox

T = TypeVar("T")

_BARE_TAG = re.compile(r"(?<![\w&/])#(\d{1,12})\b")
_MAX_REFERENCES = 50


@dataclass(frozen=True)
class Candidate:
    """A ticket the message points at, and how it points."""

    ticket: models.Ticket
    via: str  # reply-key | in-reply-to | references | bounce | tag | number


def unique(items: Iterable[T], key: Callable[[T], Hashable]) -> list[T]:
    """``items`` in order, keeping the first of each ``key``."""
    seen: set[Hashable] = set()
    kept: list[T] = []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            kept.append(item)
    return kept


def ascii_digits(text: str) -> str:
    """Persian, Arabic-Indic and full-width digits as ASCII, so #۱۰۰۲۳ works."""
    return "".join(
        str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c for c in text
    )


def tag_pattern(mailbox: Mailbox) -> re.Pattern[str]:
    """A regex for the mailbox's tag with the number captured."""
    before, _, after = mailbox.tag.partition("{number}")
    return re.compile(re.escape(before) + r"\s*(\d{1,12})\s*" + re.escape(after), re.IGNORECASE)


def subject_numbers(mailbox: Mailbox, subject: str) -> list[tuple[int, str]]:
    """Ticket numbers in the subject: the mailbox's tags first, then bare #numbers."""
    text = ascii_digits(subject)
    found = [(int(n), "tag") for n in tag_pattern(mailbox).findall(text)]
    found += [(int(n), "number") for n in _BARE_TAG.findall(text)]
    return unique(found, key=lambda item: item[0])


def strip_tags(mailbox: Mailbox, subject: str) -> str:
    """The subject without this mailbox's tags, for a new ticket's subject."""
    return " ".join(tag_pattern(mailbox).sub(" ", subject).split())


def header_ids(
    in_reply_to: Sequence[str], references: Sequence[str], bounce_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """Message-IDs to look up, in priority order, each with how it was found."""
    ids = [(i, "in-reply-to") for i in in_reply_to]
    ids += [(i, "references") for i in reversed(references[-_MAX_REFERENCES:])]
    ids += [(i, "bounce") for i in bounce_ids]
    return unique((item for item in ids if item[0]), key=lambda item: item[0])


def candidates(mailbox: Mailbox, subject: str, ids: Iterable[tuple[str, str]]) -> list[Candidate]:
    """Every ticket of ``mailbox`` the message points at, best first, no repeats."""
    ids = list(ids)
    found: list[Candidate] = []
    if ids:
        rows = (
            models.Message.select(models.Message.message_id, models.Ticket)
            .join(models.Ticket)
            .where(
                models.Message.message_id.in_([i for i, _ in ids])
                & (models.Ticket.mailbox == mailbox.address)
            )
        )
        by_id = {row.message_id: row.ticket for row in rows}
        # Our own mail (acknowledgements, notifications) is in the outbox.
        sent = (
            models.Outbox.select(models.Outbox.message_id, models.Ticket)
            .join(models.Ticket)
            .where(
                models.Outbox.message_id.in_([i for i, _ in ids])
                & (models.Ticket.mailbox == mailbox.address)
            )
        )
        by_id.update({row.message_id: row.ticket for row in sent if row.ticket is not None})
        found += [Candidate(by_id[i], via) for i, via in ids if i in by_id]
    for number, via in subject_numbers(mailbox, subject):
        ticket = models.Ticket.get_or_none(
            (models.Ticket.number == number) & (models.Ticket.mailbox == mailbox.address)
        )
        if ticket is not None:
            found.append(Candidate(ticket, via))
    return unique(found, key=lambda c: c.ticket.id)


def is_participant(ticket: models.Ticket, email: str) -> bool:
    """Whether ``email`` may add to ``ticket``."""
    return (
        bool(email)
        and models.Participant.select()
        .where((models.Participant.ticket == ticket) & (models.Participant.email == email.lower()))
        .exists()
    )
