"""quotes: the visible text of a follow-up, without quoted history or signature.

First replies written here the way our customers' mail clients write them
(Gmail, Outlook, Apple Mail and phones; Vietnamese, Persian and English),
then the third-party corpora in /work/shared/corpus:

* email-reply-trimmer (Discourse) and talon (Mailgun) ship the text they
  expect to remain; we compare with it, and list every file where our rules
  deliberately differ, with the reason, as a strict xfail;
* the bodies of email-reply-parser (GitHub, Zapier), mail-parser-reply and
  crisp-email-reply-parser carry no expected output: they must go through
  without error, never come out empty, and come out as a slice of the input.

The corpus is read in place, never copied here. Without it these tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import email
import email.policy
import unicodedata
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.quotes import strip_reply
from tests.corpus import CORPUS, need_corpus

RLM, LRM, RLE, PDF = "\u200f", "\u200e", "\u202b", "\u202c"


def corpus_files(folder: str, pattern: str = "*", xfail: dict[str, str] | None = None) -> list[Any]:
    """Parameters for every file of a corpus folder, strict xfail where listed."""
    root = CORPUS / folder
    if not root.is_dir():
        return [pytest.param(None, id="corpus-missing")]
    marks = xfail or {}
    return [
        pytest.param(
            path,
            id=path.name,
            marks=[pytest.mark.xfail(reason=marks[path.name], strict=True)]
            if path.name in marks
            else [],
        )
        for path in sorted(root.glob(pattern))
        if path.is_file() and path.name not in {"LICENSE", "NOTICE"}
    ]


def read_body(path: Path) -> str:
    """A plain-text corpus body, line endings as they are in the file."""
    return path.read_bytes().decode("utf-8")


def same_text(got: str, expected: str) -> bool:
    """Equal once each line's whitespace runs are collapsed and blank lines dropped."""

    def normal(text: str) -> list[str]:
        return [" ".join(line.split()) for line in text.splitlines() if line.strip()]

    return normal(got) == normal(expected)


# --- Replies as our customers' clients write them -----------------------------------


def test_gmail_english_reply() -> None:
    body = (
        "Sounds good, Tuesday works for us.\n"
        "\n"
        "Lan\n"
        "\n"
        "On Mon, Jun 3, 2024 at 10:15\u202fAM Support Team <support@help.example.com> wrote:\n"
        "\n"
        "> Hi Lan,\n"
        ">\n"
        "> Our technician can come on Tuesday or Wednesday.\n"
        ">\n"
        "> Best,\n"
        "> Support\n"
    )
    assert strip_reply(body) == "Sounds good, Tuesday works for us.\n\nLan"


def test_gmail_vietnamese_attribution_split_over_two_lines() -> None:
    body = (
        "Dạ em cảm ơn anh, em đã nhận được hàng rồi ạ.\n"
        "\n"
        "Vào Th 2, 3 thg 6, 2024 vào lúc 10:15 Nguyễn Văn An <\n"
        "an.nguyen@help.example.com> đã viết:\n"
        "\n"
        "> Chào chị Lan,\n"
        "> Đơn hàng #1042 đã được giao cho đơn vị vận chuyển.\n"
    )
    assert strip_reply(body) == "Dạ em cảm ơn anh, em đã nhận được hàng rồi ạ."


def test_vietnamese_attribution_without_quote_marks() -> None:
    # Outlook for iOS writes the attribution and then the old text unquoted.
    body = (
        "Em gửi lại ảnh chụp màn hình ạ.\n"
        "\n"
        "Vào 10:15, Th 2, 3 thg 6, 2024, Hỗ trợ <support@help.example.com> đã viết:\n"
        "Chào chị, chị gửi giúp em ảnh chụp màn hình lỗi nhé.\n"
    )
    assert strip_reply(body) == "Em gửi lại ảnh chụp màn hình ạ."


