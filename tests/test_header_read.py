"""The header read from a file's first bytes (csvio.header.header_from_head, one read for
dialect detection and header) is read_header's, whenever it answers at all."""

from __future__ import annotations

import tempfile
from pathlib import Path

from helpers import Cli
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.csvio.dialect import CsvOptions, read_head, sniff_delimiter
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


COMMA_ONLY = st.text(st.sampled_from(list('ab1 ,"\'\n\r.-x')), max_size=200)


@settings(max_examples=500, deadline=None)
@given(sample=COMMA_ONLY, header=st.booleans())
def test_a_sample_without_other_delimiters_is_comma_delimited(sample: str, header: bool) -> None:
    """detect_dialect answers `,` without sniffing when the sample holds none of `;`, tab
    and `|`: the sniffer and the header judge would say the same (or nothing else)."""
    options = CsvOptions(header=header, columns=None if header else ("a",),
                         detect_delimiter=True)
    assert outcome(lambda: sniff_delimiter(sample, options, Path("s.csv"))) == ","


def test_a_one_column_file_without_a_header_loads(cli: Cli) -> None:
    """The sniffer finds no delimiter in one column: that is `,`, not a TypeError (it was)."""
    path = cli.write("snapshot_20240101.csv", "x;1\ny|2\n")
    cli.run("import", "--no-header", "--columns", "v", path)
    assert cli.rows("SELECT v FROM snapshots ORDER BY v") == [("x;1",), ("y|2",)]
