"""Scheduler: the daemon's timed work, on its own event loop (APScheduler).

Two jobs:

    lifecycle   every minute: SLA warnings and breaches, reminders to
                customers we wait on, auto-resolve and auto-close
                (:mod:`gateway.lifecycle`)
    purge       every ten minutes: what has expired in the portal (one-time
                codes, links past their lifetime, sessions past their
                timeouts), so nothing a stranger can create piles up

Both run once at start, which is how work that fell due while the daemon
was down gets done (once: every job marks what it did). Each job runs its
database work in the Store's threads, never on the loop; a job that fails
is logged and tried again at its next turn. The last run of each job is
kept in ``job_run`` for ``ticket-gateway status``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway import models
from gateway.api import idempotency
from gateway.db import Store, transaction, utcnow
from gateway.lifecycle import Jobs
from gateway.models import database
from gateway.portal import access

log = logging.getLogger("gateway.scheduler")

PURGE_EVERY = 600  # seconds
LIFECYCLE_EVERY = 60  # seconds: SLA warnings are due to the minute


def purge_expired() -> int:
    """Delete expired portal codes, links and sessions, and old API answers; how many."""
    with transaction(database.obj):
        return access.purge() + idempotency.purge()


def start(
    store: Store,
    jobs: Jobs,
    on_queued: Callable[[], None] = lambda: None,
    lifecycle_every: int = LIFECYCLE_EVERY,
) -> AsyncIOScheduler:
    """Start the scheduler on the running loop with every job.

    ``on_queued`` is called after the lifecycle job queued mail, to wake the
    outbox worker.
    """
    scheduler = AsyncIOScheduler()

    async def purge() -> int:
        removed = await store.run(purge_expired)
        if removed:
            log.info("purged %d expired portal code(s), link(s) and session(s)", removed)
        return removed

    async def lifecycle() -> int:
        done = await store.run(jobs.run_all)
        if any(done.values()):
            log.info("lifecycle: %s", ", ".join(f"{k} {v}" for k, v in done.items() if v))
            on_queued()
        return sum(done.values())

    for name, job, every in (
        ("lifecycle", lifecycle, lifecycle_every),
        ("purge", purge, PURGE_EVERY),
    ):
        scheduler.add_job(
            _guarded(store, name, job),
            "interval",
            seconds=every,
            id=name,
            coalesce=True,
            max_instances=1,
            next_run_time=dt.datetime.now(dt.UTC),
        )
    scheduler.start()
    return scheduler


def note_run(name: str, started: dt.datetime, done: int, error: str | None) -> None:
    """Record a job's run in ``job_run`` (the latest per job, whichever instance ran it)."""
    row = models.JobRun
    with transaction(database.obj):
        row.insert(
            name=name, started_at=started, finished_at=utcnow(), done=done, error=error, runs=1
        ).on_conflict(
            conflict_target=[row.name],
            update={
                row.started_at: started,
                row.finished_at: utcnow(),
                row.done: done,
                row.error: error,
                row.runs: row.runs + 1,
            },
        ).execute()


def _guarded(
    store: Store, name: str, job: Callable[[], Awaitable[int]]
) -> Callable[[], Awaitable[None]]:
    """``job``, logging (not raising) its failure and recording the run."""

    async def run() -> None:
        started = utcnow()
        done, error = 0, None
        try:
            done = await job()
        except asyncio.CancelledError:  # the daemon is stopping: its work is in a
            return  # transaction that commits or rolls back whole; the next start redoes it
        except Exception as exc:  # logged, and tried again at the next turn
            log.exception("%s job failed", name)
            error = str(exc) or type(exc).__name__
        try:
            await store.run(note_run, name, started, done, error)
        except asyncio.CancelledError:
            return
        except Exception:  # the record is for status only; the job itself is done
            log.exception("could not record the %s job's run", name)

    return run
