"""Intake: the one entry point for mail, wherever it came from.

The listener (SMTP/LMTP), the poller (IMAP) and the portal all hand a message
here. Intake does one thing: commit the raw bytes and their envelope to the
database, one ``inbound`` row per mailbox. Only when that commit returns may
the caller answer 250, set \\Seen, or redirect. Parsing and threading happen
afterwards, from the stored bytes (see ``process``), so no parser bug can
lose a message we accepted.

Intake is idempotent: a message delivered twice to the same mailbox (same
Message-ID and the same content, ignoring trace headers that each hop
prepends) is stored once; the second delivery is answered 250 all the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

import peewee as pw

from gateway import metrics, models, spool
from gateway.db import Store, transaction, utcnow
from gateway.errors import StorageError

log = logging.getLogger("gateway.intake")

# Header fields that relays add on top of a message in transit (RFC 5321
# section 4.4 trace fields, and their common cousins). They differ between two
# deliveries of the same message, so they stay out of the duplicate check.
_TRACE_FIELDS = frozenset(
    {
        b"received",
        b"return-path",
        b"delivered-to",
        b"x-original-to",
        b"envelope-to",
        b"x-envelope-from",
        b"x-envelope-to",
        b"x-delivered-to",
        b"authentication-results",
        b"arc-seal",
        b"arc-message-signature",
        b"arc-authentication-results",
        b"received-spf",
        b"x-spam-status",
        b"x-spam-score",
        b"x-spam-flag",
        b"x-spam-level",
        b"x-virus-scanned",
        b"x-rcpt-to",
    }
)
# Protocols of the mail the gateway writes into its own intake (gateway.internal):
# the headers these add are trusted, and only on them.
OWN_PROTOCOLS = frozenset({"portal", "api"})
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_FIELD = re.compile(rb"([!-9;-~]+):")  # a field's name, as the email parser reads one
_MAX_ID_LENGTH = 900


@dataclass(frozen=True)
class Envelope:
    """How a message reached us: the SMTP envelope, or its IMAP/portal equivalent."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    protocol: str  # smtp | lmtp | imap | portal
    peer: str = ""
    helo: str = ""


@dataclass(frozen=True)
class Delivery:
    """A message for one mailbox, with the envelope recipients that routed it there."""

    mailbox: str
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Spooled:
    """The result of spooling for one mailbox."""

    mailbox: str
    inbound_id: int
    queue_id: str
    duplicate: bool


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """The header block and the body (split at the first empty line)."""
    end, body = _header_end(raw)
    return raw[:end], raw[body:]


def _header_end(raw: bytes) -> tuple[int, int]:
    """Where the header block ends, and where the body starts."""
    match = re.search(rb"\r?\n\r?\n", raw)
    if match is None:
        return len(raw), len(raw)
    return match.start(), match.end()


def header_message_id(header: bytes) -> str:
    """The Message-ID without angle brackets, or "" (never raises)."""
    value = _plain_message_id(header)
    if value is None:
        value = _parsed_message_id(header)
    return value.strip().strip("<>").strip()[:_MAX_ID_LENGTH]


def _parsed_message_id(header: bytes) -> str:
    """The Message-ID field as the email package reads it (compat32), or ""."""
    try:
        value = BytesHeaderParser(policy=compat32).parsebytes(header + b"\n\n").get("Message-ID")
    except Exception:
        return ""
    return value if isinstance(value, str) else ""


def _plain_message_id(header: bytes) -> str | None:
    """The Message-ID field of a plain header block, read as the email package reads it.

    Intake takes the Message-ID of every message before its 250, and the
    email package's parser took half the time intake spends outside the
    database. A plain block, up to the field, is what almost all mail has:
    every line a field (``name:``, the name printable ASCII) or a folded
    continuation. For those, this gives what :func:`_parsed_message_id`
    gives, in a tenth of the time; for anything else it answers None and
    the parser decides, as before. tests/test_intake_key.py holds the two
    to the same answers.
    """
    lines = header.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line[:1] in (b" ", b"\t"):
            if index == 0:
                return None  # a continuation of nothing
            continue
        field = _FIELD.match(line)
        if field is None:
            return None  # "From ", a stray line, a space before the colon...
        if field.group(1).lower() != b"message-id":
            continue
        value = line[field.end() :].lstrip(b" \t")
        for folded in lines[index + 1 :]:
            if folded[:1] not in (b" ", b"\t"):
                break
            value += folded
        if not value.isascii():
            return None  # compat32 returns a Header object for these
        return value.decode("ascii").rstrip("\r\n")
    return ""


