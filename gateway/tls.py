"""TLS for the SMTP listener: the server context from the configured files.

STARTTLS (RFC 3207) is offered when ``tls_cert_file`` and ``tls_key_file``
are set. The files are read at start and again on every SIGHUP, so a
renewed certificate (certbot's deploy hook: ``systemctl reload
ticket-gateway``) is used by the next session without a restart; a file
that fails to load then is refused and the running context kept.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server context for STARTTLS; ValueError with a clear reason when a file is bad."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as exc:
        raise ValueError(f"{exc.filename}: no such file") from None
    except PermissionError as exc:
        raise ValueError(f"{exc.filename}: not readable by this user") from None
    except ssl.SSLError as exc:
        raise ValueError(
            f"cannot use {cert_file} with {key_file}: {exc.reason or exc} "
            "(a PEM certificate chain and its matching private key are needed)"
        ) from None
    return context
