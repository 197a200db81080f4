"""parse: raw bytes in, a decoded, typed ParsedMessage out.

Messages are built here the way our customers' clients send them:
Vietnamese and Persian in UTF-8 and in the Windows code pages, RFC 2047
subjects, RFC 2231 file names, HTML-only mail, bounces; then the hostile
cases (caps, path traversal, script in HTML) and the broken ones that must
degrade instead of raising. Each test asserts what a reader of the ticket
would see. The third-party corpora are in test_parse_corpus.py.
"""

from __future__ import annotations

import base64
import hashlib
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import encode_rfc2231

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.charsets import decode_bytes, decode_header_value
from gateway.errors import LimitExceeded
from gateway.htmltext import html_to_text, sanitize_html
from gateway.parse import Address, Attachment, ParseLimits, parse, sanitize_filename

VIETNAMESE = "Xin chào, tôi cần hỗ trợ về đơn hàng số 12345. Cảm ơn rất nhiều! Tiếng Việt có dấu."
VIETNAMESE_SUBJECT = "Yêu cầu hỗ trợ: đơn hàng bị lỗi"
# Windows-1256 has Arabic yeh (U+064A) but not Farsi yeh (U+06CC): Persian
# written on Windows uses it, so the code-page sample does too.
PERSIAN_1256 = "سلام، من مي‌خواهم درباره سفارش خود سؤال کنم. لطفاً کمک کنيد. گزارش پرداخت ژانويه"
PERSIAN_UTF8 = "سلام، من می‌خواهم درباره سفارش خود سؤال کنم. لطفاً کمک کنید."
_TONE_MARKS = "\u0300\u0301\u0303\u0309\u0323"


def cp1258(text: str) -> bytes:
    """Encode Vietnamese as windows-1258 does: base letter, then a combining tone mark."""
    out = bytearray()
    for char in unicodedata.normalize("NFC", text):
        try:
            out += char.encode("cp1258")
            continue
        except UnicodeEncodeError:
            pass
        decomposed = unicodedata.normalize("NFD", char)
        base, marks = decomposed[0], decomposed[1:]
        vowel = unicodedata.normalize(
            "NFC", base + "".join(m for m in marks if m not in _TONE_MARKS)
        )
        out += (vowel + "".join(m for m in marks if m in _TONE_MARKS)).encode("cp1258")
    return bytes(out)


def message(body: str = "Hello", **headers: str) -> EmailMessage:
    """A plain message with the usual headers."""
    msg = EmailMessage()
    msg["From"] = headers.pop("from_", "Khách Hàng <khach@example.vn>")
    msg["To"] = "support@example.com"
    msg["Subject"] = headers.pop("subject", "Hello")
    msg["Message-ID"] = "<m1@example.vn>"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def raw_message(head: str, body: bytes) -> bytes:
    """Raw bytes: header lines (CRLF added) then the body."""
    return head.strip("\n").replace("\n", "\r\n").encode("ascii") + b"\r\n\r\n" + body


# --- Vietnamese and Persian --------------------------------------------------


def test_vietnamese_utf8_body_and_subject_roundtrip() -> None:
    msg = message(VIETNAMESE, subject=VIETNAMESE_SUBJECT)
    parsed = parse(msg.as_bytes())
    assert parsed.text.strip() == VIETNAMESE
    assert parsed.subject == VIETNAMESE_SUBJECT
    assert parsed.from_addr == Address("Khách Hàng", "khach@example.vn")


@pytest.mark.parametrize(
    "encoded",
    [
        "=?utf-8?B?" + base64.b64encode(VIETNAMESE_SUBJECT.encode()).decode() + "?=",
        "=?UTF-8?Q?Y=C3=AAu_c=E1=BA=A7u_h=E1=BB=97_tr=E1=BB=A3=3A_=C4=91=C6=A1n_h=C3=A0ng?=\n"
        " =?UTF-8?Q?_b=E1=BB=8B_l=E1=BB=97i?=",
    ],
    ids=["base64", "quoted-printable-folded"],
)
def test_vietnamese_rfc2047_subject(encoded: str) -> None:
    raw = raw_message(f"From: a@example.vn\nSubject: {encoded}", b"x")
    assert parse(raw).subject == VIETNAMESE_SUBJECT


