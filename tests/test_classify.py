"""classify: which messages a machine wrote, and which are bounces.

Every rule is tested with a small hand-built message that goes through the
real parser, then the rules are run over third-party corpora: the bounce
collections of sisimai and Mail::DeliveryStatus::BounceParser must come out
automatic (most of them as bounces), and ordinary replies from mail clients
must not.
"""

from __future__ import annotations

import email
import unicodedata
from collections import Counter
from email.header import Header

import pytest

from gateway.classify import Verdict, classify, is_automated_address
from gateway.parse import ParsedMessage, parse
from tests.corpus import CORPUS, need_corpus

OWN = frozenset({"support@help.example.com", "billing@help.example.com"})
CUSTOMER = "Nguyễn Thị Lan <lan.nguyen@gmail.com>"


def build(
    *headers: str,
    sender: str = CUSTOMER,
    subject: str = "Hỏi về đơn hàng #1042",
    content_type: str = "text/plain; charset=UTF-8",
    body: str = "Chào anh/chị,\r\nĐơn hàng của tôi chưa được giao.\r\nCảm ơn.\r\n",
) -> bytes:
    """A raw message as a Gmail user would send it, plus ``headers`` on top."""
    name, _, address = sender.rpartition(" <")
    from_value = f"{encoded(name)} <{address}" if name else sender
    lines = [
        *headers,
        f"From: {from_value}",
        "To: Support <support@help.example.com>",
        f"Subject: {encoded(subject)}",
        "Date: Tue, 12 Mar 2024 09:15:02 +0700",
        "Message-ID: <CAB3xq=Zc1@mail.gmail.com>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
        "Content-Transfer-Encoding: 8bit",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def encoded(text: str) -> str:
    """``text`` as a header value: RFC 2047 encoded words when it is not ASCII."""
    return text if text.isascii() else Header(text, "utf-8").encode()


def verdict_of(raw: bytes, envelope_sender: str = "lan.nguyen@gmail.com") -> Verdict:
    """Parse ``raw`` with the real parser and classify it."""
    return classify(parse(raw), envelope_sender, OWN)


def bare_ids(ids: tuple[str, ...]) -> set[str]:
    """Message-IDs without angle brackets, whichever form the parser keeps."""
    return {i.strip().strip("<>") for i in ids}


# --- Human mail ------------------------------------------------------------------


def test_plain_vietnamese_gmail_message_is_human() -> None:
    verdict = verdict_of(build())
    assert verdict == Verdict(auto=False, bounce=False, reasons=(), original_message_ids=())


def test_auto_submitted_no_is_human() -> None:
    verdict = verdict_of(build("Auto-Submitted: no"))
    assert not verdict.auto
    assert verdict.reasons == ()


def test_reply_to_an_auto_reply_is_human() -> None:
    # The subject rules look at the start only: a person answering an
    # out-of-office notice or forwarding a bounce is still a person.
    verdict = verdict_of(build(subject="Re: Automatic reply: Undeliverable: đơn hàng"))
    assert not verdict.auto


def test_ndr_subject_from_a_person_is_not_a_bounce() -> None:
    verdict = verdict_of(build(subject="Undelivered Mail Returned to Sender"))
    assert not verdict.auto
    assert not verdict.bounce


# --- RFC 3834 Auto-Submitted -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("auto-replied", "Auto-Submitted: auto-replied"),
        ('auto-replied; owner-email="lan@example.com"', "Auto-Submitted: auto-replied"),
        ("Auto-Generated", "Auto-Submitted: auto-generated"),
        ("auto-generated (failure)", "Auto-Submitted: auto-generated (failure)"),
        ("auto-notified", "Auto-Submitted: auto-notified"),
    ],
)
def test_auto_submitted_other_than_no_is_auto(value: str, reason: str) -> None:
    verdict = verdict_of(build(f"Auto-Submitted: {value}"))
    assert verdict.auto
    assert not verdict.bounce
    assert verdict.reasons == (reason,)


# --- Null reverse-path -----------------------------------------------------------


