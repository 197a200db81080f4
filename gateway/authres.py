r"""Authentication-Results: did our own MTA authenticate the From domain? (RFC 8601)

Anyone can write any From header, so a From alone grants nothing. An agent
acts on tickets by mail, and a message counts as the agent's only when it
arrives on the agent's secret reply key, its From is the agent's address,
and, where the operator set ``[gateway] trusted_authserv_id``, the MTA in
front of the gateway says that DKIM, SPF or DMARC passed for a domain
aligned with that From. This module answers the last question. The ticket
step calls :func:`check` when a message arrives on an agent's key and grants
the agent nothing unless the verdict passed; ``reason`` is the one line it
logs and records in the event.

Which headers are believed
--------------------------
An Authentication-Results header is plain text: a sender can write one
that claims our authserv-id. RFC 8601 section 5 requires the border MTA to
delete such headers when they arrive from outside, and section 4.1 has each
verifier prepend its own, like a trace field. Two things follow.

First, the operator's MTA must strip incoming Authentication-Results
headers that carry its authserv-id, and ``trusted_authserv_id`` must be
that id. Check this rather than assume it: by default OpenDKIM strips only
those that name its host *and* hold a dkim result (``RemoveARAll yes``
widens that, and some releases leave the second of two forgeries in place,
OpenDKIM issue #185); do not count on OpenDMARC or policyd-spf to strip
anything. A Postfix ``header_checks`` table (pcre) with a line such as
``/^Authentication-Results:\s*"?mx\.example\.com\b/ IGNORE`` removes them
before any milter adds its own, since header_checks does not see
milter-added headers.

Second, we believe position, not the id alone:

    Authentication-Results: mx.example.com; dmarc=pass ...        <- OpenDMARC  \
    Authentication-Results: mx.example.com; dkim=pass ...         <- OpenDKIM    |
    Received: from mail-wr1-f41.google.com (...)                  <- 1st Received | read
            by mx.example.com (Postfix) with ESMTPS id 4Wb9...                   |
    Authentication-Results: mx.example.com; spf=pass ...          <- policyd-spf /
    Received: by 2002:a05:6000:1a8e with SMTP id ...              <- 2nd Received: stop
    Authentication-Results: mx.example.com; dkim=pass ...         <- ignored
    DKIM-Signature: v=1; a=rsa-sha256; d=example.com; ...
    From: Alice <alice@example.com>

The rule: read the Authentication-Results headers from the top of the
header block down to the second Received header (exclusive), and of those
only the ones whose authserv-id equals ``trusted_authserv_id`` (ignoring
case, and ignoring a "/job-id" suffix as OpenDKIM and OpenDMARC add with
``AuthservIDWithJobID``). The first Received is the one our MTA wrote when
it accepted the message; milters insert their results above it or just
below it, so both places are read. Everything below the second Received
was in the message before the previous hop handed it over, so it cannot be
ours, whatever id it claims. Where several of the headers read report the
same method, only the topmost of them counts for that method: a verifier
puts its header above the text the sender wrote, so if stripping failed,
a forged result for a method we verify sits below the genuine one.

No positional rule can tell a forgery that the sender put directly under
our Received (a sender need not write any Received of their own) from a
result a milter put there, for a method no milter of ours reports: only the
stripping of RFC 8601 section 5 closes that gap, which is why it is a
requirement. A stack that adds Received headers of its own on top (a
content filter that re-injects, a delivery agent that writes one) can push
results that sit just below the MTA's Received past the cut: then nothing
is found and nothing passes, which shows in the log and is not unsafe.

Alignment
---------
DMARC's relaxed alignment (RFC 7489 section 3.1.1) asks for the same
organizational domain, which needs the public-suffix list. Without it we
accept a domain that equals the From domain, or of which one is a subdomain
of the other (the parent having at least two labels). That is stricter
than DMARC for siblings (``a.example.com`` and ``b.example.com`` do not
align here) and looser for parents that are public suffixes (``co.uk``),
whose keys and SPF records belong to registries, not to senders. A DMARC
pass counts only when its ``header.from`` equals the From domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["AuthVerdict", "check"]


@dataclass(frozen=True)
class AuthVerdict:
    """Whether the trusted MTA vouched for the From domain, and why, in one line."""

    passed: bool
    reason: str


@dataclass(frozen=True)
class _Token:
    """One lexical unit of a header value."""

    kind: str  # "word", "quoted", or the special character itself: ; = / . )
    text: str
    spaced: bool  # white space or a comment (CFWS) came right before it


@dataclass(frozen=True)
class _Result:
    """One resinfo: ``method=result`` and its properties, e.g. "header.d" -> "example.com"."""

    method: str
    result: str
    props: Mapping[str, str]


@dataclass(frozen=True)
class _Header:
    """One parsed Authentication-Results value."""

    authserv_id: str
    results: tuple[_Result, ...]


# RFC 8601 section 2.2 builds on RFC 5322 CFWS and RFC 2045 tokens; these
# characters separate tokens, everything else is part of a word.
_SPECIALS = frozenset(";=/.)")
_WSP = frozenset(" \t\r\n")
_WORD_END = _SPECIALS | _WSP | {"(", '"'}
# RFC 5321 Keyword (Let-dig [*(Let-dig / "-") Let-dig]), for methods and results.
_KEYWORD = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_DOMAIN = re.compile(r"(?:[a-z0-9_-]{1,63}\.)*[a-z0-9_-]{1,63}")
# The property that names the authenticated domain, per method (RFC 8601
# sections 2.7.1 and 2.7.2, RFC 7489 section 11.2); used to explain a failure.
_IDENTITY = {
    "dkim": ("header.d", "header.i"),
    "spf": ("smtp.mailfrom", "smtp.helo"),
    "dmarc": ("header.from",),
}
_MAX_SHOWN_RESULTS = 8
_MAX_SHOWN_CHARS = 100


def check(headers: Sequence[tuple[str, str]], from_address: str, authserv_id: str) -> AuthVerdict:
    """Did the MTA named ``authserv_id`` authenticate the domain of ``from_address``?

    headers: every top-level header as (lower-case name, decoded value), in
    message order (top first). from_address: the From addr-spec. authserv_id:
    the operator's ``[gateway] trusted_authserv_id``. Never raises: anything
    unreadable simply does not pass. The module docstring says which headers
    are believed.
    """
    trusted = authserv_id.strip()
    if not trusted:
        return AuthVerdict(False, "no trusted authserv-id configured")
    from_domain = _from_domain(from_address)
    if not from_domain:
        return AuthVerdict(False, f"From address {_show(from_address)!r} has no domain")
    ours = [
        parsed
        for value in _trusted_zone(headers)
        if (parsed := _parse_header(value)) is not None
        and parsed.authserv_id.lower() == trusted.lower()
    ]
    if not ours:
        return AuthVerdict(False, f"no Authentication-Results from {_show(trusted)}")
    results = _topmost_per_method(ours)
    passing = _aligned_pass(results, from_domain)
    if passing:
        return AuthVerdict(
            True, f"{passing} aligned with From {from_domain} (authserv-id {_show(trusted)})"
        )
    return AuthVerdict(
        False,
        f"no pass aligned with From {from_domain}: {_summary(results)}"
        f" (authserv-id {_show(trusted)})",
    )


# --- which headers ------------------------------------------------------------


def _trusted_zone(headers: Sequence[tuple[str, str]]) -> list[str]:
    """The Authentication-Results values above the second Received header.

    The first Received is our MTA's own; below the second, everything was
    written before the message reached us (see the module docstring).
    """
    values: list[str] = []
    received = 0
    for name, value in headers:
        key = name.strip().lower()
        if key == "received":
            received += 1
            if received == 2:
                break
        elif key == "authentication-results":
            values.append(value)
    return values


def _topmost_per_method(headers: Sequence[_Header]) -> list[_Result]:
    """For each method, the results of the topmost header that reports it.

    Verifiers prepend (RFC 8601 section 4.1), so a genuine header sits above
    anything the sender wrote: a forged "dkim=pass" below our OpenDKIM's
    "dkim=fail" is not read even if stripping let it through.
    """
    owner: dict[str, int] = {}
    results: list[_Result] = []
    for index, header in enumerate(headers):
        for result in header.results:
            if owner.setdefault(result.method, index) == index:
                results.append(result)
    return results


# --- alignment ----------------------------------------------------------------


def _aligned_pass(results: Sequence[_Result], from_domain: str) -> str:
    """The first aligned pass, as "method=pass property=value", or "".

    DKIM is asked first (a signature over the From itself), then DMARC, then
    SPF (which vouches only for the envelope); any one is enough.
    """
    null_mailfrom = not any(_names_mailfrom(result) for result in results)
    for method in ("dkim", "dmarc", "spf"):
        for result in results:
            if result.method == method and result.result == "pass":
                prop = _aligned_identity(result, from_domain, null_mailfrom)
                if prop:
                    return f"{method}=pass {prop}={_show(result.props[prop])}"
    return ""


def _aligned_identity(result: _Result, from_domain: str, null_mailfrom: bool) -> str:
    """The property of a passing ``result`` whose domain aligns with the From, or ""."""
    props = result.props
    if result.method == "dkim":
        # RFC 8601 section 2.7.1: header.d is the signing domain; header.i (the
        # identity, within d by RFC 6376 section 3.5) stands in when d is missing.
        candidate = "header.d" if "header.d" in props else "header.i"
    elif result.method == "spf":
        # RFC 7489 section 4.1: DMARC uses SPF's MAIL FROM identity, which for
        # a null reverse-path is postmaster@<HELO> (RFC 7208 section 2.4). So a
        # HELO result counts only when MAIL FROM is reported empty; taking a
        # HELO pass for a MAIL FROM pass was the OpenDMARC bypass CVE-2019-20790.
        if _names_mailfrom(result):
            candidate = "smtp.mailfrom"
        elif "smtp.mailfrom" in props and null_mailfrom:
            candidate = "smtp.helo"
        else:
            return ""
    else:
        # RFC 7489 section 11.2: header.from is the From domain DMARC evaluated;
        # it must be ours exactly, or that pass was about another From.
        found = _domain(props.get("header.from", ""))
        return "header.from" if found == from_domain else ""
    return candidate if _aligned(_domain(props.get(candidate, "")), from_domain) else ""


def _names_mailfrom(result: _Result) -> bool:
    """True for an SPF result about a non-null MAIL FROM."""
    return result.method == "spf" and bool(_domain(result.props.get("smtp.mailfrom", "")))


def _aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment without a public-suffix list (see the module docstring)."""
    if not domain or not from_domain:
        return False
    if domain == from_domain:
        return True
    # A bare TLD ("com") never aligns: the parent must have two labels at least.
    parent_ok = "." in domain and from_domain.endswith("." + domain)
    child_ok = "." in from_domain and domain.endswith("." + from_domain)
    return parent_ok or child_ok


