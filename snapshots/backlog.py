"""sync's backlog as pure state: what waits to settle, what is ready and in what order, and
what was already settled for good at which signature.

No I/O, no threads of its own, no clock of its own: the loop hands in listings (relative path
-> FileSignature), ledger states and outcomes; time comes from the injected `Clock`, so tests
drive it second by second. The one check that needs the disk (is a file listed a while ago
still the same?) is a callable the caller passes to `promote`.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable
from enum import Enum
from functools import lru_cache
from typing import Protocol

from snapshots.csvio.names import snapshot_date
from snapshots.engine.decide import Decision, decide
from snapshots.filesig import FileSignature
from snapshots.store import SnapshotState

HELD_RETRY_SECONDS = 1.0  # a file another process holds is looked at again after this

# Dated files by date, then the rest by name; the relative path breaks ties (recursive).
OrderKey = tuple[tuple[int, object, str], str]


class Clock(Protocol):
    """Both clocks the backlog needs (the `time` module is one)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...  # wall time: compared with files' mtimes


@lru_cache(maxsize=1 << 16)  # computed once per file, bounded for months of daily files
def load_order(rel: str) -> OrderKey:
    """Load order: dated files by snapshot date, then the rest by name."""
    name = os.path.basename(rel)
    day = snapshot_date(name)
    return ((0, day, name) if day else (1, None, name)), rel


class Verdict(Enum):
    """What to do with a settled file, given its hash, the ledger and the backlog's memory."""

    LOAD = "load"  # hand it to an importer
    SKIP = "skip"  # these bytes were imported under this name
    FORGOTTEN = "forgotten"  # forgotten on purpose with these bytes: must not come back
    CONFLICT = "conflict"  # other bytes were imported under the name: report it (once)
    STILL_FAILED = "still_failed"  # failed earlier with these bytes, no retry asked for
    QUIET = "quiet"  # reported already at this signature: done, nothing more to say


class Settling:
    """Settle detection: a file is ready once its signature has not changed for `settle`
    seconds (or its mtime is that old), and no other process held it a moment ago."""

    def __init__(self, settle: float) -> None:
        self.settle = settle
        self.first_seen: dict[str, tuple[FileSignature, float]] = {}  # rel -> (sig, since)
        self.held_until: dict[str, float] = {}  # held by another process: look again then
        self.waiting: dict[str, FileSignature] = {}  # pending, not yet settled (or held)

    def watch(self, rel: str, seen: FileSignature, now: float) -> None:
        first = self.first_seen.get(rel)
        if first is None or first[0] != seen:  # new, or changed: settling starts again
            self.first_seen[rel] = (seen, now)
        self.waiting[rel] = seen

    def due(self, rel: str, seen: FileSignature, now: float, wall: float) -> float | None:
        """None when settled; otherwise when to look again."""
        again = self.held_until.get(rel)
        if again is not None and now < again:
            return again
        first = self.first_seen.get(rel)
        if first is None or first[0] != seen:
            first = self.first_seen[rel] = (seen, now)
        # A file found with an old mtime (a backlog at start-up) need not wait at all.
        stable_for = max(now - first[1], wall - seen.mtime_ns / 1e9)
        return now + self.settle - stable_for if stable_for < self.settle else None

    def dispatched(self, rel: str, seen: FileSignature) -> None:
        # Keep when it was first seen: a file handed back (held elsewhere) is still settled.
        self.first_seen[rel] = (seen, self.first_seen.get(rel, (seen, 0.0))[1])

    def forget(self, keep: Callable[[str], bool]) -> None:
        for table in (self.first_seen, self.held_until):
            for gone in [rel for rel in table if not keep(rel)]:
                del table[gone]


