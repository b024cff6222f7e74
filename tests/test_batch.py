"""Runs of small files share transactions (snapshots.engine.batch); each file stays one
atomic step with its ledger record, and exactly once, whatever happens to the others."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psycopg
import pytest
from helpers import Cli, finish, start_cli, wait_until

from snapshots.engine.batch_plan import BATCH_FILES
from snapshots.importer import Importer
from snapshots.options import ImportOptions

HEADER = b"id,name,amount\n"
MANY = 2000  # files for the tests that stop a run in the middle: batches enough on both sides


def snapshot(directory: Path, day: int, rows: int = 5, *, bad_line: int | None = None) -> Path:
    """snapshot_2023MMDD.csv for the `day`-th day of 2023 (1-based), `rows` rows."""
    import datetime as dt

    date = dt.date(2023, 1, 1) + dt.timedelta(days=day - 1)
    path = directory / f"snapshot_{date:%Y%m%d}.csv"
    lines = [b"%d,name %d,%d.25\n" % (day * 1000 + i, i, i) for i in range(rows)]
    if bad_line is not None:  # the file's line number (the header is line 1)
        lines[bad_line - 2] = b"oops,bad,1\n"
    path.write_bytes(HEADER + b"".join(lines))
    return path


def load_transactions(conn: psycopg.Connection) -> int:
    """How many transactions wrote the `imported` records: a record's row version was
    written by the transaction that committed its file's rows."""
    row = conn.execute("SELECT count(DISTINCT xmin::text) FROM snapshot_imports "
                       "WHERE status = 'imported'").fetchone()
    assert row is not None
    return int(row[0])


