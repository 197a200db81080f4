"""The ticket lifecycle end to end: SLA clocks, timed jobs, ratings, reopening.

A team in Ho Chi Minh City (Mon-Fri 07:00-22:00, Sat 08:00-12:00, Sunday
off) answers support@example.com. Customers and agents are played by
smtplib over real SMTP; time is a controllable clock (``db.set_clock``)
that the daemon, its jobs and the tests all read, so a test can say "it is
now Friday 21:00 in Saigon" and then "two days later", on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from gateway import db, models
from gateway.lifecycle import Jobs
from tests.helpers import SUPPORT, GatewayThread, history, mail, write_config
from tests.test_agents import (
    BOSS,
    CUSTOMER,
    LAN,
    MINH,
    TEAM,
    agent_sends,
    gmail_reply,
    inbox,
    text_of,
)

SAIGON = ZoneInfo("Asia/Ho_Chi_Minh")

LIFECYCLE = """
categories = ["general", "billing", "technical"]
category_priority = { billing = "high" }
subaddress_categories = { billing = "billing" }
timezone = "Asia/Ho_Chi_Minh"
holidays = ["2026-12-31"]
remind_after = "2d"
auto_resolve_after = "5d"
auto_close_after = "24h"
reopen_window = "30d"

[mailbox.hours]
monday = "07:00-22:00"
tuesday = "07:00-22:00"
wednesday = "07:00-22:00"
thursday = "07:00-22:00"
friday = "07:00-22:00"
saturday = "08:00-12:00"

[mailbox.sla]
first_response = { urgent = "2h", high = "6h", medium = "24h", low = "24h" }
next_response = { urgent = "1h", high = "4h", medium = "8h", low = "8h" }
resolution = { high = "40h" }
"""


def saigon(text: str) -> dt.datetime:
    """``"2026-11-27 21:00"`` in Saigon as the naive UTC the database stores."""
    local = dt.datetime.fromisoformat(text).replace(tzinfo=SAIGON)
    return local.astimezone(dt.UTC).replace(tzinfo=None)


class Clock:
    """The time everyone in the test reads; moved by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self.now

    def set(self, text: str) -> None:
        with self._lock:
            self.now = saigon(text)


@pytest.fixture
def clock() -> Iterator[Clock]:
    fake = Clock(saigon("2026-11-23 09:00"))  # a Monday
    db.set_clock(fake)
    yield fake
    db.set_clock(None)


def lifecycle_config(folder: Path, database_url: str, extra_gateway: str = "") -> Path:
    """Business hours and SLA targets (processing inline: the test clock is in this process)."""
    path = write_config(folder, database_url, extra_gateway=extra_gateway)
    text = path.read_text()
    head, first, second = text.split("[[mailbox]]")
    path.write_text(f"{head}[[mailbox]]{first}{LIFECYCLE}{TEAM}[[mailbox]]{second}")
    return path


