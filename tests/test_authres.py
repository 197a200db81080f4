"""authres: does our MTA's Authentication-Results vouch for the agent's From domain?

The header values are modelled on what real verifiers write: Postfix with
OpenDKIM, OpenDMARC and policyd-spf in front of the gateway (authserv-id
mx.help.example.com), and Gmail and Microsoft 365 results that arrive with
mail fetched from or relayed by those services. Every test asserts the
verdict and the one-line reason an operator reads in the log. The forgery
tests put a sender-written header claiming our id where a sender can put
it; the hypothesis tests feed arbitrary text.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.authres import AuthVerdict, check
from gateway.parse import parse

TRUSTED = "mx.help.example.com"
AGENT = "alice@example.com"

# The Received our Postfix writes when it accepts the message (the first one).
OUR_RECEIVED = (
    "received",
    "from mail-wr1-f41.google.com (mail-wr1-f41.google.com [209.85.221.41])"
    " by mx.help.example.com (Postfix) with ESMTPS id 4Wb9Lk2QzVz9sVb"
    " for <support+k7Qm2xR@help.example.com>; Tue, 14 May 2024 09:12:03 +0200 (CEST)",
)
# The sender's own hop: the second Received. Everything below it came with the message.
SENDER_RECEIVED = (
    "received",
    "by 2002:a05:6000:1a8e:b0:34d:9c9f:2cf0 with SMTP id ffacd0b85a97d-34d9c9f2cf0so3456789f8f.2"
    " for <support+k7Qm2xR@help.example.com>; Tue, 14 May 2024 00:12:02 -0700 (PDT)",
)
MESSAGE = [
    (
        "dkim-signature",
        "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel1; t=1715670722;"
        " h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;"
        " b=Xy3kQ9aBdGhYwVtq...",
    ),
    ("from", "Alice Martin <alice@example.com>"),
    ("to", "support+k7Qm2xR@help.example.com"),
    ("subject", "Re: [#4711] Refund for order 12345"),
    ("date", "Tue, 14 May 2024 09:12:01 +0200"),
    ("message-id", "<CAF3x9Zq1@mail.gmail.com>"),
]

OPENDKIM_PASS = (
    "mx.help.example.com; dkim=pass (2048-bit key; unprotected) header.d=example.com"
    " header.i=@example.com header.a=rsa-sha256 header.s=sel1 header.b=Xy3kQ9aB"
)
OPENDKIM_FAIL = (
    'mx.help.example.com; dkim=fail reason="signature verification failed"'
    " (2048-bit key; unprotected) header.d=example.com header.i=@example.com"
    " header.a=rsa-sha256 header.s=sel1 header.b=Xy3kQ9aB"
)
OPENDMARC_PASS = "mx.help.example.com; dmarc=pass (p=reject dis=none) header.from=example.com"
OPENDMARC_FAIL = "mx.help.example.com; dmarc=fail (p=reject dis=none) header.from=example.com"
POLICYD_SPF_PASS = "mx.help.example.com; spf=pass (sender SPF authorized) smtp.mailfrom=example.com"
POLICYD_SPF_SOFTFAIL = (
    "mx.help.example.com; spf=softfail (domain owner discourages use of this host)"
    " smtp.mailfrom=example.com"
)
GMAIL = (
    "mx.google.com;\r\n       dkim=pass header.i=@example.com header.s=sel1 header.b=Xy3kQ9aB;"
    "\r\n       arc=pass (i=1 spf=pass spfdomain=example.com dkim=pass dkdomain=example.com"
    " dmarc=pass fromdomain=example.com);"
    "\r\n       spf=pass (google.com: domain of alice@example.com designates 209.85.221.41"
    " as permitted sender) smtp.mailfrom=alice@example.com;"
    "\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com"
)
# Microsoft 365 leaves out the authserv-id altogether.
MICROSOFT = (
    "spf=pass (sender IP is 209.85.221.41) smtp.mailfrom=example.com; dkim=pass"
    " (signature was verified) header.d=example.com;dmarc=pass action=none"
    " header.from=example.com;compauth=pass reason=100"
)

NOT_OURS = f"no Authentication-Results from {TRUSTED}"


def ar(value: str) -> tuple[str, str]:
    return ("authentication-results", value)


def message(
    *top: tuple[str, str], below: tuple[tuple[str, str], ...] = ()
) -> list[tuple[str, str]]:
    """Our MTA's headers (``top``, our Received among them), the sender's hop, the message."""
    return [*top, SENDER_RECEIVED, *below, *MESSAGE]


def ours(*values: str) -> list[tuple[str, str]]:
    """A message whose results our MTA put above its Received, as OpenDKIM/OpenDMARC do."""
    return message(*(ar(v) for v in values), OUR_RECEIVED)


# --- DKIM ---------------------------------------------------------------------


def test_an_aligned_dkim_pass_passes_and_says_why() -> None:
    verdict = check(ours(OPENDKIM_PASS), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        True,
        "dkim=pass header.d=example.com aligned with From example.com"
        " (authserv-id mx.help.example.com)",
    )


@pytest.mark.parametrize(
    ("signer", "from_address", "passed"),
    [
        ("example.com", "alice@support.example.com", True),  # From is a subdomain
        ("mail.example.com", "alice@example.com", True),  # signer is a subdomain
        ("eu.mail.example.com", "alice@example.com", True),
        ("a.example.com", "alice@b.example.com", False),  # siblings: stricter than DMARC
        ("notexample.com", "alice@example.com", False),  # a suffix, not a subdomain
        ("example.com.attacker.net", "alice@example.com", False),
        ("com", "alice@example.com", False),  # a bare TLD is nobody's parent here
        ("example.org", "alice@example.com", False),
    ],
)
def test_dkim_alignment_is_relaxed_within_one_domain_tree(
    signer: str, from_address: str, passed: bool
) -> None:
    value = f"{TRUSTED}; dkim=pass (2048-bit key; secure) header.d={signer} header.s=s1"

    assert check(ours(value), from_address, TRUSTED).passed is passed


def test_a_third_party_signature_does_not_vouch_for_the_from() -> None:
    # Sent through an ESP that signs with its own domain only.
    value = (
        f"{TRUSTED}; dkim=pass (1024-bit key; unprotected) header.d=sendgrid.net"
        " header.i=@sendgrid.net header.a=rsa-sha256 header.s=smtpapi header.b=q1W2e3R4"
    )

    verdict = check(ours(value), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        False,
        "no pass aligned with From example.com: dkim=pass header.d=sendgrid.net"
        " (authserv-id mx.help.example.com)",
    )


def test_header_i_counts_only_when_header_d_is_missing() -> None:
    with_i_only = f"{TRUSTED}; dkim=pass header.i=@example.com header.s=sel1"
    # RFC 6376 3.5: i must lie within d, so this pair is not a valid pass for example.com.
    mismatched = f"{TRUSTED}; dkim=pass header.d=esp.example.net header.i=@example.com"

    assert check(ours(with_i_only), AGENT, TRUSTED).reason.startswith(
        "dkim=pass header.i=@example.com aligned"
    )
    assert not check(ours(mismatched), AGENT, TRUSTED).passed


def test_a_failed_signature_does_not_pass() -> None:
    verdict = check(ours(OPENDKIM_FAIL), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        False,
        "no pass aligned with From example.com: dkim=fail header.d=example.com"
        " (authserv-id mx.help.example.com)",
    )


def test_one_good_signature_among_broken_ones_passes() -> None:
    # A mailing list broke the author's signature and added its own, or the
    # other way round: OpenDKIM reports every signature in one header.
    value = (
        f'{TRUSTED}; dkim=fail reason="signature verification failed" (1024-bit key)'
        " header.d=lists.example.org header.i=@lists.example.org header.b=Tm9wZQ==;"
        " dkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com"
        " header.b=Xy3kQ9aB"
    )

    assert check(ours(value), AGENT, TRUSTED).passed


# --- SPF ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "mailfrom",
    ["example.com", "alice@example.com", "bounces+4711-alice=example.com@em123.example.com"],
)
def test_an_aligned_spf_pass_passes(mailfrom: str) -> None:
    value = f"{TRUSTED}; spf=pass (sender SPF authorized) smtp.mailfrom={mailfrom}"

    verdict = check(ours(value), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        True,
        f"spf=pass smtp.mailfrom={mailfrom} aligned with From example.com"
        " (authserv-id mx.help.example.com)",
    )


def test_an_spf_pass_for_someone_elses_envelope_does_not_pass() -> None:
    value = (
        f"{TRUSTED}; spf=pass (mailfrom) smtp.mailfrom=bounce.mailgun.org"
        " (client-ip=198.61.254.7; helo=m7-7.mailgun.net; envelope-from=bounce+1a2b@mailgun.org)"
    )

    verdict = check(ours(value), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        False,
        "no pass aligned with From example.com: spf=pass smtp.mailfrom=bounce.mailgun.org"
        " (authserv-id mx.help.example.com)",
    )


def test_softfail_does_not_pass() -> None:
    assert check(ours(POLICYD_SPF_SOFTFAIL), AGENT, TRUSTED) == AuthVerdict(
        False,
        "no pass aligned with From example.com: spf=softfail smtp.mailfrom=example.com"
        " (authserv-id mx.help.example.com)",
    )


@pytest.mark.parametrize(
    ("properties", "passed"),
    [
        ('smtp.mailfrom="" smtp.helo=mail.example.com', True),  # null reverse-path
        ("smtp.mailfrom=<> smtp.helo=mail.example.com", True),
        ("smtp.helo=mail.example.com", False),  # MAIL FROM not reported: unknown
        ("smtp.mailfrom=bounce.attacker.net smtp.helo=mail.example.com", False),
    ],
)
def test_helo_stands_in_only_for_a_null_mail_from(properties: str, passed: bool) -> None:
    value = f"{TRUSTED}; spf=pass (sender SPF authorized) {properties}"

    assert check(ours(value), AGENT, TRUSTED).passed is passed


# --- DMARC --------------------------------------------------------------------


def test_a_dmarc_pass_for_the_from_domain_passes() -> None:
    verdict = check(ours(OPENDMARC_PASS), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        True,
        "dmarc=pass header.from=example.com aligned with From example.com"
        " (authserv-id mx.help.example.com)",
    )


@pytest.mark.parametrize("header_from", ["example.org", "eu.example.com", ""])
def test_a_dmarc_pass_must_be_about_exactly_the_from_domain(header_from: str) -> None:
    value = f"{TRUSTED}; dmarc=pass (p=none dis=none) header.from={header_from}"

    assert not check(ours(value), AGENT, TRUSTED).passed


# --- the shape of the header ----------------------------------------------------


def test_none_means_nothing_was_checked() -> None:
    verdict = check(ours(f"{TRUSTED}; none"), AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        False, "no pass aligned with From example.com: none (authserv-id mx.help.example.com)"
    )


def test_several_results_in_one_header_are_all_read() -> None:
    failing = (
        f"{TRUSTED};\r\n\tdkim=fail (bad signature) header.d=example.com header.i=@example.com;"
        "\r\n\tspf=softfail (domain owner discourages use of this host) smtp.mailfrom=example.com;"
        "\r\n\tdmarc=fail (p=reject dis=reject) header.from=example.com"
    )
    last_passes = (
        f"{TRUSTED}; dkim=none (no signature); spf=none smtp.mailfrom=example.com;"
        " dmarc=pass (p=reject dis=none) header.from=example.com"
    )

    assert check(ours(failing), AGENT, TRUSTED) == AuthVerdict(
        False,
        "no pass aligned with From example.com: dkim=fail header.d=example.com,"
        " spf=softfail smtp.mailfrom=example.com, dmarc=fail header.from=example.com"
        " (authserv-id mx.help.example.com)",
    )
    assert check(ours(last_passes), AGENT, TRUSTED).reason.startswith("dmarc=pass")


def test_gmail_results_pass_when_gmail_is_the_trusted_mta() -> None:
    # Mail fetched over IMAP from a Gmail mailbox: Google's MX is the border.
    headers = message(ar(GMAIL), ("received", "by 2002:a05:7300:5c88 with SMTP id v8csp123"))

    verdict = check(headers, AGENT, "mx.google.com")

    assert verdict == AuthVerdict(
        True,
        "dkim=pass header.i=@example.com aligned with From example.com (authserv-id mx.google.com)",
    )


@pytest.mark.parametrize(
    "value",
    [
        # Comments hold ";" and "=" and nest; none of it is a result.
        f"{TRUSTED}; dkim=pass (good signature; key=2048 (rsa; bits=2048)) header.d=example.com",
        f"{TRUSTED} (Postfix; policyd=spf v2.0.2); spf=pass (a=b; c=d) smtp.mailfrom=example.com",
        f"{TRUSTED};(dkim=fail; header.d=x.org)dkim=pass(ok)header.d=(signer)example.com",
        # Quoted strings hold ";" and "=" and may quote any value.
        f'{TRUSTED}; dkim=pass reason="ok; header.d=evil.example" header.d=example.com',
        f'{TRUSTED}; dkim=pass header.d="example.com" header.b="Xy3k/Q9+aB=="',
        f'"{TRUSTED}"; dmarc=pass header.from=example.com',
        # AuthservIDWithJobID (OpenDKIM, OpenDMARC), quoted and unquoted.
        f'"{TRUSTED}/4Wb9Lk2QzVz9sVb"; dmarc=pass header.from=example.com',
        f"{TRUSTED}/4Wb9Lk2QzVz9sVb; dmarc=pass header.from=example.com",
        # The version, a method version, folding white space.
        f"{TRUSTED} 1; dkim/1=pass header.d=example.com",
        f"\r\n {TRUSTED} ;\r\n\tspf = pass\r\n\t smtp . mailfrom = example.com",
    ],
)
def test_comments_quotes_and_white_space_are_read_per_rfc_8601(value: str) -> None:
    assert check(ours(value), AGENT, TRUSTED).passed


@pytest.mark.parametrize(
    "value",
    [
        f"{TRUSTED} (spam check; dkim=pass header.d=example.com); dkim=fail header.d=example.com",
        f'{TRUSTED}; dkim=fail reason="dkim=pass header.d=example.com" header.d=example.com',
        f'{TRUSTED}; dkim=fail header.d=x.org; x="; dkim=pass header.d=example.com"',
    ],
)
def test_a_pass_inside_a_comment_or_a_quoted_string_is_only_text(value: str) -> None:
    assert not check(ours(value), AGENT, TRUSTED).passed


@pytest.mark.parametrize(
    "value",
    [
        "",
        ";;;",
        TRUSTED,
        f"{TRUSTED};",
        f"{TRUSTED}; dkim",
        f"{TRUSTED}; dkim=",
        f"{TRUSTED}; =pass header.d=example.com",
        f"{TRUSTED}; dkim=pass header.d",
        f"{TRUSTED}; dkim=pass header.d=exa mple.com",
        f"{TRUSTED}; dkim=pass) header.d=example.com",
        f"{TRUSTED}; dkim=pass header.d=example.com\x00.evil",
        f"{TRUSTED}; dkim=pass header.d=[192.0.2.1]",
        f"{TRUSTED}; dkim/v2=pass header.d=example.com",
        f"{TRUSTED}; d!m=pass header.d=example.com",
        f"{TRUSTED} 2; dkim=pass header.d=example.com",  # unknown version
        f"{TRUSTED} extra; dkim=pass header.d=example.com",
        f"(unterminated {TRUSTED}; dkim=pass header.d=example.com",
        f'"{TRUSTED}; dkim=pass header.d=example.com',
        f"{TRUSTED}; dkim=pass header.d=example.com header.d=attacker.example",
        '\\\\\\((((()))"""',
    ],
)
def test_garbage_never_raises_and_never_passes(value: str) -> None:
    verdict = check(ours(value), AGENT, TRUSTED)

    assert not verdict.passed
    assert "\n" not in verdict.reason


