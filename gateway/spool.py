"""Spool: intake's inserts, for a whole group commit in a few statements.

Intake commits the messages of concurrent sessions together (see
:mod:`gateway.intake`). Row by row, that took two statements per message,
each a round trip to PostgreSQL and each built anew by peewee. Here a batch
takes one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per
table:

* ``raw_message``: one row per distinct SHA-256. A row the insert does not
  return was stored before (the same bytes, delivered again) and is looked
  up.
* ``inbound``: one row per message and mailbox, with a fresh queue id. A
  row the insert does not return is a duplicate delivery (the same
  ``dedup_key`` for that mailbox, earlier or in this very batch); the
  caller gets the first delivery's id and queue id, as intake promises.

Rows are matched by what the insert returns (a SHA-256, a queue id), never
by position: neither SQLite nor PostgreSQL promises RETURNING's order. The
SQL is the statement peewee would write for one row, repeated; the caller
runs it inside its transaction.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee as pw

from gateway import models
from gateway.errors import StorageError

ROWS_PER_STATEMENT = 200  # x 13 columns: well below SQLite's and PostgreSQL's parameter limits
BYTES_PER_STATEMENT = 1 << 20  # of raw mail: a big message is written alone, as it came

_T = TypeVar("_T")
_Row = TypeVar("_Row", bound=tuple[Any, ...])


@dataclass(frozen=True)
class InboundRow:
    """An inbound row to insert; the columns in INBOUND_COLUMNS' order, then the bytes' hash."""

    queue_id: str
    mailbox: str
    protocol: str
    peer: str
    helo: str
    mail_from: str
    rcpt_to: str  # JSON
    message_id: str
    dedup_key: str
    received_at: object  # as the driver takes it
    sha256: str  # of the raw bytes, which become the row's raw_message

    def values(self, raw_message: int) -> tuple[object, ...]:
        """The row's column values, in INBOUND_COLUMNS' order."""
        return (
            self.queue_id,
            raw_message,
            self.mailbox,
            self.protocol,
            self.peer,
            self.helo,
            self.mail_from,
            self.rcpt_to,
            self.message_id,
            self.dedup_key,
            models.Inbound.RECEIVED,
            0,  # attempts
            self.received_at,
        )


INBOUND_COLUMNS = (
    "queue_id",
    "raw_message",
    "mailbox",
    "protocol",
    "peer",
    "helo",
    "mail_from",
    "rcpt_to",
    "message_id",
    "dedup_key",
    "status",
    "attempts",
    "received_at",
)


def insert(
    database: pw.Database, raw: dict[str, bytes], rows: Sequence[InboundRow]
) -> list[tuple[int, str]]:
    """Store ``raw`` (by SHA-256) and ``rows``; per row, in order, (inbound id, queue id).

    A row's queue id is its own when it was inserted, and the first
    delivery's when it was a duplicate.
    """
    sql = _statements(database)
    raw_ids = _insert_raw(database, sql, raw)
    values = [row.values(raw_ids[row.sha256]) for row in rows]
    inserted = {
        queue_id: inbound_id
        for inbound_id, queue_id in _insert_rows(database, sql.insert_inbound, values)
    }
    answers = []
    for row in rows:
        if row.queue_id in inserted:
            answers.append((inserted[row.queue_id], row.queue_id))
        else:
            found = _fetch(database, sql.find_inbound, (row.mailbox, row.dedup_key))
            answers.append((int(found[0]), str(found[1])))
    return answers


def _insert_raw(database: pw.Database, sql: _Statements, raw: dict[str, bytes]) -> dict[str, int]:
    """The raw_message id of each SHA-256, inserted or found."""
    field = models.RawMessage.data
    values: list[tuple[str, int, object]] = [
        (sha, len(data), field.db_value(data))  # type: ignore[no-untyped-call]
        for sha, data in raw.items()
    ]
    returned = _insert_rows(database, sql.insert_raw, values, size=lambda row: row[1])
    ids = {sha: raw_id for raw_id, sha in returned}
    for sha in raw.keys() - ids.keys():  # these bytes were stored before
        ids[sha] = int(_fetch(database, sql.find_raw, (sha,))[0])
    return ids


def _insert_rows(
    database: pw.Database,
    statement: tuple[str, str, str],
    rows: Sequence[_Row],
    size: Callable[[_Row], int] = lambda _: 0,
) -> list[tuple[Any, ...]]:
    """Run ``statement`` over ``rows``, a chunk at a time; what it returned for the new ones."""
    returned: list[tuple[Any, ...]] = []
    for chunk in _chunks(rows, size):
        values = [value for row in chunk for value in row]
        cursor = database.execute_sql(_many(statement, len(chunk)), values)  # type: ignore[no-untyped-call]
        returned.extend(cursor.fetchall())
    return returned


def _chunks(items: Sequence[_T], size: Callable[[_T], int] = lambda _: 0) -> Iterator[Sequence[_T]]:
    """``items`` in runs of ROWS_PER_STATEMENT, and of BYTES_PER_STATEMENT by ``size``.

    The driver builds a statement whole (psycopg2 as text, bytea in hex):
    twenty 25 MiB messages in one INSERT would cost a gigabyte at once.
    """
    chunk: list[_T] = []
    held = 0
    for item in items:
        if chunk and (len(chunk) == ROWS_PER_STATEMENT or held + size(item) > BYTES_PER_STATEMENT):
            yield chunk
            chunk, held = [], 0
        chunk.append(item)
        held += size(item)
    if chunk:
        yield chunk


@dataclass(frozen=True)
class _Statements:
    """The spool's statements, written once per database.

    ``insert_*`` end in a single row's ``VALUES (...)`` tuple, which
    :func:`_many` repeats, and their ``ON CONFLICT`` clause is kept apart.
    """

    insert_raw: tuple[str, str, str]
    find_raw: str
    insert_inbound: tuple[str, str, str]
    find_inbound: str


_STATEMENTS: weakref.WeakKeyDictionary[pw.Database, _Statements] = weakref.WeakKeyDictionary()


def _statements(database: pw.Database) -> _Statements:
    known = _STATEMENTS.get(database)
    if known is None:
        known = _STATEMENTS[database] = _Statements(
            insert_raw=_insert_sql(
                database,
                models.RawMessage,
                ("sha256", "size", "data"),
                conflict=("sha256",),
                returning=("id", "sha256"),
            ),
            find_raw=_select_sql(database, models.RawMessage, ("id",), ("sha256",)),
            insert_inbound=_insert_sql(
                database,
                models.Inbound,
                INBOUND_COLUMNS,
                conflict=("mailbox", "dedup_key"),
                returning=("id", "queue_id"),
            ),
            find_inbound=_select_sql(
                database, models.Inbound, ("id", "queue_id"), ("mailbox", "dedup_key")
            ),
        )
    return known


def _many(statement: tuple[str, str, str], rows: int) -> str:
    """The INSERT for ``rows`` rows."""
    head, one_row, tail = statement
    return head + ", ".join([one_row] * rows) + tail


def _column(model: type[models.BaseModel], field: str) -> str:
    return f'"{model._meta.fields[field].column_name}"'


def _table(model: type[models.BaseModel]) -> str:
    return f'"{model._meta.table_name}"'


def _insert_sql(
    database: pw.Database,
    model: type[models.BaseModel],
    fields: Sequence[str],
    *,
    conflict: Sequence[str],
    returning: Sequence[str],
) -> tuple[str, str, str]:
    """INSERT ... VALUES (row), ... ON CONFLICT (key) DO NOTHING RETURNING ..., in three parts.

    Only a clash on ``conflict`` (the duplicate key) is skipped: any other
    (two queue ids alike, say) fails the statement, and intake retries each
    message alone rather than answer 250 for a row it did not write.
    """
    columns = ", ".join(_column(model, f) for f in fields)
    one_row = "(" + ", ".join([database.param] * len(fields)) + ")"
    key = ", ".join(_column(model, f) for f in conflict)
    back = ", ".join(_column(model, f) for f in returning)
    return (
        f"INSERT INTO {_table(model)} ({columns}) VALUES ",  # noqa: S608 (our names)
        one_row,
        f" ON CONFLICT ({key}) DO NOTHING RETURNING {back}",
    )


def _select_sql(
    database: pw.Database, model: type[models.BaseModel], fields: Sequence[str], keys: Sequence[str]
) -> str:
    columns = ", ".join(_column(model, f) for f in fields)
    where = " AND ".join(f"{_column(model, k)} = {database.param}" for k in keys)
    return f"SELECT {columns} FROM {_table(model)} WHERE {where}"  # noqa: S608 (our names)


def _fetch(database: pw.Database, sql: str, params: Sequence[object]) -> tuple[Any, ...]:
    """The one row ``sql`` finds (the row an earlier insert made)."""
    row = database.execute_sql(sql, params).fetchone()  # type: ignore[no-untyped-call]
    if row is None:
        raise StorageError("a row that conflicted on insert is gone")
    return tuple(row)
