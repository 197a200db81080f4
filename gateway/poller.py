"""Poller: read a mailbox's IMAP folder into intake, like a listener that dials out.

Where it sits: beside the SMTP/LMTP listener, in front of intake. One
:class:`Poller` per mailbox with an ``[mailbox.imap]`` table runs as a task
on the daemon's event loop (aioimaplib). Each session connects (implicit TLS,
or STARTTLS that must succeed: we never fall back to plaintext), logs in
(LOGIN, or AUTHENTICATE XOAUTH2), SELECTs the folder, imports every message
above the checkpoint, then waits with IDLE (RFC 2177) where offered, else
polls every ``poll_interval``. Any failure closes the session and retries
with exponential backoff and jitter; each new session starts with a full
resync from the checkpoint.

Losing nothing, importing nothing twice. For each message, oldest UID first:

1. ``UID FETCH uid BODY.PEEK[]`` (RFC 3501 6.4.5: PEEK leaves \\Seen alone,
   so a message we never stored never looks read to a human);
2. ``Intake.spool`` commits the bytes; only then is it ours (DESIGN: never set
   \\Seen or move a message before its bytes are committed);
3. after each batch, ``last_uid`` in ``imap_checkpoint`` is advanced to the
   batch's highest handled UID, in its own commit;
4. then the batch is moved, flagged or deleted on the server (``after_import``).

A crash between 2 and 3 re-fetches messages that are already stored: intake
is idempotent (same Message-ID and content is stored once), so the second
spool finds the first row and nothing new is processed. A crash between 3
and 4 leaves imported messages in the folder below ``last_uid``: they are
never fetched again (UIDs only grow while UIDVALIDITY holds, RFC 3501
2.3.1.1), and each session starts by applying ``after_import`` to such
leftovers, so the folder empties too. A changed UIDVALIDITY means the UIDs
we remember name nothing any more: we log a warning, restart at UID 0 and
import the whole folder again, which intake's idempotency turns into no new
rows for messages we already had.

Too big. SMTP answers 552 to a message over ``max_message_size``; over IMAP
there is no sender to refuse, so such a message is imported like any other
and processing quarantines it with the reason (``quarantine list``; raise the
limit and ``quarantine retry`` it). Only beyond OVERSIZE_FETCH times the limit
is it not downloaded at all, since holding it in memory is what the limit
protects us from: it stays in the folder for a person, the poller logs an
error and shows it in ``ticket-gateway status``, and the checkpoint moves past
it so that one message cannot stop a mailbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import re
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr
from typing import Any

import aioimaplib

from gateway import models
from gateway.config import Config, ImapSettings, Mailbox
from gateway.db import Store, transaction, utcnow
from gateway.errors import GatewayError, ImapError
from gateway.intake import Delivery, Envelope, Intake, split_header
from gateway.process import Processing

log = logging.getLogger("gateway.poller")

# Messages up to this many times max_message_size are fetched (and then
# quarantined as too big); larger ones are left on the server untouched.
OVERSIZE_FETCH = 4

BATCH = 50  # UIDs fetched and checkpointed together; bounds memory and round trips
TIMEOUT = 60.0  # seconds for one IMAP command (reset while data flows)
# RFC 2177: servers may drop an IDLE after 30 minutes; re-issue well before.
IDLE_RENEW = 25 * 60.0
OAUTH2_SESSION = 45 * 60.0  # reconnect (with a fresh token) before a typical 60 min expiry
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_EXISTS = re.compile(rb"^\* \d+ EXISTS")
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


@dataclass(frozen=True)
class PollerState:
    """What ``ticket-gateway status`` shows about a poller."""

    connected: bool = False
    last_success: dt.datetime | None = None
    last_error: str | None = None
    backlog: int = 0  # messages above the checkpoint at the last search, not yet handled


class _Protocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, noting every untagged EXISTS (RFC 3501 7.3.1).

    A server reports a new message with the response to whatever command is
    running; aioimaplib drops it unless that command is IDLE. A message that
    arrives during our SEARCH would then wait for the next IDLE renewal.
    """

    news = False

    def _untagged_response(self, line: bytes) -> Any:
        if _EXISTS.match(line):
            self.news = True
        return super()._untagged_response(line)


