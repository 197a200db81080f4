"""Outbound mail end to end: SMTP in, acknowledgement out, replies back by key; no loops.

The gateway runs with its default maildir transport (var/outbox under the
test's folder); what lands there is what a customer would receive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage

import pytest

from gateway import models
from tests.helpers import SUPPORT, GatewayThread, history, mail, wire


def reply_from_client(ack: EmailMessage, body: str, sender: str = "lan@example.vn") -> EmailMessage:
    """What a mail client sends when the customer hits Reply on our mail."""
    quoted = "\n".join("> " + line for line in ack.get_body(("plain",)).get_content().splitlines())
    message = mail(
        subject="Re: " + str(ack["Subject"]),
        to=str(ack["Reply-To"]),
        sender=sender,
        body=f"{body}\n\nOn Mon, 3 Jun 2024 at 10:15, Example Support "
        f"<support@example.com> wrote:\n{quoted}\n",
    )
    message["In-Reply-To"] = str(ack["Message-ID"])
    message["References"] = str(ack["Message-ID"])
    return message


def reply_key_address(ack: EmailMessage) -> str:
    return ack["Reply-To"].addresses[0].addr_spec


def test_vietnamese_customer_gets_a_vietnamese_acknowledgement(gateway: GatewayThread) -> None:
    original = mail(
        subject="Không đăng nhập được",
        sender="Trần Lan <lan@example.vn>",
        body="Chào bạn, tôi không đăng nhập được vào tài khoản.\n",
    )
    gateway.send(original)
    [ack] = gateway.outbound(1)
    assert str(ack["Subject"]) == "[#10000] Không đăng nhập được"
    assert str(ack["From"]) == "Example Support <support@example.com>"
    assert str(ack["To"]) == "Trần Lan <lan@example.vn>"
    assert str(ack["Auto-Submitted"]) == "auto-replied"
    assert str(ack["In-Reply-To"]) == str(original["Message-ID"])
    assert str(ack["Content-Language"]) == "vi"
    assert str(ack["Delivered-To"]) == "lan@example.vn"
    assert str(ack["Return-Path"]).startswith("<support+bounce-")
    text = ack.get_body(("plain",)).get_content()
    assert "#10000" in text
    assert "Chúng tôi đã nhận được" in text
    address = reply_key_address(ack)
    assert address.startswith("support+") and address.endswith("@example.com")
    assert len(address.split("+")[1].split("@")[0]) == 26  # 128 random bits, base32
    with gateway.db():
        row = models.Outbox.get()
        assert (row.status, row.event, row.auto) == ("sent", "ticket_created", True)
        assert address.split("+")[1].split("@")[0] not in json.dumps(
            [k.key_hash for k in models.ReplyKey.select()]
        )  # stored hashed


def test_reply_to_the_acknowledgement_lands_in_the_ticket_by_its_key(
    gateway: GatewayThread,
) -> None:
    gateway.send(mail(subject="Không đăng nhập được", sender="Trần Lan <lan@example.vn>"))
    [ack] = gateway.outbound(1)
    answer = reply_from_client(ack, "Tôi đã thử lại, vẫn lỗi.")
    answer.replace_header("Subject", "Re: something else entirely")  # no tag to help
    del answer["In-Reply-To"], answer["References"]  # and no headers either: only the key
    gateway.send(answer, rcpts=[reply_key_address(ack)])
    [ticket] = gateway.tickets()
    assert [m["text"] for m in ticket["messages"]][1] == "Tôi đã thử lại, vẫn lỗi."
    assert history(ticket, "message_added")[0]["detail"]["via"] == "reply-key"
    gateway.settle()
    assert len(gateway.outbound(1)) == 1  # a follow-up is not acknowledged again


def test_someone_else_using_a_reply_key_opens_their_own_ticket(gateway: GatewayThread) -> None:
    gateway.send(mail(sender="lan@example.vn"))
    [ack] = gateway.outbound(1)
    # A sign-up confirmation that a stranger had sent to our reply address:
    intruder = mail(
        subject="Confirm your account",
        sender="noreply-signup@shop.example",
        body="Click to confirm.",
    )
    intruder.replace_header("From", "Shop <accounts@shop.example>")
    gateway.send(intruder, rcpts=[reply_key_address(ack)])
    victim, other = gateway.tickets()
    assert len(victim["messages"]) == 1
    assert other["requester"]["email"] == "accounts@shop.example"
    refused = history(other, "thread_refused")[0]["detail"]
    assert refused["via"] == "reply-key"
    assert "belongs to someone else" in refused["why"]
    gateway.settle()
    assert len(gateway.outbound(1)) == 1  # and no acknowledgement for the stranger


@pytest.mark.parametrize(
    "header",
    [
        ("Auto-Submitted", "auto-replied"),
        ("Auto-Submitted", "auto-generated"),
        ("Precedence", "bulk"),
        ("Precedence", "junk"),
        ("Precedence", "list"),
        ("X-Autoreply", "yes"),
        ("List-Id", "<news.example.org>"),
    ],
)
def test_automatic_mail_gets_no_acknowledgement(
    gateway: GatewayThread, header: tuple[str, str]
) -> None:
    message = mail()
    message[header[0]] = header[1]
    gateway.send(message)
    gateway.settle()
    with gateway.db():
        assert models.Outbox.select().count() == 0


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.org",
        "postmaster@example.org",
        "noreply@shop.example",
        "no-reply@shop.example",
        "support@example.com",
    ],
)
def test_no_acknowledgement_to_automated_or_own_addresses(
    gateway: GatewayThread, sender: str
) -> None:
    gateway.send(mail(sender=sender), sender=sender)
    gateway.settle()
    with gateway.db():
        assert models.Outbox.select().count() == 0


def test_null_sender_gets_no_acknowledgement(gateway: GatewayThread) -> None:
    with gateway.smtp() as client:
        client.sendmail("<>", [SUPPORT], wire(mail(sender="someone@example.org")))
    gateway.settle()
    with gateway.db():
        assert models.Outbox.select().count() == 0


def test_acknowledgements_are_capped_per_sender(gateway: GatewayThread) -> None:
    for i in range(3):
        gateway.send(mail(subject=f"question {i}"))
    gateway.settle()
    assert len(gateway.tickets()) == 3
    assert len(gateway.outbound(1)) == 1  # default: 1 acknowledgement per sender per 10 min
    held = history(gateway.tickets()[2], "mail_held_back")[0]["detail"]
    assert held["why"] == "cap reached: 1 acknowledgements to this sender per 10 minutes"


def ping_pong(
    gateway: GatewayThread, echo: Callable[[int, EmailMessage], None], turns: int = 60
) -> int:
    """Let a robot answer each of our mails with ``echo``; how many mails did we send?"""
    gateway.send(mail(subject="hello", sender="bot@robot.example"))
    gateway.settle()
    for turn in range(turns):
        sent = gateway.sent_mail()
        if len(sent) <= turn:
            return len(sent)  # we did not answer the robot's last message
        echo(turn, sent[turn])
        gateway.settle()
    return len(gateway.sent_mail())


def test_ping_pong_robot_replying_from_rotating_addresses_ends(gateway: GatewayThread) -> None:
    """It ignores every header, replies to our Reply-To, and changes its address each time."""

    def echo(turn: int, ours: EmailMessage) -> None:
        robot = f"bot+{turn}@robot.example" if turn % 2 else f"bot{turn}@robot.example"
        gateway.send(
            mail(
                subject="Re: " + str(ours["Subject"]),
                sender=robot,
                body="Thank you for your message.",
            ),
            rcpts=[reply_key_address(ours)],
        )

    assert ping_pong(gateway, echo) == 1  # a reply key used by a stranger gets no answer


def test_ping_pong_robot_quoting_our_subject_ends(gateway: GatewayThread) -> None:
    def echo(turn: int, ours: EmailMessage) -> None:
        gateway.send(
            mail(
                subject="Re: " + str(ours["Subject"]),
                sender=f"bot{turn}@robot.example",
                body="Thank you for your message.",
            )
        )

    assert ping_pong(gateway, echo) == 1  # the tag points at a ticket they are not on


def test_ping_pong_robot_writing_afresh_each_time_ends_at_the_caps(gateway: GatewayThread) -> None:
    """The worst robot: every answer is a brand-new message from a brand-new address."""

    def echo(turn: int, ours: EmailMessage) -> None:
        gateway.send(
            mail(
                subject=f"Inquiry {turn * 7919}",
                sender=f"bot{turn}@robot.example",
                body="Thank you for your message.",
            )
        )

    sent = ping_pong(gateway, echo)
    assert sent == 10  # the mailbox cap in the test configuration
    with gateway.db():
        held = models.Event.select().where(models.Event.kind == "mail_held_back").get()
    assert "automatic mail from this mailbox" in json.loads(held.detail)["why"]


def test_bounce_to_the_verp_address_is_recorded_and_suppresses(gateway: GatewayThread) -> None:
    gateway.send(mail(sender="gone@example.org"))
    [ack] = gateway.outbound(1)
    return_path = str(ack["Return-Path"]).strip("<>")
    dsn = f"""From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: {return_path}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Sorry.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.1.1

