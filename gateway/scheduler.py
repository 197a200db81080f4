"""Scheduler: the daemon's timed work, on its own event loop (APScheduler).

For now one job: purge what has expired in the portal (one-time codes, links
past their lifetime, sessions past their timeouts), so that nothing a
stranger can create, such as an anonymous session from opening a form, piles
up. SLA clocks, reminders and auto-close join here with the ticket lifecycle
work. Each job runs its database work in the Store's threads, never on the
loop; a job that fails is logged and tried again at its next turn.
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.db import Store, transaction
from gateway.models import database
from gateway.portal import access

log = logging.getLogger("gateway.scheduler")

PURGE_EVERY = 600  # seconds


def purge_expired() -> int:
    """Delete expired portal codes, links and sessions; how many rows went."""
    with transaction(database.obj):
        return access.purge()


def start(store: Store) -> AsyncIOScheduler:
    """Start the scheduler on the running loop with every job."""
    scheduler = AsyncIOScheduler()

    async def purge() -> None:
        try:
            removed = await store.run(purge_expired)
        except Exception:  # logged, and tried again at the next turn
            log.exception("purge of expired portal data failed")
            return
        if removed:
            log.info("purged %d expired portal code(s), link(s) and session(s)", removed)

    # The first run at start catches up on what expired while the daemon was down.
    scheduler.add_job(
        purge,
        "interval",
        seconds=PURGE_EVERY,
        id="purge",
        coalesce=True,
        max_instances=1,
        next_run_time=dt.datetime.now(dt.UTC),
    )
    scheduler.start()
    return scheduler
