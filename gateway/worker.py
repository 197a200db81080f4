"""Processing in a process of its own, beside the listeners.

Parsing, threading and rendering take most of the CPU a message costs. In
the listeners' process they would compete, under one interpreter lock, with
the SMTP sessions waiting for their 250; in a second process they run on
another core. With ``processing = "worker"`` (the default) the daemon starts
``python -m gateway.worker`` and talks to it over two pipes:

* the daemon writes the id of each inbound row it spooled, one per line, on
  the worker's stdin; ``reload`` after a SIGHUP; and ``busy`` or ``quiet``
  as mail starts and stops arriving. While the daemon is busy receiving,
  the worker cedes after each message as :class:`Processor` does in the
  daemon's own process: on SQLite the two share one write lock, and an SMTP
  session waiting for its 250 should not queue behind a ticket's rendering;
* the worker writes one JSON object per processed row on its stdout: the
  row's id and how it ended. The daemon counts it for /metrics, wakes the
  outbox, and forgets the id.

The rows are the queue, not the pipe: the daemon keeps every id it handed
over until the worker answers for it, and hands them all to the next worker
if this one dies. Processing a row twice is harmless (the second time finds
it processed and skips it). When the daemon stops it closes the worker's
stdin: the worker finishes what it holds and exits. A worker whose daemon
died sees the same end of input and does the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from gateway import agents, logs
from gateway import config as config_module
from gateway.config import Config
from gateway.db import Store, open_database
from gateway.errors import ConfigError
from gateway.notify import Notifier
from gateway.process import Processor, Result, pending_ids
from gateway.render import Renderer

log = logging.getLogger("gateway.worker")

RESTART_AFTER = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds, after each failure in a row
STEADY = 60.0  # seconds a worker must live for its failures to be forgotten
STOP_GRACE = 5.0  # seconds for a worker to exit once its input is closed
BUSY_EVERY = 0.02  # seconds between looks at whether mail is arriving


class WorkerProcessor:
    """The daemon's side: hands spooled rows to a worker process and keeps it running.

    It answers to what the listeners, pollers, portal and API need of
    processing (``submit`` and ``idle``), as :class:`Processor` does.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        on_processed: Callable[[int, Result], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_processed = on_processed
        self.busy: Callable[[], bool] = lambda: False  # is mail being received right now?
        self._waiting: dict[int, None] = {}  # handed over, not yet answered for (in order)
        self._idle = asyncio.Event()
        self._idle.set()
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.down_since: float | None = None  # loop time the worker went away; None: running

    def submit(self, inbound_id: int) -> None:
        """Hand a freshly spooled row to the worker (now, or when it next starts)."""
        if inbound_id in self._waiting:
            return
        self._waiting[inbound_id] = None
        self._idle.clear()
        self._send(f"{inbound_id}\n")

    async def recover(self) -> int:
        """Hand over every row a previous run accepted but did not process."""
        ids = await self.store.run(pending_ids)
        for inbound_id in ids:
            self.submit(inbound_id)
        if ids:
            log.info("resuming %d accepted but unprocessed message(s)", len(ids))
        return len(ids)

    async def idle(self) -> None:
        """Wait until the worker has answered for every row handed over so far."""
        await self._idle.wait()

    def reload(self, config: Config) -> None:
        """Tell the worker to read the configuration again (the daemon has checked it)."""
        self.config = config
        self._send("reload\n")

    async def run(self) -> None:
        """Keep a worker running until ``stop``; start another, after a pause, if one dies."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            started = loop.time()
            code = await self._run_worker()
            if self._stopping:
                return
            failures = 0 if loop.time() - started > STEADY else failures + 1
            delay = RESTART_AFTER[min(failures, len(RESTART_AFTER)) - 1] if failures else 0.0
            log.error(
                "processing worker exited with status %s; starting another in %.0fs "
                "(%d message(s) wait for it, safe in the database)",
                code,
                delay,
                len(self._waiting),
            )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Close the worker's input and let it finish what it holds (bounded)."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("processing worker did not exit in %.0fs; killing it", STOP_GRACE)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    def worker_down_for(self) -> float:
        """Seconds the worker has not been running (0 while it runs)."""
        if self.down_since is None:
            return 0.0
        return asyncio.get_running_loop().time() - self.down_since

    async def _run_worker(self) -> int | None:
        """Start one worker, feed it, read its answers until it exits; its exit status."""
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.worker",
                "--config",
                str(self.config.path),
                "--log-format",
                logs.style(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.error("could not start a processing worker: %s", exc)
            if self.down_since is None:
                self.down_since = asyncio.get_running_loop().time()
            return None
        self._process, self.down_since = process, None
        log.info("processing worker started (pid %d)", process.pid)
        for inbound_id in self._waiting:
            self._send(f"{inbound_id}\n")
        assert process.stdout is not None
        watching = asyncio.create_task(self._tell_busy(), name="worker busy")
        try:
            async for line in process.stdout:
                self._answered(line)
            return await process.wait()
        finally:
            watching.cancel()
            self._process = None
            self.down_since = asyncio.get_running_loop().time()

    async def _tell_busy(self) -> None:
        """Tell the worker when mail starts and stops arriving (checked every BUSY_EVERY)."""
        told = False
        while True:
            busy = self.busy()
            if busy != told:
                self._send("busy\n" if busy else "quiet\n")
                told = busy
            await asyncio.sleep(BUSY_EVERY)

    def _send(self, line: str) -> None:
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return  # handed over when the next worker starts
        process.stdin.write(line.encode("ascii"))

    def _answered(self, line: bytes) -> None:
        try:
            data = json.loads(line)
            inbound_id = int(data.pop("id"))
            result = Result(**data)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("processing worker said something unexpected: %r", line[:200])
            return
        self._waiting.pop(inbound_id, None)
        if not self._waiting:
            self._idle.set()
        if self.on_processed is not None:
            self.on_processed(inbound_id, result)


# --- the worker's side ------------------------------------------------------------


async def work(config: Config) -> None:
    """Process the row ids read from stdin until it ends; answer on stdout."""
    cfg = config.gateway
    database = await asyncio.to_thread(
        open_database, cfg.database, config.base_dir, ticket_number_start=cfg.ticket_number_start
    )
    store = Store(database)
    notifier = Notifier(config, Renderer(cfg.templates_dir), agents.gateway_secret(config))
    processor = Processor(store, config, notifier, on_processed=_answer)
    receiving = False
    processor.busy = lambda: receiving
    running = asyncio.create_task(processor.run(), name="processor")
    try:
        async for line in await _stdin():
            text = line.strip()
            if text.isdigit():
                processor.submit(int(text))
            elif text in (b"busy", b"quiet"):
                receiving = text == b"busy"
            elif text == b"reload":
                processor.reload(_reloaded(processor.config))
        await processor.idle()  # the daemon is stopping (or gone): finish what is held
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        store.close()


def _answer(inbound_id: int, result: Result) -> None:
    """One line per processed row; short enough to be written in one piece.

    A daemon that is gone cannot hear it; the row is processed all the same.
    """
    line = json.dumps({"id": inbound_id, **vars(result)}) + "\n"
    with contextlib.suppress(BrokenPipeError):
        os.write(sys.stdout.fileno(), line.encode("utf-8"))


def _reloaded(current: Config) -> Config:
    try:
        new = config_module.load(current.path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("reload refused, keeping the running configuration: %s", problem)
        return current
    log.info("reloaded %s", new.path)
    return new


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.worker --config PATH``: started by the daemon, not by people."""
    parser = argparse.ArgumentParser(prog="gateway.worker", description=main.__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    # Ctrl-C in a terminal reaches the whole process group; the daemon decides
    # when the worker stops (by closing its input), so the worker ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        config = config_module.load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    logs.configure(config.gateway.log_level, args.log_format)
    asyncio.run(work(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
