"""Agents answer from their own mail client: end to end over SMTP, on SQLite and PostgreSQL.

The team: Lan and Minh (agents) and Boss (admin) answer support@example.com.
Customers and agents are played by smtplib; what each of them receives is
read from the gateway's maildir, as their mail client would show it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway import models
from tests.helpers import SUPPORT, GatewayThread, history, mail, write_config

LAN, MINH, BOSS = "lan@team.example", "minh@team.example", "boss@team.example"
CUSTOMER = "khach@example.vn"
TEAM = f"""
[[mailbox.agent]]
email = "{LAN}"
name = "Lan"

[[mailbox.agent]]
email = "{MINH}"
name = "Minh"

[[mailbox.agent]]
email = "{BOSS}"
name = "Boss"
role = "admin"
"""


def team_config(folder: Path, database_url: str, extra_gateway: str = "", team: str = TEAM) -> Path:
    path = write_config(folder, database_url, extra_gateway=extra_gateway)
    text = path.read_text()
    first, second = text.split("[[mailbox]]")[1:]
    first = first + 'categories = ["general", "billing", "technical"]\n' + team
    path.write_text(text.split("[[mailbox]]")[0] + "[[mailbox]]" + first + "[[mailbox]]" + second)
    return path


@pytest.fixture
def team(tmp_path: Path, database_url: str) -> Iterator[GatewayThread]:
    with GatewayThread(team_config(tmp_path, database_url)) as running:
        yield running


def inbox(gateway: GatewayThread, who: str) -> list[EmailMessage]:
    gateway.settle()
    return [m for m in gateway.sent_mail() if str(m["Delivered-To"]) == who]


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()


def sender_of(message: EmailMessage) -> tuple[str, str]:
    address = message["From"].addresses[0]
    return address.display_name, address.addr_spec


def key_address(message: EmailMessage) -> str:
    return message["Reply-To"].addresses[0].addr_spec


def gmail_reply(notification: EmailMessage, body: str, sender: str) -> EmailMessage:
    """What Gmail sends when an agent hits Reply on a notification."""
    quoted = "\n".join("> " + line for line in text_of(notification).splitlines())
    reply = mail(
        subject="Re: " + str(notification["Subject"]),
        sender=sender,
        to=key_address(notification),
        body=f"{body}\n\nOn Wed, 25 Nov 2026 at 10:15, Example Support "
        f"<{key_address(notification)}> wrote:\n{quoted}\n",
    )
    reply["In-Reply-To"] = reply["References"] = str(notification["Message-ID"])
    return reply


def outlook_reply(notification: EmailMessage, body: str, sender: str) -> EmailMessage:
    """What Outlook sends: the original below a header block, not quoted."""
    return mail(
        subject="RE: " + str(notification["Subject"]),
        sender=sender,
        to=key_address(notification),
        body=f"{body}\n\n________________________________\nFrom: Example Support "
        f"<{SUPPORT}>\nSent: Wednesday, November 25, 2026 10:15 AM\nTo: Lan "
        f"<{LAN}>\nSubject: {notification['Subject']}\n\n{text_of(notification)}",
    )


def open_ticket(gateway: GatewayThread, body: str = "Máy in của tôi bị lỗi E42.") -> None:
    gateway.send(
        mail(subject="Máy in lỗi", sender=f"Khách <{CUSTOMER}>", body=body), sender=CUSTOMER
    )


def agent_sends(gateway: GatewayThread, message: EmailMessage) -> None:
    gateway.send(message, rcpts=[str(message["To"])], sender=str(message["From"]))


def ticket(gateway: GatewayThread) -> dict:  # type: ignore[type-arg]
    return gateway.tickets()[0]


def test_agents_are_notified_of_a_new_ticket(team: GatewayThread) -> None:
    open_ticket(team)
    for agent in (LAN, MINH, BOSS):
        [note] = inbox(team, agent)
        assert str(note["Subject"]) == "[#10000] Máy in lỗi"
        assert "Máy in của tôi bị lỗi E42." in text_of(note)
        assert key_address(note).startswith("support+")
    assert len(inbox(team, CUSTOMER)) == 1  # the acknowledgement


@pytest.mark.parametrize("client", [gmail_reply, outlook_reply])
def test_agent_reply_reaches_the_customer_stripped_and_from_support(
    team: GatewayThread, client
) -> None:  # type: ignore[no-untyped-def]
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(
        team,
        client(
            note,
            "#priority high\n\nChào anh, vui lòng khởi động lại máy in.\n"
            "\n-- \nLan\nExample Support",
            LAN,
        ),
    )
    ack, answer = inbox(team, CUSTOMER)
    assert sender_of(answer) == ("Lan (Example Support)", SUPPORT)
    assert ack["Auto-Submitted"] == "auto-replied"
    assert text_of(answer).strip().startswith("Chào anh, vui lòng khởi động lại máy in.")
    raw = answer.as_string()
    assert LAN not in raw and "#priority" not in raw and "> " not in text_of(answer)
    assert "Auto-Submitted" not in answer  # a person wrote it
    assert answer["In-Reply-To"] == ack["In-Reply-To"]  # threads under the customer's mail
    state = ticket(team)
    assert (state["status"], state["priority"]) == ("waiting_on_customer", "high")
    reply = state["messages"][1]
    assert (reply["author"]["role"], reply["visibility"], reply["direction"]) == (
        "agent",
        "public",
        "outbound",
    )
    assert reply["text"] == "Chào anh, vui lòng khởi động lại máy in."
    [copy] = [m for m in inbox(team, MINH) if "Chào anh" in text_of(m)]
    assert "priority → high" in text_of(copy)
    assert not [m for m in inbox(team, LAN) if "Chào anh" in text_of(m)]  # no copy to herself


def test_resolve_sends_and_resolves(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "#resolve\nĐã thay mực, máy in chạy tốt rồi.", LAN))
    answer = inbox(team, CUSTOMER)[-1]
    assert "Đã thay mực" in text_of(answer)
    assert "#resolve" not in text_of(answer)
    assert ticket(team)["status"] == "resolved"


def test_commands_only_change_the_ticket_and_send_nothing(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(
        team,
        gmail_reply(note, "#status open\n#priority urgent\n#category billing\n#assign me", LAN),
    )
    state = ticket(team)
    assert (state["status"], state["priority"], state["category"]) == ("open", "urgent", "billing")
    assert len(inbox(team, CUSTOMER)) == 1  # only the acknowledgement
    assert len(state["messages"]) == 1
    with team.db():
        assert models.Ticket.get().assignee == LAN
    kinds = [e["kind"] for e in history(state)]
    assert {"status_changed", "priority_changed", "category_changed", "assignee_changed"} <= set(
        kinds
    )


def test_note_stays_internal(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "#note\nKhách này đã gọi điện hai lần.", LAN))
    assert len(inbox(team, CUSTOMER)) == 1
    message = ticket(team)["messages"][1]
    assert (message["visibility"], message["author"]["role"]) == ("internal", "agent")
    assert any("hai lần" in text_of(m) for m in inbox(team, MINH))
    assert ticket(team)["status"] == "new"  # a note answers nobody


def test_unknown_command_is_explained_to_the_agent_only(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "#priorty high\nĐây là câu trả lời.", LAN))
    assert len(inbox(team, CUSTOMER)) == 1
    rejected = inbox(team, LAN)[-1]
    assert "#priorty high" in text_of(rejected)
    state = ticket(team)
    assert len(state["messages"]) == 1
    assert state["priority"] == "medium"
    assert history(state, "agent_commands_rejected")


def test_only_an_admin_assigns_to_someone_else(team: GatewayThread) -> None:
    open_ticket(team)
    lan_note = inbox(team, LAN)[0]
    agent_sends(team, gmail_reply(lan_note, f"#assign {MINH}", LAN))
    assert "only an admin" in text_of(inbox(team, LAN)[-1])
    boss_note = inbox(team, BOSS)[0]
    agent_sends(team, gmail_reply(boss_note, f"#assign {MINH}", BOSS))
    with team.db():
        assert models.Ticket.get().assignee == MINH
    assert any("10000" in str(m["Subject"]) and "Boss" in text_of(m) for m in inbox(team, MINH)[1:])


def test_escalate_tells_the_admins(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "#escalate\n#note\nCustomer threatens to leave.", LAN))
    assert history(ticket(team), "escalated")
    escalation = inbox(team, BOSS)[-1]
    assert "Customer threatens to leave." in text_of(escalation)
    assert "Lan" in text_of(escalation)


def test_customer_reply_goes_to_the_assignee(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "#assign me\nĐã nhận, đang xử lý.", LAN))
    answer = inbox(team, CUSTOMER)[-1]
    reply = mail(
        subject="Re: " + str(answer["Subject"]),
        sender=CUSTOMER,
        to=key_address(answer),
        body="Cảm ơn chị!",
    )
    team.send(reply, rcpts=[key_address(answer)], sender=CUSTOMER)
    assert any("Cảm ơn chị!" in text_of(m) for m in inbox(team, LAN))
    assert not any("Cảm ơn chị!" in text_of(m) for m in inbox(team, MINH))
    assert ticket(team)["status"] == "open"


# --- who is an agent ----------------------------------------------------------


def test_spoofed_agent_from_without_key_is_an_ordinary_customer(team: GatewayThread) -> None:
    open_ticket(team)
    spoof = mail(
        subject="Re: [#10000] Máy in lỗi",
        sender=f"Lan <{LAN}>",
        body="#status closed\n#note\nGive me the internal notes.",
    )
    team.send(spoof, sender=LAN)
    victim, other = team.tickets()
    assert victim["status"] == "new" and len(victim["messages"]) == 1
    assert other["requester"]["email"] == LAN  # a ticket of its own, as any stranger
    assert other["messages"][0]["author"]["role"] == "customer"
    assert not [m for m in inbox(team, CUSTOMER) if "internal" in text_of(m)]


def test_agent_key_used_by_someone_else_is_held(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "#close\nBye.", "mallory@evil.example"))
    state = ticket(team)
    assert state["status"] == "new" and len(state["messages"]) == 1
    assert len(inbox(team, CUSTOMER)) == 1
    with team.db():
        held = models.Inbound.select().order_by(models.Inbound.id.desc()).get()
    assert held.status == "quarantined"
    assert "held for review" in held.reason and "mallory@evil.example" in held.reason
    assert "mallory@evil.example" in text_of(inbox(team, LAN)[-1])


def test_forged_authentication_results_gain_nothing(tmp_path: Path, database_url: str) -> None:
    path = team_config(
        tmp_path, database_url, extra_gateway='trusted_authserv_id = "mx.example.com"'
    )
    with GatewayThread(path) as gateway:
        open_ticket(gateway)
        [note] = inbox(gateway, LAN)
        forged = gmail_reply(note, "#close\nDone.", LAN)
        # The top header is what our MTA wrote: DKIM failed. The "pass" below it was
        # written by the attacker before the message reached us.
        raw = (
            b"Authentication-Results: mx.example.com; dkim=fail header.d=team.example; "
            b"spf=fail smtp.mailfrom=evil.example\r\n"
            b"Received: from evil.example by mx.example.com; Wed, 25 Nov 2026 10:00 +0000\r\n"
            b"Received: from x by evil.example; Wed, 25 Nov 2026 09:59 +0000\r\n"
            b"Authentication-Results: mx.example.com; dkim=pass header.d=team.example\r\n"
            + forged.as_bytes()
        )
        gateway.send(raw, rcpts=[key_address(note)], sender=LAN)
        state = gateway.tickets()[0]
        assert state["status"] == "new" and len(state["messages"]) == 1
        genuine = gmail_reply(note, "#close\nDone.", LAN)
        signed = (
            b"Authentication-Results: mx.example.com; dkim=pass header.d=team.example "
            b"header.i=@team.example; spf=pass smtp.mailfrom=team.example\r\n" + genuine.as_bytes()
        )
        gateway.send(signed, rcpts=[key_address(note)], sender=LAN)
        assert gateway.tickets()[0]["status"] == "closed"


def test_an_agents_out_of_office_is_not_an_answer(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    away = gmail_reply(note, "I am on leave until Monday.", LAN)
    away["Auto-Submitted"] = "auto-replied"
    agent_sends(team, away)
    assert len(inbox(team, CUSTOMER)) == 1
    assert len(ticket(team)["messages"]) == 1


# --- on behalf ----------------------------------------------------------------


def personal(gateway: GatewayThread, agent: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "agents",
            "address",
            agent,
            "--config",
            str(gateway.config.path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_on_behalf_opens_a_ticket_for_the_customer(team: GatewayThread) -> None:
    address = personal(team, LAN)
    assert address.startswith("support+agent-") and address.endswith("@example.com")
    order = mail(
        subject="Đơn hàng #A-77 của anh",
        sender=f"Lan <{LAN}>",
        to=address,
        body=f"#on-behalf {CUSTOMER}\n#priority high\nChào anh, đơn hàng đã được gửi lại hôm nay.",
    )
    team.send(order, rcpts=[address], sender=LAN)
    state = ticket(team)
    assert state["requester"]["email"] == CUSTOMER
    assert state["priority"] == "high" and state["status"] == "waiting_on_customer"
    [received] = inbox(team, CUSTOMER)
    assert sender_of(received) == ("Lan (Example Support)", SUPPORT)
    assert text_of(received).strip().startswith("Chào anh, đơn hàng đã được gửi lại hôm nay.")
    assert "#on-behalf" not in received.as_string()


def test_on_behalf_to_the_plain_address_writes_to_nobody(team: GatewayThread) -> None:
    team.send(
        mail(subject="x", sender=f"Lan <{LAN}>", body=f"#on-behalf {CUSTOMER}\nYou owe us money."),
        sender=LAN,
    )
    assert inbox(team, CUSTOMER) == []
    assert ticket(team)["requester"]["email"] == LAN


def test_personal_address_from_someone_else_is_held(team: GatewayThread) -> None:
    address = personal(team, LAN)
    team.send(
        mail(sender="mallory@evil.example", to=address, body=f"#on-behalf {CUSTOMER}\nPay here."),
        rcpts=[address],
        sender="mallory@evil.example",
    )
    assert inbox(team, CUSTOMER) == []
    assert team.tickets() == []
    with team.db():
        held = models.Inbound.select().order_by(models.Inbound.id.desc()).get()
    assert held.status == "quarantined"
    assert held.reason.startswith("held for review: sent from mallory@evil.example")
    assert "mallory@evil.example" in text_of(inbox(team, LAN)[-1])  # Lan is told


def test_revoked_personal_address_stops_working(team: GatewayThread) -> None:
    old = personal(team, LAN)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "agents",
            "revoke-address",
            LAN,
            "--config",
            str(team.config.path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert old not in done.stdout
    team.send(
        mail(sender=LAN, to=old, body=f"#on-behalf {CUSTOMER}\nHello."), rcpts=[old], sender=LAN
    )
    assert inbox(team, CUSTOMER) == []


# --- the roster ---------------------------------------------------------------


def test_reload_records_roster_changes_and_takes_effect(tmp_path: Path, database_url: str) -> None:
    path = team_config(tmp_path, database_url)
    with GatewayThread(path) as gateway:
        text = path.read_text()
        changed = text.replace(
            f'email = "{MINH}"\nname = "Minh"\n',
            f'email = "{MINH}"\nname = "Minh"\nrole = "admin"\n',
        )
        changed = changed.replace(
            f'[[mailbox.agent]]\nemail = "{BOSS}"\nname = "Boss"\nrole = "admin"\n',
            '[[mailbox.agent]]\nemail = "new@team.example"\nname = "Mai"\n',
        )
        path.write_text(changed)
        assert gateway.call(gateway.gateway.reload()) is True
        open_ticket(gateway)
        assert inbox(gateway, "new@team.example")
        assert not inbox(gateway, BOSS)
        with gateway.db():
            events = [
                (e.kind, json.loads(e.detail))
                for e in models.Event.select().where(models.Event.kind.startswith("agent_"))
            ]
        kinds = [k for k, _ in events]
        assert kinds.count("agent_added") == 4  # three at start, one on reload
        assert ("agent_removed", {"email": BOSS, "mailbox": SUPPORT}) in events
        assert (
            "agent_role_changed",
            {"email": MINH, "mailbox": SUPPORT, "new": "admin", "old": "agent"},
        ) in events
        path.write_text(changed.replace('name = "Mai"', 'name = "Mai"\nrole = "boss"'))
        assert gateway.call(gateway.gateway.reload()) is False  # refused, old one kept
        assert gateway.gateway.config.mailboxes[0].agent("new@team.example") is not None


def test_sighup_through_the_cli(tmp_path: Path, database_url: str) -> None:
    """`ticket-gateway reload` signals the daemon named in its pid file."""
    path = team_config(tmp_path, database_url, team="")
    text = path.read_text().replace('smtp_listen = "127.0.0.1:0"', 'smtp_listen = ""')
    path.write_text(text.replace('lmtp_listen = "127.0.0.1:0"', 'lmtp_listen = ""'))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid_file = tmp_path / "var" / "ticket-gateway.pid"
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        first, second = path.read_text().split("[[mailbox]]")[1:]
        path.write_text(
            path.read_text().split("[[mailbox]]")[0]
            + "[[mailbox]]"
            + first
            + TEAM
            + "[[mailbox]]"
            + second
        )
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "reload", "--config", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        listing: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(listing) < 3:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "agents",
                    "list",
                    "--json",
                    "--config",
                    str(path),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            listing = json.loads(done.stdout)
            time.sleep(0.1)
        assert {r["email"] for r in listing} == {LAN, MINH, BOSS}
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0
    assert "3 roster change(s)" in err


def test_attachments_go_along_to_the_customer(team: GatewayThread) -> None:
    open_ticket(team)
    [note] = inbox(team, LAN)
    answer = gmail_reply(note, "Hướng dẫn đính kèm.", LAN)
    answer.add_attachment(
        b"%PDF-1.4 guide", maintype="application", subtype="pdf", filename="hướng dẫn.pdf"
    )
    agent_sends(team, answer)
    received = inbox(team, CUSTOMER)[-1]
    [attached] = list(received.iter_attachments())
    assert attached.get_filename() == "hướng dẫn.pdf"
    assert attached.get_content() == b"%PDF-1.4 guide"
    assert "1" in text_of(received)  # "1 attachment"
    stored = ticket(team)["messages"][1]["attachments"]
    assert [a["filename"] for a in stored] == ["hướng dẫn.pdf"]


def test_a_reply_still_holding_the_notification_is_sent_back(team: GatewayThread) -> None:
    """Bottom-posting keeps the quote; the notification's private addresses must not leak."""
    open_ticket(team)
    [note] = inbox(team, LAN)
    quoted = "\n".join("> " + line for line in text_of(note).splitlines())
    bottom = mail(
        subject="Re: " + str(note["Subject"]),
        sender=LAN,
        to=key_address(note),
        body=f"{quoted}\n\nPlease restart it.\n",
    )
    agent_sends(team, bottom)
    assert len(inbox(team, CUSTOMER)) == 1  # only the acknowledgement
    assert "delete the quoted part" in text_of(inbox(team, LAN)[-1])
    assert len(ticket(team)["messages"]) == 1


def test_an_unwritable_cc_does_not_block_the_answer(team: GatewayThread) -> None:
    team.send(
        mail(subject="Máy in lỗi", sender=f"Khách <{CUSTOMER}>", Cc="a..b@example.org"),
        sender=CUSTOMER,
    )
    [note] = inbox(team, LAN)
    agent_sends(team, gmail_reply(note, "Đã sửa xong.", LAN))
    assert "Đã sửa xong." in text_of(inbox(team, CUSTOMER)[-1])
    held = history(ticket(team), "mail_held_back")
    assert any(e["detail"]["recipient"] == "a..b@example.org" for e in held)
