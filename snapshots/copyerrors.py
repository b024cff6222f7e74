"""Turn PostgreSQL's COPY errors into precise, one-line InputErrors.

COPY says where it failed in its error context (`COPY t, line 3, column x: "abc"`). In CSV
mode its "line" is the physical line where the failing record ends (newlines inside quoted
fields count), so the file is rescanned to find the line where that record starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import psycopg

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.encoding import decoded_lines
from snapshots.csvio.quoting import lines_before
from snapshots.csvio.streams import iter_chunks, open_content, open_span
from snapshots.errors import InputError

# The value may span lines (a quoted newline) and the table name may hold a comma.
_CONTEXT = re.compile(
    r'COPY .*?, line (?P<line>\d+)(?:, column (?P<column>.*?))?(?:: "(?P<value>.*)")?\Z',
    re.S)


def copy_location(exc: psycopg.Error) -> tuple[int | None, str | None, str | None]:
    """(COPY's line number, column, value) from COPY's context.

    The line is physical (see `record_start_for_copy_line`), counted from 1 with the header.
    """
    context = (exc.diag.context or "").strip()
    for line in [context, *context.splitlines()]:
        match = _CONTEXT.match(line.strip())
        if match:
            value = match["value"]
            return int(match["line"]), match["column"], value
    return None, None, None


def record_start_lines(path: Path, options: CsvOptions) -> Iterator[int]:
    """Physical line where each record starts (1-based), header included."""
    stream, _ = open_content(path)
    with stream:
        reader = options.reader(decoded_lines(iter_chunks(stream), options.python_encoding,
                                              file=str(path), errors="replace"))
        start = 1
        try:
            for _ in reader:
                yield start
                start = reader.line_num + 1
        except Exception:  # the rescan only locates; a parse error here ends the search
            yield start


def physical_line(path: Path, options: CsvOptions, record: int) -> int:
    """Physical line where record number `record` (1-based, header included) starts."""
    for number, start in enumerate(record_start_lines(path, options), start=1):
        if number >= record:
            return start
    return record


def record_start_for_copy_line(path: Path, options: CsvOptions, copy_line: int,
                               span: tuple[int, int] | None = None) -> int:
    """Physical line where the record holding COPY's "line N" starts.

    COPY counts one line per record plus, inside quoted fields, each character that ends a
    line in this file: `\\n` when the first line ends in `\\n`, else `\\r`. So its N names
    where the failing record ends (one past the end of the file for an unterminated quote), and
    a CRLF file whose cells hold bare `\\n` (as spreadsheets write them) is not counted
    physically at all. Replay that count over the file to find the record, and return the
    physical line (as an editor numbers them) where it starts.

    With `span`, COPY read only those bytes (one part of a parallel load): its count starts
    there, and the lines before the part are added.
    """
    before = 0
    if span is None:
        stream, _ = open_content(path)
    else:
        stream = open_span(path, *span)
        before = lines_before(path, span[0], options)
    with stream:
        return before + _record_start(stream, path, options, copy_line)


def _record_start(stream: BinaryIO, path: Path, options: CsvOptions, copy_line: int) -> int:
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in decoded_lines(iter_chunks(stream), options.python_encoding,
                                  file=str(path), errors="replace"):
            consumed.append(line)
            yield line

    reader = options.reader(lines())
    eol: str | None = None
    counted = 0  # COPY's line number at the end of the record read last
    start = 1  # physical line where the next record starts
    try:
        for _ in reader:
            raw = "".join(consumed)
            if eol is None:
                eol = "\n" if raw.endswith("\n") and not raw.endswith("\r\n") else "\r"
            if raw.endswith("\r\n"):
                body = raw[:-2]
            elif raw.endswith(("\n", "\r")):
                body = raw[:-1]
            else:
                body = raw
            counted += 1 + body.count(eol)
            if counted >= copy_line:
                return start
            start += len(consumed)
            consumed.clear()
    except Exception:  # the rescan only locates; a parse error is where COPY stopped too
        return start
    return copy_line


def input_error_from_copy(exc: psycopg.Error, path: Path, options: CsvOptions,
                          span: tuple[int, int] | None = None) -> InputError:
    """`span`: the bytes COPY read, when it read one part of the file."""
    record, column, value = copy_location(exc)
    reason = (exc.diag.message_primary or str(exc)).strip()
    reason = reason.replace("\n", " ")
    line = None
    if record is not None:
        line = record_start_for_copy_line(path, options, record, span)
    hint = None
    sqlstate = exc.sqlstate or ""
    if sqlstate == "22P04" and "extra data" in reason:
        hint = "the record has more fields than the header"
    elif sqlstate == "22P04" and "missing data" in reason:
        hint = "the record has fewer fields than the header"
    elif sqlstate == "22P04" and "unterminated" in reason:
        hint = "a quoted field is never closed: check the quotes from this line on"
    elif sqlstate == "22P04" and ("unquoted newline" in reason or
                                  "unquoted carriage return" in reason):
        # COPY takes the first line's ending for the whole file.
        hint = "the file mixes line endings (\\r\\n and \\n): convert it to one kind"
    elif sqlstate == "22021" and reason.endswith(": 0x00"):
        reason = "NUL byte (0x00) in the data: PostgreSQL text cannot hold it"
    elif sqlstate in ("22021", "22P05"):
        hint = "check --encoding"
    elif sqlstate == "22023" and "encoding" in reason:  # a name Python knows, the server not
        hint = "--encoding names no encoding PostgreSQL knows: try UTF8, LATIN1 or WIN1252"
    elif sqlstate.startswith("22"):
        hint = ("fix the value, or use --on-error skip to load the other rows (--type chooses "
                "a column's type when snapshots creates the table)")
    if column is not None:
        column = column.strip()
    # Row-shaped values (bad format errors) are the whole line: show only for value errors.
    if column is None and value is not None and sqlstate == "22P04":
        value = None
    return InputError(reason, file=path, line=line, column=column, value=value, hint=hint)


def malformed_csv(exc: Exception, path: Path, options: CsvOptions, line: int) -> InputError:
    """Python's csv module gave up at physical line `line`: name the record's first line."""
    text = str(exc)
    if "unexpected end of data" in text:
        reason, hint = "unterminated CSV quoted field", \
            "a quoted field is never closed: check the quotes from this line on"
    else:
        reason, hint = f"malformed CSV: {text}", None
    return InputError(reason, file=path, line=record_start_for_copy_line(path, options, line),
                      hint=hint)
