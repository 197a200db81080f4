"""Preview: an event's mail rendered for reading, without sending or storing anything.

``ticket-gateway templates preview EVENT --lang vi [--ticket NUMBER]`` lets
an operator check the wording of a template (their own override or ours)
against a real ticket or a made-up example.
"""

from __future__ import annotations

from email.message import EmailMessage

from gateway import keys, models
from gateway.config import Config, Mailbox
from gateway.db import utcnow
from gateway.errors import GatewayError
from gateway.notify import Notifier, Recipient
from gateway.render import Headers, Renderer, compose

EVENTS = (
    "ticket_created",
    "agent_reply",
    "customer_reply",
    "ticket_created_for_agents",
    "status_changed",
    "ticket_closed",
    "verification_code",
    "agent_reply_copy",
    "command_rejected",
    "key_misuse",
    "escalated",
    "ticket_assigned",
    "address_misuse",
    "guest_link",
    "sla_warning",
    "sla_breached",
    "waiting_reminder",
)

_EXAMPLE_TEXT = "Hello,\n\nmy printer shows error E42 since this morning.\n\nThanks,\nLan"
_EXAMPLE_RATING = "https://support.example.com/rate/EXAMPLE"


def render(config: Config, event: str, lang: str | None, number: int | None) -> str:
    """The mail as text: headers, then each part decoded."""
    mailbox = config.mailboxes[0]
    if number is not None:
        ticket = models.Ticket.get_or_none(models.Ticket.number == number)
        if ticket is None:
            raise GatewayError(f"no ticket #{number}")
        mailbox = config.mailbox(ticket.mailbox) or mailbox
    else:
        ticket = _example(mailbox)
    renderer = Renderer(config.gateway.templates_dir)
    notifier = Notifier(config, renderer)
    recipient = Recipient(ticket.requester_email, ticket.requester_name)
    context = notifier.context(ticket, mailbox, recipient, **_extras(event))
    languages = [lang] if lang else [ticket.language, mailbox.language]
    rendered = renderer.render(event, languages, context)
    message = compose(
        rendered,
        Headers(
            from_name=mailbox.name,
            from_address=mailbox.address,
            to_name=recipient.name,
            to_address=recipient.email,
            hostname=config.gateway.hostname,
            reply_to=keys.address(mailbox.address, "KEY"),
            auto_submitted="auto-generated",
        ),
    )
    return _readable(message)


def _example(mailbox: Mailbox) -> models.Ticket:
    """A ticket that is never saved, for previews without a database."""
    now = utcnow()
    return models.Ticket(
        number=10023,
        mailbox=mailbox.address,
        subject="Printer shows E42",
        requester_email="lan@example.org",
        requester_name="Lan Nguyen",
        status="new",
        priority="medium",
        category=mailbox.category,
        language=mailbox.language,
        created_at=now,
        updated_at=now,
    )


def _extras(event: str) -> dict[str, object]:
    """Example values for the event-specific variables."""
    extras: dict[str, object] = {
        "message": {
            "author_name": "Lan Nguyen",
            "author_email": "lan@example.org",
            "text": _EXAMPLE_TEXT,
        },
        "agent": {"name": "Minh", "email": "minh@example.com"},
    }
    if event in {"agent_reply", "agent_reply_copy"}:
        extras["message"] = {
            "author_name": "Minh",
            "author_email": "",
            "text": "Please restart the printer.",
        }
        extras["applied"] = ["priority → high"]
    if event == "command_rejected":
        extras["errors"] = ["#priorty high: unknown command"]
    if event in {"key_misuse", "address_misuse"}:
        extras["intruder"] = "someone@elsewhere.example"
    if event == "escalated":
        extras["note"] = "The customer asks for a refund."
    if event == "status_changed":
        extras.update(status="resolved", old_status="open")
    if event in {"agent_reply", "status_changed", "ticket_closed"}:
        extras.update(
            rating_good_url=f"{_EXAMPLE_RATING}/good", rating_bad_url=f"{_EXAMPLE_RATING}/bad"
        )
    if event == "agent_reply":
        extras["status"] = "resolved"  # the answer resolved the ticket: the rating block shows
    if event == "sla_warning":
        extras["sla"] = {
            "kind": "first_response",
            "due_at": "2025-11-24 14:30 (Asia/Ho_Chi_Minh)",
            "left": "1 h 30 min",
            "late": "",
            "target": "6 h",
        }
    if event == "sla_breached":
        extras["sla"] = {
            "kind": "resolution",
            "due_at": "2025-11-24 14:30 (Asia/Ho_Chi_Minh)",
            "left": "",
            "late": "2 h 10 min",
            "target": "24 h",
        }
    if event == "waiting_reminder":
        extras["resolve_days"] = 3
    if event == "verification_code":
        extras.update(code="123456", code_minutes=10)
    return extras


def _readable(message: EmailMessage) -> str:
    lines = [f"{name}: {value}" for name, value in message.items()]
    for part in message.iter_parts():
        lines += ["", f"----- {part.get_content_type()} -----", str(part.get_content())]
    return "\n".join(lines).rstrip() + "\n"
