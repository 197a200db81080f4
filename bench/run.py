"""`make bench`: the gateway against the ceiling of its own stack, as ratios.

In one run, on this machine:

1. Intake throughput. Postfix's smtp-source sends N messages over S
   sessions to (a) a bare aiosmtpd sink (bench/sink.py: 250, nothing kept)
   and (b) the gateway on SQLite and (c) on PostgreSQL, fully durable
   (a 250 means the bytes are committed). Messages per second for each and
   the ratio gateway/sink. Beside them: the sink with the gateway's own
   server class (``sink/lean``: what the gateway saves inside aiosmtpd is
   not its own work, so it gets a ratio against this one too), and that
   sink committing to SQLite or PostgreSQL (the ceiling of a durable
   server here).
2. Latency from the final dot to the reply (median, 99th percentile) at
   20 sessions, measured by our own client on the same targets; and, for
   the gateway, from the 250 to the ticket created and the acknowledgement
   queued (read back from the database).
3. Threading cost as the store grows: the time to thread a reply into its
   ticket with 1,000 and with 1,000,000 tickets in the database.
4. Memory: the gateway's peak RSS while 20 sessions each send a 25 MiB
   message.

Results go to stdout and bench/results/<date>-<host>.txt with the machine
description. These are measurements, not tests: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


# --- the servers ---------------------------------------------------------------------


@contextmanager
def sink(kind: str = "bare") -> Iterator[tuple[int, int]]:
    """A baseline (bench/sink.py): ``bare``; ``lean``, with the gateway's server class;
    ``durable``, lean and committing to SQLite before its 250; ``durable-pg``, to
    PostgreSQL."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="sink-bench-"))
    log = folder / "sink.log"
    command = [PYTHON, str(ROOT / "bench" / "sink.py"), str(port)]
    if kind != "bare":
        command.append("--lean")
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
        if kind == "durable":
            command += ["--durable", str(folder / "sink.db")]
        elif kind == "durable-pg":
            command += ["--durable", cleanup.enter_context(postgres_database())]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out)
        try:
            wait_for_port(port, process, log)
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(30)


def gateway_config(folder: Path, database: str, port: int, processing: str = "worker") -> Path:
    path = folder / "mailboxes.toml"
    path.write_text(
        f"""
[gateway]
hostname = "gw.bench"
database = "{database}"
smtp_listen = "127.0.0.1:{port}"
max_message_size = "30MiB"
max_recipients = 50
outbound = "maildir:var/outbox"
log_level = "INFO"
metrics_listen = ""
processing = "{processing}"

[[mailbox]]
address = "support@example.com"
name = "Bench Support"

[[mailbox.agent]]
email = "lan@example.com"
name = "Lan"
"""
    )
    return path