def test_outlook_vietnamese_header_block() -> None:
    body = (
        "Em gửi lại hoá đơn đính kèm ạ.\n"
        "\n"
        "Trân trọng,\n"
        "Trần Thị Lan\n"
        "\n"
        "________________________________\n"
        "Từ: Hỗ trợ khách hàng <support@help.example.com>\n"
        "Đã gửi: Thứ Hai, ngày 3 tháng 6 năm 2024 10:15\n"
        "Đến: Trần Thị Lan <lan.tran@example.com>\n"
        "Chủ đề: Re: [#1042] Đơn hàng chưa giao\n"
        "\n"
        "Chào chị Lan,\n"
        "Chị vui lòng gửi lại hoá đơn giúp em.\n"
    )
    assert strip_reply(body) == "Em gửi lại hoá đơn đính kèm ạ.\n\nTrân trọng,\nTrần Thị Lan"


def test_persian_gmail_reply_with_bidi_marks_and_persian_digits() -> None:
    body = (
        "سلام، سفارش من هنوز نرسیده است.\n"
        "\n"
        f"{RLE}در تاریخ دوشنبه ۳ ژوئن ۲۰۲۴ ساعت ۱۰:۱۵ {LRM}پشتیبانی{RLM} "
        f"<{LRM}support@help.example.com{RLM}> نوشت:{PDF}\n"
        "\n"
        f"{RLM}> سلام، سفارش شما ارسال شد.\n"
        f"{RLM}> با احترام\n"
    )
    assert strip_reply(body) == "سلام، سفارش من هنوز نرسیده است."


def test_persian_gmail_reply_naming_the_sender_first() -> None:
    body = (
        "ممنون، مشکل حل شد.\n"
        "\n"
        f"{RLM}مریم احمدی{RLM} <{LRM}maryam@example.ir{LRM}> در تاریخ "
        "سه\u200cشنبه ۱۲ مارس ۲۰۲۴ ساعت ۹:۰۵ نوشت:\n"
        "متن پیام قبلی بدون علامت نقل قول\n"
    )
    assert strip_reply(body) == "ممنون، مشکل حل شد."


def test_persian_outlook_header_block() -> None:
    body = (
        "لطفا فاکتور را دوباره بفرستید.\n"
        "\n"
        f"{RLM}از: پشتیبانی <support@help.example.com>\n"
        f"{RLM}ارسال\u200cشده: دوشنبه، ۳ ژوئن ۲۰۲۴ ۱۰:۱۵\n"
        f"{RLM}به: مریم احمدی <maryam@example.ir>\n"
        f"{RLM}موضوع: RE: سفارش ۱۰۴۲\n"
        "\n"
        "سلام مریم خانم،\n"
        "فاکتور پیوست شد.\n"
    )
    assert strip_reply(body) == "لطفا فاکتور را دوباره بفرستید."


def test_apple_mail_reply() -> None:
    body = (
        "Thanks, restarting the router fixed it.\n"
        "\n"
        "On 3 Jun 2024, at 10:15, Lan <lan@example.com> wrote:\n"
        "\n"
        "> Could you try restarting the router?\n"
        "> \n"
        "> Lan\n"
    )
    assert strip_reply(body) == "Thanks, restarting the router fixed it."


def test_inline_reply_is_kept_whole() -> None:
    body = (
        "On Mon, 3 Jun 2024 at 10:15, Support <support@help.example.com> wrote:\n"
        "> Which model do you have?\n"
        "The X200.\n"
        "\n"
        "> And which firmware version?\n"
        "Version 2.1, I think.\n"
        "\n"
        "> Is the light green or red?\n"
    )
    assert strip_reply(body) == body.strip("\n")


def test_answer_below_the_quote_is_kept_whole() -> None:
    body = "On 3 Jun 2024, at 10:15, Lan <lan@example.com> wrote:\n> Any news?\n\nYes, it shipped."
    assert strip_reply(body) == body


def test_quote_above_the_answer_without_attribution_is_kept() -> None:
    body = "> Is the light green or red?\n\nRed, blinking.\n\n> And the model?\n"
    assert strip_reply(body) == body.strip("\n")


def test_iphone_reply_loses_signature_and_quote() -> None:
    body = (
        "Yes.\n\nSent from my iPhone\n\n"
        "On 3 Jun 2024, at 10:15, Lan <lan@example.com> wrote:\n\n> Is Friday OK?\n"
    )
    assert strip_reply(body) == "Yes."


