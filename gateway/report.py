"""Reports: the figures a support manager asks for, and the tickets waiting on us.

Everything is read from what the ticket step stored as it happened: the
SLA clocks (``sla_clock``: business seconds, pauses excluded, late or not)
and the tickets' own times and ratings. So a report never recomputes
business hours, and changing a mailbox's hours later does not rewrite the
past.

Definitions (also in README.md, "Reports"):

* opened: tickets created in the period; resolved: tickets whose latest
  resolution falls in it (whatever their status now).
* first response / resolution time: business time of first-response
  clocks an agent stopped in the period, and of resolution clocks that
  stopped in it. Median (midpoint of the two middle values for an even
  count) and 90th percentile (nearest rank: the smallest value that at
  least 90% of the values do not exceed).
* SLA attainment, per priority: of the clocks with a target decided in
  the period (answered or resolved; or marked late without that, even if
  the ticket was then closed), the share within target. A clock answered
  late counts once, as missed. Resolution times count only tickets that
  were resolved, not ones closed unresolved (spam).
* late response rate: of the agents' responses (first and next) in the
  period, the share that came after the due time.
* CSAT: good ratings / all ratings given in the period.
* per agent: responses are the answering agent's; a ticket's rating is
  its assignee's, else the agent who answered it last.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from gateway import models, sla
from gateway.config import Config
from gateway.queries import iso

RESPONSES = sla.RESPONSES


@dataclass(frozen=True)
class Period:
    """What a report covers: ``[since, until)`` in UTC, one mailbox or all."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    mailbox: str | None = None

    def holds(self, moment: dt.datetime | None) -> bool:
        if moment is None:
            return False
        return (self.since is None or moment >= self.since) and (
            self.until is None or moment < self.until
        )


def build(period: Period) -> dict[str, Any]:
    """The whole report: totals, per priority, per mailbox and per agent."""
    tickets = _tickets(period)
    clocks = _clocks(period)
    raters = _last_responders([t for t in tickets if t.rating and not t.assignee])
    by_mailbox: dict[str, list[models.Ticket]] = defaultdict(list)
    for ticket in tickets:
        by_mailbox[ticket.mailbox].append(ticket)
    for clock in clocks:  # a mailbox whose only activity was answers is reported too
        by_mailbox.setdefault(clock.ticket.mailbox, [])
    return {
        "period": {
            "since": iso(period.since),
            "until": iso(period.until),
            "mailbox": period.mailbox,
        },
        "totals": _figures(tickets, clocks, period),
        "priorities": _priorities(clocks, period),
        "mailboxes": {
            mailbox: _figures(rows, [c for c in clocks if c.ticket.mailbox == mailbox], period)
            for mailbox, rows in sorted(by_mailbox.items())
        },
        "agents": _agents(tickets, clocks, raters, period),
    }


# --- the figures ------------------------------------------------------------


def _figures(
    tickets: Sequence[models.Ticket], clocks: Sequence[models.SlaClock], period: Period
) -> dict[str, Any]:
    first = [
        c.business_seconds for c in clocks if c.kind == "first_response" and _answered(c, period)
    ]
    resolution = [
        c.business_seconds
        for c in clocks
        if c.kind == "resolution" and _resolved(c) and period.holds(c.stopped_at)
    ]
    responses = [c for c in clocks if c.kind in RESPONSES and _answered(c, period)]
    return {
        "opened": sum(1 for t in tickets if period.holds(t.created_at)),
        "resolved": sum(1 for t in tickets if period.holds(t.resolved_at)),
        "first_response": _spread([s for s in first if s is not None]),
        "resolution": _spread([s for s in resolution if s is not None]),
        "responses": len(responses),
        "late_response_rate": _share(sum(1 for c in responses if c.late), len(responses)),
        "csat": _csat(tickets, period),
    }


def _priorities(clocks: Sequence[models.SlaClock], period: Period) -> dict[str, Any]:
    """SLA attainment per priority, for responses and for resolution."""
    result: dict[str, Any] = {}
    for priority in reversed(models.Ticket.PRIORITIES):
        mine = [c for c in clocks if c.priority == priority and c.target_seconds is not None]
        result[priority] = {
            "responses": _attainment([c for c in mine if c.kind in RESPONSES], period),
            "resolution": _attainment([c for c in mine if c.kind == "resolution"], period),
        }
    return result


def _agents(
    tickets: Sequence[models.Ticket],
    clocks: Sequence[models.SlaClock],
    raters: dict[int, str],
    period: Period,
) -> dict[str, Any]:
    answered: dict[str, list[models.SlaClock]] = defaultdict(list)
    for clock in clocks:
        if clock.kind in RESPONSES and _answered(clock, period) and clock.stopped_by:
            answered[clock.stopped_by].append(clock)
    owners: dict[str, list[models.Ticket]] = defaultdict(list)
    for ticket in tickets:
        owner = ticket.assignee or raters.get(ticket.id)
        if owner:
            owners[owner].append(ticket)
    result = {}
    for agent in sorted(set(answered) | set(owners)):
        mine = answered.get(agent, [])
        first = [c.business_seconds for c in mine if c.kind == "first_response"]
        result[agent] = {
            "responses": len(mine),
            "first_response": _spread([s for s in first if s is not None]),
            "late_response_rate": _share(sum(1 for c in mine if c.late), len(mine)),
            "csat": _csat(owners.get(agent, []), period),
        }
    return result


def _answered(clock: models.SlaClock, period: Period) -> bool:
    """A response clock an agent stopped within the period."""
    return clock.stopped_by is not None and period.holds(clock.stopped_at)


