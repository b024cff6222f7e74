"""`snapshots sync`: keep a directory and the database in sync, for months.

The directory listing is the truth. Filesystem events (watchfiles) only wake the loop early;
a rescan every --rescan seconds catches what events miss. A file is taken when complete (size
and mtime unchanged for --settle seconds), hashed once (the hash is remembered in the
database), and imported exactly once by the import engine, whose name lock and ledger make
several sync processes safe on one directory.

This module is the loop that ties the stages, each a module of its own: `scan` (the
directory's listing and events), `backlog` (pure: what is settled, ready, done, in which
order), `dblink` (sync's own connection, and what it reads from the ledger), `workers` (the
importer pool and connection budget), `summary` (each outcome counted and logged once) and
`chores` (what runs now and then: failures looked at again, gauges, retention).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from snapshots.backlog import HELD_RETRY_SECONDS, Backlog, Clock, Verdict
from snapshots.chores import Chores
from snapshots.config import first_line
from snapshots.control import STALL_SECONDS, Control
from snapshots.dblink import (
    BACKOFF_CAP,
    BACKOFF_START,
    LOST,
    PING_SECONDS,
    DatabaseLink,
    LedgerView,
)
from snapshots.engine.batch_plan import BATCH_FILES
from snapshots.engine.result import FileResult
from snapshots.errors import InputError, UsageError
from snapshots.filesig import FileSignature
from snapshots.importer import Importer
from snapshots.metrics import Metrics
from snapshots.options import SMALL_FILE_BYTES, ImportOptions, batchable
from snapshots.output import plural
from snapshots.scan import DEFAULT_PATTERNS, IGNORED, list_files, start_watcher
from snapshots.summary import (
    SUMMARY_LIMIT,
    Summary,
    report_cancelled,
    report_outcome,
    report_still_failed,
)
from snapshots.workers import ImporterPool, returned, share

# What other code imports from here, wherever it now lives.
__all__ = ["BACKOFF_CAP", "BACKOFF_START", "DEFAULT_PATTERNS", "HELD_RETRY_SECONDS", "IGNORED",
           "PING_SECONDS", "STALL_SECONDS", "SUMMARY_LIMIT", "TERMINATION_LOG", "Summary",
           "SyncOptions", "SyncService", "write_summary"]

log = logging.getLogger(__name__)

TERMINATION_LOG = Path("/dev/termination-log")


@dataclass(frozen=True)
class SyncOptions:
    data_dir: Path
    table: str
    schema: str | None = None
    once: bool = False
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    recursive: bool = False
    settle: float = 2.0
    poll: bool = False
    rescan: float = 30.0
    jobs: int = 1
    grace: float = 10.0
    retention_days: int | None = None
    import_options: ImportOptions = field(default_factory=lambda: ImportOptions(
        origin="sync", wait_for_busy=False))

    def __post_init__(self) -> None:
        if not self.data_dir.is_dir():
            raise UsageError(f"--data-dir {self.data_dir}: not a directory")
        if self.settle < 0 or self.rescan <= 0 or self.grace < 0 or self.jobs < 1:
            raise UsageError("--settle and --grace must be >= 0, --rescan > 0, --jobs >= 1")


class SyncService:
    """One directory, one table. `run()` blocks until stopped (or, with --once, done)."""

    def __init__(self, conninfo: str, options: SyncOptions, metrics: Metrics | None = None,
                 clock: Clock = time) -> None:
        self.options = options
        self.metrics = metrics or Metrics()
        self.summary = Summary()
        self.control = Control()
        self.link = DatabaseLink(conninfo, table=options.table, schema=options.schema,
                                 metrics=self.metrics)
        self.pool = ImporterPool(self._new_importer, jobs=options.jobs,
                                 wake=self.control.wake.set)
        self.backlog = Backlog(options.settle, clock)
        self.chores = Chores(options.rescan, options.retention_days, self.metrics, clock)

    # ------------------------------------------------------------------ control

    def request_stop(self, signum: int | None = None) -> None:
        if self.control.ask_stop(signum, in_flight=len(self.pool), grace=self.options.grace):
            self.summary.interrupted = self.options.once
        else:  # a second signal: don't wait for the grace period
            self.pool.cancel_event.set()

    def alive(self) -> bool:
        return self.control.alive()

    def ready(self) -> bool:
        return self.link.up

    # ------------------------------------------------------------------ the loop

    def run(self) -> Summary:
        watcher = None if self.options.poll else start_watcher(
            self.options.data_dir, recursive=self.options.recursive, stop=self.control.stop,
            changed=self._changed)
        try:
            while not self.control.stop.is_set():
                self.control.beat()
                self._collect()
                if self.link.check():
                    self.summary.database_error = None
                    ledger = self.link.ledger
                    assert ledger is not None
                    try:
                        idle = self._pass(ledger)
                    except LOST as exc:
                        self._lost(exc)
                        idle = False
                    if self.options.once and idle:
                        self.chores.retention(ledger, force=True)  # after the backlog's pass
                        break
                else:
                    self._down()
                    if self.options.once and self.summary.database_error and not self.pool:
                        break
                self.control.sleep(next_wait(self.options, self.link, self.backlog,
                                             bool(self.pool)))
        finally:
            self._shutdown()
            self.summary.finished = time.monotonic()
            if self.control.request is not None:
                self.control.request.report(self.summary.finished)
            if watcher is not None:
                self.control.stop.set()  # a --once run ends without a signal: stop watching too
                watcher.join(timeout=2)
        return self.summary

    def _changed(self) -> None:
        self.backlog.invalidate()  # the directory changed: list it again
        self.control.wake.set()

    def _lost(self, exc: BaseException) -> None:
        """The loop or an importer found the database gone."""
        self.link.lost(exc)
        self._forget_connections()
        self.backlog.invalidate()  # files it took down with it are pending again

    def _forget_connections(self) -> None:
        self.pool.drop_idle()  # importers hold connections that are probably dead too
        if self.options.once:
            self.summary.database_error = self.link.error

    def _down(self) -> None:
        """While the database is down (`check` may have just found it gone): keep watching,
        and keep the gauges true."""
        self._forget_connections()
        self._relist()
        self.chores.gauges(self.backlog)

    # ------------------------------------------------------------------ one pass

    def _pass(self, ledger: LedgerView) -> bool:
        """List, settle, decide, dispatch. True when nothing is pending or in flight."""
        backlog, options = self.backlog, self.options
        self.chores.reopen(backlog)
        relist = backlog.due_for_listing(min(options.rescan, 1.0) if options.poll
                                         else options.rescan)
        if relist:
            self._relist()
        backlog.promote(None if relist else self._stat)
        if backlog.ready:
            exists, merges = ledger.shape(options.import_options.mode)
            # Upsert merges in snapshot order (time never runs backwards): one file at a time,
            # and none while an earlier one may still be merging in another process.
            # The first file (in date order) creates the table and decides its types: it
            # goes alone, then the rest load in parallel.
            limit = 1 if merges or not exists else options.jobs
            if limit == 1 and backlog.held_elsewhere:
                limit = 0
            # Small files into a table that is there go to a worker in runs that share
            # transactions (engine.batch), as `import DIR` loads them.
            batch: list[tuple[str, Path, tuple[str, int] | None]] | None = \
                [] if exists and not merges and batchable(options.import_options) else None
            while not self.control.stop.is_set():
                room = self.pool.loads() < limit and self.pool.free() > 0
                # No room: small files still make the next batch, to wait ahead of the one
                # loading (workers.ImporterPool), so hashing them overlaps its load.
                if not room and not (batch is not None and self.pool.ahead_room()):
                    break
                file = backlog.next_ready(None if room else SMALL_FILE_BYTES)
                if file is None:
                    break
                self._consider(ledger, *file, batch=batch)
                if not exists:
                    ledger.table_created()
                if batch is not None and len(batch) >= BATCH_FILES:
                    self.pool.submit_batch(batch, self.control.stop)
                    batch = []
            if batch:
                self.pool.submit_batch(batch, self.control.stop)
            ledger.save()  # the hashes read in this pass, one statement
        self.chores.gauges(backlog)
        self.chores.retention(ledger)
        return backlog.idle

    def _relist(self) -> None:
        self.backlog.relist(list_files(self.options.data_dir, self.options.patterns,
                                       recursive=self.options.recursive))
        if self.link.ledger is not None:
            self.link.ledger.refresh()  # states and shape are read again, once per listing
        self.chores.relisted()

    def _stat(self, rel: str) -> FileSignature | None:
        try:
            return FileSignature.of(os.stat(self.options.data_dir / rel))
        except OSError:
            return None

    def _consider(self, ledger: LedgerView, rel: str, seen: FileSignature, *,
                  batch: list[tuple[str, Path, tuple[str, int] | None]] | None = None) -> None:
        """Decide what to do with a settled file; dispatch it when it needs importing (a
        small one joins `batch`, when given, for the caller to dispatch)."""
        path = self.options.data_dir / rel
        state = ledger.state(path.name)
        try:
            # A name the ledger has never seen loads whatever its bytes: the import hashes
            # them (and its result tells the hash to remember), this loop reads nothing.
            sha = ledger.remembered(rel, seen) if state is None \
                else ledger.sha256(rel, seen, path)
        except OSError as exc:
            # Unreadable (permissions, say): a failure of this signature, looked at again
            # with the other failures, so a --once run ends and says so.
            self._settle(rel, seen, outcome(path, "failed", f"cannot read: {exc}"))
            return
        if sha is None and state is not None:
            self.backlog.invalidate()  # still changing; the next listing sees how
            return
        verdict = self.backlog.triage(rel, seen, sha, state,
                                      replace=self.options.import_options.replace)
        if verdict is Verdict.LOAD:
            self.backlog.dispatch(rel, seen)
            parts = share(self.options.import_options, path, seen.size,
                          free=self.pool.free(), waiting=len(self.backlog.ready))
            known = (sha, seen.size) if sha is not None else None
            if batch is not None and parts == 1 and seen.size <= SMALL_FILE_BYTES:
                batch.append((rel, path, known))
            else:
                self.pool.submit(rel, path, known, parts)
        elif verdict in (Verdict.SKIP, Verdict.FORGOTTEN, Verdict.CONFLICT):
            conflict = verdict is Verdict.CONFLICT
            self._settle(rel, seen, decided(verdict, path, sha), quiet=not conflict,
                         report="conflict" if conflict else None)
        else:  # QUIET, STILL_FAILED: said already, or said here once for the summary
            self.backlog.settle(rel, seen, failed=True)
            if verdict is Verdict.STILL_FAILED and state is not None:
                report_still_failed(self.summary, path.name, first_line(state.error or "failed"))

    def _new_importer(self, cancel: threading.Event) -> Importer:
        return Importer(self.link.conninfo, table=self.options.table, schema=self.link.schema,
                        options=self.options.import_options, cancel=cancel)

    def _collect(self) -> None:
        for rel, future in self.pool.finished():
            seen = self.backlog.returned(rel)
            kind, result, error = returned(future)
            # Not taken (sync stopped before its batch reached it) or cancelled at shutdown:
            # no outcome of the file (no metric, no failure, no record), the next run loads it.
            if kind == "lost" and error is not None:
                self._lost(error)  # the file stays pending
            elif kind == "bug":  # not the file: say so, and look again later
                self._settle(rel, seen, outcome(self.options.data_dir / rel, "failed",
                                                first_line(str(error))))
            elif kind == "cancelled" and result is not None:
                report_cancelled(result)
            elif kind == "busy" and result is not None:
                # Another process has it: move on, and look again in a while (a later pass
                # sees its outcome). A --once run does not wait for it at all.
                if self.options.once:
                    result.result = "skipped"
                    self._settle(rel, seen, result)
                else:
                    self.backlog.hold(rel, seen)
            elif kind == "done" and result is not None:
                refused = result.result == "failed" and result.import_id is None and \
                    isinstance(result.error, InputError)
                self._settle(rel, seen, result, report="refused" if refused else None)

    def _settle(self, rel: str, seen: FileSignature, result: FileResult, *,
                quiet: bool = False, report: str | None = None) -> None:
        """A final outcome for these bytes: count it, log it, don't look at it again."""
        if result.sha256 is not None and result.bytes == seen.size and \
                self.link.ledger is not None:
            self.link.ledger.learn(rel, seen, result.sha256)  # hashed by the import
        self.backlog.settle(rel, seen, failed=result.result in ("failed", "conflict"),
                            report=report)
        report_outcome(result, self.metrics, self.summary, quiet=quiet)

    # ------------------------------------------------------------------ stopping

    def _shutdown(self) -> None:
        """Let files in flight finish within --grace; then cancel and roll them back."""
        deadline = time.monotonic() + self.options.grace
        while self.pool and time.monotonic() < deadline:
            self._collect()
            if self.pool:
                self.control.sleep(0.05)
        if self.pool:
            log.warning("grace period over: cancelling %s in flight",
                        plural(len(self.pool), "file"))
            cancelled = self.pool.cancel()
            if self.control.request is not None:
                self.control.request.cancelled = cancelled
            self.summary.interrupted = True
            self._collect()
        self.pool.close()
        if self.link.ledger is not None:
            with contextlib.suppress(*LOST):  # a cache: the next run reads those files again
                self.link.ledger.save()
        self.link.close()


