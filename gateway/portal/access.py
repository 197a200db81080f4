"""Guest access: ticket links, browser sessions and one-time codes.

The rules, and the attack each one stops:

- A link carries 128 random bits; only their SHA-256 is stored, so a copy of
  the database opens nothing. It is bound to one ticket and one address,
  expires (link_lifetime), and can be revoked.
- A link alone shows nothing but a masked address: whoever forwarded or leaked
  a mail must still prove they read that mailbox, with a 6-digit code sent to
  it. Codes: from ``secrets``, stored as an HMAC under the gateway's secret,
  valid 10 minutes, single use, bound to the browser session that asked for
  it, at most 5 wrong tries; at most 5 per hour and one per minute for an
  address, and a global cap so that nobody turns us into a mail cannon.
- The session cookie is rotated when the code is verified (no fixation), and
  sessions have an idle and an absolute timeout.

Everything here is synchronous database work; the portal runs it through the
Store's thread pool.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gateway import models
from gateway.db import transaction, utcnow
from gateway.events import record

CODE_LIFETIME = dt.timedelta(minutes=10)
CODE_TRIES = 5
CODES_PER_HOUR = 5
CODE_INTERVAL = dt.timedelta(seconds=60)
GLOBAL_CODES_PER_MINUTE = 60
SESSION_IDLE = dt.timedelta(minutes=30)
SESSION_PENDING = dt.timedelta(hours=1)
SESSION_ABSOLUTE = dt.timedelta(hours=12)
LINKS_PER_HOUR = 3


def digest(secret_value: str) -> str:
    """What is stored for a link token or a session id: 128+ random bits, so SHA-256."""
    return hashlib.sha256(secret_value.encode("utf-8", "surrogatepass")).hexdigest()


def mask(email: str) -> str:
    """n***@gmail.com: enough for the owner to recognise, little for a stranger."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


# --- links ------------------------------------------------------------------


def new_link(ticket: models.Ticket, email: str, lifetime: int) -> str:
    """Create a link token for ``email`` on ``ticket``; return the token itself."""
    token = secrets.token_urlsafe(24)  # 192 bits
    now = utcnow()
    models.GuestLink.create(
        token_hash=digest(token),
        ticket=ticket,
        email=email.lower(),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=lifetime),
    )
    return token


def valid_link(token: str) -> models.GuestLink | None:
    """The live link for ``token``, or None (unknown, expired or revoked)."""
    # The ticket is joined in, so that callers on the event loop never lazy-load it.
    found: models.GuestLink | None = (
        models.GuestLink.select(models.GuestLink, models.Ticket)
        .join(models.Ticket)
        .where(
            (models.GuestLink.token_hash == digest(token))
            & (models.GuestLink.expires_at > utcnow())
            & models.GuestLink.revoked_at.is_null()
        )
        .first()
    )
    return found


def revoke_links(number: int, email: str | None = None) -> int:
    """Stop a ticket's live links (one guest's, or all); how many were live."""
    ticket = models.Ticket.get_or_none(models.Ticket.number == number)
    if ticket is None:
        return 0
    links = models.GuestLink
    where = (links.ticket == ticket) & links.revoked_at.is_null()
    if email:
        where &= links.email == email.lower()
    with transaction(models.database.obj):
        count = int(links.update(revoked_at=utcnow()).where(where).execute())
        record(ticket, "links_revoked", count=count, email=email)
    return count


def recent_links(email: str) -> int:
    """Links sent to ``email`` in the last hour through the portal's link form."""
    since = utcnow() - dt.timedelta(hours=1)
    return int(
        models.GuestLink.select()
        .where((models.GuestLink.email == email.lower()) & (models.GuestLink.created_at > since))
        .count()
    )


# --- sessions -----------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    """A browser session as the portal sees it."""

    row: models.GuestSession
    cookie: str  # the value to (re)send; differs from the request's after rotation

    @property
    def email(self) -> str | None:
        return self.row.email if self.row.verified_at is not None else None


def new_session() -> Session:
    cookie = secrets.token_urlsafe(32)
    now = utcnow()
    row = models.GuestSession.create(
        id_hash=digest(cookie), csrf=secrets.token_urlsafe(24), created_at=now, last_seen_at=now
    )
    return Session(row, cookie)


def load_session(cookie: str | None) -> Session | None:
    """The live session for a cookie value; expired ones are treated as absent."""
    if not cookie:
        return None
    row: models.GuestSession | None = models.GuestSession.get_or_none(
        models.GuestSession.id_hash == digest(cookie)
    )
    if row is None:
        return None
    now = utcnow()
    idle = SESSION_IDLE if row.verified_at else SESSION_PENDING
    if now - row.last_seen_at > idle or now - row.created_at > SESSION_ABSOLUTE:
        row.delete_instance()
        return None
    if now - row.last_seen_at > dt.timedelta(minutes=1):
        row.last_seen_at = now
        row.save()
    return Session(row, cookie)