--b--
"""
    with gateway.smtp() as client:
        client.sendmail("<>", [return_path], wire(dsn.encode()))
    gateway.settle()
    [ticket] = gateway.tickets()
    failed = history(ticket, "delivery_failed")[0]["detail"]
    assert (failed["recipient"], failed["status"], failed["permanent"]) == (
        "gone@example.org",
        "5.1.1",
        True,
    )
    assert ticket["messages"][1]["visibility"] == "internal"
    with gateway.db():
        assert models.Suppression.get().email == "gone@example.org"
    gateway.send(mail(subject="another one", sender="gone@example.org"))
    gateway.settle()
    second = gateway.tickets()[1]
    assert "bounced permanently" in history(second, "mail_held_back")[0]["detail"]["why"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_outbox_cli(gateway: GatewayThread) -> None:
    gateway.send(mail())
    gateway.settle()
    config = str(gateway.config.path)
    listing = json.loads(cli("outbox", "list", "--json", "--config", config).stdout)
    assert [(r["status"], r["event"], r["ticket"]) for r in listing] == [
        ("sent", "ticket_created", 10000)
    ]
    table = cli("outbox", "list", "--config", config).stdout
    assert "ticket_created" in table and "1 mail(s)" in table
    retried = cli("outbox", "retry", str(listing[0]["id"]), "--config", config)
    assert retried.returncode == 1  # a sent mail is not re-sent
    assert cli("outbox", "drop", "999", "--config", config).returncode == 1


def test_templates_preview(gateway: GatewayThread) -> None:
    gateway.send(mail(subject="Máy in hỏng", body="Máy in của tôi bị hỏng rồi.\n"))
    config = str(gateway.config.path)
    out = cli(
        "templates", "preview", "ticket_created", "--ticket", "10000", "--config", config
    ).stdout
    assert "Subject: [#10000] Máy in hỏng" in out
    assert "----- text/plain -----" in out and "----- text/html -----" in out
    assert "Chúng tôi đã nhận được" in out  # the ticket's detected language
    fa = cli("templates", "preview", "status_changed", "--lang", "fa", "--config", config)
    assert fa.returncode == 0
    assert 'dir="rtl"' in fa.stdout
    bad = cli("templates", "preview", "nonsense", "--config", config)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