def consistent(conn: psycopg.Connection) -> None:
    """What must hold whatever happened: rows only of imported records, as many as each
    record says, and at most one imported record per name."""
    orphans = conn.execute(
        "SELECT count(*) FROM snapshots s LEFT JOIN snapshot_imports i ON i.id = s.snapshot_id "
        "WHERE i.status IS DISTINCT FROM 'imported'").fetchone()
    assert orphans == (0,)
    wrong = conn.execute(
        "SELECT i.id FROM snapshot_imports i LEFT JOIN (SELECT snapshot_id, count(*) AS n "
        "FROM snapshots GROUP BY 1) s ON s.snapshot_id = i.id "
        "WHERE i.table_name = 'snapshots' AND i.status = 'imported' "
        "AND i.row_count IS DISTINCT FROM coalesce(s.n, 0)"
    ).fetchall()
    assert wrong == []
    twice = conn.execute("SELECT table_name, file_name FROM snapshot_imports "
                         "WHERE status = 'imported' GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
    assert twice == []


def test_a_directory_of_small_files_loads_in_few_transactions(cli: Cli) -> None:
    incoming = cli.dir / "incoming"
    incoming.mkdir()
    files = [snapshot(incoming, day) for day in range(1, 2 * BATCH_FILES + 11)]
    assert cli.conn is not None
    result = cli.run("import", "--jobs", "1", incoming)
    # One transaction per file before batches: now one or a few per batch (a batch
    # commits every BATCH_SECONDS too).
    assert load_transactions(cli.conn) < len(files) // 4
    lines = [line for line in result.stdout.splitlines() if line.startswith("imported ")]
    assert [line.split()[1].rstrip(":") for line in lines] == [f.name for f in files]  # date order
    rows = cli.rows("SELECT i.file_name, i.row_count, count(s.*) FROM snapshot_imports i "
                    "JOIN snapshots s ON s.snapshot_id = i.id GROUP BY 1, 2 ORDER BY 1")
    assert rows == [(f.name, 5, 5) for f in files]
    consistent(cli.conn)
    # Runs of plain files share one COPY (engine.shared_copy): their rows were written by a
    # few (sub)transactions, not one per file, and their records say when that COPY began.
    assert cli.scalar("SELECT count(DISTINCT xmin::text) FROM snapshots") < len(files) // 4
    assert cli.scalar("SELECT count(DISTINCT started_at) FROM snapshot_imports") < len(files) // 4
    assert cli.scalar("SELECT count(*) FROM snapshot_imports WHERE finished_at < started_at") == 0


TRICKY = {  # what a shared COPY must load exactly as a lone file's COPY does
    "quotes": b'id,name,amount\n1,"a, ""b""",2.5\n2,"",3\n3,,4\n',
    "crlf": b'id,name,amount\r\n4,crlf,1\r\n5,"x,y",2\r\n',
    "crlf_too": b"id,name,amount\r\n14,crlf,1\r\n",
    "no_final_newline": b"id,name,amount\n6,last,7",
    "unicode": "id,name,amount\n9,Chloé Smörgås,1\n10,日本,2\n".encode(),
    "quoted_newline": b'id,name,amount\n7,"two\nlines",8\n8,plain,9\n',
    "crlf_in_a_field": b'id,name,amount\r\n13,"x\r\ny",2\r\n',
    "header_only": b"id,name,amount\n",
    "trailing_empty": b"id,name,amount\n11,,\n12,z,\n",
}


def test_tricky_files_load_in_a_batch_as_they_load_alone(cli: Cli) -> None:
    together = cli.dir / "together"
    together.mkdir()
    plain = [snapshot(together, day) for day in range(1, 4)]  # the table, and plain files
    names = [p.name for p in plain]
    for day, content in enumerate(TRICKY.values(), start=10):
        path = snapshot(together, day)
        path.write_bytes(content)
        names.append(path.name)
    cli.run("import", "--jobs", "1", together)
    for name in names:  # the same bytes, one file per run: the one-file path
        cli.run("--table", "alone", "import", together / name)
    query = ("SELECT i.file_name, t.id, t.name, t.amount, t.name IS NULL FROM {} t "
             "JOIN snapshot_imports i ON i.id = t.snapshot_id ORDER BY 1, 2")
    assert cli.rows(query.format("snapshots")) == cli.rows(query.format("alone"))
    assert cli.scalar("SELECT count(*) FROM snapshots") == 3 * 5 + 14
    assert cli.rows("SELECT name FROM snapshots WHERE id IN (7, 13) ORDER BY id") == \
        [("two\nlines",), ("x\r\ny",)]
    # The plain ones went in shared COPYs (one writer a run), the others alone.
    writers = dict(cli.rows("SELECT i.file_name, min(t.xmin::text) FROM snapshots t "
                            "JOIN snapshot_imports i ON i.id = t.snapshot_id GROUP BY 1"))
    runs = [writers.get(n) for n in names[1:]]  # the first file made the table, alone
    plain2, plain3, quotes, crlf, crlf_too, no_final, uni, newline, crlf_field, head, \
        trailing = runs
    assert plain2 == plain3 == quotes  # one COPY
    assert crlf == crlf_too != quotes  # CRLF files go together, apart from LF ones
    assert no_final == uni != crlf
    assert len({uni, newline, crlf_field, trailing}) == 4  # line breaks in fields: alone
    assert head is None  # header_only: no rows (it went with trailing_empty)
    assert cli.conn is not None
    consistent(cli.conn)


def test_a_bad_file_in_a_batch_fails_alone(cli: Cli) -> None:
    incoming = cli.dir / "incoming"
    incoming.mkdir()
    files = [snapshot(incoming, day, bad_line=4 if day == 6 else None) for day in range(1, 12)]
    result = cli.run("import", incoming, code=1)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{files[5].name}:4: invalid input syntax for type bigint" \
        in errors[0] and "column id" in errors[0], result.stderr
    ledger = {r["file_name"]: r for r in cli.ledger()}
    assert {name for name, r in ledger.items() if r["status"] == "imported"} == \
        {f.name for f in files} - {files[5].name}
    assert ledger[files[5].name]["status"] == "failed"
    assert f"{files[5].name}:4: invalid input" in ledger[files[5].name]["error"]
    assert cli.conn is not None
    consistent(cli.conn)
    assert cli.scalar("SELECT count(*) FROM snapshots") == 10 * 5


def test_skip_conflict_and_replace_within_a_run(cli: Cli) -> None:
    incoming = cli.dir / "incoming"
    incoming.mkdir()
    files = [snapshot(incoming, day) for day in range(1, 6)]
    cli.run("import", incoming)
    files[2].write_bytes(HEADER + b"1,changed,2.5\n")
    files += [snapshot(incoming, day) for day in range(6, 9)]
    result = cli.run("import", "--jobs", "1", incoming, code=1)
    words = [(line.split()[0], line.split()[1].rstrip(":"))
             for line in result.stdout.splitlines()
             if line.split() and line.split()[0] in ("imported", "skipped")]
    assert words == [("skipped", files[0].name), ("skipped", files[1].name),
                     ("skipped", files[3].name), ("skipped", files[4].name),
                     *(("imported", f.name) for f in files[5:])]
    assert "conflict" in result.stderr and files[2].name in result.stderr
    cli.run("import", "--replace", incoming)
    assert cli.scalar("SELECT count(*) FROM snapshots") == 7 * 5 + 1
    assert cli.conn is not None
    consistent(cli.conn)


def test_a_name_another_process_holds_is_left_to_it(db_url: str, db_conn: psycopg.Connection,
                                                     tmp_path: Path) -> None:
    files = [snapshot(tmp_path, day) for day in range(1, 9)]
    with Importer(db_url, table="snapshots") as importer:  # creates the table
        assert importer.import_file(files[0]).result == "imported"
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 7421))",
                      ("\x1f".join(("name", "public", "snapshots", files[4].name)),))
        options = ImportOptions(origin="sync", wait_for_busy=False)
        with Importer(db_url, table="snapshots", options=options) as importer:
            results = list(importer.import_many(files[1:]))
    assert [(r.file_name, r.result) for r in results] == [
        (f.name, "busy" if f == files[4] else "imported") for f in files[1:]]
    consistent(db_conn)
    assert db_conn.execute("SELECT count(*) FROM snapshot_imports WHERE status <> 'imported'"
                           ).fetchone() == (0,)


