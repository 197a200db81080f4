"""Processing: from a spooled inbound row to ticket state.

The second half of intake. A single worker takes inbound rows in the order
they were accepted and runs parse -> classify -> thread/apply on the stored
raw bytes. The ticket changes and the row's new status commit together, so
a crash half-way leaves the row "received" and it is simply processed again
at the next start. A message that cannot be processed is quarantined with
its reason (the 250 we gave stays true: the bytes are safe) and can be
re-run with ``ticket-gateway quarantine retry``. A database outage is not
the message's fault: the row stays "received" and is retried later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import peewee as pw

from gateway import metrics, models, tickets
from gateway.classify import classify
from gateway.config import Config
from gateway.db import Store, transaction, utcnow
from gateway.errors import ProcessingError
from gateway.events import record
from gateway.notify import Notifier
from gateway.parse import parse

log = logging.getLogger("gateway.process")

RETRY_DELAY = 5.0  # seconds before retrying rows after a database error
YIELD_AT_MOST = 0.05  # seconds a processed message may cede to intake during a burst
DEFER_AT_MOST = 5.0  # seconds a message may wait for a burst to end before it is processed
QUIET_EVERY = 0.02  # seconds between looks at whether the burst has ended


@dataclass(frozen=True)
class Result:
    """How processing one row ended."""

    status: str  # processed | quarantined | skipped
    action: str = ""
    ticket_number: int | None = None
    reason: str = ""


def process_inbound(
    inbound_id: int, config: Config, database: pw.Database, notifier: Notifier
) -> Result:
    """Process one inbound row (synchronously; call from a worker thread).

    Raises peewee errors on database trouble, so the caller can retry later.
    """
    row = models.Inbound.get_by_id(inbound_id)
    if row.status != models.Inbound.RECEIVED:
        return Result("skipped")
    mailbox = config.mailbox(row.mailbox)
    try:
        if mailbox is None:
            raise ProcessingError(f"mailbox {row.mailbox} is no longer configured")
        limit = config.gateway.max_message_size
        if row.raw_message.size > limit:
            # SMTP refuses these with 552; IMAP (and nothing else) can bring one in.
            raise ProcessingError(
                f"message of {row.raw_message.size} bytes is over max_message_size ({limit})"
            )
        parsed = parse(bytes(row.raw_message.data), config.gateway.limits)
        verdict = classify(parsed, row.mail_from, config.own_addresses())
        with transaction(database):
            claimed = _claim(inbound_id)
            if claimed is None:
                return Result("skipped")
            outcome = tickets.apply(
                tickets.Incoming(claimed, parsed, verdict, mailbox, config, notifier)
            )
            if outcome.action == "held":  # kept for an operator's review, visibly
                _finish(claimed, models.Inbound.QUARANTINED, outcome.reason)
            else:
                _finish(claimed, models.Inbound.PROCESSED, None)
    except pw.PeeweeException:
        raise
    except ProcessingError as exc:
        return quarantine(inbound_id, str(exc), database)
    except Exception as exc:
        # A bug of ours, not the sender's: keep the message and say what broke.
        log.exception("%s <%s> processing failed", row.queue_id, row.message_id or "-")
        return quarantine(inbound_id, f"internal error: {type(exc).__name__}: {exc}", database)
    log.info(
        "%s <%s> %s ticket #%s in %s%s",
        row.queue_id,
        row.message_id or "-",
        outcome.action,
        outcome.ticket_number or "-",
        row.mailbox,
        " (auto: " + "; ".join(verdict.reasons) + ")" if verdict.auto else "",
        extra={
            "queue_id": row.queue_id,
            "message_id": row.message_id,
            "mailbox": row.mailbox,
            "ticket": outcome.ticket_number,
            "action": outcome.action,
            "protocol": row.protocol,
        },
    )
    return Result("processed", outcome.action, outcome.ticket_number)


def count(result: Result) -> None:
    """Add a processed row to the daemon's counters (in the process that serves /metrics)."""
    if result.status == "quarantined" or result.action == "held":
        metrics.MESSAGES.labels("quarantined").inc()
    elif result.action == "created":
        metrics.TICKETS_CREATED.inc()


def _claim(inbound_id: int) -> models.Inbound | None:
    """Lock the row for this transaction; None if another worker processed it."""
    query = models.Inbound.select().where(models.Inbound.id == inbound_id)
    if isinstance(models.database.obj, pw.PostgresqlDatabase):
        query = query.for_update()
    row: models.Inbound | None = query.first()
    if row is None or row.status != models.Inbound.RECEIVED:
        return None
    return row


def _finish(row: models.Inbound, status: str, reason: str | None) -> None:
    row.status, row.reason = status, reason
    row.attempts += 1
    row.processed_at = utcnow()
    row.save()


def quarantine(inbound_id: int, reason: str, database: pw.Database) -> Result:
    """Set the row aside with its reason, if it still waits; it stays re-runnable."""
    with transaction(database):
        row = _claim(inbound_id)
        if row is None:
            return Result("skipped")  # processed after all (or set aside already)
        _finish(row, models.Inbound.QUARANTINED, reason)
        record(None, "quarantined", inbound=row, reason=reason)
    log.warning("%s <%s> quarantined: %s", row.queue_id, row.message_id or "-", reason)
    return Result("quarantined", reason=reason)


