"""The import engine: claim, COPY stream, record, as one atomic step per file.

Per file: hash it, take the snapshot's name lock, decide (already imported, conflict, new),
claim an `importing` record (committed on its own so a failure stays visible), then ONE
transaction loads the rows and flips the record to `imported`. Rows and record become visible
together or not at all; a killed process leaves a claim that the next run marks interrupted.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Queue

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from snapshots import schema as ddl
from snapshots import store
from snapshots.config import connect, first_line
from snapshots.copyerrors import input_error_from_copy
from snapshots.csvfile import (
    TEXT,
    Hashed,
    HashingReader,
    Header,
    MisplacedQuote,
    StrayQuotes,
    StreamInference,
    detect_dialect,
    file_signature,
    first_malformed_record,
    first_stray_quote,
    hash_file,
    iter_chunks,
    misplaced_quote_error,
    open_content,
    open_span,
    read_header,
    snapshot_date,
    split_records,
    widen_type,
)
from snapshots.engine.columns import drop_view, infer_types, reconcile_columns, stream_inference
from snapshots.engine.context import LoadContext, ProgressCallback
from snapshots.engine.decide import Decision, decide
from snapshots.engine.merge import check_keys, merge_staged, stage_table
from snapshots.engine.target import Target, resolve_target
from snapshots.errors import (
    ConflictError,
    DatabaseUnavailable,
    InputError,
    InterruptedImport,
    LedgerError,
    OutOfOrderError,
    SchemaDriftError,
    SnapshotsError,
    UsageError,
)
from snapshots.options import ImportOptions, worth_parts
from snapshots.prehash import Prehasher
from snapshots.rejects import load_skipping

log = logging.getLogger(__name__)

SAMPLE_BYTES = 4 << 20  # bytes read to guess types before the table is created
MAX_WIDENINGS = 64  # a file can't need more retries than this without something being wrong


@dataclass
class FileResult:
    """What happened to one file. `result` is imported, skipped, failed, conflict, busy or
    validated (dry run)."""

    path: Path
    result: str
    file_name: str = ""
    import_id: int | None = None
    rows: int = 0
    rejected: int = 0
    bytes: int = 0
    seconds: float = 0.0
    snapshot_date: object = None
    sha256: str | None = None
    same_content_as: int | None = None
    detail: str = ""
    error: SnapshotsError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("imported", "skipped", "validated", "busy")


class Importer:
    """Imports files into one table over one connection. Not thread-safe: one per worker."""

    def __init__(self, conninfo: str, *, table: str, schema: str | None = None,
                 options: ImportOptions | None = None,
                 progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None, parts: int = 1,
                 prehashed: Prehasher | None = None) -> None:
        self.options = options or ImportOptions()
        self.prehashed = prehashed  # files hashed ahead, while something else ran
        self.parts = max(1, parts)  # connections one large file may be loaded over
        self.table = table
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.conninfo = conninfo
        self.conn = connect(conninfo)
        self.schema = schema or ddl.current_schema(self.conn)
        if not ddl.schema_exists(self.conn, self.schema):
            raise UsageError(f"schema {self.schema!r} does not exist",
                             hint=f"create it first: CREATE SCHEMA {self.schema}")
        self._ready = False
        self._role: str | None = None
        self._helpers: list[psycopg.Connection] = []  # parts 2..N of a parallel load
        # The file being imported as it was hashed: its signature before the read, and the
        # cut points found during it.
        self._hashed: Hashed | None = None

    # ------------------------------------------------------------------ lifecycle

    def _ctx(self) -> LoadContext:
        """What a load step is given (the options as this file has them)."""
        return LoadContext(self.conn, self.schema, self.table, self.options, self.cancel,
                           self.progress)

    def close(self) -> None:
        for conn in [self.conn, *self._helpers]:
            if not conn.closed:
                conn.close()
        self._helpers.clear()

    def cancel_now(self) -> None:
        """Cancel the statements in flight on every connection (from another thread)."""
        for conn in [self.conn, *self._helpers]:
            with contextlib.suppress(psycopg.Error, AttributeError):
                conn.cancel_safe(timeout=2)

    def __enter__(self) -> Importer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self) -> None:
        """Migrate the ledger if needed and reap claims whose owners are gone (once)."""
        if self._ready:
            return
        if self.options.dry_run:
            version = ddl.ledger_version(self.conn, self.schema)
            ddl.check_not_newer(version, self.schema)
        else:
            ddl.migrate(self.conn, self.schema)
            # Every table's dead claims, not only this one's: their leftover parallel-load
            # tables (dropped next) can be as large as a snapshot.
            reaped = store.reap_interrupted(self.conn, self.schema)
            for import_id in reaped:
                log.warning("marked import #%s as interrupted: its process went away", import_id)
            for name in store.drop_leftover_parts(self.conn, self.schema):
                log.warning("dropped %s.%s, left by a parallel load that did not finish",
                            self.schema, name)
        row = self.conn.execute("SELECT current_user").fetchone()
        self._role = str(row[0]) if row else None
        self._ready = True

    # ------------------------------------------------------------------ one file

    def import_file(self, path: Path, *, known: tuple[str, int] | None = None) -> FileResult:
        """Import one file. `known` is its (sha256, size) when the caller already hashed it
        (sync remembers hashes); the bytes are hashed again on their way into COPY anyway."""
        started = time.monotonic()
        self._took: float | None = None  # what the ledger record says the import took
        result = FileResult(path=path, result="failed", file_name=path.name)
        given = self.options  # a detected delimiter is this file's own
        try:
            self._import(path, result, known)
        except SnapshotsError as exc:
            result.result = "conflict" if isinstance(exc, ConflictError) else "failed"
            result.error = exc
        except psycopg.errors.QueryCanceled as exc:  # an OperationalError: before that
            result.error = InterruptedImport(f"{path}: cancelled; nothing written") \
                if self.cancel.is_set() else SnapshotsError(f"{path}: {first_line(str(exc))}")
        except psycopg.OperationalError as exc:
            if _connection_lost(self.conn, exc):
                result.error = DatabaseUnavailable(f"{path}: lost the database: "
                                                   f"{first_line(str(exc))}")
            else:  # the server refused this file: a limit (54xxx), a full disk (53100), ...
                result.error = SnapshotsError(f"{path}: {first_line(str(exc))}")
        except psycopg.Error as exc:
            result.error = SnapshotsError(f"{path}: {first_line(str(exc))}")
        finally:
            self.options = given
            # An import's time is its record's (claim to commit), the TOOK that `list` shows:
            # one measurement, wherever it is read.
            result.seconds = self._took if result.result == "imported" and \
                self._took is not None else time.monotonic() - started
        return result

    def _import(self, path: Path, result: FileResult, known: tuple[str, int] | None) -> None:
        opts = self.options
        if not path.is_file():
            raise InputError("not a readable file", file=path)
        result.snapshot_date = snapshot_date(path.name)
        if result.snapshot_date is None:
            result.warnings.append(
                f"{path.name}: no YYYYMMDD date in the name; snapshot_date stays empty")
        self._hashed = None
        if known:
            sha, size = known
        else:
            try:
                hashed = self.prehashed.take(path) if self.prehashed else None
                hashed = hashed or hash_file(
                    path, opts.csv, lambda size: worth_parts(opts, path, size, self.parts))
            except OSError as exc:
                raise InputError(f"cannot read the file: {exc.strerror or exc}",
                                 file=path) from None
            self._hashed = hashed
            sha, size = hashed.sha256, hashed.size
        result.sha256, result.bytes = sha, size
        self.prepare()

        if not store.name_lock(self.conn, self.schema, self.table, path.name,
                               wait=opts.wait_for_busy and not opts.dry_run):
            result.result = "busy"
            result.detail = "another process is importing it"
            return
        try:
            if not opts.dry_run:
                for import_id in store.reap_name(self.conn, self.schema, self.table, path.name):
                    log.warning("marked import #%s as interrupted: its process went away",
                                import_id)
            self._decide_and_load(path, sha, size, result)
        finally:
            if not self.conn.closed and not self.conn.broken:
                store.name_unlock(self.conn, self.schema, self.table, path.name)

    def _decide_and_load(self, path: Path, sha: str, size: int, result: FileResult) -> None:
        opts = self.options
        has_ledger = ddl.ledger_version(self.conn, self.schema)
        existing = (store.imported_record(self.conn, self.schema, self.table, path.name)
                    if has_ledger else None)
        verdict = decide(existing.sha256 if existing is not None else None, sha,
                         replace=opts.replace)
        if verdict is Decision.SKIP:
            assert existing is not None
            result.result = "skipped"
            result.import_id = existing.id
            result.rows = existing.row_count or 0
            result.detail = f"already imported as #{existing.id}"
            return
        if verdict is Decision.CONFLICT:
            assert existing is not None
            raise ConflictError(
                f"{path}: conflict: {path.name} was imported as #{existing.id} with different "
                f"content (sha256 {existing.sha256[:12]}…, this file {sha[:12]}…); nothing written",
                hint="use --replace to supersede the earlier import")
        same = store.same_content(self.conn, self.schema, self.table, sha, path.name) \
            if has_ledger else None
        result.same_content_as = same
        try:
            dialect, detected = detect_dialect(path, opts.csv)
            self.options = opts = replace(opts, csv=dialect)
            header = read_header(path, opts.csv)
        except InputError as exc:
            if not opts.dry_run:  # a bad header is a failed attempt too: `list` shows it
                result.import_id = self._claim(path, sha, size, result)
                self._record_failure(result.import_id, exc, path)
            raise

        if opts.dry_run:
            rows, rejected, would = self._dry_run(path, header, sha)
            result.result, result.rows, result.rejected = "validated", rows, rejected
            result.detail = "nothing written (dry run)"
            if would:
                result.detail = f"{would}; {result.detail}"
            if rejected:  # --on-error skip: say what a real run would reject
                result.detail = (f"{rejected} rejected row{'s' if rejected != 1 else ''} "
                                 f"would be skipped; {result.detail}")
            if detected:
                result.detail += f"; {detected}"
            return

        import_id = self._claim(path, sha, size, result)
        result.import_id = import_id
        try:
            rows, rejected, detail = self._load(path, header, sha, import_id, existing,
                                                result.snapshot_date, same)  # type: ignore[arg-type]
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            error = InputError(f"cannot read the compressed file: {exc}; nothing written",
                               file=path)
            self._record_failure(import_id, error, path)
            raise error from None
        except BaseException as exc:
            self._record_failure(import_id, exc, path)
            raise
        result.result, result.rows, result.rejected = "imported", rows, rejected
        parts = [detail] if detail else []
        if same is not None:
            parts.append(f"same content as #{same}")
        if existing is not None:
            parts.append(f"replaced #{existing.id}")
        if rejected:
            parts.append(f"{rejected} rejected row{'s' if rejected != 1 else ''}")
            result.warnings.append(
                f"{path.name}: {rejected} rejected row{'s' if rejected != 1 else ''} kept in "
                f"{self.schema}.snapshot_rejects (import #{import_id})")
        if detected:
            parts.append(detected)
        result.detail = "; ".join(parts)

    def _claim(self, path: Path, sha: str, size: int, result: FileResult) -> int:
        return store.claim(
            self.conn, self.schema, table=self.table, file_name=path.name,
            path=str(path.resolve()), snapshot_date=result.snapshot_date,  # type: ignore[arg-type]
            sha256=sha, size_bytes=size,
            imported_by=store.provenance(self.options.origin, self._role))

    def _record_failure(self, import_id: int, exc: BaseException, path: Path) -> None:
        if isinstance(exc, SnapshotsError):
            message = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            message = "interrupted"
        else:
            message = first_line(str(exc)) or type(exc).__name__
        # Not the file's fault: a cancellation, a lost server, options that don't fit the
        # table. Such a failure doesn't stop sync from trying the same bytes again.
        retry = isinstance(exc, (InterruptedImport, KeyboardInterrupt, UsageError,
                                 DatabaseUnavailable,
                                 psycopg.OperationalError))  # QueryCanceled is one too
        # Cancelled (a shutdown past its grace, Ctrl-C): no outcome of the file, and nothing
        # of it was written, so its claim goes too rather than stay behind as a failure.
        cancelled = isinstance(exc, (InterruptedImport, KeyboardInterrupt)) or (
            isinstance(exc, psycopg.errors.QueryCanceled) and self.cancel.is_set())

        def record(conn: psycopg.Connection) -> None:
            if cancelled:
                store.discard_claim(conn, self.schema, import_id)
            else:
                store.mark_failed(conn, self.schema, import_id, message, retry=retry)

        try:
            try:
                if self.conn.broken or self.conn.closed:
                    raise psycopg.OperationalError("connection lost")
                record(self.conn)
            except psycopg.OperationalError:
                # The connection died with the load (it may not know yet): a new one records it.
                self.conn.close()
                self.conn = connect(self.conninfo)
                record(self.conn)
        except (psycopg.Error, SnapshotsError):
            # The claim stays `importing`; its owner (us) is gone once this connection closes,
            # so the next run's reaper marks it interrupted.
            log.warning("could not record the failure of import #%s", import_id)

    # ------------------------------------------------------------------ the transaction

    def _load(self, path: Path, header: Header, sha: str, import_id: int,
              existing: store.Record | None, day: object,
              same: int | None) -> tuple[int, int, str]:
        """The one transaction: rows and the `imported` record become visible together."""
        ranges = self._parallel_ranges(path, header)
        if ranges is not None:
            return self._load_parallel(path, header, sha, import_id, existing, day, same,
                                       ranges)
        with self.conn.transaction():  # this is where a file's transaction starts
            self.conn.execute("SELECT set_config(%s, %s, true)",
                              (ddl.IMPORT_ID_SETTING, str(import_id)))
            target = self._target(header)
            if target.mode == "upsert":
                # Merges into one table go one at a time, so two processes can't both pass
                # the time-order guard and let the older snapshot win.
                self.conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(
                    ddl.lock_key("merge", self.schema, self.table)))
                self._guard_time_order(path, day, existing)
            self._supersede(existing, target)
            if self.options.on_error == "skip":
                rows, rejected, detail = self._load_skipping(path, header, target, import_id)
            elif target.mode == "append":
                rows, detail = self._load_append(path, header, target, sha)
                rejected = 0
            else:
                rows, detail = self._load_upsert(path, header, target, sha)
                rejected = 0
            self._took = store.mark_imported(self.conn, self.schema, import_id, rows=rows,
                                             rejected=rejected, same_content_as=same)
        return rows, rejected, detail

    def _supersede(self, existing: store.Record | None, target: Target) -> None:
        """--replace: the earlier import's rows go (append) and its record says `replaced`."""
        if existing is None:
            return
        if target.mode == "append" and target.info is not None:
            ddl.delete_snapshot_rows(self.conn, self.schema, self.table, [existing.id])
        store.mark_status(self.conn, self.schema, [existing.id], "replaced")

    # ------------------------------------------------------------------ parallel

    def _parallel_ranges(self, path: Path, header: Header) -> list[tuple[int, int]] | None:
        """The parts of a file worth loading over several connections, or None.

        Only a large uncompressed file going into an existing table in the plain mode: a
        first import infers types in one stream, --on-error skip reads rows in Python, and
        --schema-evolution add may alter the table mid-load.
        """
        parts = self._worth_parts(path)
        if parts < 2 or ddl.describe_table(self.conn, self.schema, self.table) is None or \
                not ddl.may_attach(self.conn, self.schema, self.table):
            return None
        hashed = self._hashed
        if hashed is not None and hashed.path == path and hashed.parts == parts and \
                hashed.ranges is not None:
            ranges = hashed.ranges  # found while the file was hashed
        else:
            ranges = split_records(path, parts, self.options.csv)
        return ranges if len(ranges) > 1 else None

    def _worth_parts(self, path: Path) -> int:
        try:
            size = path.stat().st_size
        except OSError:
            return 1
        return worth_parts(self.options, path, size, self.parts)

    def _load_parallel(self, path: Path, header: Header, sha: str, import_id: int,
                       existing: store.Record | None, day: object, same: int | None,
                       ranges: list[tuple[int, int]]) -> tuple[int, int, str]:
        """Parts over N connections into a table nothing reads, then one transaction that
        attaches it (append) or merges it (upsert) and flips the record: still one atomic
        step for every reader. Whatever is left after a failure or a kill is dropped here
        or by the next run's reaper."""
        target = self._target(header)
        assert target.info is not None
        columns = reconcile_columns(self._ctx(), path, header, target)
        if target.mode == "upsert":
            self._guard_time_order(path, day, existing)  # fail before the load, not after
        if target.mode == "append":
            name = ddl.create_part_table(self.conn, self.schema, self.table, import_id)
        else:
            name = ddl.create_stage_table(self.conn, self.schema, self.table, import_id,
                                          columns)
        relation = sql.Identifier(self.schema, name)
        try:
            # Parts are read side by side, so no one stream can hash the whole file on its
            # way in: it was hashed before the load (or sync matched it to its memory by this
            # signature), and must not have changed since.
            hashed = self._hashed
            before = hashed.signature if hashed is not None and hashed.path == path \
                else file_signature(path)
            rows = self._copy_parts(path, relation, columns, ranges, import_id)
            if file_signature(path) != before or before[0] != ranges[-1][1]:
                raise InputError("the file changed while it was being imported; nothing "
                                 "written", file=path,
                                 hint="write snapshots elsewhere and rename them in")
            with self.conn.transaction():  # the record's transaction: all parts at once
                self.conn.execute("SELECT set_config(%s, %s, true)",
                                  (ddl.IMPORT_ID_SETTING, str(import_id)))
                target = self._target(header)
                detail = ""
                if target.mode == "upsert":
                    self.conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(
                        ddl.lock_key("merge", self.schema, self.table)))
                    self._guard_time_order(path, day, existing)
                self._supersede(existing, target)
                if target.mode == "append":
                    try:
                        ddl.attach_part(self.conn, self.schema, self.table, name)
                    except psycopg.errors.DatatypeMismatch as exc:
                        raise SchemaDriftError(
                            f"{self.schema}.{self.table} changed during the load: "
                            f"{first_line(str(exc))}; nothing written", file=path) from None
                else:
                    def in_file_order() -> None:
                        # The stage's rows are not in file order: a key error is located by
                        # loading the file once more in one stream (error path only).
                        assert target.info is not None
                        with self.conn.transaction():
                            ordered = stage_table(self._ctx(), columns)
                            self._copy_with_errors(path, ordered, columns, sha)
                            check_keys(self._ctx(), path, ordered, target.info.primary_key)

                    detail = merge_staged(self._ctx(), path, relation, target, columns,
                                         relocate=in_file_order)
                    ddl.drop_table(self.conn, self.schema, name)
                self._took = store.mark_imported(self.conn, self.schema, import_id, rows=rows,
                                                 rejected=0, same_content_as=same)
        except BaseException:
            if not self.conn.closed and not self.conn.broken:
                with contextlib.suppress(psycopg.Error):
                    ddl.drop_table(self.conn, self.schema, name)
            raise
        parts = f"{len(ranges)} parts in parallel"
        return rows, 0, f"{detail}; {parts}" if detail else parts

    def _helper_connections(self, count: int) -> list[psycopg.Connection]:
        self._helpers = [c for c in self._helpers if not c.closed and not c.broken]
        while len(self._helpers) < count:
            self._helpers.append(connect(self.conninfo))
        return [self.conn, *self._helpers[:count]]

    def _copy_parts(self, path: Path, relation: sql.Composable, columns: Sequence[str],
                    ranges: list[tuple[int, int]], import_id: int) -> int:
        """COPY each byte range over its own connection, each in a thread of its own; each
        part commits on its own (out of sight). A bad row in any part stops the others at
        once and fails the whole file; so does Ctrl-C or a cancellation, and no part commits
        after this returns."""
        conns = self._helper_connections(len(ranges) - 1)
        stop = threading.Event()
        total = sum(end - start for start, end in ranges)
        done, lock = [0], threading.Lock()
        rows = [0] * len(ranges)
        errors: list[tuple[int, BaseException]] = []

        def advance(n: int) -> None:
            with lock:
                done[0] += n
                if self.progress:
                    self.progress(done[0], total)

        def part(k: int) -> None:
            conn = conns[k]
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config(%s, %s, true)",
                                 (ddl.IMPORT_ID_SETTING, str(import_id)))
                    rows[k] = self._copy_file(path, relation, columns, "", conn=conn,
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
                if self.cancel.is_set() and not stop.is_set():
                    stop.set()
                    self.cancel_now()  # a COPY the server is still working through
        except BaseException:
            stop.set()
            self.cancel_now()
            for thread in threads:
                thread.join(timeout=30)
            raise
        self._check_stop(path, None)  # cancelled: that, not the parts' errors, is the outcome
        if errors:
            # The failing part's own error, not the "stopped" of the parts it stopped.
            errors.sort(key=lambda e: (isinstance(e[1], _Stopped | psycopg.errors.QueryCanceled),
                                       e[0]))
            k, exc = errors[0]
            if any(j < k for j, _ in errors):  # an earlier part was stopped short
                # A stray quote before part k flips the quote parity its cut was found by, so
                # part k may have begun inside a quoted field and failed on what is not a
                # record at all, while the part holding the quote was stopped before its
                # check reached it. The file's first problem is that quote: name it, as a
                # one-stream load would (error path only; a scan at C speed).
                found = first_stray_quote(path, self.options.csv, ranges[k][0],
                                          check=lambda: self._check_stop(path, None))
                if found is not None:
                    raise misplaced_quote_error(path, self.options.csv, found,
                                                columns) from None
            if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
                raise input_error_from_copy(exc, path, self.options.csv, ranges[k]) from None
            raise exc
        return sum(rows)

    def _target(self, header: Header) -> Target:
        info = ddl.describe_table(self.conn, self.schema, self.table)
        return resolve_target(self.schema, self.table, info, self.options.mode, header.names)

    def _guard_time_order(self, path: Path, day: object, existing: store.Record | None) -> None:
        if day is None or self.options.force:
            return
        newest, name = store.newest_snapshot_date(
            self.conn, self.schema, self.table,
            excluding=existing.id if existing is not None else None)
        if newest is not None and day < newest:  # type: ignore[operator]
            raise OutOfOrderError(
                f"{path}: snapshot date {day} is older than {name} ({newest}), already merged "
                f"into {self.schema}.{self.table}; nothing written",
                hint="upsert never moves time backwards; --force merges it anyway")

    # ------------------------------------------------------------------ append

    def _copy_statement(self, relation: sql.Composable, columns: Sequence[str], *,
                        header: bool | None = None) -> sql.Composed:
        opts = self.options.csv
        header = opts.header if header is None else header
        return sql.SQL(
            "COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER {}, DELIMITER {}, QUOTE {}, "
            "NULL {}, ENCODING {})").format(
            relation, sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.SQL("true" if header else "false"), sql.Literal(opts.delimiter),
            sql.Literal(opts.quote), sql.Literal(opts.null), sql.Literal(opts.encoding))

    def _copy_file(self, path: Path, relation: sql.Composable, columns: Sequence[str],
                   sha: str, *, inference: StreamInference | None = None,
                   conn: psycopg.Connection | None = None, span: tuple[int, int] | None = None,
                   on_bytes: Callable[[int], None] | None = None,
                   stop: threading.Event | None = None) -> int:
        """Stream the file's bytes into COPY; optionally infer types from the same bytes.

        No per-row Python work here unless `inference` is given (only for a table this import
        creates). The bytes are hashed again on the way through: a file that changes while it
        is being loaded fails instead of loading something nobody hashed. With `span`, only
        those bytes go (one part of a parallel load, over `conn`), and the caller checks the
        file instead.
        """
        conn = conn or self.conn
        hasher: HashingReader | None = None
        if span is None:
            stream, hasher = open_content(path)
        else:
            stream = open_span(path, *span)
        header = self.options.csv.header and (span is None or span[0] == 0)
        total = path.stat().st_size
        # Before PostgreSQL 18, a line that is just `\.` ends COPY's input even in CSV mode:
        # the rows after it would be lost without an error. Look for it (a C-speed search).
        eof_marker = conn.info.server_version < 180000
        tail = b"\n"
        newlines, last = 0, b"\n"  # to compare COPY's row count with the file's line count
        # What COPY would silently misread (a part starts at a record, never at a BOM).
        stray = StrayQuotes(self.options.csv, bom=span is None or span[0] == 0)
        with stream, conn.cursor() as cur:
            with cur.copy(self._copy_statement(relation, columns, header=header),
                          writer=_BoundedWriter(cur)) as copy:
                def feed() -> Iterator[bytes]:
                    nonlocal tail, newlines, last
                    for chunk in iter_chunks(stream):
                        self._check_stop(path, stop)
                        found = stray.find(chunk)
                        if found is not None:
                            if span is not None and span[0] > 0:
                                # Read from the file's start, as one stream reads it (an
                                # earlier part's misplaced quote, if any, comes first).
                                found = first_stray_quote(path, self.options.csv, span[1]) \
                                    or MisplacedQuote(span[0] + found.offset, found.reason)
                            raise misplaced_quote_error(path, self.options.csv, found, columns)
                        if eof_marker:
                            window = tail + chunk
                            if b"\n\\.\n" in window or b"\n\\.\r\n" in window:
                                raise InputError(
                                    "a line that is just \\. would end the load early on "
                                    "PostgreSQL before 18; nothing written", file=path,
                                    hint='quote the value ("\\.") or load into PostgreSQL 18+')
                            tail = window[-4:]
                        copy.write(chunk)
                        newlines += chunk.count(b"\n")
                        last = chunk[-1:]
                        if on_bytes is not None:
                            on_bytes(len(chunk))
                        elif self.progress and hasher is not None:
                            self.progress(hasher.bytes_read, total)
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
            rows = cur.rowcount
            while hasher is not None and hasher.read(1 << 16):
                pass  # a gzip member's trailer may be left unread
        lines = newlines + (0 if last == b"\n" else 1) - (1 if header else 0)
        # Line breaks inside fields, or a stray quote that joined records: the stream check
        # above already tells them apart, unless the encoding kept it from reading bytes.
        if rows != lines and not stray.active:
            bad = first_malformed_record(path, self.options.csv, span,
                                         check=lambda: self._check_stop(path, stop))
            if bad is not None:
                raise malformed_quoting(path, bad)
        if hasher is not None and hasher.sha256.hexdigest() != sha:
            raise InputError("the file changed while it was being imported; nothing written",
                             file=path, hint="write snapshots elsewhere and rename them in")
        return rows

    def _check_stop(self, path: Path, stop: threading.Event | None) -> None:
        if self.cancel.is_set():
            raise InterruptedImport(f"{path}: cancelled; nothing written")
        if stop is not None and stop.is_set():
            raise _Stopped()

    def _copy_with_errors(self, path: Path, relation: sql.Composable, columns: Sequence[str],
                          sha: str, *, inference: StreamInference | None = None) -> int:
        """One stream; a COPY error becomes the file's one-line error (parallel parts
        translate theirs in _copy_parts, once the other parts are stopped)."""
        try:
            return self._copy_file(path, relation, columns, sha, inference=inference)
        except psycopg.errors.QueryCanceled:
            raise
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError,
                psycopg.errors.InvalidTextRepresentation) as exc:
            raise input_error_from_copy(exc, path, self.options.csv) from None

    def _load_append(self, path: Path, header: Header, target: Target,
                     sha: str) -> tuple[int, str]:
        relation = sql.Identifier(self.schema, self.table)
        if target.info is not None:
            columns = reconcile_columns(self._ctx(), path, header, target)
            return self._append_existing(path, relation, columns, sha, target), ""
        return self._append_new(path, header, relation, sha)

    def _append_existing(self, path: Path, relation: sql.Composable, columns: Sequence[str],
                         sha: str, target: Target) -> int:
        if self.options.schema_evolution != "add":
            return self._copy_with_errors(path, relation, columns, sha)
        # --schema-evolution add: widen a column when a value needs it, then try again.
        for _ in range(MAX_WIDENINGS):
            try:
                with self.conn.transaction():  # savepoint: a failed COPY leaves nothing
                    return self._copy_file(path, relation, columns, sha)
            except (psycopg.errors.InvalidTextRepresentation,
                    psycopg.errors.NumericValueOutOfRange,
                    psycopg.errors.InvalidDatetimeFormat,
                    psycopg.errors.DatetimeFieldOverflow) as exc:
                _, column, _ = _location(exc)
                info = ddl.describe_table(self.conn, self.schema, self.table)
                assert info is not None
                if column is None or column not in info.columns or \
                        info.columns[column] == "text":
                    raise input_error_from_copy(exc, path, self.options.csv) from None
                wider = widen_type(info.columns[column])
                log.info("widening %s.%s from %s to %s", self.table, column,
                         info.columns[column], wider)
                drop_view(self._ctx())
                ddl.alter_column_type(self.conn, self.schema, self.table, column, wider)
                ddl.create_latest_view(self.conn, self.schema, self.table)
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                raise input_error_from_copy(exc, path, self.options.csv) from None
        raise InputError("too many type widenings", file=path)

    def _append_new(self, path: Path, header: Header, relation: sql.Composable,
                    sha: str) -> tuple[int, str]:
        """First import: create the table with inferred types, in the load's transaction.

        Types are guessed from the first rows, then checked against every row while COPY
        streams. If the full data needs a wider type, the empty-again table is altered and the
        file loaded again, so inference never produces a table that rejects its own file.
        """
        # Serialise creators of this table; the loser finds the table and appends to it.
        self.conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(
            ddl.lock_key("table", self.schema, self.table)))
        info = ddl.describe_table(self.conn, self.schema, self.table)
        if info is not None:
            target = Target(self.schema, self.table, "append", info, header.names)
            if not info.has_snapshot_id:
                raise UsageError(f"table {self.schema}.{self.table} appeared meanwhile "
                                 "without snapshot_id")
            columns = reconcile_columns(self._ctx(), path, header, target)
            return self._append_existing(path, relation, columns, sha, target), ""

        names = header.names
        created = infer_types(self._ctx(), path, header, limit_bytes=SAMPLE_BYTES)
        ddl.create_append_table(self.conn, self.schema, self.table,
                                list(zip(names, created, strict=True)), index=False, view=False)
        rows = self._copy_settling_types(path, relation, names, created, sha,
                                         (self.schema, self.table))
        ddl.create_snapshot_index(self.conn, self.schema, self.table)
        ddl.create_latest_view(self.conn, self.schema, self.table)
        typed = ", ".join(f"{n} {t}" for n, t in zip(names, created, strict=True))
        return rows, f"created {self.schema}.{self.table} ({typed})"

    def _copy_settling_types(self, path: Path, relation: sql.Composable, names: Sequence[str],
                             created: list[str], sha: str, table: tuple[str, str]) -> int:
        """COPY into a table this import creates (`table`, with the sampled types `created`),
        widening its columns and loading again until every row fits. The import and its dry
        run both load this way, so the dry run's verdict is the import's. `created` ends as
        the types the table has."""
        forced_text: list[int] = []  # columns COPY showed to need text (e.g. `""`)
        inference: StreamInference | None = stream_inference(self._ctx(), names)
        for _ in range(MAX_WIDENINGS):
            try:
                with self.conn.transaction():  # savepoint: a retry starts from an empty table
                    rows = self._copy_file(path, relation, names, sha, inference=inference)
                    if inference is not None and inference.types() != created:
                        raise _NeedsWider(inference.types())
                return rows
            except _NeedsWider as wider:
                self._retype(table, names, created, wider.types)
                inference = None  # the full pass is done: the types are right now
            except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
                _, column, _ = _location(exc)
                if column is None or column not in names or \
                        created[names.index(column)] == TEXT or column in self.options.types:
                    raise input_error_from_copy(exc, path, self.options.csv) from None
                # A value the fast check let through (`""`, 2023-02-30): that column is text.
                forced_text.append(names.index(column))
                self._retype(table, names, created, [TEXT if i in forced_text else t
                                                     for i, t in enumerate(created)])
                if inference is not None:
                    inference = stream_inference(self._ctx(), names, forced_text)
        raise InputError("could not settle the column types", file=path)

    def _retype(self, table: tuple[str, str], names: Sequence[str], created: list[str],
                final: Sequence[str]) -> None:
        for index, (old, new) in enumerate(zip(created, final, strict=True)):
            if old != new:
                ddl.alter_column_type(self.conn, *table, names[index], new)
                created[index] = new

    # ------------------------------------------------------------------ upsert

    def _load_upsert(self, path: Path, header: Header, target: Target,
                     sha: str) -> tuple[int, str]:
        columns = reconcile_columns(self._ctx(), path, header, target)
        stage = stage_table(self._ctx(), columns)
        rows = self._copy_with_errors(path, stage, columns, sha)
        return rows, merge_staged(self._ctx(), path, stage, target, columns)

    # ------------------------------------------------------------------ dry run

    def _dry_run(self, path: Path, header: Header, sha: str) -> tuple[int, int, str]:
        """Validate everything (header, types, every row) against a temporary copy of the
        target, then roll back: nothing is written to the table or the ledger. Returns the
        rows, the rejects and what the import would do besides loading them."""
        try:
            with self.conn.transaction(force_rollback=True):
                info = ddl.describe_table(self.conn, self.schema, self.table)
                if info is None:
                    names = header.names
                    # Sampled, then settled by loading, as the import does (_append_new).
                    types = infer_types(self._ctx(), path, header, limit_bytes=SAMPLE_BYTES)
                    stage = sql.Identifier("snapshots_stage")
                    self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                        stage, sql.SQL(", ").join(
                            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))  # type: ignore[arg-type]
                            for n, t in zip(names, types, strict=True))))
                    target = Target(self.schema, self.table, "append", None, names)
                    if self.options.on_error != "skip":
                        rows = self._copy_settling_types(path, stage, names, types, sha,
                                                         ("pg_temp", "snapshots_stage"))
                        typed = ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True))
                        return rows, 0, f"would create {self.schema}.{self.table} ({typed})"
                else:
                    target = self._target(header)
                    if self.options.schema_evolution == "add":
                        raise UsageError("--dry-run with --schema-evolution add is not supported "
                                         "on an existing table")
                    names = reconcile_columns(self._ctx(), path, header, target)
                    stage = stage_table(self._ctx(), names)
                if self.options.on_error == "skip":
                    return self._load_skipping(path, header, target, 0, relation=stage)
                rows = self._copy_with_errors(path, stage, names, sha)
                if target.mode == "upsert":
                    assert target.info is not None
                    check_keys(self._ctx(), path, stage, target.info.primary_key)
                return rows, 0, ""
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LedgerError(first_line(str(exc))) from None

    # ------------------------------------------------------------------ --on-error skip

    def _load_skipping(self, path: Path, header: Header, target: Target, import_id: int,
                       *, relation: sql.Composable | None = None) -> tuple[int, int, str]:
        return load_skipping(self._ctx(), path, header, target, import_id, relation=relation)


