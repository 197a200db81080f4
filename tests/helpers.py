"""Test helpers: a configuration writer, an in-process gateway, mail builders."""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
import socket
import threading
import time
from collections.abc import Coroutine
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any

from gateway import config as gateway_config
from gateway import models, queries
from gateway.daemon import Gateway

SUPPORT = "support@example.com"
SALES = "sales@example.com"


def free_port() -> int:
    """A port nothing listens on (yet), for a daemon started as its own process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(
    folder: Path,
    database_url: str,
    extra_gateway: str = "",
    *,
    smtp_port: int = 0,
    lmtp: bool = True,
    processing: str = "inline",
) -> Path:
    """A configuration with two mailboxes, listeners on free ports.

    ``smtp_port`` fixes the SMTP port (a daemon in its own process must be
    found there; 0 lets the in-process gateway pick one); ``lmtp=False``
    leaves LMTP off.

    Processing is inline unless asked: a worker process costs each test a
    second interpreter's start (it doubled the portal tests' time), and the
    step is the same code either way. The tests that run the daemon as
    users do (crash, instances, operations, systemd, browser, worker) ask
    for ``processing="worker"``, the default users get.
    """
    path = folder / "mailboxes.toml"
    lmtp_listen = "127.0.0.1:0" if lmtp else ""
    path.write_text(
        f"""
[gateway]
hostname = "gw.test"
database = "{database_url}"
smtp_listen = "127.0.0.1:{smtp_port}"
lmtp_listen = "{lmtp_listen}"
max_message_size = "1MiB"
max_recipients = 5
ticket_number_start = 10000
auto_mail_per_mailbox = "10/10min"
processing = "{processing}"
{extra_gateway}

[[mailbox]]
address = "{SUPPORT}"
aliases = ["help@example.com"]
name = "Example Support"
language = "en"

[[mailbox]]
address = "{SALES}"
name = "Example Sales"
language = "vi"
category = "billing"
tag = "[Sales #{{number}}]"
""",
        encoding="utf-8",
    )
    return path


class GatewayThread:
    """The real Gateway on its own event loop in a thread, for smtplib tests."""

    def __init__(self, config_path: Path) -> None:
        self.config = gateway_config.load(config_path)
        self.gateway = Gateway(self.config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self.call(self.gateway.start())
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.call(self.gateway.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, protocol: str = "smtp") -> int:
        return int(self.gateway.bound(protocol).rsplit(":", 1)[1])

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port("smtp"), timeout=30)

    def lmtp(self) -> smtplib.LMTP:
        return smtplib.LMTP("127.0.0.1", self.port("lmtp"), timeout=30)

    def send(
        self,
        message: EmailMessage | bytes,
        rcpts: list[str] | None = None,
        sender: str = "customer@example.org",
    ) -> dict[str, tuple[int, bytes]]:
        """Send over SMTP and wait until the gateway has processed it."""
        with self.smtp() as client:
            refused = client.sendmail(sender, rcpts or [SUPPORT], wire(message))
        self.idle()
        return refused

    def idle(self) -> None:
        self.call(self.gateway.idle())

    def db(self) -> Any:
        """A connection context on the gateway's database, for assertions."""
        assert self.gateway.store is not None
        return self.gateway.store.database.connection_context()

    def tickets(self) -> list[dict[str, Any]]:
        with self.db():
            return [
                queries.ticket_detail(t["number"])
                for t in reversed(queries.list_tickets(queries.TicketFilter()))
            ]

    def count(self, model: type[models.BaseModel]) -> int:
        with self.db():
            return int(model.select().count())

    @property
    def maildir(self) -> Path:
        """Where outbound mail lands (the config's maildir: transport)."""
        return self.config.base_dir / "var" / "outbox"

    def sent_mail(self) -> list[EmailMessage]:
        """Every mail delivered to the maildir so far, oldest first."""
        folder = self.maildir / "new"
        files = (
            sorted(folder.glob("*"), key=lambda f: f.stat().st_mtime_ns) if folder.exists() else []
        )
        return [
            email.message_from_bytes(f.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for f in files
        ]

    def outbound(self, expected: int, timeout: float = 20) -> list[EmailMessage]:
        """Wait until ``expected`` mails were delivered to the maildir; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.sent_mail()) < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        messages = self.sent_mail()
        assert len(messages) == expected, [str(m["Subject"]) for m in messages]
        return messages

    def settle(self) -> None:
        """Wait until processing is done and the outbox has nothing due."""
        self.idle()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.db():
                busy = (
                    models.Outbox.select()
                    .where(models.Outbox.status << ("queued", "sending"))
                    .exists()
                )
            if not busy:
                return
            time.sleep(0.05)
        raise AssertionError("outbox did not settle")


def history(ticket: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    """The ticket's events without the outbound-mail bookkeeping, or only ``kind``."""
    return [
        e
        for e in ticket["events"]
        if (e["kind"] == kind if kind else not e["kind"].startswith("mail_"))
    ]


def mail(
    subject: str = "Printer on fire",
    body: str = "Hello, my printer is on fire.\n",
    sender: str = "Lan Nguyen <customer@example.org>",
    to: str = SUPPORT,
    **headers: str,
) -> EmailMessage:
    """A plain customer message with a fresh Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="mail.example.org")
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(body)
    return message


def reply_to(
    original: EmailMessage | str,
    body: str,
    subject: str = "Re: Printer on fire",
    sender: str = "Lan Nguyen <customer@example.org>",
    **headers: str,
) -> EmailMessage:
    """A reply threading to ``original`` (a message or a Message-ID)."""
    msgid = original if isinstance(original, str) else str(original["Message-ID"])
    return mail(
        subject=subject, body=body, sender=sender, In_Reply_To=msgid, References=msgid, **headers
    )


def wire(message: EmailMessage | bytes) -> bytes:
    """The message with CRLF line ends, as an MTA sends it (smtplib leaves bytes alone)."""
    raw = message if isinstance(message, bytes) else message.as_bytes()
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