def test_list_footer_after_the_quote_is_not_an_inline_answer() -> None:
    body = (
        "Thanks, that helps.\n\n"
        "On Mon, Jun 3, 2024 at 10:15 AM Lan <lan@example.com> wrote:\n"
        "> Try the reset button.\n\n"
        "_______________________________________________\n"
        "users mailing list\nhttps://lists.example.org/users\n"
    )
    assert strip_reply(body) == "Thanks, that helps."


def test_sent_from_my_iphone_is_removed() -> None:
    assert strip_reply("Yes please cancel it.\n\nSent from my iPhone\n") == "Yes please cancel it."


@pytest.mark.parametrize(
    "signature",
    [
        "Sent from my iPhone",
        "Sent from Outlook for Android",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "Gửi từ iPhone của tôi",
        "Được gửi từ điện thoại di động",
        "ارسال شده از iPhone من",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPhone",
        "Sent from my Samsung Galaxy smartphone.",
        "Sent from my phone, please excuse typos",
    ],
)
def test_mobile_signatures_are_removed(signature: str) -> None:
    assert strip_reply(f"Cảm ơn anh.\n\n{signature}\n") == "Cảm ơn anh."


@pytest.mark.parametrize(
    "last_line",
    [
        "Sent from my desk, is much easier than my phone.",
        # "Sent since yesterday and still not received": Vietnamese, no device.
        "Gửi từ hôm qua mà chưa nhận được",
        "The notification was sent from my iPhone app to all users.",
    ],
)
def test_sentences_that_look_like_mobile_signatures_are_kept(last_line: str) -> None:
    body = f"Hàng em đặt vẫn chưa tới.\n{last_line}"
    assert strip_reply(body) == body


def test_dash_dash_signature_is_removed() -> None:
    body = "Cảm ơn anh.\n\n-- \nNguyễn Văn An\nCông ty ABC\n0901 234 567\n"
    assert strip_reply(body) == "Cảm ơn anh."


def test_long_text_after_dash_dash_is_not_a_signature() -> None:
    body = "Steps:\n--\n" + "\n".join(f"{n}. do thing {n}" for n in range(1, 13))
    assert strip_reply(body) == body


def test_message_that_is_only_a_quote_stays_whole() -> None:
    body = "\n> Just the quote,\n> nothing new.\n\n"
    assert strip_reply(body) == "> Just the quote,\n> nothing new."


def test_message_that_is_only_a_signature_stays_whole() -> None:
    assert strip_reply("-- \nLan\n") == "-- \nLan"


def test_wrote_in_the_middle_of_a_sentence_is_not_a_cut_point() -> None:
    body = "Hi,\n\nYesterday I wrote: the server is down.\nIt still is.\n\nLan"
    assert strip_reply(body) == body


def test_wrote_at_the_end_of_a_line_without_a_quote_is_not_a_cut_point() -> None:
    body = "Hi,\n\nAs I wrote:\nthe server has been down since Monday.\n"
    assert strip_reply(body) == body.strip("\n")


def test_short_attribution_before_a_quote_is_a_cut_point() -> None:
    body = "Agreed.\n\nLan wrote:\n> Shall we move the visit to Friday?\n"
    assert strip_reply(body) == "Agreed."


def test_lines_starting_with_on_are_not_swallowed_by_a_wrapped_attribution() -> None:
    body = (
        "On this day we shipped the order.\n"
        "On Mon, Jun 3, 2024 at 10:15 AM Support <\n"
        "support@help.example.com> wrote:\n"
        "> Has it shipped?\n"
    )
    assert strip_reply(body) == "On this day we shipped the order."


def test_outlook_original_message_separator() -> None:
    body = (
        "Danke, passt.\n"
        "\n"
        "-----Ursprüngliche Nachricht-----\n"
        "Von: Support <support@help.example.com>\n"
        "Gesendet: Montag, 3. Juni 2024 10:15\n"
        "An: Max <max@example.de>\n"
        "Betreff: AW: Termin\n"
    )
    assert strip_reply(body) == "Danke, passt."


