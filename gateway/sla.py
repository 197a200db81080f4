"""SLA clocks: what a ticket is owed, by when, in the mailbox's business time.

The ticket step calls these functions inside its transaction whenever a
ticket is created, changes status or priority, or gets an agent's answer;
the timed jobs (:mod:`gateway.lifecycle`) only compare the stored
``due_at`` and ``warn_at`` with now.

A ticket has up to three kinds of clock (rows of ``sla_clock``):

    first_response   from creation to the first public answer of an agent
    next_response    from a customer's message after an answer, to the next answer
    resolution       from creation to resolved; resumes if the customer reopens

Clocks run in the mailbox's business hours and pause while the ticket waits
on the customer (or is resolved or closed). Every due time is derived the
same way: the instant when ``target + paused`` business seconds have passed
since the clock started. So a pause, a priority change or a new target all
come down to recomputing one formula, and the figures a report reads
(``business_seconds``, ``late``) never count time spent waiting on the
customer.
"""

from __future__ import annotations

import datetime as dt

from gateway import models
from gateway.config import Mailbox

RUNNING = frozenset({"new", "open"})  # waiting on us: clocks run
RESPONSES = ("first_response", "next_response")


def on_created(ticket: models.Ticket, mailbox: Mailbox, now: dt.datetime) -> None:
    """A new ticket owes a first response and a resolution."""
    for kind in ("first_response", "resolution"):
        _start(ticket, mailbox, kind, now)


def on_status(
    ticket: models.Ticket, mailbox: Mailbox, old: str, new: str, now: dt.datetime
) -> None:
    """Pause, resume or stop the clocks for a status change from ``old`` to ``new``."""
    if new in RUNNING and old not in RUNNING:
        for clock in _clocks(ticket):
            if clock.paused_at is not None:
                _resume(clock, mailbox, now)
        resolution = _latest(ticket, "resolution")
        if resolution is not None and resolution.stopped_at is not None:
            _reopen(resolution, mailbox, now)
    elif new not in RUNNING and old in RUNNING:
        for clock in _clocks(ticket):
            if clock.paused_at is None:
                clock.paused_at = now
                clock.save()
    if new in {"resolved", "closed"}:
        resolution = _running(ticket, ("resolution",))
        if resolution is not None:
            _stop(resolution, mailbox, now, by=None)
    if new == "closed":
        # Closed without an answer (spam, a duplicate): the owed response is
        # no longer owed. It is stopped without an agent, so reports leave it
        # out of response times, but a breach already recorded stays.
        for clock in _clocks(ticket, RESPONSES):
            _stop(clock, mailbox, now, by=None)


def on_customer_message(ticket: models.Ticket, mailbox: Mailbox, now: dt.datetime) -> None:
    """A customer wrote (after ``on_status`` reopened the ticket, if it did).

    If no response is owed yet, a next-response clock starts now; a message
    that adds to an unanswered one changes nothing. A ticket from before
    SLA clocks existed (schema 1) gets its clocks here: a first response if
    it was never answered, and a resolution clock.
    """
    if ticket.status not in RUNNING:
        return
    if not models.SlaClock.select().where(models.SlaClock.ticket == ticket).exists():
        first = ticket.first_responded_at is None
        _start(ticket, mailbox, "first_response" if first else "next_response", now)
        _start(ticket, mailbox, "resolution", now)
    elif _running(ticket, RESPONSES) is None:
        _start(ticket, mailbox, "next_response", now)


def on_agent_answer(ticket: models.Ticket, mailbox: Mailbox, agent: str, now: dt.datetime) -> None:
    """An agent's public answer stops the response owed, and counts as a response."""
    clock = _running(ticket, RESPONSES)
    if clock is not None:
        _stop(clock, mailbox, now, by=agent)
    if ticket.first_responded_at is None:
        ticket.first_responded_at = now
        ticket.save()


def on_priority(ticket: models.Ticket, mailbox: Mailbox) -> None:
    """Running clocks take the new priority's targets."""
    for clock in _clocks(ticket):
        clock.priority = ticket.priority
        clock.target_seconds = mailbox.sla.target(clock.kind, ticket.priority)
        _schedule(clock, mailbox)
        clock.save()


def owed(ticket: models.Ticket) -> models.SlaClock | None:
    """The response clock that is running on ``ticket``, if one is."""
    return _running(ticket, RESPONSES)


def owed_now(
    ticket: models.Ticket, mailbox: Mailbox, now: dt.datetime
) -> tuple[models.SlaClock | None, float | None]:
    """The response owed on a ticket waiting on us, and the seconds left (see ``remaining``)."""
    clock = owed(ticket) if ticket.status in RUNNING else None
    return clock, remaining(clock, mailbox, now) if clock is not None else None