def test_methods_results_ids_and_domains_are_case_insensitive() -> None:
    value = "MX.Help.Example.COM; DKIM=PASS (2048-bit key) Header.D=Example.COM"

    verdict = check(ours(value), "Alice@EXAMPLE.com", " mx.HELP.example.com ")

    assert verdict.passed
    assert verdict.reason.startswith("dkim=pass header.d=Example.COM aligned with From example.com")


def test_internationalized_domains_are_compared_as_a_labels() -> None:
    value = f"{TRUSTED}; dkim=pass header.d=xn--bcher-kva.example"

    assert check(ours(value), "info@Bücher.example", TRUSTED).passed


# --- which headers are believed -------------------------------------------------


@pytest.mark.parametrize(
    "passing", ["dmarc", "dkim", "spf"], ids=["OpenDMARC", "OpenDKIM", "policyd-spf"]
)
def test_every_header_of_our_stack_is_read(passing: str) -> None:
    # Postfix + OpenDMARC + OpenDKIM above its Received, policyd-spf below it,
    # the filters' own headers in between.
    results = {
        "dmarc": (OPENDMARC_FAIL, OPENDMARC_PASS),
        "dkim": (OPENDKIM_FAIL, OPENDKIM_PASS),
        "spf": (POLICYD_SPF_SOFTFAIL, POLICYD_SPF_PASS),
    }
    value = {method: pair[method == passing] for method, pair in results.items()}
    headers = message(
        ar(value["dmarc"]),
        ("dmarc-filter", "OpenDMARC Filter v1.4.2 mx.help.example.com 4Wb9Lk2QzVz9sVb"),
        ar(value["dkim"]),
        ("dkim-filter", "OpenDKIM Filter v2.11.0 mx.help.example.com 4Wb9Lk2QzVz9sVb"),
        OUR_RECEIVED,
        ar(value["spf"]),
        ("received-spf", "Pass (mailfrom) identity=mailfrom; client-ip=209.85.221.41"),
    )

    verdict = check(headers, AGENT, TRUSTED)

    assert verdict.passed
    assert verdict.reason.startswith(f"{passing}=pass")