def test_outlook_header_block_on_one_line() -> None:
    body = (
        "Ok, thanks.\n\nFrom: Support <support@help.example.com> Sent: Monday, June 3, 2024"
        " 10:15 AM To: Lan <lan@example.com> Subject: RE: order\n\nHi Lan,\n"
    )
    assert strip_reply(body) == "Ok, thanks."


def test_header_names_in_turkish_capitals() -> None:
    # re.IGNORECASE matches "İ" with "i", casefold() does not: this once crashed.
    body = (
        "Teşekkürler.\n\nKİMDEN: Destek <destek@example.com>\nGÖNDERİLDİ: 3 Haziran 2024\n"
        "KİME: Ali <ali@example.com>\nKONU: Sipariş\n\nMerhaba\n"
    )
    assert strip_reply(body) == "Teşekkürler."


def test_itinerary_is_not_a_header_block() -> None:
    body = "Booking details:\nFrom: Paris\nTo: Hanoi\nDate: 3 June\n\nPlease confirm."
    assert strip_reply(body) == body


def test_forward_at_the_top_keeps_its_content() -> None:
    body = (
        "Begin forwarded message:\n"
        "\n"
        "From: Vendor <billing@vendor.example>\n"
        "Subject: Invoice 2024-06\n"
        "Date: 3 June 2024 at 10:15:00 GMT+7\n"
        "To: Lan <lan@example.com>\n"
        "\n"
        "Please find the invoice attached.\n"
    )
    assert strip_reply(body) == body.strip("\n")


def test_forward_below_new_text_is_kept() -> None:
    # Forwarded content is new to the ticket, unlike quoted history.
    body = (
        "This is what the courier sent me:\n"
        "\n"
        "---------- Forwarded message ---------\n"
        "From: Courier <noreply@courier.example>\n"
        "Date: Mon, Jun 3, 2024 at 10:15 AM\n"
        "Subject: Delivery failed\n"
        "To: <lan@example.com>\n"
        "\n"
        "We could not deliver parcel 123.\n"
        "\n"
        "On Sun, Jun 2, 2024 at 9:00 AM Lan <lan@example.com> wrote:\n"
        "> Where is my parcel?\n"
    )
    assert strip_reply(body) == body.strip("\n")


@pytest.mark.parametrize(
    "attribution",
    [
        "Am Mo., 3. Juni 2024 um 10:15 Uhr schrieb Max <max@example.de>:",
        "Max <max@example.de> schrieb am Mo., 3. Juni 2024 um 10:15 Uhr:",
        "Le lun. 3 juin 2024 à 10:15, Anne <anne@example.fr> a écrit :",
        "El lun, 3 jun 2024 a las 10:15, Ana (<ana@example.es>) escribió:",
        "Em seg., 3 de jun. de 2024 às 10:15, Ana <ana@example.pt> escreveu:",
        "Il giorno lun 3 giu 2024 alle ore 10:15 Marco <marco@example.it> ha scritto:",
        "Op ma 3 jun 2024 om 10:15 schreef Jan <jan@example.nl>:",
        "Den mån 3 juni 2024 kl 10:15 skrev Sven <sven@example.se>:",
        "Den 3. jun. 2024 kl. 10.15 skrev Peter <peter@example.dk>:",
        "man. 3. jun. 2024 kl. 10:15 skrev Ola <ola@example.no>:",
        "pon., 3 cze 2024 o 10:15 Jan Kowalski <jan@example.pl> napisał(a):",
        "пн, 3 июн. 2024 г. в 10:15, Иван <ivan@example.ru>:",
        "3 черв. 2024 р. о 10:15 Олена <olena@example.ua> пише:",
        "2024年6月3日(月) 10:15 山田太郎 <taro@example.jp>:",
        "张伟 <zhang@example.cn> 于2024年6月3日周一 10:15写道：",
        "2024-06-03 10:15 GMT+07:00 Lan <lan@example.com>:",
        "---- On Mon, 03 Jun 2024 10:15:00 +0700 Lan <lan@example.com> wrote ----",
    ],
)
def test_attributions_in_other_languages(attribution: str) -> None:
    body = f"New text.\n\n{attribution}\n\nOld text, not quoted, as Outlook mobile sends it.\n"
    assert strip_reply(body) == "New text."


