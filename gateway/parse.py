"""Turn the stored raw bytes of one message into a ParsedMessage.

Parse runs after intake has spooled the raw bytes durably and before
classify and thread: it is the only step that reads MIME, so everything
after it works on plain, typed, decoded values. Because it works from the
stored bytes, a bug here never loses mail; the message can be re-run.

Customers' mail is untrusted and often broken, so ``parse`` degrades instead
of failing: a header it cannot decode becomes "" or None, a part whose
charset is missing or wrong is guessed at (gateway.charsets). The only
exception it raises on purpose is LimitExceeded, when a message is over one
of the caps that protect the daemon from hostile input (header size, MIME
depth, number of parts).

The email package is used with ``policy.default``. Its header objects raise
or report defects on hostile input; wherever they do, we decode the raw
value ourselves. Those fallbacks are the only places that catch broad
exceptions, and each says why.

Body selection, in short: the text is every inline text/plain part (one per
multipart/alternative), else the HTML rendered as text; the HTML is the
first inline text/html part (with the fragments Apple Mail splits around
inline attachments); every other part is an Attachment.
"""

from __future__ import annotations

import email.policy
import email.utils
import functools
import hashlib
import logging
import mimetypes
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

import tnefparse

from gateway.charsets import (
    codecs_for,
    decode_bytes,
    decode_header_value,
    html_meta_charset,
    repair_surrogates,
)
from gateway.errors import LimitExceeded
from gateway.htmltext import html_to_text, sanitize_html

log = logging.getLogger("gateway.parse")

# policy.default's header parser takes time that grows faster than the
# value: a 700 KB Subject of encoded words takes 50 s, a 300 KB Content-Type
# of parameters several. No real header comes near this size, so the library
# never parses more of a value than this; our own (linear) decoders handle
# longer values where we read them, and limits.max_header_bytes bounds the
# top-level block.
_MAX_PARSED_VALUE = 8 * 1024


class _BoundedHeaderRegistry(HeaderRegistry):
    """policy.default's header classes, fed at most _MAX_PARSED_VALUE characters.

    The email package parses a header again on every access (get_param,
    get_filename and get_content_type each fetch Content-Type anew); header
    objects are immutable, so recent ones are reused.
    """

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if not isinstance(value, str):
            return super().__call__(name, value)
        return self._build(name, value[:_MAX_PARSED_VALUE])

    @functools.lru_cache(maxsize=512)  # noqa: B019 - one registry for the process
    def _build(self, name: str, value: str) -> BaseHeader:
        return super().__call__(name, value)


_POLICY = email.policy.default.clone(header_factory=_BoundedHeaderRegistry())
# For re-serialising embedded messages: headers exactly as they came.
_VERBATIM = _POLICY.clone(refold_source="none")


@dataclass(frozen=True)
class ParseLimits:
    """Caps that protect the daemon from hostile input."""

    max_header_bytes: int = 1024 * 1024  # total size of the top-level header block
    max_mime_depth: int = 20  # nesting of multiparts / message/rfc822
    max_mime_parts: int = 500  # total parts walked


@dataclass(frozen=True)
class Address:
    """One mailbox: decoded display name and addr-spec (domain lower-cased)."""

    name: str
    email: str