def malformed_quoting(path: Path, line: int) -> InputError:
    return InputError(
        "malformed quoting: a quote inside an unquoted field (PostgreSQL would drop it or "
        "join the records after it); nothing written", file=path, line=line,
        hint='quote the whole field and double the quote inside: "12"" pizza"')


def _connection_lost(conn: psycopg.Connection, exc: psycopg.OperationalError) -> bool:
    """Whether an OperationalError means the database went away, rather than that the server
    refused the statement (psycopg files SQLSTATE classes 53, 54, 55, 57 and 58 under
    OperationalError too: `tables can have at most 1600 columns` is one)."""
    state = exc.sqlstate or ""
    return conn.broken or conn.closed or not state or state.startswith("08") or \
        state in ("57P01", "57P02", "57P03")


class _BoundedWriter(QueuedLibpqWriter):
    """Sends to the server from a worker thread, so reading, hashing and type checks overlap
    the socket instead of waiting for it; at most about 8 MB is queued (flat memory)."""

    def __init__(self, cursor: psycopg.Cursor[object]) -> None:
        super().__init__(cursor)
        self._queue = Queue(maxsize=64)  # items of at most 128 kB each


class _Stopped(Exception):
    """Another part of the same parallel load failed: this one stops without an error of its
    own."""


class _NeedsWider(Exception):
    def __init__(self, types: list[str]) -> None:
        super().__init__("wider types needed")
        self.types = types


def _location(exc: psycopg.Error) -> tuple[int | None, str | None, str | None]:
    from snapshots.copyerrors import copy_location
    return copy_location(exc)