def release(inbound_id: int, database: pw.Database) -> bool:
    """Put a quarantined row back to "received" so it is processed again.

    A row whose raw mail was erased (``customers forget``) stays where it is:
    empty bytes would only become an empty ticket.
    """
    kept = models.RawMessage.select(models.RawMessage.id).where(models.RawMessage.size > 0)
    with transaction(database):
        updated = (
            models.Inbound.update(status=models.Inbound.RECEIVED, reason=None)
            .where(
                (models.Inbound.id == inbound_id)
                & (models.Inbound.status == models.Inbound.QUARANTINED)
                & models.Inbound.raw_message.in_(kept)
            )
            .execute()
        )
        if updated:
            record(None, "quarantine_released", inbound=models.Inbound.get_by_id(inbound_id))
    return bool(updated)


def pending_ids() -> list[int]:
    """Rows accepted but not yet processed, oldest first."""
    query = (
        models.Inbound.select(models.Inbound.id)
        .where(models.Inbound.status == models.Inbound.RECEIVED)
        .order_by(models.Inbound.id)
    )
    return [row.id for row in query]


async def resume(store: Store, submit: Callable[[int], None]) -> int:
    """Hand every row a previous run accepted but did not process to ``submit``."""
    ids = await store.run(pending_ids)
    for inbound_id in ids:
        submit(inbound_id)
    if ids:
        log.info("resuming %d accepted but unprocessed message(s)", len(ids))
    return len(ids)


class Processing(Protocol):
    """What the listeners, pollers, portal and API need of processing.

    :class:`Processor` (in the daemon's process) and
    :class:`gateway.worker.WorkerProcessor` (in a process of its own) both
    answer to it.
    """

    def submit(self, inbound_id: int) -> None:
        """Queue a freshly spooled row."""

    async def idle(self) -> None:
        """Wait until every row queued so far is processed."""


class Processor:
    """The worker that processes spooled rows one at a time, in order."""

    def __init__(
        self,
        store: Store,
        config: Config,
        notifier: Notifier,
        on_processed: Callable[[int, Result], None] | None = None,
        in_hand: Callable[[int | None], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.notifier = notifier
        self.on_processed = on_processed  # e.g. count it, wake the outbox worker
        self.in_hand = in_hand  # told the row about to be processed, then None
        self.busy: Callable[[], bool] = lambda: False  # is mail being received right now?
        self._queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()  # (id, when queued)
        self._idle = asyncio.Event()
        self._idle.set()
        self._working = False  # a row is being processed

    def submit(self, inbound_id: int) -> None:
        """Queue a freshly spooled row."""
        self._idle.clear()
        self._queue.put_nowait((inbound_id, time.monotonic()))

    async def recover(self) -> int:
        """Queue every row a previous run accepted but did not process."""
        return await resume(self.store, self.submit)

    def drop_queued(self) -> None:
        """Forget the rows not yet started (they stay "received" in the database)."""
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        if not self._working:
            self._idle.set()

    async def run(self) -> None:
        """Process queued rows until cancelled.

        While mail is being received, accepting it goes first, because a
        sender waits for its 250 and nobody waits for a ticket to the
        millisecond. A message waits for the burst to end, for DEFER_AT_MOST
        seconds at most. Past that, the burst is no longer short, and the
        processor takes its share: after each message it pauses as long as
        that message took (at most YIELD_AT_MOST), so acceptance keeps at
        least half the time and processing still catches up.
        """
        while True:
            inbound_id, queued = await self._queue.get()
            self._working = True
            try:
                await self._defer(queued)
                self._tell_in_hand(inbound_id)
                started = time.monotonic()
                result = await self.store.run(
                    process_inbound, inbound_id, self.config, self.store.database, self.notifier
                )
                if self.on_processed is not None:
                    self.on_processed(inbound_id, result)
                if self.busy():
                    await asyncio.sleep(min(time.monotonic() - started, YIELD_AT_MOST))
            except Exception as exc:  # the database, or our executor: the row waits, safe
                log.error(
                    "inbound %d: not processed, retrying in %.0fs: %r",
                    inbound_id,
                    RETRY_DELAY,
                    exc,
                )
                asyncio.get_running_loop().call_later(RETRY_DELAY, self.submit, inbound_id)
            finally:
                self._tell_in_hand(None)
                self._working = False
                self._queue.task_done()
                if self._queue.empty():
                    self._idle.set()

    def _tell_in_hand(self, inbound_id: int | None) -> None:
        if self.in_hand is not None:
            self.in_hand(inbound_id)

    async def _defer(self, queued: float) -> None:
        """Wait while mail is arriving, until DEFER_AT_MOST after ``queued``."""
        while self.busy() and time.monotonic() - queued < DEFER_AT_MOST:
            await asyncio.sleep(QUIET_EVERY)

    async def idle(self) -> None:
        """Wait until everything queued so far is processed (for shutdown and tests)."""
        await self._idle.wait()

    def reload(self, config: Config) -> None:
        """Process the next rows with ``config`` (its notifier too)."""
        self.config = config
        self.notifier.config = config

    async def stop(self) -> None:
        """Nothing to let go of: the daemon cancels ``run`` when it stops."""
