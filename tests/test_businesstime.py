"""Business-hours arithmetic: parsing, hand-checked SLA examples, DST days, properties.

The hand-checked examples state local wall times and the answer a person
would give with a calendar; the properties check that add, elapsed,
next_open and periods agree with each other and with a plain wall-clock
reading of the week, across zones with odd DST rules.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.businesstime import ALWAYS, WEEKDAYS, Hours, Span, parse_day

H = 3600.0
TICK = dt.timedelta(microseconds=1)
WORKWEEK = dict.fromkeys(WEEKDAYS[:5], "07:00-22:00") | {"sat": "08:00-12:00", "sun": "off"}


def local(zone: str, *wall: int) -> dt.datetime:
    """Naive UTC for an unambiguous local wall time, the way a test states it."""
    aware = dt.datetime(*wall).replace(tzinfo=ZoneInfo(zone))
    return aware.astimezone(dt.UTC).replace(tzinfo=None)


def utc(*wall: int) -> dt.datetime:
    return dt.datetime(*wall)


# --- parse_day ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("07:00-22:00", ((420, 1320),)),
        ("off", ()),
        (" OFF ", ()),
        ("", ()),
        ("08:00-12:00, 13:00-17:30", ((480, 720), (780, 1050))),
        ("13:00-17:30,08:00-12:00", ((480, 720), (780, 1050))),
        ("08:00-12:00, 12:00-13:00", ((480, 720), (720, 780))),
        ("22:00-06:00", ((1320, 360),)),
        ("22:00-00:00", ((1320, 1440),)),
        ("00:00-24:00", ((0, 1440),)),
        ("8:00 - 9:30", ((480, 570),)),
        ("08:00–17:00", ((480, 1020),)),
        ("06:00-05:00, 05:00-06:00", ((300, 360), (360, 300))),
    ],
)
def test_parse_day_accepts(text: str, spans: tuple[Span, ...]) -> None:
    assert parse_day(text) == spans


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7-22", r"'7-22' is not a span: expected HH:MM-HH:MM"),
        ("closed", r"'closed' is not a span"),
        ("08:00-12:00, noon-13:00", r"'noon-13:00' is not a span"),
        ("25:00-26:00", r"'25:00-26:00': 25:00 is not a time of day"),
        ("08:60-09:00", r"'08:60-09:00': 08:60 is not a time of day"),
        ("20:00-24:30", r"24:30 is not a time of day"),
        ("24:00-06:00", r"'24:00-06:00': a span cannot start at 24:00"),
        ("08:00-08:00", r"'08:00-08:00': a span must not start and end at the same time"),
        ("00:00-00:00", r"must not start and end at the same time"),
        ("08:00-12:00, 11:00-13:00", r"'08:00-12:00' and '11:00-13:00' overlap"),
        ("22:00-06:00, 23:00-23:30", r"'22:00-06:00' and '23:00-23:30' overlap"),
        ("08:00-12:00,,13:00-14:00", r"empty span in '08:00-12:00,,13:00-14:00'"),
    ],
)
def test_parse_day_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_day(text)


# --- Hours.build ---------------------------------------------------------------


def test_build_reads_names_and_defaults() -> None:
    hours = Hours.build("Asia/Ho_Chi_Minh", {"Mon": "09:00-17:00", "FRIDAY": "off"}, ["2026-04-30"])
    assert hours.week == (((540, 1020),),) + ((),) * 6
    assert hours.holidays == frozenset({dt.date(2026, 4, 30)})
    assert Hours.build("UTC", {}, []).week == ALWAYS
    assert Hours() == Hours.build("UTC", {}, [])


@pytest.mark.parametrize(
    ("timezone", "week", "holidays", "message"),
    [
        ("Mars/Olympus", {}, [], r"unknown timezone 'Mars/Olympus'"),
        ("../etc/passwd", {}, [], r"unknown timezone"),
        ("", {}, [], r"unknown timezone ''"),
        ("UTC", {"funday": "09:00-17:00"}, [], r"unknown weekday 'funday'"),
        ("UTC", {"mon": "9-5"}, [], r"^monday: '9-5' is not a span"),
        ("UTC", {"tue": "08:00-12:00, 11:00-13:00"}, [], r"^tuesday: .* overlap"),
        ("UTC", {"mon": "09:00-17:00", "Monday": "off"}, [], r"monday is given twice"),
        ("UTC", {"mon": "09:00-17:00"}, ["2026-02-30"], r"bad holiday date '2026-02-30'"),
        ("UTC", {"mon": "09:00-17:00"}, ["30.04.2026"], r"bad holiday date '30.04.2026'"),
        ("UTC", dict.fromkeys(WEEKDAYS, "off"), [], r"no open time on any day"),
        ("UTC", {"sun": ""}, [], r"no open time on any day"),
    ],
)
def test_build_refuses(
    timezone: str, week: dict[str, str], holidays: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Hours.build(timezone, week, holidays)


def test_direct_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="a week has 7 days"):
        Hours(week=ALWAYS[:5])
    with pytest.raises(ValueError, match="unknown timezone"):
        Hours(timezone="Nowhere/City")


def test_always_open() -> None:
    assert Hours().always_open
    halves = Hours.build("Europe/Berlin", dict.fromkeys(WEEKDAYS, "00:00-12:00, 12:00-24:00"), [])
    assert halves.always_open
    wrapped = Hours.build("UTC", dict.fromkeys(WEEKDAYS, "06:00-05:00, 05:00-06:00"), [])
    assert wrapped.always_open
    assert not Hours.build("UTC", {}, ["2026-01-01"]).always_open
    assert not Hours.build("UTC", dict.fromkeys(WEEKDAYS[:6], "00:00-24:00"), []).always_open
    assert not Hours.build("UTC", dict.fromkeys(WEEKDAYS, "00:00-23:59"), []).always_open


def test_always_open_is_plain_arithmetic() -> None:
    hours = Hours(timezone="Europe/Berlin")
    start = utc(2026, 3, 28, 12)
    assert hours.add(start, 48 * H) == utc(2026, 3, 30, 12)
    assert hours.elapsed(start, utc(2026, 3, 30, 12)) == 48 * H
    assert hours.is_open(start)
    assert hours.next_open(start) == start


def test_refuses_aware_datetimes_and_negative_seconds() -> None:
    hours = Hours.build("UTC", WORKWEEK, [])
    with pytest.raises(ValueError, match="naive UTC"):
        hours.is_open(dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="finite and >= 0"):
        hours.add(utc(2026, 1, 5), -1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        hours.add(utc(2026, 1, 5), float("nan"))


# --- hand-checked examples ---------------------------------------------------------

HCM = "Asia/Ho_Chi_Minh"


def test_ho_chi_minh_friday_evening_is_due_saturday_morning() -> None:
    hours = Hours.build(HCM, WORKWEEK, [])
    # Friday 2026-03-13 21:00: one hour left on Friday, one on Saturday from 08:00.
    assert hours.add(local(HCM, 2026, 3, 13, 21), 2 * H) == local(HCM, 2026, 3, 14, 9)


def test_ho_chi_minh_saturday_noon_skips_sunday() -> None:
    hours = Hours.build(HCM, WORKWEEK, [])
    # Saturday 11:30: half an hour until 12:00, Sunday off, 5.5 hours from Monday 07:00.
    due = hours.add(local(HCM, 2026, 3, 14, 11, 30), 6 * H)
    assert due == local(HCM, 2026, 3, 16, 12, 30)
    assert hours.elapsed(local(HCM, 2026, 3, 14, 11, 30), due) == 6 * H


def test_ho_chi_minh_closed_instants_and_closing_time() -> None:
    hours = Hours.build(HCM, WORKWEEK, [])
    sunday = local(HCM, 2026, 3, 15, 10)
    assert not hours.is_open(sunday)
    assert hours.next_open(sunday) == local(HCM, 2026, 3, 16, 7)
    # Exactly a day's worth from opening is due at closing, not next morning.
    assert hours.add(local(HCM, 2026, 3, 16, 7), 15 * H) == local(HCM, 2026, 3, 16, 22)
    assert not hours.is_open(local(HCM, 2026, 3, 16, 22))
    assert hours.is_open(local(HCM, 2026, 3, 16, 22) - TICK)
    assert hours.add(sunday, 0) == sunday


TEHRAN = "Asia/Tehran"
IRAN_WEEK = dict.fromkeys(("sat", "sun", "mon", "tue", "wed"), "08:00-17:00") | {
    "thu": "08:00-13:00",
    "fri": "off",
}


def test_tehran_week_runs_saturday_to_thursday() -> None:
    hours = Hours.build(TEHRAN, IRAN_WEEK, [])
    # Wednesday 2026-03-18 16:00: one hour on Wednesday, three on Thursday morning.
    assert hours.add(local(TEHRAN, 2026, 3, 18, 16), 4 * H) == local(TEHRAN, 2026, 3, 19, 11)
    # Thursday 12:00: one hour to 13:00, Friday off, two on Saturday.
    assert hours.add(local(TEHRAN, 2026, 3, 19, 12), 3 * H) == local(TEHRAN, 2026, 3, 21, 10)


def test_tehran_holidays_are_skipped() -> None:
    hours = Hours.build(TEHRAN, IRAN_WEEK, ["2026-03-21", "2026-03-22"])
    start = local(TEHRAN, 2026, 3, 19, 12)
    due = hours.add(start, 3 * H)
    assert due == local(TEHRAN, 2026, 3, 23, 10)  # Saturday and Sunday are holidays
    assert hours.elapsed(start, due) == 3 * H
    assert not hours.is_open(local(TEHRAN, 2026, 3, 21, 10))


def test_overnight_hours() -> None:
    hours = Hours.build("UTC", dict.fromkeys(WEEKDAYS, "22:00-06:00"), [])
    monday = utc(2026, 3, 16)
    assert hours.is_open(monday + dt.timedelta(hours=3))
    assert not hours.is_open(monday + dt.timedelta(hours=12))
    assert hours.add(monday + dt.timedelta(hours=5), 2 * H) == utc(2026, 3, 16, 23)
    assert hours.elapsed(monday, monday + dt.timedelta(days=1)) == 8 * H
    assert hours.next_open(utc(2026, 3, 16, 6)) == utc(2026, 3, 16, 22)


def test_holiday_removes_the_spans_that_start_on_it() -> None:
    hours = Hours.build("UTC", dict.fromkeys(WEEKDAYS, "22:00-06:00"), ["2026-03-16"])
    # Sunday's night shift runs into the holiday morning; Monday's own does not happen.
    assert hours.is_open(utc(2026, 3, 16, 3))
    assert not hours.is_open(utc(2026, 3, 16, 23))
    assert not hours.is_open(utc(2026, 3, 17, 3))
    assert hours.add(utc(2026, 3, 16, 5), 2 * H) == utc(2026, 3, 17, 23)


def test_overnight_span_merges_with_the_next_morning() -> None:
    hours = Hours.build("UTC", {"mon": "22:00-06:00", "tue": "06:00-12:00"}, [])
    window = (utc(2026, 3, 16), utc(2026, 3, 18))
    assert list(hours.periods(*window)) == [(utc(2026, 3, 16, 22), utc(2026, 3, 17, 12))]
    overlapping = Hours.build("UTC", {"mon": "20:00-08:00", "tue": "06:00-10:00"}, [])
    assert list(overlapping.periods(*window)) == [(utc(2026, 3, 16, 20), utc(2026, 3, 17, 10))]
    assert overlapping.elapsed(*window) == 14 * H  # the overlap counts once


@pytest.mark.parametrize(
    ("zone", "day", "text", "first", "last"),
    [
        # Berlin springs forward at 02:00 CET and falls back at 03:00 CEST.
        ("Europe/Berlin", (2026, 3, 29), "00:00-24:00", (2026, 3, 28, 23), (2026, 3, 29, 22)),
        ("Europe/Berlin", (2026, 3, 29), "01:00-05:00", (2026, 3, 29, 0), (2026, 3, 29, 3)),
        ("Europe/Berlin", (2026, 3, 29), "02:30-04:00", (2026, 3, 29, 1), (2026, 3, 29, 2)),
        ("Europe/Berlin", (2026, 3, 29), "02:00-02:45, 05:00-06:00", (2026, 3, 29, 3), None),
        ("Europe/Berlin", (2026, 3, 29), "07:00-22:00", (2026, 3, 29, 5), (2026, 3, 29, 20)),
        ("Europe/Berlin", (2026, 10, 25), "00:00-24:00", (2026, 10, 24, 22), (2026, 10, 25, 23)),
        ("Europe/Berlin", (2026, 10, 25), "01:00-05:00", (2026, 10, 24, 23), (2026, 10, 25, 4)),
        ("Europe/Berlin", (2026, 10, 25), "02:30-04:00", (2026, 10, 25, 0, 30), (2026, 10, 25, 3)),
        # New York: 02:00 EST -> 03:00 EDT, 02:00 EDT -> 01:00 EST.
        ("America/New_York", (2026, 3, 8), "00:00-24:00", (2026, 3, 8, 5), (2026, 3, 9, 4)),
        ("America/New_York", (2026, 3, 8), "01:00-05:00", (2026, 3, 8, 6), (2026, 3, 8, 9)),
        ("America/New_York", (2026, 11, 1), "00:00-24:00", (2026, 11, 1, 4), (2026, 11, 2, 5)),
        ("America/New_York", (2026, 11, 1), "01:30-03:00", (2026, 11, 1, 5, 30), (2026, 11, 1, 8)),
        # Lord Howe moves its clocks by half an hour.
        (
            "Australia/Lord_Howe",
            (2026, 10, 4),
            "00:00-24:00",
            (2026, 10, 3, 13, 30),
            (2026, 10, 4, 13),
        ),
        (
            "Australia/Lord_Howe",
            (2026, 4, 5),
            "00:00-24:00",
            (2026, 4, 4, 13),
            (2026, 4, 5, 13, 30),
        ),
    ],
)
def test_dst_days(
    zone: str,
    day: tuple[int, int, int],
    text: str,
    first: tuple[int, ...],
    last: tuple[int, ...] | None,
) -> None:
    date = dt.date(*day)
    hours = Hours.build(zone, {WEEKDAYS[date.weekday()]: text}, [])
    window = (utc(*day) - dt.timedelta(days=2), utc(*day) + dt.timedelta(days=2))
    periods = list(hours.periods(*window))
    assert periods[0][0] == utc(*first)
    if last is not None:  # one period from first to last
        assert periods == [(utc(*first), utc(*last))]


def test_dst_day_lengths_and_due_times() -> None:
    berlin = Hours.build("Europe/Berlin", {"sun": "00:00-24:00"}, [])
    assert berlin.elapsed(utc(2026, 3, 27), utc(2026, 3, 31)) == 23 * H
    assert berlin.elapsed(utc(2026, 10, 23), utc(2026, 10, 27)) == 25 * H
    sunday = utc(2026, 3, 28, 23)  # 2026-03-29 00:00 CET
    assert berlin.add(sunday, 23 * H) == utc(2026, 3, 29, 22)  # closing instant
    assert berlin.add(sunday, 23.5 * H) == utc(2026, 4, 4, 22, 30)  # 00:30 CEST next Sunday
    new_york = Hours.build("America/New_York", dict.fromkeys(WEEKDAYS, "00:00-24:00"), [])
    assert new_york.elapsed(utc(2026, 3, 2, 5), utc(2026, 3, 9, 4)) == (7 * 24 - 1) * H
    workweek = Hours.build("America/New_York", dict.fromkeys(WEEKDAYS[:5], "09:00-17:00"), [])
    # Friday 16:00 EST + 2h: one hour on Friday, one on Monday after the clocks moved.
    assert workweek.add(utc(2026, 3, 6, 21), 2 * H) == utc(2026, 3, 9, 14)


# --- the three-year bound -----------------------------------------------------------


def years_of_holidays(first: dt.date, days: int) -> list[str]:
    return [(first + dt.timedelta(days=n)).isoformat() for n in range(days)]


def test_holidays_for_over_three_years_make_add_fail() -> None:
    hours = Hours.build("UTC", WORKWEEK, years_of_holidays(dt.date(2026, 1, 1), 4 * 366))
    started = time.perf_counter()
    with pytest.raises(ValueError, match="no open business hours within 3 years"):
        hours.add(utc(2026, 1, 1), H)
    with pytest.raises(ValueError, match="no open business hours within 3 years"):
        hours.next_open(utc(2026, 1, 1))
    assert time.perf_counter() - started < 2
    assert hours.elapsed(utc(2026, 1, 1), utc(2031, 1, 1)) > 0  # bounded walks go on


def test_holidays_for_two_years_are_waited_out() -> None:
    hours = Hours.build("UTC", WORKWEEK, years_of_holidays(dt.date(2026, 1, 1), 2 * 365))
    # 730 days from 2026-01-01 end on 2027-12-31; 2028-01-01 is a Saturday.
    assert hours.next_open(utc(2026, 1, 1)) == utc(2028, 1, 1, 8)
    assert hours.add(utc(2026, 1, 1), H) == utc(2028, 1, 1, 9)


def test_add_walks_days_not_minutes() -> None:
    hours = Hours.build(HCM, WORKWEEK, ["2026-04-30", "2026-05-01"])
    starts = [utc(2026, 1, 1) + dt.timedelta(hours=37 * n) for n in range(200)]
    started = time.perf_counter()
    for start in starts:
        hours.add(start, 1000 * H)
    assert (time.perf_counter() - started) / len(starts) < 0.005


# --- properties ------------------------------------------------------------------

ZONES = [
    "UTC",
    "Asia/Ho_Chi_Minh",
    "Asia/Tehran",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",  # changes at midnight: local midnight itself can be missing
    "Africa/Cairo",
]


def minute_text(minute: int) -> str:
    return f"{minute // 60:02}:{minute % 60:02}"


@st.composite
def day_texts(draw: st.DrawFn) -> str:
    """A valid day: sorted cut points paired into spans, the last one maybe overnight."""
    minute = st.one_of(st.integers(0, 96).map(lambda q: q * 15), st.integers(0, 1440))
    points = sorted(draw(st.lists(minute, unique=True, max_size=6)))
    spans = list(zip(points[::2], points[1::2], strict=False))
    if spans and spans[-1][0] > 1 and spans[-1][0] < 1440 and draw(st.booleans()):
        spans[-1] = (spans[-1][0], draw(st.integers(1, spans[-1][0] - 1)))
    return ", ".join(f"{minute_text(s)}-{minute_text(e)}" for s, e in spans) or "off"


def open_minutes(hours: Hours) -> int:
    return sum((e if e > s else e + 1440) - s for day in hours.week for s, e in day)


instants = st.datetimes(min_value=dt.datetime(2019, 1, 1), max_value=dt.datetime(2030, 12, 31))


@functools.cache
def offset_changes(zone: str) -> list[dt.datetime]:
    """Noon UTC on the days (2019-2030) whose UTC offset differs from the day before."""
    info = ZoneInfo(zone)
    days = [dt.datetime(2019, 1, 1, 12) + dt.timedelta(days=n) for n in range(12 * 366)]
    offset = {day: day.replace(tzinfo=dt.UTC).astimezone(info).utcoffset() for day in days}
    return [day for prev, day in itertools.pairwise(days) if offset[prev] != offset[day]]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Hours, dt.datetime]:
    """Random hours in a random zone, with holidays near a random start instant.

    Half the starts fall within a few days before a DST change, so that spans
    in gaps and overlaps get exercised.
    """
    zone = draw(st.sampled_from(ZONES))
    week = {day: draw(day_texts()) for day in WEEKDAYS}
    assume(any(text != "off" for text in week.values()))
    changes = offset_changes(zone)
    if changes and draw(st.booleans()):
        before = st.integers(0, 4 * 24 * 3600).map(lambda n: dt.timedelta(seconds=n))
        start = draw(st.sampled_from(changes)) - draw(before)
    else:
        start = draw(instants)
    offsets = draw(st.lists(st.integers(-2, 40), max_size=6))
    holidays = [(start.date() + dt.timedelta(days=n)).isoformat() for n in offsets]
    return Hours.build(zone, week, holidays), start


def business_seconds(hours: Hours) -> st.SearchStrategy[float]:
    """0..2,000 hours, but at most about 30 weeks' worth so sparse weeks stay fast."""
    cap = min(2000 * H, open_minutes(hours) * 60 * 30)
    return st.one_of(st.just(0.0), st.integers(0, int(cap)).map(float), st.floats(0, cap))