def test_vietnamese_windows_1258_body_is_composed() -> None:
    body = cp1258(VIETNAMESE)
    assert b"\xec" in body or b"\xf2" in body  # really uses combining tone marks
    raw = raw_message(
        "From: a@example.vn\nSubject: x\nContent-Type: text/plain; charset=windows-1258\n"
        "Content-Transfer-Encoding: 8bit",
        body,
    )
    text = parse(raw).text
    assert text == VIETNAMESE
    assert unicodedata.is_normalized("NFC", text)


def test_vietnamese_windows_1258_encoded_word_subject() -> None:
    word = "".join(f"={b:02X}" for b in cp1258(VIETNAMESE_SUBJECT))
    raw = raw_message(f"From: a@example.vn\nSubject: =?windows-1258?Q?{word}?=", b"x")
    assert parse(raw).subject == VIETNAMESE_SUBJECT


@pytest.mark.parametrize(
    ("text", "charset"),
    [(PERSIAN_1256, "windows-1256"), (PERSIAN_UTF8, "utf-8")],
    ids=["windows-1256", "utf-8"],
)
def test_persian_body_roundtrip_keeps_rtl_text(text: str, charset: str) -> None:
    raw = raw_message(
        f"From: a@example.ir\nSubject: x\nContent-Type: text/plain; charset={charset}\n"
        "Content-Transfer-Encoding: 8bit",
        text.encode(charset),
    )
    parsed = parse(raw)
    assert parsed.text == text
    assert "\u200c" in parsed.text  # the zero-width non-joiner of "می‌خواهم" survives


def test_persian_html_keeps_direction_and_subject() -> None:
    msg = message(subject="درخواست پشتیبانی")
    msg.set_content(f'<div dir="rtl" lang="fa">{PERSIAN_UTF8}</div>', subtype="html")
    parsed = parse(msg.as_bytes())
    assert parsed.subject == "درخواست پشتیبانی"
    assert parsed.html == f'<div dir="rtl" lang="fa">{PERSIAN_UTF8}</div>'
    assert parsed.text == PERSIAN_UTF8


def test_persian_windows_1256_without_declared_charset_is_guessed() -> None:
    raw = raw_message("From: a@example.ir\nSubject: x", PERSIAN_1256.encode("cp1256"))
    assert parse(raw).text == PERSIAN_1256


# --- charsets ------------------------------------------------------------------


def test_missing_charset_with_utf8_bytes() -> None:
    raw = raw_message(
        "From: a@example.vn\nSubject: x\nContent-Type: text/plain", VIETNAMESE.encode()
    )
    assert parse(raw).text == VIETNAMESE


def test_wrong_declared_us_ascii_with_utf8_bytes() -> None:
    raw = raw_message(
        "From: a@example.vn\nSubject: x\nContent-Type: text/plain; charset=us-ascii\n"
        "Content-Transfer-Encoding: 8bit",
        VIETNAMESE.encode(),
    )
    assert parse(raw).text == VIETNAMESE


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        ("gb2312", "机房环境法规，请查收。", "gb18030"),
        ("ks_c_5601-1987", "안녕하세요, 도와주세요.", "cp949"),
        ("iso-8859-8-i", "שלום עולם", "iso-8859-8"),
        ("windows-874", "สวัสดีครับ", "cp874"),
        ("x-sjis", "日本語のテキスト①です", "cp932"),
        ("iso-8859-1", "Grüße – “quoted” €5", "cp1252"),
        ("iso-2022-jp", "①１都３県の鯵と、", "cp932"),
    ],
)
def test_charset_aliases_decode_what_senders_wrote(label: str, text: str, codec: str) -> None:
    data = text.encode(codec)
    if label == "iso-2022-jp":  # as Microsoft encodes it (CP50220): JIS pairs after ESC $ B
        data = _sjis_to_iso2022jp(data)
    assert decode_bytes(data, label) == text


