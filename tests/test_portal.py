"""The guest portal over real HTTP: links, codes, sessions, pages, and what they refuse.

The gateway runs with its portal on a free port; a guest is an aiohttp client
with its own cookie jar, reading the codes and links from the maildir where
the gateway delivers its mail.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import sys
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway import models
from tests.helpers import GatewayThread, mail, write_config
from tests.portal_helpers import CUSTOMER, PORTAL, customer_ticket, latest_code


@pytest.fixture
def portal(tmp_path: Path, database_url: str) -> Iterator[GatewayThread]:
    with GatewayThread(write_config(tmp_path, database_url, extra_gateway=PORTAL)) as running:
        yield running


def base(gateway: GatewayThread) -> str:
    return f"http://127.0.0.1:{gateway.port('portal')}"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


class Guest:
    """A browser without JavaScript: follows no redirects on its own, keeps cookies."""

    def __init__(self, gateway: GatewayThread) -> None:
        self.gateway = gateway
        self.base = base(gateway)
        self.jar = aiohttp.CookieJar(unsafe=True)

    async def __aenter__(self) -> Guest:
        self.http = aiohttp.ClientSession(cookie_jar=self.jar)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.close()

    def cookie(self, name: str) -> str:
        return str(self.jar.filter_cookies(URL(self.base))[name].value)

    async def get(self, path: str, **kw: Any) -> tuple[int, str, Any]:
        async with self.http.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r.headers

    async def post(self, path: str, data: Any, **kw: Any) -> tuple[int, str, Any]:
        async with self.http.post(self.base + path, data=data, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r.headers

    async def verify(self, link: str) -> str:
        """Open the link, ask for a code, enter it: the ticket page's path."""
        status, _, headers = await self.get(link)
        assert (status, headers["Location"]) == (303, "/ticket")
        _, page, _ = await self.get("/ticket")
        status, _, headers = await self.post("/code", {"csrf": csrf_of(page)})
        assert status == 303, page
        _, page, _ = await self.get("/verify")
        code = await asyncio.to_thread(latest_code, self.gateway)
        status, _, headers = await self.post("/verify", {"csrf": csrf_of(page), "code": code})
        assert status == 303
        return str(headers["Location"])


def set_cookie(headers: Any, name: str) -> Any:
    """The Set-Cookie for ``name`` among a response's cookies."""
    for raw in headers.getall("Set-Cookie"):
        parsed = SimpleCookie(raw)
        if name in parsed:
            return parsed[name]
    raise AssertionError(f"no Set-Cookie for {name}")


