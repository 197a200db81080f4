"""Running under systemd: the unit file, and the notify protocol spoken for real.

The unit is checked with ``systemd-analyze verify`` and ``security``. The
daemon is started as systemd would start it under ``Type=notify``: with a
``$NOTIFY_SOCKET`` (a datagram socket this test reads) and a watchdog, so
READY, WATCHDOG, STATUS, RELOADING and STOPPING are seen as systemd sees
them.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.helpers import free_port, write_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "ticket-gateway.service"


def local_unit(tmp_path: Path) -> Path:
    """The unit, with ExecStart pointing at this checkout's console script."""
    script = Path(sys.executable).parent / "ticket-gateway"
    text = UNIT.read_text().replace("/opt/ticket-gateway/venv/bin/ticket-gateway", str(script))
    path = tmp_path / "ticket-gateway.service"
    path.write_text(text)
    return path


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (package systemd)")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ticket-gateway.service" not in done.stderr, done.stderr  # no warnings about it


def test_unit_file_is_hardened(tmp_path: Path) -> None:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (package systemd)")
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", done.stdout)
    assert match, done.stdout[-2000:] + done.stderr
    assert float(match.group(1)) <= 2.0, match.group(0)  # systemd calls < 2.0 "OK"
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
        "StateDirectory=ticket-gateway",
        "RuntimeDirectory=ticket-gateway",
    ):
        assert f"\n{line}" in text, line


class Systemd:
    """The manager's end of $NOTIFY_SOCKET: collects what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 30) -> str:
        """The next datagram holding ``line`` (earlier ones are kept in ``messages``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(data)
            if line in data.splitlines():
                return data
        raise AssertionError(f"no {line!r} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Systemd]:
    fake = Systemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def test_notify_protocol_from_start_to_stop(
    tmp_path: Path, database_url: str, manager: Systemd
) -> None:
    port = free_port()
    config = write_config(tmp_path, database_url, smtp_port=port, processing="worker")
    env = {**os.environ, "NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = manager.wait_for("READY=1")
        assert re.search(r"STATUS=inbound 0 waiting, 0 quarantined; outbox 0 queued", ready)
        # READY comes after the listeners are bound: SMTP answers at once.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as smtp:
            assert smtp.recv(100).startswith(b"220 ")
        manager.wait_for("WATCHDOG=1", timeout=5)  # every second (half of WATCHDOG_USEC)
        daemon.send_signal(signal.SIGHUP)
        reloading = manager.wait_for("RELOADING=1")
        assert re.search(r"^MONOTONIC_USEC=\d+$", reloading, re.MULTILINE)
        manager.wait_for("READY=1")
        daemon.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING=1")
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        log.close()
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