def test_windows_line_endings() -> None:
    body = "Thanks!\r\n\r\nOn 3 Jun 2024, at 10:15, Lan <lan@example.com> wrote:\r\n> Hi\r\n"
    assert strip_reply(body) == "Thanks!"


def test_vietnamese_in_decomposed_form() -> None:
    attribution = unicodedata.normalize(
        "NFD", "Vào Th 2, 3 thg 6, 2024 lúc 10:15 An <a@x.vn> đã viết:"
    )
    assert strip_reply(f"Cảm ơn anh.\n\n{attribution}\nNội dung cũ\n") == "Cảm ơn anh."


@pytest.mark.parametrize("text", ["", "\n", "  \n\t\n"])
def test_blank_input_gives_empty_text(text: str) -> None:
    assert strip_reply(text) == ""


LINES = st.sampled_from(
    [
        "",
        " ",
        "Hello",
        "Cảm ơn anh.",
        "سلام",
        "> quoted",
        ">",
        "-- ",
        "--",
        "_____",
        "Sent from my iPhone",
        "On Mon, Jun 3, 2024 at 10:15 AM Lan <lan@example.com> wrote:",
        "On Mon, Jun 3, 2024 at 10:15 AM Lan <",
        "lan@example.com> wrote:",
        ">:",
        "Lan wrote:",
        f"{RLM}در تاریخ ۳ ژوئن ۲۰۲۴ ساعت ۱۰:۱۵ <a@b.ir> نوشت:",
        "From: A <a@example.com>",
        "Sent: Monday",
        "Subject: Hi",
        "-----Original Message-----",
        "Begin forwarded message:",
        "GÖNDERİLDİ: dün",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(LINES, st.text(max_size=20)), max_size=25))
def test_result_is_a_non_empty_slice_of_the_input(lines: list[str]) -> None:
    text = "\n".join(lines)
    result = strip_reply(text)
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    assert result in normalised
    assert bool(result.strip()) == bool(text.strip())


# --- email-reply-trimmer (Discourse) ----------------------------------------------

# Where the trimmer's expected text and ours differ on purpose. Compared with
# plain equality after stripping the ends: no whitespace normalisation was
# needed, since we never rewrite the lines we keep.
TRIMMER_DIVERGENCES = {
    "embedded_email_7.txt": (
        "inline reply: text follows the '>' quote under the attribution, so we keep the "
        "whole message; the trimmer drops the attribution line, the later 'C>' quote and "
        "the '____' signature"
    ),
    "embedded_email_12.txt": (
        "an attribution mangled over five lines with a blank line and a lone '<'; we never "
        "join attribution lines across a blank line, which would glue an ordinary sentence "
        "opening with 'On' to a later 'X wrote:'"
    ),
    "embedded_email_17.txt": (
        "opens with an attribution and has unquoted text after a '>' quote further down: "
        "inline reply, kept whole; the trimmer removes both attribution lines"
    ),
    "embedded_email_18.txt": (
        "nothing above the opening attribution, so cutting leaves nothing and we return the "
        "whole message; the trimmer drops only the attribution line, which makes the old "
        "text look new"
    ),
    "embedded_email_french_2.txt": (
        "answer written below the '>' quote (bottom-posting): we keep the whole message, "
        "the trimmer keeps only the answer"
    ),
    "embedded_email_quote_text.txt": (
        "answer written below the '>' quote (bottom-posting): we keep the whole message, "
        "the trimmer keeps only the answer"
    ),
    "forwarded_gmail.txt": (
        "a note above a Gmail forward: we keep the forwarded message, which is new to the "
        "ticket; the trimmer cuts at the forward marker"
    ),
    "forwarded_message.txt": (
        "a forward with nothing above: we keep its From/Date/Subject/To header, which tells "
        "the agent who wrote it; the trimmer keeps only the forwarded body"
    ),
    "spam_1.txt": (
        "the body is only a nested quote: the trimmer returns empty text, we never do and "
        "return the body whole"
    ),
}


