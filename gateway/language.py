"""Which language to write to a customer in.

Decided once, when a ticket is created, from the customer's first message:
its Content-Language header when we have templates for it, else the text
itself (Persian script, Vietnamese diacritics), else the mailbox's default.
The result is stored on the ticket and used for every mail to the customer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

# Letters only Vietnamese writes among Latin-script languages: đ, ơ, ư, ă and
# the precomposed tone-marked vowels of Latin Extended Additional (U+1EA0-U+1EF9).
_VIETNAMESE_LETTER = re.compile(r"[đĐơƠưƯăĂ\u1ea0-\u1ef9]")
# Letters of the Arabic script block; Persian adds پ چ ژ گ and writes ی/ک
# instead of ي/ك. (Letters only: the block also holds digits and marks.)
_ARABIC = re.compile(r"[\u0600-\u06ff](?<=[^\W\d_])")
_LETTER = re.compile(r"[^\W\d_]")
_SAMPLE = 4000  # characters looked at: enough to decide, cheap on long mail


def detect(
    subject: str, text: str, content_language: str, default: str, available: Collection[str]
) -> str:
    """The language to answer in: one of ``available``, or ``default``."""
    declared = content_language.split(",")[0].strip().split("-")[0].lower()
    if declared in available:
        return declared
    guessed = guess(f"{subject}\n{text[:_SAMPLE]}")
    if guessed is not None and guessed in available:
        return guessed
    return default


def guess(text: str) -> str | None:
    """ "fa" or "vi" when the text clearly is, else None.

    Counted with regular expressions rather than a loop over characters:
    this runs on every new ticket, and the loop was a tenth of the time the
    daemon spent processing a message (profiled under load).
    """
    text = unicodedata.normalize("NFC", text)
    letters = len(_LETTER.findall(text))
    if not letters:
        return None
    if len(_ARABIC.findall(text)) / letters > 0.3:
        return "fa"
    vietnamese = len(_VIETNAMESE_LETTER.findall(text))
    if vietnamese >= 2 and vietnamese / letters > 0.02:
        return "vi"
    return None


def direction(language: str) -> str:
    """ "rtl" for right-to-left languages, else "ltr"."""
    return "rtl" if language.split("-")[0] in {"fa", "ar", "he", "ur", "ps"} else "ltr"
