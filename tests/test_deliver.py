"""Outbound transports against real servers: what the next hop receives, and the verdict.

Each SMTP test starts a real aiosmtpd server on 127.0.0.1 whose answers the
test chooses, and talks to it through :func:`gateway.deliver.transport_from_url`
exactly as the outbox worker will. Certificates and keys are throwaway ones
made by ``openssl`` for the test session.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway import dkim as gateway_dkim
from gateway.deliver import DeliveryResult, Transport, transport_from_url
from tests.helpers import free_port
from tests.smtp_sink import ServerFactory

MESSAGE = (
    b"From: Example Support <support@example.com>\r\n"
    b"To: lan@example.vn\r\n"
    b"Subject: [#10000] Re: printer\r\n"
    b"Message-ID: <reply-1@gw.test>\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line starting with a dot must survive dot-stuffing\r\n"
)
PASSWORD = "s3cret with spaces"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """Accept exactly gw / PASSWORD."""
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"gw", PASSWORD.encode())
    # handled=False: aiosmtpd then answers 535 itself.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


def deliver(
    transport: Transport,
    recipient: str = "lan@example.vn",
    message: bytes = MESSAGE,
    sender: str = "bounces@gw.test",
) -> DeliveryResult:
    """One send, on its own event loop, as the outbox worker would await it."""

    async def send() -> DeliveryResult:
        result = await transport.send(sender, recipient, message)
        # A TLS transport needs a few more loop turns to close its socket; the
        # worker's loop lives on, this one ends here: give it those turns.
        await asyncio.sleep(0.05)
        return result

    return asyncio.run(send())


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The server side of the throwaway certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "relay.password"
    path.write_text(PASSWORD + "\n", encoding="utf-8")
    return path


# --- SMTP: replies and verdicts --------------------------------------------


@pytest.mark.parametrize("sender", ["bounces+10000@gw.test", ""])
def test_sent_delivers_exact_bytes_and_envelope(
    smtp_server: ServerFactory, tmp_path: Path, sender: str
) -> None:
    sink, port = smtp_server()
    transport = transport_from_url(f"smtp://127.0.0.1:{port}?security=none", tmp_path)
    result = deliver(transport, sender=sender)
    assert result == DeliveryResult("sent", "250 2.0.0 Ok: queued as 4XyZ")
    [got] = sink.received
    # An empty sender is the null reverse-path, MAIL FROM:<> (RFC 5321 4.5.5),
    # which aiosmtpd reports as the address "<>".
    mail_from = sender or "<>"
    assert (got.mail_from, got.rcpt_tos, got.content) == (mail_from, ["lan@example.vn"], MESSAGE)
    assert sink.mail_commands == [mail_from]
    assert not got.tls


def test_non_ascii_addresses_and_body_use_smtputf8_and_8bitmime(
    smtp_server: ServerFactory, tmp_path: Path
) -> None:
    sink, port = smtp_server()
    transport = transport_from_url(f"smtp://127.0.0.1:{port}?security=none", tmp_path)
    message = MESSAGE.replace(b"Hello,", "Chào chị Lan, سلام".encode())
    assert deliver(transport, recipient="lan@ví-dụ.vn", message=message).status == "sent"
    [got] = sink.received
    assert (got.rcpt_tos, got.content) == (["lan@ví-dụ.vn"], message)
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(got.mail_options)


@pytest.mark.parametrize(
    ("stage", "reply", "status"),
    [
        ("MAIL", "451 4.3.0 Try again later", "deferred"),
        ("MAIL", "553 5.7.1 Sender address rejected", "failed"),
        ("RCPT", "451 4.7.1 Try again later", "deferred"),
        ("RCPT", "550 5.1.1 <lan@example.vn>: Recipient address rejected: User unknown", "failed"),
        ("RCPT", "552 5.5.3 Too many recipients", "deferred"),  # RFC 5321 4.5.3.1.10
        ("DATA", "452 4.3.1 Insufficient system storage", "deferred"),
        ("DATA", "554 5.7.1 Message rejected as spam", "failed"),
    ],
)
def test_replies_map_to_verdicts(
    smtp_server: ServerFactory, tmp_path: Path, stage: str, reply: str, status: str
) -> None:
    sink, port = smtp_server()
    sink.replies[stage] = reply
    transport = transport_from_url(f"smtp://127.0.0.1:{port}?security=none", tmp_path)
    assert deliver(transport) == DeliveryResult(status, reply)  # type: ignore[arg-type]
    assert sink.received == []


def test_server_down_defers_then_sends_once_up(smtp_server: ServerFactory, tmp_path: Path) -> None:
    port = free_port()
    transport = transport_from_url(f"smtp://127.0.0.1:{port}?security=none", tmp_path)
    assert deliver(transport) == DeliveryResult("deferred", f"connection refused: 127.0.0.1:{port}")
    sink, _ = smtp_server(port=port)
    assert deliver(transport).status == "sent"
    assert len(sink.received) == 1


def test_a_server_that_never_greets_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts; nobody ever says 220
        port = silent.getsockname()[1]
        transport = transport_from_url(
            f"smtp://127.0.0.1:{port}?security=none&timeout=0.5", tmp_path
        )
        result = deliver(transport)
    assert result.status == "deferred"
    assert result.detail.startswith(f"timed out: 127.0.0.1:{port}")


@pytest.mark.parametrize(
    "greeting", ["421 4.3.2 Service not available, try later", "554 5.7.1 No SMTP service for you"]
)
def test_refusing_greeting_defers(tmp_path: Path, greeting: str) -> None:
    """A relay refusing us (RFC 5321 3.1) is about our setup, not the message: mail waits."""
    heard: list[bytes] = []

    async def attempt() -> DeliveryResult:
        hung_up = asyncio.Event()

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(greeting.encode() + b"\r\n")
            heard.append(await reader.read())  # whatever the client says until it hangs up
            writer.close()
            await writer.wait_closed()
            hung_up.set()

        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            transport = transport_from_url(f"smtp://127.0.0.1:{port}?security=none", tmp_path)
            result = await transport.send("a@gw.test", "b@example.org", MESSAGE)
            await asyncio.wait_for(hung_up.wait(), 5)
        return result

    assert asyncio.run(attempt()) == DeliveryResult("deferred", f"greeting: {greeting}")
    assert b"MAIL" not in b"".join(heard)


def test_envelope_with_line_breaks_fails_without_talking(
    smtp_server: ServerFactory, tmp_path: Path
) -> None:
    sink, port = smtp_server()
    transport = transport_from_url(f"smtp://127.0.0.1:{port}?security=none", tmp_path)
    result = deliver(transport, recipient="lan@example.vn>\r\nRCPT TO:<victim@example.org")
    assert result.status == "failed"
    assert "CR, LF or NUL" in result.detail
    assert sink.mail_commands == []


# --- SMTP: TLS and AUTH ----------------------------------------------------


def test_starttls_required_but_not_offered_defers_and_sends_nothing(
    smtp_server: ServerFactory, tmp_path: Path
) -> None:
    sink, port = smtp_server()  # no tls_context: no STARTTLS in EHLO
    transport = transport_from_url(f"smtp://127.0.0.1:{port}", tmp_path)  # starttls by default
    assert deliver(transport) == DeliveryResult(
        "deferred", "server does not offer STARTTLS; refusing to send in plaintext"
    )
    assert sink.mail_commands == []
    assert sink.received == []


def test_starttls_with_trusted_certificate_sends_over_tls(
    smtp_server: ServerFactory,
    server_tls: ssl.SSLContext,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    sink, port = smtp_server(tls_context=server_tls, require_starttls=True)
    transport = transport_from_url(
        f"smtp://127.0.0.1:{port}?security=starttls&cafile={certificate[0]}", tmp_path
    )
    assert deliver(transport).status == "sent"
    [got] = sink.received
    assert got.tls
    assert got.content == MESSAGE


def test_starttls_with_untrusted_certificate_defers(
    smtp_server: ServerFactory, server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    """No cafile: the system store does not know our self-signed certificate."""
    sink, port = smtp_server(tls_context=server_tls)
    result = deliver(transport_from_url(f"smtp://127.0.0.1:{port}", tmp_path))
    assert result.status == "deferred"
    assert result.detail.startswith(f"TLS handshake failed: 127.0.0.1:{port}: ")
    assert "certificate" in result.detail
    assert sink.mail_commands == []


def test_implicit_tls(
    smtp_server: ServerFactory,
    server_tls: ssl.SSLContext,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    sink, port = smtp_server(ssl_context=server_tls)
    transport = transport_from_url(
        f"smtp://127.0.0.1:{port}?security=tls&cafile={certificate[0]}", tmp_path
    )
    assert deliver(transport).status == "sent"
    assert len(sink.received) == 1


def test_auth_over_starttls(
    smtp_server: ServerFactory,
    server_tls: ssl.SSLContext,
    certificate: tuple[Path, Path],
    password_file: Path,
) -> None:
    sink, port = smtp_server(
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    url = f"smtp://gw@127.0.0.1:{port}?password_file={password_file.name}&cafile={certificate[0]}"
    transport = transport_from_url(url, password_file.parent)
    assert transport.describe() == f"smtp://gw@127.0.0.1:{port} (starttls)"
    assert PASSWORD not in repr(transport)
    assert deliver(transport).status == "sent"
    [got] = sink.received
    assert (got.tls, got.login) == (True, b"gw")


def test_wrong_password_defers(
    smtp_server: ServerFactory,
    server_tls: ssl.SSLContext,
    certificate: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """535 is a 5xx, but it is our configuration: mail waits for the operator, no bounce."""
    sink, port = smtp_server(
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    )
    (tmp_path / "pw").write_text("wrong\n", encoding="utf-8")
    transport = transport_from_url(
        f"smtp://gw@127.0.0.1:{port}?password_file=pw&cafile={certificate[0]}", tmp_path
    )
    result = deliver(transport)
    assert result.status == "deferred"
    assert result.detail.startswith("authentication as gw failed: 535 5.7.8")
    assert "wrong" not in result.detail
    assert sink.mail_commands == []


# --- maildir ---------------------------------------------------------------


@pytest.mark.parametrize("message", [MESSAGE, MESSAGE.replace(b"\r\n", b"\n")])
def test_maildir_delivery(tmp_path: Path, message: bytes) -> None:
    transport = transport_from_url("maildir:var/outbox", tmp_path)
    box = tmp_path / "var" / "outbox"
    assert transport.describe() == f"maildir:{box}"
    result = deliver(transport, sender="", message=message)
    assert result.status == "sent"
    [delivered] = (box / "new").iterdir()
    assert result.detail == f"delivered to {delivered}"
    eol = b"\r\n" if message is MESSAGE else b"\n"
    assert delivered.read_bytes() == (
        b"Return-Path: <>" + eol + b"Delivered-To: lan@example.vn" + eol + message
    )
    assert list((box / "tmp").iterdir()) == []
    assert (box / "cur").is_dir()
    assert delivered.stat().st_mode & 0o077 == 0


def test_maildir_names_are_unique(tmp_path: Path) -> None:
    transport = transport_from_url(f"maildir:{tmp_path / 'box'}", Path("/nonexistent"))

    async def many() -> list[DeliveryResult]:
        return list(
            await asyncio.gather(
                *(transport.send("a@gw.test", "b@example.org", MESSAGE) for _ in range(20))
            )
        )

    assert {r.status for r in asyncio.run(many())} == {"sent"}
    assert len(list((tmp_path / "box" / "new").iterdir())) == 20


def test_maildir_io_error_defers(tmp_path: Path) -> None:
    (tmp_path / "outbox").write_text("a file where the maildir should be")
    result = deliver(transport_from_url("maildir:outbox", tmp_path))
    assert result.status == "deferred"
    assert str(tmp_path / "outbox") in result.detail


# --- configuration ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("imap://mail.example.com:993", "unknown scheme 'imap'"),
        ("relay.example.com:587", "unknown scheme 'relay.example.com'"),
        ("relay.example.com", "unknown scheme none"),
        ("smtp://relay.example.com", "missing port"),
        ("smtp://relay.example.com:submission", "port must be a number"),
        ("smtp://:587", "missing host"),
        ("smtp://relay.example.com:587?security=maybe", "security must be one of"),
        ("smtp://relay.example.com:587?tls_verify=false", "unknown option 'tls_verify'"),
        ("smtp://relay.example.com:587?timeout=0", "timeout must be a positive number"),
        ("smtp://gw@relay.example.com:587", "user 'gw' needs ?password_file=PATH"),
        ("smtp://relay.example.com:587?password_file=pw", "no user"),
        ("smtp://gw@relay.example.com:587?password_file=missing", "cannot read password_file"),
        ("smtp://gw@relay.example.com:25?security=none&password_file=pw", "security=none"),
        ("smtp://relay.example.com:587?cafile=missing.pem", "cannot load cafile"),
        ("maildir:", "missing path"),
    ],
)
def test_bad_urls_are_refused_clearly(tmp_path: Path, url: str, complaint: str) -> None:
    (tmp_path / "pw").write_text("secret\n", encoding="utf-8")
    with pytest.raises(ValueError, match="outbound URL") as caught:
        transport_from_url(url, tmp_path)
    assert complaint in str(caught.value)


def test_password_in_url_is_refused_and_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="password_file") as caught:
        transport_from_url("smtp://gw:hunter2@relay.example.com:587", tmp_path)
    assert "hunter2" not in str(caught.value)


def test_password_file_read_at_construction(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret\n", encoding="utf-8")
    transport = transport_from_url("smtp://gw@relay.example.com:587?password_file=pw", tmp_path)
    pw.unlink()  # already read: a later permission change does not break sending
    assert transport.describe() == "smtp://gw@relay.example.com:587 (starttls)"
    assert "secret" not in repr(transport)


# --- DKIM ------------------------------------------------------------------


@pytest.fixture(scope="session")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A throwaway 2048-bit key and its DNS TXT record."""
    key = tmp_path_factory.mktemp("dkim") / "mail.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


