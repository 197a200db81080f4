"""The visible new text of a follow-up email: quoted history and signature removed.

The ticket step calls :func:`strip_reply` on the plain-text body of every
follow-up to an existing ticket and shows the result as the message in the
ticket thread. The full original body is always stored next to it, so this
module is deliberately timid: whenever it is unsure, it keeps text. Showing an
agent a few lines of old history is a nuisance; hiding the customer's answer
loses it.

The body is read line by line, top to bottom, looking for the first *cut
point*, the line where quoted history begins:

* an attribution line, "On <date>, <name> wrote:" and its equivalents in the
  languages our customers' mail clients speak (Vietnamese and Persian
  included), possibly wrapped over two or three lines as Gmail does;
* an Outlook-style header block (From/Sent/To/Subject in many languages), or
  a separator such as "-----Original Message-----";
* failing both, a block of ">" lines that runs to the end of the message.

Decisions worth knowing:

* Inline replies are kept whole. If unquoted text follows a ">" block after an
  attribution line (answers interleaved with the quote, or written below it),
  or anywhere above a trailing quote, nothing is cut: guessing which parts are
  new is where stripping loses answers.
* Forwards are never cut. A forwarded message ("Begin forwarded message:",
  "---------- Forwarded message ---------") is content the ticket does not
  have yet, unlike quoted history, which repeats earlier messages of the same
  ticket. A customer who writes "here is the vendor's answer:" above a forward
  gets both shown; everything from the marker on is kept as it is. (Outlook
  marks forwards and replies alike, with a From/Sent/To/Subject block, so an
  Outlook forward with text above it is cut like a reply: plain text gives no
  way to tell them apart.)
* Signatures are removed only at the end: one "-- " delimiter followed by at
  most ten lines, and the lines mail apps add ("Sent from my iPhone",
  "Gửi từ iPhone của tôi", "ارسال شده از iPhone من", ...).
* The result is never empty when the input had text: a message that is only a
  quote, a forward header or a signature comes back whole.

Speed: every pattern is applied to one line, or to at most three joined lines,
and lines longer than a few hundred characters are never taken for attribution,
header or signature lines, so the work grows linearly with the body whatever
it contains (one corpus message holds a 0.7 MiB line of ">").
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["strip_reply"]

# Bidi controls (Persian and Arabic clients wrap names, addresses and whole
# lines in them), zero-width characters and the BOM are dropped before
# matching; the no-break spaces Gmail puts in times ("10:15\u202fAM") and the
# zero-width non-joiner of Persian compounds ("ارسال\u200cشده") become spaces;
# Arabic yeh and kaf become their Persian forms, since Persian users type both.
_MATCHING_FORM = str.maketrans(
    "\u00a0\u2007\u202f\u200c\u064a\u0643",
    "    \u06cc\u06a9",
    "\u200b\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\u00ad",
)

# Lines longer than this are never attribution, header, separator or
# signature lines; it bounds the work done on hostile input.
_MAX_MARKER_LINE = 300

# The end-anchored patterns look only at this much of the end of a line:
# enough for the longest verb or address, and it keeps them cheap.
_TAIL = 120

# A "-- " signature is removed only when what follows it is this short.
_SIGNATURE_MAX_LINES = 10
_SIGNATURE_MAX_CHARS = 1000

# Characters that make up decorative lines ("-----", "_____", and "ᐧ", which
# Gmail tracking extensions add): such lines are dropped from the end.
_RULE_CHARACTERS = frozenset("-_=*~#+—–•·ᐧ ")


def _matching_form(text: str) -> str:
    """``text`` as the patterns see it: no invisible marks, NFC, stripped."""
    if text.isascii():
        return text.strip()
    return unicodedata.normalize("NFC", text.translate(_MATCHING_FORM)).strip()


def _compile(pattern: str, flags: int = re.IGNORECASE) -> re.Pattern[str]:
    """Compile ``pattern`` after putting its literal text in matching form."""
    return re.compile(unicodedata.normalize("NFC", pattern.translate(_MATCHING_FORM)), flags)


# --- Attribution lines ---------------------------------------------------------

# Words that open an attribution line: English and Apple Mail "On", German
# "Am", French "Le", Spanish "El", Portuguese "Em", Italian "Il" / "In data",
# Dutch "Op", Scandinavian "Den" / "På", Polish "Dnia" / "W dniu", Czech
# "Dne", Eudora "At", Vietnamese Gmail "Vào", Persian Gmail "در تاریخ",
# Hebrew "בתאריך", Arabic "في", Chinese Apple Mail "在".
_INTRO = _compile(
    r"^(?:on|am|le|el|em|il|in data|op|den|på|dnia|w dniu|dne|at|vào|στις|pada"
    r"|tanggal|در|בתאריך|فی|在)\b"
)
# The same openings as clients capitalise them, followed by a date: a line
# like this inside a wrapped window starts a new attribution.
_FRESH_INTRO = _compile(
    r"^(?:On|Am|Le|El|Em|Il|Op|Den|Dnia|W dniu|Dne|At|Vào|در تاریخ|在)\b.{0,24}\d", 0
)
# Attributions that open with the date: Gmail in Japanese ("2024年6月3日(月)
# 10:15 ..."), Polish, Hungarian ("2013.02.08. 7:31 keltezéssel"), Android
# ("02.04.2012 14:20 пользователь ...").
_DATE_FIRST = _compile(r"^\d{1,4}[-./年\s]")
# ... or with a weekday or month abbreviation: Gmail in Russian ("ср, 30
# апр."), Norwegian ("tir. 18. apr."), Finnish ("pe 20. lokakuuta"), mail.ru
# ("Wednesday, 17 November 2021").
_WEEKDAY_FIRST = _compile(r"^[^\W\d_]{1,10}\.?,?\s+\d{1,2}\b")
# ... or with the sender: German Gmail ("Max <max@x.de> schrieb am ...:"),
# Chinese Gmail ("Lan <lan@x.cn> 于2024年6月3日周一 10:15写道："), Persian
# Gmail ("Ali <ali@x.ir> در تاریخ ... نوشت:"), Thunderbird ("Bob <b@x> wrote:").
_NAME_EMAIL_FIRST = _compile(r"^[^<>@]{0,100}<\s*(?:mailto:)?[^<>\s@]+@")

_DIGIT = _compile(r"\d")
_TIME = _compile(r"\d{1,2}:\d{2}|\d{1,2}[.h]\d{2}\b(?![./]\d)")
_YEAR = _compile(r"\d{4}")
_EMAIL = _compile(r"[^\s@<>()\[\]\"';:,]@[\w-]+(?:\.[\w-]+)+")

# "wrote" in the languages of the mail clients we see. Word-final forms are
# matched at a word boundary; the CJK ones cannot be.
_VERBS = (
    r"wrote|writes|schrieb|schreibt|a écrit|écrit|escribió|escreveu|ha scritto|scrisse"
    r"|schreef|geschreven|skrev|skriver|napisał\(a\)|napisał|napisała|napisal"
    r"|написал\(а\)|написал|написала|пише|написав|kirjoitti|írta"
    r"|napsal\(a\)|napsal|napsala|yazdı|a scris|napisao|menulis|έγραψε"
    r"|đã viết|نوشت|نوشته|کتب|כתב"
)
_VERB_END = _compile(rf"(?:(?<!\w)(?:{_VERBS})|写道|寫道|のメール|書きました|님이 작성)\s*[:：]$")
# Zoho ("---- On ... <x@y> wrote ----") and some webmails drop the colon; that
# is accepted only right after the sender's address.
_VERB_END_NO_COLON = _compile(r"(?:@\S*|&gt;)\s*(?:wrote|schrieb|a écrit|escribió)$")
_NO_COLON_VERBS = ("wrote", "schrieb", "écrit", "escribió")
# Gmail in Russian, Japanese, Swedish, Dutch: the line ends with the address.
_EMAIL_END = _compile(r"@[^\s@]*\s*[>)\]]*\s*[:：]$")
# German Gmail: "Max <max@x.de> schrieb am Fr., 28. Apr. 2017 um 11:53 Uhr:".
_VERB_AFTER_EMAIL = _compile(r"@[^\s@<>]*>\s*(?:schrieb am|wrote on|a écrit le)\b")
# Gmail's old international form, which has no verb and sometimes no colon:
# "2016-10-24 15:36 GMT+02:00 Foo bar <info@foo.bar>:".
_GMAIL_GMT = _compile(r"^\d{4}-\d{2}-\d{2} \d{1,2}:\d{2} GMT[+-]\d{1,2}(?::\d{2})?\b")
# Older Gmail: "2013/7/20 sam via Discourse Meta <info@discourse.org>", no
# colon; taken only when a quote follows.
_GMAIL_SLASH_DATE = _compile(r"^\d{4}/\d{1,2}/\d{1,2}\b.{0,150}@[^\s@<>]+>$")
# Gmail wraps long attributions inside the address, so the last line can be
# ">:" (or "> wrote:"), which looks like a quoted line.
_WRAPPED_CLOSER = _compile(r"^>\s*(?:[^\s>]+\s*){0,2}[:：]$")

# Characters that decorate attribution lines and are ignored around them:
# Zoho wraps them in dashes, Outlook's HTML-to-text in stars.
_DECORATION = "-*_ \t"


def _could_end_attribution(key: str) -> bool:
    """A cheap first test that a line may be the last line of an attribution."""
    tail = key.rstrip(_DECORATION)
    return tail.endswith((":", "：", ">")) or tail[-10:].casefold().endswith(_NO_COLON_VERBS)


def _starts_attribution(head: str) -> bool:
    """Whether ``head`` can be the first line of an attribution."""
    if _INTRO.match(head):
        return bool(_DIGIT.search(head))
    if _DATE_FIRST.match(head) or _WEEKDAY_FIRST.match(head):
        return bool(_TIME.search(head) or _YEAR.search(head))
    return bool(_NAME_EMAIL_FIRST.match(head))


def _ends_attribution(joined: str) -> bool:
    """Whether ``joined`` ends the way attribution lines end."""
    tail = joined[-_TAIL:]
    return bool(
        _VERB_END.search(tail)
        or _VERB_END_NO_COLON.search(tail)
        or (_EMAIL_END.search(tail) and (_TIME.search(joined) or _YEAR.search(joined)))
        or (_VERB_AFTER_EMAIL.search(joined) and joined.endswith((":", "：")))
    )


def _is_certain(joined: str) -> bool:
    """Whether an attribution-shaped text names an address, or a year and a time.

    That is what makes it safe to cut at whatever follows: "On Monday at
    10:15 I wrote:" may open the customer's own words, "On 3 Jun 2024, at
    10:15, Lan wrote:" is a mail client's.
    """
    return bool(_EMAIL.search(joined) or (_TIME.search(joined) and _YEAR.search(joined)))


def _is_short_attribution(key: str) -> bool:
    """A single line like "Lan wrote:" or "X a écrit :": cut only before a quote."""
    return bool(
        (_VERB_END.search(key[-_TAIL:]) and len(key.split()) <= 12) or _GMAIL_SLASH_DATE.match(key)
    )


# --- Header blocks, separators and forwards -----------------------------------------

# Header names written by Outlook (desktop, web, mobile), Apple Mail, Gmail
# forwards, Thunderbird, Yahoo and AOL, by category. A block needs a sender, a
# subject and one more (date, recipient, copy), so that a customer's
# "From: Paris / To: Hanoi / Date: 3 June" itinerary is not taken for one.
_HEADER_NAMES: dict[str, tuple[str, ...]] = {
    "from": (
        "from", "von", "de", "da", "van", "från", "fra", "od", "от", "від", "từ",
        "از", "差出人", "发件人", "發件人", "寄件者", "lähettäjä", "feladó", "kimden",
        "afzender", "remetente",
    ),
    "date": (
        "sent", "date", "gesendet", "datum", "envoyé", "envoyé le", "enviado",
        "enviado el", "enviada em", "enviado em", "fecha", "data", "inviato",
        "verzonden", "skickat", "sendt", "dato", "wysłano", "wysłane", "отправлено",
        "дата", "надіслано", "đã gửi", "ngày", "ارسال شده", "تاریخ", "送信日時",
        "日付", "发送时间", "發送時間", "日期", "寄件日期", "lähetetty", "päivämäärä",
        "elküldve", "dátum", "gönderildi", "tarih", "message du", "sent at",
    ),
    "to": (
        "to", "an", "à", "a", "para", "aan", "till", "til", "do", "кому", "đến", "tới",
        "به", "宛先", "收件人", "收件者", "vastaanottaja", "címzett", "kime", "per",
    ),
    "cc": ("cc", "bcc", "kopie", "copie à", "копия", "копія", "رونوشت", "抄送", "副本"),
    "subject": (
        "subject", "betreff", "objet", "asunto", "assunto", "oggetto", "onderwerp",
        "ämne", "emne", "temat", "тема", "chủ đề", "موضوع", "件名", "主题", "主旨",
        "aihe", "tárgy", "konu", "sujet",
    ),
    "reply-to": ("reply-to", "antwort an", "risposta", "répondre à", "responder a"),
}  # fmt: skip
_HEADER_CATEGORY = {
    _matching_form(name).casefold(): category
    for category, names in _HEADER_NAMES.items()
    for name in names
}
_HEADER_ALTERNATION = "|".join(
    re.escape(name) for name in sorted(_HEADER_CATEGORY, key=len, reverse=True)
)
# "From: x", "*From:* x" (Outlook's HTML turned to text), "De : x" (French).
_HEADER_LINE = _compile(rf"^[*_]*({_HEADER_ALTERNATION})[*_]*\s*[:：]")
# Further names on the same line: Outlook sometimes runs the block together.
_HEADER_INLINE = _compile(rf"\s[*_]*({_HEADER_ALTERNATION})[*_]*\s*[:：]")
_HEADER_BLOCK_LINES = 12
_NO_HEADERS: frozenset[str] = frozenset()

# "-----Original Message-----" (Outlook), "----- Original Message -----"
# (Yahoo, Zimbra), "-------- Original Message --------" (Thunderbird), QQ
# Mail's "------------------ 原始邮件 ------------------", and translations.
_SEPARATOR = _compile(
    r"^[*_\s]*-{2,}\s*(?:original message|ursprüngliche nachricht|originalnachricht"
    r"|message d'origine|message original|mensaje original|mensagem original"
    r"|messaggio originale|oorspronkelijk bericht|originalmeddelande|oprindelig meddelelse"
    r"|oprindelig besked|opprinnelig melding|wiadomość oryginalna|исходное сообщение"
    r"|оригінальне повідомлення|alkuperäinen viesti|původní zpráva|eredeti üzenet"
    r"|orijinal ileti|özgün ileti|thư gốc|tin nhắn gốc|پیام اصلی|پیغام اصلی"
    r"|元のメッセージ|原始邮件|原始郵件|reply message)\s*-{2,}[*_\s]*$"
)

# Forward markers: Gmail, Thunderbird and Outlook.com put a title between
# dashes, Apple Mail writes a sentence ending in a colon.
_FORWARD = _compile(
    r"^[*_\s]*(?:-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré"
    r"|mensaje reenviado|mensagem encaminhada|messaggio inoltrato|doorgestuurd bericht"
    r"|vidarebefordrat meddelande|videresendt (?:meddelelse|besked|melding)"
    r"|przekazana wiadomość|wiadomość przekazana|пересылаемое сообщение"
    r"|пересланное сообщение|переслане повідомлення|välitetty viesti|továbbított üzenet"
    r"|iletilen ileti|(?:tin nhắn|thư) (?:được |đã )?chuyển tiếp"
    r"|پیام (?:هدایت ?شده|بازارسال ?شده|فوروارد ?شده|ارسال ?شده)"
    r"|転送(?:された)?メッセージ|转发的?邮件|轉寄的?郵件)\s*-{2,}"
    r"|(?:begin forwarded message|anfang der weitergeleiteten nachricht"
    r"|début du message réexpédié|inicio del mensaje reenviado"
    r"|início da mensagem (?:reencaminhada|encaminhada)|inizio messaggio inoltrato"
    r"|begin doorgestuurd bericht|vidarebefordrat mejl|videresendt (?:meddelelse|melding)"
    r"|początek przekazywanej wiadomości|начало переадресованного сообщения"
    r"|початок пересланого повідомлення|bắt đầu (?:tin nhắn|thư) (?:được )?chuyển tiếp"
    r"|شروع پیام (?:هدایت ?شده|بازارسال ?شده|ارسال ?شده)|転送されたメッセージ"
    r"|以下是转发的邮件|转发的邮件|以下為轉寄的郵件)\s*[:：])[*_\s]*$"
)


def _header_categories(key: str) -> frozenset[str]:
    """The header categories named on a line that starts with a header name."""
    if ":" not in key[:40] and "：" not in key[:40]:
        return _NO_HEADERS
    first = _HEADER_LINE.match(key)
    if first is None:
        return _NO_HEADERS
    names = [first.group(1)]
    names += [m.group(1) for m in _HEADER_INLINE.finditer(key, first.end())]
    # IGNORECASE matches "İ" to "i" but casefold() keeps a combining dot.
    folded = (name.casefold().replace("\u0307", "") for name in names)
    return frozenset(filter(None, (_HEADER_CATEGORY.get(name) for name in folded)))


def _is_rule(key: str) -> bool:
    """Whether a non-blank line is only decoration: dashes, underscores, stars."""
    return bool(key) and len(key) <= _MAX_MARKER_LINE and set(key) <= _RULE_CHARACTERS


# --- Signatures ------------------------------------------------------------------

# Lines that mail apps append. Each pattern sees the line in matching form,
# lower-cased, with links removed and surrounding brackets, quotes and stars
# stripped. "Sent from my iPhone" and its translations:
_SENT_FROM = _compile(
    r"^(?:sent (?:from|via|with|using|by)|envoyé (?:de|depuis|à partir de|avec|par)"
    r"|enviado (?:desde|con|do|de|pelo|a través de)|enviada (?:do|de)"
    r"|inviato (?:da|dal|con)|verzonden (?:met|vanaf|van|via)|verstuurd (?:met|vanaf|van)"
    r"|gesendet (?:von|vom|mit|aus)|skickat (?:från|med)|sendt (?:fra|från|med)"
    r"|wysłane (?:z|ze|przy użyciu)|wysłano (?:z|ze)|отправлено (?:с|со|из)"
    r"|надіслано (?:з|зі|із)|відправлено (?:з|зі)|lähetetty|dikirim dari"
    r"|أرسلت من|مرسل من|تم الإرسال من)\s+(?P<device>.+)$"
)
# Vietnamese "Gửi từ" and Persian "ارسال شده از" also open ordinary sentences
# ("Gửi từ hôm qua mà chưa nhận được": sent yesterday, still not received), so
# they count only with a device or "my" ("của tôi", "من").
_SENT_FROM_DEVICE = _compile(
    r"^(?:(?:được )?gửi từ|ارسال شده از|فرستاده شده از)\s+(?:.{1,40}(?:của tôi|من)"
    r"|(?:iphone|ipad|android|samsung|galaxy|outlook|yahoo|gmail|mail|điện thoại|thiết bị"
    r"|di động|تلفن|گوشی|موبایل|دستگاه|تبلت)\b.{0,40})$"
)
_OTHER_SIGNATURES = (
    # Apple Mail, K-9 Mail and Samsung in German.
    _compile(r"^von meinem .{1,60} gesendet$"),
    _compile(r"^diese nachricht wurde (?:von|mit) .{1,100} gesendet$"),
    # Outlook for iOS and Android, in English, German, French, Spanish,
    # Vietnamese and Persian.
    _compile(
        r"^(?:get|holen sie sich|obtenir|obtener|tải|nhận|دریافت) outlook"
        r" (?:for|für|pour|para|cho|برای) \w+"
    ),
    # "From my iPhone 6", "Someone from mobile".
    _compile(
        r"^(?:\w+ )?from (?:my )?"
        r"(?:iphone|ipad|android|mobile|phone|cell|smartphone|tablet|blackberry)\b.{0,20}$"
    ),
    # Japanese, Chinese (simplified and traditional), Korean, Turkish.
    _compile(r"^.{1,30}から送信$"),
    _compile(r"^(?:发自|發自|寄自|来自)我的.{1,30}$"),
    _compile(r"^(?:从|從)我的.{1,30}(?:发送|傳送|發送)$"),
    _compile(r"^.{1,30}에서 보냄$"),
    _compile(r"^.{1,30}(?:'?(?:umdan|imden|dan|den|tan|ten)) gönderildi$"),
)  # fmt: skip
# What may follow the device: "Sent from my cell, please excuse any typos".
_EXCUSE = _compile(r"^(?:please |pls |sorry|excuse|pardon|apolog|typos|brevity|xin lỗi|ببخشید)")
_DEVICE_END = re.compile(r"[,.;!:]|\s-\s")
_LINK = re.compile(r"<(?:https?:|mailto:|www\.)[^<>]*>|\(https?:[^()\s]*\)|https?:\S*")
_MARKDOWN_LINK = re.compile(r"\[([^\[\]]*)\]")
_SIGNATURE_TRIM = " \t<>()[]*_\"'.!"


def _signature_text(key: str) -> str:
    """A line reduced for the app-signature patterns."""
    text = _MARKDOWN_LINK.sub(r"\1", _LINK.sub(" ", key))
    return " ".join(text.split()).strip(_SIGNATURE_TRIM).casefold()


def _is_app_signature(key: str) -> bool:
    """Whether a line is a mail app's "Sent from my iPhone" line.

    "Sent from my desk, is much easier than my phone" is a sentence, not a
    signature: after the device only an apology for typos may follow.
    """
    if not key or len(key) > _MAX_MARKER_LINE:
        return False
    text = _signature_text(key)
    sent = _SENT_FROM.match(text)
    if sent is not None:
        device, *rest = _DEVICE_END.split(sent.group("device"), maxsplit=1)
        after = rest[0].strip(" .") if rest else ""
        return len(device.split()) <= 6 and (not after or bool(_EXCUSE.match(after)))
    return bool(_SENT_FROM_DEVICE.match(text)) or any(p.match(text) for p in _OTHER_SIGNATURES)


# --- The body --------------------------------------------------------------------


class _Body:
    """A body split into lines, with what the rules ask about each line computed once."""

    def __init__(self, text: str) -> None:
        self.lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.keys = [_matching_form(line) for line in self.lines]
        self.quoted = [key.startswith(">") for key in self.keys]
        # Lines that may be markers (attribution, header, separator): short
        # enough, not blank, not quoted.
        self.marker = [
            0 < len(key) <= _MAX_MARKER_LINE and not quoted
            for key, quoted in zip(self.keys, self.quoted, strict=True)
        ]
        self.headers = [
            _header_categories(key) if marker else _NO_HEADERS
            for key, marker in zip(self.keys, self.marker, strict=True)
        ]
        self._starts: dict[int, bool] = {}
        self._fresh: dict[int, bool] = {}

    def starts_attribution(self, index: int) -> bool:
        """Whether line ``index`` can open an attribution (cached: windows overlap)."""
        if index not in self._starts:
            self._starts[index] = _starts_attribution(self.keys[index].strip(_DECORATION))
        return self._starts[index]

    def opens_new_attribution(self, index: int) -> bool:
        """Whether line ``index`` clearly opens an attribution ("On Mon, 3 Jun ...")."""
        if index not in self._fresh:
            self._fresh[index] = bool(_FRESH_INTRO.match(self.keys[index]))
        return self._fresh[index]

    def quote_follows(self, index: int, end: int) -> bool:
        """Whether the next non-blank line after ``index`` is quoted, or there is none.

        Quoted means ">" here, or "|", which old Gmail and some webmails used.
        """
        for following in range(index + 1, end):
            if self.keys[following]:
                return self.quoted[following] or self.keys[following].startswith("|")
        return True

    def attribution_start(self, last: int, end: int) -> int | None:
        """The first line of an attribution whose last line is ``last``, if any.

        Windows of three, two and one lines are tried, longest first, so that a
        wrapped attribution is cut whole; a window may not swallow a line that
        itself opens an attribution ("On this day" above "On Mon, 3 Jun ...").
        """
        if _GMAIL_GMT.match(self.keys[last]):
            return last
        if not _could_end_attribution(self.keys[last]):
            return None
        for first in range(max(last - 2, 0), last + 1):
            if self._is_attribution(first, last, end):
                return first
        return None

    def _is_attribution(self, first: int, last: int, end: int) -> bool:
        """Whether lines ``first`` to ``last`` make an attribution to cut at."""
        if not all(self.marker[first:last]):
            return False
        if not self.marker[last] and not (
            first < last and self.quoted[last] and _WRAPPED_CLOSER.match(self.keys[last])
        ):
            return False
        if not self.starts_attribution(first):
            key = self.keys[first].strip(_DECORATION)
            return first == last and _is_short_attribution(key) and self.quote_follows(last, end)
        if any(self.opens_new_attribution(index) for index in range(first + 1, last + 1)):
            return False
        joined = " ".join(key.strip(_DECORATION) for key in self.keys[first : last + 1])
        if _ends_attribution(joined):
            return _is_certain(joined) or self.quote_follows(last, end)
        return first == last and _is_short_attribution(joined) and self.quote_follows(last, end)

    def header_block_at(self, start: int, limit: int) -> bool:
        """Whether a From/Sent/To/Subject block starts at line ``start``.

        Continuation lines (a long name wrapped before its address) and blank
        lines may sit between header lines, within a dozen lines in all.
        """
        found = self.headers[start]
        if not found:
            return False
        unnamed = 0
        for index in range(start + 1, min(limit, start + _HEADER_BLOCK_LINES)):
            if self.headers[index]:
                found = found | self.headers[index]
                unnamed = 0
            elif self.keys[index]:
                unnamed += 1
                if unnamed > 2:
                    break
        return {"from", "subject"} <= found and len(found) >= 3

    def find_cut(self, limit: int, end: int) -> tuple[int, int | None] | None:
        """The first cut point before ``limit``.

        With it comes, for an attribution, the line after it, where the quote
        it introduces begins; for a header block or separator, None: Outlook
        does not quote with ">", so there is no inline reply to look for.
        """
        for index in range(limit):
            if self.marker[index]:
                key = self.keys[index]
                if _SEPARATOR.match(key) or self.header_block_at(index, limit):
                    return index, None
            elif not (self.quoted[index] and _WRAPPED_CLOSER.match(self.keys[index])):
                continue
            start = self.attribution_start(index, end)
            if start is not None:
                return start, index + 1
        return None

    def first_forward(self) -> int | None:
        """The line of the first forward marker outside quotes, if any."""
        for index, key in enumerate(self.keys):
            if self.marker[index] and _FORWARD.match(key):
                return index
        return None

    def text_follows_quote(self, start: int, end: int) -> bool:
        """Whether unquoted text follows a ">" line between ``start`` and ``end``.

        That is an inline or bottom-posted reply. Text after a rule line
        ("_____") that follows the quote is a mailing-list or disclaimer footer
        added by a server, not an answer, and does not count.
        """
        seen_quote = False
        for index in range(start, end):
            if self.quoted[index]:
                seen_quote = True
            elif seen_quote and self.keys[index]:
                return not _is_rule(self.keys[index])
        return False

    def trailing_quote_start(self, end: int) -> int | None:
        """The first line of the run of ">" lines (and blank lines) ending at ``end``."""
        start = None
        for index in range(end - 1, -1, -1):
            if self.quoted[index]:
                start = index
            elif self.keys[index]:
                break
        return start

    def dash_signature_start(self, end: int) -> int | None:
        """The "-- " line that opens a short signature ending at ``end``, if any."""
        seen = chars = 0
        for index in range(end - 1, -1, -1):
            if self.keys[index] == "--":
                return index
            if self.keys[index]:
                seen += 1
                chars += len(self.keys[index])
                if seen > _SIGNATURE_MAX_LINES or chars > _SIGNATURE_MAX_CHARS:
                    return None
        return None

    def strip_tail(self, end: int) -> int:
        """Move ``end`` back over one "-- " signature, app signatures, rules and blanks."""
        dash_signature_seen = False
        while end > 0:
            key = self.keys[end - 1]
            if not key or _is_rule(key) or (not self.quoted[end - 1] and _is_app_signature(key)):
                end -= 1
                continue
            start = None if dash_signature_seen else self.dash_signature_start(end)
            if start is None:
                break
            end, dash_signature_seen = start, True
        return end

    def reply_end(self) -> int:
        """The index of the line after the last line of new text."""
        forward = self.first_forward()
        if forward is None:
            end = limit = self.strip_tail(len(self.lines))
        else:
            # Everything from the marker on is the forwarded message, kept as is.
            end, limit = len(self.lines), forward
        cut = self.find_cut(limit, end)
        if cut is not None:
            start, quote = cut
            if quote is not None and self.text_follows_quote(quote, end):
                return end
            return self.strip_tail(start)
        if forward is not None:
            return end
        quote = self.trailing_quote_start(end)
        if quote is None or self.text_follows_quote(0, quote):
            return end
        return self.strip_tail(quote)


def _without_blank_edges(lines: list[str]) -> str:
    """``lines`` joined, without the blank lines before and after the text."""
    first, last = 0, len(lines)
    while first < last and not lines[first].strip():
        first += 1
    while last > first and not lines[last - 1].strip():
        last -= 1
    return "\n".join(lines[first:last])


def strip_reply(text: str) -> str:
    """The new text of a reply: quoted history and signature removed, stripped of
    surrounding blank lines.

    Never empty when ``text`` has non-blank characters: if stripping would leave
    nothing, ``text`` itself comes back, without its surrounding blank lines.
    """
    body = _Body(text)
    reply = _without_blank_edges(body.lines[: body.reply_end()])
    if reply.strip():
        return reply
    # Stripping took everything (a bare quote, a forward header, a signature
    # alone): show it all rather than an empty message.
    return _without_blank_edges(body.lines)
