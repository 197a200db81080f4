"""Agent commands: the short "#status resolved" lines at the top of an agent's reply.

Agents answer tickets from their own mail client and steer the ticket by
starting the reply with commands::

    #status resolved #priority low
    #assign me

    Hello Lan, the refund went out this morning.

The ticket step (:mod:`gateway.agent_mail`) calls :func:`parse_commands` on
every agent reply, after :func:`gateway.quotes.strip_reply` has removed the
quoted history and the signature, and before anything reaches the customer.
Commands never reach the customer: only :attr:`CommandBlock.body` may, and
not even that when the block holds ``#note``.

Where commands are. Leading blank lines are skipped; then every line whose
first visible character is "#" followed by a letter is a command line, and
blank lines between command lines are allowed. The block ends at the first
other line: "#10023 is still broken" ("#" and a digit) is body, and so is
every line after the block, "#" or not. One line may hold several commands
("#status resolved #priority low"): it is split before each "#" that follows
a space and precedes a letter.

The commands, case-insensitive:

* ``#status open|waiting|resolved|closed`` (also ``waiting_on_customer``);
  ``#resolve``, ``#close`` and ``#reopen`` are short for three of them;
* ``#priority low|medium|high|urgent``;
* ``#category NAME``, NAME lower-cased and possibly several words; when the
  caller passes the configured categories, NAME must be one of them;
* ``#assign EMAIL`` or ``#assign me``;
* ``#note``: the reply is an internal note. Text after it on the same line
  ("#note called her, she is fine") is the first line of the body, as the
  agent wrote it, and ends the block, so a "#tag" in that text stays text;
* ``#escalate``;
* ``#on-behalf EMAIL`` (also ``#onbehalf``, ``#on_behalf``): sent to the
  agent's personal address, opens a ticket for that customer.

Decisions worth knowing:

* All or nothing. Every command and every problem in the block is reported;
  a block with a non-empty :attr:`CommandBlock.errors` is one the agent has
  to fix, and the caller applies none of its commands (it sends the errors
  back instead). Half a block applied is worse than none: "#resolve #assgin
  bob@x" would resolve a ticket nobody owns.
* Two different values for the same command ("#resolve" and "#status open")
  are an error; the same command repeated is kept once.
* Agents' habits are accepted cheaply. Each command line is NFKC-normalized
  one character at a time, which turns the full-width "＃ｐｒｉｏｒｉｔｙ" of
  East Asian keyboards into ASCII and keeps track of where every character
  came from, so :attr:`Command.line` and the text after "#note" are quoted
  back exactly as written. Bidi marks and zero-width characters, which
  Persian keyboards and right-to-left mail clients insert, are dropped;
  no-break spaces count as spaces. A colon after the command
  ("#priority: high") and a period after the value are ignored.
* Values are compared after NFKC (which also composes Vietnamese typed as
  base letter plus combining marks), case folding, Persian yeh and kaf for
  their Arabic look-alikes, and ASCII digits for Persian and Arabic-Indic
  ones. Statuses and priorities may be written in Vietnamese or Persian:
  see :data:`_STATUS_WORDS` and :data:`_PRIORITY_WORDS`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Command", "CommandBlock", "parse_commands"]


@dataclass(frozen=True)
class Command:
    """One command from the top of an agent's reply."""

    name: str  # "status" | "priority" | "category" | "assign" | "note" | "escalate" | "on-behalf"
    value: str  # normalized value; "" for note and escalate
    line: str  # the command as the agent wrote it (stripped), for messages back to the agent


@dataclass(frozen=True)
class CommandBlock:
    """The commands of a reply, the rest of its text, and what was wrong."""

    commands: tuple[Command, ...]
    body: str  # the text without the command lines, leading/trailing blank lines removed
    errors: tuple[str, ...]  # one short English explanation per unknown or malformed command


# --- Value tables ----------------------------------------------------------------
# Keys are in comparison form (see _key): case-folded, "_" and "-" as spaces,
# Persian letters. Vietnamese and Persian words are the ones our agents use;
# keep the tables short, they are read by people deciding what a reply did.

