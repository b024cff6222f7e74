"""The import engine's front: one `Importer` per worker, one `import_file` per file.

Per file: hash it, take the snapshot's name lock, decide (already imported, conflict, new),
claim an `importing` record (committed on its own so a failure stays visible), then ONE
transaction loads the rows and flips the record to `imported` (`Importer._load`). Rows and
record become visible together or not at all; a killed process leaves a claim that the next
run marks interrupted. The load paths, their SQL and the COPY stream are in
`snapshots.engine`.
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import psycopg

from snapshots import schema as ddl
from snapshots import store
from snapshots.csvio.hashing import Hashed, hash_file
from snapshots.csvio.header import Header
from snapshots.csvio.names import snapshot_date
from snapshots.engine.batch import import_batch
from snapshots.engine.batch_plan import BatchEnv, ProgressFor, small_run
from snapshots.engine.connections import Connections
from snapshots.engine.context import LoadContext, Loaded, LoadJob, ProgressCallback
from snapshots.engine.decide import judge
from snapshots.engine.dryrun import dry_run
from snapshots.engine.failure import fail, record_failure
from snapshots.engine.header import file_header
from snapshots.engine.loads import choose_load
from snapshots.engine.parallel import load_parallel, parallel_ranges
from snapshots.engine.result import FileResult, imported, validated
from snapshots.engine.startup import ready_ledger
from snapshots.engine.transaction import Claim, begin, finish
from snapshots.errors import (
    InputError,
    UsageError,
)
from snapshots.options import ImportOptions, batchable, worth_parts
from snapshots.prehash import Prehasher

__all__ = ["FileResult", "ImportOptions", "Importer", "ProgressCallback"]

log = logging.getLogger(__name__)


class Importer:
    """Imports files into one table over one connection. Not thread-safe: one per worker
    (only `cancel_now` may be called from another thread)."""

    def __init__(self, conninfo: str, *, table: str, schema: str | None = None,
                 options: ImportOptions | None = None,
                 progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None, parts: int = 1,
                 prehashed: Prehasher | None = None) -> None:
        self.options = options or ImportOptions()
        self.prehashed = prehashed  # files hashed ahead, while something else ran
        self.parts = max(1, parts)  # connections one large file may be loaded over, by default
        self.table = table
        self.progress = progress  # the default; import_file may be given one per file
        self.cancel = cancel or threading.Event()
        self._conns = Connections(conninfo)
        self.schema = schema or ddl.current_schema(self.conn)
        if not ddl.schema_exists(self.conn, self.schema):
            raise UsageError(f"schema {self.schema!r} does not exist",
                             hint=f"create it first: CREATE SCHEMA {self.schema}")
        self._role: str | None = None  # set by prepare(), once

    @property
    def conn(self) -> psycopg.Connection:
        """The connection files' transactions run on."""
        return self._conns.main

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._conns.close()

    def cancel_now(self) -> None:
        """Cancel the statements in flight on every connection (from another thread)."""
        self._conns.cancel_now()

    def __enter__(self) -> Importer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self) -> None:
        """Migrate the ledger if needed and reap claims whose owners are gone (once)."""
        if self._role is not None:
            return
        ready_ledger(self.conn, self.schema, dry_run=self.options.dry_run)
        row = self.conn.execute("SELECT current_user").fetchone()
        self._role = str(row[0]) if row else ""

    # ------------------------------------------------------------------ many files

    def import_many(self, paths: Sequence[Path], *,
                    progress: ProgressFor | None = None,
                    known: Mapping[Path, tuple[str, int] | None] | None = None,
                    stop: threading.Event | None = None) -> Iterator[FileResult]:
        """Import files in the order given, yielding each result; runs of small files
        share transactions (snapshots.engine.batch), the others go one by one. `known`:
        the (sha256, size) of files the caller hashed already (sync). Stops after the
        file in flight when cancelled; `stop` set, it takes no further file (a batch's
        untaken files come back as cancelled, their claims removed)."""
        known = known or {}
        pending = list(paths)
        while pending and not self.cancel.is_set() and not (stop and stop.is_set()):
            count = small_run(pending, self.options, self.parts) \
                if batchable(self.options) else 0
            try:
                # A batch appends to a table that is there: the first file creates it alone.
                batch = count >= 2 and self._table_exists()
                if batch:
                    self.prepare()
            except psycopg.Error:
                if self.cancel.is_set():
                    return
                batch = False  # the one-file path meets the error again and says it
            if not batch:
                path = pending.pop(0)
                yield self.import_file(path, known=known.get(path),
                                       progress=progress(path) if progress else None)
                continue
            run, pending = pending[:count], pending[count:]
            yield from import_batch(self._batch_env(known, stop), run, progress)

    def _table_exists(self) -> bool:
        return ddl.describe_table(self.conn, self.schema, self.table) is not None

    def _batch_env(self, known: Mapping[Path, tuple[str, int] | None],
                   stop: threading.Event | None) -> BatchEnv:
        return BatchEnv(
            self._conns, self.schema, self.table, self.options, self.cancel,
            store.provenance(self.options.origin, self._role or None),
            hash=lambda ctx, path, result, read: self._hash(ctx, path, result,
                                                            known.get(path) or read, 1),
            one_file=lambda path, sha, progress: self.import_file(
                path, known=sha, progress=progress),
            stop=stop)

    # ------------------------------------------------------------------ one file

    def import_file(self, path: Path, *, known: tuple[str, int] | None = None,
                    parts: int | None = None,
                    progress: ProgressCallback | None = None) -> FileResult:
        """Import one file. `known` is its (sha256, size) when the caller already hashed it
        (sync remembers hashes); the bytes are hashed again on their way into COPY anyway.
        `parts`: connections this file may be loaded over; `progress`: its progress bar."""
        started = time.monotonic()
        result = FileResult(path=path, result="failed", file_name=path.name)
        ctx = LoadContext(self.conn, self.schema, self.table, self.options, self.cancel,
                          progress or self.progress)
        took: list[float] = []  # what the ledger record says the import took
        try:
            self._import(ctx, path, result, known, max(1, parts or self.parts), took)
        except Exception as exc:
            if not fail(result, exc, self.conn, self.cancel):
                raise
        finally:
            # An import's time is its record's (claim to commit), the TOOK that `list` shows:
            # one measurement, wherever it is read.
            result.seconds = took[0] if result.result == "imported" and took \
                else time.monotonic() - started
        return result

    def _import(self, ctx: LoadContext, path: Path, result: FileResult,
                known: tuple[str, int] | None, parts: int, took: list[float]) -> None:
        """The per-file flow: hash, lock, decide, claim, load, record."""
        hashed = self._hash(ctx, path, result, known, parts)
        self.prepare()
        if not self._lock(ctx, path, result):
            return
        try:
            self._reap(ctx, path)
            existing = self._decide(ctx, path, result)
            if result.result == "skipped":
                return
            ctx, header, detected = self._read_header(ctx, path, result)
            if ctx.options.dry_run:
                validated(result, dry_run(ctx, path, header, result.sha256 or ""), detected)
                return
            claim = Claim(self._claim(path, result), existing, result.snapshot_date,
                          result.same_content_as)
            result.import_id = claim.import_id
            loaded, seconds = self._load_or_record(ctx, path, header, result.sha256 or "",
                                                   claim, hashed, parts)
            took.append(seconds)
            imported(result, loaded, schema=self.schema, detected=detected,
                     replaced=existing.id if existing is not None else None)
        finally:
            if not self.conn.closed and not self.conn.broken:
                store.name_unlock(self.conn, self.schema, self.table, path.name)

    def _hash(self, ctx: LoadContext, path: Path, result: FileResult,
              known: tuple[str, int] | None, parts: int) -> Hashed | None:
        """The file's sha256 and size (and, hashed here, the cut points of its parts)."""
        opts = ctx.options
        if not path.is_file():
            raise InputError("not a readable file", file=path)
        result.snapshot_date = snapshot_date(path.name)
        if result.snapshot_date is None:
            result.warnings.append(
                f"{path.name}: no YYYYMMDD date in the name; snapshot_date stays empty")
        if known:
            result.sha256, result.bytes = known
            return None
        try:
            hashed = self.prehashed.take(path) if self.prehashed else None
            hashed = hashed or hash_file(
                path, opts.csv, lambda size: worth_parts(opts, path, size, parts))
        except OSError as exc:
            raise InputError(f"cannot read the file: {exc.strerror or exc}",
                             file=path) from None
        result.sha256, result.bytes = hashed.sha256, hashed.size
        return hashed

    def _lock(self, ctx: LoadContext, path: Path, result: FileResult) -> bool:
        """The snapshot's name lock (busy when another process holds it and we don't wait);
        held, a claim of that name whose owner is gone is marked interrupted."""
        if not store.name_lock(self.conn, self.schema, self.table, path.name,
                               wait=ctx.options.wait_for_busy and not ctx.options.dry_run):
            result.result = "busy"
            result.detail = "another process is importing it"
            return False
        return True

    def _reap(self, ctx: LoadContext, path: Path) -> None:
        if ctx.options.dry_run:
            return
        for import_id in store.reap_name(self.conn, self.schema, self.table, path.name):
            log.warning("marked import #%s as interrupted: its process went away", import_id)

    def _decide(self, ctx: LoadContext, path: Path, result: FileResult) -> store.Record | None:
        """Skip (same bytes imported under this name), conflict, or go on; gives the import
        --replace supersedes, if any."""
        has_ledger = ddl.ledger_version(self.conn, self.schema)
        existing = (store.imported_record(self.conn, self.schema, self.table, path.name)
                    if has_ledger else None)
        existing = judge(result, path, existing, replace=ctx.options.replace)
        if result.result == "skipped":
            return existing
        if has_ledger:
            result.same_content_as = store.same_content(self.conn, self.schema, self.table,
                                                        result.sha256 or "", path.name)
        return existing

    def _read_header(self, ctx: LoadContext, path: Path,
                     result: FileResult) -> tuple[LoadContext, Header, str]:
        """The file's dialect (a detected delimiter is this file's own) and header; a bad
        header is a failed attempt too (`list` shows it)."""
        try:
            return file_header(ctx, path)
        except InputError as exc:
            if not ctx.options.dry_run:
                result.import_id = self._claim(path, result)
                record_failure(self._conns, self.schema, result.import_id, exc, self.cancel)
            raise

    def _claim(self, path: Path, result: FileResult) -> int:
        assert result.sha256 is not None
        return store.claim(
            self.conn, self.schema, table=self.table, file_name=path.name,
            path=str(path.resolve()), snapshot_date=result.snapshot_date,  # type: ignore[arg-type]
            sha256=result.sha256, size_bytes=result.bytes,
            imported_by=store.provenance(self.options.origin, self._role or None))

    def _load_or_record(self, ctx: LoadContext, path: Path, header: Header, sha: str,
                        claim: Claim, hashed: Hashed | None,
                        parts: int) -> tuple[Loaded, float]:
        """The load; when it fails, the failure is recorded on the claim."""
        try:
            return self._load(ctx, path, header, sha, claim, hashed, parts)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            error = InputError(f"cannot read the compressed file: {exc}; nothing written",
                               file=path)
            record_failure(self._conns, self.schema, claim.import_id, error, self.cancel)
            raise error from None
        except BaseException as exc:
            record_failure(self._conns, self.schema, claim.import_id, exc, self.cancel)
            raise

    def _load(self, ctx: LoadContext, path: Path, header: Header, sha: str, claim: Claim,
              hashed: Hashed | None, parts: int) -> tuple[Loaded, float]:
        """The one transaction: rows and the `imported` record become visible together
        (a parallel load's parts commit out of sight first, then attach in one)."""
        ranges = parallel_ranges(ctx, path, header, hashed, parts)
        if ranges is not None:
            return load_parallel(ctx, self._conns, path, header, claim, hashed, ranges)
        with self.conn.transaction():  # this is where a file's transaction starts
            target = begin(ctx, path, header, claim)
            job = LoadJob(path, header, target, sha, claim.import_id)
            loaded = choose_load(ctx.options, target)(ctx, job)
            return loaded, finish(ctx, claim, loaded)

