"""The quoting checks. The stream check (csvio.quoting.StrayQuotes) finds every quote
RFC 4180 does not allow while the bytes go to COPY; the post-COPY scan
(csvio.quoting.first_malformed_record) is what is left where the encoding keeps the stream
check from reading bytes: it runs when COPY's row count and the file's line count differ.
Both must find the first badly quoted record on the right line, whatever the chunking, and
pass every well-formed file."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.quoting import (
    MISPLACED_OPEN,
    MisplacedQuote,
    StrayQuotes,
    _first_malformed,
    first_malformed_record,
    misplaced_quote,
)

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


def find_stray(data: bytes, step: int, options: CsvOptions | None = None
               ) -> MisplacedQuote | None:
    finder = StrayQuotes(options or CsvOptions())
    for start in range(0, len(data), step):
        found = finder.find(data[start:start + step])
        if found is not None:
            return found
    return None


def stray_line(data: bytes, step: int) -> int | None:
    found = find_stray(data, step)
    return None if found is None else data.count(b"\n", 0, found.offset) + 1


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(FIELD, min_size=2, max_size=2), max_size=12),
       always=st.booleans(), step=st.integers(1, 9),
       stray=st.one_of(st.none(), st.integers(0, 11)),
       form=st.sampled_from(['12" pizza', 'Plain "x"', 'a"b"c', '"x"y', 'a""b', '"x"""y',
                             '""b', '12"', 'a""']))
def test_a_misplaced_quote_is_found_on_its_line(
        rows: list[list[str]], always: bool, step: int, stray: int | None, form: str) -> None:
    """Well-formed CSV (quotes doubled inside quoted fields) never has one; each misplaced
    form is found on the line it is on, whatever the chunking."""
    records = [",".join(quoted(v, always) for v in row) + "\n" for row in rows]
    expected = None
    if stray is not None and stray < len(records):
        records[stray] = f"1,{form},2\n"
        expected = 2 + sum(r.count("\n") for r in records[:stray])
    data = ("h1,h2\n" + "".join(records)).encode()
    assert stray_line(data, step) == expected


def rfc4180_first_misplaced(data: bytes, quote: bytes = b'"', delimiter: bytes = b","
                            ) -> int | None:
    """The reference: byte by byte, a quote opens a field only where one starts and closes
    it only where it ends (COPY's parity decides which quotes open and which close)."""
    allowed = delimiter + b"\r\n" + quote
    inside, previous = False, b"\n"
    for at in range(len(data)):
        byte = data[at:at + 1]
        if byte == quote:
            if not inside and previous not in allowed:
                return at
            after = data[at + 1:at + 2]
            if inside and after and after not in allowed:
                return at
            inside = not inside
        previous = byte
    return None


@settings(max_examples=500, deadline=None)
@given(data=st.lists(st.sampled_from([b"a", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b" "]),
                     max_size=40).map(b"".join),
       step=st.integers(1, 9), bom=st.booleans())
def test_the_stream_check_is_rfc_4180(data: bytes, step: int, bom: bool) -> None:
    """Any bytes, any chunking: the first misplaced quote is the reference's."""
    expected = rfc4180_first_misplaced(data)
    prefix = b"\xef\xbb\xbf" if bom else b""
    found = find_stray(prefix + data, step)
    assert (None if found is None else found.offset - len(prefix)) == expected
    record = misplaced_quote(data, CsvOptions())
    assert (None if record is None else record.offset) == expected


def test_quotes_at_field_edges_are_not_stray() -> None:
    data = b'a,b\n"x",""\n"say ""hi""",""""\n,"a\nb"\n"x"""\n'
    assert find_stray(data, 1) is None
    assert find_stray(data, 1 << 20) is None


def test_a_byte_order_mark_before_a_quoted_header() -> None:
    """As Excel writes "CSV UTF-8": a BOM, then a quoted first name."""
    data = b'\xef\xbb\xbf"id","name"\r\n1,"a"\r\n'
    assert find_stray(data, 1) is None
    assert find_stray(data, 1 << 20) is None


def test_a_custom_quote_and_delimiter() -> None:
    options = CsvOptions(delimiter=";", quote="'")
    assert find_stray(b"a;b\n'x;y';z\n", 1 << 20, options) is None
    found = find_stray(b"a;b\nit's;1\n", 1 << 20, options)
    assert found is not None and found.offset == 6 and found.reason == MISPLACED_OPEN


def test_no_byte_scans_where_a_second_byte_may_be_the_quote(tmp_path: Path) -> None:
    """Shift-JIS reuses 0x40-0x7E as second bytes: with `|` as the quote, neither the stray
    quote check nor the cut points may count bytes, so the file loads in one stream."""
    from snapshots.options import ImportOptions, worth_parts

    sjis = CsvOptions(encoding="SJIS", quote="|")
    assert not sjis.quotes_bytewise
    assert StrayQuotes(sjis).find("ア|x,1\n".encode("shift_jis")) is None
    big = tmp_path / "big.csv"
    assert worth_parts(ImportOptions(csv=sjis, part_size=1), big, 1000, 4) == 1
    assert worth_parts(ImportOptions(part_size=1), big, 1000, 4) == 4
    assert CsvOptions(encoding="SJIS").quotes_bytewise  # `"` (0x22) is never a second byte