_STATUS_WORDS: dict[str, str] = {
    "open": "open",
    "waiting": "waiting_on_customer",
    "waiting on customer": "waiting_on_customer",
    "resolved": "resolved",
    "closed": "closed",
    # Vietnamese
    "mở": "open",
    "chờ": "waiting_on_customer",
    "đã giải quyết": "resolved",
    "đóng": "closed",
    # Persian
    "باز": "open",
    "در انتظار": "waiting_on_customer",
    "حل شده": "resolved",
    "بسته": "closed",
}

_PRIORITY_WORDS: dict[str, str] = {
    "low": "low",
    "medium": "medium",
    "high": "high",
    "urgent": "urgent",
    # Vietnamese
    "thấp": "low",
    "trung bình": "medium",
    "cao": "high",
    "khẩn cấp": "urgent",
    # Persian ("پائین" is the older spelling of "پایین")
    "پایین": "low",
    "پائین": "low",
    "متوسط": "medium",
    "بالا": "high",
    "فوری": "urgent",
}

# Commands that take no value, and what they stand for.
_FIXED: dict[str, tuple[str, str]] = {
    "resolve": ("status", "resolved"),
    "close": ("status", "closed"),
    "reopen": ("status", "open"),
    "note": ("note", ""),
    "escalate": ("escalate", ""),
}

# Commands that take a value, by the names agents may write.
_VALUED: dict[str, str] = {
    "status": "status",
    "priority": "priority",
    "category": "category",
    "assign": "assign",
    "on-behalf": "on-behalf",
    "onbehalf": "on-behalf",
    "on_behalf": "on-behalf",
}

_KNOWN = (
    "#status, #resolve, #close, #reopen, #priority, #category, #assign, #note, #escalate, "
    "#on-behalf"
)

# --- Characters and patterns -------------------------------------------------------

# Dropped wherever they are: bidi marks and embeddings (U+200E, U+200F,
# U+202A-U+202E, U+2066-U+2069, and the Arabic letter mark U+061C), which
# Persian keyboards and RTL mail clients put around lines and words; zero-width
# space and joiner, word joiner, BOM and soft hyphen. The zero-width non-joiner
# of Persian compounds ("حل‌شده") becomes a space.
_INVISIBLE = (
    "\u061c\u200b\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff\u00ad"
)
_CLEAN = str.maketrans({**dict.fromkeys(map(ord, _INVISIBLE)), 0x200C: " "})
# Spaces and invisible characters at the start of a line, or making up all of it.
_LEADING = re.compile(rf"[\s{_INVISIBLE}\u200c]*")
_BLANK = re.compile(rf"[\s{_INVISIBLE}\u200c]*\Z")
# Enough of a line to see "#" and a letter, however they were typed.
_HEAD = 8

# "#" and a letter: the start of a command, at the start of a line or after a space.
_COMMAND_START = re.compile(r"#[^\W\d_]")
# Where a line holding several commands is split: the spaces before a command.
# The look-behind makes a run of spaces one match attempt instead of one per
# space, which keeps a long run linear.
_SPLIT = re.compile(r"(?<!\s)\s+(?=#[^\W\d_])")
_SEGMENT = re.compile(r"#(?P<name>[^\W\d_][\w-]*)\s*:?\s*(?P<value>.*)", re.DOTALL)

# An address as agents type it: no spaces or brackets, one "@", a dotted domain.
_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"]+@(?:[^\s@<>()\[\],;:\".]+\.)+[^\s@<>()\[\],;:\".]+")

# Persian keyboards type Arabic yeh and kaf as often as the Persian letters.
_PERSIAN_LETTERS = str.maketrans({"\u064a": "\u06cc", "\u0643": "\u06a9"})


class _Rejected(Exception):
    """A command's value is missing or wrong; the message says why."""


# --- Normalization ---------------------------------------------------------------