def test_a_delivery_agents_received_on_top_is_fine() -> None:
    # Dovecot's LMTP Received sits above the results, Postfix's below them.
    dovecot = ("received", "from mx.help.example.com by imap.help.example.com with LMTP id x1")

    assert check(message(dovecot, ar(OPENDKIM_PASS), OUR_RECEIVED), AGENT, TRUSTED).passed


@pytest.mark.parametrize(
    "top", [GMAIL, MICROSOFT, OPENDKIM_PASS.replace(TRUSTED, "mx.help.example.org")]
)
def test_results_from_another_mta_are_not_ours(top: str) -> None:
    verdict = check(message(ar(top), OUR_RECEIVED), AGENT, TRUSTED)

    assert verdict == AuthVerdict(False, NOT_OURS)


def test_no_results_at_all() -> None:
    assert check(message(OUR_RECEIVED), AGENT, TRUSTED) == AuthVerdict(False, NOT_OURS)


def test_a_forged_result_below_the_second_received_is_ignored() -> None:
    forged = ar(f"{TRUSTED}; dkim=pass header.d=example.com; dmarc=pass header.from=example.com")
    headers = message(ar(OPENDKIM_FAIL), OUR_RECEIVED, below=(forged,))

    verdict = check(headers, AGENT, TRUSTED)

    assert verdict == AuthVerdict(
        False,
        "no pass aligned with From example.com: dkim=fail header.d=example.com"
        " (authserv-id mx.help.example.com)",
    )


