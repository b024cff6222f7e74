"""The sync loop in process, on a thread, against a real PostgreSQL, with the backlog's clock
in the test's hands (SPEC section 5).

What must NOT happen (a failed file retried in a loop, an outcome counted again, a held file
hammered, a growing file taken) is checked over loop turns that are known to have run after
the clock moved past every rescan and retry interval, not over sleep windows that may pass
without a single one; the backlog gauge's age is exact, not waited for. Signals, kills,
several processes and the real watcher stay in test_sync.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import Cli, wait_until
from test_sync import (
    assert_each_loaded_once,
    bad_csv,
    csv_text,
    day_name,
    imported,
    put,
    records,
    statuses,
)

from snapshots import importer
from snapshots.backlog import HELD_RETRY_SECONDS
from snapshots.metrics import Metrics
from snapshots.sync import Summary, SyncOptions, SyncService

DEADLINE = 60.0
LATER = 60.0  # past --rescan and every interval the loop keeps


class HandClock:
    """Starts at the real time and moves only when the test says so."""

    def __init__(self) -> None:
        self.mono = time.monotonic()
        self.wall = time.time()

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class Loop:
    """A SyncService running on a thread of this process."""

    def __init__(self, db_url: str, data_dir: Path, clock: HandClock | None = None,
                 **options: Any) -> None:
        self.clock = clock or HandClock()
        self.metrics = Metrics()
        # --rescan 30 on a clock that stands still: every rescan is the test's doing.
        options = {"table": "snapshots", "settle": 0.0, "rescan": 30.0, "poll": True} | options
        self.service = SyncService(db_url, SyncOptions(data_dir=data_dir, **options),
                                   self.metrics, clock=self.clock)
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sync-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.service.run()
        except BaseException as exc:  # handed to the test, which fails with it
            self.error = exc

    def assert_running(self) -> None:
        assert self.error is None, repr(self.error)
        assert self.thread.is_alive(), "the loop ended"

    def turns(self, count: int = 2) -> None:
        """Wait until the loop has begun `count` more turns, so `count - 1` whole turns ran
        from start to end (it is woken meanwhile, not left to its timeout)."""
        beats = [self.service.control.heartbeat]

        def turned() -> bool:
            self.assert_running()
            self.service.control.wake.set()
            if self.service.control.heartbeat != beats[-1]:
                beats.append(self.service.control.heartbeat)
            return len(beats) > count

        wait_until(turned, DEADLINE, interval=0.005, message=f"{count} turns of the loop")

    def later(self, seconds: float = LATER) -> None:
        """Move the clock on, and let a whole turn run at the new time."""
        self.clock.advance(seconds)
        self.turns()

    def until(self, predicate: Callable[[], Any], message: str) -> Any:
        def check() -> Any:
            self.assert_running()
            self.service.control.wake.set()
            return predicate()

        return wait_until(check, DEADLINE, interval=0.02, message=message)

    def count(self, result: str) -> float:
        value = self.metrics.registry.get_sample_value("snapshots_files_total",
                                                       {"result": result})
        assert value is not None
        return value

    def stop(self) -> Summary:
        self.service.request_stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the loop did not stop"
        assert self.error is None, repr(self.error)
        assert self.summary is not None
        return self.summary


@pytest.fixture
def start_loop(db_url: str, data_dir: Path) -> Iterator[Callable[..., Loop]]:
    started: list[Loop] = []

    def start(clock: HandClock | None = None, **options: Any) -> Loop:
        loop = Loop(db_url, data_dir, clock, **options)
        started.append(loop)
        return loop

    yield start
    for loop in started:
        if loop.thread.is_alive():
            loop.service.request_stop()
            loop.thread.join(DEADLINE)


def test_failed_file_is_not_retried_until_retry_or_new_bytes(
        db_conn: psycopg.Connection, data_dir: Path, cli: Cli,
        start_loop: Callable[..., Loop]) -> None:
    bad, good = day_name(0), day_name(1)
    put(data_dir, bad, bad_csv())
    put(data_dir, good, csv_text(8))
    loop = start_loop()
    loop.until(lambda: good in imported(db_conn) and statuses(db_conn, bad) == ["failed"],
               "the bad file to fail and the good one to load")
    error = records(db_conn, bad)[0]["error"]
    assert f"{bad}:3:" in error, error
    for _ in range(3):
        loop.later()
        assert statuses(db_conn, bad) == ["failed"], \
            "a failed file was retried without a change or a retry request"

    result = cli.process("retry", bad)
    assert bad in result.stdout
    loop.clock.advance(LATER)  # failures are looked at again now and then, not at once
    loop.until(lambda: statuses(db_conn, bad) == ["failed", "failed"],
               "`snapshots retry` to make sync try the same bytes again")
    for _ in range(3):
        loop.later()
        assert statuses(db_conn, bad) == ["failed", "failed"], \
            "a retried file failed again and was retried in a loop"

    put(data_dir, bad, csv_text(5, seed=9))  # fixed: new bytes
    loop.clock.advance(LATER)
    loop.until(lambda: bad in imported(db_conn), "the fixed file to be loaded")
    assert statuses(db_conn, bad) == ["failed", "failed", "imported"]
    assert_each_loaded_once(db_conn, {bad: 5, good: 8})
    assert loop.count("failed") == 2
    assert loop.count("imported") == 2
    assert loop.stop().ok is False  # two failures this run


def test_outcomes_without_a_new_attempt_are_not_counted_again(
        db_conn: psycopg.Connection, data_dir: Path, cli: Cli, tmp_path: Path,
        start_loop: Callable[..., Loop], caplog: pytest.LogCaptureFixture) -> None:
    """A conflict and a file whose header is unusable are reported once, not on every
    rescan: their counters and log lines would otherwise grow for as long as sync runs."""
    conflict, bad_header = day_name(0), day_name(1)
    cli.run("import", put(tmp_path / "staging", conflict, csv_text(2)))
    put(data_dir, conflict, csv_text(3, seed=5))
    put(data_dir, bad_header, "a,a\n1,2\n")
    caplog.set_level(logging.INFO, logger="snapshots")
    loop = start_loop()
    loop.until(lambda: (loop.count("conflict"), loop.count("failed")) == (1, 1),
               "one conflict and one failure")
    for _ in range(3):
        loop.later()
        assert (loop.count("conflict"), loop.count("failed")) == (1, 1), \
            "an outcome was counted again on a rescan"
    assert caplog.text.count(f"conflict {conflict}") == 1
    assert caplog.text.count(f"failed {bad_header}") == 1
    assert statuses(db_conn, bad_header) == ["failed"]  # one attempt, not one per rescan
    loop.stop()


def test_a_file_held_by_another_process_is_not_hammered(
        db_conn: psycopg.Connection, data_dir: Path, cli: Cli,
        start_loop: Callable[..., Loop], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another importer holds a snapshot's name lock (this test, standing in for it): the
    service moves on, tries the held file again only every HELD_RETRY_SECONDS, and takes it
    once it is free. (test_sync's twin: a --once run does not wait for it at all.)"""
    held, free = day_name(0), day_name(1)
    put(data_dir, held, csv_text(4))
    cli.run("import", put(data_dir, free, csv_text(5, seed=1)))  # the table exists
    key = "\x1f".join(("name", "public", "snapshots", held))
    db_conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7421))", (key,))
    tries: list[str] = []
    import_file = importer.Importer.import_file

    def counted(self: importer.Importer, path: Path, **kwargs: Any) -> Any:
        tries.append(path.name)
        return import_file(self, path, **kwargs)

    monkeypatch.setattr(importer.Importer, "import_file", counted)
    loop = start_loop(jobs=2)  # with one, a held file would hold up the rest (as upsert does)
    loop.until(lambda: loop.count("skipped") == 1 and tries == [held]
               and loop.service.backlog.held_elsewhere,
               "the free file skipped as imported, the held one tried once")
    loop.turns(5)
    loop.clock.advance(HELD_RETRY_SECONDS - 0.01)
    loop.turns(5)
    assert tries == [held], "the held file was tried again before HELD_RETRY_SECONDS"
    assert loop.metrics.registry.get_sample_value("snapshots_pending_files") == 1
    loop.clock.advance(0.01)
    loop.until(lambda: tries == [held, held], "the held file to be tried again")
    loop.turns(5)
    assert tries == [held, held]
    assert records(db_conn, held) == []

    db_conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 7421))", (key,))
    loop.clock.advance(HELD_RETRY_SECONDS)
    loop.until(lambda: held in imported(db_conn), "the file to be loaded once it is free")
    assert tries == [held, held, held]
    assert_each_loaded_once(db_conn, {held: 4, free: 5})
    assert (loop.count("imported"), loop.count("skipped")) == (1, 1)
    loop.stop()


