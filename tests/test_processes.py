"""Real processes: SIGKILL and SIGINT in the middle of a COPY, a lost connection, two
processes importing the same file at once, and several files over --jobs connections.

Every wait is on something observable (the server's COPY progress, locks, the ledger), never
a guessed sleep.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psycopg
import pytest
from helpers import (
    copy_in_progress,
    finish,
    other_sessions,
    run_cli,
    start_cli,
    wait_until,
    write_rows,
)
from psycopg import sql

from snapshots import schema as ddl

BIG_ROWS = 1_500_000
HEADER = b"user_id,name,store_name,credit_limit\n"


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot large enough that its COPY takes a few seconds (generated once)."""
    return write_rows(tmp_path_factory.mktemp("big") / "snapshot_20230105.csv",
                      HEADER.decode(), BIG_ROWS,
                      lambda i: f"{i},Name {i},Store {i % 997},{i % 10_000}.{i % 100:02d}\n")







def ledger(conn: psycopg.Connection) -> list[tuple[int, str, str, str | None]]:
    return conn.execute(
        "SELECT id, file_name, status, error FROM snapshot_imports ORDER BY id").fetchall()


def table_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None


def count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table))).fetchone()[0]


def small(tmp_path: Path, name: str, rows: int = 3, offset: int = 0) -> Path:
    path = tmp_path / name
    path.write_bytes(HEADER + b"".join(
        b"%d,Name %d,Store,%d.5\n" % (i, i, i) for i in range(1 + offset, rows + 1 + offset)))
    return path


# --------------------------------------------------------------------------- killed mid-COPY


