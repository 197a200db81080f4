"""Deliver: hand one rendered outbound message to the next hop, and say how it went.

Where it sits: at the very end of the flow. The outbox worker claims an outbox
row and calls :meth:`Transport.send` once per recipient with the rendered
bytes; the worker owns the row, the backoff and the retry loop. This module
knows nothing of tickets, rows or retries: bytes and an envelope in, a
:class:`DeliveryResult` out. It never raises for a delivery problem.

The ``[gateway] outbound`` setting picks the transport (:func:`transport_from_url`)::

    smtp://[user@]host:port[?security=starttls|tls|none][&password_file=PATH]
                           [&cafile=PATH][&timeout=SECONDS]
    maildir:PATH

The three verdicts (RFC 5321 4.2.1: the first digit of a reply says whether
trying again can help):

    sent      the next hop took responsibility: 250 after DATA, or a file in new/
    deferred  try again later: a 4xx reply, network or TLS trouble, or a problem
              on our side of the session (no STARTTLS, AUTH refused, relay refuses
              us), which the operator can fix without the message bouncing
    failed    this message can never go out this way: 5xx to MAIL, RCPT or DATA,
              or an envelope that cannot be put on the wire
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import aiosmtplib

log = logging.getLogger("gateway.deliver")

Status = Literal["sent", "deferred", "failed"]
Security = Literal["starttls", "tls", "none"]

# Per step, not per message. RFC 5321 4.5.3.2 suggests minutes for a server
# that may be slow; a relay we own answers in seconds, and the outbox retries.
DEFAULT_TIMEOUT = 60.0
_SECURITY_LEVELS: tuple[Security, ...] = ("starttls", "tls", "none")
_SMTP_OPTIONS = ("cafile", "password_file", "security", "timeout")
# Python 3.11 folds the failures of several addresses (localhost: ::1 and
# 127.0.0.1) into one plain OSError whose text is all that is left of them.
_REFUSED_TEXT = f"[Errno {errno.ECONNREFUSED}]"


@dataclass(frozen=True)
class DeliveryResult:
    """The verdict on one delivery attempt; ``detail`` is one line for the outbox and the CLI."""

    status: Status
    detail: str


class Transport(Protocol):
    """Something that can take one message for one recipient."""

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> DeliveryResult:
        """Deliver ``message``; report the verdict instead of raising."""
        ...

    def describe(self) -> str:
        """Where mail goes, for logs; never contains a secret."""
        ...


def transport_from_url(url: str, base_dir: Path) -> Transport:
    """The transport for the ``[gateway] outbound`` URL; relative paths are under ``base_dir``.

    Raises ValueError with a message naming the problem for a bad URL or an
    unreadable password file or CA file.
    """
    url = url.strip()
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme == "maildir" and colon:
        return _maildir_from_url(rest, base_dir)
    if scheme == "smtp" and colon:
        return _smtp_from_url(url, base_dir)
    shown = f"{scheme!r}" if colon else "none"
    raise ValueError(
        f"outbound URL: unknown scheme {shown}; expected smtp://host:port or maildir:PATH"
    )


def _unsafe_envelope(envelope_from: str, recipient: str) -> str | None:
    """Why this envelope must not be used, or None.

    A CR or LF in an address would end the SMTP command line and let the rest
    be read as a new command (or a new header line in a maildir file).
    """
    if not recipient:
        return "empty recipient address"
    for name, address in (("sender", envelope_from), ("recipient", recipient)):
        if any(c in address for c in "\r\n\0"):
            return f"{name} address contains CR, LF or NUL: {address!r}"
    return None


def _one_line(text: str) -> str:
    """Multi-line replies and error texts folded into one line."""
    return " ".join(text.split())


# --- maildir ---------------------------------------------------------------


class MaildirTransport:
    """Delivery into a local Maildir, for development and for a local mail reader."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        """The maildir's absolute path."""
        return f"maildir:{self.path}"

    def __repr__(self) -> str:
        return f"<MaildirTransport {self.describe()}>"

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> DeliveryResult:
        """Write the message into new/; an I/O error defers (the disk may be full for now)."""
        problem = _unsafe_envelope(envelope_from, recipient)
        if problem:
            return DeliveryResult("failed", problem)
        data = _envelope_lines(envelope_from, recipient, message) + message
        try:
            name = await asyncio.to_thread(_write_maildir, self.path, data)
        except OSError as exc:
            log.warning("%s: cannot deliver to %s: %s", self.describe(), recipient, exc)
            return DeliveryResult("deferred", _one_line(f"{self.describe()}: {exc}"))
        return DeliveryResult("sent", f"delivered to {self.path / 'new' / name}")


