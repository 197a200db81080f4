"""Ticket Gateway: an email-to-ticket gateway daemon.

Mail arrives over SMTP/LMTP (listener) or IMAP (poller), is spooled durably
(intake), then parsed, classified, threaded and applied to tickets. See
DESIGN.md in the project's shared notes for the whole picture.
"""

__version__ = "0.1.0"