@pytest.mark.parametrize("envelope", ["", "<>", " < > "])
def test_null_envelope_sender_is_auto(envelope: str) -> None:
    verdict = verdict_of(build(), envelope_sender=envelope)
    assert verdict.auto
    assert verdict.reasons == ("null envelope sender (MAIL FROM:<>)",)


@pytest.mark.parametrize("value", ["<>", "<#@[]>"])
def test_null_return_path_header_is_auto(value: str) -> None:
    verdict = verdict_of(build(f"Return-Path: {value}"))
    assert verdict.auto
    assert verdict.reasons == ("Return-Path: <>",)


def test_ordinary_return_path_is_human() -> None:
    assert not verdict_of(build("Return-Path: <lan.nguyen@gmail.com>")).auto


# --- Precedence, X-Autoreply, lists ----------------------------------------------


@pytest.mark.parametrize("value", ["bulk", "junk", "list", "Bulk"])
def test_bulk_precedence_is_auto(value: str) -> None:
    verdict = verdict_of(build(f"Precedence: {value}"))
    assert verdict.auto
    assert verdict.reasons == (f"Precedence: {value.lower()}",)


def test_other_precedence_is_human() -> None:
    assert not verdict_of(build("Precedence: first-class")).auto


@pytest.mark.parametrize("name", ["X-Autoreply", "X-Autorespond", "X-Auto-Reply"])
def test_autoreply_headers_are_auto(name: str) -> None:
    verdict = verdict_of(build(f"{name}: yes"))
    assert verdict.auto
    assert verdict.reasons == (f"{name}: yes",)


def test_autoreply_header_saying_no_is_human() -> None:
    assert not verdict_of(build("X-Autoreply: no")).auto


def test_list_id_is_auto() -> None:
    verdict = verdict_of(
        build(
            f"List-Id: {encoded('Khách hàng thân thiết')} <vip.shop.example.vn>",
            "List-Unsubscribe: <mailto:leave@shop.example.vn>",
        )
    )
    assert verdict.auto
    assert verdict.reasons == (
        "mailing list (List-Id: Khách hàng thân thiết <vip.shop.example.vn>; List-Unsubscribe)",
    )


def test_list_unsubscribe_alone_is_auto() -> None:
    verdict = verdict_of(build("List-Unsubscribe: <https://news.example.com/u?id=1>"))
    assert verdict.auto
    assert verdict.reasons == ("mailing list (List-Unsubscribe)",)


# --- multipart/report (RFC 6522) -------------------------------------------------

ORIGINAL_ID = "ticket-1042.7f3a@help.example.com"


def report(report_type: str, second_part: str, third_part: str) -> bytes:
    """A multipart/report in the shape Postfix and Gmail send."""
    body = (
        "--B\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.net.\r\n\r\n"
        f"--B\r\n{second_part}\r\n"
        f"--B\r\n{third_part}\r\n"
        "--B--\r\n"
    )
    return build(
        "Return-Path: <>",
        "Auto-Submitted: auto-replied",
        sender="Mail Delivery System <MAILER-DAEMON@mx.example.net>",
        subject="Undelivered Mail Returned to Sender",
        content_type=f'multipart/report; report-type={report_type}; boundary="B"',
        body=body,
    )


DSN_PART = (
    "Content-Type: message/delivery-status\r\n\r\n"
    "Reporting-MTA: dns; mx.example.net\r\n\r\n"
    "Final-Recipient: rfc822; lan@example.vn\r\nAction: failed\r\nStatus: 5.1.1\r\n"
)
EMBEDDED_MESSAGE = (
    "Content-Type: message/rfc822\r\n\r\n"
    "From: Support <support@help.example.com>\r\nTo: lan@example.vn\r\n"
    f"Subject: [#1042] Received\r\nMessage-ID: <{ORIGINAL_ID}>\r\n\r\nHello\r\n"
)
EMBEDDED_HEADERS = (
    "Content-Type: text/rfc822-headers\r\n\r\n"
    "From: Support <support@help.example.com>\r\nTo: lan@example.vn\r\n"
    f"Subject: [#1042] Received\r\nMessage-ID: <{ORIGINAL_ID}>\r\n"
)