def _envelope_lines(envelope_from: str, recipient: str, message: bytes) -> bytes:
    """Return-Path and Delivered-To lines, as a local MDA adds them (RFC 5321 4.4).

    They use the message's own line ending, so the file stays consistent.
    """
    first = message.find(b"\n")
    eol = b"\r\n" if first > 0 and message[first - 1 : first] == b"\r" else b"\n"
    return (
        b"Return-Path: <" + envelope_from.encode() + b">" + eol
        + b"Delivered-To: " + recipient.encode() + eol
    )  # fmt: skip


def _write_maildir(root: Path, data: bytes) -> str:
    """Write, fsync, rename into new/, fsync new/: a reader never sees half a message.

    This is the Maildir protocol (cr.yp.to/proto/maildir.html): the file is
    complete and on disk before the rename makes it visible, and the rename
    itself is made durable by syncing the directory. Returns the file name.
    """
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    name = _unique_name()
    tmp = root / "tmp" / name
    # 0600: these are customers' messages; O_EXCL: never clobber another file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.rename(root / "new" / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(root / "new")
    return name


def _unique_name() -> str:
    """time.MusecPpidRrandom.host, the Maildir spec's unique name.

    The random part keeps names unique across threads of one process and
    across clock steps; "/" and ":" in the host name would break the file name
    and the ":2," info suffix, so they are escaped as the spec says.
    """
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    usec = int((now % 1) * 1_000_000)
    return f"{int(now)}.M{usec}P{os.getpid()}R{secrets.token_hex(8)}.{host}"


def _fsync_directory(path: Path) -> None:
    """Make a rename inside ``path`` survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _maildir_from_url(rest: str, base_dir: Path) -> MaildirTransport:
    """``maildir:PATH``, PATH relative to ``base_dir`` unless absolute."""
    if not rest:
        raise ValueError("outbound URL 'maildir:': missing path (e.g. maildir:var/outbox)")
    if rest.startswith("//"):
        raise ValueError(
            f"outbound URL 'maildir:{rest}': write maildir:PATH "
            "(maildir:var/outbox or maildir:/srv/gw/outbox), not maildir://"
        )
    path = Path(rest)
    return MaildirTransport(path if path.is_absolute() else base_dir / path)


# --- SMTP ------------------------------------------------------------------


class SmtpTransport:
    """Delivery to a smarthost over SMTP, one connection per message.

    Security is explicit and never downgraded: ``starttls`` (the default)
    requires STARTTLS (RFC 3207) and refuses to talk in plaintext when the
    server does not offer it; ``tls`` is implicit TLS from the first byte
    (RFC 8314, port 465); ``none`` must be asked for. Certificates are always
    verified, against ``cafile`` when given, else the system trust store.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Security = "starttls",
        user: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.user = user
        self._password = password
        self._tls_context = tls_context or ssl.create_default_context()
        self.timeout = timeout

    def describe(self) -> str:
        """``smtp://[user@]host:port (security)``, without the password."""
        user = f"{urllib.parse.quote(self.user, safe='')}@" if self.user else ""
        return f"smtp://{user}{self._peer()} ({self.security})"

    def __repr__(self) -> str:
        return f"<SmtpTransport {self.describe()}>"

    def _peer(self) -> str:
        """host:port as it appears in error details ([v6]:port for IPv6)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def send(self, envelope_from: str, recipient: str, message: bytes) -> DeliveryResult:
        """One SMTP session: connect, secure, log in, one transaction, quit."""
        problem = _unsafe_envelope(envelope_from, recipient)
        if problem:
            return DeliveryResult("failed", problem)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security == "tls",
            # aiosmtplib's default (None) upgrades only "if supported": a silent
            # downgrade. _open_session does STARTTLS itself and refuses without it.
            start_tls=False,
            tls_context=self._tls_context,
            timeout=self.timeout,
        )
        try:
            session_problem = await self._open_session(client)
            if session_problem:
                result = DeliveryResult("deferred", session_problem)
            else:
                result = await self._transaction(client, envelope_from, recipient, message)
        finally:
            client.close()
            # The transport closes its socket in a loop callback: let it run now,
            # so no socket outlives the session (or a loop that ends after us).
            await asyncio.sleep(0)
        log.debug(
            "%s: <%s> -> <%s>: %s %s",
            self._peer(),
            envelope_from,
            recipient,
            result.status,
            result.detail,
        )
        return result

    async def _open_session(self, client: aiosmtplib.SMTP) -> str | None:
        """Connect, EHLO, STARTTLS and AUTH as configured; why it failed, or None.

        Everything that goes wrong here is about the relay or our settings,
        never about this message or its recipient, so it defers even on a 5xx:
        the mail waits for the operator instead of bouncing.
        """
        stage = "greeting"
        try:
            await client.connect()
            stage = "EHLO"
            await client.ehlo()
            if self.security == "starttls":
                if not client.supports_extension("starttls"):
                    # RFC 3207 4: a client that requires TLS must not go on without it;
                    # this also defeats a man in the middle who strips the STARTTLS line.
                    return "server does not offer STARTTLS; refusing to send in plaintext"
                stage = "STARTTLS"
                await client.starttls()
                # RFC 3207 4.2: forget the pre-TLS EHLO answer and ask again.
                stage = "EHLO"
                await client.ehlo()
            if self.user is not None:
                return await self._login(client)
        except aiosmtplib.SMTPResponseException as exc:
            return f"{stage}: {_reply(exc.code, exc.message)}"
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _network_problem(exc, self._peer())
        return None

    async def _login(self, client: aiosmtplib.SMTP) -> str | None:
        """AUTH (RFC 4954); a refusal is our configuration's fault, so it defers."""
        assert self.user is not None and self._password is not None
        if not client.supports_extension("auth"):
            return f"server does not offer AUTH; cannot log in as {self.user}"
        try:
            await client.login(self.user, self._password)
        except aiosmtplib.SMTPResponseException as exc:
            # 535 5.7.8 is a 5xx, but bouncing every message because our password
            # expired would be wrong: the mail waits until the operator fixes it.
            return f"authentication as {self.user} failed: {_reply(exc.code, exc.message)}"
        return None

    async def _transaction(
        self, client: aiosmtplib.SMTP, envelope_from: str, recipient: str, message: bytes
    ) -> DeliveryResult:
        """MAIL, RCPT, DATA: the part where a 5xx is about this message and so final."""
        options = _mail_options(client, envelope_from, recipient, message)
        if isinstance(options, DeliveryResult):
            return options
        try:
            _, reply = await client.sendmail(
                envelope_from, [recipient], message, mail_options=options
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0]
            return _verdict(refused.code, refused.message, rcpt=True)
        except aiosmtplib.SMTPResponseException as exc:
            return _verdict(exc.code, exc.message)
        except ValueError as exc:
            # aiosmtplib refuses addresses that cannot be put on a command line.
            return DeliveryResult("failed", _one_line(str(exc)))
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Lost in the middle: the server may or may not have the message; RFC 5321
            # 6.1 prefers a possible duplicate to a lost message, so try again.
            return DeliveryResult("deferred", _network_problem(exc, self._peer()))
        # The server took responsibility with its 250 (RFC 5321 6.1); a failing
        # QUIT cannot change that any more.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
        return DeliveryResult("sent", _reply(250, reply))


