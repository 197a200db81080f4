"""Forgetting and exporting a customer, on SQLite and PostgreSQL.

The data comes in the way it does in production: a Vietnamese customer
writes over SMTP with an invoice attached and a colleague in Cc, opens the
portal link of the acknowledgement, an agent answers from her mail client,
adds an internal note and changes the priority by a command, the colleague
answers too, and another customer writes about something else. Then the
operator forgets or exports the customer, as the CLI does it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway import models, privacy, queries
from gateway.db import transaction
from gateway.portal import access
from tests.helpers import SUPPORT, GatewayThread, mail, reply_to, write_config
from tests.portal_helpers import PORTAL, latest_code, link_of

HOA, HOA_NAME = "hoa.tran@example.vn", "Trần Thị Hoa"
DUC, DUC_NAME = "duc.pham@example.vn", "Phạm Văn Đức"
NAM, NAM_NAME = "nam.le@example.org", "Lê Văn Nam"
AGENT = "lan@team.example"
INVOICE = b"%PDF-1.4\nHoa don cho Tran Thi Hoa <hoa.tran@example.vn>\n%%EOF\n"
NOTE = "Khách đã gọi hai lần về máy in."


@pytest.fixture
def desk(tmp_path: Path, database_url: str) -> Iterator[GatewayThread]:
    """The gateway with its portal and one agent, Lan, on support@."""
    path = write_config(tmp_path, database_url, extra_gateway=PORTAL)
    head, support, sales = path.read_text().split("[[mailbox]]")
    support += f'\n[[mailbox.agent]]\nemail = "{AGENT}"\nname = "Lan"\n\n'
    path.write_text(head + "[[mailbox]]" + support + "[[mailbox]]" + sales)
    with GatewayThread(path) as running:
        yield running


# --- the story ------------------------------------------------------------------


def story(desk: GatewayThread) -> dict[str, Any]:
    """Everything a customer leaves behind; what the test needs to look at it again."""
    first = hoa_writes(desk)
    ack = delivered(desk, HOA)[0]
    agent_answers(desk, "#priority high\n\nChào chị Hoa, vui lòng khởi động lại máy in.")
    agent_answers(desk, f"#note\n{NOTE}")
    agent_answers(desk, "#priority urgent")  # commands only: no message, but a raw mail
    colleague = reply_to(
        first,
        f"Tôi xác nhận lỗi này.\n\n> Chào anh chị, tôi là {HOA_NAME}.\n",
        subject="Re: Máy in lỗi E42",
        sender=f"{DUC_NAME} <{DUC}>",
    )
    desk.send(colleague, sender=DUC)
    cookie = asyncio.run(open_portal(desk, link_of(ack)))
    desk.send(
        mail(subject="Xin báo giá mực in", sender=f"{NAM_NAME} <{NAM}>", body="Cần 10 hộp mực."),
        sender=NAM,
    )
    desk.settle()
    return {"first": first, "ack": ack, "token": link_of(ack).rsplit("/", 1)[1], "cookie": cookie}


def hoa_writes(desk: GatewayThread) -> EmailMessage:
    """Hoa's first mail: mixed-case address, an invoice, her colleague in Cc."""
    first = mail(
        subject="Máy in lỗi E42",
        sender=f"{HOA_NAME} <Hoa.Tran@Example.VN>",
        body=f"Chào anh chị, tôi là {HOA_NAME}.\nMáy in của tôi bị lỗi E42.\n",
        Cc=f"{DUC_NAME} <{DUC}>",
    )
    first.add_attachment(INVOICE, maintype="application", subtype="pdf", filename="hoá đơn.pdf")
    desk.send(first, sender="Hoa.Tran@Example.VN")
    desk.settle()
    return first


def delivered(desk: GatewayThread, to: str) -> list[EmailMessage]:
    desk.settle()
    return [m for m in desk.sent_mail() if str(m["Delivered-To"]) == to]


def agent_answers(desk: GatewayThread, body: str) -> None:
    """Lan hits Reply on her notification of the ticket, as Gmail does."""
    note = next(m for m in delivered(desk, AGENT) if m["Subject"] == "[#10000] Máy in lỗi E42")
    quoted = "\n".join("> " + line for line in text_of(note).splitlines())
    reply_key = note["Reply-To"].addresses[0].addr_spec
    answer = mail(
        subject="Re: " + str(note["Subject"]),
        sender=f"Lan <{AGENT}>",
        to=reply_key,
        body=f"{body}\n\nOn Wed, 25 Nov 2026, Example Support <{reply_key}> wrote:\n{quoted}\n",
        In_Reply_To=str(note["Message-ID"]),
    )
    desk.send(answer, rcpts=[reply_key], sender=AGENT)
    desk.settle()