def test_oldest_pending_age_counts_from_when_a_growing_file_was_first_seen(
        data_dir: Path, start_loop: Callable[..., Loop]) -> None:
    """A writer that never finishes keeps the file's mtime fresh: the backlog gauge must
    still grow, so the alert on it sees a stuck writer."""
    path = put(data_dir, day_name(0), csv_text(1))
    clock = HandClock()  # the loop's, handed in so the file is first written on it

    def write(index: int) -> None:  # the stuck writer: a line a second, on the loop's clock
        with path.open("a") as out:
            out.write(f"{index},user {index},store,1.5\n")
        now = int(clock.time() * 1e9)
        os.utime(path, ns=(now, now))

    write(100)
    loop = start_loop(settle=2.0, clock=clock)

    def gauge(name: str) -> float | None:
        return loop.metrics.registry.get_sample_value(name)

    loop.turns()
    for second in range(1, 6):
        clock.advance(1.0)
        write(100 + second)
        loop.turns()
        assert gauge("snapshots_pending_files") == 1
        assert gauge("snapshots_oldest_pending_age_seconds") == pytest.approx(second)
    assert loop.count("imported") == 0, "a file still being written was taken"

    clock.advance(2.0)  # the writer stopped: settled
    loop.until(lambda: loop.count("imported") == 1, "the file to load")
    loop.turns()
    assert gauge("snapshots_oldest_pending_age_seconds") == 0
    assert gauge("snapshots_pending_files") == 0
    loop.stop()
