"""A large file over several connections: byte ranges cut at record boundaries, each
COPYed by a thread of its own into a table nothing reads, then one transaction that
attaches (append) or merges (upsert) it and flips the record."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from snapshots import schema as ddl
from snapshots.config import first_line
from snapshots.copyerrors import input_error_from_copy
from snapshots.csvio.cutpoints import split_records
from snapshots.csvio.hashing import Hashed
from snapshots.csvio.header import Header
from snapshots.csvio.quoting import first_stray_quote, misplaced_quote_error
from snapshots.engine.columns import reconcile_columns
from snapshots.engine.connections import Connections
from snapshots.engine.context import LoadContext, Loaded
from snapshots.engine.copy import Stopped, check_stop, copy_file
from snapshots.engine.transaction import Claim, begin, current_target, finish
from snapshots.errors import InputError, SchemaDriftError
from snapshots.filesig import file_signature
from snapshots.options import worth_parts


def parallel_ranges(ctx: LoadContext, path: Path, header: Header, hashed: Hashed | None,
                    most: int) -> list[tuple[int, int]] | None:
    """The parts of a file worth loading over several connections, or None.

    Only a large uncompressed file appended to an existing table in the plain mode: a
    first import infers types in one stream, --on-error skip reads rows in Python, and
    --schema-evolution add may alter the table mid-load. An upsert loads in one stream:
    staged by parts side by side, its stage lost the key order the merge's join walks
    instead of hashing, and the whole upsert was slower than one stream's (5M rows, 10%
    changed, 2 CPUs: 21.5 s against 17.0 s; 1M: 2.08 s against 1.97 s).
    """
    parts = _worth_parts(ctx, path, most)
    if parts < 2:
        return None
    target = current_target(ctx, header)
    if target.info is None or target.mode != "append" or \
            not ddl.may_attach(ctx.conn, ctx.schema, ctx.table):
        return None
    if hashed is not None and hashed.path == path and hashed.parts == parts and \
            hashed.ranges is not None:
        ranges = hashed.ranges  # found while the file was hashed
    else:
        ranges = split_records(path, parts, ctx.options.csv)
    return ranges if len(ranges) > 1 else None


def _worth_parts(ctx: LoadContext, path: Path, most: int) -> int:
    try:
        size = path.stat().st_size
    except OSError:
        return 1
    return worth_parts(ctx.options, path, size, most)


def load_parallel(ctx: LoadContext, conns: Connections, path: Path, header: Header,
                  claim: Claim, hashed: Hashed | None,
                  ranges: list[tuple[int, int]]) -> tuple[Loaded, float]:
    """Parts over N connections into a table nothing reads, then one transaction that
    attaches it and flips the record: still one atomic step for every reader. Whatever
    is left after a failure or a kill is dropped here or by the next run's reaper. Gives
    what loaded and the time the record says it took."""
    target = current_target(ctx, header)
    assert target.info is not None
    columns = reconcile_columns(ctx, path, header, target)
    name = ddl.create_part_table(ctx.conn, ctx.schema, ctx.table, claim.import_id)
    relation = sql.Identifier(ctx.schema, name)
    try:
        # Parts are read side by side, so no one stream can hash the whole file on its
        # way in: it was hashed before the load (or sync matched it to its memory by this
        # signature), and must not have changed since.
        before = hashed.signature if hashed is not None and hashed.path == path \
            else file_signature(path)
        rows = copy_parts(ctx, conns, path, relation, columns, ranges)
        if file_signature(path) != before or before.size != ranges[-1][1]:
            raise InputError("the file changed while it was being imported; nothing "
                             "written", file=path,
                             hint="write snapshots elsewhere and rename them in")
        with ctx.conn.transaction():  # the record's transaction: all parts at once
            target = begin(ctx, path, header, claim)
            if target.mode != "append":
                raise SchemaDriftError(f"{ctx.schema}.{ctx.table} changed during the load "
                                       "(it is no longer an append-mode table); nothing "
                                       "written", file=path)
            try:
                ddl.attach_part(ctx.conn, ctx.schema, ctx.table, name)
            except psycopg.errors.DatatypeMismatch as exc:
                raise SchemaDriftError(
                    f"{ctx.schema}.{ctx.table} changed during the load: "
                    f"{first_line(str(exc))}; nothing written", file=path) from None
            took = finish(ctx, claim, Loaded(rows, 0, ""))
    except BaseException:
        if not ctx.conn.closed and not ctx.conn.broken:
            with contextlib.suppress(psycopg.Error):
                ddl.drop_table(ctx.conn, ctx.schema, name)
        raise
    return Loaded(rows, 0, f"{len(ranges)} parts in parallel"), took


def copy_parts(ctx: LoadContext, connections: Connections, path: Path,
               relation: sql.Composable, columns: Sequence[str],
               ranges: list[tuple[int, int]]) -> int:
    """COPY each byte range over its own connection, each in a thread of its own; each
    part commits on its own (out of sight). A bad row in any part stops the others at
    once and fails the whole file; so does Ctrl-C or a cancellation, and no part commits
    after this returns. (An append part's snapshot_id is its table's DEFAULT: see
    schema.create_part_table.)"""
    conns = connections.for_parts(len(ranges) - 1)
    stop = threading.Event()
    total = sum(end - start for start, end in ranges)
    done, lock = [0], threading.Lock()
    rows = [0] * len(ranges)
    errors: list[tuple[int, BaseException]] = []

    def advance(n: int) -> None:
        with lock:
            done[0] += n
            if ctx.progress:
                ctx.progress(done[0], total)

    def part(k: int) -> None:
        conn = conns[k]
        try:
            with conn.transaction():
                rows[k] = copy_file(ctx, path, relation, columns, "", conn=conn,
                                    span=ranges[k], on_bytes=advance, stop=stop)
        except BaseException as exc:
            stop.set()  # first, so the others stop while this error is located
            errors.append((k, exc))

    threads = [threading.Thread(target=part, args=(k,), name=f"part-{k}", daemon=True)
               for k in range(len(ranges))]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.1)  # short waits: Ctrl-C reaches this thread
            if ctx.cancel.is_set() and not stop.is_set():
                stop.set()
                connections.cancel_now()  # a COPY the server is still working through
    except BaseException:
        stop.set()
        connections.cancel_now()
        for thread in threads:
            thread.join(timeout=30)
        raise
    check_stop(ctx, path, None)  # cancelled: that, not the parts' errors, is the outcome
    if errors:
        # The failing part's own error, not the "stopped" of the parts it stopped.
        errors.sort(key=lambda e: (isinstance(e[1], Stopped | psycopg.errors.QueryCanceled),
                                   e[0]))
        k, exc = errors[0]
        if any(j < k for j, _ in errors):  # an earlier part was stopped short
            # A stray quote before part k flips the quote parity its cut was found by, so
            # part k may have begun inside a quoted field and failed on what is not a
            # record at all, while the part holding the quote was stopped before its
            # check reached it. The file's first problem is that quote: name it, as a
            # one-stream load would (error path only; a scan at C speed).
            found = first_stray_quote(path, ctx.options.csv, ranges[k][0],
                                      check=lambda: check_stop(ctx, path, None))
            if found is not None:
                raise misplaced_quote_error(path, ctx.options.csv, found,
                                            columns) from None
        if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
            raise input_error_from_copy(exc, path, ctx.options.csv, ranges[k]) from None
        raise exc
    return sum(rows)
