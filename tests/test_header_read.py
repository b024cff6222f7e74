"""The header read from a file's first bytes (csvio.header.header_from_head, one read for
dialect detection and header) is read_header's, whenever it answers at all."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.csvio.dialect import CsvOptions, read_head
from snapshots.csvio.header import header_from_head, read_header
from snapshots.errors import InputError

FIELD = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
PIECES = st.sampled_from([b",", b";", b"\t", b'"', b"\r", b"\r\n", b"\n", b"\xef\xbb\xbf",
                          b"\xff\xfe", b"\x00", b"\xc3", b" "])


def outcome(read: object) -> object:
    try:
        return read() if callable(read) else read  # type: ignore[operator]
    except InputError as exc:
        return ("error", str(exc))


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(FIELD.map(lambda t: t.encode()), PIECES), max_size=12),
       rest=st.binary(max_size=20), encoding=st.sampled_from(["UTF8", "LATIN1"]))
def test_the_quick_header_is_read_headers(parts: list[bytes], rest: bytes, encoding: str) -> None:
    data = b"".join(parts) + b"\n" + rest
    options = CsvOptions(encoding=encoding)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot_20240101.csv"
        path.write_bytes(data)
        head = read_head(path)
        assert head == data
        quick = outcome(lambda: header_from_head(head, path, options))
        slow = outcome(lambda: read_header(path, options))
    if quick is not None:
        assert quick == slow


def test_plain_lines_are_answered(tmp_path: Path) -> None:
    path = tmp_path / "s_20240101.csv"
    path.write_bytes(b"\xef\xbb\xbfUser ID,Name,Store Name\r\n1,a,b\r\n")
    header = header_from_head(path.read_bytes(), path, CsvOptions())
    assert header is not None and header.names == ("user_id", "name", "store_name")
    assert header == read_header(path, CsvOptions())


def test_quoted_headers_are_left_to_read_header(tmp_path: Path) -> None:
    path = tmp_path / "s_20240101.csv"
    path.write_bytes(b'"a\nb",c\n1,2\n')
    assert header_from_head(path.read_bytes(), path, CsvOptions()) is None
    assert read_header(path, CsvOptions()).raw == ("a\nb", "c")
