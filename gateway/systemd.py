"""systemd's notify protocol: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``; each message is one
datagram of ``KEY=VALUE`` lines (sd_notify(3)). The protocol is that one
sendto, so it is written here rather than pulled in: python-systemd needs
libsystemd's C headers to build, and the small pure-Python packages add
nothing to these lines. Outside systemd (no ``$NOTIFY_SOCKET``) every call
is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("gateway.systemd")


def notify(*lines: str) -> bool:
    """Send ``lines`` to systemd; False when not run by systemd (or it failed)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:
        log.warning("could not notify systemd at %s: %s", address, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """How often to ping the watchdog (half of WatchdogSec), or None when it is off."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2


def reloading() -> bool:
    """Say a reload started (with the monotonic time systemd 253+ asks for)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")
