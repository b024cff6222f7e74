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

import contextlib
import gzip
import logging
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import psycopg

from snapshots import ledger_many
from snapshots.engine import shared_copy
from snapshots.engine.append import load_append
from snapshots.engine.batch_plan import (
    BatchEnv,
    BatchFile,
    ProgressFor,
    claim_files,
    decide_files,
    lock_names,
    plan_file,
    unplanned,
)
from snapshots.engine.context import Loaded, LoadJob
from snapshots.engine.failure import fail, record_failure
from snapshots.engine.result import FileResult, imported
from snapshots.engine.savepoints import BatchTransaction
from snapshots.errors import InputError, InterruptedImport, SnapshotsError

log = logging.getLogger("snapshots.importer")  # the engine's one logger name, as logs show it

# A transaction open this long commits after the file in flight: what a Ctrl-C or a kill
# takes back, and how long a loaded file waits to become visible.
BATCH_SECONDS = 0.5



def import_batch(env: BatchEnv, paths: Sequence[Path],
                 progress: ProgressFor | None = None) -> Iterator[FileResult]:
    """Import `paths` (a `small_run`), yielding each result in their order."""
    files = [plan_file(env, path) for path in paths]
    locked: list[str] = []
    try:
        try:
            locked = lock_names(env, files)
            decide_files(env, files)
            claim_files(env, files)
        except psycopg.Error as exc:  # the server went away, or a cancel, before any load
            yield from unplanned(env, files, exc)
            return
        yield from _load(env, files, progress)
    finally:
        if locked and not env.conn.closed and not env.conn.broken:
            with contextlib.suppress(psycopg.Error):
                ledger_many.name_unlocks(env.conn, env.schema, env.table, locked)


def _load(env: BatchEnv, files: list[BatchFile],
          progress: ProgressFor | None) -> Iterator[FileResult]:
    """The files in order: the batch's in shared transactions, the others alone."""
    tx = BatchTransaction(env.conn, env.schema)
    done: list[FileResult] = []  # results waiting for their transaction's commit
    uncommitted: list[BatchFile] = []
    for index, f in enumerate(files):
        if f.route == "done":
            done.append(f.result)
            continue
        if f.route == "batch" and not env.stopping():
            try:
                _load_shared(env, tx, files[index:])
            except BaseException:  # Ctrl-C: nothing of the batch stays, its claims go
                tx.abort()
                _abandon(env, [g for g in files if g.route in ("batch", "shared")], None)
                raise
        if f.route == "shared":  # loaded already, with the files around it
            done.append(f.result)
            uncommitted.append(f)
            continue
        if f.route == "one" or env.stopping():
            if (lost := _commit(tx)) is not None:
                yield from _give_up(env, tx, done, uncommitted, files[index:], lost)
                return
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
                yield from _give_up(env, tx, done, uncommitted, files[index:], exc)
                if not isinstance(exc, Exception):
                    raise
                return
            # This file's savepoint is rolled back; what loaded before it commits.
            if (lost := _commit(tx)) is not None:
                yield from _give_up(env, tx, done, uncommitted, files[index:], lost)
                return
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
            if (lost := _commit(tx)) is not None:
                yield from _give_up(env, tx, done, uncommitted, files[index + 1:], lost)
                return
            yield from done
            done, uncommitted = [], []
    if (lost := _commit(tx)) is not None:
        yield from _give_up(env, tx, done, uncommitted, [], lost)
        return
    yield from done


def _commit(tx: BatchTransaction) -> psycopg.Error | None:
    """Commit; the error, when the COMMIT (or what goes with it) fails: then nothing of the
    transaction stays."""
    try:
        tx.commit()
    except psycopg.Error as exc:
        return exc
    return None


def _give_up(env: BatchEnv, tx: BatchTransaction, done: list[FileResult],
             uncommitted: list[BatchFile], rest: Sequence[BatchFile],
             exc: BaseException) -> Iterator[FileResult]:
    """The open transaction is lost (a cancel, the connection, a failed COMMIT): nothing of
    it stays, and every file not yet reported says why, in order."""
    tx.abort()
    _abandon(env, [*uncommitted, *(g for g in rest if g.route in ("batch", "shared"))], exc)
    yield from done  # the uncommitted files' results say so now
    for g in rest:
        if g.route == "one":
            if not env.stopping() and isinstance(exc, Exception):
                yield env.one_file(g.path, g.known, None)
        else:
            yield g.result


def _load_shared(env: BatchEnv, tx: BatchTransaction, files: list[BatchFile]) -> None:
    """The run of plain files that `files` starts with in one COPY (engine.shared_copy), in
    a savepoint of its own; when anything about it is wrong, nothing of it stays and its
    files load one by one."""
    run: list[tuple[BatchFile, shared_copy.Plain]] = []
    for f in files:
        if f.route == "done":
            continue
        if f.route != "batch" or env.stopping():
            break
        assert f.header is not None and f.target is not None and f.result.import_id is not None
        try:
            plain = shared_copy.prepare(f.ctx, f.path, f.header, f.target,
                                        f.result.sha256 or "", f.result.import_id, f.data)
        except Exception:
            plain = None  # the one-file path meets it again and says it
        if plain is None or (run and shared_copy.key(f.ctx, plain) !=
                             shared_copy.key(run[0][0].ctx, run[0][1])):
            break
        run.append((f, plain))
    if len(run) < 2:
        return
    tx.begin_file(run[0][0].result.import_id or 0)
    try:
        ok = shared_copy.copy_together(run[0][0].ctx, [plain for _f, plain in run])
    except Exception:  # whatever it was, the one-file path meets it again and says it
        ok = False
    if not ok:
        tx.rollback_file()
        return
    for f, plain in run:
        f.route = "shared"
        _loaded(env, tx, f, Loaded(plain.rows, 0, ""))


def _loaded(env: BatchEnv, tx: BatchTransaction, f: BatchFile, loaded: Loaded) -> None:
    """The file's rows are in: its record says so with the transaction's commit."""
    def recorded(seconds: float) -> None:
        f.result.seconds = seconds
        imported(f.result, loaded, schema=env.schema, detected=f.detected, replaced=None)

    assert f.result.import_id is not None
    tx.file_loaded(f.result.import_id, loaded, f.result.same_content_as, recorded)


def _load_one(env: BatchEnv, tx: BatchTransaction, f: BatchFile,
              progress: ProgressFor | None) -> None:
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
    _loaded(env, tx, f, loaded)


def _lost(env: BatchEnv, exc: BaseException) -> bool:
    """Whether the error took the open transaction with it: a cancel, a lost connection."""
    conn = env.conn
    return env.cancel.is_set() or conn.broken or conn.closed or \
        conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR


def _abandon(env: BatchEnv, files: Sequence[BatchFile], exc: BaseException | None) -> None:
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
