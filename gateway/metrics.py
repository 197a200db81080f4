"""Metrics for Prometheus: GET /metrics on ``metrics_listen``.

Two kinds of figures:

* counters this process keeps as things happen: messages accepted,
  deferred (our 451) and quarantined, recipients refused, tickets created,
  mails sent/deferred/failed, SLA breaches. They start at zero with each
  process, as Prometheus counters do; with several instances, sum them.
* gauges read from the database at each scrape, the same for every
  instance: the inbound and outbox queues by status, the IMAP pollers,
  the timed jobs' last runs, the tickets waiting on us and how many are
  late.

The registry is our own (not prometheus_client's global one), so only
these figures are exposed; the process's own (CPU, memory) are added by
its standard collectors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import peewee as pw
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway import models, queries, sla
from gateway.db import utcnow

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

MESSAGES = Counter(
    "gateway_messages",
    "Messages by what intake did with them: accepted, deferred (451), quarantined",
    ["outcome"],
    registry=REGISTRY,
)
RECIPIENTS_REFUSED = Counter(
    "gateway_recipients_refused",
    "RCPT TO refused: unknown (550) or too many (452)",
    ["reason"],
    registry=REGISTRY,
)
TICKETS_CREATED = Counter("gateway_tickets_created", "Tickets created", registry=REGISTRY)
MAILS = Counter(
    "gateway_mails",
    "Outbound delivery attempts by result: sent, deferred, failed",
    ["result"],
    registry=REGISTRY,
)
SLA_BREACHES = Counter(
    "gateway_sla_breaches", "SLA clocks marked late by the breach job", registry=REGISTRY
)


class _Database(Collector):
    """Gauges read from the database at each scrape (call within a connection)."""

    def describe(self) -> list[Metric]:
        """Nothing up front: describing would mean a database query at import."""
        return []

    def collect(self) -> Iterator[Metric]:
        counts = queries.counts_by_status()
        for name, help_text in (
            ("inbound", "Accepted messages by processing status"),
            ("outbox", "Outbound mails by delivery status"),
        ):
            family = GaugeMetricFamily(f"gateway_{name}", help_text, labels=["status"])
            for status, count in sorted(counts[name].items()):
                family.add_metric([status], count)
            yield family
        yield from _imap()
        yield from _jobs()
        yield from _waiting()


def _imap() -> Iterator[Metric]:
    connected = GaugeMetricFamily(
        "gateway_imap_connected", "1 when the poller is connected", labels=["mailbox", "folder"]
    )
    backlog = GaugeMetricFamily(
        "gateway_imap_backlog", "Messages left on the server", labels=["mailbox", "folder"]
    )
    for row in models.ImapCheckpoint.select():
        connected.add_metric([row.mailbox, row.folder], 1 if row.connected else 0)
        backlog.add_metric([row.mailbox, row.folder], row.backlog)
    yield connected
    yield backlog


def _jobs() -> Iterator[Metric]:
    last = GaugeMetricFamily(
        "gateway_job_last_run_timestamp_seconds", "When a timed job last ran", labels=["job"]
    )
    ok = GaugeMetricFamily("gateway_job_last_run_ok", "1 when its last run worked", labels=["job"])
    for row in models.JobRun.select():
        last.add_metric([row.name], (row.started_at - _EPOCH).total_seconds())
        ok.add_metric([row.name], 0 if row.error else 1)
    yield last
    yield ok


def _waiting() -> Iterator[Metric]:
    tickets = models.Ticket
    waiting = tickets.select(pw.fn.COUNT(tickets.id)).where(tickets.status.in_(tuple(sla.RUNNING)))
    clocks = models.SlaClock
    late = (
        clocks.select(pw.fn.COUNT(clocks.id))
        .join(tickets)
        .where(
            clocks.stopped_at.is_null()
            & clocks.due_at.is_null(False)
            & (clocks.due_at < utcnow())
            & tickets.status.in_(tuple(sla.RUNNING))
        )
    )
    yield GaugeMetricFamily(
        "gateway_tickets_waiting_on_us", "Tickets new or open", value=waiting.scalar() or 0
    )
    yield GaugeMetricFamily(
        "gateway_sla_clocks_late",
        "Running SLA clocks past their due time",
        value=late.scalar() or 0,
    )


_EPOCH = dt.datetime(1970, 1, 1)
REGISTRY.register(_Database())


def exposition() -> bytes:
    """The text format Prometheus scrapes (call in a database connection)."""
    data: bytes = generate_latest(REGISTRY)
    return data
