"""DKIM: sign outbound mail so receivers can check it comes from our domain (RFC 6376).

Where it sits: between render and deliver. Whoever assembles the final bytes
of an outbound message (the outbox, before it hands them to a transport in
:mod:`gateway.deliver`) calls :func:`sign` once every header is in place; any
change to a signed header or to the body afterwards breaks the signature.
The daemon calls :func:`load_key` at startup so that a missing or broken key
stops it there, not at the first reply to a customer.

The public half goes into DNS as ``SELECTOR._domainkey.DOMAIN TXT
"v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>"``.
"""

from __future__ import annotations

from pathlib import Path

import dkim as dkimpy

# RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits (2048 advised).
MIN_KEY_BITS = 1024

# The header fields a reader relies on, plus those that steer replies and
# threading (In-Reply-To, References, Reply-To) and loop detection
# (Auto-Submitted, RFC 3834).
_SIGNED = (
    "from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
    "reply-to", "content-type", "content-transfer-encoding", "mime-version", "auto-submitted",
)  # fmt: skip
# RFC 6376 5.4.2 and 8.15: naming each field once more than it occurs signs
# the absence of further instances, so nobody on the way can add a second
# From or Subject that a mail client might show instead of ours.
SIGNED_HEADERS = _SIGNED + _SIGNED


def load_key(path: Path) -> bytes:
    """The PEM RSA private key (PKCS#1 or PKCS#8) at ``path``; ValueError if unusable."""
    try:
        key = path.read_bytes().replace(b"\r\n", b"\n")
    except OSError as exc:
        raise ValueError(f"DKIM key {path}: cannot read it: {exc.strerror}") from None
    try:
        parsed = dkimpy.crypto.parse_pem_private_key(key)
    except (dkimpy.crypto.UnparsableKeyError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"DKIM key {path}: not a PEM RSA private key ({first_line})") from None
    bits = int(parsed["modulus"]).bit_length()
    if bits < MIN_KEY_BITS:
        raise ValueError(f"DKIM key {path}: {bits}-bit RSA is too weak; use 2048 bits")
    return key


def sign(message: bytes, *, domain: str, selector: str, key_file: Path) -> bytes:
    """``message`` with a DKIM-Signature header field prepended (rsa-sha256, relaxed/relaxed).

    Relaxed canonicalization (RFC 6376 3.4.2, 3.4.4) survives the header
    refolding and whitespace changes relays commonly make. Raises ValueError
    for an unusable key, domain or selector, or a message dkimpy cannot parse.
    """
    key = load_key(key_file)
    try:
        signature = dkimpy.sign(
            message,
            selector.encode("ascii"),
            domain.encode("idna"),
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=[name.encode("ascii") for name in SIGNED_HEADERS],
            linesep=_line_ending(message),
        )
    except UnicodeError as exc:
        raise ValueError(f"DKIM domain {domain!r} or selector {selector!r}: {exc}") from None
    except dkimpy.DKIMException as exc:
        raise ValueError(f"DKIM signing for {domain} failed: {exc}") from None
    return bytes(signature) + message


def _line_ending(message: bytes) -> bytes:
    """The message's own line ending, so the signature header matches the rest."""
    first = message.find(b"\n")
    return b"\r\n" if first > 0 and message[first - 1 : first] == b"\r" else b"\n"
