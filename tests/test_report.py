"""Reports: figures checked against a hand-built week of support, on both backends.

Five tickets go through the real intake (SMTP) and real agent replies, at
times set on the controllable clock, in Saigon business hours (Mon-Fri
07:00-22:00). Every expected figure below is worked out by hand in the
comments; the report must agree, through ``ticket-gateway report --json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import cli
from tests.helpers import GatewayThread
from tests.test_agents import CUSTOMER, LAN, MINH
from tests.test_lifecycle import (
    Clock,
    answer_ticket,
    clock,
    customer_writes,
    lifecycle_config,
    run_jobs,
    saigon,
)

__all__ = ["clock"]  # the fixture, shared with test_lifecycle

HOUR = 3600.0
BILLING = "support+billing@example.com"  # high priority: 6 h first response


def answer(gateway: GatewayThread, number: int, agent: str, body: str) -> None:
    answer_ticket(gateway, number, body, agent)


def rate(gateway: GatewayThread, number: int, rating: str) -> None:
    from gateway import models, ratings

    with gateway.db():
        ticket = models.Ticket.get(models.Ticket.number == number)
        ratings.rate(ticket, rating, CUSTOMER)


@pytest.fixture
def week(tmp_path: Path, database_url: str, clock: Clock) -> Iterator[tuple[GatewayThread, Path]]:
    """The hand-built week; ends on Wednesday 12:00 with the jobs run."""
    path = lifecycle_config(tmp_path, database_url)
    with GatewayThread(path) as gateway:
        clock.set("2026-11-23 09:00")  # Monday
        customer_writes(gateway, "T1 printer")  # 10000 medium
        customer_writes(gateway, "T2 invoice", to=BILLING)  # 10001 high
        clock.set("2026-11-23 10:00")
        answer(gateway, 10000, LAN, "Please restart it.")  # first response 1 h
        clock.set("2026-11-23 12:00")
        answer(gateway, 10000, LAN, "#resolve\nFixed remotely.")  # resolution 3 h - 2 h waiting
        clock.set("2026-11-23 15:30")
        run_jobs(gateway)  # T2 due 15:00: breached
        clock.set("2026-11-23 17:00")
        answer(gateway, 10001, MINH, "Sorry for the wait, here it is.")  # 8 h: late
        clock.set("2026-11-23 18:00")
        answer(gateway, 10001, MINH, "#resolve\nDone.")  # resolution 9 h - 1 h waiting
        clock.set("2026-11-23 21:00")
        customer_writes(gateway, "T3 late evening")  # 10002 medium
        clock.set("2026-11-24 08:00")
        answer(gateway, 10002, LAN, "Good morning!")  # Mon 21-22 + Tue 07-08: 2 h
        clock.set("2026-11-24 09:00")
        customer_writes(gateway, "T4 waiting")  # 10003 medium, due Wed 18:00
        customer_writes(gateway, "T5 urgent bill", to=BILLING)  # 10004 high, due Tue 15:00
        rate(gateway, 10000, "good")
        rate(gateway, 10001, "bad")
        clock.set("2026-11-25 12:00")  # Wednesday noon
        run_jobs(gateway)
        yield gateway, path


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def test_report_figures_match_the_hand_built_week(
    week: tuple[GatewayThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = week
    figures = json.loads(run_cli(capsys, "report", "--json", "--config", str(path)))
    totals = figures["totals"]
    assert (totals["opened"], totals["resolved"]) == (5, 2)
    # first responses: 1 h, 8 h, 2 h -> median 2 h; 90th percentile (nearest rank 3 of 3) 8 h
    assert totals["first_response"] == {
        "count": 3,
        "median_seconds": 2 * HOUR,
        "p90_seconds": 8 * HOUR,
    }
    # resolutions: 1 h and 8 h -> median 4.5 h, 90th percentile (rank 2 of 2) 8 h
    assert totals["resolution"] == {
        "count": 2,
        "median_seconds": 4.5 * HOUR,
        "p90_seconds": 8 * HOUR,
    }
    assert (totals["responses"], totals["late_response_rate"]) == (3, 0.3333)
    assert totals["csat"] == {"good": 1, "rated": 2, "rate": 0.5}
    # high: T2 answered late, T5 breached unanswered; T2 resolved in 8 h of 40
    assert figures["priorities"]["high"] == {
        "responses": {"within_target": 0, "missed": 2, "rate": 0.0},
        "resolution": {"within_target": 1, "missed": 0, "rate": 1.0},
    }
    # medium: T1 and T3 in time; T4 not decided yet; no resolution target
    assert figures["priorities"]["medium"]["responses"] == {
        "within_target": 2,
        "missed": 0,
        "rate": 1.0,
    }
    assert figures["priorities"]["medium"]["resolution"]["rate"] is None
    agents = figures["agents"]
    assert agents[LAN]["responses"] == 2
    assert agents[LAN]["first_response"]["median_seconds"] == 1.5 * HOUR
    assert agents[LAN]["csat"] == {"good": 1, "rated": 1, "rate": 1.0}
    assert (agents[MINH]["responses"], agents[MINH]["late_response_rate"]) == (1, 1.0)
    assert agents[MINH]["csat"] == {"good": 0, "rated": 1, "rate": 0.0}
    assert list(figures["mailboxes"]) == ["support@example.com"]


def test_report_period_and_mailbox_filters(
    week: tuple[GatewayThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = week
    config = ["--config", str(path)]
    tuesday = json.loads(
        run_cli(
            capsys, "report", "--json", "--since", "2026-11-24", "--until", "2026-11-25", *config
        )
    )["totals"]
    # opened on Tuesday (UTC): T3 (Mon 21:00 Saigon = 14:00 UTC Monday) is not; T4, T5 are
    assert tuesday["opened"] == 2
    assert tuesday["first_response"]["count"] == 1  # T3's answer, Tue 08:00 Saigon = 01:00 UTC
    other = json.loads(
        run_cli(capsys, "report", "--json", "--mailbox", "sales@example.com", *config)
    )
    assert other["totals"]["opened"] == 0 and other["agents"] == {}


def test_report_as_text(
    week: tuple[GatewayThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = week
    text = run_cli(capsys, "report", "--config", str(path))
    assert "opened 5, resolved 2" in text
    assert "first response: median 2 h, 90th percentile 8 h (3 tickets)" in text
    assert "satisfaction:   50% good (1/2)" in text
    assert "high" in text and "0% (0/2)" in text


def test_action_required_most_urgent_first(
    week: tuple[GatewayThread, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = week
    rows = json.loads(
        run_cli(capsys, "tickets", "list", "--action-required", "--json", "--config", str(path))
    )
    # T5 is 21 hours late (due Tue 15:00, real time since); T4 has 6 business hours left.
    assert [(r["number"], r["seconds_left"], r["late"]) for r in rows] == [
        (10004, -21 * 3600, True),
        (10003, 6 * 3600, False),
    ]
    assert rows[1]["due_at"] == saigon("2026-11-25 18:00").isoformat() + "Z"
    text = run_cli(capsys, "tickets", "list", "--action-required", "--config", str(path))
    assert "late 21 h" in text and "6 h" in text
    assert "2 ticket(s) waiting on us, 1 late" in text
