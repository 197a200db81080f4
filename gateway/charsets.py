"""Turning the bytes of a mail part or header into text.

Used by parse (which runs on the stored raw bytes after intake, before
classify and thread) for every text body part and every header that the
``email`` package could not decode cleanly.

Mail declares its charset (RFC 2045 section 5.1, RFC 2047 for headers), but
the label is often an alias Python does not know (``iso-gb2312``,
``ks_c_5601-1987``), a subset of what was really used (``gb2312`` text with
GBK characters), or simply wrong (``us-ascii`` on UTF-8 bytes). The rules
here, in order:

1. decode strictly with the declared charset, mapped to the superset codec
   mail clients really use;
2. when a seven-bit label (ISO-2022-JP) meets 8-bit bytes, try the 8-bit
   charsets that are mislabelled that way (Shift_JIS, EUC-JP);
3. else UTF-8, strictly;
4. else, if the declared charset is known and could be right, decode with it
   and replace the few bad bytes (the label is usually right for the rest);
   a UTF-8, ASCII or seven-bit label on bytes it cannot hold is not trusted;
5. else guess with charset_normalizer among a short list of codecs our
   customers' mail uses, looking at a bounded sample;
6. else Latin-1, which cannot fail.

The result is NFC-normalised: windows-1258 (Vietnamese) encodes tone marks
as combining characters, and UTF-8 Vietnamese typed with some keyboards
does too; NFC makes both compare equal to the precomposed text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import re
import unicodedata

import charset_normalizer

log = logging.getLogger("gateway.parse.charsets")

_ISO2022JP_AS_CP932 = "x-iso2022jp-cp932"  # our transcoder, see _iso2022jp_as_cp932

# Labels seen in mail mapped to the codecs that decode what senders really
# wrote. Most are the WHATWG Encoding Standard's choices: a label names the
# superset that the big mail clients have always emitted under it.
_ALIASES: dict[str, tuple[str, ...]] = {
    # GB2312 mail routinely contains GBK characters; GB18030 covers both.
    **dict.fromkeys(
        (
            "gb2312",
            "iso-gb2312",
            "csgb2312",
            "gbk",
            "x-gbk",
            "cp936",
            "ms936",
            "windows-936",
            "euc-cn",
            "x-euc-cn",
            "chinese",
            "gb_2312-80",
        ),
        ("gb18030",),
    ),
    # Korean: Windows' Unified Hangul Code is a superset of EUC-KR.
    **dict.fromkeys(
        (
            "ks_c_5601-1987",
            "ks_c_5601",
            "ksc5601",
            "ksc_5601",
            "ks_c_5601-1989",
            "csksc56011987",
            "euc-kr",
            "x-windows-949",
            "windows-949",
            "korean",
        ),
        ("cp949",),
    ),
    # RFC 1556: the -i / -e suffixes only describe the text direction.
    **dict.fromkeys(("iso-8859-8-i", "iso-8859-8-e", "csiso88598i", "logical"), ("iso-8859-8",)),
    **dict.fromkeys(("iso-8859-6-i", "iso-8859-6-e"), ("iso-8859-6",)),
    # Thai: TIS-620 and ISO-8859-11 as Windows extends them.
    **dict.fromkeys(
        ("windows-874", "x-windows-874", "dos-874", "tis-620", "iso-8859-11"), ("cp874",)
    ),
    # Japanese: Shift_JIS in mail is Microsoft's code page 932.
    **dict.fromkeys(
        (
            "shift_jis",
            "shift-jis",
            "x-sjis",
            "sjis",
            "ms_kanji",
            "csshiftjis",
            "windows-31j",
            "x-ms-cp932",
        ),
        ("cp932",),
    ),
    # ISO-2022-JP mail often carries JIS X 0212 / NEC extensions.
    # ISO-2022-JP mail often carries NEC and IBM extensions (circled
    # digits, roman numerals) that only Microsoft's reading (CP50220) knows.
    "iso-2022-jp": ("iso2022_jp", "iso2022_jp_ext", _ISO2022JP_AS_CP932, "iso2022_jp_2"),
    # Big5: the Hong Kong and Microsoft extensions are both common.
    **dict.fromkeys(("big5", "x-x-big5", "cn-big5", "csbig5", "big-5"), ("big5hkscs", "cp950")),
    # Windows-1252 is what "Latin-1" mail contains (curly quotes, euro sign);
    # true ISO-8859-1 C1 controls still decode via the second codec.
    **dict.fromkeys(
        ("iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "cp819", "ibm819"),
        ("cp1252", "latin-1"),
    ),
    **dict.fromkeys(("us-ascii", "ascii", "ansi_x3.4-1968", "646"), ("ascii",)),
    "utf8": ("utf-8",),
    "uft-8": ("utf-8",),
    "unicode-1-1-utf-8": ("utf-8",),
    "x-unicode20utf8": ("utf-8",),
}

# Codecs that are not charsets: they would interpret backslash escapes or
# domain-name syntax in the body instead of decoding text.
_NOT_CHARSETS = frozenset(
    {"raw-unicode-escape", "unicode-escape", "idna", "punycode", "undefined", "mbcs", "oem"}
)

# What we let charset_normalizer choose from when the label is missing or
# wrong: the customers' languages (Vietnamese, Persian) and the usual
# suspects of Western, Cyrillic and East Asian mail.
_GUESS_CANDIDATES = [
    "cp1258",
    "cp1256",
    "cp1252",
    "cp1251",
    "iso8859_15",
    "gb18030",
    "big5",
    "shift_jis",
    "euc_jp",
    "euc_kr",
    "koi8_r",
]

# charset_normalizer's cost grows with its input; it only sees this much.
_GUESS_SAMPLE_BYTES = 64 * 1024
# Its default "chaos" cut-off (0.2) rejects windows-1256 Persian, whose
# letters pe, che, zhe, gaf and keh sit in the 0x80-0x9F range that it
# scores as noise in some chunks.
_GUESS_MAX_CHAOS = 0.4

# Labels that say little when the bytes disagree: a UTF-8 or ASCII label on
# bytes that are neither is usually a client's default, not a statement.
_UTF8_NAMES = frozenset({"utf-8", "ascii"})
# Seven-bit charsets: 8-bit bytes prove the label wrong (a Japanese carrier
# labels EUC-JP text ISO-2022-JP), so guessing beats trusting it.
_SEVEN_BIT = ("iso2022", "ascii", "utf-7", "hz")
# Where 8-bit text mislabelled with a seven-bit charset usually comes from.
_EIGHT_BIT_SIBLINGS = {
    "iso2022_jp": ("cp932", "euc_jp"),
    "iso2022_kr": ("cp949",),
    "hz": ("gb18030",),
}

_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:+-]{1,40})""", re.I
)