def test_delivery_status_report_is_a_bounce_with_the_original_id() -> None:
    verdict = verdict_of(report("delivery-status", DSN_PART, EMBEDDED_MESSAGE), "")
    assert verdict.auto
    assert verdict.bounce
    assert "multipart/report; report-type=delivery-status" in verdict.reasons
    assert bare_ids(verdict.original_message_ids) == {ORIGINAL_ID}


def test_rfc822_headers_part_gives_the_original_id() -> None:
    verdict = verdict_of(report("delivery-status", DSN_PART, EMBEDDED_HEADERS), "")
    assert verdict.bounce
    assert bare_ids(verdict.original_message_ids) == {ORIGINAL_ID}


def test_bounce_reasons_name_every_rule_that_matched() -> None:
    verdict = verdict_of(report("delivery-status", DSN_PART, EMBEDDED_MESSAGE), "")
    assert verdict.reasons == (
        "Auto-Submitted: auto-replied",
        "null envelope sender (MAIL FROM:<>)",
        "Return-Path: <>",
        "multipart/report; report-type=delivery-status",
        "automated sender in From: mailer-daemon@mx.example.net",
        "non-delivery subject: Undelivered Mail Returned to Sender",
    )


def test_bounce_takes_original_ids_from_in_reply_to_and_references() -> None:
    raw = build(
        "X-MS-Exchange-Message-Is-Ndr:",
        "In-Reply-To: <a-1@help.example.com>",
        "References: <a-0@help.example.com> <a-1@help.example.com>",
        sender="Microsoft Outlook <postmaster@contoso.example>",
        subject="Undeliverable: [#1042] Received",
    )
    verdict = verdict_of(raw, "")
    assert verdict.bounce
    assert bare_ids(verdict.original_message_ids) == {
        "a-0@help.example.com",
        "a-1@help.example.com",
    }
    assert len(verdict.original_message_ids) == 2


def test_disposition_notification_is_auto_but_not_a_bounce() -> None:
    mdn = (
        "Content-Type: message/disposition-notification\r\n\r\n"
        "Final-Recipient: rfc822; lan@example.vn\r\n"
        f"Original-Message-ID: <{ORIGINAL_ID}>\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n"
    )
    raw = build(
        sender=CUSTOMER,
        subject="Read: [#1042] Received",
        content_type='multipart/report; report-type=disposition-notification; boundary="B"',
        body=f"--B\r\nContent-Type: text/plain\r\n\r\nRead.\r\n--B\r\n{mdn}\r\n--B--\r\n",
    )
    verdict = verdict_of(raw)
    assert verdict.auto
    assert not verdict.bounce
    assert verdict.reasons == ("multipart/report; report-type=disposition-notification",)
    assert verdict.original_message_ids == ()


def test_feedback_report_is_auto_but_not_a_bounce() -> None:
    arf = "Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n"
    raw = build(
        sender="Abuse Desk <fbl@isp.example>",
        subject="Abuse report",
        content_type='multipart/report; report-type=feedback-report; boundary="B"',
        body=f"--B\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n--B\r\n{arf}\r\n--B--\r\n",
    )
    verdict = verdict_of(raw, "fbl@isp.example")
    assert verdict.auto
    assert not verdict.bounce
    assert verdict.reasons == ("multipart/report; report-type=feedback-report",)


# --- Automated and own senders ---------------------------------------------------


def test_automated_from_is_auto() -> None:
    verdict = verdict_of(build(sender="GitHub <notifications@github.com>"), "bounce@github.com")
    assert verdict.auto
    assert not verdict.bounce
    assert verdict.reasons == (
        "automated sender in From: notifications@github.com",
        "automated envelope sender: bounce@github.com",
    )


def test_automated_envelope_sender_is_auto() -> None:
    verdict = verdict_of(build(), "bounces+2211-ab@em.shop.example")
    assert verdict.reasons == ("automated envelope sender: bounces+2211-ab@em.shop.example",)


