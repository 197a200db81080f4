"""Processing in a worker process: it dies, it reloads, it outlives nothing.

The gateway's default is ``processing = "worker"``: the daemon hands each
spooled row to a second process (``python -m gateway.worker``). These tests
kill that worker and its daemon with real signals and read the outcome from
the database and the process table, as an operator would see it.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import peewee as pw
import pytest

from gateway import daemon, db, models
from gateway import worker as worker_module
from gateway.intake import Intake
from gateway.worker import WorkerProcessor
from tests.helpers import SUPPORT, GatewayThread, free_port, mail, wire, write_config
from tests.test_crash import Daemon

NEW_MAILBOX = """
[[mailbox]]
address = "billing@example.com"
name = "Example Billing"
"""


def worker_of(gateway: GatewayThread) -> WorkerProcessor:
    processor = gateway.gateway.processor
    assert isinstance(processor, WorkerProcessor), "the default is a worker process"
    return processor


def wait_for(condition: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def worker_pid(gateway: GatewayThread) -> int:
    worker = worker_of(gateway)
    wait_for(lambda: worker._process is not None)
    assert worker._process is not None
    return worker._process.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is not alive either.
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_a_killed_worker_is_replaced_and_its_messages_processed(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with GatewayThread(write_config(tmp_path, database_url, processing="worker")) as gateway:
        gateway.send(mail(subject="before the crash"))
        first = worker_pid(gateway)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: worker_of(gateway)._process is None)
        # Accepted while no worker runs: the 250s are given, the rows wait.
        with gateway.smtp() as client:
            for n in range(3):
                message = wire(mail(subject=f"while down {n}"))
                client.sendmail("customer@example.org", [SUPPORT], message)
        gateway.idle()
        assert worker_pid(gateway) != first
        subjects = sorted(t["subject"] for t in gateway.tickets())
        assert subjects == ["before the crash", "while down 0", "while down 1", "while down 2"]
    assert "processing worker was killed by signal 9" in caplog.text


def test_a_reload_reaches_the_worker(tmp_path: Path, database_url: str) -> None:
    path = write_config(tmp_path, database_url, processing="worker")
    with GatewayThread(path) as gateway:
        gateway.send(mail(subject="first"))
        [first_ack] = gateway.outbound(1)
        assert str(first_ack["Message-ID"]).endswith("@gw.test>")
        text = path.read_text().replace('hostname = "gw.test"', 'hostname = "new.example"')
        path.write_text(text + NEW_MAILBOX, encoding="utf-8")
        assert gateway.call(gateway.gateway.reload())
        # The listener routes the new address; the worker must know its mailbox
        # too, or the message would be quarantined as "no longer configured".
        billing, other = "billing@example.com", "other@example.org"
        message = mail(subject="to the new team", to=billing, sender=f"Other <{other}>")
        gateway.send(message, [billing], sender=other)
        with gateway.db():
            held = models.Inbound.select().where(models.Inbound.status == "quarantined")
            assert held.count() == 0
            ticket = models.Ticket.get(models.Ticket.subject == "to the new team")
        assert ticket.mailbox == billing
        # ... and its mail is written with the new settings.
        second_ack = gateway.outbound(2)[1]
        assert str(second_ack["To"]) == f"Other <{other}>"
        assert str(second_ack["Message-ID"]).endswith("@new.example>")


def test_a_worker_that_cannot_start_is_reported_to_the_watchdog(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker of another version (an upgrade under a running daemon) refuses to run.

    Mail is still accepted and kept; after WORKER_DOWN seconds without a
    ready worker the daemon stops pinging the watchdog, and systemd
    restarts it with the new code.
    """
    monkeypatch.setattr(worker_module, "__version__", "0.0.0-before-the-upgrade")
    monkeypatch.setattr(daemon, "WORKER_DOWN", 1.0)
    with GatewayThread(write_config(tmp_path, database_url, processing="worker")) as gateway:
        with gateway.smtp() as client:
            client.sendmail("customer@example.org", [SUPPORT], wire(mail()))
        wait_for(lambda: "processing worker" in gateway.gateway.stopped_workers())
        with gateway.db():
            assert models.Inbound.get().status == "received"
        assert gateway.tickets() == []


def test_a_large_configuration_reaches_the_worker(tmp_path: Path, database_url: str) -> None:
    """Over 64 KiB pickled (asyncio's default line limit): the worker still starts."""
    path = write_config(tmp_path, database_url, processing="worker")
    teams = "".join(
        f'\n[[mailbox]]\naddress = "team{n}@example.com"\nname = "Team {n}"\n'
        + "".join(f'[[mailbox.agent]]\nemail = "a{n}.{a}@example.com"\n' for a in range(5))
        for n in range(200)
    )
    path.write_text(path.read_text() + teams, encoding="utf-8")
    with GatewayThread(path) as gateway:
        assert len(worker_of(gateway)._config_line()) > 64 * 1024
        gateway.send(mail(subject="to a team", to="team199@example.com"), ["team199@example.com"])
        [ticket] = gateway.tickets()
        assert ticket["mailbox"] == "team199@example.com"


