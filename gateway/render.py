"""Render: an event's mail from jinja2 templates, built as a MIME message.

Templates live in ``templates/mail/<lang>/<event>.{subject,txt,html}.j2``;
an operator's ``templates_dir`` is searched first, so one file can be
overridden, or a language added, without touching the package. The language
is the first of the ticket's language, the mailbox's, and English that has
the event's templates.

Every value that came from a customer (names, subjects) is stripped of
control characters before it reaches a header, and the message is built with
EmailMessage under policy.SMTP, which folds and encodes headers itself: no
input can add a header. HTML templates autoescape.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import jinja2

from gateway.language import direction

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
FALLBACK_LANGUAGE = "en"
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Rendered:
    """The three parts of one event's mail, in one language."""

    language: str
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class Headers:
    """Who a mail is from and to, and how it threads."""

    from_name: str
    from_address: str
    to_name: str
    to_address: str
    hostname: str
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: str | None = "auto-generated"  # or auto-replied, or None for human mail
    message_id: str = field(default="")


def header_safe(value: str) -> str:
    """One line of text without CR, LF, NUL or other control characters.

    "=?" is broken up too: CPython's header folder decodes encoded-word look-
    alikes in a display name while serialising it, so a name of "=??Q?=0D0"
    would put a bare CR into the To header (found by the hypothesis test).
    Values reaching us are already decoded, so a real name never holds one.
    """
    cleaned = "".join(" " if unicodedata.category(c) in {"Cc", "Zl", "Zp"} else c for c in value)
    return _SPACES.sub(" ", cleaned).strip().replace("=?", "= ?")


LIST_EVERY = 10.0  # seconds between looks at which template files exist


class Renderer:
    """A jinja2 environment over the operator's and the package's templates."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        folders = [str(p) for p in (templates_dir, PACKAGE_TEMPLATES) if p is not None]
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self._listed: tuple[float, frozenset[str]] | None = None

    def languages(self, event: str) -> list[str]:
        """Languages that have all three templates of ``event``."""
        names = self._names()
        found = {
            n.split("/")[1]
            for n in names
            if n.startswith("mail/") and n.endswith(f"/{event}.subject.j2")
        }
        return sorted(
            lang
            for lang in found
            if {f"mail/{lang}/{event}.{part}.j2" for part in ("txt", "html")} <= names
        )

    def _names(self) -> frozenset[str]:
        """The template files there are, looked up at most every few seconds.

        Listing means walking the template folders, which every mail would
        otherwise pay for; a template an operator adds is seen within
        :data:`LIST_EVERY` seconds (jinja2 itself reloads changed files).
        """
        now = time.monotonic()
        if self._listed is None or now - self._listed[0] > LIST_EVERY:
            self._listed = (now, frozenset(self.env.list_templates(extensions=["j2"])))
        return self._listed[1]

    def pick_language(self, event: str, preferred: Iterable[str]) -> str:
        """The first preferred language with templates for ``event``, else English."""
        available = set(self.languages(event))
        for language in preferred:
            if language in available:
                return language
        return FALLBACK_LANGUAGE

    def render(self, event: str, preferred: Iterable[str], context: Mapping[str, Any]) -> Rendered:
        """Render the subject, text and HTML of ``event`` in the best language."""
        language = self.pick_language(event, preferred)
        values = {"event": event, "lang": language, "dir": direction(language), **context}
        part = self._part(event, language, values)
        return Rendered(
            language, header_safe(part("subject")), part("txt").strip() + "\n", part("html")
        )

    def _part(self, event: str, language: str, values: Mapping[str, Any]) -> Any:
        def render(kind: str) -> str:
            template = self.env.get_template(f"mail/{language}/{event}.{kind}.j2")
            return template.render(values)

        return render


def compose(rendered: Rendered, headers: Headers) -> EmailMessage:
    """The MIME message: multipart/alternative with the text and HTML parts."""
    message = EmailMessage(policy=SMTP)
    message["From"] = Address(header_safe(headers.from_name), addr_spec=headers.from_address)
    message["To"] = Address(header_safe(headers.to_name), addr_spec=headers.to_address)
    message["Subject"] = header_safe(rendered.subject)
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC), usegmt=True)
    message["Message-ID"] = headers.message_id or make_msgid(domain=headers.hostname)
    if headers.reply_to:
        message["Reply-To"] = Address(header_safe(headers.from_name), addr_spec=headers.reply_to)
    if headers.in_reply_to:
        message["In-Reply-To"] = f"<{header_safe(headers.in_reply_to)}>"
    if headers.references:
        message["References"] = " ".join(f"<{header_safe(r)}>" for r in headers.references)
    if headers.auto_submitted:
        # RFC 3834 section 5: automatic mail says so; Exchange honours the second.
        message["Auto-Submitted"] = headers.auto_submitted
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message["Content-Language"] = rendered.language  # after set_content, which clears Content-*
    return message
