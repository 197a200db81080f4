"""The JSON API over real HTTP against the running gateway, on SQLite and PostgreSQL.

Two mailboxes: support@ (Lan and Minh, agents; Boss, admin) and sales@
(only Minh). Tokens are made with the CLI, as an operator would; every
write is checked for what the mail path would have done: the events, and
the mail the customer receives.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway import models
from tests.helpers import SALES, SUPPORT, GatewayThread, history, mail, write_config
from tests.test_agents import BOSS, CUSTOMER, LAN, MINH, TEAM, inbox, text_of


def api_config(folder: Path, database_url: str, rate: str = "1000/1min") -> Path:
    path = write_config(
        folder,
        database_url,
        f'portal_url = "http://portal.test"\nportal_listen = "127.0.0.1:0"\napi_rate = "{rate}"',
    )
    text = path.read_text()
    head, first, second = text.split("[[mailbox]]")
    first += 'categories = ["general", "billing", "technical"]\n' + TEAM
    second += f'\n[[mailbox.agent]]\nemail = "{MINH}"\nname = "Minh"\n'
    path.write_text(f"{head}[[mailbox]]{first}[[mailbox]]{second}")
    return path


def token(config: Path, agent: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "tokens",
            "create",
            "--agent",
            agent,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1]


class Client:
    """A caller of the API with one token, speaking real HTTP."""

    def __init__(self, gateway: GatewayThread, bearer: str | None) -> None:
        self.gateway = gateway
        self.base = f"http://127.0.0.1:{gateway.port('portal')}/api/v1"
        self.headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        async def go() -> tuple[int, Any, dict[str, str]]:
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    method,
                    self.base + path,
                    json=body if raw is None else None,
                    data=raw,
                    headers={**self.headers, **(headers or {})},
                ) as response,
            ):
                data = await response.read()
                kind = response.headers.get("Content-Type", "")
                parsed = json.loads(data) if "json" in kind else data
                return response.status, parsed, dict(response.headers)

        return asyncio.run(go())


@pytest.fixture
def gateway(tmp_path: Path, database_url: str) -> Iterator[GatewayThread]:
    with GatewayThread(api_config(tmp_path, database_url)) as running:
        yield running


@pytest.fixture
def lan(gateway: GatewayThread) -> Client:
    return Client(gateway, token(gateway.config.path, LAN))


def customer_ticket(gateway: GatewayThread, subject: str = "Máy in lỗi") -> None:
    gateway.send(mail(subject=subject, sender=f"Khách <{CUSTOMER}>"), sender=CUSTOMER)


# --- access ----------------------------------------------------------------------------


def test_no_token_bad_token_and_revoked_token_get_401(gateway: GatewayThread) -> None:
    customer_ticket(gateway)
    config = gateway.config.path
    secret = token(config, LAN)
    for bearer in (None, "tgw_1_" + "A" * 43, secret[:-1] + ("B" if secret[-1] != "B" else "C")):
        status, body, headers = Client(gateway, bearer).call("GET", "/tickets")
        assert status == 401
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["title"] == "Authentication required" and "Bearer" in body["detail"]
    assert Client(gateway, secret).call("GET", "/tickets")[0] == 200
    token_id = secret.split("_")[1]
    subprocess.run(
        [sys.executable, "-m", "gateway", "tokens", "revoke", token_id, "--config", str(config)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert Client(gateway, secret).call("GET", "/tickets")[0] == 401


def test_tokens_are_stored_hashed(gateway: GatewayThread, lan: Client) -> None:
    # tgw_<id>_<secret>; the secret itself may hold "_" (token_urlsafe), and a
    # short piece of it could turn up in any hex digest by chance
    secret = lan.headers["Authorization"].split("_", 2)[2]
    assert len(secret) >= 40
    with gateway.db():
        rows = list(models.ApiToken.select())
    assert rows and all(secret not in r.secret_hash for r in rows)


def test_an_agent_sees_only_their_mailboxes(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)  # 10000 in support@
    gateway.send(mail(subject="Báo giá", sender=CUSTOMER, to=SALES), rcpts=[SALES], sender=CUSTOMER)
    minh = Client(gateway, token(gateway.config.path, MINH))
    assert [t["number"] for t in lan.call("GET", "/tickets")[1]["tickets"]] == [10000]
    assert [t["number"] for t in minh.call("GET", "/tickets")[1]["tickets"]] == [10001, 10000]
    status, body, _ = lan.call("GET", "/tickets/10001")
    assert status == 404 and body["status"] == 404
    assert lan.call("POST", "/tickets/10001/reply", {"text": "hi"})[0] == 404
    status, body, _ = lan.call("GET", "/tickets?mailbox=" + SALES)
    assert status == 400 and body["errors"][0]["field"] == "mailbox"


def test_only_an_admin_assigns_someone_else(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)
    status, body, _ = lan.call("PATCH", "/tickets/10000", {"assignee": MINH})
    assert status == 403 and "admin" in body["detail"]
    status, body, _ = lan.call("PATCH", "/tickets/10000", {"assignee": LAN, "priority": "high"})
    assert status == 200 and (body["assignee"], body["priority"]) == (LAN, "high")
    boss = Client(gateway, token(gateway.config.path, BOSS))
    status, body, _ = boss.call("PATCH", "/tickets/10000", {"assignee": MINH})
    assert status == 200 and body["assignee"] == MINH
    kinds = [e["kind"] for e in body["events"]]
    assert kinds.count("assignee_changed") == 2 and "priority_changed" in kinds


# --- the same as mail ---------------------------------------------------------------------


def test_reply_reaches_the_customer_like_an_emailed_answer(
    gateway: GatewayThread, lan: Client
) -> None:
    customer_ticket(gateway)
    attachment = {
        "filename": "hướng dẫn.pdf",
        "content_type": "application/pdf",
        "content_base64": base64.b64encode(b"%PDF-1.4 guide").decode(),
    }
    text = "#1 tip: restart it.\n\nLan"  # starts with '#': text, never a command
    status, body, _ = lan.call(
        "POST", "/tickets/10000/reply", {"text": text, "attachments": [attachment], "resolve": True}
    )
    assert status == 200, body
    assert body["status"] == "resolved"
    answer = [m for m in body["messages"] if m["author"]["role"] == "agent"][-1]
    assert answer["text"] == text and answer["visibility"] == "public"
    assert answer["attachments"][0]["filename"] == "hướng dẫn.pdf"
    mailed = inbox(gateway, CUSTOMER)[-1]
    assert mailed["From"].addresses[0].addr_spec == SUPPORT
    assert "#1 tip: restart it." in text_of(mailed)
    assert "/rate/10000/" in text_of(mailed)  # resolved: the rating links
    assert [p.get_filename() for p in mailed.iter_attachments()] == ["hướng dẫn.pdf"]
    kinds = [e["kind"] for e in history(gateway.tickets()[0])]
    assert "agent_replied" in kinds and "status_changed" in kinds
    # the attachment can be downloaded as the agent sees it
    status, data, headers = lan.call(
        "GET", f"/tickets/10000/attachments/{answer['attachments'][0]['id']}"
    )
    assert (status, data) == (200, b"%PDF-1.4 guide")
    assert headers["Content-Disposition"].startswith("attachment;")


def test_note_close_reopen_escalate(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)
    before = len(inbox(gateway, CUSTOMER))
    status, body, _ = lan.call("POST", "/tickets/10000/note", {"text": "Called her; fine."})
    assert status == 200
    assert body["messages"][-1]["visibility"] == "internal"
    assert len(inbox(gateway, CUSTOMER)) == before  # notes never reach the customer
    status, body, _ = lan.call("POST", "/tickets/10000/escalate", {"note": "Needs a refund."})
    assert status == 200
    escalation = [m for m in inbox(gateway, BOSS) if "Needs a refund." in text_of(m)]
    assert escalation
    told = len(inbox(gateway, CUSTOMER))
    assert lan.call("POST", "/tickets/10000/close")[1]["status"] == "closed"
    assert len(inbox(gateway, CUSTOMER)) == told  # closing (spam, say) mails nobody
    assert lan.call("POST", "/tickets/10000/reopen", {})[1]["status"] == "open"


def test_create_on_behalf_of_a_customer(gateway: GatewayThread, lan: Client) -> None:
    status, body, _ = lan.call(
        "POST",
        "/tickets",
        {
            "requester": {"email": "Mai@Example.vn", "name": "Mai"},
            "subject": "Chat: đơn hàng 88213",
            "text": "Khách hỏi về đơn hàng 88213 qua chat.",
            "category": "billing",
            "priority": "high",
        },
    )
    assert status == 201, body
    assert (body["requester"]["email"], body["category"], body["priority"]) == (
        "mai@example.vn",
        "billing",
        "high",
    )
    assert "created_via_api" in [e["kind"] for e in body["events"]]
    [ack] = inbox(gateway, "mai@example.vn")
    assert f"#{body['number']}" in str(ack["Subject"])
    assert any(str(m["Delivered-To"]) == MINH for m in inbox(gateway, MINH))


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/tickets", {"subject": "x", "text": "y"}, "requester"),
        (
            "POST",
            "/tickets",
            {"requester": {"email": "not-an-address"}, "subject": "x", "text": "y"},
            "requester.email",
        ),
        (
            "POST",
            "/tickets",
            {"requester": {"email": SUPPORT}, "subject": "x", "text": "y"},
            "requester.email",
        ),
        (
            "POST",
            "/tickets",
            {"requester": {"email": "a@b.example"}, "subject": "x", "text": "y", "prio": 1},
            "prio",
        ),
        ("POST", "/tickets/10000/reply", {"text": ""}, "text"),
        (
            "POST",
            "/tickets/10000/reply",
            {"text": "x", "attachments": [{"filename": "a", "content_base64": "%%%"}]},
            "attachments[0].content_base64",
        ),
        ("PATCH", "/tickets/10000", {"priority": "asap"}, "priority"),
        ("PATCH", "/tickets/10000", {"category": "gossip"}, "category"),
        ("PATCH", "/tickets/10000", {"assignee": "stranger@example.org"}, "assignee"),
        ("GET", "/tickets?limit=0", None, "limit"),
        ("GET", "/tickets?cursor=bogus", None, "cursor"),
        ("GET", "/tickets?since=yesterday", None, "since"),
        ("GET", "/tickets?colour=red", None, "colour"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    gateway: GatewayThread, lan: Client, method: str, path: str, body: Any, field: str
) -> None:
    customer_ticket(gateway)
    status, problem, headers = lan.call(method, path, body)
    assert status == 400, problem
    assert headers["Content-Type"].startswith("application/problem+json")
    assert problem["errors"][0]["field"] == field
    assert field in problem["detail"]


def test_not_json_and_unknown_routes_are_problems(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)
    status, problem, _ = lan.call("POST", "/tickets/10000/note", raw=b"text=hello")
    assert status == 415 and problem["title"] == "Unsupported media type"
    status, problem, _ = lan.call(
        "POST", "/tickets/10000/note", raw=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "not valid JSON" in problem["detail"]
    assert lan.call("GET", "/nothing-here")[0] == 404
    assert lan.call("DELETE", "/tickets/10000")[0] == 405


def test_rate_limit_per_token(tmp_path: Path, database_url: str) -> None:
    with GatewayThread(api_config(tmp_path, database_url, rate="3/1min")) as gateway:
        client = Client(gateway, token(gateway.config.path, LAN))
        statuses = [client.call("GET", "/tickets")[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, _, headers = client.call("GET", "/tickets")
        assert status == 429 and int(headers["Retry-After"]) >= 1
        other = Client(gateway, token(gateway.config.path, MINH))
        assert other.call("GET", "/tickets")[0] == 200  # per token, not global


# --- pagination and idempotency --------------------------------------------------------


def test_pages_are_stable_while_tickets_arrive(gateway: GatewayThread, lan: Client) -> None:
    for index in range(7):
        customer_ticket(gateway, f"Question {index}")
    first = lan.call("GET", "/tickets?limit=3")[1]
    for index in range(3):  # new tickets arrive between pages
        customer_ticket(gateway, f"Later {index}")
    seen = [t["number"] for t in first["tickets"]]
    cursor = first["next_cursor"]
    while cursor:
        page = lan.call("GET", f"/tickets?limit=3&cursor={cursor}")[1]
        seen += [t["number"] for t in page["tickets"]]
        cursor = page["next_cursor"]
    assert seen == list(range(10006, 9999, -1))  # each old ticket once, in order


def test_a_retried_post_posts_once(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)
    key = {"Idempotency-Key": "reply-7f3a"}
    first = lan.call("POST", "/tickets/10000/reply", {"text": "On it."}, headers=key)
    again = lan.call("POST", "/tickets/10000/reply", {"text": "On it."}, headers=key)
    assert first[0] == again[0] == 200
    assert again[2].get("Idempotent-Replayed") == "true"
    assert again[1] == first[1]
    other = lan.call("POST", "/tickets/10000/reply", {"text": "Different."}, headers=key)
    assert other[0] == 422
    with gateway.db():
        answers = models.Message.select().where(models.Message.author_role == "agent").count()
    assert answers == 1
    assert sum("On it." in text_of(m) for m in inbox(gateway, CUSTOMER)) == 1


def test_concurrent_retries_post_once(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)
    results: list[int] = []

    def post() -> None:
        status = lan.call(
            "POST", "/tickets/10000/note", {"text": "Once."}, headers={"Idempotency-Key": "k1"}
        )[0]
        results.append(status)

    threads = [threading.Thread(target=post) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results.count(200) >= 1 and set(results) <= {200, 409}
    with gateway.db():
        notes = models.Message.select().where(models.Message.visibility == "internal").count()
    assert notes == 1


def test_openapi_document_is_served(gateway: GatewayThread) -> None:
    status, document, _ = Client(gateway, None).call("GET", "/openapi.json")
    assert status == 200
    assert document["openapi"] == "3.1.0"
    assert "/tickets/{number}/reply" in document["paths"]


# --- found in review ---------------------------------------------------------------------


def test_a_failure_after_spooling_never_posts_twice(
    gateway: GatewayThread, lan: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The action's mail is spooled, then the answer fails (injected): the key keeps the
    pinned mail, and the retry after the stale time spools the same bytes, stored once."""
    from gateway import db
    from gateway.api import views

    customer_ticket(gateway)
    real = views._outcome
    calls = {"n": 0}

    def fail_once(inbound_id: int) -> str | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the answer was lost")
        return real(inbound_id)

    monkeypatch.setattr(views, "_outcome", fail_once)
    key = {"Idempotency-Key": "note-after-crash"}
    assert lan.call("POST", "/tickets/10000/note", {"text": "Once."}, headers=key)[0] == 500
    assert lan.call("POST", "/tickets/10000/note", {"text": "Once."}, headers=key)[0] == 409
    later = db.utcnow() + dt.timedelta(minutes=3)  # past the stale time: taken over
    db.set_clock(lambda: later)
    try:
        status, body, _ = lan.call("POST", "/tickets/10000/note", {"text": "Once."}, headers=key)
    finally:
        db.set_clock(None)
    assert status == 200, body
    with gateway.db():
        notes = models.Message.select().where(models.Message.visibility == "internal").count()
    assert notes == 1