def _from_domain(address: str) -> str:
    """The lower-case domain of an addr-spec; "" when there is no "@" or no valid domain."""
    if "@" not in address:
        return ""
    return _domain(address)


def _domain(value: str) -> str:
    """The domain in an address, "@domain" or bare domain: lower case, A-labels; or ""."""
    text = value.strip().strip("<>").rpartition("@")[2].strip().rstrip(".").lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return ""
    return text if _DOMAIN.fullmatch(text) else ""


# --- explaining a failure -----------------------------------------------------


def _summary(results: Sequence[_Result]) -> str:
    """What the trusted MTA said, e.g. "dkim=fail header.d=example.com, spf=softfail"."""
    if not results:
        return "none"
    shown = [_describe(result) for result in results[:_MAX_SHOWN_RESULTS]]
    if len(results) > _MAX_SHOWN_RESULTS:
        shown.append(f"{len(results) - _MAX_SHOWN_RESULTS} more")
    return ", ".join(shown)


def _describe(result: _Result) -> str:
    """One result with the identity it was about, if the header named one."""
    text = f"{_show(result.method)}={_show(result.result)}"
    for prop in _IDENTITY.get(result.method, ()):
        if result.props.get(prop):
            return f"{text} {prop}={_show(result.props[prop])}"
    return text


