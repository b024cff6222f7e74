"""A batch's plan (snapshots.engine.batch): which small files go together, and, before any
of them loads, their hashes, name locks, the reaper, the skip/conflict decision, dialects
and headers, and their claims, each step one statement for the whole batch
(snapshots.ledger_many). A file the batch does not cover is routed to the one-file path."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from snapshots import ledger_many
from snapshots import schema as ddl
from snapshots.csvio.hashing import Hashed, read_hashed
from snapshots.csvio.header import Header
from snapshots.csvio.names import is_gzip
from snapshots.engine.connections import Connections
from snapshots.engine.context import LoadContext, ProgressCallback
from snapshots.engine.decide import judge
from snapshots.engine.failure import fail, record_failure
from snapshots.engine.header import file_header
from snapshots.engine.result import FileResult
from snapshots.engine.target import Target, resolve_target
from snapshots.errors import SnapshotsError
from snapshots.options import SMALL_FILE_BYTES, ImportOptions, worth_parts

log = logging.getLogger("snapshots.importer")  # the engine's one logger name, as logs show it

BATCH_FILES = 64  # files (and name locks held) per batch
BATCH_BYTES = 16 << 20

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
    # The file's hash and size into its result; given them when they were read here (the
    # caller's, when it hashed the file already, come first).
    hash: Callable[[LoadContext, Path, FileResult, tuple[str, int] | None], Hashed | None]
    one_file: Callable[[Path, tuple[str, int] | None, ProgressCallback | None], FileResult]
    stop: threading.Event | None = None  # set: take no further file (sync is stopping)

    def stopping(self) -> bool:
        return self.cancel.is_set() or (self.stop is not None and self.stop.is_set())

    @property
    def conn(self) -> psycopg.Connection:
        return self.conns.main


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
class BatchFile:
    path: Path
    result: FileResult
    ctx: LoadContext
    # batch | shared (loaded in the run's one COPY) | one (the one-file path) | done (decided,
    # nothing to load)
    route: str = "batch"
    header: Header | None = None
    detected: str = ""
    target: Target | None = None
    started: float = field(default_factory=time.monotonic)
    data: bytes | None = None  # the bytes hashed, when read whole (csvio.hashing.read_hashed)

    @property
    def known(self) -> tuple[str, int] | None:
        sha = self.result.sha256
        return (sha, self.result.bytes) if sha is not None else None


def unplanned(env: BatchEnv, files: list[BatchFile], exc: psycopg.Error) -> Iterator[FileResult]:
    """Every file's result when the batch could not be planned: no file goes missing."""
    for f in files:
        if f.route != "done":
            if f.result.import_id is not None:
                record_failure(env.conns, env.schema, f.result.import_id, exc, env.cancel)
            fail(f.result, exc, env.conn, env.cancel)
            f.result.seconds = time.monotonic() - f.started
        yield f.result


def plan_file(env: BatchEnv, path: Path) -> BatchFile:
    result = FileResult(path=path, result="failed", file_name=path.name)
    file = BatchFile(path, result, LoadContext(env.conn, env.schema, env.table, env.options,
                                           env.cancel))
    read = None
    if not is_gzip(path):
        with contextlib.suppress(OSError):  # the hash says what is wrong
            read = read_hashed(path, SMALL_FILE_BYTES)
    try:
        env.hash(file.ctx, path, result, (read[1], len(read[0])) if read else None)
    except SnapshotsError:
        file.route = "one"  # it fails there, as it would alone
        return file
    if read is not None and read[1] == result.sha256:  # not so: it changed since sync hashed it
        file.data = read[0]
    return file


def lock_names(env: BatchEnv, files: list[BatchFile]) -> list[str]:
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


def decide_files(env: BatchEnv, files: list[BatchFile]) -> None:
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
                f.ctx, f.header, f.detected = file_header(f.ctx, f.path, f.data)
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


def claim_files(env: BatchEnv, files: list[BatchFile]) -> None:
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