def content_lines(header: bytes) -> Iterable[bytes]:
    """The header lines that belong to the message, not to its journey.

    Trace fields are dropped wherever they are, with their folded
    continuation lines, so a copy that took another route hashes the same.
    """
    skipping = False
    for line in header.splitlines():
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                yield line
            continue
        match = _FIELD_NAME.match(line)
        skipping = bool(match) and match.group(1).lower() in _TRACE_FIELDS  # type: ignore[union-attr]
        if not skipping:
            yield line


def dedup_key(raw: bytes) -> tuple[str, str]:
    """(Message-ID, key): the key names the message's content, not its route.

    The body is hashed in place (a view, not a copy): a 25 MiB message must
    not cost another 50 MiB here.
    """
    end, body = _header_end(raw)
    header = raw[:end]
    message_id = header_message_id(header)
    digest = hashlib.sha256()
    digest.update(message_id.encode("utf-8", "surrogateescape") + b"\0")
    for line in content_lines(header):
        digest.update(line.rstrip(b"\r") + b"\n")
    digest.update(b"\0")
    digest.update(memoryview(raw)[body:])
    return message_id, digest.hexdigest()


@dataclass
class _Request:
    """A message waiting for the next commit, and whoever waits for its answer."""

    raw: bytes
    envelope: Envelope
    deliveries: Sequence[Delivery]
    answer: asyncio.Future[list[Spooled]]