def test_a_forged_result_below_the_second_received_alone_is_no_result() -> None:
    forged = ar(OPENDKIM_PASS)
    previous_hop = ("received", "from relay.example.net by mx2.example.net with ESMTP")

    verdict = check(message(OUR_RECEIVED, previous_hop, below=(forged,)), AGENT, TRUSTED)

    assert verdict == AuthVerdict(False, NOT_OURS)


def test_a_forgery_under_our_received_loses_to_our_result_for_that_method() -> None:
    # Stripping failed and the sender wrote no Received: the forgery sits in
    # the part we read, but below the genuine dkim result.
    headers = [ar(OPENDKIM_FAIL), OUR_RECEIVED, ar(OPENDKIM_PASS), *MESSAGE]

    assert not check(headers, AGENT, TRUSTED).passed


def test_a_forgery_under_our_received_for_a_method_we_do_not_run_needs_stripping() -> None:
    # The documented limit of any positional rule: this is why the MTA must
    # strip incoming results with its authserv-id (RFC 8601 section 5).
    headers = [ar(OPENDKIM_FAIL), OUR_RECEIVED, ar(OPENDMARC_PASS), *MESSAGE]

    assert check(headers, AGENT, TRUSTED).passed


# --- the From address -----------------------------------------------------------


@pytest.mark.parametrize(
    "from_address", ["", "alice", "alice@", "alice@[192.0.2.1]", "<>", "@", "alice@exa mple.com"]
)
def test_a_from_without_a_domain_never_passes(from_address: str) -> None:
    verdict = check(ours(OPENDKIM_PASS, OPENDMARC_PASS), from_address, TRUSTED)

    assert not verdict.passed
    assert verdict.reason.endswith("has no domain")


