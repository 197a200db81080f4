"""parse against the third-party mail corpora in /work/shared/corpus.

1. Every raw message of every corpus goes through ``parse`` without an
   exception, and a message whose text parts all decode strictly with their
   declared charset comes out without U+FFFD replacement characters.
2. zammad ships what its own parser made of each mailNNN.box (mailNNN.yml):
   sender, subject, attachment names and, for plain-text bodies, the start of
   the text are compared. Where we deliberately differ, or where Zammad's
   reading is the wrong one, the file is a strict xfail with the reason.
3. mime4j ships the MIME tree of each .msg (.xml): our walk must count the
   same parts, which is what the MIME caps are measured on.

The corpus is read in place, never copied here. Without it these tests skip,
except under CI=true, where they fail.
"""

from __future__ import annotations

import base64
import codecs
import email.policy
import functools
import re
from email.parser import BytesParser
from typing import Any

import pytest
import yaml

from gateway.errors import LimitExceeded
from gateway.parse import ParsedMessage, ParseLimits, parse, sanitize_filename
from tests.corpus import CORPUS, need_corpus

pytestmark = pytest.mark.slow

# Folders that hold message bodies without headers, not messages.
BODY_FOLDERS = (
    "email-reply-trimmer",
    "email-reply-parser-github",
    "email-reply-parser-zapier",
    "mail-parser-reply",
    "crisp-email-reply-parser",
)
NOT_MESSAGES = (
    re.compile(r"[^/]+/(LICENSE|NOTICE|COPYING[^/]*)"),
    re.compile(r".*/(README[^/]*|ARTISTIC-LICENSE\.txt)"),
    re.compile(r".*\.(yml|xml)"),  # expected outputs (zammad, mime4j)
    re.compile(r"talon/.*\.html"),  # HTML bodies
    re.compile(r"talon/fixtures/signature/.*"),  # signature bodies and senders
    re.compile(r"talon/fixtures/standard_replies/[^/]+_reply_text"),  # expected replies
    re.compile(r"mimekit/mbox/.*"),  # an mbox and its summary
    re.compile(r"zbateson-mail-mime-parser/emails/files/.*"),  # attachment originals
)

# Messages for which LimitExceeded is the right answer, with the reason.
# None so far: every corpus message fits the default caps.
LIMIT_EXCEEDED_EXPECTED: dict[str, str] = {}


def message_files() -> list[str]:
    """Relative paths of every raw message in the corpus."""
    if not CORPUS.is_dir():
        return []
    found = []
    for path in sorted(CORPUS.rglob("*")):
        rel = path.relative_to(CORPUS).as_posix()
        if not path.is_file() or "/" not in rel or rel.split("/")[0] in BODY_FOLDERS:
            continue
        if not any(pattern.fullmatch(rel) for pattern in NOT_MESSAGES):
            found.append(rel)
    return found


def test_corpus_is_there() -> None:
    need_corpus()
    assert len(message_files()) > 1000


# --- 1. every message ----------------------------------------------------------------


def _source_text_parts(raw: bytes) -> tuple[bool, bool]:
    """(every text part decodes strictly with its declared charset, a decoded part holds U+FFFD).

    Read with the email package directly, independently of gateway.parse; a
    part without a charset is US-ASCII (RFC 2045 5.2).
    """
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[-1]
    msg = BytesParser(policy=email.policy.default).parsebytes(raw)
    strict, replacement = True, False
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            text = payload.decode(codecs.lookup(part.get_content_charset() or "us-ascii").name)
        except (LookupError, UnicodeDecodeError):
            strict = False
            continue
        replacement = replacement or "\ufffd" in text or "&#65533;" in text
    return strict, replacement


@pytest.mark.parametrize("rel", message_files(), ids=str)
def test_corpus_message(rel: str) -> None:
    raw = (need_corpus() / rel).read_bytes()
    try:
        parsed = parse(raw)
    except LimitExceeded:
        if rel in LIMIT_EXCEEDED_EXPECTED:
            return
        raise
    assert isinstance(parsed.text, str)
    assert "\x00" not in parsed.text
    assert all("/" not in a.filename and "\\" not in a.filename for a in parsed.attachments)
    strict, replacement_in_source = _source_text_parts(raw)
    if strict and not replacement_in_source:
        assert "\ufffd" not in parsed.text


# A few messages with a known right answer, beyond "does not raise".
def _parsed(rel: str) -> ParsedMessage:
    return parse((need_corpus() / rel).read_bytes())


def test_winmail_dat_is_unpacked() -> None:
    parsed = _parsed("roundcube/message-rendering/tnef1.eml")
    assert [(a.filename, a.size) for a in parsed.attachments] == [("AUTHORS", 244)]
    names = [a.filename for a in _parsed("roundcube/message-rendering/tnef3.eml").attachments]
    assert names == ["zappa_av1.jpg", "bookmark.htm"]
    with_body = _parsed("roundcube/message-rendering/tnef2.eml")
    assert with_body.text.startswith("THE BILL OF RIGHTS\nAmendments 1-10 of the Constitution")
    assert with_body.html is not None