@pytest.fixture
def team(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[GatewayThread]:
    with GatewayThread(lifecycle_config(tmp_path, database_url)) as running:
        yield running


def customer_writes(
    gateway: GatewayThread, subject: str = "Máy in lỗi", to: str = SUPPORT, body: str = "Lỗi E42."
) -> None:
    gateway.send(
        mail(subject=subject, sender=f"Khách <{CUSTOMER}>", to=to, body=body),
        rcpts=[to],
        sender=CUSTOMER,
    )
    gateway.settle()


def run_jobs(gateway: GatewayThread) -> dict[str, int]:
    """The daemon's lifecycle jobs, now (as its scheduler runs them every minute)."""
    jobs = gateway.gateway.jobs
    assert jobs is not None
    with gateway.db():
        done = jobs.run_all()
    gateway.gateway.outbox.wake() if gateway.gateway.outbox else None
    gateway.settle()
    return done


def clocks(gateway: GatewayThread, number: int = 10000) -> dict[str, models.SlaClock]:
    """The ticket's clocks by kind (the latest of each kind)."""
    with gateway.db():
        rows = models.SlaClock.select().join(models.Ticket).where(models.Ticket.number == number)
        return {c.kind: c for c in rows.order_by(models.SlaClock.id)}


def ticket_row(gateway: GatewayThread, number: int = 10000) -> models.Ticket:
    with gateway.db():
        return models.Ticket.get(models.Ticket.number == number)


def events(gateway: GatewayThread, kind: str, number: int = 10000) -> list[dict[str, object]]:
    found = next(t for t in gateway.tickets() if t["number"] == number)
    return history(found, kind)


def subjects(messages: list[EmailMessage]) -> list[str]:
    return [str(m["Subject"]) for m in messages]


# --- clocks in business hours ------------------------------------------------------------


def test_first_response_due_counts_business_hours_only(team: GatewayThread, clock: Clock) -> None:
    clock.set("2026-11-27 21:00")  # Friday, one business hour left
    customer_writes(team, to="support+billing@example.com")  # billing: high, 6 h
    state = ticket_row(team)
    assert (state.category, state.priority) == ("billing", "high")
    # Friday 21-22 (1 h), Saturday 08-12 (4 h), Sunday off, Monday 07-08 (1 h).
    assert clocks(team)["first_response"].due_at == saigon("2026-11-30 08:00")
    # 75% of 6 h = 4.5 h: Friday 1 h + Saturday 3.5 h = Saturday 11:30.
    assert clocks(team)["first_response"].warn_at == saigon("2026-11-28 11:30")
    # resolution: 40 business hours for high priority
    assert clocks(team)["resolution"].due_at is not None


def test_acknowledgement_outside_hours_says_when_the_team_is_back(
    team: GatewayThread, clock: Clock
) -> None:
    clock.set("2026-11-29 10:00")  # Sunday
    customer_writes(team)
    [ack] = inbox(team, CUSTOMER)
    assert "2026-11-30 07:00 (Asia/Ho_Chi_Minh)" in text_of(ack)
    clock.set("2026-11-30 10:00")  # Monday, open
    customer_writes(team, subject="Another question")
    second = inbox(team, CUSTOMER)[-1]
    assert "Asia/Ho_Chi_Minh" not in text_of(second)
    assert "24" in text_of(second)  # the medium target, in business hours


def test_holiday_is_skipped(team: GatewayThread, clock: Clock) -> None:
    clock.set("2026-12-30 21:00")  # Wednesday; Thursday 31 is a holiday
    customer_writes(team, to="support+billing@example.com")  # 6 h
    # Wed 21-22 (1 h), Thu off, Fri 1 Jan 07:00 + 5 h = 12:00.
    assert clocks(team)["first_response"].due_at == saigon("2027-01-01 12:00")


# --- warnings and breaches, once ---------------------------------------------------------


def test_warning_then_breach_each_once(team: GatewayThread, clock: Clock) -> None:
    clock.set("2026-11-23 09:00")
    customer_writes(team, to="support+billing@example.com")  # high: 6 h, warn at 4.5 h
    baseline = len(team.sent_mail())
    clock.set("2026-11-23 13:29")
    assert run_jobs(team)["warn"] == 0
    clock.set("2026-11-23 13:31")
    run_jobs(team)
    run_jobs(team)
    warnings = team.sent_mail()[baseline:]
    assert sorted(str(m["Delivered-To"]) for m in warnings) == sorted([LAN, MINH, BOSS])
    assert "1 h 29 min" in text_of(warnings[0])  # left until 15:00
    assert len(events(team, "sla_warning")) == 1
    clock.set("2026-11-23 15:05")
    run_jobs(team)
    run_jobs(team)
    breached = team.sent_mail()[baseline + 3 :]
    assert [str(m["Delivered-To"]) for m in breached] == [BOSS]  # the admin; nobody assigned
    assert "5 min" in text_of(breached[0])
    assert len(events(team, "sla_breached")) == 1
    assert clocks(team)["first_response"].breached_at == saigon("2026-11-23 15:05")


def test_an_answer_in_time_stops_the_clock(team: GatewayThread, clock: Clock) -> None:
    clock.set("2026-11-23 09:00")
    customer_writes(team)
    [note] = inbox(team, LAN)
    clock.set("2026-11-23 11:30")
    agent_sends(team, gmail_reply(note, "Chị thử tắt máy rồi bật lại giúp em.", LAN))
    first = clocks(team)["first_response"]
    assert first.stopped_at == saigon("2026-11-23 11:30")
    assert (first.stopped_by, first.business_seconds, first.late) == (LAN, 9000.0, False)
    clock.set("2026-11-25 09:00")
    done = run_jobs(team)
    assert done["warn"] == done["breach"] == 0


def test_clock_pauses_while_waiting_on_the_customer(team: GatewayThread, clock: Clock) -> None:
    clock.set("2026-11-23 09:00")
    customer_writes(team, to="support+billing@example.com")  # high: resolution 40 h
    [note] = inbox(team, LAN)
    due = clocks(team)["resolution"].due_at
    clock.set("2026-11-23 10:00")
    agent_sends(team, gmail_reply(note, "Chị gửi giúp em số đơn hàng nhé?", LAN))
    assert ticket_row(team).status == "waiting_on_customer"
    clock.set("2026-11-24 10:00")  # 15 business hours later the customer answers
    [answer] = [m for m in inbox(team, CUSTOMER) if m["Auto-Submitted"] is None]
    team.send(
        mail(
            subject="Re: " + str(answer["Subject"]),
            sender=f"Khách <{CUSTOMER}>",
            to=answer["Reply-To"].addresses[0].addr_spec,
            body="Đơn hàng số 12345.",
        ),
        rcpts=[answer["Reply-To"].addresses[0].addr_spec],
        sender=CUSTOMER,
    )
    state = clocks(team)
    assert ticket_row(team).status == "open"
    assert state["resolution"].paused_seconds == 15 * 3600
    # 40 h from Monday 09:00 was Wednesday 19:00; 15 h paused make it Thursday 19:00.
    assert due == saigon("2026-11-25 19:00")
    assert state["resolution"].due_at == saigon("2026-11-26 19:00")
    # A next response is owed now: 4 business hours for high priority.
    assert state["next_response"].due_at == saigon("2026-11-24 14:00")


def test_catch_up_after_downtime_happens_once(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    path = lifecycle_config(tmp_path, database_url)
    clock.set("2026-11-23 09:00")
    with GatewayThread(path) as gateway:
        customer_writes(gateway, to="support+billing@example.com")
        baseline = len(gateway.sent_mail())
    clock.set("2026-11-24 09:00")  # due at 15:00 the day before; the daemon was down
    for _ in range(2):  # the scheduler's first run at start does it; the second start nothing
        with GatewayThread(path) as gateway:
            deadline = dt.datetime.now() + dt.timedelta(seconds=20)
            while not events(gateway, "sla_breached") and dt.datetime.now() < deadline:
                time.sleep(0.1)
            gateway.settle()
            assert len(events(gateway, "sla_breached")) == 1
            assert events(gateway, "sla_warning") == []  # too late to warn: only the breach
    assert len(gateway.sent_mail()) == baseline + 1  # one mail to the admin, once


def answer_ticket(gateway: GatewayThread, number: int, body: str, agent: str = LAN) -> None:
    """``agent`` replies to their notification about ticket ``number``."""
    notes = [m for m in inbox(gateway, agent) if f"[#{number}]" in str(m["Subject"])]
    agent_sends(gateway, gmail_reply(notes[0], body, agent))


def test_every_job_on_several_instances_happens_once(team: GatewayThread, clock: Clock) -> None:
    """Four job runners at once, each on its own connection, all finding work due."""
    clock.set("2026-11-16 09:00")
    customer_writes(team, "A waits a week")  # 10000
    clock.set("2026-11-16 09:30")
    answer_ticket(team, 10000, "Which model is it?")
    clock.set("2026-11-20 09:00")
    customer_writes(team, "B resolved Friday")  # 10001
    customer_writes(team, "C waits three days")  # 10002
    clock.set("2026-11-20 09:30")
    answer_ticket(team, 10001, "Try this.")
    answer_ticket(team, 10002, "Which model is it?")
    clock.set("2026-11-20 10:00")
    answer_ticket(team, 10001, "#resolve")
    clock.set("2026-11-21 08:00")  # Saturday: 4 h, then Monday 07-09: due Monday 09:00
    customer_writes(team, "E is late", to="support+billing@example.com")  # 10003
    clock.set("2026-11-23 07:00")  # 6 h from 07:00: warn at 11:30, due 13:00
    customer_writes(team, "D is nearly due", to="support+billing@example.com")  # 10004
    clock.set("2026-11-23 12:00")
    before = len(team.sent_mail())
    assert team.gateway.store is not None and team.gateway.notifier is not None
    instances = [Jobs(team.config, team.gateway.notifier) for _ in range(4)]
    store = team.gateway.store
    barrier = threading.Barrier(len(instances))
    results: list[dict[str, int]] = []

    def run(jobs: Jobs) -> None:
        barrier.wait()
        results.append(store.call(jobs.run_all))

    threads = [threading.Thread(target=run, args=(jobs,)) for jobs in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    run_jobs(team)  # and once more afterwards: nothing left to do
    with team.db():
        kinds = [
            (e.ticket.number, e.kind, e.actor)
            for e in models.Event.select()
            .where(models.Event.created_at == saigon("2026-11-23 12:00"))
            .order_by(models.Event.id)
            if e.kind in {"sla_warning", "sla_breached", "customer_reminded", "status_changed"}
        ]
    assert sorted(kinds) == [
        (10000, "status_changed", "system"),  # waiting a week: resolved, not reminded first
        (10001, "status_changed", "system"),  # resolved since Friday: closed
        (10002, "customer_reminded", "system"),
        (10003, "sla_breached", "system"),
        (10004, "sla_warning", "system"),
    ]
    assert len(results) == 4
    # reminder to C, resolve to A, close to B; breach to the admin; warning to 3 agents
    assert len(team.sent_mail()) == before + 1 + 1 + 1 + 1 + 3


# --- waiting, reminders, auto-resolve, auto-close, ratings -----------------------------


def answer(gateway: GatewayThread, body: str, agent: str = LAN) -> None:
    note = inbox(gateway, agent)[-1]
    agent_sends(gateway, gmail_reply(note, body, agent))


def test_reminder_auto_resolve_auto_close_each_once(team: GatewayThread, clock: Clock) -> None:
    clock.set("2026-11-23 09:00")
    customer_writes(team)
    answer(team, "Chị gửi giúp em ảnh chụp lỗi nhé?")
    count = len(inbox(team, CUSTOMER))
    clock.set("2026-11-25 09:01")
    run_jobs(team)
    run_jobs(team)
    reminders = inbox(team, CUSTOMER)[count:]
    assert len(reminders) == 1
    assert reminders[0]["Auto-Submitted"] == "auto-generated"
    assert "3" in text_of(reminders[0])  # resolved in 3 more days without an answer
    clock.set("2026-11-28 09:01")
    run_jobs(team)
    run_jobs(team)
    assert ticket_row(team).status == "resolved"
    [resolved] = inbox(team, CUSTOMER)[count + 1 :]
    assert "[#10000]" in str(resolved["Subject"])
    clock.set("2026-11-29 09:02")
    run_jobs(team)
    run_jobs(team)
    assert ticket_row(team).status == "closed"
    assert len(inbox(team, CUSTOMER)) == count + 3
    kinds = [(e["detail"]["old"], e["detail"]["new"]) for e in events(team, "status_changed")]
    assert kinds[-2:] == [("waiting_on_customer", "resolved"), ("resolved", "closed")]


def test_reply_after_the_reopen_window_opens_a_new_ticket(
    team: GatewayThread, clock: Clock
) -> None:
    clock.set("2026-11-23 09:00")
    customer_writes(team)
    answer(team, "#close\nĐã xử lý xong.")
    assert ticket_row(team).status == "closed"
    [reply] = [m for m in inbox(team, CUSTOMER) if m["Auto-Submitted"] is None]
    key = reply["Reply-To"].addresses[0].addr_spec
    follow_up = mail(subject="Re: lại lỗi", sender=f"Khách <{CUSTOMER}>", to=key, body="Lại lỗi.")
    clock.set("2027-01-05 09:00")  # 43 days later
    team.send(follow_up, rcpts=[key], sender=CUSTOMER)
    assert ticket_row(team).status == "closed"
    new = ticket_row(team, 10001)
    assert (new.continues, new.status, new.requester_email) == (10000, "new", CUSTOMER)
    assert events(team, "continued_in")[0]["detail"]["new_ticket"] == 10001


# --- ratings ----------------------------------------------------------------------------


def portal_config(folder: Path, database_url: str) -> Path:
    return lifecycle_config(
        folder,
        database_url,
        'portal_url = "http://portal.test"\nportal_listen = "127.0.0.1:0"',
    )


async def _get(
    gateway: GatewayThread, path: str, data: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, str]:
    url = f"http://127.0.0.1:{gateway.port('portal')}{path}"
    async with aiohttp.ClientSession() as session:
        if method == "HEAD":
            async with session.head(url, allow_redirects=False) as response:
                return response.status, ""
        if data is None:
            async with session.get(url, allow_redirects=False) as response:
                return response.status, await response.text()
        async with session.post(url, data=data, allow_redirects=False) as response:
            return response.status, await response.text()


def test_resolve_mail_carries_one_click_rating(
    tmp_path: Path, database_url: str, clock: Clock
) -> None:
    with GatewayThread(portal_config(tmp_path, database_url)) as gateway:
        clock.set("2026-11-23 09:00")
        customer_writes(gateway)
        answer(gateway, "#resolve\nĐã thay mực, máy in chạy tốt rồi.")
        resolved = [m for m in inbox(gateway, CUSTOMER) if m["Auto-Submitted"] is None][-1]
        text = text_of(resolved)
        good = re.search(r"http://portal\.test(/rate/10000/\S+/good)", text)
        bad = re.search(r"http://portal\.test(/rate/10000/\S+/bad)", text)
        assert good and bad
        # A link scanner's HEAD probe records nothing.
        assert asyncio.run(_get(gateway, bad.group(1), method="HEAD"))[0] == 405
        assert ticket_row(gateway).rating is None
        status, page = asyncio.run(_get(gateway, good.group(1)))
        assert status == 200 and "10000" in page
        assert (ticket_row(gateway).rating, ticket_row(gateway).rating_comment) == ("good", None)
        status, page = asyncio.run(_get(gateway, bad.group(1), {"comment": "Hơi chậm."}))
        assert status == 200
        row = ticket_row(gateway)
        assert (row.rating, row.rating_comment) == ("bad", "Hơi chậm.")
        forged = good.group(1).replace("/rate/10000/", "/rate/10000/x")
        assert asyncio.run(_get(gateway, forged))[0] == 404
        other = good.group(1).replace("/rate/10000/", "/rate/10001/")
        assert asyncio.run(_get(gateway, other))[0] == 404
        assert len(events(gateway, "rated")) == 2


def test_resolve_by_command_alone_tells_the_customer(team: GatewayThread, clock: Clock) -> None:
    customer_writes(team)
    before = len(inbox(team, CUSTOMER))
    answer(team, "#resolve")
    [told] = inbox(team, CUSTOMER)[before:]
    assert "[#10000]" in str(told["Subject"])
    assert told["Auto-Submitted"] == "auto-generated"
    assert ticket_row(team).status == "resolved"


# --- clocks through reopening, on-behalf tickets, lateness ----------------------------


def test_reopened_after_resolving_while_waiting_counts_working_time_only(
    team: GatewayThread, clock: Clock
) -> None:
    clock.set("2026-11-23 09:00")
    customer_writes(team, "Billing", to="support+billing@example.com")  # high: 40 h resolution
    clock.set("2026-11-23 10:00")
    answer_ticket(team, 10000, "Which invoice?")  # waiting on the customer from here
    clock.set("2026-11-24 10:00")
    answer_ticket(team, 10000, "#resolve")  # resolved while waiting: 1 h of work so far
    assert clocks(team)["resolution"].business_seconds == 3600
    clock.set("2026-11-25 10:00")
    [reply] = [m for m in inbox(team, CUSTOMER) if "Which invoice?" in text_of(m)]
    key = reply["Reply-To"].addresses[0].addr_spec
    team.send(
        mail(subject="Re: Billing", sender=f"Khách <{CUSTOMER}>", to=key, body="Still wrong."),
        rcpts=[key],
        sender=CUSTOMER,
    )
    resolution = clocks(team)["resolution"]
    assert resolution.stopped_at is None and resolution.paused_seconds == 30 * 3600
    assert resolution.due_at == saigon("2026-11-27 19:00")  # 40 h of work + 30 h paused
    clock.set("2026-11-25 12:00")
    answer_ticket(team, 10000, "#resolve\nCorrected invoice attached.")
    resolution = clocks(team)["resolution"]
    assert (resolution.business_seconds, resolution.late) == (3 * 3600, False)
    assert run_jobs(team)["breach"] == 0


def test_on_behalf_ticket_owes_its_clocks(team: GatewayThread, clock: Clock) -> None:
    from tests.test_agents import personal

    clock.set("2026-11-23 09:00")
    address = personal(team, LAN)
    agent_sends(
        team,
        mail(
            subject="Your call",
            sender=f"Lan <{LAN}>",
            to=address,
            body="#on-behalf mai@example.net\n#priority high\nAs promised on the phone.",
        ),
    )
    kinds = clocks(team)
    assert set(kinds) == {"first_response", "resolution"}
    assert kinds["resolution"].due_at is not None  # high priority: a 40 h target


def test_an_answer_after_the_due_time_is_late_even_at_closing(
    team: GatewayThread, clock: Clock
) -> None:
    clock.set("2026-11-23 16:00")
    customer_writes(team, "Late one", to="support+billing@example.com")  # due 22:00, closing
    assert clocks(team)["first_response"].due_at == saigon("2026-11-23 22:00")
    clock.set("2026-11-23 22:30")  # after hours: no business time has passed since 22:00
    answer_ticket(team, 10000, "Sorry, here it is.")
    first = clocks(team)["first_response"]
    assert (first.business_seconds, first.late) == (6 * 3600, True)


def test_a_write_from_an_older_read_keeps_a_jobs_mark(team: GatewayThread, clock: Clock) -> None:
    """The ticket step and a job may write one clock in turn: only changed fields are
    written, so the breach job's mark survives the ticket step's later save."""
    customer_writes(team)
    with team.db():
        stale = models.SlaClock.get(models.SlaClock.kind == "first_response")
        models.SlaClock.update(breached_at=saigon("2026-11-23 10:00")).where(
            models.SlaClock.id == stale.id
        ).execute()  # the job, in between
        stale.priority = "urgent"
        stale.save()  # the ticket step, from what it read before
        assert models.SlaClock.get_by_id(stale.id).breached_at == saigon("2026-11-23 10:00")