@pytest.fixture
def many(tmp_path: Path) -> Path:
    incoming = tmp_path / "many"
    incoming.mkdir()
    for day in range(1, MANY + 1):
        snapshot(incoming, day, rows=20)
    return incoming


def imported_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM snapshot_imports WHERE status = 'imported'"
                       ).fetchone()
    assert row is not None
    return int(row[0])


def mid_batch(conn: psycopg.Connection) -> bool:
    """Batches have committed, and another one's claims are there: it is loading."""
    row = conn.execute("SELECT count(*) FILTER (WHERE status = 'imported') > 200 AND "
                       "count(*) FILTER (WHERE status = 'importing') > 0 FROM snapshot_imports"
                       ).fetchone()
    return bool(row and row[0])


def stopped_mid_batch(cli: Cli, procs: list[subprocess.Popen[str]],
                      *args: str | Path) -> subprocess.Popen[str]:
    """`snapshots ARGS` as a process, frozen (SIGSTOP) while batches have committed and
    another one's claims are there, its statements in flight finished: the ledger cannot
    move on until the test says what happens next (it sends a signal, then SIGCONT)."""
    assert cli.conn is not None
    conn = cli.conn
    proc = start_cli("--database", cli.db_url, *args, env=cli.env)
    procs.append(proc)

    def running() -> list[tuple[str, str | None]]:
        """Statements still moving: not a COPY waiting for the frozen client's bytes, nor
        one waiting for a lock that the frozen client's other connection holds."""
        return conn.execute(
            "SELECT left(query, 60), wait_event_type FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state = 'active' AND query NOT LIKE 'COPY%' "
            "AND wait_event_type IS DISTINCT FROM 'Lock'").fetchall()

    def settled() -> bool:
        return not running()

    for _ in range(50):
        # Polled closely: a run of small files loads in a few seconds, and a retry that
        # looked only now and then could see the last batch go by.
        wait_until(lambda: mid_batch(conn) or proc.poll() is not None, timeout=120,
                   interval=0.005, message="some batches to commit and another to be loading")
        assert proc.poll() is None, "the run finished before it could be stopped mid-batch"
        proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(settled, timeout=30, message="the frozen client's statements to end")
        except pytest.fail.Exception as exc:
            raise AssertionError(f"{exc}; still running: {running()}") from None
        if mid_batch(conn):
            return proc
        proc.send_signal(signal.SIGCONT)  # between two batches: once more
    raise AssertionError("never caught a batch in flight")


