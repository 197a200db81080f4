"""Schema migrations: bring a database written by an earlier release up to date.

The database carries its schema version in ``schema_meta``. Opening it
(the daemon at start, every CLI command, ``ticket-gateway migrate``) creates
tables that are missing, then runs each step from the stored version up to
:data:`gateway.models.SCHEMA_VERSION`, all in the one transaction that also
holds the schema lock, so a failed step leaves the old schema as it was and
two instances starting together take turns. A database newer than this
release is refused: running old code on it could lose data.

A step is a function of the migrator; it only adds (columns, indexes,
tables), so a release can run beside the previous one during an upgrade.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable

import peewee as pw
from playhouse.migrate import PostgresqlMigrator, SchemaMigrator, SqliteMigrator, migrate

from gateway import models
from gateway.errors import StorageError

log = logging.getLogger("gateway.migrate")

# Columns that version 2 (issue 7: lifecycle, SLA clocks, ratings, privacy)
# added to ``ticket``. The ``sla_clock`` table is created by create_tables.
_TICKET_V2 = (
    "status_changed_at",
    "first_responded_at",
    "resolved_at",
    "closed_at",
    "reminded_at",
    "rating",
    "rating_comment",
    "rated_at",
    "continues",
    "erased_at",
)


def _to_v2(migrator: SchemaMigrator) -> None:
    """Ticket lifecycle columns, filled in from each ticket's history.

    The timed jobs and the reopen window read when a ticket last changed
    status, was resolved and was closed; release 1 kept that only in its
    events. SLA clocks cannot be made up afterwards (the targets depend on
    the configuration): a ticket from release 1 gets its clocks from its
    next message (see ``sla.on_customer_message``).
    """
    table = models.Ticket._meta.table_name
    present = {c.name for c in migrator.database.get_columns(table)}
    fields = models.Ticket._meta.fields
    operations = [
        migrator.add_column(table, name, fields[name], allow_not_null=True)
        for name in _TICKET_V2
        if name not in present
    ]
    migrate(*operations)
    _backfill_v2()


def _backfill_v2() -> None:
    """status_changed_at, resolved_at, closed_at and first_responded_at from the history."""
    changed: dict[int, dict[str, dt.datetime]] = {}
    events = models.Event
    query = (
        events.select(events.ticket, events.detail, events.created_at)
        .where(events.kind == "status_changed")
        .order_by(events.id)
    )
    rows: list[tuple[int, str, dt.datetime]] = list(query.tuples())  # type: ignore[arg-type]
    for ticket_id, detail, moment in rows:
        new = json.loads(detail).get("new", "")
        marks = changed.setdefault(ticket_id, {})
        marks["any"] = moment
        marks[new] = moment
    first_answers = (
        models.Message.select(models.Message.ticket, pw.fn.MIN(models.Message.created_at))
        .where((models.Message.author_role == "agent") & (models.Message.visibility == "public"))
        .group_by(models.Message.ticket)
    )
    answered: dict[int, dt.datetime] = dict(first_answers.tuples())  # type: ignore[arg-type]
    for ticket in models.Ticket.select().where(models.Ticket.status_changed_at.is_null()):
        marks = changed.get(ticket.id, {})
        ticket.status_changed_at = marks.get("any", ticket.created_at)
        if ticket.status in {"resolved", "closed"}:
            fallback = ticket.updated_at if ticket.status == "resolved" else None
            ticket.resolved_at = marks.get("resolved", fallback)
        if ticket.status == "closed":
            ticket.closed_at = marks.get("closed", ticket.updated_at)
        ticket.first_responded_at = answered.get(ticket.id)
        ticket.save()


# Version reached -> the step that reaches it from the one before.
STEPS: dict[int, Callable[[SchemaMigrator], None]] = {2: _to_v2}


def stored_version(database: pw.Database) -> int | None:
    """The schema version recorded in the database, or None for a new one."""
    if not database.table_exists(models.SchemaMeta._meta.table_name):
        return None
    row = models.SchemaMeta.get_or_none(models.SchemaMeta.key == "schema_version")
    return None if row is None else int(row.value)


def upgrade(database: pw.Database) -> tuple[int, int]:
    """Run the steps from the stored version to this release's; (from, to).

    Call inside the schema transaction, before ``create_tables``: a step
    adds columns to existing tables, and tables new in a release are then
    created whole. A new database is only stamped with the latest version.
    """
    current = stored_version(database)
    target = models.SCHEMA_VERSION
    if current is None:
        models.SchemaMeta.create_table(safe=True)
        _set_version(target)
        return target, target
    if current > target:
        raise StorageError(
            f"the database has schema version {current}, newer than this "
            f"release's {target}; upgrade ticket-gateway"
        )
    migrator = _migrator(database)
    for version in range(current + 1, target + 1):
        log.info("migrating the database schema from version %d to %d", version - 1, version)
        STEPS[version](migrator)
        _set_version(version)
    return current, target


def _set_version(version: int) -> None:
    models.SchemaMeta.insert(key="schema_version", value=str(version)).on_conflict(
        conflict_target=[models.SchemaMeta.key], update={models.SchemaMeta.value: str(version)}
    ).execute()


def _migrator(database: pw.Database) -> SchemaMigrator:
    if isinstance(database, pw.PostgresqlDatabase):
        return PostgresqlMigrator(database)
    return SqliteMigrator(database)
