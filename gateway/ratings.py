"""Satisfaction ratings: one-click "good" / "bad" links in the resolve mail.

A rating link is ``{portal_url}/rate/{number}/{token}/{good|bad}``, where
the token is an HMAC of the ticket number and the customer's address under
the gateway's secret: it names no address, cannot be made for another
ticket, and stops working when the address is erased (``customers
forget``), because it no longer matches anyone on the ticket. Following it
records the rating at once (one click, as customers expect); the page it
opens offers an optional comment. A later click replaces the rating: the
last word is the customer's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from gateway import models
from gateway.db import utcnow
from gateway.events import record

RATINGS = ("good", "bad")
MAX_COMMENT = 2000  # characters


def token(secret: bytes, number: int, email: str) -> str:
    """The rating token of ``email`` for ticket ``number`` (22 characters, 128 bits)."""
    digest = hmac.new(secret, f"rating\0{number}\0{email.lower()}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).decode().rstrip("=")


def links(base: str, secret: bytes, ticket: models.Ticket, email: str) -> dict[str, str | None]:
    """The template variables ``rating_good_url`` and ``rating_bad_url`` (None without a portal)."""
    if not base or not secret:
        return {"rating_good_url": None, "rating_bad_url": None}
    path = f"{base}/rate/{ticket.number}/{token(secret, ticket.number, email)}"
    return {"rating_good_url": f"{path}/good", "rating_bad_url": f"{path}/bad"}


def rater(secret: bytes, ticket: models.Ticket, given: str) -> str | None:
    """The customer on ``ticket`` whose token ``given`` is, or None.

    Every customer participant's token is compared, each in constant time,
    so the time taken says nothing about how close a guess was.
    """
    found = None
    for person in ticket.participants.where(models.Participant.role == "customer"):
        if hmac.compare_digest(token(secret, ticket.number, person.email), given):
            found = person.email
    return found


def rate(ticket: models.Ticket, rating: str, by: str, comment: str | None = None) -> None:
    """Store ``rating`` (and a comment, when one is given) on ``ticket``, as an event too."""
    assert rating in RATINGS
    ticket.rating, ticket.rated_at = rating, utcnow()
    if comment is not None:
        ticket.rating_comment = comment.strip()[:MAX_COMMENT] or None
    ticket.save()
    record(ticket, "rated", actor=by, rating=rating, comment=comment is not None)
