"""`snapshots sync` as a real process against a real PostgreSQL (SPEC sections 5 and 6).

Every wait is a condition with a deadline (``wait_until`` polling the ledger or the HTTP
endpoints); the only timed pauses are a writer's pacing. What must NOT happen (a failed file
retried in a loop, an outcome counted again, a held file hammered) is checked in process, over
loop turns on a clock the test moves (test_sync_loop.py), and the backlog's rules exactly
(test_backlog.py); processes stay for signals, kills, several processes and the real watcher.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import free_port, require_tool, run_cli, wait_until
from prometheus_client.parser import text_string_to_metric_families

from snapshots import __version__, store
from snapshots.config import describe

HEADER = "user_id,name,store_name,credit_limit\n"
SETTLE = 0.3
RESCAN = 0.5
DEADLINE = 60.0  # generous, for a loaded 2-core CI machine; healthy runs take a second or two
BIG_ROWS = 1_500_000


# --------------------------------------------------------------------------- files


def rows_text(count: int, seed: int = 0) -> str:
    return "".join(f"{seed * 1_000_000 + i},user {i},store {i % 7},{i % 97}.5\n"
                   for i in range(count))


def csv_text(count: int, seed: int = 0) -> str:
    return HEADER + rows_text(count, seed)


def day_name(index: int, prefix: str = "snapshot_", suffix: str = ".csv") -> str:
    return f"{prefix}{(dt.date(2023, 1, 1) + dt.timedelta(days=index)):%Y%m%d}{suffix}"


def put(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def rename_in(staging: Path, data_dir: Path, name: str, content: str) -> float:
    """Write the file elsewhere, rename it into the data directory; return the rename time."""
    source = put(staging, name, content)
    os.rename(source, data_dir / name)
    return time.time()


def bad_csv() -> str:
    return HEADER + "1,Jake,Best Berlin Burgers,10.5\n2,Mostafa\n"


# --------------------------------------------------------------------------- ledger


def records(conn: psycopg.Connection, name: str | None = None) -> list[dict[str, Any]]:
    """Every ledger record (oldest first), or a name's; [] before the ledger exists."""
    query = ("SELECT id, file_name, status, row_count, error, started_at, finished_at, "
             "size_bytes, sha256, imported_by FROM snapshot_imports")
    params: tuple[Any, ...] = ()
    if name is not None:
        query += " WHERE file_name = %s"
        params = (name,)
    try:
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(query + " ORDER BY id", params).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def imported(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for record in records(conn):
        if record["status"] == "imported":
            assert record["file_name"] not in found, f"two imported records: {record}"
            found[record["file_name"]] = record
    return found


def statuses(conn: psycopg.Connection, name: str) -> list[str]:
    return [r["status"] for r in records(conn, name)]


def data_rows(conn: psycopg.Connection, import_id: int | None = None) -> int:
    query = "SELECT count(*) FROM snapshots"
    params: tuple[Any, ...] = ()
    if import_id is not None:
        query += " WHERE snapshot_id = %s"
        params = (import_id,)
    try:
        row = conn.execute(query, params).fetchone()
    except psycopg.errors.UndefinedTable:
        return 0
    assert row is not None
    return int(row[0])


def assert_each_loaded_once(conn: psycopg.Connection, expected: dict[str, int]) -> None:
    """Exactly these names imported, once each, each with exactly its rows visible."""
    done = imported(conn)
    assert sorted(done) == sorted(expected)
    for name, rows in expected.items():
        assert done[name]["row_count"] == rows, name
        assert data_rows(conn, done[name]["id"]) == rows, name
    assert data_rows(conn) == sum(expected.values())


# --------------------------------------------------------------------------- the process


class Sync:
    """A `snapshots sync` process; output goes to a file (a pipe could fill and block it)."""

    def __init__(self, db_url: str, data_dir: Path, env: dict[str, str], *args: str,
                 log: Path, metrics: bool = True) -> None:
        self.port = free_port() if metrics else 0
        self.log_path = log
        self.command = [sys.executable, "-m", "snapshots", "--database", db_url, "sync",
                        "--data-dir", str(data_dir), "--metrics-host", "127.0.0.1",
                        "--metrics-port", str(self.port), *args]
        self._log = open(log, "wb")  # noqa: SIM115 (closed in close())
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    # -- HTTP

    def get(self, path: str) -> tuple[int, str] | None:
        """(status, body), or None while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def metrics_text(self) -> str:
        reply = wait_until(lambda: self.get("/metrics"), DEADLINE, interval=0.1,
                           message="/metrics to answer")
        assert reply[0] == 200, reply
        return reply[1]

    def metrics(self) -> dict[str, float]:
        """Samples as {'name{label="v"}': value}."""
        return parse_metrics(self.metrics_text())

    def status(self, path: str) -> int | None:
        reply = self.get(path)
        return reply[0] if reply else None

    # -- lifecycle

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sync did not exit within {timeout:g} s:\n{self.output()}")

    def stop(self, timeout: float = DEADLINE) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"sync exited early:\n{self.output()}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._log.close()
        print(f"--- {' '.join(self.command[2:])}\n{self.log_path.read_text(errors='replace')}")


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path


@pytest.fixture
def start_sync(db_url: str, data_dir: Path, cli_env: dict[str, str],
               tmp_path: Path) -> Iterator[Callable[..., Sync]]:
    started: list[Sync] = []

    def start(*args: str, database: str | None = None, directory: Path | None = None,
              metrics: bool = True) -> Sync:
        process = Sync(database or db_url, directory or data_dir, cli_env, *args,
                       log=tmp_path / f"sync-{len(started)}.log", metrics=metrics)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def run_once(db_url: str, data_dir: Path, env: dict[str, str], *args: str,
             timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    result = run_cli("--database", db_url, "sync", "--data-dir", data_dir, "--once",
                     "--settle", "0", *args, env=env, timeout=timeout)
    return result, time.monotonic() - began


# --------------------------------------------------------------------------- tests


def test_backlog_then_renamed_files_within_settle(
        db_conn: psycopg.Connection, data_dir: Path, staging: Path,
        start_sync: Callable[..., Sync]) -> None:
    expected = {day_name(i): 10 + i for i in range(3)}
    for name, rows in expected.items():
        put(data_dir, name, csv_text(rows, seed=len(name) + rows))
    sync = start_sync("--settle", str(SETTLE), "--rescan", "30")

    wait_until(lambda: len(imported(db_conn)) == 3, DEADLINE, message="the backlog")
    assert_each_loaded_once(db_conn, expected)

    latencies = []
    for i in range(3, 6):
        name = day_name(i)
        expected[name] = 20 + i
        renamed = rename_in(staging, data_dir, name, csv_text(20 + i, seed=i))
        record = wait_until(lambda name=name: imported(db_conn).get(name), DEADLINE,
                            message=f"{name} to be imported")
        latencies.append(record["finished_at"].timestamp() - renamed)
    print(f"rename-to-commit latencies (settle {SETTLE}s): "
          + ", ".join(f"{x:.3f}s" for x in latencies))
    assert_each_loaded_once(db_conn, expected)
    # The promise is settle + 1 s; the slack absorbs a busy CI machine, not a lost event.
    assert sorted(latencies)[1] < SETTLE + 1.0 + 2.0, latencies
    sync.assert_running()
    assert sync.stop() == 0


def test_slow_writer_is_loaded_once_and_whole(
        db_conn: psycopg.Connection, data_dir: Path, start_sync: Callable[..., Sync]) -> None:
    sync = start_sync("--settle", "1", "--rescan", str(RESCAN))
    wait_until(lambda: sync.status("/readyz") == 200, DEADLINE, message="sync to be ready")
    name = "snapshot_20230301.csv"
    content = csv_text(5000).encode()
    pieces = 12
    size = len(content) // pieces + 1
    with open(data_dir / name, "wb") as out:
        for start in range(0, len(content), size):  # cut mid-line: half a file is no CSV
            out.write(content[start:start + size])
            out.flush()
            assert records(db_conn, name) == [], "a half-written file was taken"
            time.sleep(0.25)  # the writer's pace (12 pieces, ~3 s), well under --settle
    record = wait_until(lambda: imported(db_conn).get(name), DEADLINE,
                        message="the finished file to be imported")
    assert record["row_count"] == 5000
    assert record["size_bytes"] == len(content)
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert statuses(db_conn, name) == ["imported"]
    assert data_rows(db_conn) == 5000
    assert sync.stop() == 0


def test_default_patterns_skip_hidden_other_suffixes_and_subdirectories(
        db_url: str, db_conn: psycopg.Connection, data_dir: Path,
        cli_env: dict[str, str]) -> None:
    put(data_dir, "snapshot_20230101.csv", csv_text(3))
    put(data_dir, "snapshot_20230102.csv.gz", gzip.compress(csv_text(4, seed=1).encode()))
    put(data_dir, ".snapshot_20230103.csv", csv_text(5))
    put(data_dir, "snapshot_20230104.txt", csv_text(6))
    put(data_dir, "sub/snapshot_20230105.csv", csv_text(7))
    result, _ = run_once(db_url, data_dir, cli_env)
    assert result.returncode == 0, result.stderr
    assert_each_loaded_once(db_conn, {"snapshot_20230101.csv": 3, "snapshot_20230102.csv.gz": 4})


def test_ignored_names_and_pattern(db_url: str, db_conn: psycopg.Connection, data_dir: Path,
                                   cli_env: dict[str, str]) -> None:
    names = ("snap_1.csv", "snap_2.txt", "snap_3.tmp", "snap_4.csv.tmp", "snap_5.part",
             "snap_6.csv~", ".snap_7.csv", "other_8.csv")
    for rows, name in enumerate(names, start=1):
        put(data_dir, name, csv_text(rows, seed=rows))
    result, _ = run_once(db_url, data_dir, cli_env, "--pattern", "snap_*")
    assert result.returncode == 0, result.stderr
    assert_each_loaded_once(db_conn, {"snap_1.csv": 1, "snap_2.txt": 2})


def test_recursive_only_with_the_flag(db_url: str, db_conn: psycopg.Connection,
                                      data_dir: Path, cli_env: dict[str, str]) -> None:
    put(data_dir, "snapshot_20230101.csv", csv_text(2))
    put(data_dir, "a/b/snapshot_20230102.csv", csv_text(3, seed=1))
    put(data_dir, ".hidden/snapshot_20230103.csv", csv_text(4, seed=2))
    result, _ = run_once(db_url, data_dir, cli_env)
    assert result.returncode == 0, result.stderr
    assert_each_loaded_once(db_conn, {"snapshot_20230101.csv": 2})

    result, _ = run_once(db_url, data_dir, cli_env, "--recursive")
    assert result.returncode == 0, result.stderr
    assert_each_loaded_once(db_conn, {"snapshot_20230101.csv": 2, "snapshot_20230102.csv": 3})
    summary = json.loads(result.stdout)
    assert summary["files"] == {"imported": 1, "skipped": 1, "failed": 0, "conflict": 0,
        "still_failed": 0}


def test_database_outage_loses_nothing(cli_env: dict[str, str], data_dir: Path,
                                       staging: Path, start_sync: Callable[..., Sync]) -> None:
    """A dedicated embedded server (cli_env's), stopped and started under a running sync."""
    started = run_cli("db", "start", env=cli_env, timeout=180)
    assert started.returncode == 0, started.stderr
    url = run_cli("db", "url", env=cli_env).stdout.strip()
    assert url.startswith("postgresql://"), url

    def ledger(fetch: Callable[[psycopg.Connection], Any]) -> Any:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            return fetch(conn)

    expected = {day_name(i): 3 + i for i in range(2)}
    sync = start_sync("--settle", "0.2", "--rescan", str(RESCAN), database=url)
    for name, rows in expected.items():
        rename_in(staging, data_dir, name, csv_text(rows, seed=rows))
    wait_until(lambda: len(ledger(imported)) == 2, DEADLINE, message="the first files")
    assert sync.status("/readyz") == 200
    assert sync.metrics()["snapshots_database_up"] == 1

    stopped = run_cli("db", "stop", env=cli_env, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    # Nothing arrives: an idle service must still notice that the database went away.
    wait_until(lambda: sync.status("/readyz") == 503, DEADLINE,
               message="/readyz to fail while the database is down")
    assert sync.metrics()["snapshots_database_up"] == 0
    assert sync.status("/healthz") == 200  # the loop itself is fine: no restart wanted
    for i in range(2, 5):
        rename_in(staging, data_dir, day_name(i), csv_text(3 + i, seed=i))
    expected |= {day_name(2): 5, day_name(3): 6, day_name(4): 7}
    wait_until(lambda: sync.metrics()["snapshots_pending_files"] == 3, DEADLINE,
               message="sync to keep watching the directory while the database is down")

    started = run_cli("db", "start", env=cli_env, timeout=180)
    assert started.returncode == 0, started.stderr
    wait_until(lambda: len(ledger(imported)) == 5, DEADLINE,
               message="every file dropped during the outage to be loaded")
    wait_until(lambda: sync.status("/readyz") == 200, DEADLINE, message="/readyz to recover")
    assert sync.metrics()["snapshots_database_up"] == 1
    ledger(lambda conn: assert_each_loaded_once(conn, expected))
    assert {r["status"] for r in ledger(records)} == {"imported"}
    sync.assert_running()
    assert sync.stop() == 0


def test_three_processes_sixty_files_each_loaded_once(
        db_conn: psycopg.Connection, data_dir: Path, staging: Path,
        start_sync: Callable[..., Sync]) -> None:
    expected = {day_name(i): 20 + (i * 7) % 50 for i in range(60)}
    names = list(expected)
    for name in names[:30]:  # a backlog for all three to race over ...
        put(data_dir, name, csv_text(expected[name], seed=names.index(name)))
    workers = [start_sync("--settle", "0.2", "--rescan", str(RESCAN), "--jobs", "2")
               for _ in range(3)]
    for name in names[30:]:  # ... and files arriving while they run
        rename_in(staging, data_dir, name, csv_text(expected[name], seed=names.index(name)))
    wait_until(lambda: len(imported(db_conn)) == 60, 90,
               message="sixty files to be imported")
    for worker in workers:
        wait_until(lambda worker=worker: worker.metrics()["snapshots_pending_files"] == 0,
                   DEADLINE, message="every worker to see nothing pending")
    assert_each_loaded_once(db_conn, expected)
    every = records(db_conn)
    assert [r for r in every if r["status"] != "imported"] == []
    assert len(every) == 60
    pids = {r["imported_by"]["pid"] for r in every}
    print(f"sixty files loaded by {len(pids)} process(es)")
    assert pids <= {w.process.pid for w in workers}
    for worker in workers:
        assert worker.stop() == 0


# --------------------------------------------------------------------------- SIGTERM


@pytest.fixture(scope="session")
def big_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 53 MB, 1.5 M rows: a few seconds of COPY, long enough to be interrupted."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    with open(path, "w") as out:
        out.write(HEADER)
        for start in range(0, BIG_ROWS, 100_000):
            out.writelines(f"{i},user {i},store {i % 1000},{i % 97}.25\n"
                           for i in range(start, start + 100_000))
    return path


def link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def prepare_big(db_url: str, data_dir: Path, staging: Path, cli_env: dict[str, str],
                big_csv: Path) -> str:
    """Create the table with a small import first (so the big file takes the plain COPY
    path), and put the big file in the data directory."""
    small = put(staging, "snapshot_20240101.csv", csv_text(3))
    result = run_cli("--database", db_url, "import", small, env=cli_env)
    assert result.returncode == 0, result.stderr
    name = "snapshot_20240102.csv"
    link(big_csv, data_dir / name)
    return name


def wait_importing(conn: psycopg.Connection, name: str, sync: Sync) -> float:
    def importing() -> bool:
        sync.assert_running()
        return statuses(conn, name) == ["importing"]

    wait_until(importing, DEADLINE, interval=0.02, message=f"{name} to be claimed")
    return time.time()


def test_sigterm_lets_the_file_in_flight_finish_within_grace(
        db_url: str, db_conn: psycopg.Connection, data_dir: Path, staging: Path,
        cli_env: dict[str, str], big_csv: Path, start_sync: Callable[..., Sync]) -> None:
    name = prepare_big(db_url, data_dir, staging, cli_env, big_csv)
    sync = start_sync("--settle", "0", "--grace", "120", metrics=False)
    wait_importing(db_conn, name, sync)
    signalled = time.time()
    sync.signal(signal.SIGTERM)
    assert sync.wait(180) == 0
    record = imported(db_conn)[name]
    assert record["finished_at"].timestamp() > signalled, "finished before the signal"
    assert record["row_count"] == BIG_ROWS
    assert data_rows(db_conn, record["id"]) == BIG_ROWS
    lines = timestamped(sync.output())
    assert f"INFO: syncing {data_dir.resolve()} into snapshots of {describe(db_url)} " \
        "(settle 0.0s" in lines[0], lines
    assert "INFO: received SIGTERM: finishing 1 file in flight (grace 120s)" in "\n".join(lines)
    assert re.search(r"INFO: stopped [0-9.]+s after SIGTERM; 1 file in flight then: "
                     r"1 finished, 0 cancelled$", lines[-1]), lines


def timestamped(output: str) -> list[str]:
    """The log's lines, each checked to start with the local time and its offset (a --once
    run's JSON summary, on stdout, is left out)."""
    lines = [line for line in output.splitlines() if line.strip() and line[0] != "{"]
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d "
                        r"(DEBUG|INFO|WARNING|ERROR): ", line), line
    return lines


@pytest.mark.parametrize("once", [False, True], ids=["service", "once"])
def test_sigterm_beyond_grace_cancels_and_rolls_back(
        once: bool, db_url: str, db_conn: psycopg.Connection, data_dir: Path, staging: Path,
        cli_env: dict[str, str], big_csv: Path, start_sync: Callable[..., Sync],
        tmp_path: Path) -> None:
    name = prepare_big(db_url, data_dir, staging, cli_env, big_csv)
    summary = tmp_path / "summary.json"
    extra = ["--once", "--summary-file", str(summary)] if once else []
    sync = start_sync("--settle", "0", "--grace", "0", *extra, metrics=False)
    wait_importing(db_conn, name, sync)
    sync.signal(signal.SIGTERM)
    code = sync.wait()
    if once:
        assert code != 0, "an interrupted --once run must not look like a success"
        written = json.loads(summary.read_text())
        assert written["interrupted"] is True
        assert written["files"]["failed"] == 0, "a cancellation is not the file's failure"
    else:
        assert code == 0, "the long-running service exits 0 on SIGTERM"
    lines = timestamped(sync.output())
    assert any(f"cancelled {name} at shutdown" in line for line in lines), lines
    assert re.search(r"INFO: stopped [0-9.]+s after SIGTERM; 1 file in flight then: "
                     r"0 finished, 1 cancelled$", lines[-1]), lines
    # Not a failure anywhere: no record is left of the attempt (nothing of it was written),
    # so `list` shows the file as not imported and no failed snapshot.
    store.reap_interrupted(db_conn, "public", "snapshots")  # what the next run would do
    assert records(db_conn, name) == []
    assert data_rows(db_conn) == 3  # the small file's rows, nothing of the big one
    listed = run_cli("--database", db_url, "list", "--format", "json", data_dir / name,
                     env=cli_env)
    assert listed.returncode == 1 and json.loads(listed.stdout)[0]["state"] == "not_imported"
    failed = run_cli("--database", db_url, "list", "--format", "json", "--status", "failed",
                     env=cli_env)
    assert failed.returncode == 0 and json.loads(failed.stdout) == [], failed.stdout
    # A cancelled load is not the file's fault: the next run loads it, not "still failed".
    result, _ = run_once(db_url, data_dir, cli_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"]["imported"] == 1
    assert imported(db_conn)[name]["row_count"] == BIG_ROWS


def test_retention_forgets_for_good(db_url: str, db_conn: psycopg.Connection, data_dir: Path,
                                   cli_env: dict[str, str]) -> None:
    # Snapshot dates decades ago: older than any retention. The files stay in the directory.
    put(data_dir, "snapshot_20000101.csv", csv_text(2))
    put(data_dir, "snapshot_20000102.csv", csv_text(3, seed=1))
    for run in range(3):
        result, _ = run_once(db_url, data_dir, cli_env, "--retention-days", "30")
        assert result.returncode == 0, result.stderr
        statuses_now = {r[0]: r[1] for r in db_conn.execute(
            "SELECT file_name, status FROM snapshot_imports ORDER BY id")}
        # Loaded and forgotten in the first run; never loaded again while the bytes stay.
        assert statuses_now == {"snapshot_20000101.csv": "forgotten",
                                "snapshot_20000102.csv": "forgotten"}, run
        assert db_conn.execute("SELECT count(*) FROM snapshot_imports").fetchone() == (2,)
        assert data_rows(db_conn) == 0


# --------------------------------------------------------------------------- --once


def test_once_exit_codes_and_summary(db_url: str, db_conn: psycopg.Connection,
                                     data_dir: Path, cli_env: dict[str, str],
                                     tmp_path: Path) -> None:
    put(data_dir, day_name(0), csv_text(4))
    put(data_dir, day_name(1), csv_text(6, seed=1))
    summary_file = tmp_path / "summary.json"
    result, _ = run_once(db_url, data_dir, cli_env, "--summary-file", str(summary_file))
    assert result.returncode == 0, result.stderr
    summary = json.loads(summary_file.read_text())
    assert summary == json.loads(result.stdout)
    assert summary["files"] == {"imported": 2, "skipped": 0, "failed": 0, "conflict": 0,
        "still_failed": 0}
    assert summary["rows"] == 10
    assert summary["bytes"] == sum((data_dir / day_name(i)).stat().st_size for i in range(2))
    assert isinstance(summary["seconds"], float | int) and summary["seconds"] >= 0
    assert summary["failures"] == [] and summary["interrupted"] is False

    put(data_dir, day_name(2), bad_csv())
    result, _ = run_once(db_url, data_dir, cli_env, "--summary-file", str(summary_file))
    assert result.returncode == 1, result.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["files"] == {"imported": 0, "skipped": 2, "failed": 1, "conflict": 0,
        "still_failed": 0}
    assert [f["file"] for f in summary["failures"]] == [day_name(2)]
    assert_each_loaded_once(db_conn, {day_name(0): 4, day_name(1): 6})

    # The same bytes again: a failed file is not retried until its bytes change (or retry).
    result, _ = run_once(db_url, data_dir, cli_env, "--summary-file", str(summary_file))
    assert statuses(db_conn, day_name(2)) == ["failed"]
    summary = json.loads(summary_file.read_text())
    assert summary["files"]["imported"] == 0 and summary["files"]["skipped"] == 2


def test_once_summary_fits_four_kilobytes(db_url: str, data_dir: Path,
                                          cli_env: dict[str, str], tmp_path: Path) -> None:
    count = 60
    for i in range(count):
        put(data_dir, day_name(i, prefix="snapshot_" + "x" * 150 + "_"), bad_csv())
    summary_file = tmp_path / "summary.json"
    result, _ = run_once(db_url, data_dir, cli_env, "--summary-file", str(summary_file),
                         "--jobs", "4")
    assert result.returncode == 1, result.stderr
    raw = summary_file.read_bytes()
    assert len(raw) <= 4096, len(raw)
    summary = json.loads(raw)
    assert summary["files"]["failed"] == count
    assert summary["failures"], "some failures fit and are listed"
    assert len(summary["failures"]) + summary["failures_omitted"] == count


# --------------------------------------------------------------------------- --poll, restart


def test_poll_mode_loads_a_new_file(db_conn: psycopg.Connection, data_dir: Path,
                                    staging: Path, start_sync: Callable[..., Sync]) -> None:
    sync = start_sync("--poll", "--settle", "0.2", "--rescan", "30")
    wait_until(lambda: sync.status("/readyz") == 200, DEADLINE, message="sync to be ready")
    rename_in(staging, data_dir, day_name(0), csv_text(7))
    wait_until(lambda: day_name(0) in imported(db_conn), DEADLINE,
               message="the polled file to be imported")
    assert_each_loaded_once(db_conn, {day_name(0): 7})
    assert sync.stop() == 0


def test_restart_over_imported_files_reads_none_of_their_bytes(
        db_url: str, db_conn: psycopg.Connection, data_dir: Path,
        cli_env: dict[str, str]) -> None:
    count = 300
    for i in range(count):
        put(data_dir, day_name(i), csv_text(1 + i % 3, seed=i))
    result, first = run_once(db_url, data_dir, cli_env, "--jobs", "4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"]["imported"] == count
    memory = dict(db_conn.execute(
        "SELECT path, hashed_at FROM snapshot_files WHERE table_name = 'snapshots'").fetchall())
    assert len(memory) == count

    # Same size, same mtime, same inode, different bytes: a sync that read any of these files
    # again would find a different sha256 and report a conflict. (chmod 000 proves nothing as
    # root, so the bytes themselves are the tripwire.)
    for i in range(count):
        path = data_dir / day_name(i)
        before = path.stat()
        content = path.read_bytes()
        with open(path, "r+b") as out:
            out.write(content.replace(b"user", b"USER"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = path.stat()
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
            before.st_size, before.st_mtime_ns, before.st_ino)

    result, second = run_once(db_url, data_dir, cli_env, "--jobs", "4")
    print(f"first run over {count} files {first:.2f}s, restart {second:.2f}s")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == {"imported": 0, "skipped": count, "failed": 0, "conflict": 0,
        "still_failed": 0}
    assert dict(db_conn.execute(
        "SELECT path, hashed_at FROM snapshot_files WHERE table_name = 'snapshots'"
    ).fetchall()) == memory, "a file was hashed again"
    assert len(records(db_conn)) == count
    assert second < max(10.0, first), "the restart was not cheap"


# --------------------------------------------------------------------------- telemetry


def test_metrics_match_what_happened(db_url: str, db_conn: psycopg.Connection,
                                     data_dir: Path, staging: Path, cli_env: dict[str, str],
                                     start_sync: Callable[..., Sync]) -> None:
    # Already imported by `snapshots import` (skipped by sync), and a conflict: the same name
    # imported earlier with other bytes.
    put(data_dir, day_name(0), csv_text(2))
    put(staging, day_name(1), csv_text(3, seed=7))
    for path in (data_dir / day_name(0), staging / day_name(1)):
        result = run_cli("--database", db_url, "import", path, env=cli_env)
        assert result.returncode == 0, result.stderr
    put(data_dir, day_name(1), csv_text(3, seed=8))
    put(data_dir, day_name(2), csv_text(11, seed=2))
    put(data_dir, day_name(3), csv_text(13, seed=3))
    put(data_dir, day_name(4), bad_csv())
    started = time.time()
    sync = start_sync("--settle", "0.2", "--rescan", str(RESCAN))

    def settled() -> dict[str, float] | None:
        sync.assert_running()
        values = sync.metrics()
        total = sum(values[f'snapshots_files_total{{result="{r}"}}']
                    for r in ("imported", "skipped", "failed", "conflict"))
        return values if total == 5 and values["snapshots_pending_files"] == 0 else None

    values = wait_until(settled, DEADLINE, interval=0.1, message="five outcomes")
    assert values['snapshots_files_total{result="imported"}'] == 2
    assert values['snapshots_files_total{result="skipped"}'] == 1
    assert values['snapshots_files_total{result="failed"}'] == 1
    assert values['snapshots_files_total{result="conflict"}'] == 1
    assert values["snapshots_rows_total"] == 24
    assert values["snapshots_rows_rejected_total"] == 0
    assert values["snapshots_bytes_total"] == sum(
        (data_dir / day_name(i)).stat().st_size for i in (2, 3))
    assert values["snapshots_import_duration_seconds_count"] >= 2
    assert values["snapshots_oldest_pending_age_seconds"] == 0
    assert values["snapshots_last_success_timestamp_seconds"] >= started
    assert values["snapshots_database_up"] == 1
    assert values[f'snapshots_build_info{{version="{__version__}"}}'] == 1
    assert sync.get("/healthz") == (200, "ok\n")
    assert sync.get("/readyz") == (200, "ok\n")
    assert sync.status("/nope") == 404
    text = sync.metrics_text()
    assert str(data_dir) not in text and "snapshot_2023" not in text  # no paths in labels

    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sync.stop() == 0


def test_upsert_backlog_merges_in_snapshot_order_with_several_jobs(
        db_url: str, db_conn: psycopg.Connection, data_dir: Path,
        cli_env: dict[str, str]) -> None:
    """The seed's own table (a primary key, no snapshot_id): merge order is snapshot order,
    so parallel jobs must not let a newer snapshot overtake an older one."""
    db_conn.execute("CREATE TABLE snapshots (user_id bigint PRIMARY KEY, name text, "
                    "store_name text, credit_limit numeric)")
    for i in range(8):
        put(data_dir, day_name(i), HEADER + "".join(
            f"{k},user {k},s{i} store,{k}.5\n" for k in range(200 + 50 * i)))
    result, _ = run_once(db_url, data_dir, cli_env, "--jobs", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    done = imported(db_conn)
    assert sorted(done) == [day_name(i) for i in range(8)]
    order = [r["file_name"] for r in sorted(done.values(), key=lambda r: r["finished_at"])]
    assert order == [day_name(i) for i in range(8)]
    assert data_rows(db_conn) == 200 + 50 * 7
    row = db_conn.execute("SELECT store_name FROM snapshots WHERE user_id = 0").fetchone()
    assert row is not None and row[0].startswith("s7")


def test_file_held_by_another_process_is_skipped_not_waited_for(
        db_url: str, db_conn: psycopg.Connection, data_dir: Path,
        cli_env: dict[str, str]) -> None:
    """Another importer holds a snapshot's name lock (this test, standing in for it): a
    --once run loads the other files and does not wait for it. (The service's side, not
    hammering it and taking it once free, is test_sync_loop's.)"""
    held, free = day_name(0), day_name(1)
    put(data_dir, held, csv_text(4))
    put(data_dir, free, csv_text(5, seed=1))
    result = run_cli("--database", db_url, "migrate", env=cli_env)
    assert result.returncode == 0, result.stderr
    key = "\x1f".join(("name", "public", "snapshots", held))
    db_conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7421))", (key,))
    result, _ = run_once(db_url, data_dir, cli_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == {"imported": 1, "skipped": 1, "failed": 0,
                                                  "conflict": 0, "still_failed": 0}
    assert sorted(imported(db_conn)) == [free]
    assert records(db_conn, held) == []


def test_once_without_a_database_exits_3(data_dir: Path, cli_env: dict[str, str],
                                         tmp_path: Path) -> None:
    put(data_dir, day_name(0), csv_text(2))
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path / 'no-server'}"
    summary_file = tmp_path / "summary.json"
    result, _ = run_once(nowhere, data_dir, cli_env, "--summary-file", str(summary_file))
    assert result.returncode == 3, result.stdout + result.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["files"]["imported"] == 0
    assert "database_error" in summary


def test_a_large_file_alone_loads_in_parallel_parts(
        db_conn: psycopg.Connection, data_dir: Path, staging: Path,
        start_sync: Callable[..., Sync]) -> None:
    """--jobs counts connections: a large file that arrives alone takes them all for its
    parts; the snapshot still appears at once, as a child table of the data table."""
    expected = {day_name(0): 50}
    put(data_dir, day_name(0), csv_text(50))  # creates the table: one stream
    sync = start_sync("--settle", str(SETTLE), "--rescan", str(RESCAN), "--jobs", "3",
                      "--part-size", "2k")
    wait_until(lambda: len(imported(db_conn)) == 1, DEADLINE, message="the first file")
    expected[day_name(1)] = 3000
    rename_in(staging, data_dir, day_name(1), csv_text(3000, seed=1))
    record = wait_until(lambda: imported(db_conn).get(day_name(1)), DEADLINE,
                        message="the large file")
    assert_each_loaded_once(db_conn, expected)
    children = db_conn.execute(
        "SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid "
        "WHERE h.inhparent = 'snapshots'::regclass").fetchall()
    assert children == [(f"snapshot_part_{record['id']}",)]
    assert sync.stop() == 0
    assert "3 parts in parallel" in sync.output()