@dataclass(frozen=True)
class Attachment:
    """A non-body part, decoded from its transfer encoding."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    content_id: str | None
    inline: bool

    @property
    def size(self) -> int:
        """Size of the decoded data in bytes."""
        return len(self.data)

    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the decoded data."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class ParsedMessage:
    """Everything the later steps need from one message, decoded and typed."""

    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    subject: str
    from_addr: Address | None
    reply_to: tuple[Address, ...]
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    date: datetime | None
    content_language: str
    headers: tuple[tuple[str, str], ...]
    content_type: str
    report_type: str
    embedded_message_ids: tuple[str, ...]
    text: str
    html: str | None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class _Context:
    """What the helpers need to know about the message being parsed."""

    message_id: str  # for log lines
    hint: str | None  # a charset the message declares, for raw 8-bit header bytes
    linesep: str  # the message's line ending, for re-serialised embedded messages


def parse(raw: bytes, limits: ParseLimits = ParseLimits()) -> ParsedMessage:
    """Parse one raw message; raises only LimitExceeded (see module docstring)."""
    raw = _repair_header_block(_strip_mbox_from_line(raw))
    _check_header_block(raw, limits)
    msg = _parse_bytes(raw)
    _check_structure(msg, limits)
    ctx = _Context(_first_message_id(msg), _charset_hint(msg), _linesep(raw))
    body = _Body(ctx)
    body.walk(msg)
    text, markup = body.finish(msg.preamble)
    headers = tuple(
        (name.lower(), _decoded_header(name, value, ctx)) for name, value in msg.raw_items()
    )
    content_type = _content_type(msg)
    return ParsedMessage(
        message_id=ctx.message_id,
        in_reply_to=tuple(_message_ids(_header(headers, "in-reply-to"))),
        references=_references(msg, ctx),
        subject=_one_line(_header(headers, "subject")),
        from_addr=next(iter(_addresses(msg, "from", ctx)), None),
        reply_to=_addresses(msg, "reply-to", ctx),
        to=_addresses(msg, "to", ctx),
        cc=_addresses(msg, "cc", ctx),
        date=_date(msg),
        content_language=_language(_header(headers, "content-language")) or body.language,
        headers=headers,
        content_type=content_type,
        report_type=_report_type(msg, content_type),
        embedded_message_ids=tuple(dict.fromkeys(i for i in body.embedded_ids if i)),
        text=text,
        html=markup,
        attachments=tuple(body.attachments),
    )


# --- limits and repairs before parsing ----------------------------------------

_LINE_END = re.compile(rb"\r\n|\r|\n")
# What email.feedparser accepts as a header line (its headerRE): anything
# else ends the header block.
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[ \t]")
# Fields every message has at most once (RFC 5322 3.6), plus MIME's.
_KNOWN_FIELD = re.compile(
    rb"(from|to|cc|subject|date|message-id|mime-version|content-type|reply-to|references"
    rb"|in-reply-to)[ \t]*:",
    re.I,
)
_MAX_UNFOLDED_RUN = 30
_REPAIR_SCAN_LINES = 2000


def _strip_mbox_from_line(raw: bytes) -> bytes:
    """Drop a leading mbox "From sender date" separator line."""
    if not raw.startswith(b"From "):
        return raw
    match = _LINE_END.search(raw)
    return raw[match.end() :] if match else b""


def _check_header_block(raw: bytes, limits: ParseLimits) -> None:
    """Raise LimitExceeded when the top-level header block is over the cap.

    Measured on the bytes, line by line as the email package would read
    them, before it builds header objects for all of it.
    """
    if len(raw) <= limits.max_header_bytes:
        return
    pos = 0
    while pos <= limits.max_header_bytes:
        match = _LINE_END.search(raw, pos)
        end = match.start() if match else len(raw)
        if end == pos or not _HEADER_LINE.match(raw, pos, end):
            return
        if match is None:
            break
        pos = match.end()
    blank = re.compile(rb"\n\r?\n|\r\r").search(raw, pos)
    size = blank.start() + 1 if blank else len(raw)
    raise LimitExceeded(
        f"header block is {size:,} bytes, over the {limits.max_header_bytes:,}-byte cap"
    )


def _split_header_lines(raw: bytes) -> tuple[list[bytes], int]:
    """The header lines (with their line ends) up to the blank line, and where they end."""
    lines: list[bytes] = []
    pos = 0
    for _ in range(_REPAIR_SCAN_LINES):
        match = _LINE_END.search(raw, pos)
        if match is None or match.start() == pos:
            break
        lines.append(raw[pos : match.end()])
        pos = match.end()
    return lines, pos


def _repair_header_block(raw: bytes) -> bytes:
    """Mend header blocks that the email package would cut short.

    A line that is neither a field nor indented ends the block for the
    email package, which then reads every later field as body text. When
    fields that the message does not have yet (From, Subject, Date...) still
    follow, such a line is either junk above the first field (a client that
    wrote "---- Original email message ----" on top), which is dropped, or
    a continuation line that lost its leading white space (seen in relayed
    mail where every fold was flattened), which is indented again. Fields
    that the message already has are more likely a forwarded header block
    in a body that lacks its blank separator line, and are left alone, as
    are long runs of such lines.
    """
    lines, end = _split_header_lines(raw)
    fresh = _fields_from(lines)
    seen: set[bytes] = set()
    fixed: list[bytes] = []
    run = 0
    for index, line in enumerate(lines):
        if _HEADER_LINE.match(line):
            fixed.append(line)
            field = _KNOWN_FIELD.match(line)
            seen.update([field.group(1).lower()] if field else [])
            run = 0
            continue
        run += 1
        if run > _MAX_UNFOLDED_RUN or not fresh[index] - seen or (not fixed and index >= 3):
            fixed.extend(lines[index:])  # not a breakage we recognise: the parser decides
            break
        if fixed:
            fixed.append(b" " + line)  # else: junk above the first field, dropped
    repaired = b"".join(fixed)
    return raw if len(repaired) == end and repaired == raw[:end] else repaired + raw[end:]


def _fields_from(lines: list[bytes]) -> list[set[bytes]]:
    """For each line, the well-known field names at or after it."""
    after: list[set[bytes]] = [set() for _ in range(len(lines) + 1)]
    for index in range(len(lines) - 1, -1, -1):
        field = _KNOWN_FIELD.match(lines[index])
        after[index] = after[index + 1] | ({field.group(1).lower()} if field else set())
    return after


def _parse_bytes(raw: bytes) -> EmailMessage:
    """Run the email package's parser; absurd nesting is a limit, not a crash."""
    try:
        msg = BytesParser(policy=_POLICY).parsebytes(raw)
    except RecursionError as exc:
        raise LimitExceeded("MIME parts are nested too deeply for the parser to follow") from exc
    assert isinstance(msg, EmailMessage)  # policy.default always builds EmailMessage
    return msg


