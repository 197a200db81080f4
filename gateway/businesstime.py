"""Business-hours arithmetic for the SLA clocks of a support mailbox.

A mailbox promises answers within so many hours *of business time*: the
clock stops at night, at weekends and on holidays. ``Hours`` holds a
mailbox's opening hours (a local week plus holiday dates in an IANA time
zone) and answers the scheduler's questions: is it open now, when does it
open next, when is a ticket due, how much business time has passed.

Every datetime in and out is naive UTC, as the database stores it; the zone
is used only inside. Opening hours are local wall-clock spans, turned into
UTC one local date at a time, so a span that contains a DST change lasts
that much less or more in real time: "00:00-24:00", local midnight to the
next local midnight, is 23 or 25 hours in Berlin on the change days. A wall
time in a spring-forward gap means the first instant after the gap; an
ambiguous one in a fall-back overlap means its first occurrence (fold=0).

A holiday (a local date) removes the spans that *start* on that date: an
overnight span that began the evening before still runs into the holiday
morning, and the holiday's own evening shift does not happen.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Span = tuple[int, int]
Period = tuple[dt.datetime, dt.datetime]

DAY = 1440  # minutes in a wall-clock day
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALWAYS: tuple[tuple[Span, ...], ...] = (((0, DAY),),) * 7
# How long a search for the next open time may run dry before we call the
# hours closed for good: callers get a ValueError instead of an endless loop.
HORIZON_DAYS = 3 * 366

_ONE_DAY = dt.timedelta(days=1)
_TICK = dt.timedelta(microseconds=1)
_END = dt.date.max - _ONE_DAY  # the calendar ends; stop walking before OverflowError
_NAMES = {name: i for i, name in enumerate(WEEKDAYS)} | {n[:3]: i for i, n in enumerate(WEEKDAYS)}
_SPAN = re.compile(r"(\d{1,2}):(\d{2})\s*[-–]\s*(\d{1,2}):(\d{2})")


def parse_day(text: str) -> tuple[Span, ...]:
    """One day's opening hours, e.g. "08:00-12:00, 13:00-17:30", as spans.

    "off" or "" is a closed day; "22:00-06:00" is an overnight span that runs
    into the next day; "00:00-24:00" is the whole day. Spans come back in
    order of their start; overlapping spans are refused, since they are
    almost always a typing mistake.
    """
    text = text.strip()
    if text.lower() in ("", "off"):
        return ()
    spans = sorted(_parse_span(piece.strip(), text) for piece in text.split(","))
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        if s2 < (e1 if e1 > s1 else e1 + DAY):
            raise ValueError(f"{_show((s1, e1))!r} and {_show((s2, e2))!r} overlap")
    return tuple(spans)


def _parse_span(piece: str, text: str) -> Span:
    """One "HH:MM-HH:MM" piece; "22:00-00:00" is read as "22:00-24:00"."""
    if not piece:
        raise ValueError(f"empty span in {text!r}")
    match = _SPAN.fullmatch(piece)
    if match is None:
        raise ValueError(f"{piece!r} is not a span: expected HH:MM-HH:MM, such as 08:00-17:30")
    h1, m1, h2, m2 = (int(group) for group in match.groups())
    for hour, minute in ((h1, m1), (h2, m2)):
        if hour > 24 or minute > 59 or (hour == 24 and minute > 0):
            raise ValueError(f"{piece!r}: {hour:02}:{minute:02} is not a time of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == DAY:
        raise ValueError(f"{piece!r}: a span cannot start at 24:00")
    if start == end:
        raise ValueError(f"{piece!r}: a span must not start and end at the same time")
    return start, (DAY if end == 0 else end)


def _show(span: Span) -> str:
    """A span as the user wrote it, for messages."""
    return "-".join(f"{m // 60:02}:{m % 60:02}" for m in span)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name, loaded once; ValueError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown timezone {name!r}: expected an IANA name such as Europe/Berlin"
        ) from None


@functools.lru_cache(maxsize=64)
def _covers_all(week: tuple[tuple[Span, ...], ...]) -> bool:
    """Whether a week leaves no wall-clock minute closed (overnight spills count)."""
    for index, spans in enumerate(week):
        spill = [(0, e) for s, e in week[index - 1] if e < s]
        reach = 0
        for start, end in sorted([(s, e if e > s else DAY) for s, e in spans] + spill):
            if start > reach:
                return False
            reach = max(reach, end)
        if reach < DAY:
            return False
    return True


def _naive(when: dt.datetime) -> dt.datetime:
    """Refuse aware datetimes: mixing them in would shift SLA clocks silently."""
    if when.tzinfo is not None:
        raise ValueError(f"expected a naive UTC datetime, got {when.isoformat()}")
    return when


@dataclass(frozen=True)
class Hours:
    """A mailbox's opening hours: a local week, holidays, and the time zone."""

    timezone: str = "UTC"
    week: tuple[tuple[Span, ...], ...] = ALWAYS  # Monday..Sunday
    holidays: frozenset[dt.date] = frozenset()

    def __post_init__(self) -> None:
        """Check the shape here too, so that directly built Hours are sound."""
        _zone(self.timezone)
        if len(self.week) != 7:
            raise ValueError(f"a week has 7 days, Monday to Sunday; got {len(self.week)}")
        if not any(self.week):
            raise ValueError("the opening hours have no open time on any day of the week")

    @classmethod
    def build(cls, timezone: str, week: Mapping[str, str], holidays: Iterable[str]) -> Hours:
        """Hours from configuration text; days left out are off (all open if none given)."""
        days: list[tuple[Span, ...] | None] = [None] * 7
        for name, text in week.items():
            index = _NAMES.get(name.strip().lower())
            if index is None:
                raise ValueError(f"unknown weekday {name!r}: use monday..sunday or mon..sun")
            if days[index] is not None:
                raise ValueError(f"{WEEKDAYS[index]} is given twice")
            try:
                days[index] = parse_day(text)
            except ValueError as exc:
                raise ValueError(f"{WEEKDAYS[index]}: {exc}") from None
        spans = tuple(day or () for day in days) if week else ALWAYS
        return cls(timezone, spans, frozenset(_parse_date(text) for text in holidays))

    @property
    def always_open(self) -> bool:
        """Open around the clock: no holidays and no closed minute in the week."""
        return not self.holidays and _covers_all(self.week)

    def is_open(self, when: dt.datetime) -> bool:
        """Whether `when` lies inside an open period (its closing instant does not)."""
        return next(self.periods(when, when + _TICK), None) is not None

    def next_open(self, when: dt.datetime) -> dt.datetime:
        """`when` itself if open, else the start of the next open period."""
        if self.always_open:
            return _naive(when)
        for start, end in self._pieces(self._local_date(when) - _ONE_DAY, None):
            if end > when:
                return max(start, when)
        raise ValueError(f"no open business hours within 3 years after {when.isoformat()}")

    def add(self, start: dt.datetime, seconds: float) -> dt.datetime:
        """The instant at which `seconds` of business time have passed since `start`.

        The answer lies inside an open period or is exactly its closing
        instant, so a ticket due "at closing" is due then, not next morning.
        """
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"business seconds must be finite and >= 0, got {seconds}")
        if seconds == 0 or self.always_open:
            return _naive(start) + dt.timedelta(seconds=seconds)
        left = dt.timedelta(seconds=seconds)
        for begin, end in self._pieces(self._local_date(start) - _ONE_DAY, None):
            if end <= start:
                continue
            begin = max(begin, start)
            if left <= end - begin:
                return begin + left
            left -= end - begin
        raise ValueError(f"no open business hours within 3 years after {start.isoformat()}")

    def elapsed(self, start: dt.datetime, end: dt.datetime) -> float:
        """Business seconds in [start, end); 0.0 when end <= start."""
        total = sum((b - a for a, b in self.periods(start, end)), dt.timedelta())
        return total.total_seconds()

    def periods(self, start: dt.datetime, end: dt.datetime) -> Iterator[Period]:
        """The open periods overlapping [start, end), clipped to it, merged where adjacent."""
        if _naive(end) <= _naive(start):
            return
        if self.always_open:
            yield start, end
            return
        last: Period | None = None
        for begin, stop in self._pieces(self._local_date(start) - _ONE_DAY, self._local_date(end)):
            if stop <= start:
                continue
            if begin >= end:
                break
            begin, stop = max(begin, start), min(stop, end)
            if last is not None and begin == last[1]:
                last = (last[0], stop)
                continue
            if last is not None:
                yield last
            last = (begin, stop)
        if last is not None:
            yield last

    def _pieces(self, first: dt.date, last: dt.date | None) -> Iterator[Period]:
        """Open periods in UTC order from local date `first`, without overlaps.

        An overnight span may overlap the next day's first span; the part
        already covered is cut off. Runs to local date `last` inclusive, or,
        when there is none, until HORIZON_DAYS days in a row bring no open time.
        """
        covered = dt.datetime.min
        day, dry, stop = first, 0, min(last or _END, _END)
        while day <= stop and dry <= HORIZON_DAYS:
            periods = self._day_periods(day)
            dry = 0 if periods or last else dry + 1  # a walk with an end never runs dry
            for begin, end in periods:
                begin = max(begin, covered)
                if end > begin:
                    yield begin, end
                    covered = end
            day += _ONE_DAY

    def _day_periods(self, day: dt.date) -> tuple[Period, ...]:
        """The UTC periods of the spans that start on local date `day`."""
        if day in self.holidays:
            return ()
        return _day_utc(self.timezone, self.week[day.weekday()], day)

    def _local_date(self, when: dt.datetime) -> dt.date:
        """The local date of a naive UTC instant."""
        return _naive(when).replace(tzinfo=dt.UTC).astimezone(_zone(self.timezone)).date()


