"""Intake's Message-ID: the quick reading gives what the email package gives.

Intake reads the Message-ID of a plain header block itself (see
``intake._plain_message_id``) and leaves any other block to the email
package's parser. The two must agree wherever the quick one answers, or the
same message could get two duplicate keys across an upgrade. Checked on
every message of the shared corpus and on generated header blocks.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.intake import _parsed_message_id, _plain_message_id, split_header
from tests.corpus import need_corpus
from tests.test_parse_corpus import message_files


def test_every_corpus_message_reads_the_same() -> None:
    need_corpus()
    plain = 0
    for rel in message_files():
        header, _ = split_header((need_corpus() / rel).read_bytes())
        quick = _plain_message_id(header)
        if quick is not None:
            plain += 1
            assert quick == _parsed_message_id(header), rel
    assert plain > len(message_files()) // 2  # the quick reading is the common case


_NAMES = st.sampled_from(
    [b"Message-ID", b"message-id", b"MESSAGE-ID", b"Message-Id", b"From", b"Subject", b"X-A"]
)
_TEXT = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
_FIELD_LINE = st.builds(
    lambda n, sep, v: n + sep + v, _NAMES, st.sampled_from([b":", b": ", b":\t"]), _TEXT
)
_FOLD = st.builds(lambda ws, v: ws + v, st.sampled_from([b" ", b"\t"]), _TEXT)
_ODD = st.sampled_from([b"From sender@example.org", b"Message-ID : <x@y>", b"no colon", b"", b":x"])
_LINE = st.one_of(_FIELD_LINE, _FIELD_LINE, _FOLD, _ODD, _TEXT)
_EOL = st.sampled_from([b"\r\n", b"\n", b"\r"])


@given(st.lists(st.tuples(_LINE, _EOL), max_size=8))
@example([(b"Message-ID: <a@b>", b"\r\n")])
@example([(b"Message-ID:", b"\r\n"), (b" <folded@b>", b"\r\n"), (b"X-A: 1", b"\n")])
@example([(b"Subject: a", b"\r"), (b"Message-ID: <cr@b>", b"\r")])
@example([(b" leading fold", b"\r\n"), (b"Message-ID: <a@b>", b"\r\n")])
@example([(b"Message-ID: <\xc3\xa9@b>", b"\r\n")])
@example([(b"Message-ID: <a@b>", b"\r\n"), (b"Message-ID: <second@b>", b"\r\n")])
def test_a_generated_header_block_reads_the_same(lines: list[tuple[bytes, bytes]]) -> None:
    header = b"".join(line + eol for line, eol in lines).rstrip(b"\r\n")
    header, _ = split_header(header + b"\r\n\r\n")  # as intake cuts it
    quick = _plain_message_id(header)
    if quick is not None:
        assert quick == _parsed_message_id(header)
