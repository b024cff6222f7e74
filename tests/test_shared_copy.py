"""The line check that decides whether a file may share a COPY (engine.shared_copy)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from snapshots.csvio.quoting import quotes_span_lines


def odd_line(data: bytes, quote: bytes) -> bool:
    return any(line.count(quote) % 2 for line in data.split(b"\n"))


@given(st.binary(max_size=200) | st.lists(st.sampled_from(
    [b'"', b"'", b"\n", b"\r\n", b"a", b",", b'""', b"\xe9"]), max_size=40).map(b"".join),
    st.sampled_from([b'"', b"'"]))
def test_a_line_with_an_odd_number_of_quotes_is_found(data: bytes, quote: bytes) -> None:
    assert quotes_span_lines(data, quote) == odd_line(data, quote)


def test_examples() -> None:
    assert not quotes_span_lines(b'id,name\n1,"a ""b"""\n2,"c,d"\n', b'"')
    assert quotes_span_lines(b'id,name\n1,"a\nb"\n', b'"')
    assert not quotes_span_lines(b"", b'"')
