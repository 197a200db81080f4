"""Group commit: concurrent messages share a commit, and fail alone.

Intake commits messages that arrive together in one transaction; if that
transaction fails, each is stored on its own, so only a message that
cannot be stored is refused.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import peewee as pw
import pytest

from gateway import intake as intake_module
from gateway import models, spool
from gateway.db import Store, open_database
from gateway.errors import StorageError
from gateway.intake import Delivery, Envelope, Intake, Spooled
from tests.helpers import SALES, SUPPORT, mail


async def _spool_all(intake: Intake, mailboxes: list[str]) -> list[list[Spooled] | StorageError]:
    envelope = Envelope("customer@example.org", (SUPPORT,), "smtp")

    async def one(index: int, mailbox: str) -> list[Spooled] | StorageError:
        raw = mail(subject=f"Concurrent {index}").as_bytes()
        try:
            return await intake.spool(raw, envelope, [Delivery(mailbox, (SUPPORT,))])
        except StorageError as exc:
            return exc

    return await asyncio.gather(*(one(i, m) for i, m in enumerate(mailboxes)))


def test_concurrent_messages_are_each_stored_once(tmp_path: Path, database_url: str) -> None:
    database = open_database(database_url, tmp_path)
    store = Store(database)
    try:
        results = asyncio.run(_spool_all(Intake(store), [SUPPORT] * 40))
        assert all(isinstance(r, list) and len(r) == 1 for r in results)
        ids = {r[0].inbound_id for r in results if isinstance(r, list)}
        with database.connection_context():
            assert models.Inbound.select().count() == 40 == len(ids)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_message_that_cannot_be_stored_fails_alone(tmp_path: Path, postgres_schema: str) -> None:
    """PostgreSQL enforces the mailbox column's length: that one row fails the shared
    commit, and every other message of the batch is stored all the same."""
    database = open_database(postgres_schema, tmp_path)
    assert isinstance(database, pw.PostgresqlDatabase)
    store = Store(database)
    try:
        mailboxes = [SUPPORT] * 20
        mailboxes[7] = "x" * 400 + "@example.com"
        results = asyncio.run(_spool_all(Intake(store), mailboxes))
        failed = [i for i, r in enumerate(results) if isinstance(r, StorageError)]
        assert failed == [7]
        with database.connection_context():
            assert models.Inbound.select().count() == 19
    finally:
        store.close()


@pytest.mark.postgres
def test_a_nul_in_sender_controlled_fields_is_stored_not_fatal(
    tmp_path: Path, postgres_schema: str
) -> None:
    """PostgreSQL refuses NUL in text; a Message-ID or HELO with one must neither fail
    the shared commit nor hang the other sessions (found in review)."""
    database = open_database(postgres_schema, tmp_path)
    store = Store(database)
    intake = Intake(store)

    async def run() -> list[list[Spooled] | BaseException]:
        async def one(index: int) -> list[Spooled]:
            message = mail(subject=f"NUL {index}")
            if index == 3:
                message.replace_header("Message-ID", "<a\x00b@example.org>")
            envelope = Envelope("customer@example.org", (SUPPORT,), "smtp", helo="x\x00y")
            return await intake.spool(message.as_bytes(), envelope, [Delivery(SUPPORT, (SUPPORT,))])

        return await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(9)), return_exceptions=True), 60
        )

    try:
        results = asyncio.run(run())
        assert all(isinstance(r, list) for r in results), results
        with database.connection_context():
            assert models.Inbound.select().count() == 9
    finally:
        store.close()


def test_one_message_delivered_by_many_sessions_at_once_is_stored_once(
    tmp_path: Path, database_url: str
) -> None:
    """Ten sessions deliver the same message together, so their rows share one batch
    (one INSERT): one row is stored, and every session is answered with its id and
    queue id, the nine others as duplicates."""
    database = open_database(database_url, tmp_path)
    store = Store(database)
    raw = mail().as_bytes()

    async def run() -> list[list[Spooled]]:
        intake = Intake(store)
        envelope = Envelope("customer@example.org", (SUPPORT,), "smtp")
        delivery = [Delivery(SUPPORT, (SUPPORT,))]
        return await asyncio.gather(*(intake.spool(raw, envelope, delivery) for _ in range(10)))

    try:
        results = [spooled for [spooled] in asyncio.run(run())]
        assert sum(not r.duplicate for r in results) == 1
        assert len({(r.inbound_id, r.queue_id) for r in results}) == 1
        with database.connection_context():
            [row] = models.Inbound.select()
            assert (row.id, row.queue_id) == (results[0].inbound_id, results[0].queue_id)
            assert models.RawMessage.select().count() == 1
    finally:
        store.close()


def test_a_batch_larger_than_one_statement_is_stored_whole(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is written a few rows per INSERT (here three, or 1000 bytes of mail):
    every message to both mailboxes is stored, with its own bytes, and each answer
    names its own row."""
    monkeypatch.setattr(spool, "ROWS_PER_STATEMENT", 3)
    monkeypatch.setattr(spool, "BYTES_PER_STATEMENT", 1000)  # two or three messages
    database = open_database(database_url, tmp_path)
    store = Store(database)
    messages = [mail(subject=f"Batch {i}").as_bytes() for i in range(10)]

    async def run() -> list[list[Spooled]]:
        intake = Intake(store)
        envelope = Envelope("customer@example.org", (SUPPORT, SALES), "smtp")
        both = [Delivery(SUPPORT, (SUPPORT,)), Delivery(SALES, (SALES,))]
        return await asyncio.gather(*(intake.spool(raw, envelope, both) for raw in messages))

    try:
        results = asyncio.run(run())
        with database.connection_context():
            assert models.Inbound.select().count() == 20
            assert models.RawMessage.select().count() == 10
            for raw, spooled in zip(messages, results, strict=True):
                assert [s.mailbox for s in spooled] == [SUPPORT, SALES]
                assert not any(s.duplicate for s in spooled)
                for s in spooled:
                    row = models.Inbound.get_by_id(s.inbound_id)
                    assert (row.queue_id, row.mailbox) == (s.queue_id, s.mailbox)
                    assert bytes(row.raw_message.data) == raw
    finally:
        store.close()


def test_a_clashing_queue_id_is_refused_never_taken_for_a_duplicate(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue ids are random; should two ever be alike, the second message must get a
    451 (its sender retries), not a 250 naming the first message's row."""
    monkeypatch.setattr(intake_module.secrets, "token_hex", lambda _: "c1a5h")
    database = open_database(database_url, tmp_path)
    store = Store(database)
    try:
        results = asyncio.run(_spool_all(Intake(store), [SUPPORT, SUPPORT]))
        stored = [r for r in results if isinstance(r, list)]
        assert len(stored) == 1 and stored[0][0].queue_id == "C1A5H"
        assert isinstance(results[1 - results.index(stored[0])], StorageError)
        with database.connection_context():
            assert models.Inbound.select().count() == 1
    finally:
        store.close()


def test_mail_counts_as_arriving_for_a_moment_after_the_last_message(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions sending back to back leave moments with nothing to commit; processing
    must not take one for the end of the burst (QUIET_AFTER, here 0.5 s)."""
    monkeypatch.setattr(Intake, "QUIET_AFTER", 0.5)
    database = open_database(database_url, tmp_path)
    store = Store(database)
    try:
        intake = Intake(store)
        assert not intake.busy()
        asyncio.run(_spool_all(intake, [SUPPORT]))
        assert intake.busy()  # committed, nothing waits, but mail just came
        time.sleep(0.6)
        assert not intake.busy()
    finally:
        store.close()
