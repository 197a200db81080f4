"""The API's endpoints, mounted at /api/v1 on the portal's application.

    GET    /openapi.json                        this API, described (no token needed)
    GET    /tickets                             filters, newest first, cursor pages
    GET    /tickets/action-required             waiting on us, most urgent first
    GET    /tickets/{n}                         with public and internal messages
    GET    /tickets/{n}/attachments/{id}        the file
    POST   /tickets                             a new ticket, as the customer's mail
    POST   /tickets/{n}/reply                   a public answer (attachments, resolve)
    POST   /tickets/{n}/note                    an internal note
    POST   /tickets/{n}/close | reopen | escalate
    PATCH  /tickets/{n}                         priority, category, assignee

Reads come straight from the database, limited to the caller's mailboxes (a
ticket of another mailbox is a 404, like a missing one). Writes are built
as mail and go through intake and processing (:mod:`gateway.internal`): an
agent's action is a reply to a fresh reply key of theirs, carrying its
commands in a header, so the mail path's rules, events, notifications and
outbox apply unchanged. Input is checked here first, so that the caller
gets a 400 naming the field rather than a "command rejected" mail.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import email.errors
import json
import logging
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable
from email.headerregistry import Address
from typing import Any

import peewee as pw
from aiohttp import web

from gateway import keys, models, queries, report, sla
from gateway.api import idempotency, problems, spec, tokens
from gateway.api.problems import Problem, invalid
from gateway.api.tokens import Caller
from gateway.classify import is_automated_address
from gateway.config import Agent, Config, Mailbox, Rate
from gateway.db import Store, transaction, utcnow
from gateway.events import record
from gateway.intake import Envelope, Intake
from gateway.internal import File, compose, submit
from gateway.parse import sanitize_filename
from gateway.process import Processing

log = logging.getLogger("gateway.api")

PAGE_SIZE, MAX_PAGE = 50, 200
MAX_TEXT = 100_000  # characters of a reply, note or request
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_FILES = 10
MAX_KEYS = 10_000  # a limiter remembers this many callers at most
STATUSES = ("new", "open", "waiting_on_customer", "resolved", "closed")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Plan = tuple[list[str], str, list[File]]  # commands, text, attachments
Action = Callable[["_Body", Mailbox, Agent], Awaitable[Plan]]


_CATEGORY = re.compile(r"\w[\w -]*")
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")


class Limiter:
    """At most ``rate.count`` requests per ``rate.seconds`` per key (token bucket)."""

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: dict[object, tuple[float, float]] = {}

    def take(self, key: object) -> float:
        """0 when a request may go now, else the seconds to wait."""
        now = time.monotonic()
        per_second = self.rate.count / self.rate.seconds
        tokens, last = self._buckets.get(key, (float(self.rate.count), now))
        tokens = min(float(self.rate.count), tokens + (now - last) * per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / per_second
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > MAX_KEYS:  # many addresses: keep the busiest recent half
            recent = sorted(self._buckets.items(), key=lambda item: item[1][1])
            self._buckets = dict(recent[MAX_KEYS // 2 :])
        return 0.0


class Api:
    """The endpoints, bound to the running gateway's parts."""

    def __init__(self, config: Config, store: Store, intake: Intake, processor: Processing) -> None:
        self.config = config
        self.store = store
        self.intake = intake
        self.processor = processor
        self.per_token = Limiter(config.gateway.api_rate)
        self.failed_logins = Limiter(Rate(30, 60))  # per client address

    def app(self) -> web.Application:
        """The sub-application to mount at /api/v1."""
        app = web.Application(middlewares=[self._problems])
        number = r"{number:\d{1,18}}"
        app.add_routes(
            [
                web.get("/openapi.json", self.openapi),
                web.get("/tickets", self.list_tickets),
                web.post("/tickets", self.create),
                web.get("/tickets/action-required", self.action_required),
                web.get(f"/tickets/{number}", self.show),
                web.patch(f"/tickets/{number}", self.patch),
                web.get(f"/tickets/{number}/attachments/{{id:\\d{{1,18}}}}", self.attachment),
                web.post(f"/tickets/{number}/reply", self.reply),
                web.post(f"/tickets/{number}/note", self.note),
                web.post(f"/tickets/{number}/close", self.close),
                web.post(f"/tickets/{number}/reopen", self.reopen),
                web.post(f"/tickets/{number}/escalate", self.escalate),
            ]
        )
        return app

    # --- the edge -------------------------------------------------------------

    @web.middleware
    async def _problems(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure as problem+json; never a traceback."""
        try:
            return await handler(request)
        except Problem as problem:
            return problems.response(problem, request.path)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            status = exc.status if exc.status in problems.TITLES else 400
            detail = {404: "no such endpoint", 405: f"{request.method} is not allowed here"}
            headers = {}
            if isinstance(exc, web.HTTPMethodNotAllowed):  # RFC 9110 15.5.6
                headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            refused = Problem(status, detail.get(status, exc.reason), headers=headers)
            return problems.response(refused, request.path)
        except Exception:
            log.exception("api: %s %s failed", request.method, request.path)
            return problems.response(Problem(500, "the request failed on our side"), request.path)

    async def caller(self, request: web.Request) -> Caller:
        """The agent the bearer token names (401 otherwise), within their rate limit."""
        header = request.headers.get("Authorization", "")
        found = await self.store.run(tokens.authenticate, self.config, header) if header else None
        if found is None:
            wait = self.failed_logins.take(request.remote or "")
            if wait:
                raise _too_many(wait, "too many failed authentications from this address")
            raise Problem(401, "send an API token: Authorization: Bearer tgw_...")
        wait = self.per_token.take(found.token_id)
        if wait:
            raise _too_many(wait, "this token's rate limit is reached")
        return found

    async def openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(spec.document(self.config.gateway.portal_url))

    # --- reads ----------------------------------------------------------------

    async def list_tickets(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        query = _Filters(request.query, caller)
        rows, cursor = await self.store.run(_list, query)
        return web.json_response({"tickets": rows, "next_cursor": cursor})

    async def action_required(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        rows = await self.store.run(report.action_required, self.config, utcnow())
        mine = {m.address for m in caller.mailboxes}
        return web.json_response({"tickets": [r for r in rows if r["mailbox"] in mine]})

    async def show(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        return web.json_response(await self._detail(caller, _number(request)))

    async def attachment(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        found = await self.store.run(
            _attachment, caller, _number(request), int(request.match_info["id"])
        )
        if found is None:
            raise Problem(404, "no such attachment on this ticket")
        filename, content_type, data = found
        safe = sanitize_filename(filename, content_type)
        return web.Response(
            body=data,
            content_type=content_type if "/" in content_type else "application/octet-stream",
            headers={
                "Content-Disposition": f"attachment; filename*=UTF-8''{_quote(safe)}",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
            },
        )

    async def _detail(self, caller: Caller, number: int) -> dict[str, Any]:
        found = await self.store.run(_detail, caller, number)
        if found is None:
            raise Problem(404, f"no ticket #{number} in your mailboxes")
        return found

    # --- writes ---------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        return await idempotency.handle(self.store, request, caller, self._create)

    async def _create(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
        fields = _Body(body)
        mailbox = _mailbox_field(fields, caller)
        requester = fields.obj("requester", required=True)
        person = _Body(requester, "requester.")
        email = person.required_address("email")
        name = person.text("name", max_length=200) or ""
        person.done()
        if self.config.route(email) is not None or mailbox.agent(email) is not None:
            raise invalid("requester.email", "must be a customer's address, not ours or an agent's")
        if is_automated_address(email):
            raise invalid("requester.email", "is an automated address (we never write to those)")
        subject = fields.required_text("subject", max_length=500)
        text = fields.required_text("text", max_length=MAX_TEXT)
        priority = fields.choice("priority", models.Ticket.PRIORITIES)
        category = _category(fields, mailbox)
        files = _files(fields)
        fields.done()
        message = compose(self.config, name, email, mailbox.address, subject, text, files)
        if category:
            message["X-Gateway-Category"] = category
        if priority:
            message["X-Gateway-Priority"] = priority
        envelope = Envelope(email, (mailbox.address,), "api", peer=request.remote or "")
        inbound = await self._submit(request, await asyncio.to_thread(message.as_bytes), envelope)
        found = await self.store.run(_ticket_of, inbound, caller.agent)
        if found is None:
            return 202, {"status": "accepted", "detail": "queued; it will be processed shortly"}
        number, created = found
        return (201 if created else 200), await self._detail(caller, number)

    async def reply(self, request: web.Request) -> web.Response:
        async def act(fields: _Body, _mailbox: Mailbox, _agent: Agent) -> Plan:
            text = fields.required_text("text", max_length=MAX_TEXT)
            resolve = fields.boolean("resolve")
            return (["#resolve"] if resolve else []), text, _files(fields)

        return await self._action(request, act)

    async def note(self, request: web.Request) -> web.Response:
        async def act(fields: _Body, _mailbox: Mailbox, _agent: Agent) -> Plan:
            return ["#note"], fields.required_text("text", max_length=MAX_TEXT), []

        return await self._action(request, act)

    async def close(self, request: web.Request) -> web.Response:
        return await self._action(request, _fixed("#close"))

    async def reopen(self, request: web.Request) -> web.Response:
        return await self._action(request, _fixed("#reopen"))

    async def escalate(self, request: web.Request) -> web.Response:
        async def act(fields: _Body, _mailbox: Mailbox, _agent: Agent) -> Plan:
            note = fields.text("note", max_length=MAX_TEXT)
            # The note is for the admins: internal, never sent to the customer.
            return (["#escalate", "#note"] if note else ["#escalate"]), note or "", []

        return await self._action(request, act)

    async def patch(self, request: web.Request) -> web.Response:
        async def act(fields: _Body, mailbox: Mailbox, agent: Agent) -> Plan:
            commands = []
            priority = fields.choice("priority", models.Ticket.PRIORITIES)
            if priority:
                commands.append(f"#priority {priority}")
            category = _category(fields, mailbox)
            if category:
                commands.append(f"#category {category}")
            assignee = fields.address("assignee")
            if assignee:
                if mailbox.agent(assignee) is None:
                    raise invalid("assignee", f"{assignee} is not an agent of {mailbox.address}")
                if assignee != agent.email and agent.role != "admin":
                    raise Problem(403, "only an admin may assign a ticket to someone else")
                commands.append(f"#assign {assignee}")
            if not commands:
                raise Problem(400, "nothing to change: give priority, category or assignee")
            return commands, "", []

        return await self._action(request, act, method="PATCH")

    async def _action(
        self,
        request: web.Request,
        act: Action,
        method: str = "POST",
    ) -> web.Response:
        caller = await self.caller(request)

        async def run(request: web.Request, caller: Caller, body: dict[str, Any]) -> Any:
            number = _number(request)
            ticket = await self.store.run(_ticket, caller, number)
            if ticket is None:
                raise Problem(404, f"no ticket #{number} in your mailboxes")
            mailbox = caller.mailbox(ticket.mailbox)
            assert mailbox is not None
            agent = caller.as_agent(mailbox)
            fields = _Body(body)
            commands, text, files = await act(fields, mailbox, agent)
            fields.done()
            address = await self.store.run(_agent_key, ticket, mailbox, agent.email)
            subject = f"Re: {mailbox.format_tag(ticket.number)} {ticket.subject}"
            message = compose(self.config, agent.name, agent.email, address, subject, text, files)
            message["X-Gateway-Commands"] = " ".join(commands)
            envelope = Envelope(agent.email, (address,), "api", peer=request.remote or "")
            raw = await asyncio.to_thread(message.as_bytes)  # up to megabytes: not on the loop
            inbound = await self._submit(request, raw, envelope)
            state = await self.store.run(_outcome, inbound)
            if state is None:
                return 202, {"status": "accepted", "detail": "queued; it will be processed shortly"}
            if state:
                raise Problem(409, f"the action was not applied: {state}")
            return 200, await self._detail(caller, number)

        if method == "PATCH":
            return await idempotency.handle(self.store, request, caller, run, replay=False)
        return await idempotency.handle(self.store, request, caller, run)

    async def _submit(self, request: web.Request, raw: bytes, envelope: Envelope) -> int:
        raw = await idempotency.pin(self.store, request, raw)
        return await submit(self.config, self.intake, self.processor, raw, envelope)


def _fixed(command: str) -> Action:
    async def act(_fields: _Body, _mailbox: Mailbox, _agent: Agent) -> Plan:
        return [command], "", []

    return act


def _too_many(wait: float, detail: str) -> Problem:
    return Problem(429, detail, headers={"Retry-After": str(max(1, round(wait + 0.5)))})


def _number(request: web.Request) -> int:
    return int(request.match_info["number"])


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# --- input ------------------------------------------------------------------------


class _Body:
    """A JSON object's fields, checked one by one; unknown fields are an error."""

    def __init__(self, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise invalid(prefix.rstrip(".") or "body", "must be a JSON object")
        self.data = data
        self.prefix = prefix
        self.seen: set[str] = set()

    def _get(self, key: str, required: bool) -> Any:
        self.seen.add(key)
        if key in self.data and self.data[key] is None:
            raise invalid(self.prefix + key, "must not be null (leave it out instead)")
        value = self.data.get(key)
        if value is None and required:
            raise invalid(self.prefix + key, "is required")
        return value

    def text(self, key: str, *, required: bool = False, max_length: int = 1000) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid(self.prefix + key, "must be a string")
        if required and not value.strip():
            raise invalid(self.prefix + key, "must not be empty")
        if len(value) > max_length:
            raise invalid(self.prefix + key, f"is longer than {max_length} characters")
        if "\0" in value:
            raise invalid(self.prefix + key, "must not contain NUL characters")
        if _LONE_SURROGATE.search(value):  # JSON lets "\\udfc3" through; no mail can carry it
            raise invalid(self.prefix + key, "must be Unicode text (it has a lone surrogate)")
        return value

    def required_text(self, key: str, *, max_length: int = 1000) -> str:
        value = self.text(key, required=True, max_length=max_length)
        assert value is not None  # _get raised otherwise
        return value

    def required_address(self, key: str) -> str:
        value = self.address(key, required=True)
        assert value is not None  # _get raised otherwise
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str | None:
        value = self.text(key, max_length=64)
        if value is not None and value not in allowed:
            raise invalid(self.prefix + key, "must be one of " + ", ".join(allowed))
        return value

    def address(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required, max_length=320)
        if value is None:
            return None
        address = value.strip().lower()
        if not _plain_address(address):
            raise invalid(self.prefix + key, f"{value!r} is not an email address")
        return address

    def boolean(self, key: str) -> bool:
        value = self._get(key, False)
        if value is not None and not isinstance(value, bool):
            raise invalid(self.prefix + key, "must be true or false")
        return bool(value)

    def obj(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self._get(key, required)
        if value is not None and not isinstance(value, dict):
            raise invalid(self.prefix + key, "must be a JSON object")
        return value or {}

    def items(self, key: str) -> list[Any]:
        value = self._get(key, False)
        if value is not None and not isinstance(value, list):
            raise invalid(self.prefix + key, "must be a list")
        return value or []

    def done(self) -> None:
        """Refuse fields nobody asked for: a typo must not pass silently."""
        extra = sorted(set(self.data) - self.seen)
        if extra:
            raise invalid(self.prefix + extra[0], "unknown field")


def _plain_address(address: str) -> bool:
    """An ASCII address a mail header can carry as it is (local@domain.tld)."""
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or not address.isascii() or not address.isprintable():
        return False
    if any(c in address for c in ' <>(),;:"\\[]'):
        return False
    try:  # what the mail we build will need
        return bool(Address(addr_spec=address).addr_spec == address)
    except (ValueError, IndexError, email.errors.HeaderParseError):
        return False


def _mailbox_field(fields: _Body, caller: Caller) -> Mailbox:
    address = fields.address("mailbox")
    if address is None:
        return caller.mailboxes[0]
    mailbox = caller.mailbox(address)
    if mailbox is None:
        raise invalid("mailbox", f"{address} is not one of your mailboxes")
    return mailbox


def _category(fields: _Body, mailbox: Mailbox) -> str | None:
    value = fields.text("category", max_length=64)
    if value is None:
        return None
    name = " ".join(value.lower().split())
    known = set(mailbox.categories) | {mailbox.category}
    if mailbox.categories and name not in known:
        raise invalid("category", "must be one of " + ", ".join(sorted(known)))
    # Checked as the command parser will read it (NFKC turns a full-width ＃
    # into "#"): only words, so a category can never smuggle in a command.
    if not _CATEGORY.fullmatch(unicodedata.normalize("NFKC", name)):
        raise invalid("category", "must be a name of letters, digits, spaces, - and _")
    return name


def _files(fields: _Body) -> list[File]:
    """``attachments``: [{filename, content_type, content_base64}]."""
    items = fields.items("attachments")
    if len(items) > MAX_FILES:
        raise invalid("attachments", f"at most {MAX_FILES} files")
    files = []
    for index, item in enumerate(items):
        entry = _Body(item, f"attachments[{index}].")
        name = entry.required_text("filename", max_length=255)
        content_type = entry.text("content_type", max_length=255) or "application/octet-stream"
        if not _MIME_TYPE.fullmatch(content_type):
            raise invalid(
                f"attachments[{index}].content_type", "must be a MIME type such as image/png"
            )
        encoded = entry.required_text("content_base64", max_length=50_000_000)
        entry.done()
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"attachments[{index}].content_base64", "is not base64") from None
        files.append((sanitize_filename(name, content_type), content_type.lower(), data))
    return files


class _Filters:
    """The query parameters of GET /tickets."""

    KNOWN = frozenset(
        {
            "status",
            "mailbox",
            "priority",
            "category",
            "requester",
            "since",
            "until",
            "q",
            "limit",
            "cursor",
        }
    )

    def __init__(self, query: Any, caller: Caller) -> None:
        for key, value in query.items():
            if key not in self.KNOWN:
                raise invalid(key, "unknown parameter")
            if not value.isprintable():
                raise invalid(key, "must not contain control characters")
        self.status = _one_of(query, "status", STATUSES)
        self.priority = _one_of(query, "priority", models.Ticket.PRIORITIES)
        self.category = query.get("category") or None
        self.requester = (query.get("requester") or "").strip().lower() or None
        self.q = (query.get("q") or "").strip().lower() or None
        self.since = _moment(query, "since")
        self.until = _moment(query, "until")
        self.limit = _limit(query)
        self.before = _cursor(query)
        mailbox = (query.get("mailbox") or "").strip().lower()
        if mailbox and caller.mailbox(mailbox) is None:
            raise invalid("mailbox", f"{mailbox} is not one of your mailboxes")
        self.mailboxes = [mailbox] if mailbox else [m.address for m in caller.mailboxes]


def _one_of(query: Any, key: str, allowed: tuple[str, ...]) -> str | None:
    value = query.get(key)
    if value is not None and value not in allowed:
        raise invalid(key, "must be one of " + ", ".join(allowed))
    return str(value) if value is not None else None


def _moment(query: Any, key: str) -> dt.datetime | None:
    value = query.get(key)
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(key, "must be a date (2026-11-01) or a time (2026-11-01T09:00:00Z)") from None
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise invalid(key, "is out of range") from None
    return moment


def _limit(query: Any) -> int:
    value = query.get("limit")
    if value is None:
        return PAGE_SIZE
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_PAGE:
        raise invalid("limit", f"must be a whole number from 1 to {MAX_PAGE}")
    return int(value)


def _cursor(query: Any) -> int | None:
    """The ticket number a page continues below (the cursor is opaque to callers)."""
    value = query.get("cursor")
    if value is None:
        return None
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        text = ""
    kind, _, number = text.partition(":")
    if kind != "before" or not (number.isascii() and number.isdigit()) or len(number) > 18:
        raise invalid("cursor", "is not a cursor this API gave out")
    return int(number)


def _next_cursor(number: int) -> str:
    return base64.urlsafe_b64encode(f"before:{number}".encode()).decode().rstrip("=")


# --- database work (in the Store's threads) ----------------------------------------


def _list(flt: _Filters) -> tuple[list[dict[str, Any]], str | None]:
    """One page, by ticket number descending: numbers never change, so pages stay
    stable while tickets are created or updated."""
    rows = models.Ticket
    query = rows.select().where(rows.mailbox.in_(flt.mailboxes))
    for value, field in (
        (flt.status, rows.status),
        (flt.priority, rows.priority),
        (flt.category, rows.category),
        (flt.requester, rows.requester_email),
    ):
        if value is not None:
            query = query.where(field == value)
    if flt.since is not None:
        query = query.where(rows.created_at >= flt.since)
    if flt.until is not None:
        query = query.where(rows.created_at < flt.until)
    if flt.q:
        query = query.where(
            pw.fn.LOWER(rows.subject).contains(flt.q)
            | pw.fn.LOWER(rows.requester_email).contains(flt.q)
            | pw.fn.LOWER(rows.requester_name).contains(flt.q)
        )
    if flt.before is not None:
        query = query.where(rows.number < flt.before)
    page = list(query.order_by(rows.number.desc()).limit(flt.limit + 1))
    more = len(page) > flt.limit
    page = page[: flt.limit]
    cursor = _next_cursor(page[-1].number) if more else None
    return [queries.ticket_summary(t) for t in page], cursor


def _ticket(caller: Caller, number: int) -> models.Ticket | None:
    ticket = models.Ticket.get_or_none(models.Ticket.number == number)
    if ticket is None or caller.mailbox(ticket.mailbox) is None:
        return None
    return ticket


def _detail(caller: Caller, number: int) -> dict[str, Any] | None:
    ticket = _ticket(caller, number)
    if ticket is None:
        return None
    detail = queries.ticket_detail(number)
    assert detail is not None
    mailbox = caller.mailbox(ticket.mailbox)
    assert mailbox is not None
    clock, left = sla.owed_now(ticket, mailbox, utcnow())
    detail["sla"] = {
        "owed": clock.kind if clock is not None else None,
        "due_at": queries.iso(clock.due_at) if clock is not None else None,
        "seconds_left": round(left) if left is not None else None,
    }
    detail["events"] = [e for e in detail["events"] if not e["kind"].startswith("mail_")]
    return detail


def _attachment(caller: Caller, number: int, attachment_id: int) -> File | None:
    ticket = _ticket(caller, number)
    if ticket is None:
        return None
    found = (
        models.Attachment.select(models.Attachment, models.Blob)
        .join(models.Message)
        .switch(models.Attachment)
        .join(models.Blob)
        .where((models.Attachment.id == attachment_id) & (models.Message.ticket == ticket))
        .first()
    )
    if found is None:
        return None
    return found.filename, found.content_type, bytes(found.blob.data)


def _agent_key(ticket: models.Ticket, mailbox: Mailbox, agent: str) -> str:
    """A fresh reply-key address of ``agent`` on ``ticket``, as their notification has."""
    with transaction(models.database.obj):
        return keys.address(mailbox.address, keys.new_key(ticket, agent, "agent"))


def _outcome(inbound_id: int) -> str | None:
    """None while queued; "" once applied; else why it was not (quarantine reason)."""
    row = models.Inbound.get_by_id(inbound_id)
    if row.status == models.Inbound.RECEIVED:
        return None
    if row.status == models.Inbound.QUARANTINED:
        reason = row.reason or ""
        if reason.startswith("internal error"):  # ours: the details are for the log only
            return "it failed on our side and was set aside for an operator"
        return reason or "it was set aside for an operator"
    rejected = (
        models.Event.select()
        .where((models.Event.inbound == row) & (models.Event.kind == "agent_commands_rejected"))
        .first()
    )
    if rejected is not None:
        return "; ".join(json.loads(rejected.detail).get("errors", [])) or "rejected"
    return ""


def _ticket_of(inbound_id: int, agent: str) -> tuple[int, bool] | None:
    """The ticket a new request went to, and whether it made it; None while queued.

    A request naming a ticket the requester is on (its tag in the subject)
    follows that ticket up, as their mail would.
    """
    message = models.Message.get_or_none(models.Message.inbound == inbound_id)
    if message is None:
        return None
    ticket = message.ticket
    first = ticket.messages.order_by(models.Message.id).first()
    created = first is not None and first.id == message.id
    if created:
        with transaction(models.database.obj):
            record(ticket, "created_via_api", actor=agent)
    return int(ticket.number), created
