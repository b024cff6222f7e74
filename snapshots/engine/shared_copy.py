"""Several small files in ONE COPY: a batch's run of plain files, each file's rows tagged
with its own import id on their way in.

A COPY statement costs the server about half a millisecond before its first row, as much
as a 200-row file's rows: one per file is most of what a directory of small files costs.
Here the run's files go into one COPY that names `snapshot_id` as a column, each record of
a file given its id as one more field at the end of its line.

That is exact only when every line break in the file ends a record: a file with a line
whose quotes do not pair up (a quoted field that goes on past the line's end) loads on its
own, and the COPY's row count must be the files' line count, as for any load. The bytes
sent are the very bytes hashed (read once, in memory), checked for stray quotes and,
before PostgreSQL 18, for a `\\.` line, as copy_file checks a file. Anything else (a bad
value, a count that differs, a file that changed) rolls the shared COPY back to its
savepoint, and the files load one by one instead, each with its own error if it has one:
nothing of a failed shared COPY stays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from snapshots.csvio.header import Header
from snapshots.csvio.names import is_gzip
from snapshots.csvio.quoting import StrayQuotes, quotes_span_lines
from snapshots.engine.columns import reconcile_columns
from snapshots.engine.context import LoadContext
from snapshots.engine.copy import copy_statement
from snapshots.engine.target import Target
from snapshots.errors import SnapshotsError
from snapshots.schema import SNAPSHOT_ID

SHARED_MAX_BYTES = 1 << 20  # a file read into memory for it is at most this big


@dataclass(frozen=True)
class Plain:
    """A file's records ready for a shared COPY: its id appended to every line."""

    body: bytes
    rows: int
    columns: tuple[str, ...]
    eol: bytes  # one COPY reads one style of line end: files go together by it


def prepare(ctx: LoadContext, path: Path, header: Header, target: Target, sha256: str,
            import_id: int, data: bytes | None = None) -> Plain | None:
    """The file's records with its import id, or None when it must load on its own.
    `data`: the file's bytes, when the batch read them whole and hashed them (`sha256`)."""
    opts = ctx.options
    csv = opts.csv
    if opts.schema_evolution != "strict" or not csv.quotes_bytewise or is_gzip(path):
        return None
    try:
        columns = reconcile_columns(ctx, path, header, target)
        if data is None:
            if path.stat().st_size > SHARED_MAX_BYTES:
                return None
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha256:
                return None  # it changed since it was hashed
    except (OSError, SnapshotsError):
        return None  # the one-file path says what is wrong
    if StrayQuotes(csv).find(data) is not None:
        return None
    if quotes_span_lines(data, csv.quote.encode()):
        return None  # a quoted field holds a line break: lines are not records
    if ctx.conn.info.server_version < 180000 and (
            b"\n\\.\n" in b"\n" + data or b"\n\\.\r\n" in b"\n" + data or
            data.endswith((b"\n\\.", b"\n\\.\r")) or data in (b"\\.", b"\\.\r")):
        return None  # copy_file's error about the end marker, from the one-file path
    body = data
    if csv.header:
        end = data.find(b"\n")
        first = data[:end + 1] if end >= 0 else data
        if csv.quote.encode() in first:
            return None  # a header that may span lines: which line is the first record?
        body = data[end + 1:] if end >= 0 else b""
    crlf = body.count(b"\r\n")
    if crlf and crlf != body.count(b"\n"):
        return None  # mixed line ends: the one-file path says so, with its hint
    eol = b"\r\n" if crlf else b"\n"
    if body and not body.endswith(b"\n"):
        body += eol
    rows = body.count(b"\n")
    tag = csv.delimiter.encode() + str(int(import_id)).encode()
    # Before each line end, CRLF or LF alike: the id becomes the record's last field.
    body = body.replace(b"\n", tag + b"\n").replace(b"\r" + tag + b"\n", tag + b"\r\n")
    return Plain(body, rows, columns, eol)


def copy_together(ctx: LoadContext, plains: Sequence[Plain]) -> bool:
    """One COPY of the files' records (one dialect, one column list); False when the row
    count is not the files' line count (the caller rolls it back). Errors propagate."""
    columns = [*plains[0].columns, SNAPSHOT_ID]
    statement = copy_statement(ctx, ctx.relation, columns, header=False)
    with ctx.conn.cursor() as cur:
        with cur.copy(statement, writer=psycopg.copy.LibpqWriter(cur)) as copy:
            for plain in plains:
                copy.write(plain.body)
        return cur.rowcount == sum(plain.rows for plain in plains)


def key(ctx: LoadContext, plain: Plain) -> tuple[object, ...]:
    """What files must share to go in one COPY."""
    return (plain.columns, ctx.options.csv, plain.eol)
