"""Runs of small files, several to a transaction.

A directory of hourly snapshots would otherwise cost a round of ledger statements and two
commits per file, far more than its rows. A batch takes its files' name locks, reaps,
looks them up and claims them with one statement each (`snapshots.ledger_many`), then loads
them one after another in one transaction, each file inside its own savepoint from its
`set_config` (whose rows these are) to its record flipped to `imported`.

Each file is still one atomic step with its record: its rows and its `imported` record
commit together or not at all. A bad file fails alone: its savepoint rolls back, the files
before it commit, its failure is recorded outside the transaction as the one-file path
records it, and the batch goes on in a new transaction. What a batch does not cover (a
name another process holds, an earlier import --replace supersedes, a bad header, a table
not there yet or one that merges) goes through the one-file path at its turn, so results
come out in the files' order. A kill leaves claims whose owner is gone: the next run marks
them interrupted; a cancel rolls the open transaction back and removes its claims.
"""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg

from snapshots import ledger_many
from snapshots import schema as ddl
from snapshots.csvio.hashing import Hashed
from snapshots.csvio.header import Header
from snapshots.engine.append import load_append
from snapshots.engine.connections import Connections
from snapshots.engine.context import LoadContext, LoadJob, ProgressCallback
from snapshots.engine.decide import judge
from snapshots.engine.failure import fail, record_failure
from snapshots.engine.header import file_header
from snapshots.engine.result import FileResult, imported
from snapshots.engine.savepoints import BatchTransaction
from snapshots.engine.target import Target, resolve_target
from snapshots.errors import InputError, InterruptedImport, SnapshotsError
from snapshots.options import ImportOptions, worth_parts

log = logging.getLogger("snapshots.importer")  # the engine's one logger name, as logs show it

SMALL_FILE_BYTES = 1 << 20  # files up to this size share transactions
BATCH_FILES = 64  # files (and name locks held) per batch
BATCH_BYTES = 16 << 20
# A transaction open this long commits after the file in flight: what a Ctrl-C or a kill
# takes back, and how long a loaded file waits to become visible.
BATCH_SECONDS = 0.5

ProgressFor = Callable[[Path], ProgressCallback | None]


@dataclass(frozen=True)
class BatchEnv:
    """What a batch needs of its importer."""

    conns: Connections
    schema: str
    table: str
    options: ImportOptions
    cancel: threading.Event
    imported_by: dict[str, Any]
    hash: Callable[[LoadContext, Path, FileResult], Hashed | None]
    one_file: Callable[[Path, tuple[str, int] | None, ProgressCallback | None], FileResult]
    stop: threading.Event | None = None  # set: take no further file (sync is stopping)

    def stopping(self) -> bool:
        return self.cancel.is_set() or (self.stop is not None and self.stop.is_set())

    @property
    def conn(self) -> psycopg.Connection:
        return self.conns.main


def batchable(options: ImportOptions) -> bool:
    """Append loads that fail a file on its first bad row: what a savepoint holds whole.
    (Upserts merge one file at a time under a lock; --on-error skip stages its rows.)"""
    return not options.dry_run and options.mode != "upsert" and options.on_error == "abort"


def small_run(paths: Sequence[Path], options: ImportOptions, parts: int) -> int:
    """How many of the first `paths` make one batch: small files of distinct names."""
    names: set[str] = set()
    total = 0
    for count, path in enumerate(paths[:BATCH_FILES]):
        try:
            size = path.stat().st_size
        except OSError:
            return count
        total += size
        if size > SMALL_FILE_BYTES or total > BATCH_BYTES or path.name in names or \
                worth_parts(options, path, size, parts) > 1:
            return count
        names.add(path.name)
    return min(len(paths), BATCH_FILES)


@dataclass
class _File:
    path: Path
    result: FileResult
    ctx: LoadContext
    route: str = "batch"  # batch | one (the one-file path) | done (decided, nothing to load)
    header: Header | None = None
    detected: str = ""
    target: Target | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def known(self) -> tuple[str, int] | None:
        sha = self.result.sha256
        return (sha, self.result.bytes) if sha is not None else None


