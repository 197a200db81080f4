"""Listener: SMTP and LMTP servers (aiosmtpd) on the daemon's own event loop.

The listener decides only what SMTP must decide before DATA: is this one of
our addresses (else 550 5.1.1: we are never a relay), are there too many
recipients (452 4.5.3), is the message too big (552 5.3.4). After DATA it
hands the bytes to intake and answers 250 only once intake has committed
them. Any failure of ours answers 451 4.3.0 so the sender keeps the message
and retries; aiosmtpd's own default for an exception is a permanent 500,
which would make the sender bounce mail we merely failed to store.

LMTP (RFC 2033) answers once per accepted recipient after the final dot.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import defaultdict
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import metrics
from gateway.config import Config, ListenAddress
from gateway.errors import StorageError
from gateway.intake import Delivery, Intake
from gateway.intake import Envelope as IntakeEnvelope
from gateway.process import Processing
from gateway.smtpd import LeanSMTP, lean_handler

log = logging.getLogger("gateway.listener")

TOO_BIG = "552 5.3.4 Message too big for this system"
TEMPORARY_FAILURE = "451 4.3.0 Temporary local problem, please try again later"
# aiosmtpd writes some replies itself; these get RFC 3463 enhanced codes.
_REWRITES = {
    "552 Error: Too much mail data": TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": TOO_BIG,
}
# Replies aiosmtpd gives after the final dot that LMTP must repeat per recipient.
_AFTER_DATA = {TOO_BIG, "500 Line too long (see RFC5321 4.5.3.1.6)"}


SHUTTING_DOWN = b"421 4.3.2 Service shutting down, please try again later\r\n"


class _Tracked(LeanSMTP):
    """Registers each session with its handler, so shutdown can find them all."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.event_handler.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.sessions.discard(self)
        super().connection_lost(error)

    @property
    def in_transaction(self) -> bool:
        """Between MAIL and the reply to the final dot: mail is in flight."""
        return self.envelope is not None and self.envelope.mail_from is not None

    def hang_up(self) -> None:
        """Say 421 and close (RFC 5321 3.8: the server is going away)."""
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(SHUTTING_DOWN)
            self.transport.close()


class GatewaySMTP(_Tracked):
    """aiosmtpd's SMTP with enhanced status codes on its built-in replies."""

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REWRITES.get(status, status)
        await super().push(status)


class GatewayLMTP(LMTP, _Tracked):
    """aiosmtpd's LMTP, answering per recipient where aiosmtpd answers once."""

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REWRITES.get(status, status)
            if status in _AFTER_DATA and self.envelope is not None and self.envelope.rcpt_tos:
                status = "\r\n".join([status] * len(self.envelope.rcpt_tos))
        await super().push(status)


@lean_handler
class Handler:
    """aiosmtpd hooks: route recipients, spool on DATA, answer 451 on our failures."""

    def __init__(
        self, config: Config, intake: Intake, processor: Processing, protocol: str
    ) -> None:
        self.config = config  # replaced on reload
        self.intake = intake
        self.processor = processor
        self.protocol = protocol
        self.sessions: set[_Tracked] = set()
        self.tls_context: ssl.SSLContext | None = None  # STARTTLS, when configured

    async def drain(self, grace: float) -> None:
        """Close idle sessions at once; give those with mail in flight ``grace`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.sessions and loop.time() < deadline:
            for session in [s for s in self.sessions if not s.in_transaction]:
                session.hang_up()
            await asyncio.sleep(0.02)
        for session in list(self.sessions):
            log.warning("closing a session still in a transaction after %.0fs", grace)
            session.hang_up()

    async def handle_RCPT(
        self,
        _server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.gateway.max_recipients:
            metrics.RECIPIENTS_REFUSED.labels("too_many").inc()
            return "452 4.5.3 Too many recipients"
        if self.config.route(address) is None:
            log.info("%s rejected recipient %s: no such mailbox", _peer(session), address)
            metrics.RECIPIENTS_REFUSED.labels("unknown").inc()
            return f"550 5.1.1 <{address}>: no such mailbox here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, _server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        deliveries = self._deliveries(envelope.rcpt_tos)
        try:
            spooled = await self.intake.spool(raw, self._envelope(session, envelope), deliveries)
        except StorageError as exc:
            log.error("%s message not stored, answered 451: %s", _peer(session), exc)
            metrics.MESSAGES.labels("deferred").inc()
            return self._reply(envelope, TEMPORARY_FAILURE)
        for item in spooled:
            if not item.duplicate:
                self.processor.submit(item.inbound_id)
        queue_ids = ",".join(item.queue_id for item in spooled)
        return self._reply(envelope, f"250 2.0.0 OK queued as {queue_ids}")

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error, answered 451: %r", error, exc_info=error)
        return TEMPORARY_FAILURE

    def _deliveries(self, recipients: list[str]) -> list[Delivery]:
        """Recipients grouped by mailbox, in the order they were given."""
        grouped: dict[str, list[str]] = defaultdict(list)
        for address in recipients:
            routed = self.config.route(address)
            if routed is not None:
                grouped[routed[0].address].append(address)
        return [Delivery(mailbox, tuple(rcpts)) for mailbox, rcpts in grouped.items()]

    def _envelope(self, session: Session, envelope: Envelope) -> IntakeEnvelope:
        sender = envelope.mail_from or ""
        return IntakeEnvelope(
            mail_from="" if sender == "<>" else sender,
            rcpt_to=tuple(envelope.rcpt_tos),
            protocol=self.protocol,
            peer=_peer(session),
            helo=session.host_name or "",
        )

    def _reply(self, envelope: Envelope, status: str) -> str:
        """One reply for SMTP; one per recipient for LMTP (RFC 2033 section 4.2)."""
        if self.protocol == "lmtp":
            return "\r\n".join([status] * len(envelope.rcpt_tos))
        return status


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "local")


async def start(handler: Handler, where: ListenAddress) -> asyncio.Server:
    """Bind a listener for ``handler.protocol`` at ``where``."""
    server_class = GatewayLMTP if handler.protocol == "lmtp" else GatewaySMTP

    def factory() -> SMTP:
        # Read per connection: a reload swaps the handler's context and
        # settings, and the next session uses them.
        tls = handler.tls_context if handler.protocol == "smtp" else None
        return server_class(
            handler,
            hostname=handler.config.gateway.hostname,
            ident="ticket-gateway",
            data_size_limit=handler.config.gateway.max_message_size,
            enable_SMTPUTF8=True,
            timeout=300,
            tls_context=tls,
            require_starttls=tls is not None and handler.config.gateway.tls_required,
        )

    loop = asyncio.get_running_loop()
    if where.unix_path:
        return await loop.create_unix_server(factory, where.unix_path)
    return await loop.create_server(factory, where.host, where.port)