@pytest.mark.parametrize(
    "path", corpus_files("email-reply-trimmer/emails", "*.txt", TRIMMER_DIVERGENCES)
)
def test_email_reply_trimmer(path: Path | None) -> None:
    need_corpus()
    assert path is not None
    expected_path = path.parent.parent / "trimmed" / path.name
    if not expected_path.is_file():
        pytest.skip("no expected output for this body")
    assert strip_reply(read_body(path)).strip() == read_body(expected_path).strip()


def test_email_reply_trimmer_divergences_name_real_files() -> None:
    root = need_corpus() / "email-reply-trimmer" / "emails"
    assert [name for name in TRIMMER_DIVERGENCES if not (root / name).is_file()] == []


# --- talon (Mailgun) standard replies --------------------------------------------

TALON_DIVERGENCES = {
    "iphone.eml": (
        "talon removes only the quotation and keeps 'Sent from my iPhone'; we also remove "
        "mobile signatures"
    ),
    "sparrow.eml": (
        "talon keeps the short '-- ' signature ('xxx', 'Sent with Sparrow'); we remove it"
    ),
    "thunderbird.eml": (
        "'Hello' is written below the '>' quote (bottom-posting): we keep the whole "
        "message, talon keeps only 'Hello'"
    ),
}


def plain_text(path: Path) -> str:
    """The text/plain body of a raw message, decoded."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("plain",))
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    assert isinstance(content, str)
    return content


def test_talon_divergences_name_real_files() -> None:
    root = need_corpus() / "talon" / "fixtures" / "standard_replies"
    assert [name for name in TALON_DIVERGENCES if not (root / name).is_file()] == []


@pytest.mark.parametrize(
    "path", corpus_files("talon/fixtures/standard_replies", "*.eml", TALON_DIVERGENCES)
)
def test_talon_standard_replies(path: Path | None) -> None:
    need_corpus()
    assert path is not None
    expected_path = path.with_name(f"{path.stem}_reply_text")
    expected = expected_path.read_text(encoding="utf-8") if expected_path.is_file() else "Hello"
    assert same_text(strip_reply(plain_text(path)), expected)


# --- Bodies without expected output -------------------------------------------------

UNCHECKED_BODIES = [
    *corpus_files("email-reply-parser-github/emails"),
    *corpus_files("email-reply-parser-zapier/emails"),
    *corpus_files("mail-parser-reply/emails"),
    *corpus_files("crisp-email-reply-parser/fixtures"),
]


@pytest.mark.parametrize("path", UNCHECKED_BODIES)
def test_corpus_body_gives_a_non_empty_slice(path: Path | None) -> None:
    need_corpus()
    assert path is not None
    body = read_body(path)
    result = strip_reply(body)
    assert result.strip() or not body.strip()
    assert result in body.replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize("name", ["pathological.txt", "email_long_quote.txt"])
def test_pathological_corpus_bodies_run(name: str) -> None:
    body = read_body(need_corpus() / "email-reply-parser-github" / "emails" / name)
    assert strip_reply(body).strip()


@pytest.mark.parametrize(
    "body",
    [
        ">" * 700_000,
        "On Mon, 3 Jun 2024 " * 40_000 + "wrote:",
        "On 3 June 2024 Bob wrote:\n" * 5_000,
        "Lan wrote:\n\n\n" * 5_000,
        "From: a\nTo: b\n" * 5_000,
        "Sent from my iPhone\n" * 5_000,
        "--\nx\n" * 5_000,
        (RLM * 100 + "نوشت:\n") * 2_000,
        ("<" * 250 + "@ :\n") * 2_000,
    ],
    ids=[
        "one-line-of-gt",
        "one-line-of-on",
        "attribution-lines",
        "short-attributions",
        "header-lines",
        "signature-lines",
        "dash-signatures",
        "bidi-marks",
        "angle-brackets",
    ],
)
def test_pathological_input_runs(body: str) -> None:
    assert strip_reply(body).strip()