def _sjis_to_iso2022jp(data: bytes) -> bytes:
    """Shift_JIS (with NEC row 13) written as ISO-2022-JP, for the CP50220 test."""
    out = bytearray(b"\x1b$B")
    text = data.decode("cp932")
    for char in text:
        lead, trail = char.encode("cp932")
        row = (lead - (0x70 if lead < 0xA0 else 0xB0)) * 2
        if trail >= 0x9F:
            out += bytes((row, trail - 0x7E))
        else:
            out += bytes((row - 1, trail - (0x20 if trail >= 0x80 else 0x1F)))
    return bytes(out + b"\x1b(B")


def test_charset_declared_only_in_html_meta() -> None:
    html = '<html><head><meta charset="windows-1258"></head><body><p>'
    raw = raw_message(
        "From: a@example.vn\nSubject: x\nContent-Type: text/html",
        html.encode() + cp1258(VIETNAMESE) + b"</p></body></html>",
    )
    assert parse(raw).text == VIETNAMESE


def test_raw_8bit_header_uses_the_body_charset() -> None:
    raw = raw_message(
        "From: a@example.vn\nContent-Type: text/plain; charset=windows-1258",
        cp1258(VIETNAMESE),
    ).replace(b"From:", b"Subject: " + cp1258(VIETNAMESE_SUBJECT) + b"\r\nFrom:")
    assert parse(raw).subject == VIETNAMESE_SUBJECT


def test_raw_utf8_header_rfc6532() -> None:
    raw = (
        "From: Nguyễn Văn A <a@Example.VN>\r\nSubject: " + VIETNAMESE_SUBJECT + "\r\n\r\nx"
    ).encode()
    parsed = parse(raw)
    assert parsed.subject == VIETNAMESE_SUBJECT
    assert parsed.from_addr == Address("Nguyễn Văn A", "a@example.vn")


def test_encoded_word_with_unknown_alias_and_split_character() -> None:
    gbk = base64.b64encode("你好".encode("gb18030")).decode()
    utf8 = "Việt".encode()
    first, second = utf8[:2], utf8[2:]  # "ệ" split across two words
    value = (
        f"=?iso-gb2312?B?{gbk}?= =?utf-8?B?{base64.b64encode(first).decode()}?="
        f" =?utf-8?B?{base64.b64encode(second).decode()}?="
    )
    assert decode_header_value(value) == "你好Việt"


# --- addresses, ids, dates -------------------------------------------------------


def test_addresses_decoded_and_domain_lowercased() -> None:
    raw = raw_message(
        "From: =?utf-8?Q?Tr=E1=BA=A7n_Th=E1=BB=8B_B?= <Tran.B@Example.VN>\n"
        "To: support@example.com, undisclosed-recipients:;\n"
        "Cc: old.style@Example.com (Old Style), Name only, <bracket@EXAMPLE.org>\n"
        "Reply-To: Someone someone@example.com\n"
        "Subject: x",
        b"x",
    )
    parsed = parse(raw)
    assert parsed.from_addr == Address("Trần Thị B", "Tran.B@example.vn")
    assert parsed.to == (Address("", "support@example.com"),)
    assert parsed.cc == (
        Address("Old Style", "old.style@example.com"),
        Address("", "bracket@example.org"),
    )
    assert parsed.reply_to == (Address("Someone", "someone@example.com"),)


