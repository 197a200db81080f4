"""Opening the database and running work on it off the event loop.

peewee is synchronous, so the daemon never touches the database from a
coroutine: :class:`Store` hands every unit of work to a small thread pool and
awaits it. SQLite (the embedded default) runs in WAL mode with
``synchronous=FULL``, so a commit is on disk before we answer 250; PostgreSQL
is the same code with a different URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import functools
import os
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from gateway import migrate, models
from gateway.errors import ConfigError, StorageError

P = ParamSpec("P")
T = TypeVar("T")

# SQLite pragmas: WAL lets readers run beside the one writer; FULL makes every
# commit durable across power loss in WAL mode (NORMAL would not: the last
# transactions can roll back, which would break "250 means stored").
_SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "full",
    "foreign_keys": 1,
    "busy_timeout": 30_000,
}


_clock: Callable[[], dt.datetime] | None = None


def utcnow() -> dt.datetime:
    """Now, as the naive UTC datetime every table stores.

    ``ticket-gateway demo`` replays weeks of support work in minutes by
    setting a clock of its own (:func:`set_clock`); nothing else does.
    """
    if _clock is not None:
        return _clock()
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def set_clock(clock: Callable[[], dt.datetime] | None) -> None:
    """Make :func:`utcnow` read ``clock`` (naive UTC); None restores the real time."""
    global _clock
    _clock = clock


def connect(url: str, base_dir: Path) -> pw.Database:
    """A peewee database for ``url``; relative SQLite paths are under ``base_dir``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "sqlite":
        return _sqlite(parts, base_dir)
    if parts.scheme in {"postgresql", "postgres"}:
        return _postgres(parts)
    raise ConfigError([f"database: unsupported URL scheme {parts.scheme!r}"])


def _sqlite(parts: urllib.parse.SplitResult, base_dir: Path) -> pw.Database:
    # sqlite:///var/gateway.db is relative, sqlite:////srv/gateway.db absolute
    # (the SQLAlchemy convention operators know).
    raw = parts.path[1:] if parts.path.startswith("/") else parts.path
    path = Path(raw) if Path(raw).is_absolute() else base_dir / raw
    path.parent.mkdir(parents=True, exist_ok=True)
    # Transactions take the write lock up front (BEGIN IMMEDIATE): two writers
    # then queue on busy_timeout instead of deadlocking on a lock upgrade.
    database = PooledSqliteDatabase(
        str(path),
        pragmas=_SQLITE_PRAGMAS,
        lock_type="IMMEDIATE",
        max_connections=16,
        stale_timeout=600,
        check_same_thread=False,
    )
    # SQLite's own lower() folds ASCII only; searches must fold "Đơn hàng" too,
    # as PostgreSQL's does.
    database.register_function(_lower, "lower", 1)
    _WRITERS[database] = lock = WriterLock(path.with_name(path.name + "-writer"))
    weakref.finalize(database, lock.close)
    result: pw.Database = database
    return result


