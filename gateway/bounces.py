"""Bounces of our own mail: match them to the outbox row that caused them.

Every mail we send has a VERP envelope sender, support+bounce-TOKEN@domain,
so a non-delivery report comes back to an address that names its outbox
row, whatever the reporting MTA put in its body. The ticket then records the
delivery failure, and a recipient that failed permanently (a 5.x.x status,
RFC 3463) is suppressed for a while, so that we stop writing to an address
that does not exist.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from gateway import models
from gateway.db import utcnow
from gateway.outbox import rate_key
from gateway.parse import ParsedMessage

PREFIX = "bounce-"
_STATUS = re.compile(r"^\s*Status:\s*([245]\.\d{1,3}\.\d{1,3})", re.IGNORECASE | re.MULTILINE)
_SMTP_5XX = re.compile(r"\b(5\d\d)[ -](5\.\d{1,3}\.\d{1,3})?")
_REPORT_TYPES = {"message/delivery-status", "message/global-delivery-status"}


def outbox_row(details: Iterable[str]) -> models.Outbox | None:
    """The outbox row a VERP recipient detail names, if any."""
    for detail in details:
        if detail.lower().startswith(PREFIX):
            token = detail[len(PREFIX) :].lower()
            row: models.Outbox | None = models.Outbox.get_or_none(
                models.Outbox.bounce_token == token
            )
            if row is not None:
                return row
    return None


def outbox_row_by_message_id(message_ids: Iterable[str]) -> models.Outbox | None:
    """The outbox row whose Message-ID a bounce quotes, for MTAs that ignore VERP
    and write to the From address instead."""
    ids = [i for i in message_ids if i]
    if not ids:
        return None
    found: models.Outbox | None = (
        models.Outbox.select().where(models.Outbox.message_id.in_(ids)).first()
    )
    return found


def status(parsed: ParsedMessage) -> str:
    """The RFC 3463 status of a report ("5.1.1"), or "" when none is found."""
    for attachment in parsed.attachments:
        if attachment.content_type in _REPORT_TYPES:
            found = _STATUS.search(attachment.data.decode("utf-8", "replace"))
            if found:
                return found.group(1)
    found = _STATUS.search(parsed.text)
    if found:
        return found.group(1)
    smtp = _SMTP_5XX.search(parsed.text)
    return (smtp.group(2) or "5.0.0") if smtp else ""


def suppress(email: str, reason: str, seconds: int) -> None:
    """Stop writing to ``email`` for ``seconds`` (extending any current suppression)."""
    now = utcnow()
    until = now + dt.timedelta(seconds=seconds)
    key = rate_key(email)
    updated = (
        models.Suppression.update(reason=reason, until=until)
        .where(models.Suppression.email == key)
        .execute()
    )
    if not updated:
        models.Suppression.insert(
            email=key, reason=reason, until=until, created_at=now
        ).on_conflict_ignore().execute()
