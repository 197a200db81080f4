"""The daemon: one process, one event loop, every step wired together.

``serve`` opens the database, resumes messages a previous run accepted but
did not process, binds the SMTP and LMTP listeners, starts one IMAP poller
per mailbox with ``[mailbox.imap]``, and runs until SIGTERM or SIGINT. On the
way out it stops the pollers (a poller cut short mid-batch only re-fetches
what intake already has), stops accepting connections, lets the sessions in
flight finish, and waits for the processor to drain what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import CONTENT_TYPE_LATEST

from gateway import (
    __version__,
    agents,
    dkim,
    listener,
    metrics,
    models,
    process,
    queries,
    scheduler,
    systemd,
    tls,
)
from gateway import config as config_module
from gateway.api.views import Api
from gateway.config import Config, ListenAddress
from gateway.db import Store, open_database, redact, transaction, utcnow
from gateway.deliver import transport_from_url
from gateway.errors import ConfigError
from gateway.intake import Intake
from gateway.lifecycle import Jobs
from gateway.notify import Notifier
from gateway.outbox import OutboxWorker
from gateway.poller import Poller
from gateway.portal.app import Portal
from gateway.process import Processor, Result
from gateway.render import Renderer
from gateway.worker import WorkerProcessor

log = logging.getLogger("gateway.daemon")

SHUTDOWN_GRACE = 30.0  # seconds for SMTP sessions in flight to finish
HTTP_GRACE = 10.0  # seconds for portal and API requests in flight
CLOSE_GRACE = 5.0  # seconds for closed listeners to let go of their sockets
PROCESS_GRACE = 10.0  # seconds for the processor to finish what it holds (the rest
# is durable and resumes at the next start)
WORKER_DOWN = 60.0  # seconds without a processing worker before the watchdog is told


class Gateway:
    """The running gateway: database, processor and listeners."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: Store | None = None
        self.processor: Processor | WorkerProcessor | None = None
        self.outbox: OutboxWorker | None = None
        self.servers: dict[str, asyncio.Server] = {}
        self.handlers: dict[str, listener.Handler] = {}
        self.notifier: Notifier | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pollers: dict[str, Poller] = {}
        self._poller_tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._runners: list[web.AppRunner] = []  # besides the portal's
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.reloads: set[asyncio.Future[None]] = set()  # reloads in progress
        self.scheduler: AsyncIOScheduler | None = None
        self.jobs: Jobs | None = None
        self.portal: Portal | None = None
        self.api: Api | None = None

    async def start(self) -> None:
        """Open the database, resume unfinished work, and bind every listener."""
        cfg = self.config.gateway
        # Even at start, database work stays off the event loop's thread.
        database = await asyncio.to_thread(
            open_database,
            cfg.database,
            self.config.base_dir,
            ticket_number_start=cfg.ticket_number_start,
        )
        log.info("database %s", redact(cfg.database))
        self.store = Store(database)
        self.outbox = self._outbox_worker(self.store)
        secret = agents.gateway_secret(self.config)
        self.notifier = Notifier(self.config, Renderer(cfg.templates_dir), secret)
        await self.store.run(agents.sync, self.config)
        self.processor = self._processor(self.store, self.outbox)
        self._tasks = [
            asyncio.create_task(self.processor.run(), name="processor"),
            asyncio.create_task(self.outbox.run(), name="outbox"),
        ]
        await self.processor.recover()
        intake = Intake(self.store)
        self.processor.busy = intake.busy
        for protocol, where in (("smtp", cfg.smtp_listen), ("lmtp", cfg.lmtp_listen)):
            if where is not None:
                await self._listen(intake, protocol, where)
        if cfg.portal_listen is not None:
            await self._serve_portal(intake, cfg.portal_listen)
        if cfg.metrics_listen is not None:
            await self._serve_metrics(cfg.metrics_listen)
        self._start_pollers(intake)
        self.jobs = Jobs(self.config, self.notifier)
        self.scheduler = scheduler.start(
            self.store,
            self.jobs,
            on_queued=self.outbox.wake,
            lifecycle_every=cfg.timed_jobs_every,
        )
        await self.store.run(_register, self.instance, self.listening())
        log.info(
            "ready: %d mailbox(es): %s",
            len(self.config.mailboxes),
            ", ".join(m.address for m in self.config.mailboxes),
        )

    def _start_pollers(self, intake: Intake) -> None:
        """One IMAP poller task per mailbox that has an [mailbox.imap] table."""
        assert self.store is not None and self.processor is not None
        for mailbox in self.config.mailboxes:
            if mailbox.imap is None:
                continue
            poller = Poller(self.config, mailbox, self.store, intake, self.processor)
            self.pollers[mailbox.address] = poller
            self._poller_tasks.append(
                asyncio.create_task(poller.run(), name=f"poller {mailbox.address}")
            )
            log.info(
                "reading %s from IMAP %s:%d folder %s (%s)",
                mailbox.address,
                mailbox.imap.host,
                mailbox.imap.port,
                mailbox.imap.folder,
                mailbox.imap.security,
            )

    async def _stop_pollers(self) -> None:
        for task in self._poller_tasks:
            task.cancel()
        for task in self._poller_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._poller_tasks = []

    def _processor(self, store: Store, outbox: OutboxWorker) -> Processor | WorkerProcessor:
        """Processing in a worker process, or in this one (``processing`` in [gateway])."""

        def processed(_inbound_id: int, result: Result) -> None:
            process.count(result)
            outbox.wake()

        if self.config.gateway.processing == "worker":
            return WorkerProcessor(store, self.config, on_processed=processed)
        assert self.notifier is not None
        return Processor(store, self.config, self.notifier, on_processed=processed)

    def _outbox_worker(self, store: Store) -> OutboxWorker:
        cfg = self.config.gateway
        try:
            transport = transport_from_url(cfg.outbound, self.config.base_dir)
        except ValueError as exc:
            raise ConfigError([f"{self.config.path}: gateway.outbound: {exc}"]) from exc
        log.info("outbound mail via %s", transport.describe())
        signer = None
        if cfg.dkim_key_file is not None:
            signer = _dkim_signer(self.config)
        return OutboxWorker(store, self.config, transport, signer)

    async def reload(self) -> bool:
        """Re-read the configuration and apply it without dropping a connection.

        A file with problems is refused, the reason logged, the old one kept.
        Listener addresses and the database are fixed at start: changing them
        needs a restart, and the log says so.
        """
        try:
            new = await asyncio.to_thread(config_module.load, self.config.path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused, keeping the running configuration: %s", problem)
            return False
        old = self.config.gateway
        for key in ("database", "smtp_listen", "lmtp_listen", "outbound", "processing"):
            if getattr(old, key) != getattr(new.gateway, key):
                log.warning("reload: %s changed; it takes effect at the next restart", key)
        old_imap = {m.address: m.imap for m in self.config.mailboxes}
        if old_imap != {m.address: m.imap for m in new.mailboxes}:
            log.warning("reload: an [mailbox.imap] table changed; it takes effect at restart")
        self.config = new
        if self.processor is not None:
            self.processor.reload(new)
        components = (
            self.notifier,
            self.outbox,
            self.portal,
            self.api,
            self.jobs,
            *self.handlers.values(),
        )
        for component in components:
            if component is not None:
                component.config = new
        self._reload_tls(new)
        assert self.store is not None
        changes = await self.store.run(agents.sync, new)
        log.info("reloaded %s: %d roster change(s)", new.path, len(changes))
        return True

    def _reload_tls(self, config: Config) -> None:
        """Read the certificate again (renewals need no restart); keep the old on error."""
        handler = self.handlers.get("smtp")
        if handler is None:
            return
        try:
            handler.tls_context = _tls_context(config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: keeping the previous TLS certificate: %s", problem)
            return
        if handler.tls_context is not None:
            log.info("STARTTLS certificate (re)loaded from %s", config.gateway.tls_cert_file)

    def bound(self, protocol: str) -> str:
        """Where a listener is bound, e.g. ``127.0.0.1:2525`` (port 0 resolved)."""
        name = self.servers[protocol].sockets[0].getsockname()
        return name if isinstance(name, str) else f"{name[0]}:{name[1]}"

    async def _listen(self, intake: Intake, protocol: str, where: ListenAddress) -> None:
        if where.unix_path:
            _remove_stale_socket(Path(where.unix_path))
        assert self.processor is not None
        handler = listener.Handler(self.config, intake, self.processor, protocol)
        if protocol == "smtp":
            handler.tls_context = _tls_context(self.config)
        self.handlers[protocol] = handler
        self.servers[protocol] = await listener.start(handler, where)
        log.info("listening for %s on %s", protocol.upper(), self.bound(protocol))

    async def _serve_portal(self, intake: Intake, where: ListenAddress) -> None:
        """The guest portal, on this loop, at ``where``."""
        assert self.store is not None and self.processor is not None
        assert self.notifier is not None
        assert self.outbox is not None
        portal = Portal(
            self.config,
            self.store,
            intake,
            self.processor,
            self.notifier,
            self.notifier.secret,
            on_queued=self.outbox.wake,
        )
        self.portal = portal
        self.api = Api(self.config, self.store, intake, self.processor)
        app = portal.app()
        app.add_subapp("/api/v1", self.api.app())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, where.host, where.port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.servers["portal"] = server
        log.info(
            "portal and API (/api/v1) on %s (links use %s)",
            self.bound("portal"),
            self.config.gateway.portal_url or "no portal_url: no links in mail",
        )

    def stopped_workers(self) -> list[str]:
        """The daemon's long-running tasks that have ended (they never should).

        A processing worker that keeps failing to start counts too, after
        WORKER_DOWN seconds: systemd then restarts the whole daemon.
        """
        stopped = [task.get_name() for task in (*self._tasks, *self._poller_tasks) if task.done()]
        worker = self.processor if isinstance(self.processor, WorkerProcessor) else None
        if worker is not None and worker.worker_down_for() > WORKER_DOWN:
            stopped.append("processing worker")
        return stopped

    async def status_line(self) -> str:
        """The queues in one line; also tells ``status`` that this instance is alive."""
        assert self.store is not None
        counts = await self.store.run(queries.counts_by_status)
        await self.store.run(_register, self.instance, self.listening())
        return queries.status_line(counts)

    def listening(self) -> dict[str, str]:
        """Where each listener is bound, e.g. {"smtp": "127.0.0.1:2525"}."""
        return {name: self.bound(name) for name in self.servers}

    async def _serve_metrics(self, where: ListenAddress) -> None:
        """GET /metrics for Prometheus, on its own listener (keep it off the Internet)."""
        store = self.store
        assert store is not None

        async def scrape(_request: web.Request) -> web.Response:
            body = await store.run(metrics.exposition)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.add_routes([web.get("/metrics", scrape)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, where.host, where.port)
        await site.start()
        self._runners.append(runner)
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.servers["metrics"] = server
        log.info("metrics on http://%s/metrics", self.bound("metrics"))

    async def idle(self) -> None:
        """Wait until every message accepted so far is processed."""
        if self.processor is not None:
            await self.processor.idle()

    async def stop(self) -> None:
        """Stop polling and accepting, let sessions in flight finish, drain the processor.

        Mail listeners stop accepting first, then the HTTP side and the SMTP
        sessions wind down together; every wait is bounded so that the whole
        stop stays well inside systemd's TimeoutStopSec (60 s): at most
        SHUTDOWN_GRACE for sessions, then a few seconds each for the rest.
        """
        await self._stop_pollers()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None  # stop() may run twice (a signal, then the finally)
        mail = [s for name, s in self.servers.items() if name in self.handlers]
        for server in mail:
            server.close()
        runners = [r for r in (self._runner, *self._runners) if r is not None]
        self._runner, self._runners = None, []
        await asyncio.gather(
            *(_bounded(r.cleanup(), HTTP_GRACE) for r in runners),
            *(h.drain(SHUTDOWN_GRACE) for h in self.handlers.values()),
        )
        for name in ("portal", "metrics"):
            self.servers.pop(name, None)
        for server in mail:
            await _bounded(server.wait_closed(), CLOSE_GRACE)
        if self.processor is not None:
            await _bounded(self.processor.idle(), PROCESS_GRACE)
            await self.processor.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.store is not None:
            with contextlib.suppress(Exception):  # status only; the stop goes on
                await self.store.run(_unregister, self.instance)
            self.store.close()
        log.info("stopped")


async def _bounded(waiting: Awaitable[object], seconds: float) -> None:
    """Wait for ``waiting`` at most ``seconds``; a stop must not hang on one part."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waiting, seconds)


def _register(name: str, listeners: dict[str, str]) -> None:
    """Record (or refresh) this instance and its listeners for ``status``."""
    rows = models.Instance
    now = utcnow()
    with transaction(models.database.obj):
        _upsert_instance(rows, name, listeners, now)


def _upsert_instance(
    rows: type[models.Instance], name: str, listeners: dict[str, str], now: dt.datetime
) -> None:
    rows.insert(
        name=name,
        version=__version__,
        listeners=json.dumps(listeners),
        started_at=now,
        seen_at=now,
    ).on_conflict(
        conflict_target=[rows.name],
        update={rows.seen_at: now, rows.listeners: json.dumps(listeners)},
    ).execute()


def _unregister(name: str) -> None:
    models.Instance.delete().where(models.Instance.name == name).execute()


def _dkim_signer(config: Config) -> Callable[[bytes], bytes]:
    """A function that DKIM-signs a message with the configured key."""
    cfg = config.gateway
    assert cfg.dkim_key_file is not None
    key_file = cfg.dkim_key_file
    try:
        dkim.load_key(key_file)  # fail at start, not at the first mail
    except ValueError as exc:
        raise ConfigError([f"{config.path}: gateway.dkim_key_file: {exc}"]) from exc

    def sign(message: bytes) -> bytes:
        return dkim.sign(
            message, domain=cfg.dkim_domain, selector=cfg.dkim_selector, key_file=key_file
        )

    return sign


def _tls_context(config: Config) -> ssl.SSLContext | None:
    """The SMTP listener's STARTTLS context, None without a certificate."""
    cfg = config.gateway
    if cfg.tls_cert_file is None or cfg.tls_key_file is None:
        return None
    try:
        return tls.server_context(cfg.tls_cert_file, cfg.tls_key_file)
    except ValueError as exc:
        raise ConfigError([f"{config.path}: gateway.tls_cert_file: {exc}"]) from exc


async def serve(config: Config) -> None:
    """Run the gateway until SIGTERM or SIGINT; SIGHUP reloads the configuration.

    Under systemd (Type=notify) it says READY=1 once every listener is bound
    and the database answered, pings the watchdog, and keeps a STATUS= line
    with the queues; RELOADING=1 and STOPPING=1 frame a reload and the stop.
    """
    gateway = Gateway(config)
    pid_file = config.gateway.pid_file
    heartbeat: asyncio.Task[None] | None = None
    # Handled before anything starts: a SIGTERM while the listeners come up
    # (they accept connections before start() returns) must stop the daemon
    # cleanly, not kill it with the signal's default action.
    stop = _stop_on_signals()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: _on_hangup(gateway, ready, stop))
    try:
        await gateway.start()
        if pid_file is not None:
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            pid_file.write_text(f"{os.getpid()}\n")
        systemd.notify("READY=1", "STATUS=" + await gateway.status_line())
        ready.set()
        heartbeat = asyncio.create_task(_heartbeat(gateway), name="heartbeat")
        await stop.wait()
        log.info("stopping: no new connections; finishing sessions in flight")
    finally:
        systemd.notify("STOPPING=1", "STATUS=stopping: finishing sessions in flight")
        if heartbeat is not None:
            heartbeat.cancel()
        await gateway.stop()
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)


STATUS_EVERY = 30.0  # seconds between STATUS= lines


def _on_hangup(gateway: Gateway, ready: asyncio.Event, stop: asyncio.Event) -> None:
    """SIGHUP: reload, but only between start and stop (a reload needs the whole daemon)."""
    if not ready.is_set() or stop.is_set():
        log.warning("SIGHUP ignored: the daemon is %s", "stopping" if stop.is_set() else "starting")
        return
    gateway.reloads.add(task := asyncio.ensure_future(_reload(gateway)))
    task.add_done_callback(gateway.reloads.discard)


async def _reload(gateway: Gateway) -> None:
    systemd.reloading()
    await gateway.reload()
    systemd.notify("READY=1", "STATUS=" + await gateway.status_line())


async def _heartbeat(gateway: Gateway) -> None:
    """WATCHDOG=1 while the loop and the database answer; a fresh STATUS= line.

    The ping needs a database round trip, so a daemon whose loop is stuck or
    whose store no longer answers stops pinging and systemd restarts it.
    """
    watchdog = systemd.watchdog_interval()
    every = min(STATUS_EVERY, watchdog) if watchdog else STATUS_EVERY
    while True:
        await asyncio.sleep(every)
        stopped = gateway.stopped_workers()
        if stopped:  # no ping: systemd restarts a daemon whose workers died
            log.error("no watchdog ping: %s stopped working", ", ".join(stopped))
            systemd.notify("STATUS=unhealthy: " + ", ".join(stopped) + " stopped")
            continue
        try:
            line = await asyncio.wait_for(gateway.status_line(), every)
        except Exception as exc:  # no ping: the watchdog decides
            log.warning("status check failed: %r", exc)
            continue
        systemd.notify(*(["WATCHDOG=1"] if watchdog else []), "STATUS=" + line)


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a previous run would make bind fail."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.stat().st_mode):
            path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
