"""Decide whether a message was written by a machine.

This step sits between parse and thread in the flow (intake -> parse ->
**classify** -> thread -> authorize -> apply).  It reads only the parsed
headers and the SMTP envelope sender and answers three questions:

- ``auto``: was the message written by a machine (auto-reply, bounce, report,
  mailing-list traffic, our own mail coming back)?  Such a message is still
  stored and shown to agents, but it is never answered automatically and it
  never reopens a ticket.  This is the first line of the loop protection that
  DESIGN.md ("Loops") asks for; the hard rate caps in notify are the second.
- ``bounce``: is it a delivery status notification or non-delivery report?  A
  bounce of our own outbound mail must never open a new ticket.
- ``original_message_ids``: for a bounce, which of our messages bounced, so the
  thread step can attach it to the right ticket.

Every rule that matches adds a human-readable reason, so an operator can see
why a message was treated as automatic.  The rules lean towards ``auto``: a
human message wrongly marked automatic only loses the acknowledgement mail,
while an auto-reply wrongly treated as human can start a mail loop.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.parse import ParsedMessage

__all__ = ["Verdict", "classify", "is_automated_address"]


@dataclass(frozen=True)
class Verdict:
    """What classify decided about one message.

    ``auto``: written by a machine; never answered, never reopens a ticket.
    ``bounce``: a delivery status notification / non-delivery report (implies auto).
    ``reasons``: one line per rule that matched, in the order the rules ran.
    ``original_message_ids``: for bounces, the Message-IDs of the mail that
    bounced (embedded parts first, then In-Reply-To and References).
    """

    auto: bool
    bounce: bool
    reasons: tuple[str, ...]
    original_message_ids: tuple[str, ...]


@dataclass(frozen=True)
class _Finding:
    """One matched rule: the reason shown to people, and whether it proves a bounce."""

    reason: str
    bounce: bool = False


# --- Patterns --------------------------------------------------------------------

# Local parts (before any "+tag") of the mailboxes MTAs send bounces from.
_DAEMON_LOCAL_PART = re.compile(
    r"""
      mailer[-_.]?daemon                # sendmail, Postfix, Exim, qmail, Gmail, Amazon SES
    | post[-_.]?master                  # RFC 5321 4.5.1 role; Exchange, Domino; Verizon post_master
    | microsoftexchange[0-9a-f]{32}     # the Exchange system mailbox that signs its NDRs
    """,
    re.VERBOSE,
)

# Local parts of other mailboxes that only machines write from.
_AUTOMATED_LOCAL_PART = re.compile(
    r"""
      no[-_.]?reply(?:[-_.].*)?             # noreply@, no-reply-aws@, noreply-dmarc-support@
    | do[-_.]?not[-_.]?reply(?:[-_.].*)?    # donotreply@, do-not-reply@ (banks, shops)
    | dont[-_.]?reply(?:[-_.].*)?           # dontreply@
    | bounces?(?:[-_.=].*)?                 # VERP return paths: Mailman, SendGrid, Mailchimp
    | notifications?                        # notifications@github.com, notification@ (SaaS)
    """,
    re.VERBOSE,
)

# Words of non-delivery reports, searched anywhere in the subject.  Only bounce
# evidence together with an automated or null sender: a person may well write
# "Undeliverable:" or forward a bounce, and such a message must reach a ticket.
_NDR_SUBJECT = re.compile(
    r"""
      undeliver(?:ed|able)          # Postfix "Undelivered Mail Returned to Sender", Exchange
                                    # "Undeliverable: <subject>", GroupWise, Lotus Notes
    | delivery\ status              # Gmail, Exchange/IIS, Amazon SES, Zoho "Delivery Status
                                    # Notification (Failure|Delay)"; McAfee "Delivery Status"
    | delivery\ (?:has\ )?failed    # Exim "Mail delivery failed", MailFoundry
    | delivery\ failure             # Domino "DELIVERY FAILURE:", MessageLabs, Mimecast
    | fail(?:ed|ure)\ delivery      # Japanese gateways ("failed delivery", "failure delivery")
    | delivery\ problem             # AOL "Mail Delivery Problem"
    | returned\ (?:mail|to\ sender) # sendmail "Returned mail: see transcript for details"
    | postmaster\ notify            # sendmail's copy to the postmaster
    | failure\ notice               # qmail
    | mail\ system\ error           # au/ezweb "Mail System Error - Returned Mail"
    | could\ not\ be\ delivered     # Trend Micro InterScan "Mail could not be delivered"
    | error\ sending\ your\ mail    # Verizon, Yahoo "There was an error sending your mail"
    | could\ not\ send\ message     # sendmail "Warning: could not send message for past 4 hours"
    | warning:\ message\ .*\ delayed  # Exim delay warning
    | delayed\ mail                 # Postfix "Delayed Mail (still being retried)"
    """,
    re.VERBOSE,
)

# Auto-reply ("out of office") subjects, matched at the start of the subject
# only.  A person could write "Out of office next week" themselves; we accept
# that: a misclassified human message is still stored and shown, it is only
# never auto-answered, which is a small price for breaking vacation loops.
_AUTOREPLY_SUBJECT = re.compile(
    r"""
      out\ of\ (?:the\ )?office                 # Outlook, Gmail vacation responder, Zimbra
    | automatic\ reply\s*:                      # Outlook / Exchange (English)
    | auto[-\ ]?reply\s*:                       # Apple iCloud, Zoho, cPanel autoresponders
    | auto:                                     # Lotus Notes "AUTO: X is out of the office"
    | automatische\ antwort\s*:                 # Outlook (German)
    | réponse\ automatique                      # Outlook (French)
    | trả\ lời\ tự\ động                        # Outlook (Vietnamese)
    | پاسخ\ خودکار                              # Outlook (Persian)
    """,
    re.VERBOSE,
)

# Precedence values that mark bulk or list mail.  Precedence is not standard,
# but RFC 3834 section 2 tells responders to honour it, and every list
# manager and mass mailer sets it.
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})

# Headers that autoresponders add to their replies (vacation, cPanel, Exim
# autoreply transports, some Exchange add-ons); any value but "no" counts.
_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-auto-reply")

# Mailing-list traffic, which RFC 3834 section 2 says responders must not
# answer: List-Id (RFC 2919), the List-* command headers (RFC 2369), and the
# older markers of list managers that predate them.
_LIST_HEADERS = frozenset(
    {
        "list-id",
        "list-unsubscribe",
        "list-subscribe",
        "list-post",
        "list-help",
        "list-owner",
        "list-archive",
        "mailing-list",  # ezmlm, Yahoo! Groups
        "x-mailing-list",  # SmartList, vger.kernel.org
        "x-mlserver",  # fml (Japanese list manager), also on its error notices
    }
)

# multipart/report report-type values (RFC 6522 section 3) and what they mean.
# RFC 6533 adds the "global-" variants for internationalised reports.
_BOUNCE_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})

# How the null reverse-path looks once an MTA wrote it into Return-Path:
# "<>" (RFC 5321 4.4), qmail's "#@[]", and Microsoft IIS SMTP's "<<>>".
_NULL_PATHS = frozenset({"", "<>", "<<>>", "#@[]", "<#@[]>"})

_EMPTY_ANGLE = re.compile(r"<\s*>")
_ANGLE_ADDR = re.compile(r"<([^<>]*)>")
_EMAIL = re.compile(r"[^\s<>()\[\],;:\"]+@[^\s<>()\[\],;:\"]+")
_REASON_VALUE_LIMIT = 80


# --- Public functions ------------------------------------------------------------


def classify(
    message: ParsedMessage, envelope_sender: str, own_addresses: frozenset[str]
) -> Verdict:
    """Decide whether ``message`` was written by a machine, and whether it is a bounce.

    envelope_sender is the SMTP MAIL FROM ("" for the null reverse-path <>);
    own_addresses are our mailbox addresses, lower-case.
    """
    sender = _bare_path(envelope_sender)
    findings = [
        *_auto_submitted(message),
        *_null_sender(message, sender),
        *_precedence(message),
        *_autoreply_headers(message),
        *_list_headers(message),
        *_report(message),
        *_exchange_headers(message),
        *_failed_recipients(message),
        *_automated_senders(message, sender),
        *_own_mail(message, sender, own_addresses),
        *_autoreply_subject(message),
        *_ndr_subject(message, _machine_sender(message, sender)),
    ]
    bounce = any(finding.bounce for finding in findings)
    return Verdict(
        auto=bool(findings),
        bounce=bounce,
        reasons=tuple(finding.reason for finding in findings),
        original_message_ids=_original_message_ids(message) if bounce else (),
    )


def is_automated_address(email: str) -> bool:
    """Whether ``email`` is a mailbox only machines write from.

    mailer-daemon, postmaster, noreply/no-reply/do-not-reply/donotreply,
    bounce(s), notifications@... style local parts, ignoring +tags and case.
    A bare local part (``MAILER-DAEMON`` without a domain) is accepted too.
    """
    local = _local_part(email)
    return (
        _DAEMON_LOCAL_PART.fullmatch(local) is not None
        or _AUTOMATED_LOCAL_PART.fullmatch(local) is not None
    )


# --- Rules -----------------------------------------------------------------------


def _auto_submitted(message: ParsedMessage) -> Iterator[_Finding]:
    """Any Auto-Submitted value other than "no" is a machine (RFC 3834 sections 2 and 5).

    Only the keyword before ";" counts (the field may carry parameters, e.g.
    ``auto-replied; owner-email="..."``).  An empty value is malformed; we
    treat it as automatic, because a human client never adds the field.
    """
    for value in _header_values(message, "auto-submitted"):
        keyword = value.partition(";")[0].strip().lower()
        if keyword != "no":
            yield _Finding(f"Auto-Submitted: {_shown(keyword) or '(empty)'}")


def _null_sender(message: ParsedMessage, sender: str) -> Iterator[_Finding]:
    """The null reverse-path <>, which only machines use.

    RFC 5321 4.5.5 requires it for DSNs and RFC 3834 section 2 forbids
    answering it.  The envelope is the authoritative source; a Return-Path: <>
    header is what the delivering MTA recorded (RFC 5321 4.4) when the message
    reached a mailbox before us (IMAP intake, forwarding).
    """
    if sender == "":
        yield _Finding("null envelope sender (MAIL FROM:<>)")
    if any(_is_null_path(value) for value in _header_values(message, "return-path")):
        yield _Finding("Return-Path: <>")


def _precedence(message: ParsedMessage) -> Iterator[_Finding]:
    """Precedence: bulk/junk/list, which RFC 3834 section 2 says to honour."""
    for value in _header_values(message, "precedence"):
        keyword = value.strip().lower()
        if keyword in _BULK_PRECEDENCE:
            yield _Finding(f"Precedence: {keyword}")


def _autoreply_headers(message: ParsedMessage) -> Iterator[_Finding]:
    """X-Autoreply and friends, set by autoresponders that predate RFC 3834."""
    for name, value in message.headers:
        if name in _AUTOREPLY_HEADERS and value.strip().lower() != "no":
            yield _Finding(f"{_header_label(name)}: {_shown(value)}")


def _list_headers(message: ParsedMessage) -> Iterator[_Finding]:
    """Mailing-list mail (RFC 2919, RFC 2369); RFC 3834 section 2 forbids answering it.

    One reason names every list header found, List-Id with its value first
    because it says which list the message came through.
    """
    names = _unique(name for name, _ in message.headers if name in _LIST_HEADERS)
    if not names:
        return
    list_ids = _header_values(message, "list-id")
    shown = [f"List-Id: {_shown(list_ids[0])}"] if list_ids else []
    shown += [_header_label(name) for name in names if name != "list-id"]
    yield _Finding(f"mailing list ({'; '.join(shown)})")


def _report(message: ParsedMessage) -> Iterator[_Finding]:
    """multipart/report (RFC 6522 section 3) is always machine-made.

    report-type=delivery-status is a DSN (RFC 3464): a bounce or delay notice.
    disposition-notification (MDN, RFC 8098) and feedback-report (ARF, RFC
    5965) are automatic but tell us nothing about delivery, so no bounce.
    """
    if message.content_type != "multipart/report":
        return
    report_type = message.report_type or "(none)"
    yield _Finding(
        f"multipart/report; report-type={_shown(report_type)}",
        bounce=message.report_type in _BOUNCE_REPORT_TYPES,
    )


def _exchange_headers(message: ParsedMessage) -> Iterator[_Finding]:
    """Headers Microsoft Exchange / Office 365 put on mail they generate.

    X-MS-Exchange-Generated-Message-Source names the agent that wrote the
    message (mailbox rules, journaling, calendar repair); X-MS-Exchange-Message-
    Is-Ndr marks a non-delivery report, even when its body is not a proper DSN.
    """
    for value in _header_values(message, "x-ms-exchange-generated-message-source"):
        yield _Finding(f"X-MS-Exchange-Generated-Message-Source: {_shown(value)}")
    if _header_values(message, "x-ms-exchange-message-is-ndr"):
        yield _Finding("X-MS-Exchange-Message-Is-Ndr", bounce=True)


def _failed_recipients(message: ParsedMessage) -> Iterator[_Finding]:
    """X-Failed-Recipients: Exim and Gmail list the rejected addresses on their bounces."""
    for value in _header_values(message, "x-failed-recipients"):
        yield _Finding(f"X-Failed-Recipients: {_shown(value)}", bounce=True)


def _automated_senders(message: ParsedMessage, sender: str) -> Iterator[_Finding]:
    """From or envelope sender is a mailer-daemon, postmaster, noreply... mailbox."""
    author = _from_email(message)
    if author and is_automated_address(author):
        yield _Finding(f"automated sender in From: {_shown(author)}")
    elif _from_is_null(message):
        yield _Finding("From: <> (no author address)")
    if sender and is_automated_address(sender):
        yield _Finding(f"automated envelope sender: {_shown(sender)}")


def _own_mail(message: ParsedMessage, sender: str, own: frozenset[str]) -> Iterator[_Finding]:
    """Our own mail coming back: From, envelope sender or X-Loop names our mailbox.

    A +tag is ignored, so support+KEY@ counts as support@.  X-Loop is the
    header ticket systems and list managers stamp on what they send so they
    can recognise it when it returns.  A forged From only makes the message
    "automatic", which costs the forger their own acknowledgement.
    """
    author = _untagged(_from_email(message))
    if author in own:
        yield _Finding(f"From is our own address: {author}")
    if _untagged(sender) in own:
        yield _Finding(f"envelope sender is our own address: {_untagged(sender)}")
    for value in _header_values(message, "x-loop"):
        named = sorted({_untagged(found) for found in _EMAIL.findall(value)} & own)
        if named:
            yield _Finding(f"X-Loop names our address: {', '.join(named)}")


def _autoreply_subject(message: ParsedMessage) -> Iterator[_Finding]:
    """An out-of-office subject prefix, for autoresponders that set no header."""
    if _AUTOREPLY_SUBJECT.match(_folded_subject(message)):
        yield _Finding(f"auto-reply subject: {_shown(message.subject.strip())}")


def _ndr_subject(message: ParsedMessage, machine_sender: bool) -> Iterator[_Finding]:
    """A non-delivery subject from a machine sender: bounce evidence for plain-text NDRs.

    qmail, Exim, Domino and older Exchange send bounces as text/plain without a
    DSN part; the subject together with a mailer-daemon or null sender is all
    they give us.  The subject alone proves nothing.
    """
    if machine_sender and _NDR_SUBJECT.search(_folded_subject(message)):
        yield _Finding(f"non-delivery subject: {_shown(message.subject.strip())}", bounce=True)


# --- Helpers ---------------------------------------------------------------------


def _machine_sender(message: ParsedMessage, sender: str) -> bool:
    """Whether the sender is null or an automated mailbox (for the subject rule).

    Null means the envelope, the Return-Path or the From header is <>.
    """
    return (
        sender == ""
        or any(_is_null_path(value) for value in _header_values(message, "return-path"))
        or _from_is_null(message)
        or is_automated_address(_from_email(message))
        or is_automated_address(sender)
    )


def _from_is_null(message: ParsedMessage) -> bool:
    """Whether a From header is present but names no address, as in ``MAILER-DAEMON <>``.

    DragonFly Mail Agent and McAfee Email Gateway sign their bounces this way;
    no mail client lets a person send without an address.
    """
    return any(_EMPTY_ANGLE.search(value) for value in _header_values(message, "from"))


def _local_part(email: str) -> str:
    """The lower-case local part of ``email`` without +tag or quotes; all of it if no "@"."""
    bare = email.strip().strip("<>")
    local = bare.rpartition("@")[0] or bare
    return local.strip('"').lower().partition("+")[0]


def _untagged(email: str) -> str:
    """``email`` lower-case without a +tag in the local part (support+K@x -> support@x)."""
    local, at, domain = email.strip().lower().rpartition("@")
    return f"{local.partition('+')[0]}{at}{domain}" if at else email.strip().lower()


def _original_message_ids(message: ParsedMessage) -> tuple[str, ...]:
    """Message-IDs of the bounced mail: embedded parts first, then the reply headers.

    A report may carry the returned message or just its headers as its third
    part (RFC 6522 section 3, RFC 3464 section 2: message/rfc822 or
    text/rfc822-headers); Exchange and others also point In-Reply-To and
    References at the bounced message.
    """
    candidates = (
        *message.embedded_message_ids,
        *message.in_reply_to,
        *message.references,
    )
    return _unique(c for c in candidates if c and c != message.message_id)


def _header_values(message: ParsedMessage, name: str) -> list[str]:
    """Every value of the top-level header ``name`` (lower-case), in message order."""
    return [value for key, value in message.headers if key == name]


def _from_email(message: ParsedMessage) -> str:
    """The From address, lower-case, or "" when there is none.

    parse drops a From without a domain (sendmail's ``Mail Delivery Subsystem
    <MAILER-DAEMON>``, a bare ``MAILER-DAEMON``), so then the raw header value
    is read: the text in angle brackets, or the value itself if it is one word.
    """
    if message.from_addr is not None:
        return message.from_addr.email.strip().lower()
    for value in _header_values(message, "from"):
        bracketed = _ANGLE_ADDR.search(value)
        word = bracketed.group(1) if bracketed else value
        if word.strip() and not any(ch.isspace() for ch in word.strip()):
            return word.strip().lower()
    return ""


def _bare_path(path: str) -> str:
    """An envelope sender without angle brackets; "" for every form of the null path."""
    return "" if _is_null_path(path) else path.strip().strip("<>").strip()


def _is_null_path(value: str) -> bool:
    """Whether a reverse-path or Return-Path value is the null path <>."""
    return "".join(value.split()) in _NULL_PATHS


def _folded_subject(message: ParsedMessage) -> str:
    """The subject normalised for prefix matching: NFC, case-folded, leading space gone.

    Persian text is often typed with the Arabic kaf and yeh (U+0643, U+064A);
    they are mapped to the Persian letters so both spellings match.
    """
    subject = unicodedata.normalize("NFC", message.subject).lstrip().casefold()
    return subject.replace("\u0643", "\u06a9").replace("\u064a", "\u06cc")


def _header_label(name: str) -> str:
    """A lower-case header name in its usual spelling (``list-id`` -> ``List-Id``)."""
    return "-".join(part.capitalize() for part in name.split("-"))


def _shown(value: str) -> str:
    """A header value made safe and short for a reason line: one line, no controls."""
    printable = "".join(ch if ch.isprintable() else " " for ch in value)
    single_line = " ".join(printable.split())
    if len(single_line) > _REASON_VALUE_LIMIT:
        return single_line[: _REASON_VALUE_LIMIT - 1] + "…"
    return single_line


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    """``items`` without repeats, first occurrence kept."""
    return tuple(dict.fromkeys(items))
