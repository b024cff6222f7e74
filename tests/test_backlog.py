"""sync's backlog in process, driven by a fake clock: every assertion is about an exact moment,
with no process, no database and no waiting (SPEC section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapshots.backlog import HELD_RETRY_SECONDS, Backlog, Verdict, load_order
from snapshots.filesig import FileSignature
from snapshots.options import ImportOptions
from snapshots.store import SnapshotState
from snapshots.workers import share

SETTLE = 2.0
EPOCH = 1_700_000_000.0  # the fake wall clock at monotonic 0


class FakeClock:
    """Monotonic and wall time that move only when told to, together."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return EPOCH + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Directory:
    """What the disk holds: the listing handed to the backlog, and `stat` for its recheck."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.files: dict[str, FileSignature] = {}
        self._inode = 100

    def write(self, rel: str, size: int = 10, *, age: float = 0.0) -> FileSignature:
        """Create or rewrite `rel` now (or `age` seconds ago), in place."""
        old = self.files.get(rel)
        inode = old.inode if old else self._next_inode()
        mtime = int((self.clock.time() - age) * 1e9)
        self.files[rel] = FileSignature(size, mtime, inode)
        return self.files[rel]

    def _next_inode(self) -> int:
        self._inode += 1
        return self._inode

    def delete(self, rel: str) -> None:
        del self.files[rel]

    def listing(self) -> dict[str, FileSignature]:
        return dict(self.files)

    def stat(self, rel: str) -> FileSignature | None:
        return self.files.get(rel)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def disk(clock: FakeClock) -> Directory:
    return Directory(clock)


@pytest.fixture
def backlog(clock: FakeClock) -> Backlog:
    return Backlog(SETTLE, clock)


def look(backlog: Backlog, disk: Directory, *, relist: bool = True) -> list[str]:
    """One pass: list (when asked), promote, and take every ready file in load order."""
    if relist:
        backlog.relist(disk.listing())
    backlog.promote(None if relist else disk.stat)  # as the loop: a fresh listing is fresh
    ready = []
    while (item := backlog.next_ready()) is not None:
        ready.append(item[0])
    return ready


def state(status: str, sha256: str = "aa", *, retry: bool = False,
          explicit: bool = False) -> SnapshotState:
    return SnapshotState(status=status, sha256=sha256, retry_requested=retry,
                         explicit_retry=explicit, error="bad" if status == "failed" else None)


# --------------------------------------------------------------------------- settling


def test_a_new_file_is_ready_exactly_when_settle_has_elapsed(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv")
    assert look(backlog, disk) == []
    assert backlog.deadline == SETTLE  # the loop sleeps until then, not a fixed tick
    clock.advance(SETTLE - 0.001)
    assert look(backlog, disk, relist=False) == []
    assert backlog.deadline == pytest.approx(SETTLE)
    clock.advance(0.001)
    assert look(backlog, disk, relist=False) == ["snapshot_20230101.csv"]
    assert backlog.deadline is None


def test_a_changed_signature_restarts_settling(clock: FakeClock, disk: Directory,
                                                backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv", size=10)
    assert look(backlog, disk) == []
    clock.advance(1.5)
    disk.write("snapshot_20230101.csv", size=20)  # the writer is not done
    assert look(backlog, disk) == []
    clock.advance(SETTLE - 0.5)  # settle seconds after first sight, not after the change
    assert look(backlog, disk) == []
    assert backlog.deadline == pytest.approx(1.5 + SETTLE)
    clock.advance(0.5)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]


def test_same_size_new_inode_restarts_settling(clock: FakeClock, disk: Directory,
                                                backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv", size=10)
    look(backlog, disk)
    clock.advance(1.5)
    old = disk.files["snapshot_20230101.csv"]
    disk.files["snapshot_20230101.csv"] = old._replace(inode=old.inode + 1000)  # renamed over
    assert look(backlog, disk) == []
    clock.advance(SETTLE)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]


def test_a_file_found_with_an_old_mtime_is_ready_at_once(disk: Directory,
                                                         backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv", age=SETTLE)  # a backlog found at start-up
    disk.write("snapshot_20230102.csv", age=SETTLE - 0.5)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]
    assert backlog.deadline == pytest.approx(0.5)


def test_a_file_listed_a_while_ago_is_looked_at_again_before_it_is_taken(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv")
    look(backlog, disk)
    clock.advance(SETTLE)
    disk.write("snapshot_20230101.csv", size=99)  # changed, and no event told the loop
    assert look(backlog, disk, relist=False) == []
    assert backlog.stale, "the loop must list again"
    assert backlog.deadline == SETTLE  # at once
    assert look(backlog, disk) == []  # the new signature settles from now
    clock.advance(SETTLE)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]


def test_a_file_is_looked_at_again_only_from_an_earlier_listing(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv", age=SETTLE)
    disk.write("snapshot_20230102.csv")
    calls: list[str] = []

    def stat(rel: str) -> FileSignature | None:
        calls.append(rel)
        return disk.stat(rel)

    backlog.relist(disk.listing())
    backlog.promote(None)  # this pass's own listing: as fresh as a stat
    assert backlog.next_ready() == ("snapshot_20230101.csv", disk.files["snapshot_20230101.csv"])
    clock.advance(SETTLE)
    backlog.promote(stat)
    assert calls == ["snapshot_20230102.csv"]  # only the file taken from the old listing
    assert backlog.next_ready() == ("snapshot_20230102.csv", disk.files["snapshot_20230102.csv"])


# --------------------------------------------------------------------------- order


def test_load_order_is_snapshot_date_then_undated_by_name(disk: Directory,
                                                          backlog: Backlog) -> None:
    for name in ("b_20230102.csv", "undated_b.csv", "a_20230103.csv", "z_20230101.csv",
                 "undated_a.csv", "c_20231301.csv"):  # 20231301 is no date
        disk.write(name, age=SETTLE)
    assert look(backlog, disk) == ["z_20230101.csv", "b_20230102.csv", "a_20230103.csv",
                                   "c_20231301.csv", "undated_a.csv", "undated_b.csv"]


def test_load_order_breaks_ties_by_path() -> None:
    assert load_order("b/s_20230101.csv") > load_order("a/s_20230101.csv")
    assert load_order("z/s_20230101.csv") < load_order("a/s_20230102.csv")


# --------------------------------------------------------------------------- outcomes


def settled(backlog: Backlog, disk: Directory, rel: str, *, failed: bool,
            report: str | None = None) -> FileSignature:
    """Take `rel` through dispatch to a final outcome."""
    backlog.dispatch(rel, disk.files[rel])
    seen = backlog.returned(rel)
    backlog.settle(rel, seen, failed=failed, report=report)
    return seen


def test_a_settled_file_is_not_looked_at_again_at_the_same_signature(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv", age=SETTLE)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]
    settled(backlog, disk, "snapshot_20230101.csv", failed=False)
    assert backlog.idle
    for _ in range(3):
        clock.advance(60)
        backlog.reopen_failures()  # a success is not reopened
        assert look(backlog, disk) == []
    disk.write("snapshot_20230101.csv", size=11)  # new bytes
    clock.advance(SETTLE)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]


def test_a_failed_file_is_not_retried_at_the_same_signature(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    disk.write(rel, age=SETTLE)
    look(backlog, disk)
    seen = settled(backlog, disk, rel, failed=True)
    assert look(backlog, disk) == []
    # Now and then failures are looked at again (`retry` may have asked for them) ...
    backlog.reopen_failures()
    assert backlog.stale
    assert look(backlog, disk) == [rel]
    # ... and the ledger says: failed with these bytes, no retry asked for.
    assert backlog.triage(rel, seen, "aa", state("failed"), replace=False) \
        is Verdict.STILL_FAILED
    # New bytes: loaded again.
    disk.write(rel, size=11)
    clock.advance(SETTLE)
    assert look(backlog, disk) == [rel]
    assert backlog.triage(rel, disk.files[rel], "bb", state("failed"), replace=False) \
        is Verdict.LOAD


def test_a_retry_is_tried_once_by_this_process_not_in_a_loop(disk: Directory,
                                                             backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    seen = disk.write(rel, age=SETTLE)
    look(backlog, disk)
    # A failure that was not the file's fault asks for a retry by itself.
    assert backlog.triage(rel, seen, "aa", state("failed", retry=True), replace=False) \
        is Verdict.LOAD
    settled(backlog, disk, rel, failed=True)
    assert backlog.triage(rel, seen, "aa", state("failed", retry=True), replace=False) \
        is Verdict.STILL_FAILED, "tried here already: the next process (or retry) tries"
    # `snapshots retry` after this attempt: tried again.
    assert backlog.triage(rel, seen, "aa", state("failed", retry=True, explicit=True),
                          replace=False) is Verdict.LOAD


def test_a_conflict_is_reported_once_per_signature(clock: FakeClock, disk: Directory,
                                                   backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    seen = disk.write(rel, age=SETTLE)
    look(backlog, disk)
    other = state("imported", "other bytes")
    assert backlog.triage(rel, seen, "aa", other, replace=False) is Verdict.CONFLICT
    backlog.settle(rel, seen, failed=True, report="conflict")
    for _ in range(3):  # every rescan looks again (after a forget, say), quietly
        backlog.reopen_failures()
        assert look(backlog, disk) == [rel]
        assert backlog.triage(rel, seen, "aa", other, replace=False) is Verdict.QUIET
        backlog.settle(rel, seen, failed=True)
    assert backlog.triage(rel, seen, "aa", other, replace=True) is Verdict.LOAD
    disk.write(rel, size=11)
    clock.advance(SETTLE)
    look(backlog, disk)
    assert backlog.triage(rel, disk.files[rel], "bb", other, replace=False) \
        is Verdict.CONFLICT


def test_a_refused_file_is_reported_once_per_signature(clock: FakeClock, disk: Directory,
                                                       backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"  # a bad header: refused before any ledger record
    seen = disk.write(rel, age=SETTLE)
    look(backlog, disk)
    assert backlog.triage(rel, seen, "aa", None, replace=False) is Verdict.LOAD
    settled(backlog, disk, rel, failed=True, report="refused")
    backlog.reopen_failures()
    assert look(backlog, disk) == [rel]
    assert backlog.triage(rel, seen, "aa", None, replace=False) is Verdict.QUIET
    disk.write(rel, size=11)
    clock.advance(SETTLE)
    look(backlog, disk)
    assert backlog.triage(rel, disk.files[rel], "bb", None, replace=False) is Verdict.LOAD


def test_imported_and_forgotten_bytes_are_skipped(disk: Directory, backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    seen = disk.write(rel, age=SETTLE)
    assert backlog.triage(rel, seen, "aa", state("imported"), replace=False) is Verdict.SKIP
    assert backlog.triage(rel, seen, "aa", state("imported"), replace=True) is Verdict.SKIP
    assert backlog.triage(rel, seen, "aa", state("forgotten"), replace=False) \
        is Verdict.FORGOTTEN
    assert backlog.triage(rel, seen, "aa", state("forgotten", retry=True), replace=False) \
        is Verdict.LOAD
    assert backlog.triage(rel, seen, "bb", state("forgotten"), replace=False) is Verdict.LOAD


# --------------------------------------------------------------------------- in flight


def test_a_file_in_flight_is_not_taken_twice(clock: FakeClock, disk: Directory,
                                             backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    disk.write(rel, age=SETTLE)
    assert look(backlog, disk) == [rel]
    backlog.dispatch(rel, disk.files[rel])
    for _ in range(3):
        clock.advance(60)
        assert look(backlog, disk) == []
        assert not backlog.idle
        assert rel in backlog.pending
    disk.delete(rel)  # deleted while it loads: what is kept of it stays until it is back
    look(backlog, disk)
    assert backlog.returned(rel) == FileSignature(10, int((EPOCH - SETTLE) * 1e9), 101)


def test_a_file_changed_while_in_flight_gets_a_turn_of_its_own(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    disk.write(rel, age=SETTLE)
    look(backlog, disk)
    backlog.dispatch(rel, disk.files[rel])
    disk.write(rel, size=11)
    look(backlog, disk)
    backlog.settle(rel, backlog.returned(rel), failed=False)
    assert rel in backlog.pending, "the new bytes are still to load"
    clock.advance(SETTLE)
    assert look(backlog, disk) == [rel]


def test_a_file_held_elsewhere_is_looked_at_again_after_the_hold_delay(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    disk.write(rel, age=SETTLE)
    look(backlog, disk)
    clock.advance(5)
    backlog.dispatch(rel, disk.files[rel])
    backlog.hold(rel, backlog.returned(rel))  # another process has its name lock
    assert backlog.held_elsewhere
    assert look(backlog, disk, relist=False) == []
    assert backlog.deadline == 5 + HELD_RETRY_SECONDS
    clock.advance(HELD_RETRY_SECONDS - 0.001)
    assert look(backlog, disk) == [], "not hammered: a listing does not lift the hold"
    clock.advance(0.001)
    assert look(backlog, disk, relist=False) == [rel]
    assert not backlog.held_elsewhere


def test_a_held_file_that_changed_meanwhile_asks_for_a_listing(
        disk: Directory, backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    disk.write(rel, age=SETTLE)
    look(backlog, disk)
    backlog.dispatch(rel, disk.files[rel])
    disk.write(rel, size=11)
    backlog.relist(disk.listing())
    backlog.hold(rel, backlog.returned(rel))
    assert backlog.stale


# --------------------------------------------------------------------------- memory, gauges


def test_what_is_kept_per_file_goes_with_the_file(clock: FakeClock, disk: Directory,
                                                  backlog: Backlog) -> None:
    for day in range(1, 6):
        rel = f"snapshot_2023010{day}.csv"
        disk.write(rel, age=SETTLE)
        look(backlog, disk)
        settled(backlog, disk, rel, failed=day % 2 == 0, report="refused" if day == 2 else None)
        disk.delete(rel)
    look(backlog, disk)
    memory = backlog.memory
    assert (memory.done, memory.failed, memory.attempted, memory.reported) == ({}, set(), {}, {})
    assert backlog.settling.first_seen == {} and backlog.pending == {}


def test_the_backlog_gauge_counts_from_first_sight_for_a_growing_file(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    rel = "snapshot_20230101.csv"
    disk.write(rel)
    look(backlog, disk)
    assert backlog.oldest_pending_age() == 0.0
    for second in range(1, 6):  # a stuck writer: new bytes every second, a fresh mtime
        clock.advance(1)
        disk.write(rel, size=10 + second)
        assert look(backlog, disk) == []
        assert backlog.oldest_pending_age() == pytest.approx(second)
    assert list(backlog.pending) == [rel]


def test_the_backlog_gauge_counts_from_the_mtime_of_a_file_found_old(
        clock: FakeClock, disk: Directory, backlog: Backlog) -> None:
    disk.write("snapshot_20230101.csv", age=3600)
    disk.write("snapshot_20230102.csv")
    backlog.relist(disk.listing())
    assert backlog.oldest_pending_age() == pytest.approx(3600)
    clock.advance(1)
    assert backlog.oldest_pending_age() == pytest.approx(3601)
    assert look(backlog, disk) == ["snapshot_20230101.csv"]
    settled(backlog, disk, "snapshot_20230101.csv", failed=False)
    assert backlog.oldest_pending_age() == pytest.approx(1)
    assert len(backlog.pending) == 1


def test_an_empty_backlog_is_idle_and_ages_nothing(backlog: Backlog) -> None:
    backlog.relist({})
    assert backlog.idle and backlog.oldest_pending_age() == 0.0 and backlog.deadline is None


def test_listing_is_due_when_stale_or_after_the_interval(clock: FakeClock,
                                                         backlog: Backlog) -> None:
    assert backlog.due_for_listing(30)  # never listed
    backlog.relist({})
    assert not backlog.due_for_listing(30)
    clock.advance(29.9)
    assert not backlog.due_for_listing(30)
    backlog.invalidate()  # an event
    assert backlog.due_for_listing(30)
    backlog.relist({})
    clock.advance(30)
    assert backlog.due_for_listing(30)


# --------------------------------------------------------------------------- connection budget


@pytest.mark.parametrize(("free", "waiting", "parts"), [
    (4, 0, 4),  # alone: every free connection, for its parts
    (4, 1, 2),  # one behind it: half each
    (4, 3, 1),  # three behind it: one each, four files side by side
    (4, 9, 1),
    (1, 5, 1),
    (3, 1, 1),
])
def test_connections_a_file_may_use(tmp_path: Path, free: int, waiting: int,
                                    parts: int) -> None:
    options = ImportOptions(part_size=1000)
    path = tmp_path / "snapshot_20230101.csv"
    assert share(options, path, 1_000_000, free=free, waiting=waiting) == parts
    assert share(options, path, 1500, free=free, waiting=waiting) == 1  # too small to split
    gz = tmp_path / "snapshot_20230101.csv.gz"
    assert share(options, gz, 1_000_000, free=free, waiting=waiting) == 1  # no cut points