def rotate(session: Session) -> Session:
    """A new cookie (and CSRF token) for the same session: at every privilege change."""
    cookie = secrets.token_urlsafe(32)
    session.row.id_hash = digest(cookie)
    session.row.csrf = secrets.token_urlsafe(24)
    session.row.save()
    return Session(session.row, cookie)


def csrf_ok(session: Session | None, given: str) -> bool:
    return session is not None and bool(given) and hmac.compare_digest(session.row.csrf, given)


# --- codes --------------------------------------------------------------------


def code_refusal(email: str) -> str | None:
    """Why no code may be sent to ``email`` now (a catalog key), or None."""
    now = utcnow()
    codes = models.GuestCode
    last = codes.select().where(codes.email == email).order_by(codes.created_at.desc()).first()
    if last is not None and now - last.created_at < CODE_INTERVAL:
        return "error.code_too_soon"
    hour = (
        codes.select()
        .where((codes.email == email) & (codes.created_at > now - dt.timedelta(hours=1)))
        .count()
    )
    if hour >= CODES_PER_HOUR:
        return "error.code_limit"
    minute = codes.select().where(codes.created_at > now - dt.timedelta(minutes=1)).count()
    if minute >= GLOBAL_CODES_PER_MINUTE:
        return "error.rate_limited"
    return None


def new_code(secret: bytes, session: Session, email: str) -> str:
    """A fresh 6-digit code for ``email``, bound to this session; older ones die."""
    now = utcnow()
    codes = models.GuestCode
    codes.update(used_at=now).where(
        (codes.session == session.row) & codes.used_at.is_null()
    ).execute()
    code = f"{secrets.randbelow(10**6):06d}"
    row = codes.create(
        session=session.row,
        email=email,
        code_hash="",
        created_at=now,
        expires_at=now + CODE_LIFETIME,
    )
    row.code_hash = _code_hash(secret, row.id, code)
    row.save()
    return code


def check_code(secret: bytes, session: Session, given: str) -> tuple[bool, str | None, int]:
    """(ok, error key, tries left) for a code typed into this session.

    The code must have been sent to the address the session is proving now:
    a code mailed to the attacker's own address must not verify the victim's
    (found in review). The try is counted before the comparison, in one
    UPDATE, so parallel guesses cannot get more than CODE_TRIES looks.
    """
    now = utcnow()
    codes = models.GuestCode
    row = (
        codes.select()
        .where(
            (codes.session == session.row)
            & codes.used_at.is_null()
            & (codes.email == (session.row.pending_email or ""))
        )
        .order_by(codes.id.desc())
        .first()
    )
    if row is None or row.expires_at < now:
        return False, "error.code_expired", 0
    counted = (
        codes.update(attempts=codes.attempts + 1)
        .where((codes.id == row.id) & (codes.attempts < CODE_TRIES))
        .execute()
    )
    if not counted:
        return False, "error.code_locked", 0
    # Compare HMACs in constant time; a wrong try counts even if the format is off.
    if hmac.compare_digest(row.code_hash, _code_hash(secret, row.id, normalise_code(given))):
        used = codes.update(used_at=now).where((codes.id == row.id) & codes.used_at.is_null())
        return (True, None, 0) if used.execute() else (False, "error.code_expired", 0)
    left = CODE_TRIES - (row.attempts + 1)
    return False, ("error.code_wrong" if left > 0 else "error.code_locked"), max(left, 0)


def forget_codes(session: Session) -> None:
    """Retire the session's unused codes (its pending address changed)."""
    models.GuestCode.update(used_at=utcnow()).where(
        (models.GuestCode.session == session.row) & models.GuestCode.used_at.is_null()
    ).execute()


def normalise_code(text: str) -> str:
    """Digits only, Persian and full-width digits as ASCII (phones type them)."""
    return "".join(str(int(c)) for c in text if c.isdecimal())[:6]


def _code_hash(secret: bytes, code_id: int, code: str) -> str:
    return hmac.new(secret, f"{code_id}:{code}".encode(), hashlib.sha256).hexdigest()


def purge(now: dt.datetime | None = None) -> int:
    """Delete expired sessions, codes and links (for the scheduler)."""
    now = now or utcnow()
    removed = models.GuestCode.delete().where(models.GuestCode.expires_at < now).execute()
    sessions = models.GuestSession
    removed += (
        sessions.delete()
        .where(
            (sessions.created_at < now - SESSION_ABSOLUTE)
            | (sessions.last_seen_at < now - max(SESSION_IDLE, SESSION_PENDING))
        )
        .execute()
    )
    removed += models.GuestLink.delete().where(models.GuestLink.expires_at < now).execute()
    return int(removed)