class Intake:
    """Commits accepted mail; the caller may acknowledge once ``spool`` returns.

    Group commit: messages that arrive while a commit is running wait for
    the next one and share it, so concurrent sessions pay for one fsync
    together instead of one each. Nobody waits for a batch to fill: a lone
    message commits at once, exactly as before. Should a shared commit
    fail, each message is tried again on its own, so one bad message can
    only ever answer 451 to its own sender.
    """

    BATCH = 64  # messages per commit at most
    QUIET_AFTER = 0.05  # seconds without a message before mail counts as no longer arriving

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: list[_Request] = []
        self._committer: asyncio.Task[None] | None = None
        self._last_commit = -math.inf  # when the committer last ran out of work (monotonic)

    def busy(self) -> bool:
        """Whether mail is arriving: a message waits for its commit, or one was stored lately.

        "Lately" is QUIET_AFTER: twenty sessions sending back to back leave
        moments with nothing to commit, and processing (which waits while
        this is true) must not take those for the end of the burst. A
        session that only holds a transaction open counts for nothing.
        """
        return (
            bool(self._waiting)
            or (self._committer is not None and not self._committer.done())
            or time.monotonic() - self._last_commit < self.QUIET_AFTER
        )

    async def spool(
        self, raw: bytes, envelope: Envelope, deliveries: Sequence[Delivery]
    ) -> list[Spooled]:
        """Store ``raw`` once and an inbound row per delivery; durable when this returns.

        Raises StorageError when anything failed; then nothing was stored.
        """
        answer: asyncio.Future[list[Spooled]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Request(raw, envelope, deliveries, answer))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="intake commit")
        return await asyncio.shield(answer)

    async def _commit_waiting(self) -> None:
        """Commit what waits, batch after batch, until nothing does.

        Whatever happens, every request taken here gets an answer: a result,
        or a StorageError (451 for SMTP) if it could not be stored, also when
        this task itself is cancelled.
        """
        batch: list[_Request] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[: self.BATCH], self._waiting[self.BATCH :]
                items = [(r.raw, r.envelope, r.deliveries) for r in batch]
                try:
                    results = await self.store.run(self._spool_many, items)
                except Exception:
                    await self._one_by_one(batch)
                    continue
                for request, result in zip(batch, results, strict=True):
                    request.answer.set_result(result)
        finally:
            self._last_commit = time.monotonic()
            for request in [*batch, *self._waiting]:
                if not request.answer.done():
                    request.answer.set_exception(StorageError("intake stopped before storing"))
            self._waiting = []

    async def _one_by_one(self, batch: list[_Request]) -> None:
        for request in batch:
            try:
                result = await self.store.run(
                    self._spool_many, [(request.raw, request.envelope, request.deliveries)]
                )
            except Exception as exc:
                log.error("could not store a message from %s: %s", request.envelope.mail_from, exc)
                request.answer.set_exception(StorageError(f"could not store message: {exc}"))
            else:
                request.answer.set_result(result[0])

    def _spool_many(
        self, items: Sequence[tuple[bytes, Envelope, Sequence[Delivery]]]
    ) -> list[list[Spooled]]:
        """Every item in one transaction (one fsync); the results in order.

        The hashing (the duplicate key, and the bytes' SHA-256) is done
        first, outside the transaction: on SQLite the write lock is held for
        the inserts only, a few statements for the whole batch (see
        :mod:`gateway.spool`).
        """
        keys = [dedup_key(raw) for raw, _, _ in items]
        shas = [hashlib.sha256(raw).hexdigest() for raw, _, _ in items]
        received_at = _db_value(models.Inbound.received_at, utcnow())
        rows = [
            _row(envelope, delivery, *key, sha, received_at)
            for (_, envelope, deliveries), key, sha in zip(items, keys, shas, strict=True)
            for delivery in deliveries
        ]
        raw = {sha: item[0] for item, sha in zip(items, shas, strict=True)}
        with transaction(self.store.database):
            stored = iter(spool.insert(self.store.database, raw, rows))
        answers = iter(rows)
        results = [
            [_spooled(next(answers), *next(stored)) for _ in deliveries]
            for _, _, deliveries in items
        ]
        metrics.MESSAGES.labels("accepted").inc(len(items))  # SMTP, LMTP, IMAP, portal, API
        for (_, envelope, _), (message_id, _), spooled in zip(items, keys, results, strict=True):
            self._log(message_id, envelope, spooled)
        return results

    @staticmethod
    def _log(message_id: str, envelope: Envelope, results: list[Spooled]) -> None:
        for result in results:
            log.info(
                "%s <%s> %s to %s from %s via %s",
                result.queue_id,
                message_id or "-",
                "duplicate, already stored" if result.duplicate else "accepted",
                result.mailbox,
                envelope.mail_from or "<>",
                envelope.protocol,
            )


def _row(
    envelope: Envelope,
    delivery: Delivery,
    message_id: str,
    key: str,
    sha: str,
    received_at: object,
) -> spool.InboundRow:
    """The inbound row for one message and mailbox, with a fresh queue id."""
    return spool.InboundRow(
        queue_id=secrets.token_hex(6).upper(),
        mailbox=delivery.mailbox,
        protocol=envelope.protocol,
        peer=_text(envelope.peer),
        helo=_text(envelope.helo)[:255],
        mail_from=_text(envelope.mail_from),
        rcpt_to=json.dumps(list(delivery.recipients)),
        message_id=_text(message_id),
        dedup_key=key,
        received_at=received_at,
        sha256=sha,
    )


def _spooled(row: spool.InboundRow, inbound_id: int, queue_id: str) -> Spooled:
    """What spooling ``row`` came to: a new row, or the first delivery's (a duplicate)."""
    return Spooled(row.mailbox, inbound_id, queue_id, duplicate=queue_id != row.queue_id)


def _db_value(field: pw.Field, value: object) -> object:
    """``value`` as peewee would hand it to the driver for ``field``."""
    converted: object = field.db_value(value)  # type: ignore[no-untyped-call]
    return converted


def _text(value: str) -> str:
    """A sender-controlled string as a column can hold it: PostgreSQL refuses NUL."""
    return value.replace("\0", "")
