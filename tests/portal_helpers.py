"""Shared by the portal's HTTP and browser tests: a customer, links and codes from mail."""

from __future__ import annotations

import re
from email.message import EmailMessage

from gateway import models
from tests.helpers import GatewayThread, mail

CUSTOMER = "khach@example.vn"
PORTAL = 'portal_listen = "127.0.0.1:0"\nportal_url = "http://portal.example"\n'


def link_of(message: EmailMessage) -> str:
    """The path of the portal link in a mail (the host is portal_url, not ours)."""
    found = re.search(
        r"http://portal\.example(/t/[A-Za-z0-9_-]+)", message.get_body(("plain",)).get_content()
    )
    assert found, "no portal link in the mail"
    return found.group(1)


def latest_code(gateway: GatewayThread, to: str = CUSTOMER) -> str:
    """The code in the newest verification mail delivered to ``to``."""
    gateway.settle()
    with gateway.db():
        row = (
            models.Outbox.select()
            .where((models.Outbox.event == "verification_code") & (models.Outbox.recipient == to))
            .order_by(models.Outbox.id.desc())
            .get()
        )
    [delivered] = [m for m in gateway.sent_mail() if str(m["Message-ID"]) == f"<{row.message_id}>"]
    assert str(delivered["Delivered-To"]) == to
    found = re.search(r"\b(\d{6})\b", delivered.get_body(("plain",)).get_content())
    assert found
    return found.group(1)


def customer_ticket(gateway: GatewayThread, body: str = "Máy in của tôi bị lỗi E42.") -> str:
    """A customer writes; the link path from the acknowledgement."""
    gateway.send(
        mail(subject="Máy in lỗi", sender=f"Khách Hàng <{CUSTOMER}>", body=body), sender=CUSTOMER
    )
    gateway.settle()
    [ack] = [m for m in gateway.sent_mail() if str(m["Delivered-To"]) == CUSTOMER]
    return link_of(ack)
