"""Messages the gateway writes into its own intake: the portal's and the API's.

A guest's reply in the portal and an agent's action through the API become
mail, spooled by :class:`gateway.intake.Intake` with a protocol of their own
("portal", "api") and processed by the same steps as mail from the
listener, so they make the same events, notifications and outbox rows.

Only these two spool with those protocols, so the few headers they add are
trusted, and only for them (the same headers in mail from outside are
ignored): ``X-Gateway-Category`` and ``X-Gateway-Priority`` on a new
request, ``X-Gateway-Commands`` on an agent's action (API only).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from gateway.config import Config
from gateway.intake import OWN_PROTOCOLS, Delivery, Envelope, Intake
from gateway.process import Processing
from gateway.render import header_safe

log = logging.getLogger("gateway.internal")

PROCESS_WAIT = 10.0  # seconds to wait for a message to reach its ticket

File = tuple[str, str, bytes]  # filename, content type, bytes


def compose(
    config: Config,
    name: str,
    email: str,
    to: str,
    subject: str,
    text: str,
    files: Sequence[File] = (),
    message_id: str | None = None,
) -> EmailMessage:
    """A plain mail from ``email`` to ``to``, with attachments, as a mail client writes it."""
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(header_safe(name), addr_spec=email)
    message["To"] = to
    message["Subject"] = header_safe(subject)
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC), usegmt=True)
    message["Message-ID"] = message_id or make_msgid(domain=config.gateway.hostname)
    message.set_content(text.replace("\r\n", "\n"))
    for filename, content_type, data in files:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(
            data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=filename,
        )
    return message


async def submit(
    config: Config,
    intake: Intake,
    processor: Processing,
    raw: bytes,
    envelope: Envelope,
) -> int:
    """Spool ``raw`` for its one recipient and wait (a while) until it is processed.

    Returns the inbound row's id. A message still queued after
    :data:`PROCESS_WAIT` stays queued: it is durable and will be processed.
    """
    assert envelope.protocol in OWN_PROTOCOLS
    [rcpt] = envelope.rcpt_to
    routed = config.route(rcpt)
    assert routed is not None, "callers send to their own mailboxes"
    [spooled] = await intake.spool(raw, envelope, [Delivery(routed[0].address, (rcpt,))])
    processor.submit(spooled.inbound_id)
    try:
        await asyncio.wait_for(processor.idle(), PROCESS_WAIT)
    except TimeoutError:
        log.warning(
            "%s %s message still queued after %.0fs",
            spooled.queue_id,
            envelope.protocol,
            PROCESS_WAIT,
        )
    return spooled.inbound_id