def test_nothing_passes_without_a_trusted_authserv_id() -> None:
    assert check(ours(OPENDKIM_PASS), AGENT, " ") == AuthVerdict(
        False, "no trusted authserv-id configured"
    )


def test_the_reason_is_one_clean_line() -> None:
    value = f"{TRUSTED}; dkim=fail header.d=ex\x1b[31mample.com header.b={'A' * 500}"

    verdict = check(ours(value), AGENT, TRUSTED)

    assert "\x1b" not in verdict.reason
    assert verdict.reason.isprintable()


# --- through the real parser ----------------------------------------------------


def test_a_parsed_message_passes_with_the_parsers_header_order() -> None:
    raw = (
        "Authentication-Results: mx.help.example.com;\r\n"
        "\tdmarc=pass (p=reject dis=none) header.from=example.com\r\n"
        "Authentication-Results: mx.help.example.com;\r\n"
        "\tdkim=pass (2048-bit key; unprotected) header.d=example.com header.i=@example.com\r\n"
        "\theader.a=rsa-sha256 header.s=sel1 header.b=Xy3kQ9aB\r\n"
        f"Received: {OUR_RECEIVED[1]}\r\n"
        f"Received: {SENDER_RECEIVED[1]}\r\n"
        "Authentication-Results: mx.help.example.com; dkim=pass header.d=attacker.example\r\n"
        "From: Alice Martin <alice@example.com>\r\n"
        "To: support+k7Qm2xR@help.example.com\r\n"
        "Subject: Re: [#4711] Refund for order 12345\r\n"
        "Message-ID: <CAF3x9Zq1@mail.gmail.com>\r\n"
        "\r\n"
        "Refund approved.\r\n"
    ).encode()
    parsed = parse(raw)
    assert parsed.from_addr is not None

    verdict = check(parsed.headers, parsed.from_addr.email, TRUSTED)

    assert verdict.passed
    assert verdict.reason.startswith("dkim=pass header.d=example.com aligned")


