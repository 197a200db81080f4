"""Events: the auditable history of every ticket, one row per change.

Every step that changes state records what happened here, in the same
transaction as the change: ticket created, message added, status changed,
a thread refused and why, a mail queued or held back by a loop cap.
"""

from __future__ import annotations

import json
from typing import Any

from gateway import models
from gateway.db import utcnow


def record(
    ticket: models.Ticket | None,
    kind: str,
    *,
    actor: str = "system",
    inbound: models.Inbound | None = None,
    **detail: Any,
) -> models.Event:
    """Append an event to the history."""
    return models.Event.create(
        ticket=ticket,
        inbound=inbound,
        actor=actor,
        kind=kind,
        detail=json.dumps(detail, ensure_ascii=False, sort_keys=True),
        created_at=utcnow(),
    )
