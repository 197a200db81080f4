"""Threading and ticket rules, end to end over SMTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from email.message import EmailMessage

from gateway import models, tickets
from tests.helpers import SALES, SUPPORT, GatewayThread, history, mail, reply_to

QUOTED_REPLY = """Thanks, it works now.

On Mon, 3 Jun 2024 at 10:15, Example Support <support@example.com> wrote:
> Please restart the printer.
> Regards
"""


def set_status(gateway: GatewayThread, number: int, status: str) -> None:
    with gateway.db():
        ticket = models.Ticket.get(models.Ticket.number == number)
        mailbox = gateway.config.mailbox(ticket.mailbox)
        assert mailbox is not None
        tickets.set_status(ticket, status, mailbox=mailbox, actor="test")


def test_reply_by_in_reply_to_joins_the_ticket_with_quotes_stripped(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    gateway.send(reply_to(original, QUOTED_REPLY))
    [ticket] = gateway.tickets()
    _, second = ticket["messages"]
    assert second["text"].strip() == "Thanks, it works now."
    assert second["direction"] == "inbound"
    with gateway.db():
        full = models.Message.select().order_by(models.Message.id.desc()).get().full_text
    assert "Please restart the printer." in full  # the whole original is kept
    assert [e["kind"] for e in history(ticket)] == ["ticket_created", "message_added"]
    assert history(ticket)[1]["detail"]["via"] == "in-reply-to"


def test_reply_by_references_only(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    follow_up = mail(subject="another thing", References=f"<x@y> {original['Message-ID']}")
    gateway.send(follow_up)
    [ticket] = gateway.tickets()
    assert len(ticket["messages"]) == 2
    assert history(ticket)[1]["detail"]["via"] == "references"


def test_reply_by_subject_tag(gateway: GatewayThread) -> None:
    gateway.send(mail())
    gateway.send(mail(subject="Re: [#10000] Printer on fire", body="Still burning.\n"))
    [ticket] = gateway.tickets()
    assert [m["text"].strip() for m in ticket["messages"]][1] == "Still burning."
    assert history(ticket)[1]["detail"]["via"] == "tag"


def test_reply_by_bare_number_and_persian_digits(gateway: GatewayThread) -> None:
    gateway.send(mail())
    gateway.send(mail(subject="about #10000 again"))
    gateway.send(mail(subject="پیگیری درخواست #۱۰۰۰۰"))
    [ticket] = gateway.tickets()
    assert len(ticket["messages"]) == 3
    assert [e["detail"].get("via") for e in history(ticket)[1:]] == ["number", "number"]


def test_custom_tag_of_the_mailbox(gateway: GatewayThread) -> None:
    gateway.send(mail(to=SALES), rcpts=[SALES])
    gateway.send(mail(to=SALES, subject="Re: [Sales #10000] Báo giá"), rcpts=[SALES])
    [ticket] = gateway.tickets()
    assert len(ticket["messages"]) == 2


def test_a_number_that_is_no_ticket_opens_a_new_one(gateway: GatewayThread) -> None:
    gateway.send(mail(subject="Re: [#99999] hello"))
    [ticket] = gateway.tickets()
    assert ticket["subject"] == "Re: hello"


def test_stranger_with_the_tag_gets_a_new_ticket_and_an_event(gateway: GatewayThread) -> None:
    gateway.send(mail())
    gateway.send(mail(subject="Re: [#10000] Printer on fire", sender="mallory@evil.example"))
    victim, stranger = gateway.tickets()
    assert len(victim["messages"]) == 1
    assert stranger["requester"]["email"] == "mallory@evil.example"
    assert stranger["subject"] == "Re: Printer on fire"
    refused = [e for e in stranger["events"] if e["kind"] == "thread_refused"]
    assert refused[0]["detail"]["refused_ticket"] == 10000
    assert "not a participant" in refused[0]["detail"]["why"]
    assert any(
        e["kind"] == "thread_refused" and e["detail"]["new_ticket"] == 10001
        for e in victim["events"]
    )


def test_stranger_with_in_reply_to_gets_a_new_ticket(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    gateway.send(reply_to(original, "let me in", sender="mallory@evil.example"))
    victim, stranger = gateway.tickets()
    assert len(victim["messages"]) == 1
    assert history(stranger)[-1]["detail"]["via"] == "in-reply-to"


def test_cc_participant_may_follow_up(gateway: GatewayThread) -> None:
    original = mail(Cc="Boss <boss@example.org>, support@example.com")
    gateway.send(original)
    gateway.send(reply_to(original, "I approve.", sender="boss@example.org"))
    [ticket] = gateway.tickets()
    assert len(ticket["messages"]) == 2
    assert {p["email"] for p in ticket["participants"]} == {
        "customer@example.org",
        "boss@example.org",
    }


def test_threading_stays_within_the_mailbox(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    gateway.send(reply_to(original, "wrong desk", subject="Re: [#10000]", to=SALES), rcpts=[SALES])
    tickets_ = gateway.tickets()
    assert [(t["number"], t["mailbox"], len(t["messages"])) for t in tickets_] == [
        (10000, SUPPORT, 1),
        (10001, SALES, 1),
    ]


def test_reply_reopens_a_resolved_ticket(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    set_status(gateway, 10000, "resolved")
    gateway.send(reply_to(original, "It broke again."))
    [ticket] = gateway.tickets()
    assert ticket["status"] == "open"
    change = [e for e in ticket["events"] if e["kind"] == "status_changed"][-1]
    assert (change["detail"]["old"], change["detail"]["new"]) == ("resolved", "open")


def test_reply_reopens_a_closed_ticket(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    set_status(gateway, 10000, "closed")
    gateway.send(reply_to(original, "Hello again"))
    assert gateway.tickets()[0]["status"] == "open"


def auto_reply(original: EmailMessage) -> EmailMessage:
    message = reply_to(
        original, "I am out of the office until Monday.", subject="Automatic reply: Printer on fire"
    )
    message["Auto-Submitted"] = "auto-replied"
    return message


def test_auto_reply_is_stored_and_never_reopens(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    set_status(gateway, 10000, "resolved")
    gateway.send(auto_reply(original))
    [ticket] = gateway.tickets()
    assert ticket["status"] == "resolved"
    assert ticket["messages"][1]["auto"] is True
    assert history(ticket)[-1]["kind"] == "auto_message_added"


def bounce_of(message_id: str, subject: str = "Undelivered Mail Returned to Sender") -> bytes:
    return f"""From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: support@example.com