@pytest.mark.parametrize("message", [MESSAGE, MESSAGE.replace(b"\r\n", b"\n")])
def test_dkim_signature_verifies(dkim_key: tuple[Path, bytes], message: bytes) -> None:
    key, record = dkim_key
    lookups: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        lookups.append(name)
        return record

    signed = gateway_dkim.sign(message, domain="example.com", selector="gw2024", key_file=key)
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert signed.endswith(message)
    assert dkimpy.verify(signed, dnsfunc=dns)
    assert lookups == [b"gw2024._domainkey.example.com."]
    header = " ".join(signed[: -len(message)].decode().split())
    signed_names = {name.strip() for name in re.search(r" h=([^;]+);", header)[1].split(":")}
    assert signed_names >= {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "reply-to",
        "content-type",
        "mime-version",
        "auto-submitted",
    }
    # Changing a signed header, or adding a second Subject, breaks the signature.
    eol = b"\r\n" if message is MESSAGE else b"\n"
    assert not dkimpy.verify(signed.replace(b"printer", b"PRINTER"), dnsfunc=dns)
    assert not dkimpy.verify(
        signed.replace(b"Subject:", b"Subject: evil" + eol + b"Subject:"), dnsfunc=dns
    )


def test_dkim_load_key_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        gateway_dkim.load_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("not a key\n")
    with pytest.raises(ValueError, match="not a PEM RSA private key"):
        gateway_dkim.load_key(tmp_path / "junk.key")
