"""Which language to write to a customer in.

Decided once, when a ticket is created, from the customer's first message:
its Content-Language header when we have templates for it, else the text
itself (Persian script, Vietnamese diacritics), else the mailbox's default.
The result is stored on the ticket and used for every mail to the customer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection

# Letters only Vietnamese writes among Latin-script languages: đ, ơ, ư, ă and
# the precomposed tone-marked vowels of Latin Extended Additional.
_VIETNAMESE = frozenset("đĐơƠưƯăĂ")
_VIETNAMESE_BLOCK = (0x1EA0, 0x1EF9)
# Arabic script block; Persian adds پ چ ژ گ and writes ی/ک instead of ي/ك.
_ARABIC_BLOCK = (0x0600, 0x06FF)
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
    """ "fa" or "vi" when the text clearly is, else None."""
    text = unicodedata.normalize("NFC", text)
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    arabic = sum(_in(c, _ARABIC_BLOCK) for c in letters)
    if arabic / len(letters) > 0.3:
        return "fa"
    vietnamese = sum(c in _VIETNAMESE or _in(c, _VIETNAMESE_BLOCK) for c in letters)
    if vietnamese >= 2 and vietnamese / len(letters) > 0.02:
        return "vi"
    return None


def _in(char: str, block: tuple[int, int]) -> bool:
    return block[0] <= ord(char) <= block[1]


def direction(language: str) -> str:
    """ "rtl" for right-to-left languages, else "ltr"."""
    return "rtl" if language.split("-")[0] in {"fa", "ar", "he", "ur", "ps"} else "ltr"
