"""`snapshots sync`: keep a directory and the database in sync, for months.

The directory listing is the truth. Filesystem events (watchfiles) only wake the loop early;
a rescan every --rescan seconds catches what events miss. A file is taken when complete (size
and mtime unchanged for --settle seconds), hashed once (the hash is remembered in the
database), and imported exactly once by the import engine, whose name lock and ledger make
several sync processes safe on one directory.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from snapshots import __version__, store
from snapshots import schema as ddl
from snapshots.config import connect, first_line
from snapshots.csvfile import sha256_file, snapshot_date
from snapshots.engine.decide import Decision, decide
from snapshots.engine.target import merges
from snapshots.errors import (
    DatabaseUnavailable,
    InputError,
    InterruptedImport,
    SnapshotsError,
    UsageError,
)
from snapshots.filesig import FileSignature
from snapshots.importer import FileResult, Importer
from snapshots.metrics import Metrics
from snapshots.options import ImportOptions, worth_parts
from snapshots.output import plural

log = logging.getLogger(__name__)

DEFAULT_PATTERNS = ("*.csv", "*.csv.gz")
IGNORED = ("*.tmp", "*.part", "*~")
SUMMARY_LIMIT = 4096  # bytes: Kubernetes keeps at most 4 KB of a termination message
TERMINATION_LOG = Path("/dev/termination-log")
BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
STALL_SECONDS = 60.0  # /healthz fails when the loop has not turned for this long
PING_SECONDS = 5.0  # an idle service still checks the database this often (/readyz)
HELD_RETRY_SECONDS = 1.0  # a file another process holds is looked at again after this


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


@dataclass
class Summary:
    imported: int = 0
    skipped: int = 0
    failed: int = 0
    conflict: int = 0
    rows: int = 0
    rejected_rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None  # set when the run ends: every rendering says the same
    failures: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False
    database_error: str | None = None
    # Files that failed in an earlier run with the same bytes: not retried, but a --once run
    # must not look green while they sit there.
    still_failed: dict[str, str] = field(default_factory=dict)  # name -> its earlier error

    def add(self, result: FileResult) -> None:
        if result.result == "imported":
            self.imported += 1
            self.rows += result.rows
            self.rejected_rows += result.rejected
            self.bytes += result.bytes
        elif result.result == "skipped":
            self.skipped += 1
        elif result.result in ("failed", "conflict"):
            setattr(self, result.result, getattr(self, result.result) + 1)
            self.failures.append({"file": result.file_name,
                                  "error": str(result.error or result.detail)})

    def as_json(self, table: str) -> str:
        """At most 4 KB: the failure list is cut to fit, and says so."""
        payload: dict[str, Any] = {
            "version": __version__, "table": table,
            "files": {"imported": self.imported, "skipped": self.skipped,
                      "failed": self.failed, "conflict": self.conflict,
                      "still_failed": len(self.still_failed)},
            "rows": self.rows, "rejected_rows": self.rejected_rows, "bytes": self.bytes,
            "seconds": round((self.finished or time.monotonic()) - self.started, 3),
            "interrupted": self.interrupted, "failures": [], "failures_omitted": 0,
        }
        if self.database_error:
            payload["database_error"] = self.database_error[:300]
        failures = self.failures + [
            {"file": name, "error": f"failed in an earlier run with these bytes ({error}); "
                                    "not retried until they change or `snapshots retry` is run"}
            for name, error in sorted(self.still_failed.items())]
        text = json.dumps(payload, separators=(",", ":"))
        for index, failure in enumerate(failures):
            entry = {"file": failure["file"][:200], "error": failure["error"][:300]}
            payload["failures"].append(entry)
            payload["failures_omitted"] = len(failures) - index - 1
            candidate = json.dumps(payload, separators=(",", ":"))
            if len(candidate.encode()) > SUMMARY_LIMIT:
                payload["failures"].pop()
                payload["failures_omitted"] = len(failures) - index
                break
            text = candidate
        return json.dumps(payload, separators=(",", ":")) if len(text.encode()) > SUMMARY_LIMIT \
            else text

    @property
    def ok(self) -> bool:
        return not (self.failed or self.conflict or self.interrupted or self.database_error
                    or self.still_failed)


class SyncService:
    """One directory, one table. `run()` blocks until stopped (or, with --once, done)."""

    def __init__(self, conninfo: str, options: SyncOptions, metrics: Metrics | None = None) -> None:
        self.conninfo = conninfo
        self.options = options
        self.metrics = metrics or Metrics()
        self.summary = Summary()
        self.stop_event = threading.Event()  # stop taking files
        self.cancel_event = threading.Event()  # cancel files in flight (grace is over)
        self.wake = threading.Event()
        self.heartbeat = time.monotonic()
        self.database_ok = False
        self._conn: psycopg.Connection | None = None
        self._schema: str | None = options.schema
        self._first_seen: dict[str, tuple[FileSignature, float]] = {}  # path -> (signature, since)
        # path -> wall time it was first listed while pending, whatever its signature since:
        # a file that keeps growing (a stuck writer) must age the backlog gauge.
        self._pending_since: dict[str, float] = {}
        # (signal name, when, files in flight then) once a signal asked us to stop
        self._stop_request: tuple[str, float, int] | None = None
        self._cancelled_at_stop = 0
        self._done: dict[str, FileSignature] = {}  # files settled for good at this signature
        self._done_failed: set[str] = set()  # of those, failures: a `retry` may reopen them
        # What this process tried itself: a failure that is not the file's fault asks for a
        # retry, but by the next process (or an explicit `snapshots retry`), not in a loop.
        self._attempted: dict[str, FileSignature] = {}
        self._last_rescan = time.monotonic()
        self._memory: dict[str, store.FileMemory] = {}
        self._in_flight: dict[str, Future[FileResult]] = {}
        self._connections: dict[str, int] = {}  # connections each file in flight may use
        self._held_elsewhere: dict[str, float] = {}  # path -> when to look at it again
        # path -> the signature handed to the importer
        self._dispatched: dict[str, FileSignature] = {}
        # Outcomes reached without a new ledger record (a conflict; a file refused before its
        # claim, e.g. a bad header): reported once per signature, not on every rescan.
        self._reported: dict[str, tuple[FileSignature, str]] = {}
        self._idle: queue.SimpleQueue[Importer] = queue.SimpleQueue()
        self._busy: dict[int, Importer] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=options.jobs, thread_name_prefix="sync")
        self._backoff = BACKOFF_START
        self._next_db_try = 0.0
        self._next_ping = 0.0
        self._last_retention = 0.0
        self._pending_deadline: float | None = None
        # The last listing and ledger states, reused while only imports finished: a backlog
        # of 10,000 files must not be listed, looked up or sorted again after every file. A
        # pass touches only the files that are waiting to settle and the head of the queue.
        self._order_keys: dict[str, tuple[tuple[int, object, str], str]] = {}
        self._dirty = True
        self._listing: dict[str, FileSignature] = {}
        self._listed_at = 0.0
        self._states: dict[str, store.SnapshotState] | None = None
        self._pending: set[str] = set()  # listed, not settled for good at this signature
        self._waiting: dict[str, FileSignature] = {}  # pending, not yet settled on disk (or held)
        self._ready: list[tuple[tuple[int, object, str], str]] = []  # heap, in load order
        self._shape: tuple[bool, bool] | None = None  # (table exists, merges): per listing
        self._gauged_at = 0.0

    # ------------------------------------------------------------------ control

    def request_stop(self, signum: int | None = None) -> None:
        if self.stop_event.is_set():  # a second signal: don't wait for the grace period
            self.cancel_event.set()
            self.wake.set()
            return
        if signum is not None:
            name, in_flight = signal.Signals(signum).name, len(self._in_flight)
            self._stop_request = (name, time.monotonic(), in_flight)
            log.info("received %s: %s (grace %gs)", name,
                     f"finishing {in_flight} file{'s' if in_flight != 1 else ''} in flight"
                     if in_flight else "no file in flight", self.options.grace)
        self.summary.interrupted = self.options.once
        self.stop_event.set()
        self.wake.set()

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < STALL_SECONDS

    def ready(self) -> bool:
        return self.database_ok

    # ------------------------------------------------------------------ the loop

    def run(self) -> Summary:
        watcher = None if self.options.poll else self._start_watcher()
        try:
            while not self.stop_event.is_set():
                self.heartbeat = time.monotonic()
                self._collect()
                if self._database():
                    try:
                        idle = self._pass()
                    except (psycopg.OperationalError, DatabaseUnavailable) as exc:
                        self._database_lost(exc)
                        idle = False
                    if self.options.once and idle:
                        self._last_retention = 0.0  # after the pass that loaded the backlog
                        self._retention()
                        break
                else:
                    self._relist(time.monotonic())  # keep the gauges true while it is down
                    self._update_gauges(time.monotonic())
                    if self.options.once and self.summary.database_error and \
                            not self._in_flight:
                        break
                self.wake.wait(self._timeout())
                self.wake.clear()
        finally:
            self._shutdown()
            self.summary.finished = time.monotonic()
            if self._stop_request is not None:
                name, when, in_flight = self._stop_request
                cancelled = self._cancelled_at_stop
                log.info("stopped %.1fs after %s; %d file%s in flight then: %d finished, "
                         "%d cancelled", self.summary.finished - when, name, in_flight,
                         "s" if in_flight != 1 else "", max(0, in_flight - cancelled),
                         cancelled)
            if watcher is not None:
                self.stop_event.set()  # a --once run ends without a signal: stop watching too
                watcher.join(timeout=2)
        return self.summary

    def _timeout(self) -> float:
        now = time.monotonic()
        waits = [self.options.rescan]
        if self.options.poll:
            waits.append(1.0)  # no events: list the directory every second
        if self._pending_deadline is not None:
            waits.append(max(0.05, self._pending_deadline - now))
        if self._in_flight:
            waits.append(0.2)  # collect results promptly
        if not self.database_ok:
            waits.append(max(0.05, self._next_db_try - now))
        else:
            waits.append(max(0.05, self._next_ping - now))
        return max(0.02, min(waits))

    def _start_watcher(self) -> threading.Thread | None:
        import watchfiles

        def watch() -> None:
            try:
                for _changes in watchfiles.watch(
                        self.options.data_dir, recursive=self.options.recursive,
                        stop_event=self.stop_event, debounce=50, step=20,
                        rust_timeout=1000, yield_on_timeout=False, raise_interrupt=False):
                    self._dirty = True  # the directory changed: list it again
                    self.wake.set()
            except Exception as exc:  # events are an optimisation; the rescan still works
                log.warning("file events unavailable (%s); relying on the rescan", exc)

        thread = threading.Thread(target=watch, name="watcher", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------ database

    def _database(self) -> bool:
        """Connected and migrated; reconnect with capped exponential backoff."""
        now = time.monotonic()
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            if now < self._next_ping:
                return True
            # An idle service sends nothing, so a dead server would go unnoticed (and /readyz
            # stay green) until the next file: ask it now and then.
            try:
                self._conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self._database_lost(exc)
                return False
            self._next_ping = now + PING_SECONDS
            return True
        if now < self._next_db_try:
            return False
        try:
            self._conn = connect(self.conninfo)
            self._schema = self._schema or ddl.current_schema(self._conn)
            ddl.migrate(self._conn, self._schema)
            store.reap_interrupted(self._conn, self._schema, self.options.table)
            self._memory = store.hashed_files(self._conn, self._schema, self.options.table)
            last = store.last_success(self._conn, self._schema, self.options.table)
            if last is not None:  # a restart must not look like "no snapshot for a long time"
                self.metrics.last_success.set(max(last.timestamp(),
                                                  self.metrics.last_success._value.get()))
        except (psycopg.OperationalError, DatabaseUnavailable) as exc:
            self._database_lost(exc)
            return False
        if not self.database_ok:
            log.info("database is up")
        self.database_ok = True
        self.metrics.database_up.set(1)
        self._next_ping = now + PING_SECONDS
        self._backoff = BACKOFF_START
        self.summary.database_error = None
        return True

    def _database_lost(self, exc: BaseException) -> None:
        message = str(exc) if isinstance(exc, SnapshotsError) else first_line(str(exc))
        if self.database_ok or self._backoff == BACKOFF_START:
            log.warning("database unavailable: %s; retrying with backoff", message)
        self.database_ok = False
        self.metrics.database_up.set(0)
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        while True:  # importers hold connections that are probably dead too
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        self._next_db_try = time.monotonic() + self._backoff
        self._backoff = min(BACKOFF_CAP, self._backoff * 2)
        self._dirty = True  # files it took down with it are pending again; the ledger moved
        if self.options.once:
            self.summary.database_error = message

    # ------------------------------------------------------------------ one pass

    def _pass(self) -> bool:
        """List, settle, decide, dispatch. True when nothing is pending or in flight."""
        assert self._conn is not None and self._schema is not None
        now = time.monotonic()
        if now - self._last_rescan >= min(self.options.rescan, PING_SECONDS):
            # Reconsider failures now and then: `snapshots retry` may have asked for them.
            self._last_rescan = now
            if self._done_failed:
                for rel in self._done_failed:
                    self._done.pop(rel, None)
                self._done_failed.clear()
                self._dirty = True  # `retry` shows in the ledger: read both again
        if (self._dirty or now - self._listed_at >= self.options.rescan
                or (self.options.poll and now - self._listed_at >= 1.0)):
            self._relist(now)
        self._promote(now, time.time())
        if self._ready:
            if self._states is None:
                self._states = store.snapshot_states(self._conn, self._schema,
                                                     self.options.table)
            exists, merges = self._table_shape()
            # Upsert merges in snapshot order (time never runs backwards): one file at a time,
            # and none while an earlier one may still be merging in another process.
            # The first file (in date order) creates the table and decides its types: it
            # goes alone, then the rest load in parallel.
            limit = 1 if merges or not exists else self.options.jobs
            if limit == 1 and self._held_elsewhere:
                limit = 0
            while self._ready and len(self._in_flight) < limit \
                    and sum(self._connections.values()) < self.options.jobs \
                    and not self.stop_event.is_set():
                key, rel = heapq.heappop(self._ready)
                seen = self._listing.get(rel)
                if seen is None or self._done.get(rel) == seen or rel in self._in_flight:
                    continue
                self._consider(rel, seen, self._states.get(key[2]))
                if not exists:
                    self._shape = None  # the first file may have created the table
        self._update_gauges(now)
        self._retention()
        return not self._pending and not self._in_flight

    def _relist(self, now: float) -> None:
        """Read the directory again and rebuild what waits and what is ready."""
        self._dirty = False
        self._listing = listing = self._list()
        self._listed_at = now
        self._states = None
        self._shape = None
        self._pending = {rel for rel, seen in listing.items() if self._done.get(rel) != seen}
        self._ready = []
        self._waiting = {}
        for rel in self._pending:
            if rel in self._in_flight:
                continue
            seen = listing[rel]
            first = self._first_seen.get(rel)
            if first is None or first[0] != seen:
                self._first_seen[rel] = (seen, now)
            self._waiting[rel] = seen
        wall = time.time()
        for rel in self._pending:
            self._pending_since.setdefault(rel, wall)
        for rel in [rel for rel in self._pending_since if rel not in self._pending]:
            del self._pending_since[rel]
        # Forget what was kept per file for files that are gone: months of daily files must
        # not pile up in memory.
        for table in (self._first_seen, self._held_elsewhere, self._reported, self._order_keys,
                      self._attempted, self._done):
            for gone in [rel for rel in table if rel not in listing and rel not in
                         self._in_flight]:
                del table[gone]
        self._done_failed &= set(self._done)
        self._gauged_at = 0.0

    def _promote(self, now: float, now_wall: float) -> None:
        """Move the waiting files that have settled (and are not held elsewhere) to the queue."""
        self._pending_deadline = None
        settled = []
        for rel, seen in self._waiting.items():
            again = self._held_elsewhere.get(rel)
            if again is not None and now < again:
                self._wait_until(again)
                continue
            first = self._first_seen.get(rel)
            if first is None or first[0] != seen:
                first = self._first_seen[rel] = (seen, now)
            stable_for = max(now - first[1], now_wall - seen.mtime_ns / 1e9)
            if stable_for < self.options.settle:
                self._wait_until(now + self.options.settle - stable_for)
            elif self._listed_at < now and self._stat(rel) != seen:
                # Listed a while ago: look once more, since events can be missed or late.
                self._dirty = True
                self._wait_until(now)
            else:
                settled.append(rel)
        for rel in settled:
            del self._waiting[rel]
            self._held_elsewhere.pop(rel, None)
            heapq.heappush(self._ready, self._order_key(rel))

    def _wait_until(self, deadline: float) -> None:
        if self._pending_deadline is None or deadline < self._pending_deadline:
            self._pending_deadline = deadline

    def _requeue(self, rel: str, seen: FileSignature) -> None:
        """A file that stays pending (held elsewhere, database lost): wait for its turn again."""
        if self._listing.get(rel) == seen:
            self._waiting[rel] = seen
        else:
            self._dirty = True  # it changed meanwhile: the next listing sees how

    def _mark_done(self, rel: str, seen: FileSignature, *, failed: bool) -> None:
        self._done[rel] = seen
        self._pending_since.pop(rel, None)  # should it change again, it waits anew
        if failed:
            self._done_failed.add(rel)
        if self._listing.get(rel) == seen:
            self._pending.discard(rel)

    def _update_gauges(self, now: float) -> None:
        self.metrics.pending.set(len(self._pending))
        if self._pending and now - self._gauged_at < 1.0:
            return  # the oldest file's age needs a walk over the backlog: once a second
        self._gauged_at = now
        wall = time.time()
        listing = self._listing
        # Since the file was first seen, or last modified if that is earlier (a backlog
        # found at start-up is as old as its files): a writer that never finishes keeps
        # changing the mtime, but not when we first saw the file.
        self.metrics.oldest_pending_age.set(max(
            (wall - min(self._pending_since.get(rel, wall), listing[rel].mtime_ns / 1e9)
             for rel in self._pending if rel in listing), default=0.0))

    def _order_key(self, rel: str) -> tuple[tuple[int, object, str], str]:
        """Load order: dated files by date, then the rest by name (computed once per file)."""
        entry = self._order_keys.get(rel)
        if entry is None:
            name = os.path.basename(rel)
            day = snapshot_date(name)
            entry = ((0, day, name) if day else (1, None, name), rel)
            self._order_keys[rel] = entry
        return entry

    def _table_shape(self) -> tuple[bool, bool]:
        """(the table exists, files are merged on its key): read once per listing."""
        assert self._conn is not None and self._schema is not None
        if self._shape is None:
            info = ddl.describe_table(self._conn, self._schema, self.options.table)
            self._shape = (info is not None, merges(self._schema, self.options.table, info,
                                                    self.options.import_options.mode))
        return self._shape

    def _list(self) -> dict[str, FileSignature]:
        """Candidate files, relative to the data dir: matching, complete-looking, not hidden."""
        root = self.options.data_dir
        found: dict[str, FileSignature] = {}
        walker: Iterable[tuple[str, list[str], list[str]]]
        if self.options.recursive:
            walker = os.walk(root)
        else:
            try:
                names = os.listdir(root)
            except OSError as exc:
                log.warning("cannot list %s: %s", root, exc)
                return found
            walker = [(str(root), [], names)]
        for directory, dirs, names in walker:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if not self._wanted(name):
                    continue
                full = os.path.join(directory, name)
                try:
                    st = os.stat(full)
                except OSError:
                    continue  # gone between listing and stat
                if not os.path.isfile(full):
                    continue
                rel = os.path.relpath(full, root)
                found[rel] = FileSignature.of(st)
        return found

    def _stat(self, rel: str) -> FileSignature | None:
        try:
            st = os.stat(os.path.join(self.options.data_dir, rel))
        except OSError:
            return None
        return FileSignature.of(st)

    def _wanted(self, name: str) -> bool:
        if name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in IGNORED):
            return False
        return any(fnmatch.fnmatch(name, p) for p in self.options.patterns)

    def _consider(self, rel: str, seen: FileSignature, state: store.SnapshotState | None) -> None:
        """Decide what to do with a settled file; dispatch it when it needs importing."""
        assert self._conn is not None and self._schema is not None
        path = self.options.data_dir / rel
        memory = self._memory.get(rel)
        if memory is not None and (memory.size_bytes, memory.mtime_ns, memory.inode) == (
                seen.size, seen.mtime_ns, seen.inode):
            sha = memory.sha256
        else:
            try:
                sha, size = sha256_file(path)  # the only place sync reads a file's bytes
            except OSError as exc:
                # Unreadable (permissions, say): a failure of this signature, looked at again
                # with the other failures, so a --once run ends and says so.
                self._settle(rel, seen, FileResult(path=path, result="failed",
                                                   file_name=path.name,
                                                   detail=f"cannot read: {exc}"))
                return
            if size != seen.size:
                self._dirty = True  # still changing; the next listing sees the new signature
                return
            memory = store.FileMemory(seen.size, seen.mtime_ns, seen.inode, sha)
            store.remember_hash(self._conn, self._schema, self.options.table, rel, memory)
            self._memory[rel] = memory
        verdict = decide(state.sha256 if state is not None and state.status == "imported"
                         else None, sha, replace=self.options.import_options.replace)
        if verdict is Decision.SKIP:
            self._settle(rel, seen, FileResult(path=path, result="skipped",
                                               file_name=path.name, sha256=sha,
                                               detail="already imported"), quiet=True)
            return
        if verdict is Decision.CONFLICT:
            if self._reported.get(rel) == (seen, "conflict"):
                # Reported already; a rescan looks again (after a forget, say).
                self._mark_done(rel, seen, failed=True)
                return
            self._reported[rel] = (seen, "conflict")
            self._settle(rel, seen, FileResult(
                path=path, result="conflict", file_name=path.name, sha256=sha,
                detail=f"{path.name} was imported with different content; nothing "
                       "written (snapshots import --replace supersedes it)"))
            return
        if state is not None and state.status == "forgotten" and state.sha256 == sha \
                and not state.retry_requested:
            # Forgotten on purpose (by hand or --retention-days): the file staying in the
            # directory must not bring it back. `snapshots import` still can.
            self._settle(rel, seen, FileResult(path=path, result="skipped", file_name=path.name,
                                               sha256=sha, detail="forgotten"), quiet=True)
            return
        tried_here = self._attempted.get(rel) == seen and not (state and state.explicit_retry)
        if state is not None and state.status == "failed" and state.sha256 == sha \
                and (not state.retry_requested or tried_here):
            # Failed before with these bytes: wait for a change or a retry, and say so once.
            self._mark_done(rel, seen, failed=True)
            if path.name not in self.summary.still_failed and path.name not in {
                    f["file"] for f in self.summary.failures}:
                error = first_line(state.error or "failed")
                self.summary.still_failed[path.name] = error
                log.warning("%s failed earlier with these bytes: %s; not retried until they "
                            "change or `snapshots retry` asks", path.name, error,
                            extra={"snap_file": path.name, "snap_result": "failed"})
            return
        if self._reported.get(rel) == (seen, "refused"):
            # Refused before any record was written: wait for a change.
            self._mark_done(rel, seen, failed=True)
            return
        self._dispatch(rel, seen, path, (sha, seen.size))

    def _dispatch(self, rel: str, seen: FileSignature, path: Path, known: tuple[str, int]) -> None:
        self._attempted[rel] = seen
        # --jobs counts connections: a large file alone may take them all for its parts;
        # files waiting behind it get a fair share, so several still load side by side.
        free = self.options.jobs - sum(self._connections.values())
        parts = worth_parts(self.options.import_options, path, seen.size,
                            max(1, free // (1 + min(len(self._ready), free - 1))))
        self._connections[rel] = parts

        def work() -> FileResult:
            importer = self._importer()
            with self._lock:
                self._busy[threading.get_ident()] = importer
            try:
                result = importer.import_file(path, known=known, parts=parts)
            finally:
                with self._lock:
                    self._busy.pop(threading.get_ident(), None)
            if isinstance(result.error, DatabaseUnavailable) or importer.conn.broken:
                importer.close()
            else:
                self._idle.put(importer)
            return result

        future = self._pool.submit(work)
        future.add_done_callback(lambda _f: self.wake.set())
        self._in_flight[rel] = future
        self._dispatched[rel] = seen
        self._first_seen[rel] = (seen, self._first_seen.get(rel, (seen, 0.0))[1])

    def _importer(self) -> Importer:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return Importer(self.conninfo, table=self.options.table, schema=self._schema,
                            options=self.options.import_options, cancel=self.cancel_event)

    def _collect(self) -> None:
        for rel, future in list(self._in_flight.items()):
            if not future.done():
                continue
            del self._in_flight[rel]
            self._connections.pop(rel, None)
            # Settle the bytes that were handed over: if the file changed meanwhile, its new
            # signature gets a turn of its own.
            seen = self._dispatched.pop(rel)
            try:
                result = future.result()
            except DatabaseUnavailable as exc:
                self._database_lost(exc)
                continue
            except Exception as exc:  # a bug, not the file: say so, and look again later
                path = self.options.data_dir / rel
                self._settle(rel, seen, FileResult(path=path, result="failed",
                                                   file_name=path.name,
                                                   detail=first_line(str(exc))))
                continue
            if isinstance(result.error, DatabaseUnavailable):
                self._database_lost(result.error)
                continue  # not the file's fault: it stays pending
            if isinstance(result.error, InterruptedImport):
                # Cancelled at shutdown: not an outcome of the file (no metric, no failure,
                # no record left in the ledger), so the next run loads it.
                log.warning("cancelled %s at shutdown; nothing written, the next run loads it",
                            result.file_name, extra={"snap_file": result.file_name,
                                                     "snap_result": "cancelled"})
                continue
            if result.result == "busy":
                # Another process has it: move on, and look again in a while (a later pass
                # sees its outcome). A --once run does not wait for it at all.
                if self.options.once:
                    result.result = "skipped"
                    self._settle(rel, seen, result)
                else:
                    self._held_elsewhere[rel] = time.monotonic() + HELD_RETRY_SECONDS
                    self._requeue(rel, seen)
                continue
            if result.result == "failed" and result.import_id is None and \
                    isinstance(result.error, InputError):
                self._reported[rel] = (seen, "refused")
            self._settle(rel, seen, result)

    def _settle(self, rel: str, seen: FileSignature, result: FileResult, *,
                quiet: bool = False) -> None:
        """A final outcome for these bytes: count it, log it, don't look at it again."""
        self._mark_done(rel, seen, failed=result.result in ("failed", "conflict"))
        self.metrics.observe(result)
        self.summary.add(result)
        fields = {"snap_file": result.file_name, "snap_result": result.result,
                  "snap_rows": result.rows, "snap_seconds": round(result.seconds, 3)}
        for warning in result.warnings:
            log.warning("%s", warning, extra=fields)
        if result.result == "imported":
            log.info("imported %s: %s in %.2fs%s", result.file_name,
                     plural(result.rows, "row"), result.seconds,
                     f" ({result.detail})" if result.detail else "", extra=fields)
        elif result.result in ("failed", "conflict"):
            log.error("%s %s: %s", result.result, result.file_name,
                      result.error or result.detail, extra=fields)
        elif not quiet:
            log.info("%s %s: %s", result.result, result.file_name, result.detail, extra=fields)
        else:
            log.debug("skipped %s: %s", result.file_name, result.detail, extra=fields)

    def _retention(self) -> None:
        days = self.options.retention_days
        if days is None or self._conn is None or self._schema is None:
            return
        if time.monotonic() - self._last_retention < min(60.0, self.options.rescan):
            return
        self._last_retention = time.monotonic()
        info = ddl.describe_table(self._conn, self._schema, self.options.table)
        if info is None or not info.has_snapshot_id:
            return  # retention deletes whole snapshots: append mode only
        result = store.forget(self._conn, self._schema, self.options.table,
                              older_than_days=days, delete_rows=True)
        for record in result.records:
            log.info("forgot %s (#%d): older than %d days", record.file_name, record.id, days)

    # ------------------------------------------------------------------ stopping

    def _shutdown(self) -> None:
        """Let files in flight finish within --grace; then cancel and roll them back."""
        deadline = time.monotonic() + self.options.grace
        while self._in_flight and time.monotonic() < deadline:
            self._collect()
            if self._in_flight:
                self.wake.wait(0.05)
                self.wake.clear()
        if self._in_flight:
            log.warning("grace period over: cancelling %s in flight",
                        plural(len(self._in_flight), "file"))
            self._cancelled_at_stop = len(self._in_flight)
            self.summary.interrupted = True
            self.cancel_event.set()
            with self._lock:
                busy = list(self._busy.values())
            for importer in busy:
                importer.cancel_now()
            for future in list(self._in_flight.values()):
                future.exception(timeout=30)
            self._collect()
        self._pool.shutdown(wait=True)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
        if self._conn is not None:
            self._conn.close()


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
