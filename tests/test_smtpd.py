"""LeanSMTP: the same hooks and the same addresses as aiosmtpd, found faster.

gateway.smtpd cuts two per-connection costs of aiosmtpd (see its docstring).
Each must give exactly what aiosmtpd gives: these tests compare the two on
the same session, address by address, hook by hook.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import example, given
from hypothesis import strategies as st

from gateway import config as gateway_config
from gateway.listener import GatewayLMTP, GatewaySMTP, Handler
from gateway.smtpd import LeanSMTP, lean_handler
from tests.helpers import write_config


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> Handler:
    folder: Path = tmp_path_factory.mktemp("smtpd")
    config = gateway_config.load(write_config(folder, f"sqlite:///{folder}/gw.db"))
    return Handler(config, intake=None, processor=None, protocol="smtp")  # type: ignore[arg-type]


@pytest.mark.parametrize("server_class", [GatewaySMTP, GatewayLMTP])
def test_a_session_finds_the_hooks_aiosmtpd_would(
    server_class: type[SMTP], handler: Handler, loop: asyncio.AbstractEventLoop
) -> None:
    """Hooks found through the short ``dir()`` are those the full one finds."""
    session = server_class(handler, hostname="gw.test", loop=loop)
    commands = {name[5:] for name in object.__dir__(session) if name.startswith("smtp_")}
    hooks = {name[7:] for name in object.__dir__(handler) if name.startswith("handle_")}
    assert set(session._smtp_methods) == commands
    assert {"HELO", "MAIL", "RCPT", "DATA", "STARTTLS"} <= commands
    assert ("LHLO" in commands) == (server_class is GatewayLMTP)
    assert set(session._handle_hooks) == hooks == {"RCPT", "DATA", "exception"}
    bound_to = {n: getattr(m, "__self__", None) for n, m in session._smtp_methods.items()}
    assert bound_to == dict.fromkeys(commands, session)
    assert set(session._auth_methods) == {"LOGIN", "PLAIN"}  # aiosmtpd's own


def test_a_handler_lists_its_hooks_once_per_class() -> None:
    @lean_handler
    class Hooks:
        async def handle_DATA(self) -> str:
            return "250 OK"

        def unrelated(self) -> None: ...

    assert dir(Hooks()) == ["handle_DATA"]
    assert Hooks.__dict__["_lean_hook_names"] == ["handle_DATA"]


_ATEXT = "abcXYZ09!#$%&'*+/=?^_`{|}~-"
_ADDRESS_TEXT = st.text(alphabet=_ATEXT + '.@<>[]"() \t\\:,;éđ\x0b\u3000', max_size=40)


@given(_ADDRESS_TEXT)
@example("<customer@example.org>")
@example("<customer@example.org> SIZE=4000 BODY=8BITMIME")
@example("<first.last+tag@mail.example.org>   SIZE=1")
@example("<a@b.com>(comment) SIZE=1")
@example("<a@b.com> (comment)")
@example("<a@b.com>\tSIZE=1")
@example("<=?utf-8?q?abc?=@example.com>")
@example("<=?utf-8?q?a=20b?=@example.com> SIZE=1")
@example("<a=?x?=@example.com>")
@example("<a@b> \x0b(c) SIZE=1")
@example("<a@b> \u3000(c)")
@example("<a@b> \u3000SIZE=1")
@example("<a@b>\x0bSIZE=1")
@example("<a@b> \r\nSIZE=1")
@example("<a@b-.com>")
@example("<a@-b.com>")
@example("<a..b@c.com>")
@example("<.a@c.com>")
@example("<a.@c.com>")
@example("<a@b..com>")
@example("<a@b.com.>")
@example("<a@[192.0.2.1]>")
@example('<"a b"@c.com>')
@example("<đạt@example.vn>")
@example("<@relay.example:a@b.com>")
@example("<>")
@example("<> SIZE=1")
@example(" <a@b.com>")
@example("a@b.com")
@example("<a@b.com")
@example("<a@b.com>>")
@example("<a@b.com> ")
def test_an_address_reads_as_aiosmtpd_reads_it(text: str) -> None:
    session = LeanSMTP(lean_handler(type("H", (), {}))(), hostname="gw.test", loop=_LOOP)
    assert _outcome(session._getaddr, text) == _outcome(partial(SMTP._getaddr, session), text)


def _outcome(getaddr: Callable[[str], object], text: str) -> object:
    """What ``getaddr`` answers, or the exception it raises (aiosmtpd raises on some text)."""
    try:
        return getaddr(text)
    except Exception as exc:  # aiosmtpd's own IndexError on "a@", say
        return type(exc)


def test_the_local_part_limit_holds_on_the_fast_path() -> None:
    session = LeanSMTP(lean_handler(type("H", (), {}))(), hostname="gw.test", loop=_LOOP)
    session.local_part_limit = 5
    assert session._getaddr("<abcde@b.com> X=1") == ("abcde@b.com", "X=1")
    assert session._getaddr("<abcdef@b.com> X=1") == (None, None)
    assert SMTP._getaddr(session, "<abcdef@b.com> X=1") == (None, None)


_LOOP = asyncio.new_event_loop()  # aiosmtpd builds a StreamReader on one; none runs here
