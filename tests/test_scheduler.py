"""Timed work: expired portal data is purged, live data kept (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

from gateway import models
from gateway.db import utcnow
from gateway.portal import access
from gateway.scheduler import purge_expired
from tests.helpers import GatewayThread, mail


def test_purge_removes_only_what_expired(gateway: GatewayThread) -> None:
    gateway.send(mail())
    with gateway.db():
        ticket = models.Ticket.get()
        access.new_link(ticket, "customer@example.org", lifetime=3600)
        old_link = access.new_link(ticket, "customer@example.org", lifetime=3600)
        models.GuestLink.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
            models.GuestLink.token_hash == access.digest(old_link)
        ).execute()
        live, idle = access.new_session(), access.new_session()
        idle.row.last_seen_at = utcnow() - dt.timedelta(hours=2)
        idle.row.save()
        access.new_code(b"s" * 32, live, "customer@example.org")
        stale = access.new_code(b"s" * 32, idle, "customer@example.org")
        assert stale
        models.GuestCode.update(expires_at=utcnow() - dt.timedelta(seconds=1)).where(
            models.GuestCode.session == idle.row
        ).execute()

        removed = purge_expired()

        assert removed == 3  # the old link, the idle session, its expired code
        assert models.GuestLink.select().count() == 1  # the live one
        assert [s.id for s in models.GuestSession.select()] == [live.row.id]
        assert [c.session_id for c in models.GuestCode.select()] == [live.row.id]
        assert access.valid_link(old_link) is None


def test_status_shows_each_jobs_last_run(gateway: GatewayThread) -> None:
    """Both jobs run at start; ``status`` reads their last run from the database."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with gateway.db():
            if models.JobRun.select().count() == 2:
                break
        time.sleep(0.1)
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--json", "--config", str(gateway.config.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    jobs = {job["name"]: job for job in json.loads(done.stdout)["jobs"]}
    assert set(jobs) == {"lifecycle", "purge"}
    assert all(job["runs"] >= 1 and job["error"] is None for job in jobs.values())
    text = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--config", str(gateway.config.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "job lifecycle: last run " in text and "job purge: last run " in text
