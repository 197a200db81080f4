"""Log lines for people (text) or for log shippers (JSON, one object per line).

``log_format = "json"`` in [gateway] (or ``serve --log-format json``) writes
each record as one JSON object: time, level, logger, message, and the
structured fields a step attached with ``extra=`` (the processing line has
queue_id, message_id, mailbox, ticket and action), so a log pipeline can
filter on them without parsing the message.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

# Attributes every LogRecord has; anything else on a record came from extra=.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def configure(level: str, style: str) -> None:
    """Log to stderr (the journal, under systemd) as ``text`` or ``json``."""
    handler = logging.StreamHandler()
    if style == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # its bookkeeping is noise
    # aiosmtpd logs a dozen lines per SMTP session at INFO, every command with
    # its addresses; the gateway logs one line per message it accepts. Its lines
    # are for troubleshooting: they show at DEBUG. (At WARNING and ERROR it
    # follows the root's level; a level of its own would be checked instead.)
    logging.getLogger("mail.log").setLevel(logging.WARNING if level == "INFO" else logging.NOTSET)


def style() -> str:
    """How this process logs now ("json" or "text"), for a worker process to match."""
    handlers = logging.getLogger().handlers
    return "json" if any(isinstance(h.formatter, JsonFormatter) for h in handlers) else "text"
