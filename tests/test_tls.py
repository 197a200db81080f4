"""STARTTLS on the SMTP listener, with throwaway certificates made by openssl.

A client that trusts only the test's certificate upgrades the session and
delivers; with tls_required, MAIL before STARTTLS is refused; a SIGHUP
picks up a renewed certificate for the next session and keeps the old one
when the new files are broken.
"""

from __future__ import annotations

import hashlib
import shutil
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from tests.helpers import SUPPORT, GatewayThread, mail, wire, write_config


def make_certificate(folder: Path, name: str, common_name: str = "gw.test") -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files."""
    require(shutil.which("openssl") is not None, "openssl")
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN={common_name}", "-addext", f"subjectAltName=DNS:{common_name}",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def tls_config(folder: Path, database_url: str, required: bool = False) -> Path:
    cert, key = make_certificate(folder, "server")
    return write_config(
        folder,
        database_url,
        f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n'
        f"tls_required = {'true' if required else 'false'}",
    )


def client_context(cert: Path) -> ssl.SSLContext:
    """A client that trusts exactly this certificate (and checks its name)."""
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = True
    return context


def fingerprint(client: smtplib.SMTP) -> str:
    der = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    return hashlib.sha256(der).hexdigest()


def deliver_over_tls(gateway: GatewayThread, cert: Path) -> str:
    """Deliver one message after STARTTLS; the server certificate's fingerprint."""
    with smtplib.SMTP("127.0.0.1", gateway.port(), timeout=30) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        client._host = "gw.test"  # the name the certificate is for (SNI and the check)
        client.starttls(context=client_context(cert))
        seen = fingerprint(client)
        client.sendmail("customer@example.org", [SUPPORT], wire(mail()))
    gateway.idle()
    return seen


def test_starttls_delivers(tmp_path: Path, database_url: str) -> None:
    with GatewayThread(tls_config(tmp_path, database_url)) as gateway:
        deliver_over_tls(gateway, tmp_path / "server.crt")
        assert [t["number"] for t in gateway.tickets()] == [10000]
        # without tls_required, plain delivery still works (MTAs fall back)
        gateway.send(mail(subject="Plain"))
        assert len(gateway.tickets()) == 2


def test_tls_required_refuses_mail_before_starttls(tmp_path: Path, database_url: str) -> None:
    with GatewayThread(tls_config(tmp_path, database_url, required=True)) as gateway:
        with smtplib.SMTP("127.0.0.1", gateway.port(), timeout=30) as client:
            client.ehlo("client.test")
            code, reply = client.mail("customer@example.org")
            assert code == 530 and b"STARTTLS" in reply
        deliver_over_tls(gateway, tmp_path / "server.crt")
        assert len(gateway.tickets()) == 1


def test_reload_picks_up_a_renewed_certificate_and_keeps_it_on_errors(
    tmp_path: Path, database_url: str
) -> None:
    config = tls_config(tmp_path, database_url)
    with GatewayThread(config) as gateway:
        first = deliver_over_tls(gateway, tmp_path / "server.crt")
        renewed, renewed_key = make_certificate(tmp_path, "renewed")
        shutil.copy(renewed, tmp_path / "server.crt")
        shutil.copy(renewed_key, tmp_path / "server.key")
        assert gateway.call(gateway.gateway.reload())
        second = deliver_over_tls(gateway, tmp_path / "server.crt")
        assert second != first  # the next session got the renewed certificate
        (tmp_path / "server.key").write_text("not a key\n")
        assert gateway.call(gateway.gateway.reload())  # the configuration itself is fine
        assert deliver_over_tls(gateway, tmp_path / "server.crt") == second  # old one kept


def test_a_bad_certificate_stops_the_start_with_file_and_key(
    tmp_path: Path, database_url: str
) -> None:
    config = tls_config(tmp_path, database_url)
    (tmp_path / "server.key").write_text("not a key\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{config}: gateway.tls_cert_file: cannot use" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("missing", ["tls_key_file", "tls_cert_file"])
def test_certificate_and_key_go_together(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "mailboxes.toml"
    other = "tls_cert_file" if missing == "tls_key_file" else "tls_key_file"
    path.write_text(f'[gateway]\n{other} = "x.pem"\n\n[[mailbox]]\naddress = "s@example.com"\n')
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "gateway.tls_cert_file: STARTTLS needs tls_cert_file and tls_key_file" in done.stderr
