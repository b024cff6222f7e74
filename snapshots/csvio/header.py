"""The header: reading a file's first record (or --columns) and turning it into the table's
column names, refusing empty, colliding, reserved and over-long ones.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.encoding import check_byte_order_mark, check_start, decoded_lines
from snapshots.csvio.streams import CHUNK_SIZE, open_content
from snapshots.errors import InputError

MAX_COLUMNS = 1600  # PostgreSQL's limit on columns per table
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1
MAX_FIELD_BYTES = 1 << 30  # PostgreSQL's 1 GB limit per field


# Letters and digits of any alphabet stay (`Größe` -> `größe`); anything else becomes `_`.
_NON_ALNUM = re.compile(r"[\W_]+")


def normalize_name(name: str) -> str:
    """`Store Name` -> `store_name`: trimmed, lower-cased, non-alphanumerics become `_`."""
    return _NON_ALNUM.sub("_", name.strip().lower())


@dataclass(frozen=True)
class Header:
    raw: tuple[str, ...]  # as written in the file
    names: tuple[str, ...]  # normalised: the table's column names


def check_names(raw: Sequence[str], *, file: str, line: int | None = 1) -> Header:
    """Normalise header names; empty, colliding and over-long names are errors."""
    if not raw:
        raise InputError("the header line is empty", file=file, line=line,
                         hint="a snapshot starts with a line of column names")
    if len(raw) > MAX_COLUMNS:
        raise InputError(f"{len(raw)} columns, more than PostgreSQL's limit of {MAX_COLUMNS}",
                         file=file, line=line)
    names: list[str] = []
    seen: dict[str, str] = {}
    for position, original in enumerate(raw, start=1):
        if "\x00" in original:
            raise InputError("NUL byte in the header", file=file, line=line)
        name = normalize_name(original)
        if not name.strip("_"):
            raise InputError(f"column {position} has an empty name", file=file, line=line,
                             value=original)
        if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
            raise InputError(f"column name longer than {MAX_IDENTIFIER_BYTES} bytes",
                             file=file, line=line, value=original)
        if name == "snapshot_id":
            raise InputError("column name snapshot_id is reserved for the ledger reference",
                             file=file, line=line, value=original)
        if name in seen:
            if seen[name] == original:
                raise InputError("duplicate column name", file=file, line=line, value=name)
            raise InputError(f"column names {seen[name]!r} and {original!r} both become "
                             f"{name!r}", file=file, line=line,
                             hint="rename one of them in the header")
        seen[name] = original
        names.append(name)
    return Header(raw=tuple(raw), names=tuple(names))


def read_header(path: Path, options: CsvOptions) -> Header:
    """The file's header (or --columns), checked. Reads only the first record."""
    file = str(path)
    check_byte_order_mark(path)
    if not options.header:
        assert options.columns is not None
        return check_names(options.columns, file=file, line=None)
    stream, _ = open_content(path)
    with stream:
        try:
            first = stream.readline(64 * 1024)
            blank = not first.strip()
            if blank and stream.read(64 * 1024).strip():
                raise InputError("the first line is blank: it must be the header", file=file,
                                 line=1)
        except (OSError, EOFError) as exc:
            raise InputError(f"cannot read the file: {exc}", file=file) from None
        if blank:
            raise InputError("empty file: no header line", file=file, line=1,
                             hint="a snapshot needs at least a header line")
        # Line by line, so that bytes after the header (a bad row for --on-error skip, say)
        # are not decoded here. \n never occurs inside a multi-byte character in the
        # supported encodings.
        rest = iter(lambda: stream.readline(CHUNK_SIZE), b"")
        chunks = _chain_first(first, rest)
        encoding = options.python_encoding
        if encoding == "utf-8":
            encoding = "utf-8-sig"  # a BOM belongs to the file, not to the first column name
        try:
            record = next(options.reader(decoded_lines(chunks, encoding, file=file)))
        except csv.Error as exc:
            raise InputError(f"malformed header: {exc}", file=file, line=1) from None
        except StopIteration:
            raise InputError("empty file: no header line", file=file, line=1) from None
    return check_names(record, file=file)


def header_from_head(head: bytes, path: Path, options: CsvOptions) -> Header | None:
    """The header from the file's first bytes (dialect.read_head) when it is one plain line:
    no quote, no lone carriage return, valid in its encoding, not blank. None otherwise:
    read_header reads it from the file then, and says what is wrong. One read fewer per
    file for a directory of small files; the same header and checks as read_header."""
    if not options.header or not options.quotes_bytewise:
        return None
    check_start(head[:4], path)
    end = head.find(b"\n")
    line = head[:end + 1] if end >= 0 else b""
    if not line.strip() or options.quote.encode() in line or b"\r" in line[:-2]:
        return None
    encoding = options.python_encoding
    try:
        text = line.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError:
        return None
    record = next(options.reader([text]), None)
    return check_names(record, file=str(path)) if record is not None else None


def _chain_first(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