def test_stopping_the_gateway_stops_its_worker(tmp_path: Path, database_url: str) -> None:
    with GatewayThread(write_config(tmp_path, database_url, processing="worker")) as gateway:
        gateway.send(mail())
        pid = worker_pid(gateway)
    assert not alive(pid)


def test_a_worker_whose_daemon_died_exits_on_its_own(tmp_path: Path, database_url: str) -> None:
    port = free_port()
    config = write_config(tmp_path, database_url, smtp_port=port, processing="worker")
    daemon = Daemon(config, port, tmp_path / "log")
    daemon.start()
    try:
        assert daemon.process is not None
        children = Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children")
        wait_for(lambda: children.read_text().split() != [])
        [worker] = [int(pid) for pid in children.read_text().split()]
        assert "gateway.worker" in Path(f"/proc/{worker}/cmdline").read_bytes().decode()
        daemon.kill()
        wait_for(lambda: not alive(worker))
    finally:
        daemon.stop_for_good()


def test_the_sqlite_writer_lock_holds_across_processes(tmp_path: Path) -> None:
    """While another process writes, this one's writers wait on the lock file."""
    config = write_config(tmp_path, "sqlite:///var/gateway.db")
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from gateway import config, db\n"
            "cfg = config.load(sys.argv[1])\n"
            "database = db.open_database(cfg.gateway.database, cfg.base_dir)\n"
            "with database.connection_context(), db.transaction(database):\n"
            "    print('holding', flush=True)\n"
            "    sys.stdin.readline()\n",
            str(config),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"holding\n"
            lock_file = tmp_path / "var" / "gateway.db-writer"
            # A writer here waits, then gives up as SQLite's busy_timeout would.
            waiter = db.WriterLock(lock_file)
            waiter.TIMEOUT = 0.2
            with pytest.raises(pw.OperationalError, match="locked"), waiter:
                pass
            waiter.close()
            with lock_file.open("rb") as lock:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                holder.stdin.write(b"done\n")
                holder.stdin.flush()
                assert holder.wait(20) == 0
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once it committed
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()


def test_the_worker_waits_while_mail_is_arriving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon tells its worker when mail is arriving (here for 3 s after each
    message); the worker leaves the stored message alone until it stops."""
    path = write_config(tmp_path, f"sqlite:///{tmp_path}/gw.db", processing="worker")
    with GatewayThread(path) as gateway:
        gateway.send(mail(subject="before"))  # the worker is up and ready
        monkeypatch.setattr(Intake, "QUIET_AFTER", 3.0)
        with gateway.smtp() as client:
            client.sendmail("customer@example.org", [SUPPORT], wire(mail(subject="during")))
        time.sleep(1)
        assert [t["subject"] for t in gateway.tickets()] == ["before"]
        gateway.idle()
        assert sorted(t["subject"] for t in gateway.tickets()) == ["before", "during"]


# Loaded by the worker's interpreter (PYTHONPATH): a message whose subject says
# so kills it outright, as a crash in C code or the OOM killer would.
CRASH_ON_POISON = """
import os

from gateway import models, process

_real = process.process_inbound


def process_inbound(inbound_id, config, database, notifier):
    if b"Subject: poison" in bytes(models.Inbound.get_by_id(inbound_id).raw_message.data):
        os._exit(70)
    return _real(inbound_id, config, database, notifier)


process.process_inbound = process_inbound
"""


def test_a_message_that_kills_the_worker_is_set_aside(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(CRASH_ON_POISON)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setattr(worker_module, "RESTART_AFTER", (0.1,))
    with GatewayThread(write_config(tmp_path, database_url, processing="worker")) as gateway:
        with gateway.smtp() as client:  # one session: the poison first, a message behind it
            client.sendmail("customer@example.org", [SUPPORT], wire(mail(subject="poison")))
            client.sendmail("customer@example.org", [SUPPORT], wire(mail(subject="after it")))
        gateway.idle()
        assert [t["subject"] for t in gateway.tickets()] == ["after it"]
        with gateway.db():
            poison = models.Inbound.get(models.Inbound.status == "quarantined")
            assert poison.reason == (
                f"the processing worker died on it {worker_module.POISON_AFTER} times "
                "(last: exited with status 70)"
            )
            assert models.Inbound.select().count() == 2
        assert not worker_of(gateway)._deaths
