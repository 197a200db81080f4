"""Rendering: every event in every shipped language, headers, RTL, no header injection."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import models
from gateway.config import Mailbox
from gateway.db import utcnow
from gateway.notify import Notifier, Recipient
from gateway.preview import EVENTS, _extras
from gateway.render import Headers, Renderer, compose
from tests.helpers import write_config

LANGUAGES = ("en", "vi", "fa")
MAILBOX = Mailbox(address="support@example.com", name="Example Support")


def ticket(subject: str = "Máy in lỗi E42", language: str = "en") -> models.Ticket:
    now = utcnow()
    return models.Ticket(
        number=10023,
        mailbox=MAILBOX.address,
        subject=subject,
        requester_email="lan@example.vn",
        requester_name="Nguyễn Lan",
        status="new",
        priority="high",
        category="general",
        language=language,
        created_at=now,
        updated_at=now,
    )


@pytest.fixture(scope="module")
def notifier(tmp_path_factory: pytest.TempPathFactory) -> Notifier:
    from gateway import config

    folder = tmp_path_factory.mktemp("cfg")
    return Notifier(config.load(write_config(folder, f"sqlite:///{folder}/x.db")), Renderer())


def build(
    notifier: Notifier,
    event: str,
    language: str,
    subject: str = "Máy in lỗi E42",
    name: str = "Nguyễn Lan",
) -> EmailMessage:
    t = ticket(subject, language)
    recipient = Recipient("lan@example.vn", name)
    rendered = notifier.renderer.render(
        event, [language], notifier.context(t, MAILBOX, recipient, **_extras(event))
    )
    assert rendered.language == language
    message = compose(
        rendered,
        Headers(
            from_name=MAILBOX.name,
            from_address=MAILBOX.address,
            to_name=name,
            to_address=recipient.email,
            hostname="gw.test",
            reply_to="support+abcdefghijklmnopqrstuvwxyz@example.com",
            in_reply_to="orig@mail.example.vn",
            references=("orig@mail.example.vn",),
            auto_submitted="auto-replied",
        ),
    )
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)  # type: ignore[return-value]


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.setdefault(tag, dict(attrs))


def test_every_shipped_language_has_every_event() -> None:
    renderer = Renderer()
    for event in EVENTS:
        assert set(LANGUAGES) <= set(renderer.languages(event)), event


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", EVENTS)
def test_rendered_mail_is_complete(notifier: Notifier, event: str, language: str) -> None:
    message = build(notifier, event, language)
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    assert str(message["From"]) == "Example Support <support@example.com>"
    assert str(message["To"]) == "Nguyễn Lan <lan@example.vn>"
    assert str(message["Message-ID"]).endswith("@gw.test>")
    assert str(message["In-Reply-To"]) == "<orig@mail.example.vn>"
    assert str(message["Auto-Submitted"]) == "auto-replied"
    assert str(message["X-Auto-Response-Suppress"]) == "All"
    assert str(message["Content-Language"]) == language
    subject = str(message["Subject"])
    assert "\n" not in subject
    if event == "verification_code":
        assert "123456" not in subject  # lock screens show subjects
        assert "123456" in text.get_content()
    elif event == "command_rejected":
        assert "#priorty high: unknown command" in text.get_content()
    elif event == "address_misuse":  # about no ticket: someone wrote to a personal address
        assert "someone@elsewhere.example" in text.get_content()
    else:
        assert subject.startswith("[#10023]")
        assert "Máy in lỗi E42" in subject
        assert "10023" in text.get_content()
    page = _Html()
    page.feed(html.get_content())
    assert page.attrs["html"].get("lang") == language
    assert page.attrs["html"].get("dir") == ("rtl" if language == "fa" else "ltr")
    assert "script" not in page.tags


@pytest.mark.parametrize("language", LANGUAGES)
def test_customer_text_is_escaped_in_html(notifier: Notifier, language: str) -> None:
    t = ticket("<script>alert(1)</script>", language)
    context = notifier.context(
        t,
        MAILBOX,
        Recipient("a@example.org"),
        message={"author_name": "x", "author_email": "", "text": "<img src=x onerror=alert(1)>"},
    )
    rendered = notifier.renderer.render("customer_reply", [language], context)
    assert "<script>alert(1)</script>" not in rendered.html
    assert "&lt;script&gt;" in rendered.html
    assert "<img src=x" not in rendered.html


def test_language_falls_back_to_mailbox_then_english(notifier: Notifier) -> None:
    renderer = notifier.renderer
    assert renderer.pick_language("ticket_created", ["de", "vi"]) == "vi"
    assert renderer.pick_language("ticket_created", ["de", "ja"]) == "en"


def test_operator_override_and_new_language(tmp_path: Path, notifier: Notifier) -> None:
    own = tmp_path / "mail"
    (own / "en").mkdir(parents=True)
    (own / "en" / "ticket_closed.subject.j2").write_text("CLOSED {{ ticket.tag }}")
    (own / "de").mkdir()
    for part, body in (
        ("subject", "Eingang {{ ticket.tag }}"),
        ("txt", "Danke."),
        ("html", '<html lang="de"><p>Danke.</p></html>'),
    ):
        (own / "de" / f"ticket_created.{part}.j2").write_text(body)
    renderer = Renderer(tmp_path)
    context = notifier.context(ticket(), MAILBOX, Recipient("a@example.org"))
    assert renderer.render("ticket_closed", ["en"], context).subject == "CLOSED [#10023]"
    german = renderer.render("ticket_created", ["de"], context)
    assert (german.language, german.subject) == ("de", "Eingang [#10023]")
    assert (
        renderer.render("agent_reply", ["de"], {**context, "agent": {"name": "A"}}).language == "en"
    )


HOSTILE = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80
) | st.sampled_from(
    [
        "x\r\nBcc: victim@example.org",
        "x\nX-Injected: 1",
        "\r\n\r\nbody",
        "a\x00b",
        "=?utf-8?q?=0D=0ABcc:_x@y?=",
        "x\u2028Bcc: y@z",
    ]
)


@settings(max_examples=150, deadline=None)
@given(subject=HOSTILE, name=HOSTILE)
def test_no_input_adds_a_header(notifier: Notifier, subject: str, name: str) -> None:
    message = build(notifier, "ticket_created", "en", subject=subject, name=name)
    names = sorted(k.lower() for k in message)
    assert names == sorted(
        [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "reply-to",
            "in-reply-to",
            "references",
            "auto-submitted",
            "x-auto-response-suppress",
            "content-language",
            "mime-version",
            "content-type",
        ]
    )
    assert message["To"].addresses[0].addr_spec == "lan@example.vn"
    assert len(message["To"].addresses) == 1
    assert str(message["Subject"]).startswith("[#10023]")
