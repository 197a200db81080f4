"""Crash safety: SIGKILL the daemon at random moments while mail is arriving.

A sender keeps offering messages the way an MTA does: a message is retried
until it gets a 250. The daemon is killed with SIGKILL several times and
restarted. Afterwards every message that was acknowledged must be stored and
turned into its ticket exactly once: not lost (250 means committed), not
doubled (a message whose 250 was lost in the crash is retried, and intake is
idempotent; a row half-processed at the kill is processed again at start).
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import peewee as pw
import pytest

from gateway import models
from gateway.db import open_database
from tests.helpers import SUPPORT, free_port, mail, wire, write_config

MESSAGES = 60
KILLS = 5
DEADLINE = 120.0  # seconds for the whole run; the test fails rather than hangs


class Daemon:
    """``ticket-gateway serve`` as a child process."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("daemon did not start listening")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop_for_good(self) -> None:
        """Kill the daemon if it still runs (after a failure), and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def sender(port: int, ids: list[str], acknowledged: set[str], stop: threading.Event) -> None:
    """Offer every message until each has its 250, like a retrying MTA."""
    pending = list(ids)
    while pending and not stop.is_set():
        msgid = pending[0]
        message = mail(subject=f"crash test {msgid}", body=f"message {msgid}\n")
        message.replace_header("Message-ID", f"<{msgid}>")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail("customer@example.org", [SUPPORT], wire(message))
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)  # the daemon is down or answered 4xx: retry later
            continue
        acknowledged.add(msgid)
        pending.pop(0)


def test_sigkill_loses_nothing_and_doubles_nothing(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    config = write_config(tmp_path, database_url, smtp_port=port, lmtp=False, processing="worker")
    daemon = Daemon(config, port, tmp_path / "daemon.log")
    ids = [f"crash-{i}-{os.getpid()}@test.example" for i in range(MESSAGES)]
    acknowledged: set[str] = set()
    stop = threading.Event()
    rng = random.Random(os.environ.get("CRASH_SEED", "20261125"))

    daemon.start()
    try:
        thread = threading.Thread(target=sender, args=(port, ids, acknowledged, stop), daemon=True)
        thread.start()
        started = time.monotonic()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.8))
            daemon.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            daemon.start()
        thread.join(DEADLINE - (time.monotonic() - started))
        stop.set()
        assert acknowledged == set(ids), f"{len(ids) - len(acknowledged)} never acknowledged"
        database = open_database(database_url, tmp_path)
        try:
            wait_until_processed(database)
            assert daemon.terminate() == 0
            with database.connection_context():
                assert_exactly_once(ids)
        finally:
            database.close_all()
    finally:
        daemon.stop_for_good()  # a failing test must not leave a daemon behind


def wait_until_processed(database: pw.Database) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with database.connection_context():
            if not models.Inbound.select().where(models.Inbound.status == "received").exists():
                return
        time.sleep(0.2)
    pytest.fail("messages were left unprocessed")


def assert_exactly_once(ids: list[str]) -> None:
    stored = [row.message_id for row in models.Inbound.select(models.Inbound.message_id)]
    assert sorted(stored) == sorted(ids)
    statuses = {row.status for row in models.Inbound.select(models.Inbound.status)}
    assert statuses == {"processed"}
    in_tickets = [row.message_id for row in models.Message.select(models.Message.message_id)]
    assert sorted(in_tickets) == sorted(ids)
    assert models.Ticket.select().count() == len(ids)
    numbers = [t.number for t in models.Ticket.select(models.Ticket.number)]
    assert len(set(numbers)) == len(ids)


def test_sigterm_during_load_loses_nothing_and_exits_0(tmp_path: Path, database_url: str) -> None:
    """SIGTERM while a sender keeps offering mail: every 250 is stored, nothing twice,
    and each stop ends with exit status 0 (sessions in flight finish, new ones get 421)."""
    port = free_port()
    config = write_config(tmp_path, database_url, smtp_port=port, lmtp=False, processing="worker")
    daemon = Daemon(config, port, tmp_path / "daemon.log")
    ids = [f"term-{i}-{os.getpid()}@test.example" for i in range(MESSAGES)]
    acknowledged: set[str] = set()
    stop = threading.Event()
    rng = random.Random(os.environ.get("CRASH_SEED", "20261126"))
    exits: list[int] = []

    daemon.start()
    try:
        thread = threading.Thread(target=sender, args=(port, ids, acknowledged, stop), daemon=True)
        thread.start()
        started = time.monotonic()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.1, 0.8))
            exits.append(daemon.terminate())
            daemon.start()
        thread.join(DEADLINE - (time.monotonic() - started))
        stop.set()
        assert exits == [0] * KILLS
        assert acknowledged == set(ids), f"{len(ids) - len(acknowledged)} never acknowledged"
        database = open_database(database_url, tmp_path)
        try:
            wait_until_processed(database)
            assert daemon.terminate() == 0
            with database.connection_context():
                assert_exactly_once(ids)
        finally:
            database.close_all()
    finally:
        daemon.stop_for_good()
    assert "Traceback" not in daemon.log.read_text()