def _children(part: Message) -> list[Message]:
    """Sub-parts of a multipart or an embedded message (not DSN field blocks)."""
    if _content_type(part) == "message/delivery-status":
        return []
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _check_structure(msg: Message, limits: ParseLimits) -> None:
    """Count parts and nesting (embedded messages count as a level) against the caps."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > limits.max_mime_parts:
            raise LimitExceeded(
                f"message has more than {limits.max_mime_parts:,} MIME parts, the cap"
            )
        if depth > limits.max_mime_depth:
            raise LimitExceeded(
                f"MIME parts are nested {depth} levels deep, "
                f"over the {limits.max_mime_depth}-level cap"
            )
        stack.extend((child, depth + 1) for child in _children(part))


def _charset_hint(msg: Message) -> str | None:
    """The first known charset a text part declares.

    Raw 8-bit header bytes were almost always written in the charset the
    sender's client used for the body.
    """
    for part in msg.walk():
        if _content_type(part).startswith("text/"):
            declared = _param(part, "charset")
            if codecs_for(declared):
                return declared
    return None


def _linesep(raw: bytes) -> str:
    """The line ending the message uses, for re-serialising embedded messages."""
    return "\r\n" if b"\r\n" in raw[:4096] else "\n"


# --- headers ----------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MSG_ID = re.compile(r"<([^<>]*)>")


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str:
    """The first decoded value of header ``name`` (lower-case), or ""."""
    return next((value for key, value in headers if key == name), "")


def _raw_values(msg: Message, name: str) -> Iterator[tuple[str, str]]:
    """Every (name, raw value) pair of header ``name``, in order."""
    for key, value in msg.raw_items():
        if key.lower() == name:
            yield key, value


def _clean_value(text: str) -> str:
    """Unfolded header text, CR/LF/NUL as spaces and other controls removed."""
    text = re.sub(r"\r?\n(?=[ \t])", "", text)
    return _CONTROL.sub("", re.sub(r"[\r\n\x00]", " ", text)).strip()


def _has_surrogates(text: str) -> bool:
    """True when ``text`` still holds undecoded bytes as lone surrogates."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _suspect(text: str) -> bool:
    """True when the email package lost bytes: replacement characters or surrogates."""
    return "\ufffd" in text or _has_surrogates(text)


def _decoded_header(name: str, raw: str, ctx: _Context) -> str:
    """Decode one header value; our decoder takes over when policy.default balks.

    policy.default turns unknown charsets and raw 8-bit bytes into U+FFFD
    and records a defect; our decoder maps charset aliases and decodes raw
    bytes with the message's charset, so it is used whenever the library
    was not happy, and for values too long for the library's parser. Plain
    ASCII without encoded words needs no decoding at all.
    """
    if raw.isascii() and "=?" not in raw:
        return _clean_value(raw)
    if len(raw) > _MAX_PARSED_VALUE:
        return _clean_value(decode_header_value(raw, ctx.hint))
    try:
        header = _POLICY.header_fetch_parse(name, raw)
        text = str(header)
        if not header.defects and not _suspect(text):
            return unicodedata.normalize("NFC", _clean_value(text))
    except Exception as exc:  # the header parser raises many types on hostile input
        log.debug("%s: header %s: policy.default failed: %r", ctx.message_id, name, exc)
    return _clean_value(decode_header_value(raw, ctx.hint))


def _one_line(text: str) -> str:
    """A single line: CR, LF, NUL and tab runs become one space; other controls go.

    Only ASCII white space is collapsed: an ideographic space (U+3000) in a
    Chinese name is part of the name.
    """
    return _CONTROL.sub("", re.sub(r"[ \t\r\n\x00]+", " ", text)).strip(" ")


def _message_ids(value: str) -> list[str]:
    """Message ids named in an In-Reply-To / References / Message-ID value, without <>.

    RFC 5322 3.6.4 wants <id> tokens; mail in the wild also sends bare ids
    and comments ("<id> (Message from ...)"), so bracketed ids win and bare
    tokens containing "@" are accepted only when there is no bracket.
    """
    ids = [_strip_id(found) for found in _MSG_ID.findall(value)]
    if not ids:
        ids = [_strip_id(token) for token in re.split(r"[\s,]+", value) if "@" in token]
    return [found for found in dict.fromkeys(ids) if found]


def _strip_id(text: str) -> str:
    """A message id without white space, controls or angle brackets."""
    return re.sub(r"[\s\x00-\x1f\x7f<>]", "", text)