def _resolved(clock: models.SlaClock) -> bool:
    """A resolution clock stopped by a resolution (not by closing an unresolved ticket)."""
    return clock.stopped_at is not None and clock.ticket.resolved_at is not None


def _decided(clock: models.SlaClock) -> tuple[dt.datetime, bool] | None:
    """When a clock's target was met or missed, and whether it was missed; None if open.

    Answered (or, for resolution, resolved): decided then, late or not.
    Otherwise marked breached: missed then, even if the ticket was later
    closed without an answer (closing must not hide a miss).
    """
    done = clock.stopped_by is not None if clock.kind in RESPONSES else _resolved(clock)
    if done and clock.stopped_at is not None:
        return clock.stopped_at, bool(clock.late)
    if clock.breached_at is not None:
        return clock.breached_at, True
    return None


def _attainment(clocks: Iterable[models.SlaClock], period: Period) -> dict[str, Any]:
    met = missed = 0
    for clock in clocks:
        decided = _decided(clock)
        if decided is not None and period.holds(decided[0]):
            missed += decided[1]
            met += not decided[1]
    return {"within_target": met, "missed": missed, "rate": _share(met, met + missed)}


def _csat(tickets: Iterable[models.Ticket], period: Period) -> dict[str, Any]:
    rated = [t for t in tickets if t.rating and period.holds(t.rated_at)]
    good = sum(1 for t in rated if t.rating == "good")
    return {"good": good, "rated": len(rated), "rate": _share(good, len(rated))}


def _spread(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, median and 90th percentile (nearest rank) of business seconds."""
    if not seconds:
        return {"count": 0, "median_seconds": None, "p90_seconds": None}
    ordered = sorted(seconds)
    rank = math.ceil(0.9 * len(ordered))
    return {
        "count": len(ordered),
        "median_seconds": round(statistics.median(ordered), 1),
        "p90_seconds": round(ordered[rank - 1], 1),
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# --- the rows ---------------------------------------------------------------


def _tickets(period: Period) -> list[models.Ticket]:
    """Tickets that were opened, resolved or rated in the period."""
    rows = models.Ticket
    query = rows.select()
    if period.mailbox:
        query = query.where(rows.mailbox == period.mailbox.lower())
    touched = _any_within(period, rows.created_at, rows.resolved_at, rows.rated_at)
    return list(query.where(touched).order_by(rows.id))


def _clocks(period: Period) -> list[models.SlaClock]:
    """Clocks that stopped or were marked late in the period, with their tickets."""
    clocks = models.SlaClock
    query = clocks.select(clocks, models.Ticket).join(models.Ticket)
    if period.mailbox:
        query = query.where(models.Ticket.mailbox == period.mailbox.lower())
    touched = _any_within(period, clocks.stopped_at, clocks.breached_at)
    return list(query.where(touched).order_by(clocks.id))


def _any_within(period: Period, *columns: pw.Field) -> pw.Expression:
    """SQL: at least one of ``columns`` holds a time inside the period."""
    found = None
    for column in columns:
        inside = column.is_null(False)
        if period.since is not None:
            inside &= column >= period.since
        if period.until is not None:
            inside &= column < period.until
        found = inside if found is None else found | inside
    assert found is not None
    return found


def _last_responders(tickets: Sequence[models.Ticket]) -> dict[int, str]:
    """Ticket id -> the agent who answered it last, whenever that was."""
    clocks = models.SlaClock
    query = (
        clocks.select(clocks.ticket, clocks.stopped_by)
        .where(
            clocks.ticket.in_([t.id for t in tickets])
            & clocks.kind.in_(RESPONSES)
            & clocks.stopped_by.is_null(False)
        )
        .order_by(clocks.stopped_at, clocks.id)
    )
    rows: list[tuple[int, str]] = list(query.tuples())  # type: ignore[arg-type]
    return dict(rows)  # in answer order: the later answer wins


# --- what is waiting on us --------------------------------------------------


def action_required(
    config: Config, now: dt.datetime, mailbox: str | None = None
) -> list[dict[str, Any]]:
    """Tickets waiting on us, most urgent first, with the business time left to respond.

    Order: late ones first (the most overdue first), then by time left, then
    tickets without a target by priority and age.
    """
    rows = models.Ticket
    query = rows.select().where(rows.status.in_(tuple(sla.RUNNING)))
    if mailbox:
        query = query.where(rows.mailbox == mailbox.lower())
    found = []
    for ticket in query:
        box = config.mailbox_of(ticket.mailbox)
        clock, left = sla.owed_now(ticket, box, now)
        found.append((ticket, clock, left))
    rank = {p: i for i, p in enumerate(reversed(models.Ticket.PRIORITIES))}
    found.sort(
        key=lambda item: (
            item[2] is None,
            item[2] if item[2] is not None else 0.0,
            rank.get(item[0].priority, 9),
            item[0].created_at,
        )
    )
    return [_waiting(ticket, clock, left) for ticket, clock, left in found]


def _waiting(
    ticket: models.Ticket, clock: models.SlaClock | None, left: float | None
) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "mailbox": ticket.mailbox,
        "status": ticket.status,
        "priority": ticket.priority,
        "category": ticket.category,
        "subject": ticket.subject,
        "requester": ticket.requester_email,
        "assignee": ticket.assignee,
        "created_at": iso(ticket.created_at),
        "owed": clock.kind if clock is not None else None,
        "due_at": iso(clock.due_at) if clock is not None else None,
        "seconds_left": round(left) if left is not None else None,
        "late": left is not None and left < 0,
    }