def outcome(path: Path, result: str, detail: str, sha256: str | None = None) -> FileResult:
    """An outcome sync reaches itself, without an importer."""
    return FileResult(path=path, result=result, file_name=path.name, sha256=sha256,
                      detail=detail)


def decided(verdict: Verdict, path: Path, sha256: str | None) -> FileResult:
    """The outcome of a file sync skips (imported, or forgotten) or finds in conflict."""
    if verdict is Verdict.CONFLICT:
        return outcome(path, "conflict", f"{path.name} was imported with different content; "
                       "nothing written (snapshots import --replace supersedes it)", sha256)
    return outcome(path, "skipped", "already imported" if verdict is Verdict.SKIP
                   else "forgotten", sha256)


def next_wait(options: SyncOptions, link: DatabaseLink, backlog: Backlog, busy: bool) -> float:
    """How long the loop may sleep before something is due (events wake it sooner)."""
    waits = [options.rescan, max(0.05, link.next_check() - time.monotonic())]
    if options.poll:
        waits.append(1.0)  # no events: list the directory every second
    if backlog.deadline is not None:  # on the backlog's clock (a test's, maybe)
        waits.append(max(0.05, backlog.deadline - backlog.clock.monotonic()))
    if busy:
        waits.append(0.2)  # collect results promptly
    return max(0.02, min(waits))


def write_summary(summary: Summary, table: str, target: Path | None) -> Path | None:
    """Write the --once summary; default /dev/termination-log when it exists."""
    path = target if target is not None else (TERMINATION_LOG if TERMINATION_LOG.exists()
                                              else None)
    if path is None:
        return None
    try:
        path.write_text(summary.as_json(table) + "\n", encoding="utf-8")
    except OSError as exc:
        log.warning("could not write the summary to %s: %s", path, exc)
        return None
    return path
