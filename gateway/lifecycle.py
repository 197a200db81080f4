"""Timed steps of a ticket's life, run by the scheduler every minute.

    warn          a response or resolution clock passed its warning share:
                  the assignee (or the mailbox's agents) hear of it
    breach        a clock passed its due time: marked, the admins (and the
                  assignee) hear of it
    remind        a ticket waited on the customer for remind_after: one reminder
    auto_resolve  ... for auto_resolve_after: resolved, the customer told
    auto_close    a resolved ticket nobody answered for auto_close_after:
                  closed, the customer told

Each job compares stored instants with now, so it does not matter how long
the daemon was down: at start it does what fell due meanwhile, once. Each
step is done inside one transaction with the rows it changes claimed (FOR
UPDATE SKIP LOCKED on PostgreSQL; SQLite has one writer at a time), and the
row's own mark (``warned_at``, ``breached_at``, ``reminded_at``, the status)
is what the next run's query excludes: several instances sharing one
PostgreSQL never do a step twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import peewee as pw

from gateway import metrics, models, sla, tickets
from gateway.config import Config, Mailbox
from gateway.db import transaction, utcnow
from gateway.events import record
from gateway.notify import Notifier, duration_text, local_time, ticket_ref
from gateway.queries import iso

log = logging.getLogger("gateway.lifecycle")

BATCH = 100  # rows per transaction: a backlog after downtime is done in short steps


class Jobs:
    """The timed jobs, bound to the running configuration (replaced on reload)."""

    def __init__(self, config: Config, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier

    def run_all(self) -> dict[str, int]:
        """Every job once, in order; how many rows each handled.

        Breach before warn (a late clock is not warned about), auto-resolve
        before remind (after downtime, a ticket due for both is resolved,
        not reminded a moment before). A job that fails is logged and the
        others still run.
        """
        steps = (
            ("breach", self.breach),
            ("warn", self.warn),
            ("auto_resolve", self.auto_resolve),
            ("remind", self.remind),
            ("auto_close", self.auto_close),
        )
        return {name: self._drain(name, step) for name, step in steps}

    @staticmethod
    def _drain(name: str, step: Callable[[], int]) -> int:
        total = 0
        try:
            while (done := step()) > 0:
                total += done
                if done < BATCH:
                    break
        except Exception:  # the next minute's run tries again
            log.exception("lifecycle job %s failed", name)
        return total

    # --- SLA clocks -------------------------------------------------------------

    def warn(self) -> int:
        """Warn about clocks past their warning share and not yet due."""
        now = utcnow()
        clocks = models.SlaClock
        with transaction(models.database.obj):
            due = _claim_clocks(
                clocks.warned_at.is_null() & (clocks.warn_at <= now) & (clocks.due_at > now)
            )
            for clock in due:
                clock.warned_at = now
                clock.save()
                mailbox = self._mailbox(clock.ticket)
                record(clock.ticket, "sla_warning", clock=clock.kind, due_at=iso(clock.due_at))
                for agent in self.notifier.responsible(clock.ticket):
                    self.notifier.to_agent(
                        clock.ticket,
                        "sla_warning",
                        agent,
                        message=tickets.latest_customer_message(clock.ticket),
                        sla=_sla_context(clock, mailbox, now),
                    )
        return len(due)

    def breach(self) -> int:
        """Mark clocks past their due time, and tell the admins and the assignee."""
        now = utcnow()
        clocks = models.SlaClock
        with transaction(models.database.obj):
            late = _claim_clocks(clocks.breached_at.is_null() & (clocks.due_at <= now))
            for clock in late:
                clock.breached_at = now
                clock.save()
                ticket, mailbox = clock.ticket, self._mailbox(clock.ticket)
                log.warning(
                    "%s %s is late (due %s)", ticket_ref(ticket), clock.kind, iso(clock.due_at)
                )
                record(ticket, "sla_breached", clock=clock.kind, due_at=iso(clock.due_at))
                told = {a.email: a for a in mailbox.admins}
                for agent in self.notifier.responsible(ticket):
                    if ticket.assignee or not told:
                        told.setdefault(agent.email, agent)
                for agent in told.values():
                    self.notifier.to_agent(
                        ticket,
                        "sla_breached",
                        agent,
                        message=tickets.latest_customer_message(ticket),
                        sla=_sla_context(clock, mailbox, now),
                    )
        metrics.SLA_BREACHES.inc(len(late))  # counted once the marks are committed
        return len(late)

    # --- waiting on the customer, resolved ------------------------------------

    def remind(self) -> int:
        """One reminder to customers we have waited on for the mailbox's remind_after."""
        now = utcnow()
        done = 0
        for mailbox in self.config.mailboxes:
            after = mailbox.lifecycle.remind_after
            if after is None:
                continue
            with transaction(models.database.obj):
                waiting = _claim_tickets(
                    mailbox,
                    "waiting_on_customer",
                    models.Ticket.status_changed_at <= now - dt.timedelta(seconds=after),
                    models.Ticket.reminded_at.is_null(),
                )
                for ticket in waiting:
                    ticket.reminded_at = now
                    ticket.save()
                    record(ticket, "customer_reminded")
                    self.notifier.waiting_reminder(
                        ticket, self.notifier.customers(ticket), _resolve_days(mailbox, now, ticket)
                    )
                done += len(waiting)
        return done

    def auto_resolve(self) -> int:
        """Resolve tickets whose customer did not answer within auto_resolve_after."""
        return self._finish(
            "waiting_on_customer",
            "resolved",
            lambda m: m.lifecycle.auto_resolve_after,
            models.Ticket.status_changed_at,
        )

    def auto_close(self) -> int:
        """Close resolved tickets nobody answered within auto_close_after."""
        return self._finish(
            "resolved",
            "closed",
            lambda m: m.lifecycle.auto_close_after,
            models.Ticket.resolved_at,
        )

    def _finish(
        self,
        status: str,
        new: str,
        delay: Callable[[Mailbox], int | None],
        since: pw.Field,
    ) -> int:
        now = utcnow()
        done = 0
        for mailbox in self.config.mailboxes:
            seconds = delay(mailbox)
            if seconds is None:
                continue
            with transaction(models.database.obj):
                due = _claim_tickets(mailbox, status, since <= now - dt.timedelta(seconds=seconds))
                for ticket in due:
                    why = f"no answer from the customer for {duration_text(seconds)}"
                    tickets.set_status(ticket, new, mailbox=mailbox, actor="system", why=why)
                    self.notifier.status_to_customers(
                        ticket, status, self.notifier.customers(ticket)
                    )
                done += len(due)
        return done

    def _mailbox(self, ticket: models.Ticket) -> Mailbox:
        return self.config.mailbox_of(ticket.mailbox)