def first_file(directory: Path, cli: Cli) -> None:
    """The table exists first, so that every later file goes in batches."""
    first = sorted(directory.iterdir())[0]
    cli.run("import", first)


@pytest.mark.slow
def test_sigkill_in_the_middle_of_batches(cli: Cli, many: Path,
                                          procs: list[subprocess.Popen[str]]) -> None:
    assert cli.conn is not None
    first_file(many, cli)
    proc = stopped_mid_batch(cli, procs, "import", many)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc)[0] == -signal.SIGKILL
    consistent(cli.conn)
    done = imported_count(cli.conn)
    assert 0 < done < MANY
    wait_until(lambda: cli.scalar("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "datname = current_database() AND pid <> pg_backend_pid()"
                                  ) == 0, timeout=30, message="the killed session to end")
    in_flight = cli.scalar("SELECT count(*) FROM snapshot_imports WHERE status = 'importing'")
    assert in_flight > 0  # the claims of the batch that was loading
    result = cli.process("import", many)
    assert result.stderr.count("as interrupted") == in_flight
    assert cli.scalar("SELECT count(*) FROM snapshot_imports WHERE status = 'failed' "
                      "AND starts_with(error, 'interrupted')") == in_flight
    consistent(cli.conn)
    assert imported_count(cli.conn) == MANY
    assert cli.scalar("SELECT count(*) FROM snapshots") == MANY * 20
    assert cli.scalar("SELECT count(*) FROM snapshot_imports WHERE status = 'importing'") == 0


@pytest.mark.slow
def test_sigint_in_the_middle_of_batches(cli: Cli, many: Path,
                                         procs: list[subprocess.Popen[str]]) -> None:
    """Ctrl-C: what committed stays, the batch in flight is rolled back and its claims go
    (nothing failed), exit 130; the next run loads the rest."""
    assert cli.conn is not None
    first_file(many, cli)
    proc = stopped_mid_batch(cli, procs, "import", many)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    code, _out, err = finish(proc)
    assert code == 130, err
    assert "Traceback" not in err
    consistent(cli.conn)
    assert cli.scalar("SELECT count(*) FROM snapshot_imports WHERE status <> 'imported'") == 0
    assert 0 < imported_count(cli.conn) < MANY
    cli.run("import", many)
    assert imported_count(cli.conn) == MANY
    assert cli.scalar("SELECT count(*) FROM snapshots") == MANY * 20


