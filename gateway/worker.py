"""Processing in a process of its own, beside the listeners.

Parsing, threading and rendering take most of the CPU a message costs. In
the listeners' process they would compete, under one interpreter lock, with
the SMTP sessions waiting for their 250; in a second process they run on
another core. With ``processing = "worker"`` (the default) the daemon starts
``python -m gateway.worker`` and talks to it over two pipes:

* the daemon writes, one per line on the worker's stdin: ``config`` and the
  configuration it runs (pickled, base64), first and again after each
  reload, so the worker never reads a file the daemon has not checked; the
  ids of the inbound rows it spooled, those of one group commit in one
  write; ``busy`` or ``quiet`` as mail starts and stops arriving, and
  always before the ids that came with a burst. While the daemon is busy
  receiving, the worker waits for the burst to end, as :class:`Processor`
  does in the daemon's own process: the two share the machine's cores (and
  on SQLite one write lock), and an SMTP session waiting for its 250 should
  not queue behind a ticket's rendering;
* the worker writes one JSON object per line on its stdout: ``{"ready":
  true}`` once its database is open; ``{"in_hand": id}`` as it starts on a
  row and ``{"in_hand": null}`` when it is done with it; and one line per
  processed row, with the row's id and how it ended. The daemon counts it
  for /metrics, wakes the outbox, and forgets the id.

The rows are the queue, not the pipe: the daemon keeps every id it handed
over until the worker answers for it, and hands them all to the next worker
if this one dies. Processing a row twice is harmless (the second time finds
it processed and skips it). A row that POISON_AFTER workers died on in a
row is quarantined with that reason, so one message that kills the
interpreter cannot hold up the rest for ever. When the daemon stops it closes the worker's
stdin: the worker finishes the row in hand and exits, and the rows it had
not started wait in the database for the next start. A worker whose daemon
died sees the same end of input and does the same. A worker that is not
the daemon's own version (the package was upgraded under a running
daemon) refuses to start; after WORKER_DOWN seconds without a worker the
watchdog stops being pinged and systemd restarts the whole daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable

from gateway import __version__, agents, logs
from gateway.config import Config
from gateway.db import Store, open_database
from gateway.notify import Notifier
from gateway.process import Processor, Result, quarantine, resume
from gateway.render import Renderer

log = logging.getLogger("gateway.worker")

RESTART_AFTER = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds, after each failure in a row
STEADY = 60.0  # seconds a worker must live for its failures to be forgotten
STOP_GRACE = 5.0  # seconds for a worker to exit once its input is closed
BUSY_EVERY = 0.02  # seconds between looks at whether mail is arriving
LINE_LIMIT = 1 << 20  # bytes in one line either way (a config, an answer)
REASON_LIMIT = 2000  # characters of a quarantine reason sent back to the daemon
BAD_VERSION = 3  # the worker's exit status when it is not the daemon's version
POISON_AFTER = 3  # worker deaths on one row before that row is quarantined


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
        self.database = config.gateway.database  # fixed at start, as the daemon's is
        self.on_processed = on_processed
        self.busy: Callable[[], bool] = lambda: False  # is mail being received right now?
        self._waiting: dict[int, None] = {}  # handed over, not yet answered for (in order)
        self._unsent: list[int] = []  # submitted in this turn of the event loop
        self._told_busy = False  # what the worker was last told
        self._in_hand: int | None = None  # the row the worker says it is processing
        self._deaths: dict[int, int] = {}  # row id: workers that died with it in hand
        self._idle = asyncio.Event()
        self._idle.set()
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.down_since: float | None = None  # monotonic time since no worker is ready

    def submit(self, inbound_id: int) -> None:
        """Hand a freshly spooled row to the worker (soon, or when it next starts).

        A group commit answers many sessions in one turn of the event loop;
        their ids go to the worker in one write at the end of that turn,
        which wakes the worker once instead of once per message.
        """
        if inbound_id in self._waiting:
            return
        self._waiting[inbound_id] = None
        self._idle.clear()
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._send_unsent)
        self._unsent.append(inbound_id)

    async def recover(self) -> int:
        """Hand over every row a previous run accepted but did not process."""
        return await resume(self.store, self.submit)

    async def idle(self) -> None:
        """Wait until the worker has answered for every row handed over so far."""
        await self._idle.wait()

    def reload(self, config: Config) -> None:
        """Hand the worker the configuration the daemon now runs."""
        self.config = config
        self._send(self._config_line())

    async def run(self) -> None:
        """Keep a worker running until ``stop``; start another, after a pause, if one dies."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            started = loop.time()
            code = await self._run_worker()
            if self._stopping:
                return
            await self._blame(code)
            failures = 0 if loop.time() - started > STEADY else failures + 1
            delay = RESTART_AFTER[min(failures, len(RESTART_AFTER)) - 1] if failures else 0.0
            log.error(
                "processing worker %s; starting another in %.0fs "
                "(%d message(s) wait for it, safe in the database)",
                _ended(code),
                delay,
                len(self._waiting),
            )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Close the worker's input; it finishes the row in hand (STOP_GRACE at most)."""
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
            await self._kill(process)

    def worker_down_for(self) -> float:
        """Seconds without a ready worker (0 while one is ready)."""
        if self.down_since is None:
            return 0.0
        return time.monotonic() - self.down_since

    async def _run_worker(self) -> int | None:
        """Start one worker, feed it, read its answers until it exits; its exit status."""
        if self.down_since is None:
            self.down_since = time.monotonic()  # until it says it is ready
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-P",  # not the working directory first on sys.path: it may be writable
                "-m",
                "gateway.worker",
                "--version-expected",
                __version__,
                "--log-format",
                logs.style(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=LINE_LIMIT,
                process_group=0,  # a terminal's Ctrl-C or hangup is for the daemon
            )
        except OSError as exc:
            log.error("could not start a processing worker: %s", exc)
            return None
        self._process = process
        log.info("processing worker started (pid %d)", process.pid)
        self._unsent.clear()  # all of them go now
        self._send(self._config_line())
        self._told_busy = False  # a new worker starts out quiet
        self._send_ids(self._waiting)
        assert process.stdout is not None
        watching = asyncio.create_task(self._tell_busy(), name="worker busy")
        try:
            while line := await process.stdout.readline():
                self._answered(line)
            return await process.wait()
        except Exception as exc:  # a line too long, say: this worker is done
            log.error("processing worker: %r; stopping it", exc)
            return await self._kill(process)
        finally:
            watching.cancel()
            self._process = None
            if self.down_since is None:
                self.down_since = time.monotonic()

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process) -> int:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        return await process.wait()

    def _config_line(self) -> str:
        """The daemon's configuration, with the database it opened at start."""
        gateway = dataclasses.replace(self.config.gateway, database=self.database)
        data = pickle.dumps(dataclasses.replace(self.config, gateway=gateway))
        return "config " + base64.b64encode(data).decode("ascii") + "\n"

    async def _tell_busy(self) -> None:
        """Tell the worker when mail starts and stops arriving (checked every BUSY_EVERY)."""
        while True:
            self._tell()
            await asyncio.sleep(BUSY_EVERY)

    def _tell(self) -> None:
        """Tell the worker whether mail is arriving, if that changed since it was last told."""
        busy = self.busy()
        if busy != self._told_busy:
            self._send("busy\n" if busy else "quiet\n")
            self._told_busy = busy

    def _send_unsent(self) -> None:
        ids, self._unsent = self._unsent, []
        self._send_ids(ids)

    def _send_ids(self, ids: Iterable[int]) -> None:
        """Row ids in one write, after the news of a burst (the worker must not start on
        them thinking all is quiet)."""
        self._tell()
        self._send("".join(f"{inbound_id}\n" for inbound_id in ids))

    def _send(self, line: str) -> None:
        if not line:
            return
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return  # handed over when the next worker starts
        process.stdin.write(line.encode("ascii"))

    async def _blame(self, code: int | None) -> None:
        """Count a dead worker against the row it had in hand; quarantine it at POISON_AFTER.

        A message that crashes the interpreter itself (a parser's C code,
        the kernel's OOM killer) would otherwise kill every next worker and
        hold up every message behind it. An exception does not get here:
        the worker quarantines those itself.
        """
        inbound_id, self._in_hand = self._in_hand, None
        if inbound_id is None or inbound_id not in self._waiting:
            return
        deaths = self._deaths[inbound_id] = self._deaths.get(inbound_id, 0) + 1
        if deaths < POISON_AFTER:
            return
        reason = f"the processing worker died on it {deaths} times (last: {_ended(code)})"
        try:
            result = await self.store.run(quarantine, inbound_id, reason, self.store.database)
        except Exception as exc:  # the database: the next worker tries the row again
            log.error("inbound %d: could not quarantine it: %r", inbound_id, exc)
            return
        del self._deaths[inbound_id]
        self._forget(inbound_id, result)

    def _answered(self, line: bytes) -> None:
        try:
            data = json.loads(line)
            if data == {"ready": True}:
                self.down_since = None
                return
            if "in_hand" in data:
                in_hand = data["in_hand"]
                self._in_hand = None if in_hand is None else int(in_hand)
                return
            inbound_id = int(data.pop("id"))
            result = Result(**data)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("processing worker said something unexpected: %r", line[:200])
            return
        self._deaths.pop(inbound_id, None)
        self._forget(inbound_id, result)

    def _forget(self, inbound_id: int, result: Result) -> None:
        """The row is done with: count it, and stop waiting for it."""
        self._waiting.pop(inbound_id, None)
        if not self._waiting:
            self._idle.set()
        if self.on_processed is not None:
            try:
                self.on_processed(inbound_id, result)
            except Exception:  # counting is not worth a worker
                log.exception("after processing inbound %d", inbound_id)


