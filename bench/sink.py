"""The baselines: bare aiosmtpd servers that answer 250 and do (almost) nothing.

    python bench/sink.py PORT [--save FILE] [--durable DATABASE] [--lean]

Same library, same event loop, same SMTP parsing as the gateway's listener;
no routing, no parsing, no tickets. The gateway's throughput is reported as
a ratio of the bare sink's, measured in the same run.

``--durable`` is the ceiling of a durable server on this stack: before its
250 it commits the bytes to SQLite (WAL, synchronous=FULL, as the gateway
does), or to PostgreSQL when DATABASE is a postgresql:// URL, one insert
per message, concurrent messages sharing a commit. It has no envelope, no
duplicate check, no second table and no logging, so whatever the gateway
loses beyond it is the gateway's own doing.

``--lean`` serves with the gateway's own server class (gateway/smtpd.py),
which skips two per-connection costs of aiosmtpd: the bare sink with what
the gateway saves in the library, so that saving is not counted as the
gateway's own.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class Sink:
    def __init__(self, save: str | None) -> None:
        self.save = save

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        if self.save:
            with Path(self.save).open("ab") as out:
                out.write((envelope.original_content or b"") + b"\n----\n")
        return "250 2.0.0 OK"


class DurableSink:
    """Commits each message before its 250; messages that wait share the next commit."""

    BATCH = 64

    def __init__(self, database: str) -> None:
        postgres = database.startswith(("postgresql:", "postgres:"))
        self.store = _postgres(database) if postgres else _sqlite(database)
        self.waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self.committer: asyncio.Task[None] | None = None

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((envelope.original_content or b"", done))
        if self.committer is None or self.committer.done():
            self.committer = asyncio.create_task(self.commit())
        await done
        return "250 2.0.0 OK"

    async def commit(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[: self.BATCH], self.waiting[self.BATCH :]
            await asyncio.to_thread(self.store, [raw for raw, _ in batch])
            for _, done in batch:
                done.set_result(None)


def _sqlite(path: str) -> Callable[[list[bytes]], None]:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=wal")
    db.execute("PRAGMA synchronous=full")
    db.execute("CREATE TABLE IF NOT EXISTS message (sha256 TEXT UNIQUE, data BLOB)")

    def store(messages: list[bytes]) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR IGNORE INTO message VALUES (?, ?)",
            [(hashlib.sha256(raw).hexdigest(), raw) for raw in messages],
        )
        db.execute("COMMIT")

    return store


def _postgres(url: str) -> Callable[[list[bytes]], None]:
    import psycopg2

    db = psycopg2.connect(url)
    with db, db.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS sink_message (sha256 TEXT UNIQUE, data BYTEA)")

    def store(messages: list[bytes]) -> None:
        with db, db.cursor() as cursor:  # one transaction, one multi-row insert
            rows = [(hashlib.sha256(raw).hexdigest(), raw) for raw in messages]
            values = ", ".join(["(%s, %s)"] * len(rows))
            cursor.execute(
                f"INSERT INTO sink_message VALUES {values} ON CONFLICT DO NOTHING",
                [v for row in rows for v in row],
            )

    return store


async def main(port: int, save: str | None, durable: str | None, lean: bool) -> None:
    loop = asyncio.get_running_loop()
    handler: Sink | DurableSink = DurableSink(durable) if durable else Sink(save)
    server_class = SMTP
    if lean:
        from gateway.smtpd import LeanSMTP, lean_handler

        server_class = LeanSMTP
        lean_handler(type(handler))
    server = await loop.create_server(
        lambda: server_class(
            handler, hostname="sink.bench", enable_SMTPUTF8=True, data_size_limit=None
        ),
        "127.0.0.1",
        port,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--save")
    parser.add_argument(
        "--durable", metavar="DATABASE", help="commit each message to SQLite (a path) or PostgreSQL"
    )
    parser.add_argument("--lean", action="store_true", help="the gateway's server class")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.save, options.durable, options.lean))
