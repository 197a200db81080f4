"""Schema migrations: a database of the previous release upgrades in place.

The previous release's schema is kept as SQL in tests/data (generated from
its models, never edited), so the test starts from exactly what an operator
has on disk, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import peewee as pw
import pytest

from gateway import db, models
from gateway.errors import StorageError

DATA = Path(__file__).parent / "data"


def _load_v1(database_url: str, tmp_path: Path) -> pw.Database:
    """A database holding release 1's schema and one ticket of that release."""
    database = db.connect(database_url, tmp_path)
    dialect = "postgres" if isinstance(database, pw.PostgresqlDatabase) else "sqlite"
    sql = (DATA / f"schema_v1.{dialect}.sql").read_text()
    with database.connection_context():
        for statement in sql.split(";\n"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                database.execute_sql("\n".join(lines))
        now = dt.datetime(2026, 11, 1, 9, 0)
        database.execute_sql("INSERT INTO schema_meta (key, value) VALUES ('schema_version', '1')")
        database.execute_sql("INSERT INTO counter (name, value) VALUES ('ticket', 10000)")
        database.execute_sql(
            "INSERT INTO ticket (number, mailbox, subject, requester_email, requester_name, "
            "status, priority, category, language, created_at, updated_at) VALUES "
            "(10000, 'support@example.com', 'Đơn hàng chưa tới', 'lan@example.vn', 'Lan', "
            "'open', 'high', 'general', 'vi', %s, %s)".replace(
                "%s", database.param if dialect == "postgres" else "?"
            ),
            (now, now),
        )
        # A ticket resolved in release 1: its times are only in its history.
        later = dt.datetime(2026, 11, 2, 10, 0)
        placeholder = database.param if dialect == "postgres" else "?"
        database.execute_sql(
            "INSERT INTO ticket (number, mailbox, subject, requester_email, requester_name, "
            "status, priority, category, language, created_at, updated_at) VALUES "
            "(10001, 'support@example.com', 'Refund', 'hoa@example.vn', 'Hoa', "
            f"'resolved', 'medium', 'general', 'vi', {placeholder}, {placeholder})",
            (now, later),
        )
        resolved = dt.datetime(2026, 11, 1, 15, 0)
        database.execute_sql(
            "INSERT INTO event (ticket_id, actor, kind, detail, created_at) SELECT id, 'lan', "
            '\'status_changed\', \'{"new": "resolved", "old": "open", "why": ""}\', '
            f"{placeholder} FROM ticket WHERE number = 10001",
            (resolved,),
        )
    database.close_all()
    return database


def test_previous_release_schema_upgrades_in_place(database_url: str, tmp_path: Path) -> None:
    _load_v1(database_url, tmp_path)
    database = db.open_database(database_url, tmp_path)
    try:
        with database.connection_context():
            version = models.SchemaMeta.get_by_id("schema_version").value
            ticket = models.Ticket.get(models.Ticket.number == 10000)
            old = models.Ticket.get(models.Ticket.number == 10001)
            columns = {c.name for c in database.get_columns("ticket")}
            clocks = models.SlaClock.select().count()
        assert version == str(models.SCHEMA_VERSION)
        assert ticket.subject == "Đơn hàng chưa tới"
        assert ticket.priority == "high"
        assert ticket.resolved_at is None and ticket.rating is None
        assert set(models.Ticket._meta.fields) <= columns
        assert clocks == 0
        # times the timed jobs need, filled in from release 1's history
        assert ticket.status_changed_at == ticket.created_at  # never changed
        assert (old.resolved_at, old.status_changed_at) == (
            dt.datetime(2026, 11, 1, 15, 0),
            dt.datetime(2026, 11, 1, 15, 0),
        )
    finally:
        database.close_all()


def test_opening_twice_is_a_no_op(database_url: str, tmp_path: Path) -> None:
    _load_v1(database_url, tmp_path)
    for expected in ((1, models.SCHEMA_VERSION), (models.SCHEMA_VERSION, models.SCHEMA_VERSION)):
        database = db.connect(database_url, tmp_path)
        models.database.initialize(database)
        with database.connection_context():
            assert db.ensure_schema(database, 10000) == expected
        database.close_all()


def test_a_newer_schema_is_refused_untouched(database_url: str, tmp_path: Path) -> None:
    database = db.open_database(database_url, tmp_path)
    with database.connection_context():
        models.SchemaMeta.update(value=str(models.SCHEMA_VERSION + 1)).execute()
    database.close_all()
    with pytest.raises(StorageError, match="newer than this release"):
        db.open_database(database_url, tmp_path)


def test_migrate_command_reports_the_upgrade(database_url: str, tmp_path: Path) -> None:
    _load_v1(database_url, tmp_path)
    config = tmp_path / "mailboxes.toml"
    config.write_text(
        f'[gateway]\ndatabase = "{database_url}"\n\n[[mailbox]]\naddress = "support@example.com"\n'
    )
    run = [sys.executable, "-m", "gateway", "migrate", "--config", str(config)]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60)
    second = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert f"from version 1 to {models.SCHEMA_VERSION}" in first.stdout
    assert second.returncode == 0, second.stderr
    assert f"already at version {models.SCHEMA_VERSION}" in second.stdout
