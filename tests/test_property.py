"""Property: any generated CSV content either round-trips exactly, or fails with a clear
InputError and leaves nothing behind.

Files are written by a small CSV writer that, unlike Python's csv module, tells NULL (an
unquoted empty field) from the empty string (`""`), quotes at random where it need not, and
now and then writes one field with invalid quoting (RFC 4180), which must fail the file.
Each example is imported through the library into a fresh table and read back as text. The
generators keep every value's text recoverable from whatever type inference picks (canonical
integers, decimals, ISO dates, ...); values that only look typed (`007`, `+1`, `1e5`, `-0`)
must stay text. A second property forces `--type text` and allows any text at all.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from snapshots.errors import InputError
from snapshots.importer import Importer, ImportOptions

Row = list[str | None]

# PROPERTY_EXAMPLES=2000 for a longer hunt; the suite's default keeps each property fast.
SETTINGS = settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "50")), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# Text with everything CSV finds hard: delimiters, quotes, line breaks of every kind (only
# \n and \r end a line; the others are data), unicode, and COPY's own special strings.
SPECIAL = st.sampled_from([
    ",", '"', '""', "\n", "\r\n", "\r", " ", "  padded  ", "\\.", "\\N", "NULL", "null",
    "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\t", "\ufeff", "é", "日本語", "🙂",
    "a,b", 'say "hi"', "line\nbreak", "\\", "'",
])
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
TEXT = st.one_of(
    st.text(CHARS, max_size=12),
    st.lists(st.one_of(SPECIAL, st.text(CHARS, max_size=4)), max_size=4).map("".join),
)

# Text that looks like a number, a boolean or a date but must stay text.
LOOKALIKE = st.sampled_from([
    "007", "+1", "1e5", "1E5", "-0", "-0.0", "1.", ".5", " 1", "1 ", "0x1F", "NaN", "Infinity",
    "-Infinity", "1_000", "１２", "٣", "2023-02-30", "2023-1-1", "01/02/2023", "20230101",
    "TRUE", "True", "t", "yes", "on", "1.5e-3", "--1", "1-", "2023-01-01T25:00:00",
    "9223372036854775808", "-9223372036854775809", "00", "0.0.1", "$1", "1,5",
])

INT = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str)
BIG_INT = st.integers(min_value=2**63, max_value=10**30).map(str)  # numeric, not bigint
DECIMAL = st.builds(
    lambda whole, frac, neg: ("-" if neg and (whole or frac.strip("0")) else "")
    + f"{whole}.{frac}",
    st.integers(min_value=0, max_value=10**20),
    st.text("0123456789", min_size=1, max_size=12), st.booleans())
BOOL = st.sampled_from(["true", "false"])
DATE = st.dates().map(dt.date.isoformat)
TIMESTAMP = st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="seconds"))

KINDS = {
    "int": INT,
    "bigint-edge": st.sampled_from([str(-(2**63)), str(2**63 - 1), "0", "-1"]),
    "numeric": st.one_of(INT, BIG_INT, DECIMAL),
    "bool": BOOL,
    "date": DATE,
    "timestamp": TIMESTAMP,
    "text": TEXT,
    "lookalike": LOOKALIKE,
    "int-or-lookalike": st.one_of(INT, LOOKALIKE),
    "anything": st.one_of(INT, DECIMAL, BOOL, DATE, TIMESTAMP, TEXT, LOOKALIKE),
}


@st.composite
def tables(draw: st.DrawFn, values: dict[str, st.SearchStrategy[str]] = KINDS,
           nul: bool = True) -> tuple[list[str], list[Row]]:
    width = draw(st.integers(min_value=1, max_value=6))
    kinds = [draw(st.sampled_from(sorted(values))) for _ in range(width)]
    value = [st.one_of(st.none(), st.just(""), values[k]) if k in ("text", "anything")
             else st.one_of(st.none(), values[k]) for k in kinds]
    if nul:  # now and then a value PostgreSQL cannot store: the file must fail cleanly
        value = [st.one_of(v, st.just("a\x00b")) if draw(st.integers(0, 19)) == 0 else v
                 for v in value]
    rows = draw(st.lists(st.tuples(*value).map(list), max_size=12))
    return [f"c{i}" for i in range(width)], rows


# Fields as RFC 4180 forbids them and COPY reads them anyway, each loaded changed (or joining
# the records after it) if it got through: quotes inside an unquoted field, text after a
# quoted field's closing quote.
MISQUOTED = st.sampled_from(['a""b', 'a "b" c', '12"', 'x"', '"x"y', '"x"""y', '""b',
                             '"a""b"c', 'say "hi"'])


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, object]:
    return {
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "quote_all": draw(st.booleans()),
        "final_newline": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        # Now and then one field written with invalid quoting: (row, column, the field).
        "misquote": draw(st.one_of(st.none(), st.none(), st.tuples(
            st.integers(0, 11), st.integers(0, 5), MISQUOTED))),
    }