def test_bounces_name_the_original_message() -> None:
    parsed = _parsed("mimekit/messages/delivery-status.txt")
    assert parsed.report_type == "delivery-status"
    assert parsed.embedded_message_ids == ("31FC7EB4.41C6@netscape.com",)
    # This 1996 DSN puts its explanation in the preamble.
    assert parsed.text.startswith("Processing your mail message caused the following errors:")


def test_mislabelled_japanese_bounce() -> None:
    # Declared ISO-2022-JP (7-bit) but written in EUC-JP.
    parsed = _parsed("sisimai-set-of-emails/bsd/lhost-ezweb-03.eml")
    assert parsed.text.startswith("次のあて先へのメッセージはエラーのため送信できませんでした。")


def test_iso_2022_jp_with_nec_characters() -> None:
    assert "①１都３県の鯵と、" in _parsed("zammad/mail/mail099.box").text


def test_deeply_nested_html_body() -> None:
    parsed = _parsed("nodemailer-mailparser/fixtures/htmllargecallstack.eml")
    assert parsed.html is not None
    assert "<script" not in parsed.html


# --- 2. zammad ----------------------------------------------------------------------------

ZAMMAD = CORPUS / "zammad" / "mail"


class _RubyYaml(yaml.SafeLoader):
    """YAML written by Ruby: indifferent-access hashes and !binary strings."""


_RubyYaml.add_constructor(
    "!ruby/hash:ActiveSupport::HashWithIndifferentAccess",
    lambda loader, node: loader.construct_mapping(node, deep=True),
)
_RubyYaml.add_constructor(
    "!binary",
    lambda loader, node: base64.b64decode(loader.construct_scalar(node)),
)