def test_from_without_address_is_auto() -> None:
    verdict = verdict_of(build(sender="MAILER-DAEMON <>", subject="Mail delivery failed"))
    assert verdict.auto
    assert verdict.bounce
    assert "From: <> (no author address)" in verdict.reasons


def test_our_own_address_in_from_is_auto() -> None:
    verdict = verdict_of(build(sender="Support <Support@help.example.com>"), "x@relay.example")
    assert verdict.auto
    assert verdict.reasons == ("From is our own address: support@help.example.com",)


def test_our_reply_key_address_in_from_is_auto() -> None:
    verdict = verdict_of(build(sender="Support <support+k7q2@help.example.com>"), "x@relay.example")
    assert verdict.reasons == ("From is our own address: support@help.example.com",)


def test_our_address_as_envelope_sender_is_auto() -> None:
    verdict = verdict_of(build(), "billing@help.example.com")
    assert verdict.reasons == ("envelope sender is our own address: billing@help.example.com",)


def test_x_loop_naming_us_is_auto() -> None:
    verdict = verdict_of(build("X-Loop: Billing <billing@help.example.com>"))
    assert verdict.auto
    assert verdict.reasons == ("X-Loop names our address: billing@help.example.com",)


def test_x_loop_naming_someone_else_is_human() -> None:
    assert not verdict_of(build("X-Loop: helpdesk@other.example")).auto


# --- Microsoft Exchange and Exim headers -----------------------------------------


def test_exchange_generated_message_is_auto() -> None:
    verdict = verdict_of(build("X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent"))
    assert verdict.auto
    assert not verdict.bounce
    assert verdict.reasons == ("X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent",)


def test_exchange_ndr_header_is_a_bounce() -> None:
    verdict = verdict_of(build("X-MS-Exchange-Message-Is-Ndr: "))
    assert verdict.bounce
    assert verdict.reasons == ("X-MS-Exchange-Message-Is-Ndr",)


def test_failed_recipients_header_is_a_bounce() -> None:
    verdict = verdict_of(build("X-Failed-Recipients: lan@example.vn"))
    assert verdict.bounce
    assert verdict.reasons == ("X-Failed-Recipients: lan@example.vn",)


# --- Subjects --------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "Undelivered Mail Returned to Sender",
        "Delivery Status Notification (Failure)",
        "Mail delivery failed: returning message to sender",
        "Undeliverable: [#1042] Received",
        "Returned mail: see transcript for details",
        "failure notice",
    ],
)
def test_ndr_subject_from_mailer_daemon_is_a_bounce(subject: str) -> None:
    raw = build(sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>", subject=subject)
    verdict = verdict_of(raw, "mailer-daemon@googlemail.com")
    assert verdict.bounce
    assert verdict.reasons[-1] == f"non-delivery subject: {subject}"


def test_ndr_subject_with_null_sender_is_a_bounce() -> None:
    verdict = verdict_of(build(sender="Lan <lan@example.vn>", subject="failure notice"), "")
    assert verdict.bounce


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: Hỏi về đơn hàng",
        "Automatic reply: [#1042] Received",
        "Autoreply: [#1042] Received",
        "AUTO: Lan Nguyen is out of the office (returning 05/04/2024)",
        "Trả lời tự động: [#1042] Đã nhận yêu cầu",
        "پاسخ خودکار: [#1042] درخواست شما دریافت شد",
        "پاسخ خودكار: [#1042] درخواست شما دریافت شد",  # Arabic kaf, as some keyboards type it
    ],
)
def test_out_of_office_subjects_are_auto(subject: str) -> None:
    verdict = verdict_of(build(subject=subject))
    assert verdict.auto
    assert not verdict.bounce
    assert verdict.reasons == (f"auto-reply subject: {subject}",)


def test_vietnamese_subject_in_decomposed_form_is_recognised() -> None:
    subject = unicodedata.normalize("NFD", "Trả lời tự động: Đơn hàng")
    assert verdict_of(build(subject=subject)).auto


