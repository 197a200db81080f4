"""The gateway's one exception hierarchy.

    GatewayError
     ├── ConfigError          the configuration file is unusable (exit 2)
     ├── StorageError         the database failed us (SMTP answers 451)
     ├── ImapError            an IMAP server refused or failed us (the poller backs off)
     └── ProcessingError      a stored message cannot be processed (quarantine)
          └── LimitExceeded   a hostile-input cap was hit (header size, depth, parts)

Catch GatewayError only at the edges: the CLI, the listener, the poller and
the portal. Everything inside lets it travel.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class StorageError(GatewayError):
    """The database could not do what we asked; the sender should retry."""


class ImapError(GatewayError):
    """An IMAP server refused us, or a step we insist on (TLS) was not possible."""


class ProcessingError(GatewayError):
    """A stored message cannot be turned into ticket state; it is quarantined."""


class LimitExceeded(ProcessingError):
    """A message is over one of the caps that protect us from hostile input."""