def test_a_full_width_hash_cannot_smuggle_a_command(gateway: GatewayThread) -> None:
    """On a mailbox without a category list, ＃ (NFKC: #) in a category is refused."""
    gateway.send(mail(subject="Báo giá", sender=CUSTOMER, to=SALES), rcpts=[SALES], sender=CUSTOMER)
    minh = Client(gateway, token(gateway.config.path, MINH))
    status, problem, _ = minh.call("PATCH", "/tickets/10000", {"category": "billing ＃resolve"})
    assert status == 400 and problem["errors"][0]["field"] == "category"
    assert minh.call("GET", "/tickets/10000")[1]["status"] == "new"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        *(
            ("POST", "/tickets", {"requester": {"email": e}, "subject": "x", "text": "y"})
            for e in ("a@@b.co", "a\tb@c.co", "ü@b.co", "a..b@c.co", "[x]@b.co", "@@b.co")
        ),
        (
            "POST",
            "/tickets/10000/reply",
            {
                "text": "x",
                "attachments": [
                    {"filename": "a", "content_type": "a/b\u2028c", "content_base64": "eA=="}
                ],
            },
        ),
        ("POST", "/tickets/10000/escalate", {"note": "\udfc3 a lone surrogate"}),
        ("GET", "/tickets?limit=²", None),
        ("GET", "/tickets?since=0001-01-01T00:00:00%2B14:00", None),
        ("GET", "/tickets?q=%00", None),
        ("GET", "/tickets?requester=a%00", None),
    ],
)
def test_odd_input_is_a_400_not_a_500(
    gateway: GatewayThread, lan: Client, method: str, path: str, body: Any
) -> None:
    customer_ticket(gateway)
    status, problem, _ = lan.call(method, path, body)
    assert status == 400, problem


def test_deeply_nested_json_is_a_400(gateway: GatewayThread, lan: Client) -> None:
    customer_ticket(gateway)
    raw = b"[" * 100_000 + b"]" * 100_000
    status, problem, _ = lan.call(
        "POST", "/tickets/10000/note", raw=raw, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "nested too deeply" in problem["detail"]


def test_our_own_plus_addresses_are_not_customers(gateway: GatewayThread, lan: Client) -> None:
    for own in ("support+x@example.com", "help+bounce-1@example.com"):
        body = {"requester": {"email": own}, "subject": "x", "text": "y"}
        status, problem, _ = lan.call("POST", "/tickets", body)
        assert status == 400 and problem["errors"][0]["field"] == "requester.email"