# --- the worker's side ------------------------------------------------------------


async def work(stdin: asyncio.StreamReader, config: Config) -> None:
    """Process the row ids read from ``stdin`` until it ends; answer on stdout."""
    cfg = config.gateway
    database = await asyncio.to_thread(
        open_database, cfg.database, config.base_dir, ticket_number_start=cfg.ticket_number_start
    )
    store = Store(database)
    notifier = Notifier(config, Renderer(cfg.templates_dir), agents.gateway_secret(config))
    processor = Processor(
        store,
        config,
        notifier,
        on_processed=_answer,
        in_hand=lambda inbound_id: _say({"in_hand": inbound_id}),
    )
    receiving = False
    processor.busy = lambda: receiving
    running = asyncio.create_task(processor.run(), name="processor")
    _say({"ready": True})
    try:
        while line := await stdin.readline():
            word, _, rest = line.strip().partition(b" ")
            if word.isdigit():
                processor.submit(int(word))
            elif word in (b"busy", b"quiet"):
                receiving = word == b"busy"
            elif word == b"config":
                processor.reload(_config(rest))
                log.info("configuration reloaded")
        # The daemon is stopping (or gone): finish the row in hand, at once
        # (no more mail is arriving); the rest stay "received" and wait for
        # the next start.
        receiving = False
        processor.drop_queued()
        await processor.idle()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        store.close()