def text_of(message: EmailMessage) -> str:
    return str(message.get_body(("plain",)).get_content())


async def open_portal(desk: GatewayThread, link: str) -> str:
    """Open the link, prove the address with the mailed code; the session cookie."""
    base = URL(f"http://127.0.0.1:{desk.port('portal')}")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
        async with http.get(link, allow_redirects=False) as response:
            assert response.headers["Location"] == "/ticket"
        async with http.get("/ticket") as response:
            page = await response.text()
        async with http.post("/code", data={"csrf": csrf_of(page)}) as response:
            page = await response.text()  # followed to /verify
        code = await asyncio.to_thread(latest_code, desk, HOA)
        form = {"csrf": csrf_of(page), "code": code}
        async with http.post("/verify", data=form, allow_redirects=False) as response:
            assert response.headers["Location"] == "/tickets/10000"
        return str(jar.filter_cookies(base)["gw_session"].value)


async def portal_status(desk: GatewayThread, path: str, cookies: dict[str, str]) -> int:
    base = URL(f"http://127.0.0.1:{desk.port('portal')}")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=base, cookie_jar=jar) as http:
        http.cookie_jar.update_cookies(cookies, base)
        async with http.get(path, allow_redirects=False) as response:
            return response.status


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return found.group(1)


# --- what an operator checks ------------------------------------------------------


def forget(desk: GatewayThread, address: str) -> privacy.Forgotten:
    """As the CLI does it: a connection, one transaction."""
    with desk.db(), transaction(models.database.obj):
        return privacy.forget(address, actor="operator@test")


def leftovers(*needles: str) -> list[str]:
    """Every column of every table that still holds one of ``needles``, any case."""
    wanted = [unicodedata.normalize("NFC", n).casefold() for n in needles]
    found = []
    for model in models.MODELS:
        fields = model._meta.sorted_fields
        for row in model.select(*fields).tuples():
            for field, value in zip(fields, row, strict=True):
                for text in readings(value):
                    hits = [n for n in wanted if n in unicodedata.normalize("NFC", text).casefold()]
                    if hits:
                        found.append(f"{model.__name__}.{field.name} #{row[0]}: {hits}")
    return found


def readings(value: object) -> list[str]:
    """A value as text every way it could hide a name: raw, and decoded as mail."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, bytes | memoryview):
        return []
    data = bytes(value)
    texts = [data.decode("utf-8", "replace"), data.decode("latin-1")]
    message = email.message_from_bytes(data, policy=email.policy.default)
    for part in message.walk():
        texts += [str(v) for v in part.values()]
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            texts.append(payload.decode("utf-8", "replace"))
    return texts


def figures() -> dict[str, Any]:
    """What reports are made of: tickets' numbers, states and times, and SLA clocks."""
    ticket = models.Ticket
    clocks = models.SlaClock
    return {
        "tickets": list(
            ticket.select(
                ticket.number,
                ticket.mailbox,
                ticket.status,
                ticket.priority,
                ticket.category,
                ticket.language,
                ticket.created_at,
                ticket.status_changed_at,
                ticket.first_responded_at,
                ticket.resolved_at,
                ticket.closed_at,
                ticket.rating,
            )
            .order_by(ticket.number)
            .tuples()
        ),
        "clocks": list(clocks.select().order_by(clocks.id).tuples()),
        "messages": list(
            models.Message.select(
                models.Message.id,
                models.Message.ticket,
                models.Message.direction,
                models.Message.author_role,
                models.Message.visibility,
                models.Message.created_at,
            )
            .order_by(models.Message.id)
            .tuples()
        ),
    }


def nams_data() -> dict[str, Any]:
    """Everything about the other customer, to prove it was not touched."""
    ticket = models.Ticket.get(models.Ticket.requester_email == NAM)
    inbound = models.Inbound.select().where(models.Inbound.mail_from == NAM)
    outbox = models.Outbox.select().where(models.Outbox.ticket == ticket).order_by(models.Outbox.id)
    return {
        "ticket": queries.ticket_detail(ticket.number),
        "raw": [(r.mail_from, r.peer, bytes(r.raw_message.data)) for r in inbound],
        "outbox": [(r.recipient, r.status, bytes(r.data)) for r in outbox],
    }


