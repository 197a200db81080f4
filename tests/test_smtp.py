"""SMTP and LMTP over real sockets: what a sending MTA sees, and what gets stored.

Every test here runs against SQLite and PostgreSQL (the ``gateway`` fixture
is parametrized through ``database_url``).
"""

from __future__ import annotations

import smtplib
import socket
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway import models, process
from gateway.intake import Intake
from tests.helpers import SALES, SUPPORT, GatewayThread, mail, wire


def test_accepts_mail_and_opens_a_ticket(gateway: GatewayThread) -> None:
    message = mail(
        subject="Không in được hoá đơn",
        body="Máy in báo lỗi E42.\n",
        sender="Nguyễn Thị Lan <lan@example.vn>",
    )
    with gateway.smtp() as client:
        code, banner = client.ehlo("client.example.org")
        assert code == 250
        assert b"SIZE 1048576" in banner
        client.mail("lan@example.vn")
        assert client.rcpt(SUPPORT)[0] == 250
        code, reply = client.data(wire(message))
    assert code == 250
    assert reply.startswith(b"2.0.0 OK queued as ")
    gateway.idle()
    [ticket] = gateway.tickets()
    assert ticket["number"] == 10000
    assert ticket["subject"] == "Không in được hoá đơn"
    assert ticket["requester"] == {"email": "lan@example.vn", "name": "Nguyễn Thị Lan"}
    assert (ticket["status"], ticket["priority"], ticket["category"]) == (
        "new",
        "medium",
        "general",
    )
    assert ticket["mailbox"] == SUPPORT
    [first] = ticket["messages"]
    assert first["text"].strip() == "Máy in báo lỗi E42."
    assert first["message_id"] == str(message["Message-ID"]).strip("<>")
    assert (first["direction"], first["visibility"], first["auto"]) == ("inbound", "public", False)
    assert first["author"]["role"] == "customer"
    assert [e["kind"] for e in ticket["events"]] == ["ticket_created", "mail_queued"]
    assert ticket["language"] == "vi"  # detected from the text; the mailbox says en


def test_second_mailbox_uses_its_own_category_and_language(gateway: GatewayThread) -> None:
    gateway.send(mail(to=SALES), rcpts=[SALES])
    [ticket] = gateway.tickets()
    assert (ticket["mailbox"], ticket["category"], ticket["language"]) == (SALES, "billing", "vi")


def test_alias_and_plus_address_reach_the_mailbox(gateway: GatewayThread) -> None:
    gateway.send(mail(), rcpts=["HELP@example.com"])
    gateway.send(mail(), rcpts=["support+billing@example.com"])
    assert [t["mailbox"] for t in gateway.tickets()] == [SUPPORT, SUPPORT]


@pytest.mark.parametrize(
    "rcpt",
    [
        "nobody@example.com",
        "victim@gmail.com",
        "support@example.com.evil.org",
        "support@sub.example.com",
    ],
)
def test_unknown_recipient_is_refused_we_are_no_relay(gateway: GatewayThread, rcpt: str) -> None:
    with gateway.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("customer@example.org")
        code, reply = client.rcpt(rcpt)
    assert code == 550
    assert reply.startswith(b"5.1.1")
    assert gateway.count(models.Inbound) == 0


def test_mixed_recipients_deliver_to_the_known_one(gateway: GatewayThread) -> None:
    refused = gateway.send(mail(), rcpts=["nobody@example.com", SUPPORT])
    assert refused["nobody@example.com"][0] == 550
    assert len(gateway.tickets()) == 1


def test_declared_size_over_the_limit_is_refused_at_mail(gateway: GatewayThread) -> None:
    with gateway.smtp() as client:
        client.ehlo("client.example.org")
        code, reply = client.mail("customer@example.org", options=["SIZE=2000000"])
    assert code == 552
    assert reply.startswith(b"5.3.4")


def test_undeclared_oversized_message_is_refused_after_data(gateway: GatewayThread) -> None:
    big = mail(body="x" * 76 + "\n")
    big.set_content(("y" * 76 + "\n") * 16000)  # about 1.2 MB, over the 1 MiB limit
    with gateway.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("customer@example.org")
        client.rcpt(SUPPORT)
        code, reply = client.data(wire(big))
    assert code == 552
    assert reply.startswith(b"5.3.4")
    assert gateway.count(models.Inbound) == 0
    assert gateway.count(models.RawMessage) == 0