def test_address_names_lose_line_breaks_and_nul() -> None:
    raw = raw_message("From: =?utf-8?Q?Evil=0D=0ABcc:_x=00y?= <e@example.com>\nSubject: x", b"x")
    from_addr = parse(raw).from_addr
    assert from_addr is not None
    assert from_addr.email == "e@example.com"
    assert "\r" not in from_addr.name and "\n" not in from_addr.name
    assert "\x00" not in from_addr.name


def test_in_reply_to_and_references() -> None:
    raw = raw_message(
        "From: a@example.com\nSubject: Re: x\nMessage-ID:  < abc@host.example >\n"
        "In-Reply-To: <parent@host.example> (Message from Support of Mon)\n"
        "References: <root@host.example>\n <mid@host.example>\n\t<parent@host.example>\n"
        "References: <root@host.example> <extra@host.example>",
        b"x",
    )
    parsed = parse(raw)
    assert parsed.message_id == "abc@host.example"
    assert parsed.in_reply_to == ("parent@host.example",)
    assert parsed.references == (
        "root@host.example",
        "mid@host.example",
        "parent@host.example",
        "extra@host.example",
    )


def test_bare_message_ids_without_brackets() -> None:
    raw = raw_message(
        "From: a@example.com\nMessage-Id: 2018.58E7@mail.example\nIn-Reply-To: p@h.example",
        b"x",
    )
    parsed = parse(raw)
    assert parsed.message_id == "2018.58E7@mail.example"
    assert parsed.in_reply_to == ("p@h.example",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "Mon, 3 Jun 2024 10:15:00 +0700",
            datetime(2024, 6, 3, 10, 15, tzinfo=timezone(timedelta(hours=7))),
        ),
        ("Mon, 3 Jun 2024 10:15:00 -0000", datetime(2024, 6, 3, 10, 15, tzinfo=UTC)),
        ("not a date", None),
        ("Mon, 99 Foo 2024 99:99:99 +9999", None),
    ],
)
def test_date_is_aware_or_none(value: str, expected: datetime | None) -> None:
    parsed = parse(raw_message(f"From: a@example.com\nDate: {value}", b"x"))
    assert parsed.date == expected
    if parsed.date is not None:
        assert parsed.date.tzinfo is not None


def test_headers_tuple_and_content_language() -> None:
    raw = raw_message(
        "From: a@example.vn\nSubject: =?utf-8?B?"
        + base64.b64encode(b"Ch\xc3\xa0o").decode()
        + "?=\nX-Custom: one\n  two\nContent-Language: vi-VN, en",
        b"x",
    )
    parsed = parse(raw)
    assert parsed.headers == (
        ("from", "a@example.vn"),
        ("subject", "Chào"),
        ("x-custom", "one  two"),  # unfolding removes only the line break (RFC 5322 2.2.3)
        ("content-language", "vi-VN, en"),
    )
    assert parsed.content_language == "vi-vn"


def test_mbox_from_line_is_stripped() -> None:
    raw = b"From khach@example.vn Mon Jun  3 10:15:00 2024\n" + message().as_bytes()
    parsed = parse(raw)
    assert parsed.headers[0][0] == "from"
    assert parsed.from_addr == Address("Khách Hàng", "khach@example.vn")


def test_header_block_repairs() -> None:
    junk_on_top = b"---- Original email message ----\r\n" + raw_message(
        "From: a@example.com\nSubject: Contact", b"body"
    )
    parsed = parse(junk_on_top)
    assert (parsed.subject, parsed.text) == ("Contact", "body")
    flattened_fold = raw_message(
        "Received: from a.example\nby b.example with SMTP\nX-Tracker: AAAA\nBBBB\n"
        "From: a@example.com\nSubject: Flat",
        b"body",
    )
    parsed = parse(flattened_fold)
    assert (parsed.subject, parsed.text) == ("Flat", "body")
    assert ("received", "from a.example by b.example with SMTP") in parsed.headers
    # No blank line before the body, which quotes a header block: left to the
    # email package, which starts the body at the first line that is no field.
    no_separator = raw_message(
        "From: a@example.com\nSubject: Original\nHi Bob, see below.\n"
        "From: John <john@example.com>\nSubject: Forwarded",
        b"",
    )
    parsed = parse(no_separator)
    assert parsed.subject == "Original"
    assert parsed.text.startswith("Hi Bob, see below.\nFrom: John <john@example.com>")


