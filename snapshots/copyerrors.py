"""Turn PostgreSQL's COPY errors into precise, one-line InputErrors.

COPY says where it failed in its error context (`COPY t, line 3, column x: "abc"`). Its
"line" counts records, not physical lines, so a file with newlines inside quoted fields is
rescanned to find the physical line where the record starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg

from snapshots.csvfile import CsvOptions, decoded_lines, iter_chunks, open_content
from snapshots.errors import InputError

_CONTEXT = re.compile(
    r'COPY [^,]+, line (?P<line>\d+)(?:, column (?P<column>[^:]+?))?(?:: "(?P<value>.*)")?$',
    re.S)


def copy_location(exc: psycopg.Error) -> tuple[int | None, str | None, str | None]:
    """(record number counted from 1 including the header, column, value) from COPY's context."""
    context = (exc.diag.context or "").strip().splitlines()
    for line in context:
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
                                              file=str(path)))
        start = 1
        try:
            for _ in reader:
                yield start
                start = reader.line_num + 1
        except Exception:  # the rescan only locates; a parse error here ends the search
            yield start


def physical_line(path: Path, options: CsvOptions, record: int) -> int:
    for number, start in enumerate(record_start_lines(path, options), start=1):
        if number >= record:
            return start
    return record


def input_error_from_copy(exc: psycopg.Error, path: Path, options: CsvOptions) -> InputError:
    record, column, value = copy_location(exc)
    reason = (exc.diag.message_primary or str(exc)).strip()
    reason = reason.replace("\n", " ")
    line = None
    if record is not None:
        line = physical_line(path, options, record)
    hint = None
    sqlstate = exc.sqlstate or ""
    if sqlstate == "22P04" and "extra data" in reason:
        hint = "the record has more fields than the header"
    elif sqlstate == "22P04" and "missing data" in reason:
        hint = "the record has fewer fields than the header"
    elif sqlstate in ("22021", "22P05"):
        hint = "check --encoding"
    elif sqlstate.startswith("22"):
        hint = "fix the value, choose the column's type with --type, or use --on-error skip"
    if column is not None:
        column = column.strip()
    # Row-shaped values (bad format errors) are the whole line: show only for value errors.
    if column is None and value is not None and sqlstate == "22P04":
        value = None
    return InputError(reason, file=path, line=line, column=column, value=value, hint=hint)
