"""aiosmtpd's server class, with two costs it pays on every connection cut.

Measured with py-spy on the listener under load (bench/, one message per
connection, as most MTAs deliver), two parts of aiosmtpd took about a third
of the event loop's time, the same in a server that does nothing:

* **Finding its hooks.** For every connection, ``SMTP.__init__`` looks
  through every attribute of the new session and of the handler
  (``inspect.getmembers``, ``dir``) for ``auth_*``, ``handle_*`` and
  ``smtp_*`` names, about 80 microseconds. :class:`LeanSMTP` and
  :func:`lean_handler` answer ``dir()`` with just those names, listed once
  per class, so the same lookups find the same hooks in a fraction of the
  time.
* **Parsing MAIL FROM and RCPT TO.** aiosmtpd hands every address to the
  RFC 5322 header parser of :mod:`email`, which builds a token tree for
  ``<someone@example.com>``. :meth:`LeanSMTP._getaddr` reads the plain form
  (a dot-atom, an @ and a host name, in angle brackets) with one regular
  expression, and gives everything else (quoted local parts, comments,
  encoded words, source routes, non-ASCII, ``<>``) to aiosmtpd as before. For the plain
  form both give the same answer; tests/test_smtpd.py checks that.

aiosmtpd is pinned below 1.5 (pyproject.toml): both rest on how 1.4 finds
its hooks and parses addresses, and the SMTP tests would show a change.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP

_HOOK_PREFIXES = ("auth_", "handle_", "smtp_")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# <dot-atom@host-name>, then the end, or blanks and the parameters. Not an RFC 2047
# encoded word ("=?", which the parser decodes), nor a comment after the blanks
# (which it drops); after a blank it skips every kind of white space, as \s does.
_PLAIN_ADDRESS = re.compile(
    rf"<(?!=\?)({_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*)>(?:[ \t]\s*(?=[^\s(])|\Z)"
)

_T = TypeVar("_T")


def _hook_names(cls: type) -> list[str]:
    """The names aiosmtpd looks for on ``cls``, listed once per class."""
    known: list[str] | None = cls.__dict__.get("_lean_hook_names")
    if known is None:
        known = sorted(name for name in dir(cls) if name.startswith(_HOOK_PREFIXES))
        cls._lean_hook_names = known  # type: ignore[attr-defined]
    return known


def _dir_of_hooks(self: object) -> list[str]:
    """``dir()`` for a session or handler: the hooks aiosmtpd looks for, nothing else."""
    return _hook_names(type(self))


def lean_handler(cls: type[_T]) -> type[_T]:
    """Class decorator for a handler: ``dir()`` lists only its hooks.

    aiosmtpd lists the handler's attributes once per connection to find
    its ``handle_*`` and ``auth_*`` hooks; the rest is never looked at.
    """
    cls.__dir__ = _dir_of_hooks  # type: ignore[method-assign]
    return cls


class LeanSMTP(SMTP):
    """aiosmtpd's SMTP: the same protocol, found and parsed faster."""

    __dir__ = _dir_of_hooks

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """(address, the rest): the plain form here, every other form by aiosmtpd."""
        match = _PLAIN_ADDRESS.match(arg)
        if match is None:
            return super()._getaddr(arg)
        address = match.group(1)
        limit: Any = self.local_part_limit
        if limit and len(address.rpartition("@")[0]) > limit:
            return None, None
        return address, arg[match.end() :]