def test_reason_values_are_one_short_line() -> None:
    verdict = verdict_of(build("X-Autoreply: " + "yes " * 60))
    (reason,) = verdict.reasons
    assert "\n" not in reason
    assert len(reason) <= 100


# --- is_automated_address --------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "MAILER-DAEMON@mx.example.net",
        "mailer-daemon",
        "Postmaster@contoso.example",
        "post_master@vtext.example.com",
        "noreply@accounts.example.com",
        "No-Reply+vn@shop.example",
        "no_reply@bank.example",
        "noreply-dmarc-support@google.com",
        "do-not-reply@bank.example",
        "DoNotReply@bank.example",
        "bounce@lists.example.org",
        "bounces+2211-ab=example.vn@em.shop.example",
        "bounce-mc.us1_1234.5678-lan=example.vn@mail1.mcsv.example",
        "notifications@github.com",
        "notification@facebookmail.com",
        "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.example",
        "<mailer-daemon@mx.example.net>",
    ],
)
def test_automated_addresses(address: str) -> None:
    assert is_automated_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "lan.nguyen@gmail.com",
        "noreen@example.com",
        "bouncer@club.example",
        "it-admin@company.example",
        "replies@company.example",
        "notify.me@example.com",
        "",
    ],
)
def test_personal_addresses(address: str) -> None:
    assert not is_automated_address(address)


# --- Corpora ---------------------------------------------------------------------


# Folders that hold only machine mail: bounces, plus a few auto-replies and
# feedback reports (see the corpus README).  sisimai's not/ folder is checked
# separately below.
BOUNCE_FOLDERS = (
    "sisimai-set-of-emails/bsd",
    "sisimai-set-of-emails/dos",
    "sisimai-set-of-emails/mac",
    "sisimai-set-of-emails/err",
    "sisimai-set-of-emails/to-be-debugged/something-is-wrong",
    "bounceparser-corpus/corpus",
)

# Spam kept in the BounceParser corpus to check that it is NOT taken for a
# bounce (upstream t/spam-*.t expect no reports).  Written to look human.
NOT_BOUNCES = {
    "bounceparser-corpus/corpus/spam-bogus-email-in-report.msg": "spam, no bounce",
    "bounceparser-corpus/corpus/spam-lots-of-bogus-addresses.msg": "spam, no bounce",
    "bounceparser-corpus/corpus/spam-with-badly-parsed-email.msg": "spam, no bounce",
    "bounceparser-corpus/corpus/spam-with-image.msg": "spam, no bounce",
}

# Machine mail that no header rule recognises.
KNOWN_MISSES = {
    "bounceparser-corpus/corpus/bluebottle.msg": (
        "challenge/response request sent in the person's own name; only vendor "
        "X-Bluebottle-* headers say it is automatic"
    ),
    "sisimai-set-of-emails/bsd/arf-23.eml": (
        "Hotmail complaint: multipart/mixed holding only the complained-about "
        "message, from staff@hotmail.com; no report part, no machine header"
    ),
}


def corpus_files(folders: tuple[str, ...]) -> list[str]:
    """Corpus-relative paths of every message file in ``folders`` (empty without corpus)."""
    found: list[str] = []
    for folder in folders:
        directory = CORPUS / folder
        if directory.is_dir():
            found += sorted(
                str(path.relative_to(CORPUS))
                for path in directory.iterdir()
                if path.is_file() and path.suffix in {".eml", ".msg"}
            )
    return found


def recorded_envelope(message: ParsedMessage) -> str:
    """The envelope sender as the delivering MTA recorded it (Return-Path), else From.

    The corpus files carry no SMTP envelope; Return-Path is what the final MTA
    wrote from MAIL FROM (RFC 5321 4.4), so it is the closest stand-in.
    """
    for name, value in message.headers:
        if name == "return-path":
            return value
    return message.from_addr.email if message.from_addr else "unknown@invalid"


def corpus_verdict(relative: str) -> tuple[ParsedMessage, Verdict]:
    """Parse and classify one corpus file."""
    message = parse((CORPUS / relative).read_bytes())
    return message, classify(message, recorded_envelope(message), OWN)


