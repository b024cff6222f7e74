"""Streaming a file into COPY, and the checks made on the bytes on their way.

The import's hot path: the file's bytes go to the server in chunks with no per-row Python
work (unless types are being inferred for a table this import creates); on the way they
are hashed again, searched for stray quotes and, before PostgreSQL 18, for a `\\.` line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from queue import Queue

import psycopg
from psycopg import sql
from psycopg.copy import LibpqWriter, QueuedLibpqWriter

from snapshots.copyerrors import input_error_from_copy
from snapshots.csvio.inference import StreamInference
from snapshots.csvio.quoting import (
    MisplacedQuote,
    StrayQuotes,
    first_malformed_record,
    first_stray_quote,
    misplaced_quote_error,
    quote_parity,
)
from snapshots.csvio.streams import HashingReader, iter_chunks, open_content, open_span
from snapshots.engine.context import LoadContext
from snapshots.engine.gil import copy_stream
from snapshots.errors import InputError, InterruptedImport
from snapshots.schema import SNAPSHOT_ID

DIRECT_WRITE_BYTES = 1 << 20  # files up to this size are sent from the loading thread
QUOTES_CHECKED = 1 << 20  # a tagged COPY checks this much of a file for spanning records


def copy_statement(ctx: LoadContext, relation: sql.Composable, columns: Sequence[str], *,
                   header: bool | None = None) -> sql.Composable:
    opts = ctx.options.csv
    header = opts.header if header is None else header
    key = (relation.as_bytes(ctx.conn), tuple(columns), opts, header, ctx.conn.info.encoding)
    cached = _STATEMENTS.get(key)
    if cached is None:
        # Composed once per table, columns and dialect: a batch of small files would
        # otherwise spend more on building the same statement than on sending it.
        cached = sql.SQL(sql.SQL(
            "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER {}, DELIMITER {}, QUOTE {}, "
            "NULL {}, ENCODING {})").format(
            relation, sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.SQL("true" if header else "false"), sql.Literal(opts.delimiter),
            sql.Literal(opts.quote), sql.Literal(opts.null), sql.Literal(opts.encoding)
        ).as_string(ctx.conn))
        if len(_STATEMENTS) > 256:
            _STATEMENTS.clear()
        _STATEMENTS[key] = cached
    return cached


_STATEMENTS: dict[tuple[object, ...], sql.SQL] = {}


def copy_file(ctx: LoadContext, path: Path, relation: sql.Composable, columns: Sequence[str],
              sha: str, *, inference: StreamInference | None = None,
              conn: psycopg.Connection | None = None, span: tuple[int, int] | None = None,
              on_bytes: Callable[[int], None] | None = None,
              stop: threading.Event | None = None, tag: bytes | None = None) -> int:
    """Stream the file's bytes into COPY; optionally infer types from the same bytes.

    No per-row Python work here unless `inference` is given (only for a table this import
    creates). The bytes are hashed again on the way through: a file that changes while it
    is being loaded fails instead of loading something nobody hashed. With `span`, only
    those bytes go (one part of a parallel load, over `conn`), and the caller checks the
    file instead.

    `tag` (a delimiter and an import id, for a last column the caller named in `columns`) is
    put before every line end as it goes: exact only when every line ends a record, which
    the row count then proves, or Tagged.Mismatch is raised (see copy_tagged).
    """
    conn = conn or ctx.conn
    hasher: HashingReader | None = None
    if span is None:
        stream, hasher = open_content(path)
    else:
        stream = open_span(path, *span)
    header = ctx.options.csv.header and (span is None or span[0] == 0)
    total = path.stat().st_size
    # Before PostgreSQL 18, a line that is just `\.` ends COPY's input even in CSV mode:
    # the rows after it would be lost without an error. Look for it (a C-speed search).
    eof_marker = conn.info.server_version < 180000
    tail = b"\n"
    newlines, last = 0, b"\n"  # to compare COPY's row count with the file's line count
    # What COPY would silently misread (a part starts at a record, never at a BOM).
    stray = StrayQuotes(ctx.options.csv, bom=span is None or span[0] == 0)
    # A writer thread pays off only when there is more to send than one socket buffer:
    # for a small file, starting it costs more than the whole COPY.
    threaded = total > DIRECT_WRITE_BYTES
    with stream, conn.cursor() as cur, copy_stream() if threaded else nullcontext():
        writer = BoundedWriter(cur) if threaded else LibpqWriter(cur)
        with cur.copy(copy_statement(ctx, relation, columns, header=header),
                      writer=writer) as copy:
            quote = ctx.options.csv.quote.encode(ctx.options.csv.python_encoding)
            tagged = Tagged(tag, quote) if tag is not None else None

            def feed() -> Iterator[bytes]:
                nonlocal tail, newlines, last
                for chunk in iter_chunks(stream):
                    check_stop(ctx, path, stop)
                    found = stray.find(chunk)
                    if found is not None:
                        if span is not None and span[0] > 0:
                            # Read from the file's start, as one stream reads it (an
                            # earlier part's misplaced quote, if any, comes first).
                            found = first_stray_quote(path, ctx.options.csv, span[1]) \
                                or MisplacedQuote(span[0] + found.offset, found.reason)
                        raise misplaced_quote_error(path, ctx.options.csv, found, columns)
                    if eof_marker:
                        window = tail + chunk
                        if b"\n\\.\n" in window or b"\n\\.\r\n" in window:
                            raise InputError(
                                "a line that is just \\. would end the load early on "
                                "PostgreSQL before 18; nothing written", file=path,
                                hint='quote the value ("\\.") or load into PostgreSQL 18+')
                        tail = window[-4:]
                    copy.write(chunk if tagged is None else tagged.lines(chunk))
                    newlines += chunk.count(b"\n")
                    last = chunk[-1:]
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    elif ctx.progress and hasher is not None:
                        ctx.progress(hasher.bytes_read, total)
                    yield chunk

            for chunk in feed():
                if inference is not None:
                    inference.feed(chunk)
            if eof_marker and (tail.endswith(b"\n\\.") or tail.endswith(b"\n\\.\r")):
                raise InputError("the last line is just \\., which PostgreSQL before 18 "
                                 "drops as an end marker; nothing written", file=path,
                                 hint='quote the value ("\\.") or load into PostgreSQL 18+')
            if inference is not None:
                inference.finish()
            if tagged is not None:
                copy.write(tagged.end(last))
        rows = cur.rowcount
        while hasher is not None and hasher.read(1 << 16):
            pass  # a gzip member's trailer may be left unread
    lines = newlines + (0 if last == b"\n" else 1) - (1 if header else 0)
    if tagged is not None and rows != lines:
        raise Tagged.Mismatch()  # a record spans lines: a tag went inside a field
    # Line breaks inside fields, or a stray quote that joined records: the stream check
    # above already tells them apart, unless the encoding kept it from reading bytes.
    if rows != lines and not stray.active:
        bad = first_malformed_record(path, ctx.options.csv, span,
                                     check=lambda: check_stop(ctx, path, stop))
        if bad is not None:
            raise malformed_quoting(path, bad)
    if hasher is not None and hasher.sha256.hexdigest() != sha:
        raise InputError("the file changed while it was being imported; nothing written",
                         file=path, hint="write snapshots elsewhere and rename them in")
    return rows


def check_stop(ctx: LoadContext, path: Path, stop: threading.Event | None) -> None:
    if ctx.cancel.is_set():
        raise InterruptedImport(f"{path}: cancelled; nothing written")
    if stop is not None and stop.is_set():
        raise Stopped()


def copy_with_errors(ctx: LoadContext, path: Path, relation: sql.Composable, columns: Sequence[str],
                     sha: str, *, inference: StreamInference | None = None,
                     import_id: int | None = None) -> int:
    """One stream; a COPY error becomes the file's one-line error (parallel parts
    translate theirs in _copy_parts, once the other parts are stopped). `import_id`: the
    table's snapshot_id for these rows, sent with them (copy_tagged)."""
    if import_id is not None and inference is None:
        rows = copy_tagged(ctx, path, relation, columns, sha, import_id)
        if rows is not None:
            return rows
    try:
        return copy_file(ctx, path, relation, columns, sha, inference=inference)
    except psycopg.errors.QueryCanceled:
        raise
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError,
            psycopg.errors.InvalidTextRepresentation) as exc:
        raise input_error_from_copy(exc, path, ctx.options.csv) from None