def _first_message_id(msg: Message) -> str:
    """The Message-ID of ``msg`` without <>, or ""."""
    for _name, raw in _raw_values(msg, "message-id"):
        value = repair_surrogates(_clean_value(raw))
        ids = _message_ids(value)
        return ids[0] if ids else _strip_id(value)
    return ""


def _references(msg: Message, ctx: _Context) -> tuple[str, ...]:
    """The References ids in header order (all References headers, de-duplicated)."""
    ids: list[str] = []
    for _name, raw in _raw_values(msg, "references"):
        ids.extend(_message_ids(repair_surrogates(_clean_value(raw), ctx.hint)))
    return tuple(dict.fromkeys(ids))


def _date(msg: Message) -> datetime | None:
    """The Date header as an aware datetime; a date without zone is taken as UTC."""
    for name, raw in _raw_values(msg, "date"):
        when: datetime | None
        try:
            when = _POLICY.header_fetch_parse(name, raw).datetime
        except Exception:  # the date parser raises many types on hostile input
            when = None
        if when is None:
            try:
                when = email.utils.parsedate_to_datetime(_clean_value(raw))
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
        # RFC 5322 3.3: "-0000" means the zone is unknown; UTC is our best guess.
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _language(value: str) -> str:
    """The first language tag of a Content-Language value (RFC 3282), lower-cased."""
    tag = value.split(",", 1)[0].strip().lower()
    return tag if re.fullmatch(r"[a-z]{1,8}(-[a-z0-9]{1,8})*", tag) else ""


def _report_type(msg: Message, content_type: str) -> str:
    """The report-type of a multipart/report (RFC 6522), lower-case, else ""."""
    if content_type != "multipart/report":
        return ""
    return (_param(msg, "report-type") or "").lower()


# --- addresses --------------------------------------------------------------

# "Name name@example.com" without angle brackets: the last word is the address.
_BARE_NAME_ADDRESS = re.compile(r"\s*([^<>\",;:@]+?)\s+([^\s<>\",;:@]+@[^\s<>\",;:@]+)\s*")


def _addresses(msg: Message, name: str, ctx: _Context) -> tuple[Address, ...]:
    """Every mailbox in every header ``name`` (group syntax flattened)."""
    found: list[Address] = []
    for key, raw in _raw_values(msg, name):
        found.extend(_parse_address_list(key, raw, ctx))
    return tuple(dict.fromkeys(found))


def _parse_address_list(name: str, raw: str, ctx: _Context) -> list[Address]:
    """Mailboxes of one header: policy.default, checked against email.utils."""
    value = repair_surrogates(_clean_value(raw), ctx.hint)
    bare = _BARE_NAME_ADDRESS.fullmatch(value) if len(value) < 1000 else None
    if bare:
        return [a for a in [_address(bare.group(1), bare.group(2))] if a is not None]
    fallback = _getaddresses(value)
    if len(raw) > _MAX_PARSED_VALUE:
        return fallback  # too long for policy.default's parser (see _MAX_PARSED_VALUE)
    try:
        header: Any = _POLICY.header_fetch_parse(name, raw)
        pairs = [(a.display_name, a.addr_spec) for a in header.addresses]
    except Exception as exc:  # the address parser raises many types on hostile input
        log.debug("%s: header %s: policy.default failed: %r", ctx.message_id, name, exc)
        pairs = []
    found = [a for a in (_address(n, e) for n, e in pairs) if a is not None]
    if not found or any(_suspect(n) for n, _ in pairs):
        return fallback
    names = {a.email.lower(): a.name for a in fallback if a.name}
    return [_better_name(a, names.get(a.email.lower(), "")) for a in found]


def _better_name(policy: Address, ours: str) -> Address:
    """Prefer our reading of the display name where policy.default is weaker.

    The policy has no name for the old comment form "addr (Name)", and it
    keeps the space between adjacent encoded words in different charsets,
    which RFC 2047 section 6.2 says is not displayed.
    """
    if not ours or ours == policy.name:
        return policy
    if not policy.name or ours.replace(" ", "") == policy.name.replace(" ", ""):
        return Address(ours, policy.email)
    return policy


def _getaddresses(value: str) -> list[Address]:
    """Mailboxes as email.utils reads them, names decoded (RFC 2047)."""
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:  # getaddresses is hardened in newer Pythons only
        return []
    found = (_address(decode_header_value(n), e) for n, e in pairs)
    return [a for a in found if a is not None]


def _address(name: str, addr: str) -> Address | None:
    """Build an Address, or None when ``addr`` is not a usable addr-spec."""
    addr = addr.strip().strip("<>").strip()
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or re.search(r"[\x00-\x1f\x7f]", addr):
        return None  # CR, LF or NUL in an address could end up in an outbound header
    if any(ch.isspace() for ch in addr) and not local.startswith('"'):
        return None
    name = unicodedata.normalize("NFC", _one_line(repair_surrogates(name)))
    return Address(name=name, email=f"{local}@{domain.lower()}")