# --- properties -----------------------------------------------------------------

_AR_ALPHABET = ' \t\r\n;=()"\\./@<>-_0123456789abcdehikmnoprsfltxyzüDKIMPASS'
_values = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=_AR_ALPHABET, max_size=200),
    st.text(alphabet=_AR_ALPHABET, max_size=120).map(lambda tail: f"{TRUSTED}; {tail}"),
)
_names = st.sampled_from(["authentication-results", "received", "from", "x-other", "RECEIVED "])
_top_names = st.sampled_from(["authentication-results", "dkim-filter", "received-spf"])
_headers = st.lists(st.tuples(_names, _values), max_size=12)


@given(_headers, st.text(max_size=60), st.text(max_size=40))
def test_arbitrary_headers_never_raise(
    headers: list[tuple[str, str]], from_address: str, authserv_id: str
) -> None:
    verdict = check(headers, from_address, authserv_id)

    assert isinstance(verdict.passed, bool)
    assert "\n" not in verdict.reason
    assert "\r" not in verdict.reason


_forgeries = st.lists(
    st.tuples(_names, st.one_of(_values, st.sampled_from([OPENDKIM_PASS, OPENDMARC_PASS, GMAIL]))),
    max_size=12,
)


@given(st.lists(st.tuples(_top_names, _values), max_size=8), _forgeries)
def test_nothing_below_the_second_received_changes_the_verdict(
    top: list[tuple[str, str]], below: list[tuple[str, str]]
) -> None:
    # Whatever a sender writes under the previous hop's Received, the verdict
    # is the one our own headers give.
    ours_only = [*top, OUR_RECEIVED, SENDER_RECEIVED]

    assert check([*ours_only, *below], AGENT, TRUSTED) == check(ours_only, AGENT, TRUSTED)