def import_batch(env: BatchEnv, paths: Sequence[Path],
                 progress: ProgressFor | None = None) -> Iterator[FileResult]:
    """Import `paths` (a `small_run`), yielding each result in their order."""
    files = [_plan(env, path) for path in paths]
    locked = _lock(env, files)
    try:
        _decide(env, files)
        _claim(env, files)
        yield from _load(env, files, progress)
    finally:
        if locked and not env.conn.closed and not env.conn.broken:
            ledger_many.name_unlocks(env.conn, env.schema, env.table, locked)


def _plan(env: BatchEnv, path: Path) -> _File:
    result = FileResult(path=path, result="failed", file_name=path.name)
    file = _File(path, result, LoadContext(env.conn, env.schema, env.table, env.options,
                                           env.cancel))
    try:
        env.hash(file.ctx, path, result)
    except SnapshotsError:
        file.route = "one"  # it fails there, as it would alone
    return file


def _lock(env: BatchEnv, files: list[_File]) -> list[str]:
    names = [f.path.name for f in files if f.route == "batch"]
    locked = ledger_many.try_name_locks(env.conn, env.schema, env.table, names) \
        if names else set()
    for f in files:
        if f.route == "batch" and f.path.name not in locked:
            f.route = "one"  # another process holds it: wait for it, or say busy, there
    if locked:
        for import_id in ledger_many.reap_names(env.conn, env.schema, env.table, list(locked)):
            log.warning("marked import #%s as interrupted: its process went away", import_id)
    return sorted(locked)


def _decide(env: BatchEnv, files: list[_File]) -> None:
    """Skip, conflict, or load; then each file's dialect, header and target."""
    batch = [f for f in files if f.route == "batch"]
    if not batch:
        return
    records = ledger_many.imported_records(env.conn, env.schema, env.table,
                                           [f.path.name for f in batch])
    info = ddl.describe_table(env.conn, env.schema, env.table)
    for f in batch:
        try:
            existing = judge(f.result, f.path, records.get(f.path.name),
                             replace=env.options.replace)
        except SnapshotsError as exc:  # a conflict
            fail(f.result, exc, env.conn, env.cancel)
            existing = None
            f.route = "done"
        if f.route == "done" or f.result.result == "skipped":
            f.route = "done"
            f.result.seconds = time.monotonic() - f.started
        elif existing is not None:
            f.route = "one"  # --replace: the earlier import's rows go in the same step
        else:
            try:
                f.ctx, f.header, f.detected = file_header(f.ctx, f.path)
                f.target = resolve_target(env.schema, env.table, info, env.options.mode,
                                          f.header.names)
            except SnapshotsError:
                f.route = "one"  # its failed claim and error come from there
                continue
            if f.target.mode != "append" or f.target.info is None or \
                    not f.target.info.has_snapshot_id:
                f.route = "one"  # the first load creates the table; merges go alone
    loading = [f for f in batch if f.route == "batch"]
    if loading:
        same = ledger_many.same_contents(env.conn, env.schema, env.table,
                                         [(f.path.name, f.result.sha256 or "") for f in loading])
        for f in loading:
            f.result.same_content_as = same.get(f.path.name)


def _claim(env: BatchEnv, files: list[_File]) -> None:
    loading = [f for f in files if f.route == "batch"]
    if not loading:
        return
    directories: dict[Path, str] = {}
    ids = ledger_many.claims(env.conn, env.schema, env.table, [
        (f.path.name, _resolved(f.path, directories), f.result.snapshot_date,  # type: ignore[misc]
         f.result.sha256 or "", f.result.bytes) for f in loading], env.imported_by)
    for f, import_id in zip(loading, ids, strict=True):
        f.result.import_id = import_id


def _resolved(path: Path, directories: dict[Path, str]) -> str:
    """str(path.resolve()), as the one-file path records it, resolving a batch's directory
    once rather than every file's (the file itself only when it is a link)."""
    if path.is_symlink():
        return str(path.resolve())
    if path.parent not in directories:
        directories[path.parent] = str(path.parent.resolve())
    return os.path.join(directories[path.parent], path.name)