def remaining(clock: models.SlaClock, mailbox: Mailbox, now: dt.datetime) -> float | None:
    """Seconds left before ``clock`` is due, or None without a target.

    Before the due time: business seconds left (what the team has to work
    with). After it: minus the real seconds since (how long the customer has
    been kept waiting past the promise), so a late ticket stays late, and
    grows later, through nights and days off.
    """
    if clock.due_at is None:
        return None
    if now <= clock.due_at:
        return mailbox.hours.elapsed(now, clock.due_at)
    return -(now - clock.due_at).total_seconds()


# --- one clock -------------------------------------------------------------


def _start(ticket: models.Ticket, mailbox: Mailbox, kind: str, now: dt.datetime) -> None:
    clock = models.SlaClock(
        ticket=ticket,
        kind=kind,
        priority=ticket.priority,
        target_seconds=mailbox.sla.target(kind, ticket.priority),
        started_at=now,
    )
    _schedule(clock, mailbox)
    clock.save()


def _schedule(clock: models.SlaClock, mailbox: Mailbox) -> None:
    """Due and warning instants: the target plus the pauses, in business time."""
    if clock.target_seconds is None:
        clock.due_at = clock.warn_at = None
        return
    hours, target = mailbox.hours, float(clock.target_seconds)
    clock.due_at = hours.add(clock.started_at, target + clock.paused_seconds)
    share = target * mailbox.sla.warn_at
    clock.warn_at = hours.add(clock.started_at, share + clock.paused_seconds)


def _resume(clock: models.SlaClock, mailbox: Mailbox, now: dt.datetime) -> None:
    assert clock.paused_at is not None
    clock.paused_seconds += mailbox.hours.elapsed(clock.paused_at, now)
    clock.paused_at = None
    _schedule(clock, mailbox)
    clock.save()


def _reopen(clock: models.SlaClock, mailbox: Mailbox, now: dt.datetime) -> None:
    """A resolved ticket reopened: its resolution clock runs on, the gap paused."""
    assert clock.stopped_at is not None
    clock.paused_seconds += mailbox.hours.elapsed(clock.stopped_at, now)
    clock.stopped_at = clock.stopped_by = clock.business_seconds = clock.late = None
    clock.paused_at = None
    _schedule(clock, mailbox)
    clock.save()


def _stop(clock: models.SlaClock, mailbox: Mailbox, now: dt.datetime, *, by: str | None) -> None:
    """Stop the clock: its running time, pauses excluded, and whether it was late.

    Late means what the breach job means: past ``due_at`` (or already marked
    breached). A clock stopped while paused has a stale ``due_at``; it is
    late if its running time exceeded the target.
    """
    hours = mailbox.hours
    paused = clock.paused_at is not None
    if clock.paused_at is not None:  # the pause ends here: it counts as paused time
        clock.paused_seconds += hours.elapsed(clock.paused_at, now)
    clock.business_seconds = max(0.0, hours.elapsed(clock.started_at, now) - clock.paused_seconds)
    target = clock.target_seconds
    over = target is not None and clock.business_seconds > target
    past_due = clock.due_at is not None and now > clock.due_at
    clock.late = clock.breached_at is not None or (over if paused else past_due)
    clock.stopped_at, clock.stopped_by, clock.paused_at = now, by, None
    clock.save()


def _clocks(
    ticket: models.Ticket,
    kinds: tuple[str, ...] = ("first_response", "next_response", "resolution"),
) -> list[models.SlaClock]:
    """The clocks of ``ticket`` of these kinds that have not stopped."""
    rows = models.SlaClock
    query = rows.select().where(
        (rows.ticket == ticket) & rows.kind.in_(kinds) & rows.stopped_at.is_null()
    )
    return list(query.order_by(rows.id))


def _latest(ticket: models.Ticket, kind: str) -> models.SlaClock | None:
    rows = models.SlaClock
    found: models.SlaClock | None = (
        rows.select()
        .where((rows.ticket == ticket) & (rows.kind == kind))
        .order_by(rows.id.desc())
        .first()
    )
    return found


def _running(ticket: models.Ticket, kinds: tuple[str, ...]) -> models.SlaClock | None:
    rows = models.SlaClock
    found: models.SlaClock | None = (
        rows.select()
        .where((rows.ticket == ticket) & rows.kind.in_(kinds) & rows.stopped_at.is_null())
        .order_by(rows.id.desc())
        .first()
    )
    return found