@contextmanager
def gateway(database: str, processing: str = "worker") -> Iterator[tuple[int, int, Path]]:
    folder = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    port = free_port()
    config = gateway_config(folder, database, port, processing)
    log = folder / "daemon.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PYTHON, "-m", "gateway", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        wait_for_port(port, process, log)
        yield port, process.pid, config
    finally:
        process.terminate()
        process.wait(120)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh schema in the test database, for one gateway run."""
    import psycopg2

    schema = f"bench_{os.getpid()}_{random.randrange(10**6)}"
    with psycopg2.connect(POSTGRES) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    conn.close()
    try:
        yield f"{POSTGRES}?options={urllib.parse.quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg2.connect(POSTGRES) as conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


# --- 1. throughput with smtp-source -------------------------------------------------------


def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    """Messages per second that smtp-source achieved against ``port``."""
    command = [
        SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-f", "customer@example.org", "-t", "support@example.com", f"127.0.0.1:{port}",
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, timeout=1800)
    return messages / (time.perf_counter() - started)


# --- 2. latency with our own client -------------------------------------------------------


async def _session(port: int, count: int, size: int, delays: list[float], tag: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    await reply()
    writer.write(b"EHLO bench.client\r\n")
    await writer.drain()
    await reply()
    body = (b"x" * 76 + b"\r\n") * max(1, size // 78)
    for index in range(count):
        sender = f"c-{tag}-{index}@example.org"  # distinct senders: each gets an acknowledgement
        head = (
            f"From: <{sender}>\r\nTo: <support@example.com>\r\nSubject: bench {tag} {index}\r\n"
            f"Message-ID: <{tag}.{index}.{time.time_ns()}@bench.client>\r\n\r\n"
        ).encode()
        for command in (
            f"MAIL FROM:<{sender}>\r\n",
            "RCPT TO:<support@example.com>\r\n",
            "DATA\r\n",
        ):
            writer.write(command.encode())
            await writer.drain()
            await reply()
        writer.write(head + body)
        await writer.drain()
        started = time.perf_counter()
        writer.write(b".\r\n")
        await writer.drain()
        status = await reply()
        delays.append(time.perf_counter() - started)
        if not status.startswith(b"250"):
            raise SystemExit(f"not accepted: {status!r}")
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()


def latency(port: int, sessions: int, per_session: int, size: int) -> list[float]:
    delays: list[float] = []

    async def run() -> None:
        await asyncio.gather(
            *(_session(port, per_session, size, delays, f"s{n}") for n in range(sessions))
        )

    asyncio.run(run())
    return delays


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(share * len(ordered) + 0.5) - 1))]


def wait_processed(config: Path) -> None:
    """Until the gateway has processed everything it accepted (ten minutes at most)."""
    sys.path.insert(0, str(ROOT))
    from gateway import config as gateway_config_module
    from gateway import models
    from gateway.db import open_database

    cfg = gateway_config_module.load(config)
    database = open_database(cfg.gateway.database, cfg.base_dir)
    try:
        deadline = time.monotonic() + 600
        with database.connection_context():
            while time.monotonic() < deadline:
                pending = models.Inbound.select().where(models.Inbound.status == "received")
                if not pending.exists():
                    return
                time.sleep(0.1)
    finally:
        database.close_all()


def processing_delays(config: Path, expected: int) -> tuple[list[float], list[float]]:
    """From accepted to ticket created, and to acknowledgement queued (seconds)."""
    sys.path.insert(0, str(ROOT))
    from gateway import config as gateway_config_module
    from gateway import models
    from gateway.db import open_database

    wait_processed(config)
    cfg = gateway_config_module.load(config)
    database = open_database(cfg.gateway.database, cfg.base_dir)
    try:
        with database.connection_context():
            created, acked = [], []
            acks = {
                row.ticket_id: row.created_at
                for row in models.Outbox.select().where(models.Outbox.event == "ticket_created")
            }
            query = (
                models.Message.select(models.Message, models.Inbound)
                .join(models.Inbound)
                .where(models.Inbound.message_id.contains("@bench.client"))
            )
            for message in query:
                received = message.inbound.received_at
                created.append((message.created_at - received).total_seconds())
                if message.ticket_id in acks:
                    acked.append((acks[message.ticket_id] - received).total_seconds())
    finally:
        database.close_all()
    if len(created) < expected:
        print(f"  (only {len(created)} of {expected} processed in time)")
    return created, acked


# --- 3. threading cost as the store grows ---------------------------------------------


def threading_cost(tickets: int, replies: int = 200) -> float:
    """Median seconds to process (thread and store) a reply, with ``tickets`` in SQLite."""
    sys.path.insert(0, str(ROOT))
    from gateway import config as gateway_config_module
    from gateway.agents import gateway_secret
    from gateway.db import Store, open_database
    from gateway.intake import Delivery, Envelope, Intake
    from gateway.notify import Notifier
    from gateway.process import process_inbound
    from gateway.render import Renderer

    folder = Path(tempfile.mkdtemp(prefix="gw-thread-"))
    # In this process: the agent's notifications soon reach their cap, and a
    # warning for each held-back mail would drown the figures.
    logging.getLogger("gateway").setLevel(logging.ERROR)
    try:
        config = gateway_config(folder, "sqlite:///var/gateway.db", 0)
        cfg = gateway_config_module.load(config)
        database = open_database(cfg.gateway.database, cfg.base_dir)
        database.close_all()
        _fill(folder / "var" / "gateway.db", tickets)
        database = open_database(cfg.gateway.database, cfg.base_dir)
        store = Store(database)
        notifier = Notifier(cfg, Renderer(None), gateway_secret(cfg))
        intake = Intake(store)
        rng = random.Random(7)
        times = []
        for index in range(replies):
            number = rng.randrange(tickets)
            raw = (
                f"From: c{number}@example.org\r\nTo: support@example.com\r\n"
                f"Subject: Re: [#{10000 + number}] question {number}\r\n"
                f"Message-ID: <reply{index}@bench.client>\r\n"
                f"In-Reply-To: <m{number}@bench.client>\r\nReferences: <m{number}@bench.client>\r\n"
                f"\r\nThanks, one more thing.\r\n"
            ).encode()
            envelope = Envelope(f"c{number}@example.org", ("support@example.com",), "smtp")
            [spooled] = asyncio.run(
                intake.spool(
                    raw, envelope, [Delivery("support@example.com", ("support@example.com",))]
                )
            )
            started = time.perf_counter()
            result = store.call(process_inbound, spooled.inbound_id, cfg, database, notifier)
            times.append(time.perf_counter() - started)
            assert result.action == "followed_up", result
        store.close()
        return statistics.median(times)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fill(path: Path, count: int) -> None:
    """``count`` tickets, each with a participant and a first message, written in bulk."""
    now = dt.datetime(2026, 11, 1).isoformat(" ")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")  # setup only: the measured part is the daemon's
        rows = (
            (10000 + n, "support@example.com", f"question {n}", f"c{n}@example.org", "", "open",
             "medium", "general", "en", now, now)
            for n in range(count)
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO ticket (number, mailbox, subject, requester_email, requester_name, "
            "status, priority, category, language, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        conn.execute(
            "INSERT INTO participant (ticket_id, email, name, role, created_at) "
            "SELECT id, requester_email, '', 'customer', created_at FROM ticket"
        )
        conn.execute(
            "INSERT INTO message (ticket_id, message_id, direction, author_email, author_name, "
            "author_role, visibility, auto, subject, text, full_text, created_at) "
            "SELECT id, 'm' || (number - 10000) || '@bench.client', 'inbound', requester_email, "
            "'', 'customer', 'public', 0, subject, 'Hello', 'Hello', created_at FROM ticket"
        )
        conn.execute("UPDATE counter SET value = ? WHERE name = 'ticket'", (10000 + count,))


# --- 4. memory -------------------------------------------------------------------------


def peak_rss(pid: int) -> int:
    """VmHWM of ``pid`` in bytes: its peak resident set size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def big_messages(port: int, sessions: int, size: int) -> None:
    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunk = (b"y" * 998 + b"\r\n") * 1024  # 1,000 KiB of lines
        head = (
            f"From: <big{n}@example.org>\r\nTo: <support@example.com>\r\nSubject: big {n}\r\n"
            f"Message-ID: <big{n}.{time.time_ns()}@bench.client>\r\n\r\n"
        ).encode()
        for command in (b"EHLO b\r\n", f"MAIL FROM:<big{n}@example.org>\r\n".encode(),
                        b"RCPT TO:<support@example.com>\r\n", b"DATA\r\n"):  # fmt: skip
            if command.startswith(b"EHLO"):
                await reader.readline()
            writer.write(command)
            await writer.drain()
            while (await reader.readline())[3:4] == b"-":
                pass
        writer.write(head)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
            await writer.drain()
        writer.write(b".\r\n")
        await writer.drain()
        status = await reader.readline()
        if not status.startswith(b"250"):
            raise SystemExit(f"big message not accepted: {status!r}")
        writer.close()

    async def run() -> None:
        await asyncio.gather(*(one(n) for n in range(sessions)))

    asyncio.run(run())