# --- MIME parameters --------------------------------------------------------


def _param(part: Message, name: str, header: str = "content-type") -> str | None:
    """A decoded MIME parameter (RFC 2231 continuations and charsets handled), or None."""
    try:
        value = part.get_param(name, header=header)
    except Exception:  # parameter parsing raises on some hostile headers
        return None
    if value is None:
        return None
    if isinstance(value, tuple):
        value = email.utils.collapse_rfc2231_value(value)
    return str(value).strip()


def _content_type(part: Message) -> str:
    """The lower-case maintype/subtype; text/plain when absent or unreadable (RFC 2045 5.2)."""
    try:
        return part.get_content_type()
    except Exception:  # header parsing raises on some hostile headers
        return "text/plain"


def _disposition(part: Message) -> str | None:
    """The Content-Disposition type, lower-case, or None."""
    try:
        value = part.get_content_disposition()
    except Exception:  # header parsing raises on some hostile headers
        return None
    return value.lower() if value else None


def _filename(part: Message, ctx: _Context) -> str | None:
    """The part's file name, decoded (RFC 2231 and RFC 2047), or None.

    policy.default's get_filename reads Content-Disposition's filename, then
    Content-Type's name; when it raises or loses raw 8-bit bytes we read the
    raw headers again with the message's charset.
    """
    try:
        name = part.get_filename()
    except Exception:  # parameter parsing raises on some hostile headers
        name = None
    if name is None or _suspect(name):
        name = _raw_filename(part, ctx) or name
    if not name:
        return None
    name = repair_surrogates(name, ctx.hint)
    if "=?" in name:
        # RFC 2047 words inside a quoted parameter are not standard but common.
        name = decode_header_value(name, ctx.hint)
    return name


def _raw_filename(part: Message, ctx: _Context) -> str | None:
    """The file name read from the raw headers, 8-bit bytes decoded first."""
    plain = Message()  # compat32: parameters parsed from plain text
    for header in ("content-disposition", "content-type"):
        for key, raw in _raw_values(part, header):
            value = raw[:_MAX_PARSED_VALUE]  # compat32's parameter split is quadratic too
            plain[key] = repair_surrogates(_clean_value(value), ctx.hint)
            break
    try:
        return plain.get_filename()
    except Exception:  # parameter parsing raises on some hostile headers
        return None


def _content_id(part: Message) -> str | None:
    """The Content-ID without <> and white space, or None."""
    raw = next((value for _name, value in _raw_values(part, "content-id")), None)
    if raw is None:
        return None
    return _strip_id(repair_surrogates(raw)) or None