def _mail_options(
    client: aiosmtplib.SMTP, envelope_from: str, recipient: str, message: bytes
) -> list[str] | DeliveryResult:
    """MAIL FROM parameters the message needs, or a failure when the server lacks them."""
    options: list[str] = []
    if not (envelope_from + recipient).isascii():
        # RFC 6531 3.4: non-ASCII addresses need SMTPUTF8; aiosmtplib fails the
        # transaction with SMTPNotSupported if the server does not offer it.
        if not client.supports_extension("smtputf8"):
            return DeliveryResult(
                "failed", "server does not offer SMTPUTF8, needed for a non-ASCII address"
            )
        options.append("SMTPUTF8")
    if not message.isascii():
        # RFC 6152 3: 8-bit data may only go to a server that offers 8BITMIME.
        if not client.supports_extension("8bitmime"):
            return DeliveryResult(
                "failed", "message has 8-bit data but the server does not offer 8BITMIME"
            )
        options.append("BODY=8BITMIME")
    return options


def _verdict(code: int, text: str, *, rcpt: bool = False) -> DeliveryResult:
    """Map a refusal during MAIL, RCPT or DATA to a verdict (RFC 5321 4.2.1)."""
    detail = _reply(code, text)
    if rcpt and code == 552:
        # RFC 5321 4.5.3.1.10: 552 on RCPT is an old misuse for "too many
        # recipients", which clients should treat as temporary.
        return DeliveryResult("deferred", detail)
    if 500 <= code <= 599:
        return DeliveryResult("failed", detail)
    # 4xx is transient by definition; anything else (a garbled reply) is not
    # proof that the message can never be delivered.
    return DeliveryResult("deferred", detail)


def _reply(code: int, text: str) -> str:
    """A server reply as one line: ``451 4.7.1 Try again later``."""
    return _one_line(f"{code} {text}")