def _expected(box: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(
        (ZAMMAD / box).with_suffix(".yml").read_text(encoding="utf-8"), Loader=_RubyYaml
    )
    return loaded


def zammad_params(xfail: dict[str, str]) -> list[Any]:
    """Every mailNNN.box that has a .yml, strict xfail where listed."""
    if not ZAMMAD.is_dir():
        return []
    boxes = sorted(p.name for p in ZAMMAD.glob("*.box") if p.with_suffix(".yml").is_file())
    assert set(xfail) <= set(boxes), "an xfail names a file that is not in the corpus"
    return [
        pytest.param(
            box,
            id=box,
            marks=[pytest.mark.xfail(reason=xfail[box], strict=True)] if box in xfail else [],
        )
        for box in boxes
    ]


@functools.cache
def _ours(box: str) -> ParsedMessage:
    return parse((need_corpus() / "zammad" / "mail" / box).read_bytes())


SENDER_DIFFERENCES = {
    "mail016.box": "no From header: Zammad takes the Reply-To, we report no sender",
    "mail019.box": "no From header: Zammad takes the Reply-To, we report no sender",
    "mail053.box": 'From: "MAILER-DAEMON (Mail Delivery System)" has no "@": we skip it',
    "mail065.box": "an encoded word containing a comma: Zammad splits it (name '=20Andreas?='), "
    "we decode 'Bürling, Andreas'",
    "mail076.box": 'spam with From: "Millions Lottery Spain transfer"@example.com> : Zammad '
    "keeps the stray '>' in the address, we read the valid quoted local part",
    "mail087.box": "From: Test test@example.com (no brackets): Zammad takes all of it as the "
    "address, we read name 'Test' and address test@example.com",
}


@pytest.mark.parametrize("box", zammad_params(SENDER_DIFFERENCES))
def test_zammad_sender(box: str) -> None:
    expected, ours = _expected(box), _ours(box)
    if "from_email" in expected:
        got = ours.from_addr.email if ours.from_addr else None
        assert got is not None
        assert got.lower() == str(expected["from_email"]).lower()
    if expected.get("from_display_name") is not None:
        assert ours.from_addr is not None
        assert ours.from_addr.name == expected["from_display_name"]


@pytest.mark.parametrize("box", zammad_params({}))
def test_zammad_subject(box: str) -> None:
    expected = _expected(box)
    if "subject" not in expected:
        pytest.skip("no subject recorded")
    assert " ".join(_ours(box).subject.split()) == " ".join(str(expected["subject"] or "").split())


# Names each side makes up for a part that carries none: Zammad "file",
# "image.jpg", "document.html", "video.mov", a Content-ID; we "attachment"
# plus an extension. Only names the sender gave are compared.
ZAMMAD_MADE_UP = re.compile(r"file|(image|video|document)[1-9]?\.\w+|delivery-status\.txt")
OURS_MADE_UP = re.compile(r"attachment(\.\w+)?")

ATTACHMENT_DIFFERENCES = {
    "mail042.box": "PGP/MIME parts without names: Zammad calls the version part 'file', we "
    "name it after its Content-Description",
    "mail053.box": "the bounced headers (text/rfc822-headers, no name): Zammad 'file', we "
    "'Undelivered Message Headers.txt' from its Content-Description",
    "mail064.box": "a windows-1258 file name with combining marks: Zammad decodes it as "
    "windows-1252 ('d’eìcran'), we read 'd’écran'",
    "mail100.box": "a part without name or extension: Zammad names it after its Content-ID "
    "'32497.1617621278.2', we call it 'attachment'",
    "mail102.box": "two parts carry the same name: Zammad renames the second "
    "('...091.00.38.png'), we keep the name as sent",
}


@pytest.mark.parametrize("box", zammad_params(ATTACHMENT_DIFFERENCES))
def test_zammad_attachment_names(box: str) -> None:
    theirs = set()
    for item in _expected(box).get("attachments") or []:
        preferences = item.get("preferences") or {}
        if preferences.get("content-alternative"):
            continue  # the HTML body Zammad keeps as "message.html"
        mime = preferences.get("Mime-Type") or preferences.get("Content-Type") or ""
        name = sanitize_filename(str(item["filename"]), mime.split(";")[0].strip().lower())
        if not ZAMMAD_MADE_UP.fullmatch(name):
            theirs.add(name)
    ours = {a.filename for a in _ours(box).attachments if not OURS_MADE_UP.fullmatch(a.filename)}
    assert ours == theirs


BODY_DIFFERENCES = {
    "mail023.box": "12 bytes of GB2312 in a 120 KB body without any charset: too little for "
    "charset_normalizer, which picks EUC-KR",
    "mail060.box": "UTF-8 and Latin-1 bytes mixed under the unknown label iso-gb2312: no single "
    "reading is right (Zammad's is mojibake too)",
}


@pytest.mark.parametrize("box", zammad_params(BODY_DIFFERENCES))
def test_zammad_plain_body_start(box: str) -> None:
    expected = _expected(box)
    body = str(expected.get("body") or "")
    if expected.get("content_type") != "text/plain" or body in ("", "no visible content"):
        pytest.skip("not a plain-text body (Zammad converts HTML its own way)")
    start = re.sub(r"\s", "", body)[:40]
    assert start in re.sub(r"\s", "", _ours(box).text)


# --- 3. mime4j --------------------------------------------------------------------------

MIME4J = CORPUS / "mime4j"

# Where the email package splits differently from mime4j. These are about
# the standard library's parser, not ours, so they are not strict.
MIME4J_DIFFERENCES = {
    "mimetools-testmsgs/multi-2gifs-base64.msg": "a base64-encoded message/rfc822: the email "
    "package does not decode it to walk inside",
    "testmsgs/base64encoded-rfc822message-nested.msg": "a base64-encoded message/rfc822",
    "testmsgs/bad-newlines-multiple-parts-base64.msg": "a base64-encoded message/rfc822",
    "mimetools-testmsgs/2002_06_12_doublebound.msg": "nested multiparts sharing one boundary",
    "mimetools-testmsgs/double-bound.msg": "nested multiparts sharing one boundary",
    "testmsgs/ending-boundaries.msg": "text after a boundary on the same line",
    "testmsgs/very-long-boundary.msg": "a boundary-like line missing its final space",
    "testmsgs/very-very-long-boundary.msg": "a boundary-like line missing its final space",
    "testmsgs/weird-boundary.msg": "a boundary-like line that is not the boundary",
}


def mime4j_params() -> list[Any]:
    if not MIME4J.is_dir():
        return []
    names = sorted(p.relative_to(MIME4J).as_posix() for p in MIME4J.rglob("*.msg"))
    return [
        pytest.param(
            name,
            id=name,
            marks=[pytest.mark.xfail(reason=MIME4J_DIFFERENCES[name], strict=False)]
            if name in MIME4J_DIFFERENCES
            else [],
        )
        for name in names
        if (MIME4J / name).with_suffix(".xml").is_file()
    ]


def _parts_walked(raw: bytes) -> int:
    """How many parts our walk counts: the smallest max_mime_parts that parse accepts."""
    low, high = 1, 1000
    while low < high:
        middle = (low + high) // 2
        try:
            parse(raw, ParseLimits(max_mime_parts=middle))
            high = middle
        except LimitExceeded:
            low = middle + 1
    return low


@pytest.mark.parametrize("name", mime4j_params())
def test_mime4j_part_count(name: str) -> None:
    root = need_corpus() / "mime4j"
    tree = (root / name).with_suffix(".xml").read_text(encoding="utf-8", errors="replace")
    # Every <body-part> is a part; every <message> (the top one and each
    # message/rfc822 inside) is one more in our walk.
    expected = tree.count("<body-part>") + tree.count("<message>")
    assert _parts_walked((root / name).read_bytes()) == expected