def _visible_start(line: str) -> int:
    """The index of the first visible character of ``line``."""
    leading = _LEADING.match(line)
    return leading.end() if leading else 0


def _is_blank(line: str) -> bool:
    """True when ``line`` holds nothing visible."""
    return _BLANK.match(line) is not None


def _normalized(text: str) -> tuple[str, Sequence[int]]:
    """``text`` NFKC-normalized character by character, without invisible marks.

    Also returns, for every character of the result, the index in ``text`` of
    the character it came from, so that slices can be quoted as written.
    """
    if text.isascii():
        return text, range(len(text))
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for out in unicodedata.normalize("NFKC", char).translate(_CLEAN):
            chars.append(out)
            origin.append(index)
    return "".join(chars), origin


def _ascii_digits(text: str) -> str:
    """``text`` with Persian, Arabic-Indic and other decimal digits as ASCII digits."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def _tidy(value: str) -> str:
    """A value as written, composed, one space between words, without a final period."""
    value = unicodedata.normalize("NFKC", value).translate(_CLEAN)
    return " ".join(_ascii_digits(value).rstrip(". ").split())


def _key(value: str) -> str:
    """``value`` in the comparison form of the word tables and categories."""
    folded = _tidy(value).translate(_PERSIAN_LETTERS).casefold()
    return " ".join(folded.replace("_", " ").replace("-", " ").split())


def _is_command_line(line: str) -> bool:
    """True when the first visible characters of ``line`` are "#" and a letter."""
    start = _visible_start(line)
    head, _ = _normalized(line[start : start + _HEAD])
    return _COMMAND_START.match(head) is not None


# --- Values ------------------------------------------------------------------------


def _status(value: str) -> str:
    """The status ``value`` names."""
    status = _STATUS_WORDS.get(_key(value))
    if status is None:
        raise _Rejected("status must be one of open, waiting, resolved, closed")
    return status


def _priority(value: str) -> str:
    """The priority ``value`` names."""
    priority = _PRIORITY_WORDS.get(_key(value))
    if priority is None:
        raise _Rejected("priority must be one of low, medium, high, urgent")
    return priority


def _category(value: str, categories: Collection[str]) -> str:
    """The category ``value`` names, checked against ``categories`` when there are some.

    A configured category is returned as configured (lower-cased), so that
    "Feature-Request" finds "feature request".
    """
    name = _tidy(value).lower()
    if not name:
        raise _Rejected("category needs a name")
    if not categories:
        return name
    configured = {_key(c): c.lower() for c in categories}
    if _key(name) not in configured:
        known = ", ".join(sorted(categories, key=str.casefold))
        raise _Rejected(f"unknown category (known: {known})")
    return configured[_key(name)]


def _address(value: str) -> str | None:
    """``value`` as a lower-cased email address, or None when it is not one."""
    address = _tidy(value).lower()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    return address if _EMAIL.fullmatch(address) else None


def _assignee(value: str) -> str:
    """The address ``value`` names, or "me"."""
    if _tidy(value).lower() == "me":
        return "me"
    address = _address(value)
    if address is None:
        raise _Rejected('assign takes an email address or "me"')
    return address


def _customer(value: str) -> str:
    """The customer address of an on-behalf command."""
    address = _address(value)
    if address is None:
        raise _Rejected("on-behalf takes an email address")
    return address


# The valued commands but "#category", which also needs the configured names.
_PARSERS: dict[str, Callable[[str], str]] = {
    "status": _status,
    "priority": _priority,
    "assign": _assignee,
    "on-behalf": _customer,
}


# --- Lines -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    """One command line: as written, normalized, and where each normalized character came from."""

    source: str
    text: str
    origin: Sequence[int]

    @classmethod
    def of(cls, line: str) -> _Line:
        """The command line ``line`` without its leading spaces and marks."""
        source = line[_visible_start(line) :]
        text, origin = _normalized(source)
        return cls(source, text, origin)

    def written(self, begin: int, end: int) -> str:
        """The text the agent wrote for ``self.text[begin:end]``, without trailing spaces.

        ``begin`` is always at a "#"; invisible marks have no normalized
        characters, so they never end up at either edge of the result.
        """
        end = begin + len(self.text[begin:end].rstrip())
        return self.source[self.origin[begin] : self.origin[end - 1] + 1]

    def rest(self, begin: int) -> str:
        """The text the agent wrote from ``self.text[begin]`` to the end of the line."""
        return self.source[self.origin[begin] :]

    def segments(self) -> Iterator[tuple[int, int]]:
        """The spans of ``self.text`` holding one command each."""
        begin = 0
        for gap in _SPLIT.finditer(self.text):
            yield begin, gap.start()
            begin = gap.end()
        yield begin, len(self.text.rstrip())


def _parse_line(line: str, categories: Collection[str]) -> tuple[list[Command | str], str | None]:
    """The commands and errors of one command line, and the text after a "#note" on it."""
    parsed = _Line.of(line)
    results: list[Command | str] = []
    for begin, end in parsed.segments():
        match = _SEGMENT.fullmatch(parsed.text, begin, end)
        assert match is not None, "every segment starts with '#' and a letter"
        name = match["name"].casefold()
        value = match["value"]
        written = parsed.written(begin, end)
        if name == "note" and value.rstrip(".: "):
            note = parsed.written(begin, match.start("value"))
            results.append(Command("note", "", note))
            return results, parsed.rest(match.start("value"))
        results.append(_command(name, value, written, categories))
    return results, None


def _command(name: str, value: str, written: str, categories: Collection[str]) -> Command | str:
    """The command ``name`` with ``value``, or an error naming what the agent wrote."""
    if name in _FIXED:
        if _tidy(value):
            return f"{written}: {name} takes no value"
        return Command(*_FIXED[name], written)
    if name not in _VALUED:
        return f"{written}: unknown command (known: {_KNOWN})"
    canonical = _VALUED[name]
    try:
        if canonical == "category":
            return Command(canonical, _category(value, categories), written)
        return Command(canonical, _PARSERS[canonical](value), written)
    except _Rejected as problem:
        return f"{written}: {problem}"


def _collect(results: list[Command | str]) -> tuple[tuple[Command, ...], tuple[str, ...]]:
    """Commands and errors apart; repeats dropped and conflicting values reported."""
    commands: dict[str, Command] = {}
    errors: list[str] = []
    for result in results:
        if isinstance(result, str):
            errors.append(result)
            continue
        earlier = commands.setdefault(result.name, result)
        if earlier.value != result.value:
            errors.append(f"{result.line}: conflicts with {earlier.line}")
    return tuple(commands.values()), tuple(errors)


def _trimmed(lines: list[str]) -> str:
    """``lines`` joined, without the blank lines at either end."""
    start, end = 0, len(lines)
    while start < end and _is_blank(lines[start]):
        start += 1
    while end > start and _is_blank(lines[end - 1]):
        end -= 1
    return "\n".join(lines[start:end])


def parse_commands(text: str, categories: Collection[str] = ()) -> CommandBlock:
    """Split an agent's reply into the commands at its top and the body below them.

    ``text`` is the reply without quoted history or signature, with "\\n" line
    endings. ``categories``, when not empty, are the category names
    ``#category`` accepts (compared case-insensitively). Never raises: what is
    wrong is in :attr:`CommandBlock.errors`, and when there is anything there
    the caller applies none of the commands.
    """
    lines = text.split("\n")
    results: list[Command | str] = []
    note_text: str | None = None
    index = 0
    while index < len(lines) and note_text is None:
        line = lines[index]
        if not _is_blank(line):
            if not _is_command_line(line):
                break
            found, note_text = _parse_line(line, categories)
            results.extend(found)
        index += 1
    body = lines[index:] if note_text is None else [note_text, *lines[index:]]
    commands, errors = _collect(results)
    return CommandBlock(commands, _trimmed(body), errors)