@pytest.mark.slow
@pytest.mark.parametrize("existing_table", [False, True], ids=["new-table", "existing-table"])
def test_sigkill_in_the_middle_of_a_copy(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                         db_conn: psycopg.Connection, big_file: Path,
                                         procs: list[subprocess.Popen[str]],
                                         existing_table: bool) -> None:
    if existing_table:
        first = small(tmp_path, "snapshot_20230101.csv")
        assert run_cli("--database", db_url, "import", first, env=cli_env).returncode == 0
    rows_before = count(db_conn, "snapshots") if existing_table else 0

    proc = start_cli("--database", db_url, "import", big_file, env=cli_env)
    procs.append(proc)
    wait_until(lambda: copy_in_progress(db_conn) > 0 or proc.poll() is not None, timeout=60,
               message="the COPY to start")
    assert proc.poll() is None, "the import finished before it could be killed: file too small"
    claim = [r for r in ledger(db_conn) if r[1] == big_file.name]
    assert [r[2] for r in claim] == ["importing"]
    proc.send_signal(signal.SIGKILL)
    code, out, _ = finish(proc)
    assert code == -signal.SIGKILL
    assert "imported" not in out

    # Nothing visible, even while the server may still be rolling the session back.
    assert table_exists(db_conn, "snapshots") == existing_table
    if existing_table:
        assert count(db_conn, "snapshots") == rows_before
    assert [r[2] for r in ledger(db_conn) if r[1] == big_file.name] == ["importing"]
    wait_until(lambda: other_sessions(db_conn) == 0, timeout=30,
               message="the killed process's session to end")

    # The next run (of another file) marks the orphaned claim interrupted.
    other = small(tmp_path, "snapshot_20230110.csv", offset=100)
    result = run_cli("--database", db_url, "import", other, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert f"marked import #{claim[0][0]} as interrupted" in result.stderr
    (_, _, status, error), = [r for r in ledger(db_conn) if r[0] == claim[0][0]]
    assert status == "failed" and error.startswith("interrupted")

    # A later import of the killed file succeeds, in full.
    result = run_cli("--database", db_url, "import", big_file, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert count(db_conn, "snapshots") == rows_before + 3 + BIG_ROWS
    assert [r[2] for r in ledger(db_conn) if r[1] == big_file.name] == ["failed", "imported"]
    listed = run_cli("--database", db_url, "list", "--all", "--format", "json", env=cli_env)
    assert '"error": "interrupted' in listed.stdout


@pytest.mark.slow
def test_sigint_in_the_middle_of_a_copy(cli_env: dict[str, str], db_url: str,
                                        db_conn: psycopg.Connection, big_file: Path,
                                        procs: list[subprocess.Popen[str]]) -> None:
    """Ctrl-C: rolled back, and the claim removed by the process itself (a cancellation is
    no failure of the file: nothing of it stays behind), exit 130."""
    proc = start_cli("--database", db_url, "import", big_file, env=cli_env)
    procs.append(proc)
    wait_until(lambda: copy_in_progress(db_conn) > 0 or proc.poll() is not None, timeout=60,
               message="the COPY to start")
    assert proc.poll() is None, "the import finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    code, _out, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    assert not table_exists(db_conn, "snapshots")
    assert ledger(db_conn) == []


@pytest.mark.slow
def test_connection_lost_in_the_middle_of_a_copy(cli_env: dict[str, str], db_url: str,
                                                 db_conn: psycopg.Connection, big_file: Path,
                                                 procs: list[subprocess.Popen[str]]) -> None:
    proc = start_cli("--database", db_url, "import", big_file, env=cli_env)
    procs.append(proc)
    wait_until(lambda: copy_in_progress(db_conn) > 0 or proc.poll() is not None, timeout=60,
               message="the COPY to start")
    assert proc.poll() is None, "the import finished before its connection could be cut"
    terminated = db_conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_progress_copy "
        "WHERE datname = current_database()").fetchall()
    assert terminated == [(True,)]
    code, _, err = finish(proc)
    assert code == 3, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lost the database" in errors[0], err
    assert "Traceback" not in err
    assert not table_exists(db_conn, "snapshots")
    # The process reconnected to record the failure; no claim is left `importing`.
    assert [r[2] for r in ledger(db_conn)] == ["failed"]


def test_claim_of_a_process_that_died_while_others_waited(tmp_path: Path,
                                                          cli_env: dict[str, str],
                                                          db_url: str,
                                                          db_conn: psycopg.Connection,
                                                          pg_server: str,
                                                          procs: list[subprocess.Popen[str]]
                                                          ) -> None:
    """A claim whose owner still held the lock when the next import started (a killed
    client's session can outlive it): the import waits for the lock, then marks that claim
    interrupted itself, rather than leaving it `importing` until some later run."""
    path = small(tmp_path, "snapshot_20230101.csv")
    assert run_cli("--database", db_url, "migrate", env=cli_env).returncode == 0
    owner = psycopg.connect(db_url, autocommit=True)
    try:
        owner.execute(sql.SQL("SELECT pg_advisory_lock({})").format(
            ddl.lock_key("name", "public", "snapshots", path.name)))
        stale = owner.execute(
            "INSERT INTO snapshot_imports (table_name, file_name, sha256, size_bytes, status) "
            "VALUES ('snapshots', %s, repeat('0', 64), 1, 'importing') RETURNING id",
            (path.name,)).fetchone()[0]
        proc = start_cli("--database", db_url, "import", path, env=cli_env)
        procs.append(proc)
        wait_until(lambda: waiting_for_advisory_locks(db_conn) == 1, timeout=60,
                   message="the import to wait for the snapshot's lock")
    finally:
        owner.close()  # the owner is gone
    code, _out, err = finish(proc)
    assert code == 0, err
    assert f"marked import #{stale} as interrupted" in err
    assert [(r[2], (r[3] or "")[:11]) for r in ledger(db_conn)] == [
        ("failed", "interrupted"), ("imported", "")]
    assert count(db_conn, "snapshots") == 3


# --------------------------------------------------------------------------- concurrency


def waiting_for_advisory_locks(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted "
        "AND d.datname = current_database()").fetchone()
    return int(row[0])


@pytest.mark.smoke
@pytest.mark.parametrize("existing_table", [False, True], ids=["new-table", "existing-table"])
def test_two_processes_import_the_same_file_at_the_same_moment(
        tmp_path: Path, cli_env: dict[str, str], db_url: str, db_conn: psycopg.Connection,
        procs: list[subprocess.Popen[str]], existing_table: bool) -> None:
    """Both are held at the snapshot's lock, then let go together: one loads it, the other
    waits and reports it already imported."""
    if existing_table:
        first = small(tmp_path, "snapshot_20230101.csv")
        assert run_cli("--database", db_url, "import", first, env=cli_env).returncode == 0
    else:
        assert run_cli("--database", db_url, "migrate", env=cli_env).returncode == 0
    path = small(tmp_path, "snapshot_20230102.csv", rows=5_000, offset=10)
    gate = psycopg.connect(db_url, autocommit=True)
    try:
        gate.execute(sql.SQL("SELECT pg_advisory_lock({})").format(
            ddl.lock_key("name", "public", "snapshots", path.name)))
        procs.extend(start_cli("--database", db_url, "import", path, env=cli_env)
                     for _ in range(2))
        wait_until(lambda: waiting_for_advisory_locks(db_conn) == 2, timeout=60,
                   message="both imports to wait for the snapshot's lock")
    finally:
        gate.close()
    results = [finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    outputs = sorted(out.split(":")[0] for _, out, _ in results)
    assert outputs == [f"imported {path.name}", f"skipped {path.name}"], results
    assert "already imported" in next(out for _, out, _ in results if out.startswith("skipped"))
    statuses = [r[2] for r in ledger(db_conn) if r[1] == path.name]
    assert statuses == ["imported"]
    assert count(db_conn, "snapshots") == 5_000 + (3 if existing_table else 0)


def test_two_processes_without_a_gate(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                      db_conn: psycopg.Connection,
                                      procs: list[subprocess.Popen[str]]) -> None:
    """Started together on an empty database: the ledger's creation and the table's are
    raced too. Whatever the interleaving, the file is loaded once."""
    path = small(tmp_path, "snapshot_20230102.csv", rows=20_000)
    procs.extend(start_cli("--database", db_url, "import", path, env=cli_env) for _ in range(3))
    results = [finish(proc) for proc in procs]
    assert [code for code, _, _ in results] == [0, 0, 0], [err for _, _, err in results]
    assert sorted(out.split(" ")[0] for _, out, _ in results) == [
        "imported", "skipped", "skipped"]
    assert [r[2] for r in ledger(db_conn)] == ["imported"]
    assert count(db_conn, "snapshots") == 20_000


@pytest.mark.smoke
def test_several_files_with_two_jobs(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                     db_conn: psycopg.Connection) -> None:
    """Four files over two connections into a table that does not exist yet."""
    files = [small(tmp_path, f"snapshot_2023010{day}.csv", rows=1_000 * day, offset=day * 10_000)
             for day in (4, 2, 3, 1)]
    result = run_cli("--database", db_url, "import", "--jobs", "2", *files, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("imported snapshot_") == 4
    per_snapshot = dict(db_conn.execute(
        "SELECT i.file_name, count(s.*) FROM snapshot_imports i "
        "LEFT JOIN snapshots s ON s.snapshot_id = i.id WHERE i.status = 'imported' "
        "GROUP BY i.file_name").fetchall())
    assert per_snapshot == {f"snapshot_2023010{day}.csv": 1_000 * day for day in (1, 2, 3, 4)}
    latest = db_conn.execute("SELECT min(user_id), count(*) FROM snapshots_latest").fetchone()
    assert latest == (40_001, 4_000)
    pids = db_conn.execute(
        "SELECT DISTINCT imported_by->>'pid' FROM snapshot_imports").fetchall()
    assert len(pids) == 1  # one process


def test_with_jobs_the_first_snapshot_still_chooses_the_types(tmp_path: Path,
                                                              cli_env: dict[str, str],
                                                              db_url: str,
                                                              db_conn: psycopg.Connection
                                                              ) -> None:
    """The earliest file creates the table, as without --jobs: its decimals make the column
    numeric, and the later files' integers fit. (Were a later file to win the race to create
    the table, the column would be bigint and the earliest file would fail.) The first file
    is the largest, so it reaches the table last if the files start side by side."""
    first = tmp_path / "snapshot_20230101.csv"
    first.write_bytes(HEADER + b"".join(b"%d,Name,Store,%d.5\n" % (i, i)
                                        for i in range(1, 200_001)))
    later = [tmp_path / f"snapshot_2023010{day}.csv" for day in (2, 3, 4)]
    for path in later:
        path.write_bytes(HEADER + b"1,Name,Store,100\n")
    result = run_cli("--database", db_url, "import", "--jobs", "4", *later, first, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'snapshots' "
        "AND column_name = 'credit_limit'").fetchone() == ("numeric",)
    assert ledger(db_conn)[0][1] == first.name
    assert count(db_conn, "snapshots") == 200_003


def test_jobs_with_a_bad_file_among_good_ones(tmp_path: Path, cli_env: dict[str, str],
                                              db_url: str, db_conn: psycopg.Connection) -> None:
    good = [small(tmp_path, f"snapshot_2023010{day}.csv", offset=day * 10) for day in (1, 2, 3)]
    bad = tmp_path / "snapshot_20230104.csv"
    bad.write_bytes(HEADER + b"1,Jake,Store,1.5\n2,Ann,Store\n")
    result = run_cli("--database", db_url, "import", "--jobs", "2", *good, bad, env=cli_env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{bad}:3:" in errors[0], result.stderr
    assert "4 files: " in result.stderr
    assert sorted((r[1], r[2]) for r in ledger(db_conn)) == [
        ("snapshot_20230101.csv", "imported"), ("snapshot_20230102.csv", "imported"),
        ("snapshot_20230103.csv", "imported"), ("snapshot_20230104.csv", "failed")]
    assert count(db_conn, "snapshots") == 9


def test_jobs_when_the_database_is_unreachable(tmp_path: Path, cli_env: dict[str, str]) -> None:
    files = [small(tmp_path, f"snapshot_2023010{day}.csv") for day in (1, 2, 3)]
    result = run_cli("--database", "127.0.0.1:1", "import", "--jobs", "2", *files, env=cli_env)
    assert result.returncode == 3
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