def _network_problem(exc: BaseException, peer: str) -> str:
    """One line saying what went wrong below SMTP: refused, DNS, TLS, timeout, hang-up."""
    cause = exc.__cause__ if isinstance(exc, aiosmtplib.SMTPConnectError) else None
    cause = cause or exc
    if isinstance(cause, ConnectionRefusedError) or _REFUSED_TEXT in str(cause):
        return f"connection refused: {peer}"
    if isinstance(cause, socket.gaierror):
        return f"DNS lookup failed: {peer}: {cause.strerror}"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS handshake failed: {peer}: {cause.verify_message or cause.reason}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed: {peer}: {cause.reason or cause}"
    if isinstance(cause, TimeoutError):
        return _one_line(f"timed out: {peer}: {cause}")
    if isinstance(cause, ConnectionError):
        return _one_line(f"server disconnected: {peer}: {cause}")
    return _one_line(f"{peer}: {str(cause) or type(cause).__name__}")


def _smtp_from_url(url: str, base_dir: Path) -> SmtpTransport:
    """Parse ``smtp://[user@]host:port?options`` into a transport."""
    parts = urllib.parse.urlsplit(url)
    shown = _redacted(parts)

    def bad(problem: str) -> ValueError:
        return ValueError(f"outbound URL {shown!r}: {problem}")

    if parts.password is not None:
        raise bad(
            "do not put the password in the URL (it ends up in logs); "
            "write it to a file and add ?password_file=PATH"
        )
    if not parts.hostname:
        raise bad("missing host (expected smtp://host:port)")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be a number from 1 to 65535") from None
    if port is None:
        raise bad(
            "missing port; write it out, e.g. smtp://relay.example.com:587 "
            "(STARTTLS) or :465 with ?security=tls"
        )
    if port == 0:
        raise bad("the port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.fragment:
        raise bad("unexpected path or fragment after host:port")
    options = _query_options(parts.query, bad)
    security = _security(options.get("security", "starttls"), bad)
    user = urllib.parse.unquote(parts.username) if parts.username else None
    return SmtpTransport(
        parts.hostname,
        port,
        security=security,
        user=user,
        password=_password(user, security, options.get("password_file"), base_dir, bad),
        tls_context=_tls_context(options.get("cafile"), security, base_dir, bad),
        timeout=_timeout(options.get("timeout"), bad),
    )


def _redacted(parts: urllib.parse.SplitResult) -> str:
    """The URL for error messages, with any password in it masked."""
    if parts.password is None:
        return parts.geturl()
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def _query_options(query: str, bad: Callable[[str], ValueError]) -> dict[str, str]:
    """The ?key=value options; unknown or repeated keys are errors, not ignored."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise bad(f"malformed query {query!r}") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _SMTP_OPTIONS:
            raise bad(f"unknown option {key!r} (known: {', '.join(_SMTP_OPTIONS)})")
        if key in options:
            raise bad(f"option {key!r} given twice")
        options[key] = value
    return options


def _security(value: str, bad: Callable[[str], ValueError]) -> Security:
    """One of starttls (default), tls, none."""
    for level in _SECURITY_LEVELS:
        if value == level:
            return level
    raise bad(f"security must be one of {', '.join(_SECURITY_LEVELS)}, not {value!r}")


def _password(
    user: str | None,
    security: Security,
    password_file: str | None,
    base_dir: Path,
    bad: Callable[[str], ValueError],
) -> str | None:
    """The password from ``password_file``, read once at startup, trailing newline removed."""
    if user is None:
        if password_file is not None:
            raise bad("password_file given but no user (smtp://user@host:port)")
        return None
    if password_file is None:
        raise bad(f"user {user!r} needs ?password_file=PATH")
    if security == "none":
        # Sending a password in plaintext hands it to anyone on the path.
        raise bad("refusing to send a password with security=none; use starttls or tls")
    path = Path(password_file)
    path = path if path.is_absolute() else base_dir / path
    try:
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise bad(f"cannot read password_file {path}: {reason}") from None
    if not password:
        raise bad(f"password_file {path} is empty")
    return password


def _tls_context(
    cafile: str | None, security: Security, base_dir: Path, bad: Callable[[str], ValueError]
) -> ssl.SSLContext | None:
    """A verifying TLS context; ``cafile`` replaces the system trust store (a private CA)."""
    if cafile is None:
        return None
    if security == "none":
        raise bad("cafile has no effect with security=none")
    path = Path(cafile)
    path = path if path.is_absolute() else base_dir / path
    try:
        return ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise bad(f"cannot load cafile {path}: {exc.strerror or exc}") from None


def _timeout(value: str | None, bad: Callable[[str], ValueError]) -> float:
    """Seconds allowed for each step of the session (connect, each command)."""
    if value is None:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise bad(f"timeout must be a positive number of seconds, not {value!r}")
    return seconds
