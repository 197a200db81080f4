"""The portal's routes: aiohttp on the daemon's own event loop.

    GET  /                         home
    GET  /t/{token}                store the link in a cookie, 303 to /ticket (token
                                   out of the address bar, history and Referer)
    GET  /ticket                   the masked address and "send me a code"
    POST /code                     send a code (rate limited), 303 to /verify
    GET  /verify, POST /verify     enter the code; the session cookie is rotated
    GET  /tickets                  "my tickets" for the verified address
    GET  /tickets/{n}              a ticket: public conversation, reply form
    GET  /tickets/{n}/files/{id}   an attachment, as a download
    POST /tickets/{n}/reply        a reply, through the same intake as mail
    POST /tickets/{n}/close        close a resolved ticket
    GET  /new, POST /new           a new request, created once the address is verified
    GET  /link, POST /link         a fresh link, sent only to the address on the ticket
    GET  /rate/{n}/{token}/{r}     record a one-click rating (good|bad) from the
                                   resolve mail; the page offers a comment
    POST /rate/{n}/{token}/{r}     the optional comment (the signed token is the
                                   credential: no session, no code needed)
    POST /logout

Every response carries a strict Content-Security-Policy (no script at all),
no-referrer, nosniff and DENY framing; every POST needs the session's CSRF
token; every error is a friendly page. Unknown tickets, other people's
tickets and missing ones all answer the same 404.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from gateway import internal, keys, models, ratings, tickets
from gateway.config import Config
from gateway.db import Store, transaction, utcnow
from gateway.intake import Envelope, Intake
from gateway.notify import Notifier, Recipient
from gateway.parse import sanitize_filename
from gateway.portal import access
from gateway.portal.pages import Pages, catalog, lookup, pick_language
from gateway.process import Processing
from gateway.render import PACKAGE_TEMPLATES, header_safe

log = logging.getLogger("gateway.portal")

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
DOWNLOAD_CSP = "default-src 'none'; sandbox"
LINK_COOKIE = "gw_link"
LANG_COOKIE = "gw_lang"
CODE_MINUTES = int(access.CODE_LIFETIME.total_seconds() // 60)
GET_PAGE = {"/code": "/verify", "/verify": "/verify", "/new": "/new", "/link": "/link"}
RATING_BODY_LIMIT = 16 * 1024  # bytes: a comment of 2,000 characters, form-encoded
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Portal:
    """The guest portal's aiohttp application."""

    def __init__(
        self,
        config: Config,
        store: Store,
        intake: Intake,
        processor: Processing,
        notifier: Notifier,
        secret: bytes,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.store = store
        self.intake = intake
        self.processor = processor
        self.notifier = notifier
        self.secret = secret
        self.on_queued = on_queued  # wakes the outbox worker: a code must go out now
        self.pages = Pages(config.gateway.templates_dir)

    @property
    def secure(self) -> bool:
        return self.config.gateway.portal_url.startswith("https://")

    @property
    def session_cookie(self) -> str:
        # __Host- binds the cookie to this host, path / and HTTPS (RFC 6265bis 4.1.3.2).
        return "__Host-gw_session" if self.secure else "gw_session"

    def app(self) -> web.Application:
        app = web.Application(
            # _headers outermost, so error pages get the security headers too.
            middlewares=[self._headers, self._errors],
            client_max_size=self.config.gateway.max_message_size,
        )
        app.add_routes(
            [
                web.get("/", self.home),
                web.get("/t/{token}", self.open_link),
                web.get("/ticket", self.ticket_gate),
                web.post("/code", self.send_code),
                web.get("/verify", self.verify_form),
                web.post("/verify", self.verify),
                web.get("/tickets", self.my_tickets),
                web.get(r"/tickets/{number:\d+}", self.show_ticket),
                web.get(r"/tickets/{number:\d+}/files/{id:\d+}", self.download),
                web.post(r"/tickets/{number:\d+}/reply", self.reply),
                web.post(r"/tickets/{number:\d+}/close", self.close),
                web.get("/new", self.new_form),
                web.post("/new", self.new_request),
                web.get("/link", self.link_form),
                web.post("/link", self.link_request),
                # No HEAD: a link scanner's probe must not record a rating.
                web.get(
                    r"/rate/{number:\d+}/{token}/{rating:good|bad}", self.rate, allow_head=False
                ),
                web.post(r"/rate/{number:\d+}/{token}/{rating:good|bad}", self.rate),
                web.post("/logout", self.logout),
                web.static("/static", str(PACKAGE_TEMPLATES / "portal" / "static")),
            ]
        )
        return app

    # --- middleware -----------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRedirection:
            raise
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return await self._error_page(request, exc.status)
        except Exception:
            log.exception("portal: %s %s failed", request.method, request.path)
            return await self._error_page(request, 500)

    async def _error_page(self, request: web.Request, status: int) -> web.Response:
        kind = {
            400: "bad_request",
            403: "csrf",
            404: "not_found",
            410: "expired",
            413: "too_large",
            429: "rate_limited",
        }.get(status, "internal")
        return await self.page(
            request,
            "error",
            None,
            http_status=status,
            status=status,
            title_key=f"error.{kind}.title",
            text_key=f"error.{kind}.text",
        )

    # --- helpers --------------------------------------------------------------

    async def session(self, request: web.Request, *, create: bool = False) -> access.Session | None:
        found = await self.store.run(access.load_session, request.cookies.get(self.session_cookie))
        if found is None and create:
            found = await self.store.run(access.new_session)
        return found

    def language(self, request: web.Request, ticket_language: str | None = None) -> str:
        return pick_language(
            request.query.get("lang"),
            request.cookies.get(LANG_COOKIE),
            request.headers.get("Accept-Language", ""),
            ticket_language,
        )

    async def page(
        self,
        request: web.Request,
        name: str,
        session: access.Session | None,
        *,
        http_status: int = 200,
        ticket_language: str | None = None,
        **context: Any,
    ) -> web.Response:
        language = self.language(request, ticket_language)
        html = self.pages.render(
            name,
            language,
            {
                "site_name": self.config.mailboxes[0].name,
                # Language links must lead to a page one can GET, even after a POST.
                "request_path": self.page_path(request),
                "csrf_token": session.row.csrf if session else "",
                "verified_email": session.email if session else None,
                **context,
            },
        )
        response = web.Response(
            text=html, status=http_status, content_type="text/html", charset="utf-8"
        )
        if language in (request.query.get("lang"), ticket_language):
            response.set_cookie(
                LANG_COOKIE,
                language,
                max_age=365 * 86400,
                httponly=True,
                samesite="Lax",
                secure=self.secure,
                path="/",
            )
        if session is not None:
            self.set_session_cookie(response, session)
        return response

    @staticmethod
    def page_path(request: web.Request) -> str:
        """Where the language links lead: a page one can GET, never another site.

        An unmatched path such as //evil.example/x would make ``//evil...?lang=``
        an off-site link (found in review), so unknown paths link home.
        """
        if request.match_info.http_exception is not None:
            return "/"
        return GET_PAGE.get(request.path, request.path)

    def set_session_cookie(self, response: web.StreamResponse, session: access.Session) -> None:
        response.set_cookie(
            self.session_cookie,
            session.cookie,
            httponly=True,
            samesite="Lax",
            secure=self.secure,
            path="/",
        )

    def redirect(self, location: str, session: access.Session | None = None) -> web.Response:
        response = web.Response(status=303, headers={"Location": location})
        if session is not None:
            self.set_session_cookie(response, session)
        return response

    async def form(
        self, request: web.Request, session: access.Session | None
    ) -> MultiDictProxy[Any]:
        """The POSTed fields, after checking the CSRF token (403 otherwise)."""
        data = await request.post()
        if not access.csrf_ok(session, str(data.get("csrf", ""))):
            raise web.HTTPForbidden()
        return data

    # --- links and codes ------------------------------------------------------

    async def home(self, request: web.Request) -> web.Response:
        return await self.page(request, "home", await self.session(request))

    async def open_link(self, request: web.Request) -> web.Response:
        """Keep the token in a cookie and send the browser to a URL without it.

        The answer is the same for any token: validity is checked on /ticket.
        """
        response = web.Response(status=303, headers={"Location": "/ticket"})
        response.set_cookie(
            LINK_COOKIE,
            request.match_info["token"],
            httponly=True,
            samesite="Lax",
            secure=self.secure,
            path="/",
            max_age=self.config.gateway.link_lifetime,
        )
        return response

    async def ticket_gate(self, request: web.Request) -> web.Response:
        token = request.cookies.get(LINK_COOKIE, "")
        link = await self.store.run(access.valid_link, token) if token else None
        if link is None:
            raise web.HTTPGone()
        session = await self.session(request, create=True)
        assert session is not None
        if session.email == link.email:
            return self.redirect(f"/tickets/{link.ticket.number}", session)
        await self.store.run(_set_pending, session, link.email, link.ticket, None)
        return await self.page(
            request,
            "code_request",
            session,
            masked_email=access.mask(link.email),
            ticket_number=link.ticket.number,
            ticket_language=link.ticket.language,
        )

    async def send_code(self, request: web.Request) -> web.Response:
        session = await self.session(request)
        await self.form(request, session)
        assert session is not None
        email = session.row.pending_email
        if not email:
            raise web.HTTPGone()
        refused = await self.store.run(self._send_code, session, email)
        self.on_queued()
        if refused:
            return await self.page(
                request,
                "code_enter",
                session,
                http_status=429,
                error=refused,
                masked_email=access.mask(email),
                code_minutes=CODE_MINUTES,
            )
        return self.redirect("/verify?sent=1", session)

    def _send_code(self, session: access.Session, email: str) -> str | None:
        with transaction(self.store.database):
            refused = access.code_refusal(email)
            if refused:
                return refused
            code = access.new_code(self.secret, session, email)
            ticket = session.row.pending_ticket
            self.notifier.send(
                ticket,
                "verification_code",
                Recipient(email),
                code=code,
                code_minutes=CODE_MINUTES,
                mailbox=self._mailbox(ticket),
            )
        return None

    async def verify_form(self, request: web.Request) -> web.Response:
        session = await self.session(request)
        if session is None or not session.row.pending_email:
            raise web.HTTPGone()
        sent = request.query.get("sent") == "1"
        return await self.page(
            request,
            "code_enter",
            session,
            code_minutes=CODE_MINUTES,
            masked_email=access.mask(session.row.pending_email),
            notice="notice.code_sent" if sent else None,
            notice_args={"masked_email": access.mask(session.row.pending_email)},
        )

    async def verify(self, request: web.Request) -> web.Response:
        session = await self.session(request)
        data = await self.form(request, session)
        assert session is not None
        if not session.row.pending_email:
            raise web.HTTPGone()
        ok, error, left = await self.store.run(
            access.check_code, self.secret, session, str(data.get("code", ""))
        )
        if not ok:
            return await self.page(
                request,
                "code_enter",
                session,
                http_status=400,
                error=error,
                error_args={"left": left},
                code_minutes=CODE_MINUTES,
                masked_email=access.mask(session.row.pending_email),
            )
        fresh, pending, number = await self.store.run(_verified, session)
        email = fresh.row.email or ""
        if pending is not None:
            number = await self.submit(pending, email, request)
            return self.redirect(f"/tickets/{number}?created=1" if number else "/tickets", fresh)
        return self.redirect(f"/tickets/{number}" if number else "/tickets", fresh)

    async def logout(self, request: web.Request) -> web.Response:
        session = await self.session(request)
        await self.form(request, session)
        assert session is not None
        await self.store.run(session.row.delete_instance)
        response = self.redirect("/?bye=1")
        response.del_cookie(self.session_cookie, path="/")
        response.del_cookie(LINK_COOKIE, path="/")
        return response

    # --- tickets --------------------------------------------------------------

    async def verified(self, request: web.Request) -> access.Session:
        session = await self.session(request)
        if session is None or session.email is None:
            raise web.HTTPFound("/link")
        return session

    async def my_tickets(self, request: web.Request) -> web.Response:
        session = await self.verified(request)
        flt = {k: request.query.get(k, "") for k in ("status", "since", "until")}
        rows = await self.store.run(_my_tickets, session.email or "", flt)
        language = self.language(request)
        return await self.page(
            request,
            "tickets",
            session,
            tickets=[
                {
                    **row,
                    "status_label": self.pages_label(language, "status", row["status"]),
                    "priority_label": self.pages_label(language, "priority", row["priority"]),
                    "url": f"/tickets/{row['number']}",
                }
                for row in rows
            ],
            statuses=[("", self.text(language, "filter.any_status"))]
            + [(s, self.pages_label(language, "status", s)) for s in models.Ticket.STATUSES],
            filter=flt,
        )

    def text(self, language: str, key: str) -> str:
        return lookup(language, key)

    def pages_label(self, language: str, kind: str, code: str) -> str:
        return self.text(language, f"{kind}.{code}")

    async def show_ticket(self, request: web.Request) -> web.Response:
        session = await self.verified(request)
        number = int(request.match_info["number"])
        view = await self.store.run(_ticket_view, number, session.email or "")
        if view is None:
            raise web.HTTPNotFound()
        language = self.language(request)
        ticket = view["ticket"]
        ticket["status_label"] = self.pages_label(language, "status", ticket["status"])
        ticket["priority_label"] = self.pages_label(language, "priority", ticket["priority"])
        notice = {
            "sent": "notice.reply_sent",
            "closed": "notice.ticket_closed",
            "created": "notice.request_created",
        }
        shown = next((v for k, v in notice.items() if request.query.get(k) == "1"), None)
        return await self.page(
            request,
            "ticket",
            session,
            ticket=ticket,
            messages=view["messages"],
            can_close=ticket["status"] == "resolved",
            reply_url=f"/tickets/{number}/reply",
            close_url=f"/tickets/{number}/close",
            max_upload_label=self.upload_label(),
            notice=shown,
            notice_args={"number": number},
        )

    def upload_label(self) -> str:
        return f"{self.config.gateway.max_message_size // (1024 * 1024)} MB"

    async def download(self, request: web.Request) -> web.StreamResponse:
        session = await self.verified(request)
        found = await self.store.run(
            _attachment,
            int(request.match_info["number"]),
            int(request.match_info["id"]),
            session.email or "",
        )
        if found is None:
            raise web.HTTPNotFound()
        filename, content_type, data = found
        quoted = urllib.parse.quote(filename, safe="")
        return web.Response(
            body=data,
            headers={
                "Content-Type": content_type if "/" in content_type else "application/octet-stream",
                # The name is for the user's download folder only; RFC 6266 with a safe fallback.
                "Content-Disposition": (
                    f"attachment; filename=\"download\"; filename*=UTF-8''{quoted}"
                ),
                "Content-Security-Policy": DOWNLOAD_CSP,
            },
        )

    async def reply(self, request: web.Request) -> web.Response:
        session = await self.verified(request)
        number = int(request.match_info["number"])
        data = await self.form(request, session)
        text = str(data.get("text", "")).strip()
        files = _files(data)
        if not text and not files:
            return self.redirect(f"/tickets/{number}")
        raw = await self.store.run(
            _reply_message, self.config, number, session.email or "", text, files
        )
        if raw is None:
            raise web.HTTPNotFound()
        message, key_address = raw
        await self.spool(message.as_bytes(), session.email or "", key_address, request)
        return self.redirect(f"/tickets/{number}?sent=1", session)

    async def close(self, request: web.Request) -> web.Response:
        session = await self.verified(request)
        number = int(request.match_info["number"])
        await self.form(request, session)
        closed = await self.store.run(_close, self.config, number, session.email or "")
        if not closed:
            raise web.HTTPNotFound()
        return self.redirect(f"/tickets/{number}?closed=1", session)

    # --- satisfaction -------------------------------------------------------------

    async def rate(self, request: web.Request) -> web.Response:
        """Record the rating a link names; a POST adds the customer's comment.

        The token is checked before a POST's body is read, and the body is
        small: a stranger cannot make the portal read megabytes for nothing.
        """
        number, token = int(request.match_info["number"]), request.match_info["token"]
        if not await self.store.run(_rating_token_ok, self.secret, number, token):
            raise web.HTTPNotFound()
        comment = None
        if request.method == "POST":
            if (request.content_length or 0) > RATING_BODY_LIMIT:
                raise web.HTTPRequestEntityTooLarge(RATING_BODY_LIMIT, request.content_length or 0)
            data = await request.post()
            comment = str(data.get("comment", ""))
        found = await self.store.run(
            _rate,
            self.secret,
            int(request.match_info["number"]),
            request.match_info["token"],
            request.match_info["rating"],
            comment,
        )
        if found is None:
            raise web.HTTPNotFound()
        return await self.page(
            request,
            "rating",
            None,
            ticket_language=found.language,
            number=found.number,
            rating=request.match_info["rating"],
            comment=found.rating_comment or "",
            commented=comment is not None,
            max_comment=ratings.MAX_COMMENT,
            action=request.path,
        )

    # --- new requests and fresh links -----------------------------------------

    async def new_form(self, request: web.Request) -> web.Response:
        session = await self.session(request, create=True)
        return await self.page(request, "new", session, **self.new_context(request, {}))

    def new_context(self, request: web.Request, form: Any) -> dict[str, Any]:
        language = self.language(request)
        mailbox = self.config.mailboxes[0]
        categories = mailbox.categories or (mailbox.category,)
        return {
            "categories": [(c, catalog(language).get(f"category.{c}", c)) for c in categories],
            "priorities": [
                (p, self.pages_label(language, "priority", p)) for p in models.Ticket.PRIORITIES
            ],
            "form": {
                k: str(form.get(k, ""))
                for k in ("name", "email", "category", "priority", "subject", "text")
            },
            "max_upload_label": self.upload_label(),
        }

    async def new_request(self, request: web.Request) -> web.Response:
        session = await self.session(request)
        data = await self.form(request, session)
        assert session is not None
        email = str(data.get("email", "")).strip().lower()
        if not all(str(data.get(k, "")).strip() for k in ("email", "subject", "text")):
            return await self.page(
                request,
                "new",
                session,
                http_status=400,
                error="error.form_incomplete",
                **self.new_context(request, data),
            )
        if not _plausible_email(email):
            return await self.page(
                request,
                "new",
                session,
                http_status=400,
                error="error.bad_email",
                **self.new_context(request, data),
            )
        message = _new_message(self.config, data, email, _files(data))
        await self.store.run(_set_pending, session, email, None, message.as_bytes())
        refused = await self.store.run(self._send_code, session, email)
        self.on_queued()
        if refused:
            return await self.page(
                request,
                "new",
                session,
                http_status=429,
                error=refused,
                **self.new_context(request, data),
            )
        return self.redirect("/verify?sent=1", session)

    async def link_form(self, request: web.Request) -> web.Response:
        return await self.page(request, "link_request", await self.session(request, create=True))

    async def link_request(self, request: web.Request) -> web.Response:
        """A fresh link, sent only to the ticket's own address; the same answer always."""
        session = await self.session(request)
        data = await self.form(request, session)
        started = time.monotonic()
        number = str(data.get("number", "")).strip()
        email = str(data.get("email", "")).strip().lower()
        if number.isascii() and number.isdigit() and _plausible_email(email):
            await self.store.run(self._send_link, int(number), email)
            self.on_queued()
        # Answer in the same time whether or not a mail went out.
        await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
        return await self.page(request, "link_request", session, notice="link.sent")

    def _send_link(self, number: int, email: str) -> None:
        with transaction(self.store.database):
            ticket = models.Ticket.get_or_none(models.Ticket.number == number)
            if ticket is None or access.recent_links(email) >= access.LINKS_PER_HOUR:
                return
            if (
                not models.Participant.select()
                .where((models.Participant.ticket == ticket) & (models.Participant.email == email))
                .exists()
            ):
                return
            self.notifier.send(ticket, "guest_link", Recipient(email))

    # --- into the intake ------------------------------------------------------

    async def spool(self, raw: bytes, email: str, rcpt: str, request: web.Request) -> int:
        """Hand a guest's message to intake like any other mail; its inbound id."""
        envelope = Envelope(
            mail_from=email, rcpt_to=(rcpt,), protocol="portal", peer=request.remote or ""
        )
        return await internal.submit(self.config, self.intake, self.processor, raw, envelope)

    async def submit(self, raw: bytes, email: str, request: web.Request) -> int | None:
        """Send a verified new request into intake; the ticket number once processed."""
        inbound_id = await self.spool(raw, email, self.config.mailboxes[0].address, request)
        return await self.store.run(_ticket_of_inbound, inbound_id)

    def _mailbox(self, ticket: models.Ticket | None) -> Any:
        return self.config.mailbox(ticket.mailbox) if ticket else self.config.mailboxes[0]


# --- database work (runs in the Store's threads) ---------------------------------


def _set_pending(
    session: access.Session, email: str, ticket: models.Ticket | None, request: bytes | None
) -> None:
    if session.row.pending_email != email:
        access.forget_codes(session)  # a code proves only the address it went to
    session.row.pending_email = email
    session.row.pending_ticket = ticket
    session.row.pending_request = request
    session.row.save()


def _verified(session: access.Session) -> tuple[access.Session, bytes | None, int | None]:
    """Mark the session verified for its pending address, with a new cookie.

    Returns the new session, a pending new request, and the number of the
    ticket whose link brought the guest here.
    """
    row = session.row
    pending = bytes(row.pending_request) if row.pending_request else None
    row.email, row.verified_at, row.pending_request = row.pending_email, utcnow(), None
    row.save()
    number = row.pending_ticket.number if row.pending_ticket is not None else None
    return access.rotate(session), pending, number


def _my_tickets(email: str, flt: dict[str, str]) -> list[dict[str, Any]]:
    query = (
        models.Ticket.select()
        .join(models.Participant)
        .where(models.Participant.email == email)
        .order_by(models.Ticket.updated_at.desc())
    )
    if flt.get("status") in models.Ticket.STATUSES:
        query = query.where(models.Ticket.status == flt["status"])
    for key, op in (("since", "ge"), ("until", "lt")):
        moment = _date(flt.get(key, ""))
        if moment is not None:
            field = models.Ticket.created_at
            query = query.where(field >= moment if op == "ge" else field < moment)
    return [
        {
            "number": t.number,
            "subject": t.subject,
            "status": t.status,
            "priority": t.priority,
            "created_at": _shown(t.created_at),
            "updated_at": _shown(t.updated_at),
        }
        for t in query.limit(200)
    ]


def _ticket_for(number: int, email: str) -> models.Ticket | None:
    """The ticket, only if ``email`` is one of its participants."""
    found: models.Ticket | None = (
        models.Ticket.select()
        .join(models.Participant)
        .where((models.Ticket.number == number) & (models.Participant.email == email))
        .first()
    )
    return found


def _ticket_view(number: int, email: str) -> dict[str, Any] | None:
    ticket = _ticket_for(number, email)
    if ticket is None:
        return None
    messages = ticket.messages.where(models.Message.visibility == "public").order_by(
        models.Message.id
    )
    return {
        "ticket": {
            "number": ticket.number,
            "subject": ticket.subject,
            "status": ticket.status,
            "priority": ticket.priority,
            "created_at": _shown(ticket.created_at),
            "updated_at": _shown(ticket.updated_at),
        },
        "messages": [
            {
                # Agents by display name only: their own addresses stay private.
                "author_name": m.author_name
                or ("" if m.author_role == "agent" else m.author_email),
                "author_role": "agent" if m.author_role == "agent" else "customer",
                "is_me": m.author_email == email and m.author_role != "agent",
                "created_at": _shown(m.created_at),
                "text": m.text,
                "attachments": [
                    {
                        "filename": a.filename,
                        "size_label": _size(a.size),
                        "url": f"/tickets/{ticket.number}/files/{a.id}",
                    }
                    for a in m.attachments
                    if not a.inline
                ],
            }
            for m in messages
            if not m.auto
        ],
    }


def _attachment(number: int, attachment_id: int, email: str) -> tuple[str, str, bytes] | None:
    ticket = _ticket_for(number, email)
    if ticket is None:
        return None
    found = (
        models.Attachment.select(models.Attachment, models.Blob)
        .join(models.Message)
        .switch(models.Attachment)
        .join(models.Blob)
        .where(
            (models.Attachment.id == attachment_id)
            & (models.Message.ticket == ticket)
            & (models.Message.visibility == "public")
            # only what the ticket page lists: no machine mail, no inline parts
            & (models.Message.auto == False)  # noqa: E712 - SQL
            & (models.Attachment.inline == False)  # noqa: E712 - SQL
        )
        .first()
    )
    if found is None:
        return None
    return found.filename, found.content_type, bytes(found.blob.data)


def _rating_token_ok(secret: bytes, number: int, token: str) -> bool:
    ticket = models.Ticket.get_or_none(models.Ticket.number == number)
    return bool(secret) and ticket is not None and ratings.rater(secret, ticket, token) is not None


def _rate(
    secret: bytes, number: int, token: str, rating: str, comment: str | None
) -> models.Ticket | None:
    """Record the rating if ``token`` is a customer's of ticket ``number``; the ticket."""
    with transaction(models.database.obj):
        ticket = models.Ticket.get_or_none(models.Ticket.number == number)
        if ticket is None or not secret:
            return None
        rater = ratings.rater(secret, ticket, token)
        if rater is None:
            return None
        ratings.rate(ticket, rating, rater, comment)
        return ticket


def _close(config: Config, number: int, email: str) -> bool:
    with transaction(models.database.obj):
        ticket = _ticket_for(number, email)
        if ticket is None or ticket.status != "resolved":
            return ticket is not None and ticket.status == "closed"
        tickets.set_status(
            ticket,
            "closed",
            mailbox=config.mailbox_of(ticket.mailbox),
            actor=email,
            why="closed by the customer in the portal",
        )
    return True


def _reply_message(
    config: Config, number: int, email: str, text: str, files: list[tuple[str, str, bytes]]
) -> tuple[EmailMessage, str] | None:
    """The guest's reply as a mail to a fresh reply key of theirs, as if from their client."""
    with transaction(models.database.obj):
        ticket = _ticket_for(number, email)
        if ticket is None:
            return None
        mailbox = config.mailbox(ticket.mailbox) or config.mailboxes[0]
        participant = models.Participant.get(
            (models.Participant.ticket == ticket) & (models.Participant.email == email)
        )
        key_address = keys.address(mailbox.address, keys.new_key(ticket, email))
    message = internal.compose(
        config,
        participant.name,
        email,
        key_address,
        f"Re: {mailbox.format_tag(ticket.number)} {ticket.subject}",
        text,
        files,
    )
    return message, key_address


def _new_message(
    config: Config, data: Any, email: str, files: list[tuple[str, str, bytes]]
) -> EmailMessage:
    mailbox = config.mailboxes[0]
    message = internal.compose(
        config,
        str(data.get("name", "")).strip(),
        email,
        mailbox.address,
        str(data.get("subject", "")).strip(),
        str(data.get("text", "")),
        files,
    )
    for field in ("category", "priority"):
        value = header_safe(str(data.get(field, ""))).lower()
        if value:
            message[f"X-Gateway-{field.title()}"] = value
    return message


def _ticket_of_inbound(inbound_id: int | None) -> int | None:
    if inbound_id is None:
        return None
    message = models.Message.get_or_none(models.Message.inbound == inbound_id)
    return int(message.ticket.number) if message is not None else None


def _files(data: MultiDictProxy[Any]) -> list[tuple[str, str, bytes]]:
    """Uploaded files from a multipart form; names sanitized, never used as paths."""
    found = []
    for field in data.getall("files", []):
        if isinstance(field, web.FileField):
            content = field.file.read()
            if content:
                content_type = field.content_type or "application/octet-stream"
                # Some clients percent-encode non-ASCII names (RFC 7578 4.2 allows it).
                name = urllib.parse.unquote(field.filename or "")
                found.append((sanitize_filename(name, content_type), content_type, content))
    return found


def _plausible_email(email: str) -> bool:
    local, at, domain = email.partition("@")
    return bool(local and at and "." in domain and " " not in email and len(email) <= 254)


def _date(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _shown(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _size(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"
