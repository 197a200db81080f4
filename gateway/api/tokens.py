"""API tokens: created by the operator for an agent, shown once, stored hashed.

A token reads ``tgw_<id>_<secret>``. The id finds the row without scanning;
the secret (32 random bytes) is compared with the stored SHA-256 in
constant time. A revoked token, or one whose agent is no longer in the
configuration, authenticates nobody.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from gateway import models
from gateway.config import Agent, Config, Mailbox
from gateway.db import transaction, utcnow
from gateway.events import record
from gateway.queries import iso

_FORMAT = re.compile(r"tgw_(\d{1,18})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Caller:
    """Who an API request acts as: an agent, in the mailboxes they belong to."""

    token_id: int
    agent: str
    mailboxes: tuple[Mailbox, ...]

    def mailbox(self, address: str) -> Mailbox | None:
        """The mailbox with this address, if the agent belongs to it."""
        return next((m for m in self.mailboxes if m.address == address.lower()), None)

    def as_agent(self, mailbox: Mailbox) -> Agent:
        agent = mailbox.agent(self.agent)
        assert agent is not None, "callers only see their own mailboxes"
        return agent


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(agent: str, name: str = "") -> tuple[models.ApiToken, str]:
    """A new token for ``agent``; the row and the token text (shown once, never stored)."""
    secret = secrets.token_urlsafe(32)
    row = models.ApiToken.create(
        agent=agent.lower(), name=name, secret_hash=_digest(secret), created_at=utcnow()
    )
    record(None, "api_token_created", actor="cli", agent=row.agent, token=row.id, name=name)
    return row, f"tgw_{row.id}_{secret}"


def revoke(token_id: int) -> bool:
    """Revoke a token; False when there is no such live token."""
    rows = models.ApiToken
    done = (
        rows.update(revoked_at=utcnow())
        .where((rows.id == token_id) & rows.revoked_at.is_null())
        .execute()
    )
    if done:
        record(None, "api_token_revoked", actor="cli", token=token_id)
    return bool(done)


def authenticate(config: Config, header: str) -> Caller | None:
    """The caller an ``Authorization: Bearer ...`` header names, or None."""
    scheme, _, token = header.strip().partition(" ")
    match = _FORMAT.fullmatch(token.strip())
    if scheme.lower() != "bearer" or match is None:
        return None
    row = models.ApiToken.get_or_none(models.ApiToken.id == int(match[1]))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _digest(match[2])):
        return None
    mailboxes = tuple(m for m in config.mailboxes if m.agent(row.agent) is not None)
    if not mailboxes:  # removed from every mailbox: the token is dead with them
        return None
    if row.last_used_at is None or (utcnow() - row.last_used_at).total_seconds() > 60:
        with transaction(models.database.obj):
            row.last_used_at = utcnow()
            row.save()
    return Caller(row.id, row.agent, mailboxes)


def listing() -> list[dict[str, object]]:
    """Every token, newest first, without secrets."""
    rows = models.ApiToken.select().order_by(models.ApiToken.id.desc())
    return [
        {
            "id": r.id,
            "agent": r.agent,
            "name": r.name,
            "created_at": iso(r.created_at),
            "last_used_at": iso(r.last_used_at),
            "revoked": r.revoked_at is not None,
        }
        for r in rows
    ]