class WriterLock:
    """One writer at a time on a SQLite database, across threads and processes.

    A thread lock queues this process's writers; an exclusive ``flock`` on a
    file beside the database queues the processes (the daemon and its
    processing worker). A waiter checks again every few milliseconds, where
    SQLite's own busy handler sleeps up to 100 ms at a time, and gives up
    after TIMEOUT (as ``busy_timeout`` would), so a writer stuck elsewhere
    ends in a 451, not a hang. Re-entrant on one thread, as savepoints need.
    """

    TIMEOUT = 30.0  # seconds
    _PAUSE = (0.0005, 0.002)  # the first and the longest pause between tries, seconds

    def __init__(self, path: Path) -> None:
        self._thread = threading.RLock()
        self._depth = 0  # changed only by the thread holding ``_thread``
        try:
            # Read-only is enough for flock, and 0644 lets the service's user
            # open a file that root created first (an early `sudo ticket-gateway`).
            self._fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                [f"database: cannot open {path} (the writers' lock file): {exc.strerror}"]
            ) from exc

    def __enter__(self) -> None:
        self._thread.acquire()
        if self._depth == 0:
            try:
                self._lock_file()
            except BaseException:
                self._thread.release()
                raise
        self._depth += 1

    def _lock_file(self) -> None:
        deadline = time.monotonic() + self.TIMEOUT
        pause, longest = self._PAUSE
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise pw.OperationalError("database is locked (by another process)") from None
            time.sleep(pause)
            pause = min(pause * 2, longest)

    def __exit__(self, *_exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


# One writer lock per SQLite database of this process (see ``transaction``).
_WRITERS: weakref.WeakKeyDictionary[pw.Database, WriterLock] = weakref.WeakKeyDictionary()


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _postgres(parts: urllib.parse.SplitResult) -> pw.Database:
    query = dict(urllib.parse.parse_qsl(parts.query))
    database: pw.Database = PooledPostgresqlDatabase(
        parts.path.lstrip("/") or "postgres",
        user=urllib.parse.unquote(parts.username or "") or None,
        password=urllib.parse.unquote(parts.password or "") or None,
        host=parts.hostname or None,
        port=parts.port or None,
        max_connections=16,
        stale_timeout=600,
        **query,
    )
    return database


def open_database(url: str, base_dir: Path, *, ticket_number_start: int = 10000) -> pw.Database:
    """Connect, bind the models, and create or check the schema."""
    database = connect(url, base_dir)
    models.database.initialize(database)
    try:
        with database.connection_context():
            ensure_schema(database, ticket_number_start)
    except pw.OperationalError as exc:
        raise StorageError(f"cannot open database {redact(url)}: {exc}".strip()) from exc
    return database


SCHEMA_LOCK = 0x7469636B  # any fixed number; "tick" in ASCII


def ensure_schema(database: pw.Database, ticket_number_start: int) -> tuple[int, int]:
    """Create missing tables, migrate to this release's schema, seed the ticket counter.

    Returns the schema version found and the one now in place (equal when
    nothing was migrated; both the latest for a new database).
    """
    with transaction(database):
        if isinstance(database, pw.PostgresqlDatabase):
            # Instances starting together (or a CLI beside a daemon) would
            # otherwise deadlock on CREATE TABLE IF NOT EXISTS and the counter
            # row; this transaction-scoped lock makes them take turns.
            pw.Select(columns=[pw.fn.pg_advisory_xact_lock(SCHEMA_LOCK)]).bind(database).scalar()
        # Existing tables are migrated first (their new columns and indexes),
        # then tables new in this release are created; a database newer than
        # this release is refused before anything is touched.
        upgraded = migrate.upgrade(database)
        # A database already complete gets no DDL at all: CREATE INDEX IF NOT
        # EXISTS still locks its table on PostgreSQL, and a CLI command beside
        # a busy daemon could then deadlock with the daemon's writes.
        wanted = {m._meta.table_name for m in models.MODELS}
        if upgraded[0] != upgraded[1] or not wanted <= set(database.get_tables()):
            database.create_tables(models.MODELS, safe=True)
        models.Counter.insert(
            name="ticket", value=ticket_number_start - 1
        ).on_conflict_ignore().execute()
        # Raising ticket_number_start later moves numbering forward, never back.
        models.Counter.update(value=ticket_number_start - 1).where(
            (models.Counter.name == "ticket") & (models.Counter.value < ticket_number_start - 1)
        ).execute()
    return upgraded


@contextlib.contextmanager
def transaction(database: pw.Database) -> Iterator[None]:
    """A write transaction (IMMEDIATE on SQLite, see ``_sqlite``).

    On SQLite, writers also queue on a :class:`WriterLock` before they ask
    SQLite for its write lock. SQLite makes a waiting writer sleep and
    retry, up to 100 ms a time, and under load a commit that an SMTP
    session waits for could lose that race again and again behind the
    processor's transactions (the benchmark saw 940 ms at the 99th
    percentile); the lock hands the database over within a few
    milliseconds. Nested calls on one thread (savepoints) pass through.
    """
    lock = _WRITERS.get(database) if isinstance(database, pw.SqliteDatabase) else None
    if lock is None:
        with database.atomic():
            yield
        return
    with lock, database.atomic():
        yield


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Store:
    """Runs synchronous database work in a thread pool, for coroutines to await.

    Each unit of work borrows a pooled connection for its duration, so the
    pool threads hold no connection between calls and ``close`` can release
    them all.
    """

    def __init__(self, database: pw.Database, workers: int = 4) -> None:
        self.database = database
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="db")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on a pool thread with a connection, and return its result."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.call, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` here, with a connection borrowed from the pool."""
        with self.database.connection_context():
            return fn(*args, **kwargs)

    def close(self) -> None:
        """Wait for running work, then close every pooled connection."""
        self._executor.shutdown(wait=True)
        close_all = getattr(self.database, "close_all", None)
        if close_all is not None:
            close_all()