def has_embedded_original(relative: str) -> bool:
    """Whether the raw file carries a message/rfc822 or text/rfc822-headers part.

    Decided with the standard library, independently of gateway.parse.
    """
    parsed = email.message_from_bytes((CORPUS / relative).read_bytes())
    embedded = {"message/rfc822", "text/rfc822-headers", "message/rfc822-headers"}
    return any(part.get_content_type() in embedded for part in parsed.walk())


MACHINE_FILES = [f for f in corpus_files(BOUNCE_FOLDERS) if f not in NOT_BOUNCES]


@pytest.mark.slow
def test_corpus_is_present() -> None:
    need_corpus()
    assert len(MACHINE_FILES) > 300


@pytest.mark.slow
@pytest.mark.parametrize(
    "relative",
    [
        pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[f]))
        if f in KNOWN_MISSES
        else f
        for f in MACHINE_FILES
    ],
)
def test_corpus_machine_mail_is_auto(relative: str) -> None:
    _, verdict = corpus_verdict(relative)
    assert verdict.auto, relative


@pytest.mark.slow
@pytest.mark.parametrize("relative", sorted(NOT_BOUNCES))
def test_corpus_spam_is_not_a_bounce(relative: str) -> None:
    need_corpus()
    _, verdict = corpus_verdict(relative)
    assert not verdict.bounce


@pytest.mark.slow
def test_corpus_rates(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    """Per folder: how many are bounces, how many automatic; bounces find their original."""
    need_corpus()
    total: Counter[str] = Counter()
    bounces: Counter[str] = Counter()
    autos: Counter[str] = Counter()
    with_original = found_original = 0
    for relative in MACHINE_FILES:
        folder = relative.rpartition("/")[0]
        _, verdict = corpus_verdict(relative)
        total[folder] += 1
        bounces[folder] += verdict.bounce
        autos[folder] += verdict.auto
        if verdict.bounce and has_embedded_original(relative):
            with_original += 1
            found_original += bool(verdict.original_message_ids)
    lines = [
        f"{folder}: bounce {bounces[folder]}/{n} ({bounces[folder] / n:.0%}), "
        f"auto {autos[folder]}/{n} ({autos[folder] / n:.0%})"
        for folder, n in sorted(total.items())
    ]
    lines.append(f"original Message-ID found: {found_original}/{with_original}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        with capsys.disabled():
            reporter.write_line("\nclassify corpus rates:\n  " + "\n  ".join(lines))
    summary = "\n".join(lines)
    assert sum(autos.values()) == sum(total.values()) - len(KNOWN_MISSES), summary
    assert sum(bounces.values()) / sum(total.values()) >= 0.9, summary
    assert found_original / with_original >= 0.8, summary


@pytest.mark.slow
def test_corpus_client_replies_are_human() -> None:
    need_corpus()
    replies = sorted((CORPUS / "talon" / "fixtures" / "standard_replies").glob("*.eml"))
    others = [CORPUS / "sisimai-set-of-emails" / "not" / f"is-not-bounce-0{n}.eml" for n in (1, 2)]
    assert len(replies) == 11
    for path in replies + others:
        verdict = classify(parse(path.read_bytes()), "someone@example.org", OWN)
        assert not verdict.auto, (path.name, verdict.reasons)


@pytest.mark.slow
def test_corpus_notmuch_list_mail_is_auto_and_the_rest_human() -> None:
    need_corpus()
    paths = sorted((CORPUS / "notmuch" / "corpora" / "default").rglob("*.eml"))
    listed = human = 0
    for path in paths:
        message = parse(path.read_bytes())
        verdict = classify(message, recorded_envelope(message), OWN)
        if any(name.startswith("list-") for name, _ in message.headers):
            listed += 1
            assert verdict.auto, path
            assert any(r.startswith("mailing list (List-Id:") for r in verdict.reasons), path
        else:
            human += 1
            assert not verdict.auto, (path, verdict.reasons)
    assert listed >= 5
    assert human >= 40