# --- the report ------------------------------------------------------------------------


def machine() -> list[str]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True, check=False)
    return [
        f"date:     {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"host:     {platform.node()} ({platform.platform()})",
        f"cpu:      {os.cpu_count()} x {cpu}",
        f"memory:   {int(memory) // 1024} MiB",
        f"python:   {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"{pg.stdout.strip()}",
        f"disk:     {_disk()}",
    ]


def _disk() -> str:
    done = subprocess.run(
        ["df", "-h", str(Path(tempfile.gettempdir()))], capture_output=True, text=True
    )
    return done.stdout.splitlines()[-1] if done.stdout else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=4000, help="bytes per message")
    parser.add_argument("--big-tickets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--quick", action="store_true", help="small figures, for a smoke run")
    options = parser.parse_args()
    if options.quick:
        options.messages, options.big_tickets, options.rounds = 200, 20_000, 1
    lines = ["Ticket Gateway benchmark", *machine(), ""]

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    for line in lines:
        print(line)
    m, s, size = options.messages, options.sessions, options.size
    say(f"1. Intake throughput: smtp-source, {m} messages of {size} bytes over {s} sessions")
    say(f"   (each figure the median of {options.rounds} runs, the targets taking turns)")
    targets: dict[str, tuple[str, str] | str] = {
        "sink": "bare",
        "sink/lean": "lean",
        "sink/durable": "durable",
        "sink/durable-pg": "durable-pg",
        "sqlite": ("sqlite:///var/gateway.db", "worker"),
        "postgresql": ("pg", "worker"),
        "sqlite/inline": ("sqlite:///var/gateway.db", "inline"),
    }
    runs: dict[str, list[float]] = {name: [] for name in targets}
    ticketed_runs: dict[str, list[float]] = {
        name: [] for name, target in targets.items() if not isinstance(target, str)
    }
    delays: dict[str, list[float]] = {}
    processing: dict[str, tuple[list[float], list[float]]] = {}
    per_session = max(5, m // s // 4)
    with contextlib.ExitStack() as stack:
        ports: dict[str, tuple[int, Path | None]] = {}
        for name, target in targets.items():
            if isinstance(target, str):
                ports[name] = (stack.enter_context(sink(target))[0], None)
                continue
            url = stack.enter_context(contextmanager_for(target[0]))
            port, _, config = stack.enter_context(gateway(url, target[1]))
            ports[name] = (port, config)
        for port, config in ports.values():
            smtp_source(port, 100, s, size)  # warm up
            if config is not None:
                wait_processed(config)
        for _ in range(options.rounds):
            for name, (port, config) in ports.items():
                started = time.perf_counter()
                runs[name].append(smtp_source(port, m, s, size))
                if config is not None:
                    wait_processed(config)
                if name in ticketed_runs:
                    ticketed_runs[name].append(m / (time.perf_counter() - started))
        for name, (port, config) in ports.items():
            delays[name] = latency(port, s, per_session, size)
            if config is not None:
                processing[name] = processing_delays(config, s * per_session)
    rates = {name: statistics.median(values) for name, values in runs.items()}
    for name, rate in rates.items():
        ratio = "" if name == "sink" else f"  = {rate / rates['sink']:.2f} x the sink"
        if not isinstance(targets[name], str):
            ratio += f", {rate / rates['sink/lean']:.2f} x sink/lean"
        spread = f"(runs {', '.join(f'{v:.0f}' for v in runs[name])})"
        say(f"   {name:<14} {rate:6.0f} messages/s accepted (250){ratio}  {spread}")
    for name, values in ticketed_runs.items():
        say(f"   {name:<14} {statistics.median(values):6.0f} messages/s accepted and ticketed, "
            "end to end")  # fmt: skip
    say("   sink is bare aiosmtpd. sink/lean is the same with the gateway's server class, which")
    say("   skips two per-connection costs of aiosmtpd (gateway/smtpd.py): against it, the")
    say("   gateway's ratio counts only its own work. sink/durable and sink/durable-pg are")
    say("   sink/lean committing each message to SQLite or PostgreSQL before its 250, and")
    say("   nothing else: the ceiling of a durable server on this stack (sink.py --durable).")
    say("   sqlite and postgresql process in a worker process (the default);")
    say('   sqlite/inline in the daemon\'s own (processing = "inline"), for comparison.')
    say("   The gateways log at INFO (one line per message, to a file), as they run by default.")
    say("   While mail arrives, processing waits (5 s at most), so a run measures intake;")
    say("   'end to end' is until the last ticket is created.")
    say()
    say(f"2. Latency, final dot to reply, {s} sessions ({s * per_session} messages each target)")
    for name, values in delays.items():
        say(
            f"   {name:<14} median {statistics.median(values) * 1000:6.1f} ms   "
            f"p99 {percentile(values, 0.99) * 1000:6.1f} ms"
        )
    for name, (created, acked) in processing.items():
        if created:
            say(
                f"   {name:<14} 250 -> ticket created: median {_ms(statistics.median(created))}, "
                f"p99 {_ms(percentile(created, 0.99))}; -> acknowledgement queued: "
                f"median {_ms(statistics.median(acked))}, p99 {_ms(percentile(acked, 0.99))}"
            )
    say()
    big = options.big_tickets
    say(f"3. Threading a reply (SQLite): with 1,000 and with {big:,} tickets")
    small_cost = threading_cost(1000)
    big_cost = threading_cost(big)
    say(f"   1,000 tickets: {small_cost * 1000:.2f} ms   {big:,}: {big_cost * 1000:.2f} ms   "
        f"ratio {big_cost / small_cost:.2f}")  # fmt: skip
    say()
    say(f"4. Memory: {s} sessions each sending a 25 MiB message to the gateway (SQLite)")
    with gateway("sqlite:///var/gateway.db") as (port, pid, _):
        before = peak_rss(pid)
        big_messages(port, s, 25 * 1024 * 1024)
        after = peak_rss(pid)
    say(f"   peak RSS {before / 2**20:.0f} MiB before, {after / 2**20:.0f} MiB after "
        f"({s * 25} MiB received)")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{dt.datetime.now(dt.UTC):%Y-%m-%d}-{platform.node()}.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT)}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


@contextmanager
def contextmanager_for(database: str) -> Iterator[str]:
    """``database`` itself, or for "pg" a fresh schema on the PostgreSQL server."""
    if database != "pg":
        yield database
        return
    with postgres_database() as url:
        yield url


if __name__ == "__main__":
    main()
