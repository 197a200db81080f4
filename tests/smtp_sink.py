"""A real SMTP server for tests: aiosmtpd recording what arrives, answering as told."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.helpers import free_port


@dataclasses.dataclass
class Received:
    """One message as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: bytes | None
    mail_options: list[str]


class Sink:
    """An aiosmtpd handler that records what arrives and answers as told."""

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}  # "MAIL" / "RCPT" / "DATA" -> reply
        self.received: list[Received] = []
        self.mail_commands: list[str] = []
        self.open_sessions: set[SMTP] = set()

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.mail_commands.append(address)
        if "MAIL" in self.replies:
            return self.replies["MAIL"]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if "RCPT" in self.replies:
            return self.replies["RCPT"]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if "DATA" in self.replies:
            return self.replies["DATA"]
        login = session.auth_data.login if session.authenticated else None
        content = envelope.original_content
        assert isinstance(content, bytes) and envelope.mail_from is not None
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                content,
                session.ssl is not None,
                login,
                list(envelope.mail_options),
            )
        )
        return "250 2.0.0 Ok: queued as 4XyZ"


class TrackedSMTP(SMTP):
    """aiosmtpd's server, noting its open connections so that teardown can wait for them."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.event_handler.open_sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.event_handler.open_sessions.discard(self)


class SinkController(Controller):
    def factory(self) -> SMTP:
        return TrackedSMTP(self.handler, **self.SMTP_kwargs)


ServerFactory = Callable[..., tuple[Sink, int]]


@pytest.fixture
def smtp_server() -> Iterator[ServerFactory]:
    """Start aiosmtpd servers on 127.0.0.1 (keyword arguments go to aiosmtpd); stop them after."""
    controllers: list[Controller] = []

    def start(port: int | None = None, **smtp_options: Any) -> tuple[Sink, int]:
        sink = Sink()
        port = port or free_port()
        controller = SinkController(sink, hostname="127.0.0.1", port=port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return sink, port

    yield start
    for controller in controllers:
        # The client has hung up, but the server thread may not have noticed yet;
        # stopping it now would leave that socket unclosed (a ResourceWarning).
        deadline = time.monotonic() + 5
        while controller.handler.open_sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        controller.stop()