# The scheduler asks about the same few weeks over and over; converting a day
# costs a few microseconds per span, a cache hit far less.
@functools.lru_cache(maxsize=8192)
def _day_utc(timezone: str, spans: tuple[Span, ...], day: dt.date) -> tuple[Period, ...]:
    """The UTC periods of one local date's spans, in order."""
    zone = _zone(timezone)
    midnight = dt.datetime.combine(day, dt.time())
    periods = []
    for start, end in sorted(spans):
        stop = end if end > start else end + DAY
        begin = _to_utc(zone, midnight + dt.timedelta(minutes=start))
        finish = _to_utc(zone, midnight + dt.timedelta(minutes=stop))
        if finish > begin:  # a span wholly inside a DST gap is empty
            periods.append((begin, finish))
    return tuple(periods)


def _to_utc(zone: ZoneInfo, wall: dt.datetime) -> dt.datetime:
    """Naive UTC for a local wall time: fold=0 if ambiguous, the gap's end if missing."""
    utc = wall.replace(tzinfo=zone).astimezone(dt.UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return utc.replace(tzinfo=None)
    # In a gap fold=0 reads the wall time with the offset from before the
    # change and fold=1 with the one after: the change lies between the two.
    early = wall.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
    return _change_instant(zone, early, utc).replace(tzinfo=None)


def _change_instant(zone: ZoneInfo, early: dt.datetime, late: dt.datetime) -> dt.datetime:
    """The first whole second in (early, late] on late's UTC offset (binary search)."""
    offset = late.astimezone(zone).utcoffset()
    low, high = 0, int((late - early).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if (early + dt.timedelta(seconds=middle)).astimezone(zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return early + dt.timedelta(seconds=high)


def _parse_date(text: str) -> dt.date:
    """A holiday as an ISO date, "2026-04-30"."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"bad holiday date {text!r}: expected YYYY-MM-DD, such as 2026-04-30"
        ) from None