class Memory:
    """Files settled for good at a signature, and outcomes already said once."""

    def __init__(self) -> None:
        self.done: dict[str, FileSignature] = {}
        self.failed: set[str] = set()  # of the done files, failures: `retry` may reopen them
        # What this process tried itself: a failure that is not the file's fault asks for a
        # retry, but by the next process (or an explicit `snapshots retry`), not in a loop.
        self.attempted: dict[str, FileSignature] = {}
        # Outcomes reached without a new ledger record (a conflict; a file refused before its
        # claim, e.g. a bad header): reported once per signature, not on every rescan.
        self.reported: dict[str, tuple[FileSignature, str]] = {}

    def forget(self, keep: Callable[[str], bool]) -> None:
        for table in (self.done, self.attempted, self.reported):
            for gone in [rel for rel in table if not keep(rel)]:
                del table[gone]
        self.failed &= set(self.done)

    def triage(self, rel: str, seen: FileSignature, sha256: str | None,
               state: SnapshotState | None, *, replace: bool) -> Verdict:
        """`sha256` None: not hashed, as a name the ledger has never seen need not be (there
        is nothing to compare it with: the import hashes it)."""
        refused = self.reported.get(rel) == (seen, "refused")
        if state is None:
            # Refused before any record was written: wait for a change.
            return Verdict.QUIET if refused else Verdict.LOAD
        assert sha256 is not None
        imported = state.sha256 if state.status == "imported" else None
        verdict = decide(imported, sha256, replace=replace)
        if verdict is Decision.SKIP:
            return Verdict.SKIP
        if verdict is Decision.CONFLICT:
            # Reported already: quiet; a rescan looks again (after a forget, say).
            return Verdict.QUIET if self.reported.get(rel) == (seen, "conflict") \
                else Verdict.CONFLICT
        if state.status == "forgotten" and state.sha256 == sha256 and not state.retry_requested:
            # Forgotten by hand or --retention-days: the file staying in the directory must
            # not bring it back. `snapshots import` still can.
            return Verdict.FORGOTTEN
        tried_here = self.attempted.get(rel) == seen and not state.explicit_retry
        if state.status == "failed" and state.sha256 == sha256 \
                and (not state.retry_requested or tried_here):
            return Verdict.STILL_FAILED
        return Verdict.QUIET if refused else Verdict.LOAD