# RFC 2047 encoded-word: =?charset[*lang]?B|Q?text?=
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def codecs_for(declared: str | None) -> tuple[str, ...]:
    """Return the Python codecs to try for a declared charset label, best first.

    Empty when the label is missing, unknown, or names something that is not
    a text charset.
    """
    if not declared:
        return ()
    label = declared.strip().strip("\"'").strip().lower()
    label = label.split("*", 1)[0]  # RFC 2231 section 5: charset*language
    if label in _ALIASES:
        return _ALIASES[label]
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return ()
    if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return ()
    return (info.name,)


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Decode ``data`` labelled ``declared`` to NFC text; never raises."""
    if not data:
        return ""
    candidates = codecs_for(declared)
    for codec in candidates:
        text = _strict(data, codec)
        if text is not None:
            return _finish(text)
    for codec in _siblings(candidates, data):
        text = _strict(data, codec)
        if text is not None:
            return _finish(text)
    # Pure ASCII data always "decodes" as UTF-8, even ISO-2022 escapes.
    if "utf-8" not in candidates and not (candidates and data.isascii()):
        text = _strict(data, "utf-8")
        if text is not None:
            return _finish(text)
    if candidates and _label_credible(candidates[0], data):
        return _finish(data.decode(candidates[0], errors="replace"))
    guessed = _guess_codec(data)
    if guessed is not None:
        log.debug("charset %r did not decode; guessed %s", declared, guessed)
        return _finish(data.decode(guessed, errors="replace"))
    return _finish(data.decode("latin-1", errors="replace"))


def _label_credible(codec: str, data: bytes) -> bool:
    """Whether a known label that failed strictly is still the best reading."""
    if codec in _UTF8_NAMES:
        return False
    return not (codec.startswith(_SEVEN_BIT) and not data.isascii())


def _siblings(candidates: tuple[str, ...], data: bytes) -> tuple[str, ...]:
    """8-bit codecs to try when a seven-bit label meets 8-bit bytes."""
    if not candidates or data.isascii():
        return ()
    for prefix, siblings in _EIGHT_BIT_SIBLINGS.items():
        if candidates[0].startswith(prefix):
            return siblings
    return ()


def _strict(data: bytes, codec: str) -> str | None:
    """Decode strictly, or None when the bytes are not in ``codec``."""
    if codec == _ISO2022JP_AS_CP932:
        return _iso2022jp_as_cp932(data)
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def _iso2022jp_as_cp932(data: bytes) -> str | None:
    """Decode ISO-2022-JP the way Microsoft does (CP50220), or None.

    Rewrites each JIS X 0208 pair as Shift_JIS (the standard row/cell
    arithmetic) and decodes with code page 932, which has the NEC and IBM
    extension rows that Python's ISO-2022-JP codecs reject.
    """
    out = bytearray()
    mode = b"(B"
    pos = 0
    while pos < len(data):
        byte = data[pos]
        if byte == 0x1B:
            mode = data[pos + 1 : pos + 3]
            if mode not in (b"$B", b"$@", b"(B", b"(J", b"(I"):
                return None
            pos += 3
        elif byte >= 0x80:
            return None
        elif mode in (b"$B", b"$@") and byte > 0x20 and pos + 1 < len(data):
            out += _jis_to_sjis(byte, data[pos + 1])
            pos += 2
        else:
            out.append(byte + 0x80 if mode == b"(I" and 0x21 <= byte <= 0x5F else byte)
            pos += 1
    try:
        return bytes(out).decode("cp932")
    except UnicodeDecodeError:
        return None


def _jis_to_sjis(first: int, second: int) -> bytes:
    """One JIS X 0208 character (two 7-bit bytes) as its Shift_JIS bytes."""
    lead = ((first + 1) >> 1) + (0x70 if first < 0x5F else 0xB0)
    if first & 1:
        trail = second + 0x1F
        trail += 1 if trail >= 0x7F else 0
    else:
        trail = second + 0x7E
    return bytes((lead & 0xFF, trail & 0xFF))


def _finish(text: str) -> str:
    """Drop a byte order mark and compose combining marks (NFC)."""
    return unicodedata.normalize("NFC", text.removeprefix("\ufeff"))


def _guess_codec(data: bytes) -> str | None:
    """Ask charset_normalizer for the likeliest candidate codec, on a sample."""
    sample = _guess_sample(data)
    try:
        best = charset_normalizer.from_bytes(
            sample, cp_isolation=_GUESS_CANDIDATES, threshold=_GUESS_MAX_CHAOS
        ).best()
    except (ValueError, LookupError, UnicodeError) as exc:
        log.debug("charset guess failed: %s", exc)
        return None
    if best is None:
        return None
    return str(best.encoding)


def _guess_sample(data: bytes) -> bytes:
    """At most 64 KiB of the lines that hold 8-bit bytes.

    ASCII lines say nothing about the charset and drown the signal of a
    few 8-bit lines in a long message; whole lines are kept so that no
    multi-byte character is cut in two.
    """
    picked: list[bytes] = []
    size = 0
    for line in data.splitlines(keepends=True):
        if line.isascii():
            continue
        if size + len(line) > _GUESS_SAMPLE_BYTES:
            if not picked:
                picked.append(line[:_GUESS_SAMPLE_BYTES])
            break
        picked.append(line)
        size += len(line)
    return b"".join(picked)


def html_meta_charset(data: bytes) -> str | None:
    """Return the charset an HTML document names in a <meta> tag, if any.

    Used only when the MIME part itself declares none (RFC 2045 wins when
    both are present).
    """
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def repair_surrogates(text: str, hint: str | None = None) -> str:
    """Decode the raw 8-bit bytes the email package kept as surrogate escapes.

    Headers may only carry 8-bit bytes as UTF-8 (RFC 6532), but other
    charsets are common; the parser keeps each such byte as a lone
    surrogate. UTF-8 is tried first, then ``hint`` (a charset the message
    declares elsewhere, which is what the sender's client used), then a
    guess: header strings are too short for guessing to be reliable.
    """
    if not _has_surrogates(text):
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return re.sub("[\ud800-\udfff]", "\ufffd", text)
    decoded = _strict(raw, "utf-8")
    if decoded is not None:
        return _finish(decoded)
    return decode_bytes(raw, hint)


def _has_surrogates(text: str) -> bool:
    """True when ``text`` holds lone surrogates (undecoded bytes)."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def decode_header_value(raw: str, hint: str | None = None) -> str:
    """Decode an unfolded-or-folded raw header value with RFC 2047 encoded words.

    Our own decoder, used when the email package's is unhappy: it maps
    charset aliases, tolerates broken padding, joins adjacent encoded words
    in the same charset before decoding (some mailers split a multi-byte
    character across two words), and repairs raw 8-bit bytes.
    """
    text = _FOLD.sub("", raw)
    pieces: list[tuple[str | None, bytes | str]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        # RFC 2047 section 6.2: white space between adjacent encoded words
        # is not displayed.
        if between and not (between.isspace() and pieces and pieces[-1][0] is not None):
            pieces.append((None, between))
        charset, kind, payload = match.groups()
        decoded = _decode_word(kind, payload)
        if decoded is None:
            pieces.append((None, match.group(0)))
        else:
            pieces.append((charset.lower(), decoded))
        pos = match.end()
    if text[pos:]:
        pieces.append((None, text[pos:]))
    return _join_pieces(pieces, hint)


def _decode_word(kind: str, payload: str) -> bytes | None:
    """Decode the payload of one encoded word (B or Q) to bytes."""
    try:
        data = payload.encode("ascii")
    except UnicodeEncodeError:
        return None
    if kind in "bB":
        data = data.rstrip(b"=")
        data += b"=" * (-len(data) % 4)
        try:
            return base64.b64decode(data)
        except (binascii.Error, ValueError):
            return None
    # RFC 2047 section 4.2: "_" is a space, "=XX" a byte.
    return _Q_ESCAPE.sub(lambda m: bytes.fromhex(m.group(1).decode()), data.replace(b"_", b" "))


def _join_pieces(pieces: list[tuple[str | None, bytes | str]], hint: str | None) -> str:
    """Join decoded pieces, merging runs of encoded words in one charset."""
    out: list[str] = []
    run_charset: str | None = None
    run: list[bytes] = []
    for charset, value in pieces:
        if charset is not None and isinstance(value, bytes):
            if run and charset != run_charset:
                out.append(decode_bytes(b"".join(run), run_charset))
                run = []
            run_charset = charset
            run.append(value)
            continue
        if run:
            out.append(decode_bytes(b"".join(run), run_charset))
            run = []
        out.append(repair_surrogates(str(value), hint))
    if run:
        out.append(decode_bytes(b"".join(run), run_charset))
    return "".join(out)
