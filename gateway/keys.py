"""Reply keys: the KEY in support+KEY@example.com.

Every mail we send carries a Reply-To with a fresh key of 128 random bits,
bound to the ticket and to the recipient. A reply to that address is
threaded by the key first, and joins the ticket only when its From is the
key's owner: a key found in someone's mailbox (or a sign-up confirmation a
stranger sent to support+KEY@) never lets a third party into a ticket.

Only the key's SHA-256 is stored; the key itself exists only in the mail.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from gateway import models
from gateway.db import utcnow

_KEY = re.compile(r"^[a-z2-7]{26}$")  # 16 random bytes in lower-case base32


def new_key(ticket: models.Ticket | None, email: str, role: str = "customer") -> str:
    """Create and store a key for ``email`` on ``ticket``; return the key itself."""
    key = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    models.ReplyKey.create(
        key_hash=digest(key), ticket=ticket, email=email.lower(), role=role, created_at=utcnow()
    )
    return key


def digest(key: str) -> str:
    """What is stored for a key. A fast hash suffices: the key has 128 random bits."""
    return hashlib.sha256(key.lower().encode("ascii")).hexdigest()


def looks_like_key(detail: str) -> bool:
    """Whether a plus-detail has the shape of a reply key."""
    return bool(_KEY.match(detail.lower()))


def lookup(detail: str) -> models.ReplyKey | None:
    """The live key for a plus-detail, or None."""
    if not looks_like_key(detail):
        return None
    found: models.ReplyKey | None = models.ReplyKey.get_or_none(
        (models.ReplyKey.key_hash == digest(detail)) & models.ReplyKey.revoked_at.is_null()
    )
    return found


def address(mailbox_address: str, key: str) -> str:
    """``support@example.com`` + key -> ``support+key@example.com``."""
    local, _, domain = mailbox_address.rpartition("@")
    return f"{local}+{key}@{domain}"
