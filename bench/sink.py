"""The baselines: bare aiosmtpd servers that answer 250 and do (almost) nothing.

    python bench/sink.py PORT [--save FILE] [--durable DATABASE]

Same library, same event loop, same SMTP parsing as the gateway's listener;
no routing, no parsing, no tickets. The gateway's throughput is reported as
a ratio of the bare sink's, measured in the same run.

``--durable`` is the ceiling of a durable server on this stack: before its
250 it commits the bytes to SQLite (WAL, synchronous=FULL, as the gateway
does), one insert per message, concurrent messages sharing a commit. It
has no envelope, no duplicate check, no second table and no logging, so
whatever the gateway loses beyond it is the gateway's own doing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sqlite3
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

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=wal")
        self.db.execute("PRAGMA synchronous=full")
        self.db.execute("CREATE TABLE IF NOT EXISTS message (sha256 TEXT UNIQUE, data BLOB)")
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

    def store(self, messages: list[bytes]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT OR IGNORE INTO message VALUES (?, ?)",
            [(hashlib.sha256(raw).hexdigest(), raw) for raw in messages],
        )
        self.db.execute("COMMIT")


async def main(port: int, save: str | None, durable: str | None) -> None:
    loop = asyncio.get_running_loop()
    handler: Sink | DurableSink = DurableSink(durable) if durable else Sink(save)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench", enable_SMTPUTF8=True, data_size_limit=None),
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
    parser.add_argument("--durable", metavar="DATABASE", help="commit each message to SQLite")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.save, options.durable))