def _show(text: str) -> str:
    """``text`` safe for a one-line log entry: no control characters, bounded length."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text[: _MAX_SHOWN_CHARS + 1])
    return clean if len(clean) <= _MAX_SHOWN_CHARS else clean[:_MAX_SHOWN_CHARS] + "..."


# --- parsing (RFC 8601 section 2.2) -------------------------------------------


def _parse_header(value: str) -> _Header | None:
    """``authserv-id [version] ( ; none / 1*( ; resinfo ) )``, or None if unreadable.

    A resinfo that cannot be read is dropped on its own; the header is
    dropped only when its authserv-id cannot be read.
    """
    segments = _split(_tokenize(value))
    authserv_id = _head(segments[0])
    if authserv_id is None:
        return None
    rest = segments[1:]
    # Section 2.2: "none" alone says no method produced a result.
    if len(rest) == 1 and [(t.kind, t.text.lower()) for t in rest[0]] == [("word", "none")]:
        return _Header(authserv_id, ())
    results = tuple(r for segment in rest if (r := _resinfo(segment)) is not None)
    return _Header(authserv_id, results)


def _head(tokens: Sequence[_Token]) -> str | None:
    """The authserv-id of ``authserv-id [CFWS version]``, or None.

    Section 2.5: the authserv-id is a ``value`` (RFC 2045 token or quoted
    string), in practice a host name. OpenDKIM and OpenDMARC may append
    "/job-id" (``AuthservIDWithJobID``), quoted or not; it is dropped.
    Section 2.2 defines version 1 only: another version is not understood.
    """
    if not tokens:
        return None
    if tokens[0].kind == "quoted":
        authserv_id, end = tokens[0].text.partition("/")[0], 1
    else:
        end = 0
        while _kind(tokens, end) in ("word", ".") and not (end and tokens[end].spaced):
            end += 1
        authserv_id = "".join(t.text for t in tokens[:end])
        if _kind(tokens, end) == "/" and not tokens[end].spaced:
            end = _value(tokens, end)[1]  # the job id runs to the next CFWS
    version = [(t.kind, t.text) for t in tokens[end:]]
    if version and version != [("word", "1")]:
        return None
    return authserv_id.strip() or None


def _resinfo(tokens: Sequence[_Token]) -> _Result | None:
    """``method[/version]=result [reason=value] [ptype.property=value ...]``, or None.

    Nonstandard ``name=value`` pairs (Microsoft's ``action=none``) are kept
    under their bare name. A property given twice with different values
    makes the whole resinfo ambiguous, so it is dropped: a verifier that
    copies sender-chosen text into one property must not let the sender add
    a second ``header.d`` of their choosing.
    """
    method, pos = _keyword(tokens, 0)
    if method and _kind(tokens, pos) == "/":
        version, pos = _keyword(tokens, pos + 1)
        if not version.isdigit():
            return None
    if not method or _kind(tokens, pos) != "=":
        return None
    result, pos = _keyword(tokens, pos + 1)
    if not result:
        return None
    props: dict[str, str] = {}
    while pos < len(tokens):
        name, pos = _property_name(tokens, pos)
        if not name or _kind(tokens, pos) != "=":
            return None
        value, pos = _value(tokens, pos + 1)
        if props.setdefault(name, value) != value:
            return None
    return _Result(method.lower(), result.lower(), props)


def _keyword(tokens: Sequence[_Token], pos: int) -> tuple[str, int]:
    """The Keyword at ``pos`` and the position after it, or ("", pos)."""
    if _kind(tokens, pos) == "word" and _KEYWORD.fullmatch(tokens[pos].text):
        return tokens[pos].text, pos + 1
    return "", pos


def _property_name(tokens: Sequence[_Token], pos: int) -> tuple[str, int]:
    """``ptype.property`` (or a bare name such as "reason"), lower-cased; ("", pos) if none."""
    parts: list[str] = []
    while True:
        word, after = _keyword(tokens, pos)
        if not word:
            return "", pos
        parts.append(word.lower())
        pos = after
        if _kind(tokens, pos) != ".":
            return ".".join(parts), pos
        pos += 1


def _value(tokens: Sequence[_Token], pos: int) -> tuple[str, int]:
    """A pvalue: the tokens from ``pos`` up to the next CFWS, joined (section 2.2).

    Joining keeps "user@example.com", "example.com" and base64 such as
    "ab/c+d=" whole; a quoted string contributes its unescaped content.
    """
    end = pos
    while end < len(tokens) and (end == pos or not tokens[end].spaced):
        end += 1
    return "".join(t.text for t in tokens[pos:end]), end


def _kind(tokens: Sequence[_Token], pos: int) -> str:
    """The kind of the token at ``pos``, or "" past the end."""
    return tokens[pos].kind if pos < len(tokens) else ""


def _split(tokens: Sequence[_Token]) -> list[list[_Token]]:
    """The tokens between the ";" separators; always at least one (maybe empty) list."""
    segments: list[list[_Token]] = [[]]
    for token in tokens:
        if token.kind == ";":
            segments.append([])
        else:
            segments[-1].append(token)
    return segments


def _tokenize(text: str) -> list[_Token]:
    """Words, quoted strings and specials; comments and folding white space are dropped.

    RFC 5322 section 3.2.2: comments nest and may hold any text, including
    ";" and "="; a backslash quotes the next character in comments and in
    quoted strings (section 3.2.4). An unterminated comment or quoted string
    runs to the end of the value instead of raising.
    """
    tokens: list[_Token] = []
    pos, spaced = 0, False
    while pos < len(text):
        char = text[pos]
        if char in _WSP:
            pos, spaced = pos + 1, True
        elif char == "(":
            pos, spaced = _skip_comment(text, pos), True
        elif char == '"':
            content, pos = _quoted(text, pos)
            tokens.append(_Token("quoted", content, spaced))
            spaced = False
        elif char in _SPECIALS:
            tokens.append(_Token(char, char, spaced))
            pos, spaced = pos + 1, False
        else:
            end = pos
            while end < len(text) and text[end] not in _WORD_END:
                end += 1
            tokens.append(_Token("word", text[pos:end], spaced))
            pos, spaced = end, False
    return tokens


def _skip_comment(text: str, pos: int) -> int:
    """The position after the (possibly nested) comment that opens at ``pos``."""
    depth = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            pos += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return len(text)


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """The unescaped content of the quoted string that opens at ``pos``, and the end."""
    content: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(content), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        content.append(char)
        pos += 1
    return "".join(content), pos