def test_too_many_recipients(gateway: GatewayThread) -> None:
    with gateway.smtp() as client:
        client.ehlo("client.example.org")
        client.mail("customer@example.org")
        codes = [client.rcpt(f"support+{i}@example.com")[0] for i in range(5)]
        code, reply = client.rcpt("support+6@example.com")
    assert codes == [250] * 5
    assert code == 452
    assert reply.startswith(b"4.5.3")


def test_null_sender_is_accepted(gateway: GatewayThread) -> None:
    with gateway.smtp() as client:
        client.ehlo("mx.example.org")
        assert client.mail("<>")[0] == 250
        assert client.rcpt(SUPPORT)[0] == 250
        assert client.data(wire(mail(sender="MAILER-DAEMON@mx.example.org")))[0] == 250
    gateway.idle()
    with gateway.db():
        assert models.Inbound.get().mail_from == ""


def lmtp_session(port: int, rcpts: list[str], message: bytes) -> tuple[list[str], list[str]]:
    """A raw LMTP client: the RCPT replies and the replies after the final dot.

    smtplib reads one reply after DATA; LMTP sends one per accepted recipient.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        stream = sock.makefile("rwb")

        def command(line: str) -> str:
            stream.write(line.encode() + b"\r\n")
            stream.flush()
            return read_reply()

        def read_reply() -> str:
            lines = [stream.readline().decode().rstrip()]
            while lines[-1][3:4] == "-":
                lines.append(stream.readline().decode().rstrip())
            return lines[-1]

        assert read_reply().startswith("220")
        assert command("LHLO client.example.org").startswith("250")
        assert command("MAIL FROM:<customer@example.org>").startswith("250")
        rcpt_replies = [command(f"RCPT TO:<{r}>") for r in rcpts]
        accepted = sum(r.startswith("250") for r in rcpt_replies)
        assert command("DATA").startswith("354")
        body = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        body = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in body.split(b"\r\n"))
        stream.write(body.rstrip(b"\r\n") + b"\r\n.\r\n")
        stream.flush()
        data_replies = [read_reply() for _ in range(accepted)]
        command("QUIT")
    return rcpt_replies, data_replies


def test_lmtp_answers_once_per_recipient(gateway: GatewayThread) -> None:
    rcpts = [SUPPORT, "nobody@example.com", SALES]
    rcpt_replies, data_replies = lmtp_session(gateway.port("lmtp"), rcpts, wire(mail()))
    assert [r[:3] for r in rcpt_replies] == ["250", "550", "250"]
    assert len(data_replies) == 2
    assert all(r.startswith("250 2.0.0") for r in data_replies)
    gateway.idle()
    assert sorted(t["mailbox"] for t in gateway.tickets()) == [SALES, SUPPORT]


def test_lmtp_too_big_answers_once_per_recipient(gateway: GatewayThread) -> None:
    big = mail(body=("z" * 76 + "\n") * 16000)
    _, data_replies = lmtp_session(gateway.port("lmtp"), [SUPPORT, SALES], wire(big))
    assert [r[:9] for r in data_replies] == ["552 5.3.4", "552 5.3.4"]
    assert gateway.count(models.Inbound) == 0


def fail_inbound_writes(gateway: GatewayThread) -> None:
    """Make the database itself refuse inbound rows (a trigger), as a full disk would."""
    database = gateway.gateway.store.database  # type: ignore[union-attr]
    with gateway.db():
        if database.__class__.__name__.startswith("PooledSqlite"):
            database.execute_sql(
                "CREATE TRIGGER fail_inbound BEFORE INSERT ON inbound "
                "BEGIN SELECT RAISE(ABORT, 'simulated storage failure'); END"
            )
        else:
            database.execute_sql(
                "CREATE FUNCTION fail_inbound() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'simulated storage failure'; END $$ LANGUAGE plpgsql"
            )
            database.execute_sql(
                "CREATE TRIGGER fail_inbound BEFORE INSERT ON inbound "
                "FOR EACH ROW EXECUTE FUNCTION fail_inbound()"
            )


def heal_inbound_writes(gateway: GatewayThread) -> None:
    with gateway.db():
        gateway.gateway.store.database.execute_sql(  # type: ignore[union-attr]
            "DROP TRIGGER fail_inbound"
            + ("" if gateway.config.gateway.database.startswith("sqlite") else " ON inbound")
        )


def test_database_failure_answers_451_and_stores_nothing(gateway: GatewayThread) -> None:
    fail_inbound_writes(gateway)
    message = mail()
    with pytest.raises(smtplib.SMTPDataError) as refused, gateway.smtp() as client:
        client.sendmail("customer@example.org", [SUPPORT], wire(message))
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.3.0")
    assert gateway.count(models.RawMessage) == 0  # the raw bytes were rolled back too
    assert gateway.count(models.Inbound) == 0
    heal_inbound_writes(gateway)
    gateway.send(message)  # the sender's retry now succeeds
    assert len(gateway.tickets()) == 1


def test_lmtp_database_failure_answers_451_per_recipient(gateway: GatewayThread) -> None:
    fail_inbound_writes(gateway)
    _, data_replies = lmtp_session(gateway.port("lmtp"), [SUPPORT, SALES], wire(mail()))
    assert [r[:9] for r in data_replies] == ["451 4.3.0", "451 4.3.0"]


def test_duplicate_delivery_is_stored_once(gateway: GatewayThread) -> None:
    message = mail()
    gateway.send(message)
    # The same message again by another route: a relay prepended its own trace.
    rerouted = b"Received: from mx2.example.org by gw.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    gateway.send(rerouted + wire(message))
    gateway.send(message)
    assert gateway.count(models.Inbound) == 1
    [ticket] = gateway.tickets()
    assert len(ticket["messages"]) == 1


def test_same_message_id_with_other_content_is_not_a_duplicate(gateway: GatewayThread) -> None:
    first = mail(body="first\n")
    second = mail(body="second, edited\n")
    second.replace_header("Message-ID", str(first["Message-ID"]))
    gateway.send(first)
    gateway.send(second)
    assert gateway.count(models.Inbound) == 2


def test_one_message_to_two_mailboxes_opens_a_ticket_in_each(gateway: GatewayThread) -> None:
    gateway.send(mail(), rcpts=[SUPPORT, SALES])
    assert gateway.count(models.RawMessage) == 1  # the bytes are stored once
    assert sorted(t["mailbox"] for t in gateway.tickets()) == [SALES, SUPPORT]


def test_quarantined_message_keeps_its_250(gateway: GatewayThread) -> None:
    nested = EmailMessage()
    nested["From"] = "customer@example.org"
    nested["To"] = SUPPORT
    nested["Subject"] = "many parts"
    nested.set_content("body")
    for i in range(600):  # over the default cap of 500 MIME parts
        nested.add_attachment(
            b"x", maintype="application", subtype="octet-stream", filename=f"f{i}.bin"
        )
    refused = gateway.send(nested)
    assert refused == {}
    with gateway.db():
        row = models.Inbound.get()
        assert row.status == "quarantined"
        assert "parts" in (row.reason or "")
    assert gateway.tickets() == []


def test_stopping_says_421_to_idle_sessions(config_path: Path) -> None:
    with GatewayThread(config_path) as gateway:
        client = gateway.smtp()
        client.ehlo("client.example.org")
        gateway.call(gateway.gateway.stop())
        code, reply = client.noop()
        client.close()
    assert code == 421
    assert reply.startswith(b"4.3.2")


def test_processing_waits_while_mail_is_arriving(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a burst the senders waiting for their 250 go first: a stored message
    gets its ticket once no mail has come for QUIET_AFTER (here 3 s)."""
    monkeypatch.setattr(Intake, "QUIET_AFTER", 3.0)
    with gateway.smtp() as client:
        client.sendmail("customer@example.org", [SUPPORT], wire(mail()))
    time.sleep(1)
    assert gateway.count(models.Inbound) == 1
    assert gateway.tickets() == []  # stored, not processed yet
    gateway.idle()
    assert len(gateway.tickets()) == 1


def test_a_long_burst_does_not_hold_processing_back_for_ever(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message waits DEFER_AT_MOST at most (here 0.3 s) for the burst to end."""
    monkeypatch.setattr(Intake, "QUIET_AFTER", 3600.0)  # mail never stops arriving
    monkeypatch.setattr(process, "DEFER_AT_MOST", 0.3)
    gateway.send(mail())  # waits until it is processed
    assert len(gateway.tickets()) == 1


def test_a_session_that_only_holds_a_transaction_holds_nothing_back(
    gateway: GatewayThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stranger can say MAIL FROM and then nothing for minutes: that is not mail
    arriving, and processing must not wait for it (here it would wait 60 s)."""
    monkeypatch.setattr(process, "DEFER_AT_MOST", 60.0)
    with gateway.smtp() as stranger:
        stranger.ehlo()
        assert stranger.mail("stranger@example.net")[0] == 250
        time.sleep(Intake.QUIET_AFTER * 4)
        assert not gateway.gateway.processor.busy()
        gateway.send(mail())
        assert len(gateway.tickets()) == 1
        assert stranger.noop()[0] == 250  # still in its transaction