# --- body selection -----------------------------------------------------------------


def test_multipart_alternative_prefers_plain_and_keeps_html() -> None:
    msg = message("Plain version")
    msg.add_alternative("<p>HTML <b>version</b></p>", subtype="html")
    parsed = parse(msg.as_bytes())
    assert parsed.content_type == "multipart/alternative"
    assert parsed.text == "Plain version"
    assert parsed.html == "<p>HTML <b>version</b></p>"
    assert parsed.attachments == ()


def test_html_only_message_gives_readable_text_and_safe_html() -> None:
    html = """<html><head><title>T</title><style>p {color: red}</style>
    <script>alert(1)</script></head><body>
    <p>Xin chào&nbsp;anh,</p><p>Đơn hàng <b>12345</b> &amp; phí ship:</p>
    <ul><li>Áo</li><li>Quần</li></ul>
    <p><a href="https://shop.example/o/12345">xem đơn hàng</a> hoặc
    <a href="https://shop.example">https://shop.example</a></p>
    <img src="https://tracker.example/pixel.gif" onerror="alert(2)" alt="">
    <img src="cid:logo@shop" alt="logo">
    <form action="https://evil.example"><input name="pw"></form>
    <iframe src="https://evil.example"></iframe>
    </body></html>"""
    msg = message()
    msg.set_content(html, subtype="html")
    parsed = parse(msg.as_bytes())
    assert parsed.text == (
        "Xin chào anh,\n\nĐơn hàng 12345 & phí ship:\n\n- Áo\n- Quần\n\n"
        "xem đơn hàng (https://shop.example/o/12345) hoặc https://shop.example"
    )
    assert parsed.html is not None
    for forbidden in (
        "<script",
        "alert",
        "onerror",
        "tracker.example",
        "<form",
        "<iframe",
        "<title",
    ):
        assert forbidden not in parsed.html
    assert '<img src="cid:logo@shop" alt="logo">' in parsed.html
    assert '<a href="https://shop.example/o/12345" rel="noopener noreferrer">' in parsed.html


def test_several_inline_plain_parts_are_joined() -> None:
    msg = message("First part.")
    msg.add_attachment("Second part.", disposition="inline")
    msg.add_attachment("Third part.", disposition="inline")
    msg.add_attachment("An attached text file.")  # disposition attachment
    parsed = parse(msg.as_bytes())
    assert parsed.text == "First part.\n\nSecond part.\n\nThird part."
    assert [(a.filename, a.data) for a in parsed.attachments] == [
        ("attachment.txt", b"An attached text file.\n")
    ]


def test_format_flowed_is_unwrapped() -> None:
    raw = raw_message(
        "From: a@example.com\nContent-Type: text/plain; charset=utf-8; format=flowed",
        b"This is a long line that was \r\nwrapped by the client.\r\n"
        b"> quoted and \r\n> wrapped\r\n-- \r\nsig",
    )
    assert (
        parse(raw).text
        == "This is a long line that was wrapped by the client.\n> quoted and wrapped\n-- \nsig"
    )


# --- attachments ------------------------------------------------------------------------


def test_rfc2231_vietnamese_filename() -> None:
    msg = message("see attached")
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="x.pdf")
    [part] = msg.iter_attachments()
    del part["Content-Disposition"]
    part["Content-Disposition"] = "attachment; filename*=" + encode_rfc2231(
        "Báo cáo tháng 5.pdf", "utf-8"
    )
    parsed = parse(msg.as_bytes())
    assert parsed.attachments == (
        Attachment("Báo cáo tháng 5.pdf", "application/pdf", b"%PDF-1.4", None, False),
    )
    attachment = parsed.attachments[0]
    assert attachment.size == 8
    assert attachment.sha256 == hashlib.sha256(b"%PDF-1.4").hexdigest()