def _claim_clocks(condition: pw.Expression) -> list[models.SlaClock]:
    """Running clocks of tickets waiting on us that meet ``condition``, claimed."""
    clocks = models.SlaClock
    query = (
        clocks.select(clocks, models.Ticket)
        .join(models.Ticket)
        .where(
            condition
            & clocks.stopped_at.is_null()
            & clocks.paused_at.is_null()
            & models.Ticket.status.in_(tuple(sla.RUNNING))
        )
        .order_by(clocks.due_at, clocks.id)
        .limit(BATCH)
    )
    if isinstance(models.database.obj, pw.PostgresqlDatabase):
        query = query.for_update(of=clocks, skip_locked=True)
    return list(query)


def _claim_tickets(
    mailbox: Mailbox, status: str, *conditions: pw.Expression
) -> list[models.Ticket]:
    rows = models.Ticket
    where = (rows.mailbox == mailbox.address) & (rows.status == status)
    for condition in conditions:
        where &= condition
    query = rows.select().where(where).order_by(rows.id).limit(BATCH)
    if isinstance(models.database.obj, pw.PostgresqlDatabase):
        query = query.for_update(skip_locked=True)
    return list(query)


def _sla_context(clock: models.SlaClock, mailbox: Mailbox, now: dt.datetime) -> dict[str, str]:
    """The ``sla`` variable of the warning and breach mails."""
    left = sla.remaining(clock, mailbox, now) or 0.0
    return {
        "kind": clock.kind,
        "due_at": local_time(mailbox, clock.due_at) if clock.due_at else "",
        "left": duration_text(left) if left > 0 else "",
        "late": duration_text(-left) if left <= -60 else "",  # under a minute: just due
        "target": duration_text(clock.target_seconds or 0),
    }


def _resolve_days(mailbox: Mailbox, now: dt.datetime, ticket: models.Ticket) -> int | None:
    """Whole days until the waiting ticket is resolved on its own, if it will be."""
    after = mailbox.lifecycle.auto_resolve_after
    if after is None or ticket.status_changed_at is None:
        return None
    left = ticket.status_changed_at + dt.timedelta(seconds=after) - now
    return max(1, round(left.total_seconds() / 86400))