def customer_forgotten_events() -> list[dict[str, Any]]:
    query = models.Event.select().where(models.Event.kind == "customer_forgotten")
    return [{"ticket": e.ticket.number, **queries.event_view(e)} for e in query]


# --- forget -------------------------------------------------------------------------


def test_forget_erases_the_customer_everywhere_and_keeps_the_figures(
    desk: GatewayThread,
) -> None:
    seen = story(desk)
    session = {"gw_session": seen["cookie"]}
    assert asyncio.run(portal_status(desk, "/tickets/10000", session)) == 200
    with desk.db():
        assert leftovers(HOA, HOA_NAME), "the story left nothing to find: the scan is blind"
        before, nam = figures(), nams_data()

    done = forget(desk, "HOA.TRAN@example.vn")

    erased = privacy.placeholder(HOA)
    assert re.fullmatch(r"erased-[0-9a-f]{12}@invalid", erased)
    assert done.placeholder == erased
    assert (done.tickets, done.attachments, done.participants) == (1, 1, 1)
    assert done.messages == 4  # hers, the agent's answer and note, the colleague's
    assert done.raw_messages == 5  # and the agent's mail of commands only
    assert done.portal >= 3  # the link, her verified session, the code
    assert done.reply_keys >= 1 and done.outbox >= 3 and done.events >= 1
    with desk.db():
        assert leftovers(HOA, HOA_NAME, "Hoa.Tran@Example.VN") == []
        assert figures() == before
        assert nams_data() == nam
        ticket = models.Ticket.get(models.Ticket.number == 10000)
        assert (ticket.requester_email, ticket.requester_name, ticket.subject) == (erased, "", "")
        assert ticket.erased_at is not None
        assert {p.email for p in ticket.participants} == {DUC}  # the colleague stays
        assert models.Blob.select().where(models.Blob.sha256 == sha(INVOICE)).count() == 0
        assert access.valid_link(seen["token"]) is None
        [event] = customer_forgotten_events()
        assert (event["ticket"], event["actor"], event["detail"]) == (
            10000,
            "operator@test",
            {"subject": erased},
        )

    # Her portal session and link open nothing any more.
    assert asyncio.run(portal_status(desk, "/tickets/10000", session)) == 302
    assert asyncio.run(portal_status(desk, "/ticket", {"gw_link": seen["token"]})) == 410

    # Forgetting again changes nothing, and records nothing.
    assert forget(desk, HOA) == privacy.Forgotten(erased)
    with desk.db():
        assert len(customer_forgotten_events()) == 1

    # Her reply to the acknowledgement no longer joins the erased ticket.
    ack = seen["ack"]
    key = ack["Reply-To"].addresses[0].addr_spec
    again = reply_to(
        ack, "Máy in vẫn lỗi.", subject="Re: Máy in lỗi E42", sender=f"{HOA_NAME} <{HOA}>", to=key
    )
    desk.send(again, rcpts=[key], sender=HOA)
    with desk.db():
        old = models.Ticket.get(models.Ticket.number == 10000)
        assert old.messages.count() == 4
        new = models.Ticket.get(models.Ticket.requester_email == HOA)
        assert new.number == 10002 and new.messages.get().text.strip() == "Máy in vẫn lỗi."


def test_forget_a_copied_colleague_keeps_the_requesters_ticket(desk: GatewayThread) -> None:
    story(desk)
    with desk.db():
        hoas = models.Message.select().where(models.Message.author_email == HOA).get()
        hoas_text, hoas_raw = hoas.full_text, hoas.inbound.raw_message.id

    done = forget(desk, DUC)

    assert (done.tickets, done.participants) == (1, 1)
    with desk.db():
        ticket = models.Ticket.get(models.Ticket.number == 10000)
        assert ticket.requester_email == HOA and ticket.erased_at is None
        assert {p.email for p in ticket.participants} == {HOA}
        [his] = models.Message.select().where(
            models.Message.author_email == privacy.placeholder(DUC)
        )
        assert (his.text, his.full_text, his.author_name) == ("", "", "")
        assert models.Message.get_by_id(hoas.id).full_text == hoas_text
        assert models.Attachment.select().count() == 1  # Hoa's invoice stays
        assert models.Inbound.select().where(models.Inbound.mail_from == DUC).count() == 0
        # Only Hoa's own raw mail still names him, in its Cc: it is hers.
        assert {f.split(":")[0] for f in leftovers(DUC, DUC_NAME)} == {
            f"RawMessage.data #{hoas_raw}"
        }
        assert [e["ticket"] for e in customer_forgotten_events()] == [10000]