def _load(env: BatchEnv, files: list[_File],
          progress: ProgressFor | None) -> Iterator[FileResult]:
    """The files in order: the batch's in shared transactions, the others alone."""
    tx = BatchTransaction(env.conn, env.schema)
    done: list[FileResult] = []  # results waiting for their transaction's commit
    uncommitted: list[_File] = []
    for index, f in enumerate(files):
        if f.route == "done":
            done.append(f.result)
            continue
        if f.route == "one" or env.stopping():
            tx.commit()
            yield from done
            done, uncommitted = [], []
            if env.stopping():
                # What loaded is committed; the rest is not taken: their claims go (nothing
                # of them was written) and the next run loads them.
                rest = [g for g in files[index:] if g.route == "batch"]
                _abandon(env, rest, None)
                yield from (g.result for g in rest)
                return
            yield env.one_file(f.path, f.known, progress(f.path) if progress else None)
            continue
        try:
            _load_one(env, tx, f, progress)
        except BaseException as exc:
            if not isinstance(exc, Exception) or _lost(env, exc):
                # The open transaction is gone (or going): nothing of it stays.
                tx.abort()
                rest = files[index:]
                _abandon(env, [*uncommitted, *(g for g in rest if g.route == "batch")], exc)
                yield from done  # the uncommitted files' results say so now
                if not isinstance(exc, Exception):
                    raise
                for g in rest:
                    yield env.one_file(g.path, g.known, None) if g.route == "one" \
                        else g.result
                return
            # This file's savepoint is rolled back; what loaded before it commits.
            tx.commit()
            uncommitted = []
            error = _input_error(exc, f.path)
            record_failure(env.conns, env.schema, f.result.import_id or 0, error, env.cancel)
            if not fail(f.result, error, env.conn, env.cancel):
                raise
            f.result.seconds = time.monotonic() - f.started
            done.append(f.result)
            continue
        done.append(f.result)
        uncommitted.append(f)
        if tx.age() >= BATCH_SECONDS:
            tx.commit()
            yield from done
            done, uncommitted = [], []
    tx.commit()
    yield from done


def _load_one(env: BatchEnv, tx: BatchTransaction, f: _File, progress: ProgressFor | None) -> None:
    """One file in its savepoint: the rows, then (sent with what comes next) its record
    says `imported`."""
    assert f.header is not None and f.target is not None and f.result.import_id is not None
    ctx = replace(f.ctx, progress=progress(f.path) if progress else None)
    tx.begin_file(f.result.import_id)
    try:
        loaded = load_append(ctx, LoadJob(f.path, f.header, f.target, f.result.sha256 or "",
                                          f.result.import_id))
    except BaseException:
        tx.rollback_file()
        raise
    def recorded(seconds: float) -> None:
        f.result.seconds = seconds
        imported(f.result, loaded, schema=env.schema, detected=f.detected, replaced=None)

    tx.file_loaded(f.result.import_id, loaded, f.result.same_content_as, recorded)


def _lost(env: BatchEnv, exc: BaseException) -> bool:
    """Whether the error took the open transaction with it: a cancel, a lost connection."""
    conn = env.conn
    return env.cancel.is_set() or conn.broken or conn.closed or \
        conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR


def _abandon(env: BatchEnv, files: Sequence[_File], exc: BaseException | None) -> None:
    """Files whose claims will not be loaded now: a cancel removes the claims (nothing was
    written), another error marks them failed, each file's result says why."""
    for f in files:
        error = exc if exc is not None and not env.cancel.is_set() else \
            InterruptedImport(f"{f.path}: cancelled; nothing written")
        if f.result.import_id is not None:
            record_failure(env.conns, env.schema, f.result.import_id, error, env.cancel)
        if isinstance(error, Exception) and not fail(f.result, error, env.conn, env.cancel):
            fail(f.result, SnapshotsError(f"{f.path}: {error}"), env.conn, env.cancel)
        f.result.rows = f.result.rejected = 0
        f.result.detail = ""
        f.result.seconds = time.monotonic() - f.started


def _input_error(exc: BaseException, path: Path) -> BaseException:
    """A compressed file that ends early or is not gzip, as the one-file path says it."""
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return InputError(f"cannot read the compressed file: {exc}; nothing written", file=path)
    return exc