def _payload(part: Message) -> bytes:
    """The part's bytes after undoing its Content-Transfer-Encoding."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # decoding raises on some malformed encodings
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


# --- file names -------------------------------------------------------------

_MIME_TYPES = mimetypes.MimeTypes()  # built-in table only: same answers on every host
_EXTRA_EXTENSIONS = {
    "image/jpg": ".jpg",
    "image/pjpeg": ".jpg",
    "text/calendar": ".ics",
    "text/rfc822-headers": ".txt",
    "message/global-headers": ".txt",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "message/feedback-report": ".txt",
    "message/global": ".eml",
    "message/rfc822": ".eml",
    "application/pgp-signature": ".asc",
    "application/pgp-encrypted": ".asc",
    "application/pgp-keys": ".asc",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
}
_EXTRA_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".ics": "text/calendar",
    ".msg": "application/vnd.ms-outlook",
}
_UNSAFE_NAME_CHARS = re.compile(r'[<>:"/\\|?*]')
# Bidi overrides and isolates can make "invoice\u202egpj.exe" display as
# "invoiceexe.jpg"; zero-width (non-)joiners, needed in Persian, are kept.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\ufeff]")
_WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul"} | {f"{port}{i}" for port in ("com", "lpt") for i in range(1, 10)}
)
_MAX_FILENAME = 150
_FILE_LIKE = re.compile(r"[\w -]+\.[A-Za-z][A-Za-z0-9]{1,4}")
_MAX_DESCRIPTION_NAME = 100


def sanitize_filename(name: str | None, content_type: str) -> str:
    """A display name that can never act as a path (DESIGN: Trust).

    Takes the last path segment, removes control and bidi-override
    characters, replaces characters Windows forbids, collapses white space,
    strips leading dots and spaces, caps the length keeping the extension,
    and falls back to "attachment" plus an extension for ``content_type``.
    """
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\t\r\n]", " ", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cs"))
    name = _UNSAFE_NAME_CHARS.sub("_", _BIDI_CONTROLS.sub("", name))
    name = " ".join(name.split()).lstrip(". ").rstrip(". ")
    if name.split(".", 1)[0].lower() in _WINDOWS_DEVICES:
        name = "_" + name
    return _cap_length(name) or "attachment" + _extension_for(content_type)


def _cap_length(name: str) -> str:
    """Shorten ``name`` to the cap, keeping a plausible extension."""
    if len(name) <= _MAX_FILENAME:
        return name
    stem, dot, ext = name.rpartition(".")
    suffix = f".{ext}" if dot and stem and 0 < len(ext) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    return stem[: _MAX_FILENAME - len(suffix)].rstrip(". ") + suffix


def _extension_for(content_type: str) -> str:
    """A file extension for ``content_type``, or "" when none is known."""
    if content_type in _EXTRA_EXTENSIONS:
        return _EXTRA_EXTENSIONS[content_type]
    ext = _MIME_TYPES.guess_extension(content_type)
    if ext:
        return ext
    return ".txt" if content_type.startswith("text/") else ""


def _type_for(filename: str) -> str:
    """A content type guessed from a file name (for the files inside winmail.dat)."""
    ext = "." + filename.rpartition(".")[2].lower() if "." in filename else ""
    guessed = _EXTRA_TYPES.get(ext) or _MIME_TYPES.guess_type("x" + ext)[0]
    return guessed or "application/octet-stream"


# --- body and attachments ----------------------------------------------------

_EMBEDDED_MESSAGES = frozenset({"message/rfc822", "message/global"})
_EMBEDDED_HEADERS = frozenset({"text/rfc822-headers", "message/global-headers"})
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
# Other renderings of the same content inside a multipart/alternative
# (RFC 2046 5.1.4); the plain and HTML ones are enough for a ticket.
_REDUNDANT_ALTERNATIVES = frozenset({"text/enriched", "text/richtext", "text/x-amp-html"})


@dataclass(frozen=True)
class _Leaf:
    """An inline text/plain or text/html part, decoded."""

    part: Message
    text: str
    branch: tuple[int, int] | None  # (multipart/alternative, child index) it sits in
    container: int  # the multipart that holds it


def _one_branch(leaves: list[_Leaf]) -> list[_Leaf]:
    """Keep, per multipart/alternative, the leaves of the first branch that has any."""
    chosen: dict[int, int] = {}
    kept = []
    for leaf in leaves:
        if leaf.branch is not None:
            node, index = leaf.branch
            if chosen.setdefault(node, index) != index:
                continue
        kept.append(leaf)
    return kept


def _by_container(leaves: list[_Leaf]) -> list[list[_Leaf]]:
    """Group leaves by the multipart holding them, in order of appearance."""
    groups: dict[int, list[_Leaf]] = {}
    for leaf in leaves:
        groups.setdefault(leaf.container, []).append(leaf)
    return list(groups.values())


class _Body:
    """Walks the MIME tree once, sorting parts into body leaves and attachments."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.plain: list[_Leaf] = []
        self.html: list[_Leaf] = []
        self.attachments: list[Attachment] = []
        self.embedded_ids: list[str] = []
        self.language = ""
        self._nodes = 0
        self._tnef_text: str | None = None
        self._tnef_html: str | None = None

    def walk(
        self, part: Message, branch: tuple[int, int] | None = None, container: int = 0
    ) -> None:
        """Visit ``part`` and, for a multipart, its children."""
        ctype = _content_type(part)
        if ctype.startswith("multipart/") and isinstance(part.get_payload(), list):
            self._nodes += 1
            node = self._nodes
            for index, child in enumerate(_children(part)):
                inner = (node, index) if ctype == "multipart/alternative" else branch
                self.walk(child, inner, node)
        elif ctype in _EMBEDDED_MESSAGES:
            self._embedded_message(part, ctype)
        elif ctype in _EMBEDDED_HEADERS:
            data = _payload(part)
            self.embedded_ids.append(_message_id_in(data))
            self._attach(part, ctype, data)
        elif ctype in _TNEF_TYPES or (_filename(part, self.ctx) or "").lower() == "winmail.dat":
            self._tnef(part)
        elif branch is not None and ctype in _REDUNDANT_ALTERNATIVES:
            return
        elif self._is_attachment(part, ctype):
            self._attach(part, ctype, _serialised(part, self.ctx.linesep))
        else:
            leaf = _Leaf(part, _part_text(part, ctype), branch, container)
            (self.html if ctype == "text/html" else self.plain).append(leaf)

    def _is_attachment(self, part: Message, ctype: str) -> bool:
        """Everything but inline, unnamed text/plain and text/html parts."""
        if _disposition(part) == "attachment" or _filename(part, self.ctx):
            return True
        # A "multipart" without a boundary is read as text, as mail clients do.
        return ctype not in ("text/plain", "text/html") and not ctype.startswith("multipart/")

    def _attach(self, part: Message, ctype: str, data: bytes, default: str | None = None) -> None:
        """Record ``part`` as an attachment."""
        disposition = _disposition(part)
        content_id = _content_id(part)
        name = _filename(part, self.ctx) or default or self._made_up_name(part, ctype, content_id)
        self.attachments.append(
            Attachment(
                filename=sanitize_filename(name, ctype),
                content_type=ctype,
                data=data,
                content_id=content_id,
                inline=disposition == "inline" or (disposition is None and content_id is not None),
            )
        )

    def _made_up_name(self, part: Message, ctype: str, content_id: str | None) -> str | None:
        """A name for a part that has none, from its other headers.

        Outlook's Content-IDs start with the original file name
        ("image001.png@01D2..."), Content-Location (RFC 2557) often ends
        with one, and MTAs describe report parts ("Delivery report", RFC
        2045 section 8).
        """
        location = _decoded_first(part, "content-location", self.ctx)
        for candidate in (content_id.partition("@")[0] if content_id else "", location):
            candidate = candidate.replace("\\", "/").rsplit("/", 1)[-1]
            if _FILE_LIKE.fullmatch(candidate):
                return candidate
        described = _one_line(_decoded_first(part, "content-description", self.ctx))
        described = described.replace("/", "-").replace("\\", "-")
        if described and len(described) <= _MAX_DESCRIPTION_NAME:
            ext = _extension_for(ctype)
            return described if described.lower().endswith(ext) else described + ext
        return None

    def _embedded_message(self, part: Message, ctype: str) -> None:
        """A forwarded or bounced message: an .eml attachment plus its Message-ID."""
        data = _embedded_bytes(part, self.ctx.linesep)
        inner = _parse_headers(data)
        subject = ""
        if inner is not None:
            self.embedded_ids.append(_first_message_id(inner))
            raw_subject = next((v for _n, v in _raw_values(inner, "subject")), "")
            subject = _one_line(_decoded_header("Subject", raw_subject, self.ctx))
        self._attach(part, ctype, data, f"{subject}.eml" if subject else None)

    def _tnef(self, part: Message) -> None:
        """Unpack winmail.dat; keep it as is when tnefparse cannot read it."""
        data = _payload(part)
        unpacked = _unpack_tnef(data, self.ctx)
        if unpacked is None:
            self._attach(part, _content_type(part), data)
            return
        attachments, text, markup = unpacked
        self.attachments.extend(attachments)
        self._tnef_text = self._tnef_text or text
        self._tnef_html = self._tnef_html or markup

    def finish(self, preamble: str | None) -> tuple[str, str | None]:
        """The body text and sanitized HTML; spare HTML parts become attachments."""
        plain = _one_branch(self.plain)
        html_groups = _by_container(_one_branch(self.html))
        for group in html_groups[1:]:
            for leaf in group:
                self._attach(leaf.part, "text/html", _payload(leaf.part))
        first = plain[0] if plain else html_groups[0][0] if html_groups else None
        if first is not None:
            self.language = _language(_decoded_first(first.part, "content-language", self.ctx))
        markup = "\n".join(leaf.text for leaf in html_groups[0]) if html_groups else None
        text = "\n\n".join(leaf.text.strip("\n") for leaf in plain if leaf.text.strip())
        if not text:
            rendered = (html_to_text("\n".join(leaf.text for leaf in g)) for g in html_groups)
            text = "\n\n".join(r for r in rendered if r.strip())
        if not text:
            text, tnef_markup = self._tnef_body()
            markup = tnef_markup if markup is None else markup
        if not text and preamble:
            # Old DSNs put their explanation before the first boundary.
            text = _preamble_text(preamble, self.ctx)
        return text, None if markup is None else sanitize_html(markup).replace("\x00", "").strip()

    def _tnef_body(self) -> tuple[str, str | None]:
        """The body of winmail.dat, for a message whose own body is empty."""
        markup = self._tnef_html
        if self._tnef_text and self._tnef_text.strip():
            return self._tnef_text.strip("\n"), markup
        return (html_to_text(markup) if markup else ""), markup


