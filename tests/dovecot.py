"""A real Dovecot for the IMAP intake tests: our own process, config and maildirs.

Each test that takes the ``dovecot`` fixture (or calls ``dovecot_factory``)
gets a private ``dovecot -F`` with everything under a tmp folder: the config,
its base_dir (sockets, pid), a passwd-file with the user ``support``
(password ``secret``), maildirs, a throwaway self-signed certificate, and
two listeners on free loopback ports: ``imap`` (plaintext, STARTTLS offered
unless ``ssl=False``) and ``imaps`` (implicit TLS). The system's own Dovecot
service is never touched. Tests deliver mail with Python's imaplib (APPEND).

Missing Dovecot skips on a laptop and fails under CI=true (tests.conftest.require).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

USER = "support"
PASSWORD = "secret"  # a test account on a throwaway server


def dovecot_available() -> bool:
    return shutil.which("dovecot") is not None and shutil.which("openssl") is not None


class Dovecot:
    """One private Dovecot process; ``start``/``stop`` may be called again (restart)."""

    def __init__(self, folder: Path, *, ssl: bool = True) -> None:
        self.folder = folder
        self.ssl = ssl
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.log = folder / "dovecot.log"
        self.cafile = folder / "cert.pem"
        self.maildir = folder / "mail" / USER
        self.config = folder / "dovecot.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self._write()

    def _write(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        # Dovecot's login processes run as dovenull; they must reach base_dir
        # (its parents are the world-traversable temporary directory's).
        self.folder.chmod(self.folder.stat().st_mode | 0o711)
        if self.ssl:
            subprocess.run(
                [
                    *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
                    *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
                    *("-keyout", str(self.folder / "key.pem"), "-out", str(self.cafile)),
                ],
                check=True,
                capture_output=True,
            )
        # The mail user is Dovecot's own system user: Dovecot refuses UID 0 for mail.
        owner = pwd.getpwnam("dovecot")
        os.chown(self.folder / "mail", owner.pw_uid, owner.pw_gid)
        (self.folder / "passwd").write_text(
            f"{USER}:{{PLAIN}}{PASSWORD}:{owner.pw_uid}:{owner.pw_gid}::{self.maildir}::\n"
        )
        f = self.folder
        ssl_lines = (
            f"ssl = yes\nssl_cert = <{self.cafile}\nssl_key = <{f / 'key.pem'}\n"
            if self.ssl
            else "ssl = no\n"
        )
        imaps = f"  inet_listener imaps {{\n    port = {self.imaps_port}\n    ssl = yes\n  }}\n"
        self.config.write_text(
            f"""
protocols = imap
listen = 127.0.0.1
base_dir = {f / "run"}
state_dir = {f / "state"}
log_path = {self.log}
instance_name = test-{os.getpid()}-{self.imap_port}
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:~/Maildir
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_verbose = yes
{ssl_lines}
passdb {{
  driver = passwd-file
  args = {f / "passwd"}
}}
userdb {{
  driver = passwd-file
  args = {f / "passwd"}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.imap_port}
  }}
{imaps if self.ssl else ""}}}
service anvil {{
  chroot =
}}
service stats {{
  chroot =
}}
"""
        )

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("dovecot did not start listening: " + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> imaplib.IMAP4:
        """A logged-in imaplib client on the plaintext port."""
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        client.login(USER, PASSWORD)
        return client

    def append(self, *messages: bytes, folder: str = "INBOX") -> None:
        """Deliver messages into ``folder`` with APPEND, over one connection."""
        with self.client() as client:
            for raw in messages:
                status, data = client.append(folder, "", None, raw)  # type: ignore[arg-type]
                assert status == "OK", data
            client.logout()

    def count(self, folder: str = "INBOX") -> int:
        """How many messages ``folder`` holds (0 when it does not exist)."""
        with self.client() as client:
            status, data = client.status(folder, "(MESSAGES)")
            client.logout()
        if status != "OK":
            return 0
        text = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
        return int(text.rsplit("MESSAGES", 1)[1].strip(" )"))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., Dovecot]]:
    """Start private Dovecots (``ssl=False`` for one that offers no STARTTLS).

    Their folders are made directly under the system's temporary directory,
    not in pytest's: Dovecot's unprivileged processes must traverse every
    parent, and pytest makes its own root (/tmp/pytest-of-USER) private
    again whenever another pytest session starts on the machine.
    """
    from tests.conftest import require

    require(dovecot_available(), "Dovecot (dovecot-imapd; bash tests/services/dovecot.sh)")
    started: list[Dovecot] = []
    home = Path(tempfile.mkdtemp(prefix="gateway-dovecot-"))
    home.chmod(0o711)

    def start(name: str = "dovecot", *, ssl: bool = True) -> Dovecot:
        server = Dovecot(home / name, ssl=ssl)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_factory: Callable[..., Dovecot]) -> Dovecot:
    """A running private Dovecot with the user ``support``."""
    return dovecot_factory()