def test_forget_an_unknown_address_changes_nothing(desk: GatewayThread) -> None:
    desk.send(mail(sender=f"{NAM_NAME} <{NAM}>"), sender=NAM)
    desk.settle()
    with desk.db():
        before = nams_data()
    assert forget(desk, "nobody@example.net") == privacy.Forgotten(
        privacy.placeholder("nobody@example.net")
    )
    with desk.db():
        assert nams_data() == before
        assert customer_forgotten_events() == []


@pytest.mark.parametrize("address", ["", "   ", "no-at-sign", "two words@example.org"])
def test_forget_refuses_what_is_no_address(address: str) -> None:
    # "" would match every system message and every bounce (empty sender).
    with pytest.raises(ValueError, match="not an email address"):
        privacy.forget(address)


# --- export ---------------------------------------------------------------------------


def test_export_writes_her_data_and_attachments_inside_the_folder(
    desk: GatewayThread, tmp_path: Path
) -> None:
    story(desk)
    with desk.db():
        [invoice] = models.Attachment.select()
        # A row stored before file names were sanitized, or by a bug.
        models.Attachment.update(filename="../../etc/passwd").where(
            models.Attachment.id == invoice.id
        ).execute()
    folder = tmp_path / "export"

    with desk.db():
        path = privacy.export("Hoa.Tran@Example.VN", folder)

    assert path == folder / "customer-hoa.tran@example.vn.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["email"] == HOA and document["exported_at"].endswith("Z")
    [ticket] = document["tickets"]
    assert (ticket["number"], ticket["role"], ticket["subject"]) == (
        10000,
        "requester",
        "Máy in lỗi E42",
    )
    assert ticket["priority"] == "urgent" and ticket["created_at"].endswith("Z")
    texts = [m["text"] for m in ticket["messages"]]
    assert any(f"tôi là {HOA_NAME}" in t for t in texts)
    assert any("vui lòng khởi động lại" in t for t in texts)
    assert not any("gọi hai lần" in t for t in texts)  # the team's internal note
    assert "gọi hai lần" not in path.read_text(encoding="utf-8")
    [attached] = [a for m in ticket["messages"] for a in m["attachments"]]
    assert attached["filename"] == "../../etc/passwd"
    assert attached["path"] == f"attachments/10000/{ticket['messages'][0]['id']}-passwd"
    written = folder / attached["path"]
    assert written.resolve().is_relative_to(folder.resolve())
    assert written.read_bytes() == INVOICE and attached["sha256"] == sha(INVOICE)
    assert not (tmp_path / "etc").exists()
    assert {(m["mailbox"], m["status"]) for m in document["mail_received"]} == {
        (SUPPORT, "processed")
    }
    assert "ticket_created" in {m["event"] for m in document["mail_sent"]}
    assert {m["ticket"] for m in document["mail_sent"]} == {10000}
    assert document["portal"] == {"links": 2, "sessions": 1}  # the ack and the answer
    assert document["suppression"] is None


def test_export_of_the_colleague_shows_the_ticket_he_was_copied_on(
    desk: GatewayThread, tmp_path: Path
) -> None:
    story(desk)
    with desk.db():
        path = privacy.export(DUC, tmp_path)
    [ticket] = json.loads(path.read_text(encoding="utf-8"))["tickets"]
    assert (ticket["number"], ticket["role"]) == (10000, "participant")
    assert any(m["text"].startswith("Tôi xác nhận lỗi này.") for m in ticket["messages"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_names_and_addresses_match_only_as_whole_words() -> None:
    """Forgetting "An" (a common Vietnamese name) must not touch mail to Lan or "Thank"."""
    person = privacy._Person("an@example.vn", "erased-x@invalid", frozenset({"an"}))
    assert person.named_in("Chào An, đơn hàng đã tới.")
    assert person.named_in("Cc: an@example.vn")
    assert not person.named_in("Thank you, Lan <lan@example.vn>")
    assert not person.named_in("To: Hoa <hoa@example.vn>; banana@example.vn")