def _preamble_text(preamble: str, ctx: _Context) -> str:
    """The preamble of a multipart, when it is prose for the reader.

    Not the usual "This is a multi-part message in MIME format" note, and
    not a part whose boundary line was mangled (it then holds MIME headers).
    """
    text = repair_surrogates(preamble, ctx.hint).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\x00", "").strip("\n")
    lowered = text.lower()
    if "content-type:" in lowered or lowered.lstrip().startswith("--"):
        return ""
    if len(text) < 400 and "mime" in lowered and ("format" in lowered or "multi" in lowered):
        return ""
    return text


def _decoded_first(part: Message, name: str, ctx: _Context) -> str:
    """The first decoded value of header ``name`` of ``part``, or ""."""
    for key, raw in _raw_values(part, name):
        return _decoded_header(key, raw, ctx)
    return ""


def _part_text(part: Message, ctype: str) -> str:
    """Decode an inline text part: declared charset (or HTML <meta>), \\n newlines, no NUL."""
    data = _payload(part)
    declared = _param(part, "charset")
    if not declared and ctype == "text/html":
        declared = html_meta_charset(data)
    text = decode_bytes(data, declared)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if ctype != "text/html" and (_param(part, "format") or "").lower() == "flowed":
        text = _unflow(text, delsp=(_param(part, "delsp") or "").lower() == "yes")
    return text