def _ended(code: int | None) -> str:
    """How a worker process ended, for the log."""
    if code is None:
        return "could not start"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _answer(inbound_id: int, result: Result) -> None:
    """One line per processed row (its reason cut short: a line must stay small)."""
    answer = dataclasses.replace(result, reason=result.reason[:REASON_LIMIT])
    _say({"id": inbound_id, **vars(answer)})


def _say(data: dict[str, object]) -> None:
    """One JSON line to the daemon; a daemon that is gone cannot hear it."""
    line = json.dumps(data) + "\n"
    with contextlib.suppress(BrokenPipeError):
        os.write(sys.stdout.fileno(), line.encode("utf-8"))


def _config(encoded: bytes) -> Config:
    """The configuration the daemon sent (it comes only from the daemon, over a pipe)."""
    config = pickle.loads(base64.b64decode(encoded))  # noqa: S301 (our own parent)
    assert isinstance(config, Config)
    return config


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)  # a "config" line can be long
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway.worker``: started by the daemon, not by people."""
    parser = argparse.ArgumentParser(prog="gateway.worker", description=main.__doc__)
    parser.add_argument("--version-expected", required=True)
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    logs.configure("INFO", args.log_format)
    if args.version_expected != __version__:
        log.error(
            "this worker is version %s but the daemon is %s: restart the daemon",
            __version__,
            args.version_expected,
        )
        return BAD_VERSION
    asyncio.run(_main())
    return 0


async def _main() -> None:
    stdin = await _stdin()
    first = await stdin.readline()
    word, _, rest = first.strip().partition(b" ")
    if word != b"config":
        log.error("the daemon sent no configuration; stopping")
        return
    config = _config(rest)
    logging.getLogger().setLevel(config.gateway.log_level)
    await work(stdin, config)


if __name__ == "__main__":
    sys.exit(main())