@pytest.mark.slow
def test_two_processes_on_one_directory_load_each_file_once(
        cli: Cli, tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    incoming = tmp_path / "shared"
    incoming.mkdir()
    for day in range(1, 401):
        snapshot(incoming, day)
    first_file(incoming, cli)
    started = [start_cli("--database", cli.db_url, "import", "--jobs", "2", incoming,
                         env=cli.env) for _ in range(2)]
    procs.extend(started)
    outcomes = [finish(proc) for proc in started]
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    assert cli.conn is not None
    consistent(cli.conn)
    assert imported_count(cli.conn) == 400
    assert cli.scalar("SELECT count(*) FROM snapshots") == 400 * 5
    # Every file was loaded by one process and skipped (or waited for) by the other.
    said = [line.split()[0] for _, out, _ in outcomes for line in out.splitlines()
            if line.split() and line.split()[0] in ("imported", "skipped")]
    assert said.count("imported") == 399 and said.count("skipped") == 401


def test_sync_loads_a_directory_of_small_files_in_batches(cli: Cli, tmp_path: Path) -> None:
    incoming = tmp_path / "watched"
    incoming.mkdir()
    for day in range(1, 301):
        snapshot(incoming, day)
    first_file(incoming, cli)
    result = cli.process("sync", "--once", "--data-dir", incoming, "--settle", "0")
    assert '"imported":299' in result.stdout.replace(" ", ""), result.stdout
    assert cli.conn is not None
    consistent(cli.conn)
    assert imported_count(cli.conn) == 300
    assert load_transactions(cli.conn) < 300 // 4
    assert cli.scalar("SELECT count(*) FROM snapshots") == 300 * 5


@pytest.mark.slow
def test_sigterm_stops_a_sync_batch_after_the_file_in_flight(
        cli: Cli, many: Path, procs: list[subprocess.Popen[str]]) -> None:
    """sync stops taking files: what loaded commits, the batch's other claims go (nothing
    failed, nothing left importing), exit 0; the next run loads the rest, each once."""
    assert cli.conn is not None
    first_file(many, cli)
    proc = stopped_mid_batch(cli, procs, "sync", "--data-dir", many, "--settle", "0",
                             "--jobs", "1")
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    code, _out, err = finish(proc)
    assert code == 0, err
    consistent(cli.conn)
    assert cli.scalar("SELECT count(*) FROM snapshot_imports WHERE status <> 'imported'") == 0
    done = imported_count(cli.conn)
    assert 0 < done < MANY
    cli.process("sync", "--once", "--data-dir", many, "--settle", "0")
    consistent(cli.conn)
    assert imported_count(cli.conn) == MANY
    assert cli.scalar("SELECT count(*) FROM snapshots") == MANY * 20


def test_batches_queued_behind_a_loading_one_go_on_its_connection(cli: Cli,
                                                                  tmp_path: Path) -> None:
    """sync's pool with one job: the batches submitted while one loads wait ahead of it and
    run on the same worker and connection, in order; none is lost, none loads twice."""
    import threading

    from snapshots.workers import ImporterPool

    incoming = tmp_path / "ahead"
    incoming.mkdir()
    paths = [snapshot(incoming, day) for day in range(1, 1 + 4 * 10)]
    first_file(incoming, cli)
    made: list[Importer] = []

    def new_importer(cancel: threading.Event) -> Importer:
        made.append(Importer(cli.db_url, table="snapshots", cancel=cancel,
                             options=ImportOptions(origin="sync", wait_for_busy=False)))
        return made[-1]

    woken = threading.Event()
    pool = ImporterPool(new_importer, jobs=1, wake=woken.set)
    stop = threading.Event()
    try:
        files = [(p.name, p, None) for p in paths[1:]]
        pool.submit_batch(files[:10], stop)
        assert pool.free() == 0 and pool.loads() == 1
        queued = 0
        for start in range(10, len(files), 10):
            if pool.ahead_room():
                queued += 1
            pool.submit_batch(files[start:start + 10], stop)
        assert queued >= 1, "no batch waited ahead of the loading one"
        assert pool.loads() == 1, "a batch waiting ahead is not a load of its own"
        results: dict[str, str] = {}

        def all_finished() -> bool:
            results.update({rel: f.result().result for rel, f in pool.finished()})
            return len(results) == len(files)

        wait_until(all_finished, 60, message="every batch to finish")
    finally:
        pool.close()
    assert set(results.values()) == {"imported"}
    assert len(made) == 1, "a batch waiting ahead took a connection of its own"
    assert cli.conn is not None
    consistent(cli.conn)
    assert imported_count(cli.conn) == len(paths)