def test_rfc2047_filename_and_name_parameter_fallback() -> None:
    raw = raw_message(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"',
        b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b'--b\r\nContent-Type: image/png; name="=?utf-8?B?4bqibmggxJHhurlwLnBuZw==?="\r\n'
        b"Content-Transfer-Encoding: base64\r\nContent-ID: <img1@x>\r\n\r\n"
        b"iVBORw0KGgo=\r\n--b--\r\n",
    )
    parsed = parse(raw)
    assert [(a.filename, a.content_type, a.content_id, a.inline) for a in parsed.attachments] == [
        ("Ảnh đẹp.png", "image/png", "img1@x", True)
    ]
    assert parsed.attachments[0].data == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\System32\\cmd.exe", "cmd.exe"),
        ("/absolute/path/report.pdf", "report.pdf"),
        ("..", "attachment.pdf"),
        (".", "attachment.pdf"),
        ("", "attachment.pdf"),
        ("   ", "attachment.pdf"),
        (".bashrc", "bashrc"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("line\r\nbreak\x00nul\ttab.txt", "line breaknul tab.txt"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("CON.txt", "_CON.txt"),
        ("báo   cáo.docx", "báo cáo.docx"),
        ("گزارش‌ماهانه.pdf", "گزارش‌ماهانه.pdf"),
    ],
)
def test_sanitize_filename_never_yields_a_path(name: str, expected: str) -> None:
    assert sanitize_filename(name, "application/pdf") == expected


def test_sanitize_filename_caps_length_keeping_extension() -> None:
    name = sanitize_filename("x" * 300 + ".pdf", "application/pdf")
    assert len(name) == 150
    assert name.endswith("xxx.pdf")


def test_traversal_filename_through_parse() -> None:
    msg = message("x")
    msg.add_attachment(
        b"root:x:0:0", maintype="application", subtype="octet-stream", filename="../../etc/passwd"
    )
    msg.add_attachment(b"?", maintype="image", subtype="jpeg", filename="..")
    names = [a.filename for a in parse(msg.as_bytes()).attachments]
    assert names == ["passwd", "attachment.jpg"]


def test_attached_message_is_an_eml_attachment_with_its_id() -> None:
    inner = message("Original text", subject="Yêu cầu #42")
    inner.replace_header("Message-ID", "<inner@example.vn>")
    outer = message("See the forwarded mail.")
    outer.add_attachment(inner)
    parsed = parse(outer.as_bytes())
    [attachment] = parsed.attachments
    assert attachment.content_type == "message/rfc822"
    assert attachment.filename == "Yêu cầu #42.eml"
    assert b"Message-ID: <inner@example.vn>" in attachment.data
    assert b"Original text" in attachment.data
    assert parsed.embedded_message_ids == ("inner@example.vn",)
    assert parsed.text == "See the forwarded mail."


def test_broken_winmail_dat_is_kept_as_is() -> None:
    msg = message("x")
    msg.add_attachment(
        b"not tnef at all", maintype="application", subtype="ms-tnef", filename="winmail.dat"
    )
    [attachment] = parse(msg.as_bytes()).attachments
    assert (attachment.filename, attachment.data) == ("winmail.dat", b"not tnef at all")


# --- bounces ------------------------------------------------------------------------------