PROPERTIES = settings(max_examples=200, deadline=None)


@PROPERTIES
@given(scenarios(), st.data())
def test_add_lands_in_open_time_and_agrees_with_elapsed(
    scenario: tuple[Hours, dt.datetime], data: st.DataObject
) -> None:
    hours, start = scenario
    seconds = data.draw(business_seconds(hours))
    due = hours.add(start, seconds)
    if seconds == 0:
        assert due == start
        return
    assert due >= start  # equal only below timedelta's microsecond resolution
    assert hours.is_open(due) or hours.is_open(due - TICK)
    assert hours.elapsed(start, due) == pytest.approx(seconds, abs=1e-3)


@PROPERTIES
@given(scenarios(), st.data())
def test_add_is_monotonic_and_composes(
    scenario: tuple[Hours, dt.datetime], data: st.DataObject
) -> None:
    hours, start = scenario
    a, b = data.draw(business_seconds(hours)), data.draw(business_seconds(hours))
    assert hours.add(start, min(a, b)) <= hours.add(start, max(a, b))
    stepped, direct = hours.add(hours.add(start, a), b), hours.add(start, a + b)
    assert abs((stepped - direct).total_seconds()) < 1


@PROPERTIES
@given(scenarios(), st.lists(st.integers(0, 30 * 24 * 3600), min_size=2, max_size=2))
def test_elapsed_is_additive_and_matches_periods(
    scenario: tuple[Hours, dt.datetime], steps: list[int]
) -> None:
    hours, a = scenario
    b = a + dt.timedelta(seconds=steps[0])
    c = b + dt.timedelta(seconds=steps[1])
    whole = hours.elapsed(a, c)
    assert whole == pytest.approx(hours.elapsed(a, b) + hours.elapsed(b, c), abs=1e-6)
    assert hours.elapsed(c, a) == 0.0
    periods = list(hours.periods(a, c))
    assert sum((e - s).total_seconds() for s, e in periods) == pytest.approx(whole, abs=1e-6)
    for s, e in periods:
        assert a <= s < e <= c
        assert hours.is_open(s) and hours.is_open(e - TICK)
    for (_, e), (s, _) in itertools.pairwise(periods):
        assert e < s  # merged where adjacent, so a closed gap lies between
        assert not hours.is_open(e)