class _Client(aioimaplib.IMAP4):  # type: ignore[misc]
    """aioimaplib's client with :class:`_Protocol`."""

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: Any = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        loop = loop or asyncio.get_running_loop()
        self.protocol = _Protocol(loop, conn_lost_cb)
        self._client_task = loop.create_task(
            loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


class Poller:
    """Imports one mailbox's IMAP folder through intake, forever (until cancelled)."""

    def __init__(
        self,
        config: Config,
        mailbox: Mailbox,
        store: Store,
        intake: Intake,
        processor: Processing,
    ) -> None:
        assert mailbox.imap is not None
        self.config = config
        self.mailbox = mailbox
        self.settings: ImapSettings = mailbox.imap
        self.store = store
        self.intake = intake
        self.processor = processor
        self.state = PollerState()
        self._failures = 0
        self._lost = asyncio.Event()

    @property
    def name(self) -> str:
        return self.mailbox.address

    async def run(self) -> None:
        """Sessions, one after another, with backoff after each failure."""
        while True:
            try:
                await self._session()
                continue  # a planned reconnect (fresh OAuth2 token): no backoff
            except asyncio.CancelledError:
                # Stopping: status must not go on saying "connected".
                with contextlib.suppress(Exception):
                    await self._set_state(connected=False)
                raise
            except (GatewayError, OSError, TimeoutError, aioimaplib.AioImapException) as exc:
                await self._failed(exc)
            except Exception as exc:  # a bug of ours: keep the poller alive, say so
                log.exception("%s: poller error", self.name)
                await self._failed(exc)
            await asyncio.sleep(self._backoff())

    def _backoff(self) -> float:
        """1s, 2s, 4s ... at most 5 minutes, each +-20% so many pollers do not align."""
        return _delay(self._failures) * random.uniform(0.8, 1.2)  # jitter, not a secret

    async def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        text = str(exc) or type(exc).__name__
        log.error(
            "%s: IMAP %s:%d: %s (retry %d in about %.0fs)",
            self.name,
            self.settings.host,
            self.settings.port,
            text,
            self._failures,
            _delay(self._failures),
        )
        await self._set_state(connected=False, last_error=text)

    async def _session(self) -> None:
        """Connect, log in, select, then sync and wait until something fails."""
        self._lost = asyncio.Event()
        client = await self._connect()
        try:
            await self._login(client)
            uidvalidity = await self._select(client)
            await self._prepare(client)
            await self._set_state(connected=True)
            started = asyncio.get_running_loop().time()
            log.info(
                "%s: connected to %s:%d folder %s (uidvalidity %d)",
                self.name,
                self.settings.host,
                self.settings.port,
                self.settings.folder,
                uidvalidity,
            )
            while True:
                client.protocol.news = False
                await self._sync(client, uidvalidity)
                self._failures = 0
                if client.protocol.news:
                    continue  # mail arrived while we were busy: look again before waiting
                if self._session_expired(started):
                    log.info("%s: reconnecting for a fresh OAuth2 token", self.name)
                    return
                await self._wait(client)
        finally:
            await self._close(client)

    def _session_expired(self, started: float) -> bool:
        elapsed = asyncio.get_running_loop().time() - started
        return self.settings.oauth2 is not None and elapsed > OAUTH2_SESSION

    # --- connecting --------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ca = str(self.settings.ca_file) if self.settings.ca_file else None
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)

    async def _connect(self) -> Any:
        """A greeted client, encrypted unless ``security = "plain"`` (with insecure)."""
        s = self.settings
        tls = self._ssl_context() if s.security == "tls" else None
        client = _Client(
            host=s.host,
            port=s.port,
            timeout=TIMEOUT,
            conn_lost_cb=lambda _exc: self._lost.set(),
            ssl_context=tls,
        )
        try:
            await client.wait_hello_from_server()
            if s.security == "starttls":
                await self._starttls(client)
        except BaseException:
            await self._close(client)
            raise
        return client

    async def _starttls(self, client: Any) -> None:
        """Upgrade to TLS or refuse to go on (RFC 3501 6.2.1).

        A server (or someone in between) that does not offer STARTTLS, or
        answers it with anything but OK, gets no login: falling back to a
        plaintext LOGIN would hand the password to whoever stripped TLS.
        """
        protocol = client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError("server does not offer STARTTLS; refusing to log in without TLS")
        command = aioimaplib.Command(
            "STARTTLS", protocol.new_tag(), loop=asyncio.get_running_loop()
        )
        response = await asyncio.wait_for(protocol.execute(command), TIMEOUT)
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused ({_text(response)}); refusing to log in without TLS")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport, protocol, self._ssl_context(), server_hostname=self.settings.host
        )
        # RFC 3501 6.2.1: capabilities seen before TLS must be forgotten.
        await asyncio.wait_for(protocol.capability(), TIMEOUT)

    async def _login(self, client: Any) -> None:
        s = self.settings
        if s.oauth2 is not None:
            token = await self._token()
            response = await client.xoauth2(s.username, token)
        else:
            password = await asyncio.to_thread(self._password)
            response = await client.login(_quote(s.username), password)
        _check(response, "authentication failed")
        # Dovecot and others announce MOVE/UIDPLUS only once logged in.
        await asyncio.wait_for(client.protocol.capability(), TIMEOUT)

    def _password(self) -> str:
        """The first line of password_file (read at each login, so rotation works)."""
        path = self.settings.password_file
        assert path is not None
        try:
            return path.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            raise ImapError(f"cannot read password_file {path}: {exc}") from exc

    async def _token(self) -> str:
        """A fresh XOAUTH2 access token; a failure is logged loudly and shown in status."""
        oauth2 = self.settings.oauth2
        assert oauth2 is not None
        try:
            if oauth2.token_file is not None:
                text = await asyncio.to_thread(oauth2.token_file.read_text, encoding="utf-8")
            else:
                text = await _run_token_command(oauth2.token_command)
        except (OSError, UnicodeDecodeError, ImapError, TimeoutError) as exc:
            log.error("%s: OAuth2 token refresh FAILED: %s", self.name, exc)
            raise ImapError(f"OAuth2 token refresh failed: {exc}") from exc
        token = text.strip()
        if not token:
            raise ImapError("OAuth2 token refresh failed: the token is empty")
        return token

    async def _select(self, client: Any) -> int:
        response = await client.select(_quote(self.settings.folder))
        _check(response, f"cannot select folder {self.settings.folder}")
        for line in response.lines:
            match = _UIDVALIDITY.search(bytes(line))
            if match:
                return int(match.group(1))
        raise ImapError("the server gave no UIDVALIDITY (RFC 3501 6.3.1 requires it)")

    async def _prepare(self, client: Any) -> None:
        """Create the move folder if needed (an existing one answers NO: fine)."""
        if self.settings.move_to:
            await client.create(_quote(self.settings.move_to))

    async def _close(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            if not self._lost.is_set():
                await asyncio.wait_for(client.logout(), 5)
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()

    # --- importing ---------------------------------------------------------

    async def _sync(self, client: Any, uidvalidity: int) -> None:
        """Import everything above the checkpoint, then tidy leftovers."""
        last_uid = await self.store.run(checkpoint, self.name, self.settings.folder, uidvalidity)
        await self._leftovers(client, last_uid)
        uids = [u for u in await self._search(client, f"UID {last_uid + 1}:*") if u > last_uid]
        await self._set_state(backlog=len(uids))
        if uids:
            log.info("%s: %d new message(s) above UID %d", self.name, len(uids), last_uid)
        for batch in _chunks(uids, BATCH):
            await self._import_batch(client, uidvalidity, batch)
            await self._set_state(backlog=max(0, self.state.backlog - len(batch)))
        await self._set_state(connected=True, last_success=utcnow(), last_error=None)

    async def _import_batch(self, client: Any, uidvalidity: int, batch: Sequence[int]) -> None:
        sizes = await self._sizes(client, batch)
        handled: list[int] = []
        imported: list[int] = []
        try:
            for uid in batch:
                if await self._import_one(client, uid, sizes.get(uid)):
                    imported.append(uid)
                handled.append(uid)
        finally:
            # Even when a message failed: what was committed before it is done.
            if handled:
                await self.store.run(
                    advance, self.name, self.settings.folder, uidvalidity, max(handled)
                )
                await self._after_import(client, imported)

    async def _import_one(self, client: Any, uid: int, size: int | None) -> bool:
        """Spool one message; False when it was skipped (far too big, or gone)."""
        limit = self.config.gateway.max_message_size * OVERSIZE_FETCH
        if size is not None and size > limit:
            error = (
                f"UID {uid} is {size} bytes, over {OVERSIZE_FETCH} x max_message_size; "
                "left in the folder"
            )
            log.error("%s: %s", self.name, error)
            await self._set_state(last_error=error)
            return False
        raw = await self._fetch(client, uid)
        if raw is None:
            log.warning("%s: UID %d vanished before it was fetched", self.name, uid)
            return False
        spooled = await self.intake.spool(
            raw, self._envelope(raw), [Delivery(self.name, (self.name,))]
        )
        for item in spooled:
            if not item.duplicate:
                self.processor.submit(item.inbound_id)
        return True

    def _envelope(self, raw: bytes) -> Envelope:
        return Envelope(
            mail_from=envelope_sender(raw),
            rcpt_to=(self.name,),
            protocol="imap",
            peer=self.settings.host,
        )

    async def _search(self, client: Any, criteria: str) -> list[int]:
        response = await client.uid_search(criteria, charset=None)
        _check(response, f"UID SEARCH {criteria} failed")
        uids: set[int] = set()
        for line in response.lines[:-1]:  # the last line is the tagged status text
            words = bytes(line).split()
            if words[:1] == [b"SEARCH"]:  # aioimaplib strips it, but keep either form
                words = words[1:]
            if words and all(w.isdigit() for w in words):
                uids.update(int(w) for w in words)
        return sorted(uids)

    async def _sizes(self, client: Any, batch: Sequence[int]) -> dict[int, int]:
        response = await client.uid("fetch", _uid_set(batch), "(UID RFC822.SIZE)")
        _check(response, "UID FETCH RFC822.SIZE failed")
        sizes: dict[int, int] = {}
        for line in response.lines:
            text = bytes(line)
            uid, size = _UID.search(text), _SIZE.search(text)
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    async def _fetch(self, client: Any, uid: int) -> bytes | None:
        """The message's exact bytes, without setting \\Seen (BODY.PEEK, RFC 3501 6.4.5)."""
        response = await client.uid("fetch", str(uid), "BODY.PEEK[]")
        _check(response, f"UID FETCH {uid} failed")
        for line in response.lines:
            if isinstance(line, bytearray):  # aioimaplib hands literals as bytearray
                return bytes(line)
        return None

    # --- after import ------------------------------------------------------

    async def _leftovers(self, client: Any, last_uid: int) -> None:
        """Apply after_import to messages imported before a crash cut it short."""
        if last_uid == 0:
            return
        limit = self.config.gateway.max_message_size * OVERSIZE_FETCH
        criteria = f"UID 1:{last_uid} NOT LARGER {limit}"
        if self.settings.after_import == "flag":
            criteria += " UNSEEN"
        uids = [u for u in await self._search(client, criteria) if u <= last_uid]
        if uids:
            log.info("%s: tidying %d message(s) imported earlier", self.name, len(uids))
        for batch in _chunks(uids, BATCH):
            await self._after_import(client, batch)

    async def _after_import(self, client: Any, uids: Sequence[int]) -> None:
        if not uids:
            return
        uid_set = _uid_set(uids)
        if self.settings.after_import == "flag":
            response = await client.uid("store", uid_set, "+FLAGS.SILENT", r"(\Seen)")
            _check(response, "UID STORE \\Seen failed")
        elif self.settings.move_to:
            await self._move(client, uid_set, self.settings.move_to)
        else:
            await self._delete(client, uid_set)

    async def _move(self, client: Any, uid_set: str, folder: str) -> None:
        """UID MOVE (RFC 6851), or COPY then delete where the server lacks MOVE."""
        if client.has_capability("MOVE"):
            response = await client.uid("move", uid_set, _quote(folder))
            _check(response, f"UID MOVE to {folder} failed")
            return
        response = await client.uid("copy", uid_set, _quote(folder))
        _check(response, f"UID COPY to {folder} failed")
        await self._delete(client, uid_set)

    async def _delete(self, client: Any, uid_set: str) -> None:
        response = await client.uid("store", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
        _check(response, "UID STORE \\Deleted failed")
        if client.has_capability("UIDPLUS"):
            # RFC 4315 2.1: expunge only these UIDs, not what others marked \Deleted.
            response = await client.uid("expunge", uid_set)
        else:
            response = await client.expunge()
        _check(response, "EXPUNGE failed")

    # --- waiting -----------------------------------------------------------

    async def _wait(self, client: Any) -> None:
        """Until the folder may have news: IDLE (RFC 2177) if offered, else a pause."""
        if self.settings.idle and client.has_capability("IDLE"):
            await self._idle(client)
            return
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({lost}, timeout=self.settings.poll_interval)
        finally:
            lost.cancel()
        if self._lost.is_set():
            raise ImapError("connection lost")

    async def _idle(self, client: Any) -> None:
        idle = await client.idle_start(timeout=IDLE_RENEW)
        try:
            while True:
                lines = await self._push(client)
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break  # time to renew the IDLE
                if any(b"EXISTS" in bytes(line) for line in lines if isinstance(line, bytes)):
                    break
        finally:
            if client.has_pending_idle() and not self._lost.is_set():
                client.idle_done()
        if not self._lost.is_set():
            await asyncio.wait_for(idle, TIMEOUT)

    async def _push(self, client: Any) -> Any:
        """The next untagged lines during IDLE; ImapError when the connection drops."""
        push = asyncio.ensure_future(client.wait_server_push(timeout=IDLE_RENEW + TIMEOUT))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not push.done():
                push.cancel()
        if self._lost.is_set() and not push.done():
            raise ImapError("connection lost during IDLE")
        if push.cancelled():
            raise ImapError("connection lost during IDLE")
        return push.result()

    # --- state -------------------------------------------------------------

    async def _set_state(self, **changes: Any) -> None:
        """Update the live state and persist it when it changed (for `status`)."""
        new = replace(self.state, **changes)
        if new == self.state:
            return
        self.state = new
        with contextlib.suppress(Exception):  # status is best effort; never stop importing
            await self.store.run(save_state, self.name, self.settings.folder, new)


# --- the checkpoint (synchronous: run through Store.run) ----------------------


def _row(mailbox: str, folder: str) -> models.ImapCheckpoint:
    """The checkpoint row, created at UID 0 the first time."""
    models.ImapCheckpoint.insert(
        mailbox=mailbox, folder=folder, updated_at=utcnow()
    ).on_conflict_ignore().execute()
    row: models.ImapCheckpoint = models.ImapCheckpoint.get(
        (models.ImapCheckpoint.mailbox == mailbox) & (models.ImapCheckpoint.folder == folder)
    )
    return row


def checkpoint(mailbox: str, folder: str, uidvalidity: int) -> int:
    """The last imported UID for this UIDVALIDITY (0 after a change, which is logged)."""
    with transaction(models.database.obj):
        row = _row(mailbox, folder)
        if row.uidvalidity != uidvalidity:
            if row.uidvalidity:
                log.warning(
                    "%s: UIDVALIDITY of %s changed from %d to %d: resyncing the whole folder "
                    "(messages already stored are recognised and not imported twice)",
                    mailbox,
                    folder,
                    row.uidvalidity,
                    uidvalidity,
                )
            row.uidvalidity, row.last_uid, row.updated_at = uidvalidity, 0, utcnow()
            row.save()
        return int(row.last_uid)


def advance(mailbox: str, folder: str, uidvalidity: int, last_uid: int) -> None:
    """Record that every UID up to ``last_uid`` is committed (never moves back)."""
    with transaction(models.database.obj):
        models.ImapCheckpoint.update(last_uid=last_uid, updated_at=utcnow()).where(
            (models.ImapCheckpoint.mailbox == mailbox)
            & (models.ImapCheckpoint.folder == folder)
            & (models.ImapCheckpoint.uidvalidity == uidvalidity)
            & (models.ImapCheckpoint.last_uid < last_uid)
        ).execute()


def save_state(mailbox: str, folder: str, state: PollerState) -> None:
    with transaction(models.database.obj):
        _row(mailbox, folder)
        models.ImapCheckpoint.update(
            connected=state.connected,
            last_success_at=state.last_success,
            last_error=state.last_error,
            backlog=state.backlog,
        ).where(
            (models.ImapCheckpoint.mailbox == mailbox) & (models.ImapCheckpoint.folder == folder)
        ).execute()


# --- small helpers ------------------------------------------------------------


def envelope_sender(raw: bytes) -> str:
    """The envelope sender an IMAP message stands for.

    The Return-Path the final MTA wrote is the real envelope sender ("<>" for
    a bounce, which must stay the null sender so we never answer it). Without
    one, the From address; never "" by default, which would mark ordinary
    mail as a bounce.
    """
    header, _ = split_header(raw)
    try:
        fields = BytesHeaderParser(policy=compat32).parsebytes(header + b"\n\n")
    except Exception:
        return ""
    return_path = fields.get("Return-Path")
    if isinstance(return_path, str):
        return parseaddr(return_path)[1]
    sender = fields.get("From")
    return parseaddr(sender)[1] if isinstance(sender, str) else ""


async def _run_token_command(command: tuple[str, ...]) -> str:
    """Run token_command (no shell) and return its standard output."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        raise
    if process.returncode != 0:
        detail = err.decode("utf-8", "replace").strip()[:200]
        raise ImapError(f"token_command exited {process.returncode}: {detail}")
    return out.decode("utf-8", "replace")


def _delay(failures: int) -> float:
    """The backoff before retry number ``failures``: 1s, 2s, 4s ... at most 5 minutes."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * float(2 ** max(0, failures - 1)))


def _check(response: Any, what: str) -> None:
    if response.result != "OK":
        raise ImapError(f"{what}: {response.result} {_text(response)}")


def _text(response: Any) -> str:
    lines = [bytes(line) for line in response.lines if isinstance(line, bytes | bytearray)]
    return lines[-1].decode("utf-8", "replace")[:200] if lines else ""


def _quote(text: str) -> str:
    """An IMAP quoted string (RFC 3501 4.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(u) for u in uids)


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