class Backlog:
    """The files of one directory between first sight and a final outcome."""

    def __init__(self, settle: float, clock: Clock) -> None:
        self.clock = clock
        self.settling = Settling(settle)
        self.memory = Memory()
        self.listing: dict[str, FileSignature] = {}
        self.listed_at = float("-inf")
        # Listed, not settled for good at this signature -> wall time of first sight while
        # pending, whatever its signature since: a stuck writer must age the gauge.
        self.pending: dict[str, float] = {}
        self.ready: list[OrderKey] = []  # a heap, in load order
        self.dispatched: dict[str, FileSignature] = {}  # in flight: the bytes handed over
        self.deadline: float | None = None  # when a waiting file is next due
        # The listing is reused while only imports finished: a backlog of 10,000 files must
        # not be listed or sorted again after every file. Anything else makes it stale.
        self.stale = True

    # -- listings

    def invalidate(self) -> None:
        """List again at the next pass (a single store: safe from the watcher thread)."""
        self.stale = True

    def due_for_listing(self, every: float) -> bool:
        return self.stale or self.clock.monotonic() - self.listed_at >= every

    def relist(self, listing: dict[str, FileSignature]) -> None:
        """A fresh listing: rebuild what waits and what is ready."""
        now, wall = self.clock.monotonic(), self.clock.time()
        self.stale = False
        self.listing = listing
        self.listed_at = now
        done = self.memory.done
        pending = [rel for rel, seen in listing.items() if done.get(rel) != seen]
        self.pending = {rel: self.pending.get(rel, wall) for rel in pending}
        self.ready = []
        self.settling.waiting = {}
        for rel in pending:
            if rel not in self.dispatched:
                self.settling.watch(rel, listing[rel], now)

        # What is kept per file goes with the file: months of daily files must not pile up.
        def keep(rel: str) -> bool:
            return rel in listing or rel in self.dispatched

        self.settling.forget(keep)
        self.memory.forget(keep)

    def promote(self, stat: Callable[[str], FileSignature | None] | None) -> None:
        """Move the waiting files that have settled to the ready queue. `stat` gives a file's
        signature now, to look once more at a file before it is taken from an earlier pass's
        listing (events can be missed or late); None when the listing is this pass's own."""
        now, wall = self.clock.monotonic(), self.clock.time()
        self.deadline = None
        settled = []
        for rel, seen in self.settling.waiting.items():
            again = self.settling.due(rel, seen, now, wall)
            if again is not None:
                self._wait_until(again)
            elif stat is not None and stat(rel) != seen:
                self.stale = True
                self._wait_until(now)
            else:
                settled.append(rel)
        for rel in settled:
            del self.settling.waiting[rel]
            self.settling.held_until.pop(rel, None)
            heapq.heappush(self.ready, load_order(rel))

    def _wait_until(self, deadline: float) -> None:
        if self.deadline is None or deadline < self.deadline:
            self.deadline = deadline

    def next_ready(self, max_size: int | None = None) -> tuple[str, FileSignature] | None:
        """The first ready file in load order that still needs a look, or None (also when
        that file is larger than `max_size`: it stays first in line)."""
        while self.ready:
            _key, rel = self.ready[0]
            seen = self.listing.get(rel)
            if seen is None or self.memory.done.get(rel) == seen or rel in self.dispatched:
                heapq.heappop(self.ready)
                continue
            if max_size is not None and seen.size > max_size:
                return None
            heapq.heappop(self.ready)
            return rel, seen
        return None

    # -- outcomes

    def triage(self, rel: str, seen: FileSignature, sha256: str | None,
               state: SnapshotState | None, *, replace: bool) -> Verdict:
        return self.memory.triage(rel, seen, sha256, state, replace=replace)

    def dispatch(self, rel: str, seen: FileSignature) -> None:
        self.memory.attempted[rel] = seen
        self.dispatched[rel] = seen
        self.settling.dispatched(rel, seen)

    def returned(self, rel: str) -> FileSignature:
        """A file back from its importer: the signature that was handed over (if the file
        changed meanwhile, its new signature gets a turn of its own)."""
        return self.dispatched.pop(rel)

    def settle(self, rel: str, seen: FileSignature, *, failed: bool,
               report: str | None = None) -> None:
        """A final outcome for these bytes: not looked at again while they stay. `report`
        ("conflict", "refused") is said once per signature."""
        memory = self.memory
        memory.done[rel] = seen
        if failed:
            memory.failed.add(rel)
        if report is not None:
            memory.reported[rel] = (seen, report)
        if rel in self.pending:
            if self.listing.get(rel) == seen:
                del self.pending[rel]
            else:  # it changed again: it waits anew
                self.pending[rel] = self.clock.time()

    def hold(self, rel: str, seen: FileSignature) -> None:
        """Another process holds the file: move on, and look again in a while."""
        self.settling.held_until[rel] = self.clock.monotonic() + HELD_RETRY_SECONDS
        if self.listing.get(rel) == seen:
            self.settling.waiting[rel] = seen
        else:
            self.stale = True  # it changed meanwhile: the next listing sees how

    def reopen_failures(self) -> None:
        """Look at failures again (`snapshots retry` may have asked for them)."""
        memory = self.memory
        if memory.failed:
            for rel in memory.failed:
                memory.done.pop(rel, None)
            memory.failed.clear()
            self.stale = True  # `retry` shows in the ledger: read both again

    # -- gauges

    @property
    def held_elsewhere(self) -> bool:
        return bool(self.settling.held_until)

    @property
    def idle(self) -> bool:
        return not self.pending and not self.dispatched

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest pending file was first seen, or last modified if that is
        earlier (a backlog found at start-up is as old as its files); a writer that never
        finishes keeps changing the mtime, but not when the file was first seen."""
        wall = self.clock.time()
        listing = self.listing
        return max((wall - min(since, listing[rel].mtime_ns / 1e9)
                    for rel, since in self.pending.items() if rel in listing), default=0.0)
