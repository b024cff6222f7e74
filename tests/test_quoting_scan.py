"""The post-COPY quoting scan (csvfile.first_malformed_record): it runs when COPY's row count
and the file's line count differ, which files with line breaks inside quoted fields always do.
It must find the first badly quoted record on the right line, whatever the chunking, and pass
every well-formed file."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.csvfile import CsvOptions, StrayQuotes, _first_malformed, first_malformed_record

FIELD = st.lists(st.sampled_from(["a", "b", ",", '"', "\n", "\r", "\r\n", "é", " "]),
                 max_size=6).map("".join)
ENDS = st.sampled_from(["\n", "\r\n", "\r"])


def quoted(value: str, always: bool) -> str:
    if always or any(c in value for c in ',"\r\n') or value == "":
        return '"' + value.replace('"', '""') + '"'
    return value


def line_breaks(text: str) -> int:
    """Physical lines as the importer counts them: \\n, \\r\\n and a lone \\r."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class Trickle(io.RawIOBase):
    """A stream that hands out at most `step` bytes per read: every chunk boundary happens."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos:self._pos + n]
        self._pos += len(chunk)
        return chunk


def scan(data: bytes, step: int) -> int | None:
    return _first_malformed(Trickle(data, step), CsvOptions(), bom=True, check=None)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=2, max_size=2), max_size=12),
       end=ENDS, always=st.booleans(), step=st.integers(1, 9),
       stray=st.one_of(st.none(), st.integers(0, 11)))
def test_finds_the_first_stray_quote_on_its_line(rows: list[list[str]], end: str,
                                                 always: bool, step: int,
                                                 stray: int | None) -> None:
    records = [",".join(quoted(v, always) for v in row) + end for row in rows]
    expected = None
    if stray is not None and stray < len(records):
        # A quote inside an unquoted field: COPY would join the records after it.
        records[stray] = 'x"y,z' + end
        expected = 2 + sum(line_breaks(r) for r in records[:stray])
    data = ("h1,h2" + end + "".join(records)).encode()
    assert scan(data, step) == expected
    assert scan(data, 1 << 20) == expected  # one chunk: the same answer


def test_a_quoted_field_that_never_ends(tmp_path: Path) -> None:
    path = tmp_path / "open_quote.csv"
    path.write_bytes(b'a,b\n1,"one\ntwo\n3,x\n')
    assert first_malformed_record(path, CsvOptions()) == 2


def test_a_byte_order_mark_and_no_final_line_break(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b'\xef\xbb\xbfa,b\n1,"x\ny"\n2,"z"')
    assert first_malformed_record(path, CsvOptions()) is None


def test_a_span_names_the_line_of_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "parts.csv"
    first = b'a,b\n1,"x\ny"\n'
    path.write_bytes(first + b'2,ok\n3,12" pizza\n')
    span = (len(first), path.stat().st_size)
    assert first_malformed_record(path, CsvOptions(), span) == 5


# --------------------------------------------------------------------------- stray quotes


def find_stray(data: bytes, step: int) -> int | None:
    finder, lines = StrayQuotes(CsvOptions()), 0
    for start in range(0, len(data), step):
        chunk = data[start:start + step]
        found = finder.find(chunk, lines)
        if found is not None:
            return found
        lines += chunk.count(b"\n")
    return None


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=2, max_size=2), max_size=12),
       always=st.booleans(), step=st.integers(1, 9),
       stray=st.one_of(st.none(), st.integers(0, 11)),
       form=st.sampled_from(['12" pizza', 'Plain "x"', 'a"b"c', '"x"y']))
def test_a_quote_between_ordinary_characters_is_found_on_its_line(
        rows: list[list[str]], always: bool, step: int, stray: int | None, form: str) -> None:
    """Well-formed CSV (quotes doubled inside quoted fields) never has one; each stray form
    is found on the line it is on, whatever the chunking."""
    records = [",".join(quoted(v, always) for v in row) + "\n" for row in rows]
    expected = None
    if stray is not None and stray < len(records):
        records[stray] = f"1,{form},2\n"
        expected = 2 + sum(r.count("\n") for r in records[:stray])
    data = ("h1,h2\n" + "".join(records)).encode()
    assert find_stray(data, step) == expected


def test_quotes_at_field_edges_are_not_stray() -> None:
    data = b'a,b\n"x",""\n"say ""hi""",""""\n,"a\nb"\n'
    assert find_stray(data, 1) is None
    assert find_stray(data, 1 << 20) is None


def test_a_custom_quote_and_delimiter() -> None:
    options = CsvOptions(delimiter=";", quote="'")
    finder = StrayQuotes(options)
    assert finder.find(b"a;b\n'x;y';z\n", 0) is None
    assert finder.find(b"it's;1\n", 2) == 3


def test_no_byte_scans_where_a_second_byte_may_be_the_quote(tmp_path: Path) -> None:
    """Shift-JIS reuses 0x40-0x7E as second bytes: with `|` as the quote, neither the stray
    quote check nor the cut points may count bytes, so the file loads in one stream."""
    from snapshots.options import ImportOptions, worth_parts

    sjis = CsvOptions(encoding="SJIS", quote="|")
    assert not sjis.quotes_bytewise
    assert StrayQuotes(sjis).find("ア|x,1\n".encode("shift_jis"), 0) is None
    big = tmp_path / "big.csv"
    assert worth_parts(ImportOptions(csv=sjis, part_size=1), big, 1000, 4) == 1
    assert worth_parts(ImportOptions(part_size=1), big, 1000, 4) == 4
    assert CsvOptions(encoding="SJIS").quotes_bytewise  # `"` (0x22) is never a second byte