DSN = b"""From: MAILER-DAEMON@mx.example.com (Mail Delivery System)
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce1@mx.example.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=Delivery-Status;
 boundary="B"

--B
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.com.
I'm sorry to have to inform you that your message could not be delivered.

--B
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.com

Final-Recipient: rfc822; khach@example.vn
Action: failed
Status: 5.1.1

--B
Content-Description: Undelivered Message
Content-Type: %s

From: support@example.com
To: khach@example.vn
Subject: [Ticket#1001] Your request
Message-ID: <ticket-1001-reply@support.example.com>

Thank you.

--B--
"""


@pytest.mark.parametrize("kind", ["message/rfc822", "text/rfc822-headers"])
def test_dsn_gives_report_type_and_original_message_id(kind: str) -> None:
    parsed = parse(DSN % kind.encode())
    assert parsed.content_type == "multipart/report"
    assert parsed.report_type == "delivery-status"
    assert parsed.embedded_message_ids == ("ticket-1001-reply@support.example.com",)
    assert parsed.text.startswith("This is the mail system at host mx.example.com.")
    assert parsed.from_addr == Address("Mail Delivery System", "MAILER-DAEMON@mx.example.com")
    names = [(a.filename, a.content_type) for a in parsed.attachments]
    expected_last = (
        ("[Ticket#1001] Your request.eml", "message/rfc822")
        if kind == "message/rfc822"
        else ("Undelivered Message.txt", "text/rfc822-headers")
    )
    assert names == [("Delivery report.txt", "message/delivery-status"), expected_last]
    assert b"Status: 5.1.1" in parsed.attachments[0].data


# --- limits ---------------------------------------------------------------------------------


def _multipart(parts: int) -> bytes:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(parts))
    return raw_message(
        'From: a@example.com\nContent-Type: multipart/mixed; boundary="b"', body + b"--b--\r\n"
    )


def _nested(depth: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    for level in range(depth):
        inner = (
            b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level)
            + inner
            + b"\r\n--b%d--\r\n" % level
        )
    return b"From: a@example.com\r\n" + inner


def test_too_many_parts() -> None:
    assert parse(_multipart(9), ParseLimits(max_mime_parts=10)).text.startswith("part 0")
    with pytest.raises(LimitExceeded, match=r"more than 10 MIME parts"):
        parse(_multipart(10), ParseLimits(max_mime_parts=10))
    with pytest.raises(LimitExceeded, match=r"more than 500 MIME parts, the cap"):
        parse(_multipart(600))


def test_too_deep_nesting() -> None:
    assert parse(_nested(20)).text == "deep"
    with pytest.raises(LimitExceeded, match=r"nested 21 levels deep, over the 20-level cap"):
        parse(_nested(21))
    with pytest.raises(LimitExceeded, match=r"nested too deeply for the parser"):
        parse(_nested(2000))  # deeper than the email package's recursion can go


def test_embedded_messages_count_as_a_level() -> None:
    inner = message("innermost")
    for _ in range(3):
        outer = message("wrapper")
        outer.add_attachment(inner)
        inner = outer
    raw = inner.as_bytes()
    parse(raw, ParseLimits(max_mime_depth=6))
    with pytest.raises(LimitExceeded):
        parse(raw, ParseLimits(max_mime_depth=5))


def test_oversized_header_block() -> None:
    header = b"X-Filler: " + b"a" * 998 + b"\r\n"
    raw = b"From: a@example.com\r\n" + header * 2100 + b"\r\nbody"
    size = len(raw) - len(b"\r\nbody")
    with pytest.raises(LimitExceeded) as caught:
        parse(raw)
    assert str(caught.value) == f"header block is {size:,} bytes, over the 1,048,576-byte cap"
    assert parse(raw, ParseLimits(max_header_bytes=4 * 1024 * 1024)).text == "body"


