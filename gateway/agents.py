"""Agents: the roster from mailboxes.toml, and each agent's personal address.

The configuration is the source of truth for who answers a mailbox. At
start and at every reload, ``sync`` compares it with the ``agent`` table and
records an event for each agent added, removed, or given another role, so
the roster has a history.

An agent's personal address (support+agent-KEY@example.com) lets them open a
ticket on behalf of a customer. The KEY is an HMAC of the mailbox, the
agent's address and a generation number under the gateway's secret (a file,
never the repository): nothing is stored that would let a copy of the
database write as an agent, and bumping the generation revokes the address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from gateway import models
from gateway.config import Agent, Config, Mailbox
from gateway.db import transaction, utcnow
from gateway.errors import ConfigError
from gateway.events import record
from gateway.keys import address

log = logging.getLogger("gateway.agents")

PERSONAL_PREFIX = "agent-"


def load_secret(path: Path) -> bytes:
    """The gateway's secret, created (0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
        log.info("created a new secret in %s", path)
    text = path.read_text(encoding="ascii").strip()
    if len(text) < 32:
        raise ValueError(f"{path}: the secret is too short (want 32+ hex characters)")
    return text.encode("ascii")


def gateway_secret(config: Config) -> bytes:
    """The gateway's secret (created on first start), or a clear configuration error."""
    assert config.gateway.secret_file is not None
    try:
        return load_secret(config.gateway.secret_file)
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{config.path}: gateway.secret_file: {exc}"]) from exc


def sync(config: Config) -> list[str]:
    """Bring the agent table in line with the configuration; one event per change."""
    changes: list[str] = []
    with transaction(models.database.obj):
        known = {(r.mailbox, r.email): r for r in models.AgentRecord.select()}
        wanted = {(m.address, a.email): (m, a) for m in config.mailboxes for a in m.agents}
        for key, (mailbox, agent) in wanted.items():
            changes += _upsert(known.get(key), mailbox, agent)
        for key, row in known.items():
            if key not in wanted and row.active:
                row.active, row.updated_at = False, utcnow()
                row.save()
                record(None, "agent_removed", mailbox=row.mailbox, email=row.email)
                changes.append(f"removed {row.email} from {row.mailbox}")
    for change in changes:
        log.info("roster: %s", change)
    return changes


def _upsert(row: models.AgentRecord | None, mailbox: Mailbox, agent: Agent) -> list[str]:
    now = utcnow()
    if row is None:
        models.AgentRecord.create(
            mailbox=mailbox.address,
            email=agent.email,
            name=agent.name,
            role=agent.role,
            updated_at=now,
        )
        record(None, "agent_added", mailbox=mailbox.address, email=agent.email, role=agent.role)
        return [f"added {agent.email} to {mailbox.address} as {agent.role}"]
    changes: list[str] = []
    if not row.active:
        record(None, "agent_added", mailbox=mailbox.address, email=agent.email, role=agent.role)
        changes.append(f"added {agent.email} to {mailbox.address} as {agent.role} again")
    elif row.role != agent.role:
        record(
            None,
            "agent_role_changed",
            mailbox=mailbox.address,
            email=agent.email,
            old=row.role,
            new=agent.role,
        )
        changes.append(f"{agent.email} in {mailbox.address}: {row.role} -> {agent.role}")
    if changes or row.name != agent.name:
        row.active, row.role, row.name, row.updated_at = True, agent.role, agent.name, now
        row.save()
    return changes


def roster() -> list[dict[str, object]]:
    """Every agent ever configured, for the CLI."""
    query = models.AgentRecord.select().order_by(
        models.AgentRecord.mailbox, models.AgentRecord.email
    )
    return [
        {"mailbox": r.mailbox, "email": r.email, "name": r.name, "role": r.role, "active": r.active}
        for r in query
    ]


def personal_key(secret: bytes, mailbox: str, email: str, generation: int) -> str:
    """The KEY of an agent's personal address (26 base32 characters, 130 bits)."""
    digest = hmac.new(secret, f"{mailbox}\0{email}\0{generation}".encode(), hashlib.sha256)
    return base64.b32encode(digest.digest()).decode("ascii")[:26].lower()


def personal_address(secret: bytes, mailbox: Mailbox, email: str) -> str | None:
    """support+agent-KEY@example.com for an active agent of ``mailbox``, else None."""
    row = _record(mailbox.address, email)
    if row is None or not row.active:
        return None
    key = personal_key(secret, mailbox.address, row.email, row.address_generation)
    return address(mailbox.address, PERSONAL_PREFIX + key)


def owner_of_personal(secret: bytes, mailbox: Mailbox, detail: str) -> Agent | None:
    """The agent whose personal address carries ``detail``, comparing in constant time."""
    if not detail.lower().startswith(PERSONAL_PREFIX):
        return None
    given = detail[len(PERSONAL_PREFIX) :].lower()
    found = None
    for agent in mailbox.agents:
        row = _record(mailbox.address, agent.email)
        if row is None or not row.active:
            continue
        expected = personal_key(secret, mailbox.address, agent.email, row.address_generation)
        if hmac.compare_digest(expected, given):
            found = agent
    return found


def revoke_personal(mailbox: str, email: str) -> bool:
    """Invalidate an agent's personal address; the next one differs."""
    with transaction(models.database.obj):
        updated = (
            models.AgentRecord.update(
                address_generation=models.AgentRecord.address_generation + 1, updated_at=utcnow()
            )
            .where(
                (models.AgentRecord.mailbox == mailbox)
                & (models.AgentRecord.email == email.lower())
            )
            .execute()
        )
        if updated:
            record(None, "agent_address_revoked", mailbox=mailbox, email=email.lower())
    return bool(updated)


def _record(mailbox: str, email: str) -> models.AgentRecord | None:
    found: models.AgentRecord | None = models.AgentRecord.get_or_none(
        (models.AgentRecord.mailbox == mailbox) & (models.AgentRecord.email == email.lower())
    )
    return found