def copy_tagged(ctx: LoadContext, path: Path, relation: sql.Composable, columns: Sequence[str],
                sha: str, import_id: int, *, conn: psycopg.Connection | None = None,
                span: tuple[int, int] | None = None,
                on_bytes: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> int | None:
    """COPY with the rows' snapshot_id sent as their last field, so the server evaluates no
    DEFAULT per row (about a quarter of a COPY's time into a table of four columns). In a
    savepoint: when the file's lines are not its records, or COPY refuses anything, nothing
    of it stays and None says to load the file as before (which reports any error itself).
    `conn`, `span`, `on_bytes`, `stop`: as copy_file's (one part of a parallel load)."""
    tag = id_tag(ctx, import_id)
    if tag is None:
        return None
    try:
        with (conn or ctx.conn).transaction():
            return copy_file(ctx, path, relation, [*columns, SNAPSHOT_ID], sha, tag=tag,
                             conn=conn, span=span, on_bytes=on_bytes, stop=stop)
    except psycopg.errors.QueryCanceled:
        raise
    except TAG_REFUSED:
        return None



def id_tag(ctx: LoadContext, import_id: int) -> bytes | None:
    """The delimiter and the import id, to go before each line end; None when the
    encoding's line feeds are not plain bytes to insert before."""
    csv = ctx.options.csv
    if not csv.quotes_bytewise:
        return None
    return csv.delimiter.encode(csv.python_encoding) + str(int(import_id)).encode()


class Tagged:
    """A stream's lines with a tag before each line end (CRLF or LF, by the first one).

    A line with an odd number of quotes (a quoted field going on past its end) in the first
    QUOTES_CHECKED bytes stops it at once with Mismatch, so a file whose records span lines
    costs a chunk, not a whole COPY, before it loads without the tag. The check stops there
    (over a whole file it cost about 5% of the load); the row count at the end proves the
    rest, and a file whose first spanning record comes later loads twice.
    """

    class Mismatch(Exception):
        """Some line does not end a record (its quotes do not pair up, or COPY's row count
        is not the line count)."""

    def __init__(self, tag: bytes, quote: bytes) -> None:
        self._lf = tag + b"\n"
        self._crlf: bytes | None = None  # decided by the first line end
        self._cr = False  # a chunk ended in \r: its line end may go on in the next
        self._quote = quote
        self._open = False  # the line the last chunk ended in has an odd number of quotes
        self._unchecked = QUOTES_CHECKED  # bytes still to look at

    def lines(self, chunk: bytes) -> bytes:
        self._check_quotes(chunk)
        if self._cr:
            chunk, self._cr = b"\r" + chunk, False
        if chunk.endswith(b"\r"):
            chunk, self._cr = chunk[:-1], True
        if self._crlf is None and (at := chunk.find(b"\n")) >= 0:
            self._crlf = self._lf[:-1] + b"\r\n" if chunk[at - 1:at] == b"\r" else b""
        out = chunk.replace(b"\n", self._lf)
        # CRLF lines: the tag goes before the \r (a lone \r elsewhere stays COPY's to judge).
        return out.replace(b"\r" + self._lf, self._crlf) if self._crlf else out

    def _check_quotes(self, chunk: bytes) -> None:
        if self._unchecked <= 0:
            self._open = False  # not known past here: the row count says
            return
        self._unchecked -= len(chunk)
        if self._quote not in chunk and not self._open:
            return
        left = quote_parity(chunk, self._quote)
        first = left.find(b"\n")
        if first < 0:
            self._open ^= self._quote in left
            return
        last = left.rfind(b"\n")
        if self._open != (self._quote in left[:first]) or self._quote in left[first:last]:
            raise Tagged.Mismatch()
        self._open = self._quote in left[last:]

    def end(self, last: bytes) -> bytes:
        """What follows the last chunk: a last line without a line end gets its tag too."""
        rest = b"\r" if self._cr else b""
        if last == b"\n" or not last:
            return rest
        if self._cr or self._open:
            raise Tagged.Mismatch()  # a bare \r at the very end, or an open quote
        return self._lf[:-1]


# What sends a tagged COPY back to the plain one.
TAG_REFUSED = (Tagged.Mismatch, psycopg.errors.DataError, psycopg.errors.IntegrityError)


def malformed_quoting(path: Path, line: int) -> InputError:
    return InputError(
        "malformed quoting: a quote inside an unquoted field (PostgreSQL would drop it or "
        "join the records after it); nothing written", file=path, line=line,
        hint='quote the whole field and double the quote inside: "12"" pizza"')


class BoundedWriter(QueuedLibpqWriter):
    """Sends to the server from a worker thread, so reading, hashing and type checks overlap
    the socket instead of waiting for it; at most about 8 MB is queued (flat memory)."""

    def __init__(self, cursor: psycopg.Cursor[object]) -> None:
        super().__init__(cursor)
        self._queue = Queue(maxsize=64)  # items of at most 128 kB each


class Stopped(Exception):
    """Another part of the same parallel load failed: this one stops without an error of its
    own."""