Subject: {subject}
Message-ID: <bounce-{message_id}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain

This is the mail system. Your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
Final-Recipient: rfc822; gone@example.org
Action: failed
Status: 5.1.1

--b1
Content-Type: text/rfc822-headers

From: Example Support <support@example.com>
To: gone@example.org
Subject: [#10000] Printer on fire
Message-ID: <{message_id}>

--b1--
""".replace("\n", "\r\n").encode()


def test_bounce_of_unknown_mail_opens_no_ticket(gateway: GatewayThread) -> None:
    with gateway.smtp() as client:
        client.sendmail("<>", [SUPPORT], bounce_of("nothing-we-know@gw.test"))
    gateway.idle()
    assert gateway.tickets() == []
    with gateway.db():
        row = models.Inbound.get()
        assert row.status == "processed"
        event = models.Event.get(models.Event.kind == "auto_message_ignored")
        assert event.inbound_id == row.id


def test_bounce_naming_a_ticket_message_is_kept_internal(gateway: GatewayThread) -> None:
    original = mail()
    gateway.send(original)
    with gateway.smtp() as client:
        client.sendmail("<>", [SUPPORT], bounce_of(str(original["Message-ID"]).strip("<>")))
    gateway.idle()
    [ticket] = gateway.tickets()
    assert ticket["status"] == "new"
    bounce = ticket["messages"][1]
    assert (bounce["auto"], bounce["visibility"]) == (True, "internal")
    assert history(ticket)[-1]["kind"] == "bounce_received"


def test_mail_from_our_own_address_opens_no_ticket(gateway: GatewayThread) -> None:
    gateway.send(mail(sender="Example Support <support@example.com>"), sender="support@example.com")
    assert gateway.tickets() == []


def test_list_mail_opens_a_ticket_marked_auto(gateway: GatewayThread) -> None:
    gateway.send(
        mail(subject="Weekly digest", List_Id="<news.example.org>", sender="news@example.org")
    )
    [ticket] = gateway.tickets()
    assert ticket["messages"][0]["auto"] is True


def test_ticket_numbers_increase(gateway: GatewayThread) -> None:
    for i in range(3):
        gateway.send(mail(subject=f"request {i}"))
    assert [t["number"] for t in gateway.tickets()] == [10000, 10001, 10002]


def test_a_forged_from_cannot_add_people_to_a_ticket(gateway: GatewayThread) -> None:
    """From: the customer, Cc: the attacker, with the tag: the attacker stays out."""
    gateway.send(mail())
    forged = mail(subject="Re: [#10000] Printer on fire", Cc="attacker@evil.example")
    gateway.send(forged)
    [ticket] = gateway.tickets()
    assert len(ticket["messages"]) == 2  # the text joins (a number is a hint) ...
    assert {p["email"] for p in ticket["participants"]} == {"customer@example.org"}  # ... no one