def _unflow(text: str, *, delsp: bool) -> str:
    """Join the soft line breaks of format=flowed text (RFC 3676 section 4)."""
    out: list[tuple[str, int]] = []
    joining = False
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:].removeprefix(" ")  # RFC 3676 4.4: space-stuffing
        if joining and out and out[-1][1] == depth:
            out[-1] = (out[-1][0] + content, depth)
        else:
            out.append((content, depth))
        # A trailing space marks a soft break, except on the "-- " signature line.
        joining = content.endswith(" ") and content != "-- "
        if joining and delsp:
            out[-1] = (out[-1][0][:-1], depth)
    return "\n".join(">" * d + (" " if d and c else "") + c for c, d in out)


def _serialised(part: Message, linesep: str) -> bytes:
    """The data of an attachment: the decoded payload, or the text of DSN field blocks."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _payload(part)
    # message/delivery-status and the like: blocks of header fields.
    policy = _VERBATIM.clone(linesep=linesep)
    chunks: list[bytes] = []
    for block in payload:
        if not isinstance(block, Message):
            continue
        try:
            chunks.append(block.as_bytes(policy=policy))
        except Exception as exc:  # one broken block must not lose the rest
            log.debug("field block not re-serialised: %r", exc)
    return b"".join(chunks)


def _embedded_bytes(part: Message, linesep: str) -> bytes:
    """The bytes of an embedded message, headers as they came (not re-folded).

    RFC 2046 5.2.1 only allows 7bit, 8bit or binary here, but base64 and
    quoted-printable are seen; the parser then leaves them encoded, so we
    undo the encoding ourselves.
    """
    inner = _children(part)
    if not inner:
        return _payload(part)
    try:
        data = inner[0].as_bytes(policy=_VERBATIM.clone(linesep=linesep))
    except Exception:  # the generator can choke on broken inner headers
        return _payload(part)
    raw_cte = next((v for _n, v in _raw_values(part, "content-transfer-encoding")), "")
    cte = _clean_value(raw_cte).lower()
    if cte in ("base64", "quoted-printable"):
        carrier = Message()
        carrier["Content-Transfer-Encoding"] = cte
        carrier.set_payload(data.strip())
        decoded = carrier.get_payload(decode=True)
        if isinstance(decoded, bytes):
            return decoded
    return data


def _parse_headers(data: bytes) -> Message | None:
    """Parse only the header block of ``data``."""
    try:
        return BytesParser(policy=_POLICY).parsebytes(data, headersonly=True)
    except Exception:  # a broken embedded message must not break its carrier
        return None


def _message_id_in(data: bytes) -> str:
    """The Message-ID in a text/rfc822-headers part (a bounce's copy of our headers)."""
    inner = _parse_headers(data)
    return _first_message_id(inner) if inner is not None else ""


# --- winmail.dat ----------------------------------------------------------------


def _unpack_tnef(
    data: bytes, ctx: _Context
) -> tuple[list[Attachment], str | None, str | None] | None:
    """Files, plain body and HTML body of a TNEF blob, or None when it is unreadable."""
    try:
        tnef = tnefparse.TNEF(data, do_checksum=False)
        attachments = [_tnef_attachment(item, tnef.codepage) for item in tnef.attachments]
        text = _tnef_body(tnef.body, tnef.codepage)
        markup = _tnef_body(tnef.htmlbody, None)
    except Exception as exc:  # tnefparse raises anything on damaged input
        log.info("%s: winmail.dat kept as is, tnefparse failed: %r", ctx.message_id, exc)
        return None
    if not attachments and not text and not markup:
        return None
    return attachments, text, markup


def _tnef_attachment(item: Any, codepage: str | None) -> Attachment:
    """One file from inside winmail.dat."""
    name = item.long_filename()
    if isinstance(name, bytes):
        name = decode_bytes(name, codepage)
    name = str(name or "").strip("\x00")
    content_type = _type_for(name)
    return Attachment(
        filename=sanitize_filename(name, content_type),
        content_type=content_type,
        data=bytes(item.data or b""),
        content_id=None,
        inline=False,
    )


def _tnef_body(value: Any, codepage: str | None) -> str | None:
    """A TNEF body property as text (tnefparse gives str or bytes)."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.rstrip(b"\x00")
        value = decode_bytes(value, codepage or html_meta_charset(value))
    return str(value).replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