@PROPERTIES
@given(scenarios())
def test_next_open_is_open_and_costs_nothing(scenario: tuple[Hours, dt.datetime]) -> None:
    hours, start = scenario
    opens = hours.next_open(start)
    assert opens >= start
    assert hours.is_open(opens)
    assert hours.elapsed(start, opens) == 0.0
    assert (opens == start) == hours.is_open(start)


def wall_open(hours: Hours, wall: dt.datetime) -> bool:
    """Open by reading the week at a local wall time, as a person would."""
    minute = wall.hour * 60 + wall.minute + wall.second / 60
    today, yesterday = wall.date(), wall.date() - dt.timedelta(days=1)
    if today not in hours.holidays:
        for s, e in hours.week[today.weekday()]:
            if s <= minute < (e if e > s else 1440):
                return True
    if yesterday not in hours.holidays:
        return any(e < s and minute < e for s, e in hours.week[yesterday.weekday()])
    return False


@PROPERTIES
@given(scenarios(), st.integers(0, 10 * 24 * 3600))
def test_is_open_matches_the_wall_clock_away_from_dst_changes(
    scenario: tuple[Hours, dt.datetime], offset: int
) -> None:
    hours, start = scenario
    when = start + dt.timedelta(seconds=offset)
    zone = ZoneInfo(hours.timezone)
    around = [when + dt.timedelta(days=n) for n in (-2, 0, 2)]
    offsets = {t.replace(tzinfo=dt.UTC).astimezone(zone).utcoffset() for t in around}
    assume(len(offsets) == 1)
    wall = when.replace(tzinfo=dt.UTC).astimezone(zone).replace(tzinfo=None)
    assert hours.is_open(when) == wall_open(hours, wall)