@pytest.mark.timeout(60)
def test_headers_built_to_be_slow_to_parse() -> None:
    # The email package's header parser is super-linear: each of these took
    # between 40 s and several minutes before values were bounded.
    words = " ".join("=?utf-8?B?w6k=?=" for _ in range(40_000))
    parsed = parse(f"From: a@example.com\r\nSubject: {words}\r\n\r\nx".encode())
    assert parsed.subject == "é" * 40_000
    many = ", ".join(f"User {i} <user{i}@example.com>" for i in range(25_000))
    parsed = parse(f"From: a@example.com\r\nTo: {many}\r\n\r\nx".encode())
    assert len(parsed.to) == 25_000
    assert parsed.to[-1] == Address("User 24999", "user24999@example.com")
    params = "; ".join(f"p{i}=v" for i in range(300_000))
    part = f"Content-Type: text/plain; {params}\r\nContent-Disposition: inline; {params}\r\n"
    raw = (
        b'From: a@example.com\r\nContent-Type: multipart/mixed; boundary="z"\r\n\r\n--z\r\n'
        + part.encode()
        + b"\r\nhello\r\n--z--\r\n"
    )
    assert parse(raw).text == "hello"


def test_large_body_under_a_small_header_is_fine() -> None:
    raw = raw_message("From: a@example.com\nSubject: big", b"line\r\n" * 400_000)
    assert parse(raw).text.count("line") == 400_000


# --- hostile and broken input -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 64,
        b"From: \r\nSubject: =?x-unknown?Q?=FF=FE?=\r\n\r\n\xff\xfe",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n--x--',
        b'From: <<<@>>>, @, "unterminated\r\nTo: ;;;,,,\r\nDate: 99\r\n\r\nbody',
        b'Content-Type: text/plain; charset=""\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!',
        b"Content-Type: text/plain; charset=unicode_escape\r\n\r\n\\u0041",
        b"Content-Disposition: attachment; filename*=bogus''%ZZ%\r\n"
        b"Content-Type: image/png\r\n\r\nx",
    ],
)
def test_malformed_input_degrades(raw: bytes) -> None:
    parsed = parse(raw)
    assert isinstance(parsed.text, str)
    assert "\x00" not in parsed.text
    assert all("@" in a.email for a in (*parsed.to, *parsed.cc))


def test_unicode_escape_is_not_a_charset() -> None:
    raw = b"Content-Type: text/plain; charset=unicode_escape\r\n\r\n\\u0041"
    assert parse(raw).text == "\\u0041"


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parse(raw)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"From: a@b.c\r\n",
                b"Subject: =?utf-8?B?w6k=?=\r\n",
                b"Content-Type: multipart/mixed; boundary=z\r\n",
                b"Content-Type: text/html; charset=gb2312\r\n",
                b"\r\n",
                b"--z\r\n",
                b"--z--\r\n",
                b"<p>x</p>\r\n",
                b'Content-Disposition: attachment; filename="../a"\r\n',
                b"\xe9\xff\r\n",
                b" folded\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"Content-Transfer-Encoding: base64\r\n",
                b"QUJD\r\n",
            ]
        ),
        max_size=40,
    )
)
def test_mime_shaped_noise_never_raises(lines: list[bytes]) -> None:
    parse(b"".join(lines))


# --- the HTML helpers directly ------------------------------------------------------------


def test_html_to_text_structure() -> None:
    html = (
        "<div>Line one<br>Line two</div><blockquote>quoted<br>more</blockquote>"
        "<ol><li>first</li><li>second</li></ol><table><tr><td>a</td><td>b</td></tr></table>"
        '<p style="display:none">preheader</p><pre>  code\n  block</pre>'
        '<a href="mailto:x@example.com">x@example.com</a> <a href="#top">top</a>'
    )
    assert html_to_text(html) == (
        "Line one\nLine two\n> quoted\n> more\n1. first\n2. second\n\na b\n\n"
        "  code\n  block\n\nx@example.com top"
    )


def test_sanitize_html_refuses_pathological_nesting() -> None:
    html = "<div>" * 5000 + "deep" + "</div>" * 5000
    assert sanitize_html(html) == "<div>deep</div>"