def age_codes(gateway: GatewayThread, seconds: int) -> None:
    """Let time pass for the codes (portable: the arithmetic is done here, not in SQL)."""
    with gateway.db():
        for row in list(models.GuestCode.select()):
            row.created_at -= dt.timedelta(seconds=seconds)
            row.save()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_whole_journey_over_http(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def journey() -> None:
        async with Guest(portal) as guest:
            status, _, headers = await guest.get(link)
            assert (status, headers["Location"]) == (303, "/ticket")  # token out of the URL
            assert headers["Referrer-Policy"] == "no-referrer"
            status, page, headers = await guest.get("/ticket")
            assert status == 200
            assert "k***@example.vn" in page
            assert 'lang="vi"' in page  # the language the customer wrote in
            assert "E42" not in page  # nothing of the ticket before the code
            assert "script-src" not in headers["Content-Security-Policy"]
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            before = guest.cookie("gw_session")
            location = await guest.verify(link)
            assert location == "/tickets/10000"
            after = guest.cookie("gw_session")
            assert before != after  # rotated at verification
            status, page, _ = await guest.get(location)
            assert status == 200
            assert "Máy in lỗi" in page and "Máy in của tôi bị lỗi E42." in page
            status, page, _ = await guest.get("/tickets")
            assert "/tickets/10000" in page
            status, _, headers = await guest.post(
                "/tickets/10000/reply", {"csrf": csrf_of(page), "text": "Tôi đã thử lại."}
            )
            assert (status, headers["Location"]) == (303, "/tickets/10000?sent=1")

    run(journey())
    [ticket] = portal.tickets()
    assert [m["text"] for m in ticket["messages"]][-1] == "Tôi đã thử lại."
    assert ticket["messages"][-1]["author"]["email"] == CUSTOMER


def test_a_link_alone_shows_nothing_and_unknown_links_look_the_same(portal: GatewayThread) -> None:
    customer_ticket(portal)

    async def probe() -> None:
        async with Guest(portal) as guest:
            status, _, headers = await guest.get("/t/not-a-real-token")
            assert (status, headers["Location"]) == (303, "/ticket")
            status, page, _ = await guest.get("/ticket")
            assert status == 410
            assert "/link" in page and "Traceback" not in page

    run(probe())


def test_wrong_codes_lock_after_five_tries(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def attack() -> None:
        async with Guest(portal) as guest:
            await guest.get(link)
            _, page, _ = await guest.get("/ticket")
            await guest.post("/code", {"csrf": csrf_of(page)})
            _, page, _ = await guest.get("/verify")
            code = await asyncio.to_thread(latest_code, portal)
            wrong = f"{(int(code) + 1) % 10**6:06d}"
            statuses = []
            for _ in range(5):
                status, page, _ = await guest.post(
                    "/verify", {"csrf": csrf_of(page), "code": wrong}
                )
                statuses.append(status)
            assert statuses == [400] * 5
            status, page, _ = await guest.post("/verify", {"csrf": csrf_of(page), "code": code})
            assert status == 400  # the sixth try fails even with the right code
            status, _, _ = await guest.get("/tickets/10000")
            assert status == 302

    run(attack())


def test_codes_are_single_use_and_expire(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def scenario() -> None:
        async with Guest(portal) as first:
            await first.verify(link)
        code = await asyncio.to_thread(latest_code, portal)
        async with Guest(portal) as second:
            await second.get(link)
            _, page, _ = await second.get("/ticket")
            # The first browser's code is bound to its session and used: no good here.
            age_codes(portal, 120)
            await second.post("/code", {"csrf": csrf_of(page)})
            _, page, _ = await second.get("/verify")
            status, _, _ = await second.post("/verify", {"csrf": csrf_of(page), "code": code})
            assert status == 400
            with portal.db():
                models.GuestCode.update(expires_at=dt.datetime(2000, 1, 1)).execute()
            fresh = await asyncio.to_thread(latest_code, portal)
            status, page, _ = await second.post("/verify", {"csrf": csrf_of(page), "code": fresh})
            assert status == 400
            assert "expired" in page.lower() or "hết hạn" in page.lower()

    run(scenario())


def test_code_resend_limits(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def scenario() -> None:
        async with Guest(portal) as guest:
            await guest.get(link)
            _, page, _ = await guest.get("/ticket")
            csrf = csrf_of(page)
            assert (await guest.post("/code", {"csrf": csrf}))[0] == 303
            assert (await guest.post("/code", {"csrf": csrf}))[0] == 429  # within a minute
            for _ in range(4):
                age_codes(portal, 61)  # a minute passes
                assert (await guest.post("/code", {"csrf": csrf}))[0] == 303
            age_codes(portal, 61)
            assert (await guest.post("/code", {"csrf": csrf}))[0] == 429  # 5 per hour

    run(scenario())
    with portal.db():
        assert models.GuestCode.select().count() == 5
    portal.settle()
    codes = [
        m
        for m in portal.sent_mail()
        if "123456" not in m.as_string() and str(m["Delivered-To"]) == CUSTOMER
    ]
    assert len(codes) == 1 + 5  # the acknowledgement and five codes


def test_cookie_attributes(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def scenario() -> None:
        async with Guest(portal) as guest:
            _, _, headers = await guest.get(link)
            cookie = set_cookie(headers, "gw_link")
            assert cookie["httponly"] and cookie["samesite"] == "Lax"
            _, _, headers = await guest.get("/ticket")
            session = set_cookie(headers, "gw_session")
            assert session["httponly"] and session["samesite"] == "Lax"
            assert session["path"] == "/"

    run(scenario())


def test_https_portal_uses_a_host_prefixed_secure_cookie(tmp_path: Path, database_url: str) -> None:
    extra = PORTAL.replace("http://portal.example", "https://portal.example")
    with GatewayThread(write_config(tmp_path, database_url, extra_gateway=extra)) as gateway:
        gateway.send(mail(sender=CUSTOMER), sender=CUSTOMER)
        [ack] = gateway.outbound(1)
        token = re.search(
            r"https://portal\.example(/t/[A-Za-z0-9_-]+)", ack.get_body(("plain",)).get_content()
        )
        assert token

        async def scenario() -> None:
            async with Guest(gateway) as guest:
                await guest.get(token.group(1))
                _, _, headers = await guest.get("/ticket", cookies={"gw_link": token.group(1)[3:]})
                cookie = set_cookie(headers, "__Host-gw_session")
                assert cookie["secure"] and cookie["httponly"] and cookie["path"] == "/"

        run(scenario())


def test_csrf_is_required_and_get_changes_nothing(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def scenario() -> None:
        async with Guest(portal) as guest:
            await guest.get(link)
            await guest.get("/ticket")
            status, page, _ = await guest.post("/code", {"csrf": "forged"})
            assert status == 403 and "Traceback" not in page
            status, _, _ = await guest.post("/code", {})
            assert status == 403
            status, _, _ = await guest.get("/code")  # not a way to send codes
            assert status == 405
        location = None
        async with Guest(portal) as guest:
            location = await guest.verify(link)
            status, _, _ = await guest.get("/tickets/10000/close")
            assert status == 405
            status, _, _ = await guest.post("/tickets/10000/reply", {"text": "no token"})
            assert status == 403
        assert location == "/tickets/10000"

    run(scenario())
    with portal.db():
        assert models.GuestCode.select().count() == 1  # only the verify flow's code
    [ticket] = portal.tickets()
    assert len(ticket["messages"]) == 1 and ticket["status"] == "new"


def test_other_peoples_and_missing_tickets_look_the_same(portal: GatewayThread) -> None:
    link = customer_ticket(portal)
    portal.send(mail(subject="Secret", sender="other@example.org"), sender="other@example.org")

    async def scenario() -> None:
        async with Guest(portal) as guest:
            await guest.verify(link)
            other = await guest.get("/tickets/10001")
            missing = await guest.get("/tickets/99999")
            assert other[0] == missing[0] == 404
            # The same page, but for the address it was asked at (language links).
            assert other[1].replace("10001", "N") == missing[1].replace("99999", "N")
            assert "Secret" not in other[1]
            files = await guest.get("/tickets/10001/files/1")
            assert files[0] == 404

    run(scenario())


def test_link_request_answers_the_same_and_mails_only_the_owner(portal: GatewayThread) -> None:
    customer_ticket(portal)

    async def ask(number: str, email: str) -> tuple[int, str]:
        async with Guest(portal) as guest:
            _, page, _ = await guest.get("/link")
            status, page, _ = await guest.post(
                "/link", {"csrf": csrf_of(page), "number": number, "email": email}
            )
            return status, re.sub(r'name="csrf" value="[^"]+"', "", page)

    answers = [
        run(ask(n, e))
        for n, e in (("10000", CUSTOMER), ("10000", "x@evil.example"), ("99999", CUSTOMER))
    ]
    assert answers[0] == answers[1] == answers[2]
    portal.settle()
    links = [m for m in portal.sent_mail() if "/t/" in m.as_string()]
    assert [str(m["Delivered-To"]) for m in links] == [CUSTOMER, CUSTOMER]  # ack + new link


def test_internal_notes_and_agent_addresses_never_show(tmp_path: Path, database_url: str) -> None:
    team = '\n[[mailbox.agent]]\nemail = "lan@team.example"\nname = "Lan"\n'
    path = write_config(tmp_path, database_url, extra_gateway=PORTAL)
    text = path.read_text()
    head, first, second = text.split("[[mailbox]]")
    path.write_text(head + "[[mailbox]]" + first + team + "[[mailbox]]" + second)
    with GatewayThread(path) as gateway:
        link = customer_ticket(gateway)
        gateway.settle()
        note = next(m for m in gateway.sent_mail() if str(m["Delivered-To"]) == "lan@team.example")
        key = note["Reply-To"].addresses[0].addr_spec
        for body in ("#note\nCustomer is a VIP, do not refund.", "Chào anh, đã sửa xong."):
            reply = mail(subject="Re: x", sender="Lan <lan@team.example>", to=key, body=body)
            gateway.send(reply, rcpts=[key], sender="lan@team.example")

        async def scenario() -> str:
            async with Guest(gateway) as guest:
                location = await guest.verify(link)
                return (await guest.get(location))[1]

        page = run(scenario())
    assert "Chào anh, đã sửa xong." in page
    assert "VIP" not in page
    assert "lan@team.example" not in page
    assert "Lan" in page


def test_script_in_a_ticket_stays_inert_text(portal: GatewayThread) -> None:
    link = customer_ticket(portal, body='<script>alert("x")</script><img src=x onerror=alert(1)>')

    async def scenario() -> str:
        async with Guest(portal) as guest:
            return (await guest.get(await guest.verify(link)))[1]

    page = run(scenario())
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in page


def test_reply_with_attachment_and_download_headers(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def scenario() -> None:
        async with Guest(portal) as guest:
            location = await guest.verify(link)
            _, page, _ = await guest.get(location)
            form = aiohttp.FormData()
            form.add_field("csrf", csrf_of(page))
            form.add_field("text", "Ảnh chụp màn hình.")
            form.add_field(
                "files",
                b"<html><script>alert(1)</script></html>",
                filename="../../etc/ảnh.html",
                content_type="text/html",
            )
            status, _, _ = await guest.post(location + "/reply", form)
            assert status == 303
            _, page, _ = await guest.get(location)
            found = re.search(r'href="(/tickets/10000/files/\d+)"', page)
            assert found
            status, body, headers = await guest.get(found.group(1))
            assert status == 200 and "alert(1)" in body
            assert headers["Content-Disposition"].startswith("attachment;")
            assert (
                "ảnh.html" in headers["Content-Disposition"].encode().decode()
                or "%E1%BA%A3nh.html" in headers["Content-Disposition"]
            )
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert "sandbox" in headers["Content-Security-Policy"]

    run(scenario())
    [ticket] = portal.tickets()
    assert ticket["messages"][-1]["attachments"][0]["filename"] == "ảnh.html"


def test_close_once_resolved(portal: GatewayThread) -> None:
    link = customer_ticket(portal)
    with portal.db():
        from gateway import tickets

        tickets.set_status(
            models.Ticket.get(), "resolved", mailbox=portal.config.mailboxes[0], actor="test"
        )

    async def scenario() -> None:
        async with Guest(portal) as guest:
            location = await guest.verify(link)
            _, page, _ = await guest.get(location)
            assert "/tickets/10000/close" in page
            status, _, headers = await guest.post("/tickets/10000/close", {"csrf": csrf_of(page)})
            assert (status, headers["Location"]) == (303, "/tickets/10000?closed=1")

    run(scenario())
    assert portal.tickets()[0]["status"] == "closed"


def test_new_request_is_created_only_after_verification(portal: GatewayThread) -> None:
    async def scenario() -> str:
        async with Guest(portal) as guest:
            _, page, _ = await guest.get("/new?lang=vi")
            assert 'lang="vi"' in page
            form = {
                "csrf": csrf_of(page),
                "name": "Trần Minh",
                "email": "minh@example.vn",
                "category": "general",
                "priority": "high",
                "subject": "Không đăng nhập được\r\nBcc: victim@example.org",
                "text": "Tôi quên mật khẩu.",
            }
            status, _, headers = await guest.post("/new", form)
            assert (status, headers["Location"]) == (303, "/verify?sent=1")
            assert portal.tickets() == []  # nothing yet
            _, page, _ = await guest.get("/verify")
            code = await asyncio.to_thread(latest_code, portal, "minh@example.vn")
            status, _, headers = await guest.post("/verify", {"csrf": csrf_of(page), "code": code})
            assert status == 303
            return str(headers["Location"])

    location = run(scenario())
    assert location == "/tickets/10000?created=1"
    [ticket] = portal.tickets()
    assert ticket["requester"] == {"email": "minh@example.vn", "name": "Trần Minh"}
    assert ticket["priority"] == "high"
    assert ticket["subject"] == "Không đăng nhập được Bcc: victim@example.org"
    portal.settle()
    assert not [m for m in portal.sent_mail() if "victim" in str(m["Delivered-To"])]


def test_outside_headers_cannot_pick_the_priority(portal: GatewayThread) -> None:
    message = mail(sender=CUSTOMER)
    message["X-Gateway-Portal-Priority"] = "urgent"
    portal.send(message, sender=CUSTOMER)
    assert portal.tickets()[0]["priority"] == "medium"


def test_friendly_pages(portal: GatewayThread) -> None:
    async def scenario() -> None:
        async with Guest(portal) as guest:
            for path, expected in (
                ("/", 200),
                ("/nowhere", 404),
                ("/tickets", 302),
                ("/new?lang=fa", 200),
                ("/link", 200),
            ):
                status, page, _ = await guest.get(path)
                assert status == expected, path
                assert "Traceback" not in page
                if status == 200:
                    assert "<form" in page or "href" in page
            _, page, _ = await guest.get("/new?lang=fa")
            assert 'dir="rtl"' in page

    run(scenario())


def test_expired_and_revoked_links_open_nothing(portal: GatewayThread) -> None:
    link = customer_ticket(portal)
    with portal.db():
        models.GuestLink.update(expires_at=dt.datetime(2000, 1, 1)).execute()

    async def gate() -> int:
        async with Guest(portal) as guest:
            await guest.get(link)
            return (await guest.get("/ticket"))[0]

    assert run(gate()) == 410
    with portal.db():
        models.GuestLink.update(expires_at=dt.datetime(2100, 1, 1)).execute()
    assert run(gate()) == 200
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "links",
            "revoke",
            "10000",
            "--config",
            str(portal.config.path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "revoked 1 link(s)" in done.stdout
    assert run(gate()) == 410


def test_my_tickets_filter_by_status_and_date(portal: GatewayThread) -> None:
    link = customer_ticket(portal)
    portal.send(mail(subject="Second question", sender=CUSTOMER), sender=CUSTOMER)
    with portal.db():
        from gateway import tickets

        tickets.set_status(
            models.Ticket.get(models.Ticket.number == 10001),
            "resolved",
            mailbox=portal.config.mailboxes[0],
            actor="test",
        )

    async def listings() -> list[str]:
        async with Guest(portal) as guest:
            await guest.verify(link)
            return [
                (await guest.get("/tickets" + query))[1]
                for query in ("", "?status=resolved", "?since=2100-01-01")
            ]

    both, resolved, future = run(listings())
    assert "/tickets/10000" in both and "/tickets/10001" in both
    assert "/tickets/10001" in resolved and "/tickets/10000" not in resolved
    assert "/tickets/10000" not in future and "/tickets/10001" not in future


def test_a_code_proves_only_the_address_it_was_sent_to(portal: GatewayThread) -> None:
    """Review finding: ask a code for your own address, switch the pending address
    to the victim's (a new request or a leaked link), enter your code: refused."""
    link = customer_ticket(portal)

    async def attack() -> tuple[int, int]:
        async with Guest(portal) as guest:
            _, page, _ = await guest.get("/new")
            form = {
                "csrf": csrf_of(page),
                "name": "x",
                "email": "attacker@evil.example",
                "category": "general",
                "priority": "low",
                "subject": "s",
                "text": "t",
            }
            assert (await guest.post("/new", form))[0] == 303
            own = await asyncio.to_thread(latest_code, portal, "attacker@evil.example")
            await guest.get(link)  # the victim's link, leaked
            _, page, _ = await guest.get("/ticket")
            status, _, _ = await guest.post("/verify", {"csrf": csrf_of(page), "code": own})
            return status, (await guest.get("/tickets/10000"))[0]

    verify_status, ticket_status = run(attack())
    assert verify_status == 400
    assert ticket_status == 302  # not signed in: sent to /link


def test_parallel_guesses_get_five_looks_at_most(portal: GatewayThread) -> None:
    link = customer_ticket(portal)

    async def attack() -> None:
        async with Guest(portal) as guest:
            await guest.get(link)
            _, page, _ = await guest.get("/ticket")
            await guest.post("/code", {"csrf": csrf_of(page)})
            _, page, _ = await guest.get("/verify")
            csrf = csrf_of(page)
            await asyncio.gather(
                *(guest.post("/verify", {"csrf": csrf, "code": f"{n:06d}"}) for n in range(40))
            )

    run(attack())
    with portal.db():
        assert models.GuestCode.get().attempts == 5


def test_error_pages_carry_the_security_headers(portal: GatewayThread) -> None:
    async def probe() -> None:
        async with Guest(portal) as guest:
            status, page, headers = await guest.get("//evil.example/x")
            assert status == 404
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Frame-Options"] == "DENY"
            assert "evil.example" not in page  # no off-site language links
            status, page, _ = await guest.get("/link")
            status, page, _ = await guest.post(
                "/link", {"csrf": csrf_of(page), "number": "²", "email": CUSTOMER}
            )
            assert status == 200

    run(probe())
