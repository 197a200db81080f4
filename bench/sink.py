"""The baseline: a bare aiosmtpd server that answers 250 to everything and keeps nothing.

    python bench/sink.py PORT [--save FILE]

Same library, same event loop, same SMTP parsing as the gateway's listener;
no routing, no storage, no fsync. The gateway's throughput is reported as a
ratio of this one's, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session


class Sink:
    def __init__(self, save: str | None) -> None:
        self.save = save

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        if self.save:
            with Path(self.save).open("ab") as out:
                out.write((envelope.original_content or b"") + b"\n----\n")
        return "250 2.0.0 OK"


async def main(port: int, save: str | None) -> None:
    loop = asyncio.get_running_loop()
    handler = Sink(save)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench", enable_SMTPUTF8=True, data_size_limit=None),
        "127.0.0.1",
        port,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--save")
    options = parser.parse_args()
    asyncio.run(main(options.port, options.save))