def misquoted_at(rows: list[Row], layout: dict[str, object]) -> tuple[int, int] | None:
    """(row, column) of the field the layout writes with invalid quoting, if any."""
    if layout.get("misquote") is None or not rows:
        return None
    row, column, _ = layout["misquote"]  # type: ignore[misc]
    return row % len(rows), column % len(rows[0])


def encode(header: list[str], rows: list[Row], layout: dict[str, object]) -> bytes:
    """CSV as PostgreSQL reads it: NULL unquoted and empty, "" the empty string."""
    chooser = itertools.cycle(bin(int(layout["seed"]) | 1 << 17)[3:])  # type: ignore[call-overload]
    bad = misquoted_at(rows, layout)

    def field(value: str | None) -> str:
        if value is None:
            return ""
        must = value == "" or any(c in value for c in ',"\r\n')
        if must or layout["quote_all"] or next(chooser) == "1":
            return '"' + value.replace('"', '""') + '"'
        return value

    def record(index: int, row: Row) -> str:
        fields = [field(v) for v in row]
        if bad is not None and bad[0] == index:
            fields[bad[1]] = layout["misquote"][2]  # type: ignore[index]
        return ",".join(fields)

    newline = str(layout["newline"])
    lines = [",".join(header)] + [record(i, row) for i, row in enumerate(rows)]
    text = newline.join(lines)
    # Without a final line break, a last record that is one NULL field would vanish.
    if layout["final_newline"] or not rows or rows[-1] == [None]:
        text += newline
    data = text.encode("utf-8")
    return b"\xef\xbb\xbf" + data if layout["bom"] else data


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def relation_names(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
        "AND relkind IN ('r', 'v', 'p')").fetchall()}


def read_back(conn: psycopg.Connection, table: str, header: list[str]) -> list[Row]:
    columns = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in header)
    return [list(r) for r in conn.execute(sql.SQL("SELECT {} FROM {}").format(
        columns, sql.Identifier(table))).fetchall()]


def ordered(rows: list[Row]) -> list[tuple[tuple[bool, str], ...]]:
    return sorted(tuple((v is None, v or "") for v in row) for row in rows)


def check(db_url: str, db_conn: psycopg.Connection, directory: Path, header: list[str],
          rows: list[Row], layout: dict[str, object], options: ImportOptions) -> str:
    table = f"t_{uuid.uuid4().hex[:12]}"
    path = directory / f"{table}_20230101.csv"
    path.write_bytes(encode(header, rows, layout))
    before = relation_names(db_conn)
    with Importer(db_url, table=table, options=options) as importer:
        result = importer.import_file(path)
    records = db_conn.execute(
        "SELECT status, row_count FROM snapshot_imports WHERE table_name = %s", (table,)
    ).fetchall()
    if result.result == "imported":
        assert misquoted_at(rows, layout) is None, ("invalid quoting was loaded",
                                                    path.read_bytes())
        assert records == [("imported", len(rows))]
        assert result.rows == len(rows)
        got = read_back(db_conn, table, header)
        assert ordered(got) == ordered(rows), (got, rows, path.read_bytes())
        return "imported"
    # Otherwise: a precise input error, and nothing left behind.
    assert isinstance(result.error, InputError), (result.result, result.error)
    assert result.error.file == str(path)
    bad = misquoted_at(rows, layout)
    if bad is not None:
        # Invalid quoting is never loaded, changed or not: the error names its record's line
        # (a quote is found before any of a small file's bytes reach COPY, a NUL after).
        assert "malformed quoting" in str(result.error), (str(result.error), path.read_bytes())
        before_it = encode(header, rows[:bad[0]], {**layout, "final_newline": True,
                                                  "bom": False, "misquote": None})
        earlier = [field if i < bad[1] else None for i, field in enumerate(rows[bad[0]])]
        # Line breaks in the record's own fields before the misquoted one count too.
        inside = sum(len(re.findall(r"\r\n|\r|\n", v or "")) for v in earlier)
        assert result.error.line == len(re.findall(r"\r\n|\r|\n", before_it.decode())) + \
            1 + inside, (str(result.error), path.read_bytes())
        assert result.error.column == header[bad[1]], str(result.error)
        assert relation_names(db_conn) == before
        assert records in ([], [("failed", None)])
        return "misquoted"
    assert any("\x00" in (v or "") for row in rows for v in row), (
        f"a file without NUL bytes failed: {result.error}", path.read_bytes())
    assert "NUL" in str(result.error)
    # ... at the physical line (as an editor counts them) where the first such record starts.
    first = next(i for i, row in enumerate(rows) if any("\x00" in (v or "") for v in row))
    before_it = encode(header, rows[:first], {**layout, "final_newline": True, "bom": False,
                                             "misquote": None})
    assert result.error.line == len(re.findall(r"\r\n|\r|\n", before_it.decode())) + 1, (
        str(result.error), path.read_bytes())
    assert relation_names(db_conn) == before
    assert records in ([], [("failed", None)])
    return "failed"


@SETTINGS
@given(table=tables(), layout=layouts())
def test_inferred_types_round_trip_or_fail_cleanly(db_url: str, db_conn: psycopg.Connection,
                                                   workdir: Path,
                                                   table: tuple[list[str], list[Row]],
                                                   layout: dict[str, object]) -> None:
    header, rows = table
    event(check(db_url, db_conn, workdir, header, rows, layout, ImportOptions()))


@SETTINGS
@given(table=tables(values={"text": TEXT, "anything": st.one_of(
    TEXT, LOOKALIKE, INT, DECIMAL, DATE, TIMESTAMP,
    st.datetimes(timezones=st.timezones()).map(dt.datetime.isoformat))}), layout=layouts())
def test_forced_text_round_trips_anything(db_url: str, db_conn: psycopg.Connection,
                                          workdir: Path, table: tuple[list[str], list[Row]],
                                          layout: dict[str, object]) -> None:
    header, rows = table
    options = ImportOptions(types={name: "text" for name in header})
    event(check(db_url, db_conn, workdir, header, rows, layout, options))


def test_the_writer_tells_null_from_empty(tmp_path: Path) -> None:
    """The property is only as good as its writer."""
    layout: dict[str, object] = {"newline": "\n", "bom": False, "quote_all": False,
                                 "final_newline": True, "seed": 0, "misquote": None}
    data = encode(["a", "b"], [[None, ""], ["x,y", 'q"q']], layout)
    assert data == b'a,b\n,""\n"x,y","q""q"\n'
    misquoted = encode(["a", "b"], [[None, ""], ["x,y", 'q"q']],
                       {**layout, "misquote": (3, 1, 'a""b')})
    assert misquoted == b'a,b\n,""\n"x,y",a""b\n'


# Bytes as other tools and accidents write them: BOMs of every kind, each delimiter detection
# chooses among, quotes in every place, line breaks of every kind, NUL, invalid UTF-8.
BYTES = st.lists(st.sampled_from([
    b"a", b"1", b"2.5", b",", b";", b"\t", b"|", b'"', b'""', b"\n", b"\r\n", b"\r", b" ",
    b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00", b"\xff", b"\xc3\xa9", b"\\.",
]), max_size=60).map(b"".join)


@SETTINGS
@given(data=BYTES, on_error=st.sampled_from(["abort", "skip"]), dry_run=st.booleans())
def test_any_bytes_load_or_fail_with_one_clear_error(db_url: str, db_conn: psycopg.Connection,
                                                     workdir: Path, data: bytes, on_error: str,
                                                     dry_run: bool) -> None:
    """No input ends in anything but a loaded snapshot or one error that names the file:
    never an exception the CLI could only show as a traceback (or as its type's name)."""
    from snapshots.csvio.dialect import CsvOptions

    table = f"t_{uuid.uuid4().hex[:12]}"
    path = workdir / f"{table}_20230101.csv"
    path.write_bytes(data)
    options = ImportOptions(on_error=on_error, dry_run=dry_run,
                            csv=CsvOptions(detect_delimiter=True))
    with Importer(db_url, table=table, options=options) as importer:
        result = importer.import_file(path)  # raises if anything escapes
    if result.result in ("imported", "validated"):
        return
    assert isinstance(result.error, InputError), (type(result.error), result.error, data)
    assert result.error.file == str(path)
    assert "\n" not in str(result.error)
