"""The ledger's versioned schema: from nothing, from every earlier version, `snapshots
migrate`, a ledger newer than the tool, and migrators racing each other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
from helpers import invoke_cli, start_cli, wait_until
from psycopg import sql

from snapshots import __version__
from snapshots import schema as ddl

LATEST = ddl.LATEST_VERSION
EARLIER = [number for number, _, _ in ddl.MIGRATIONS if number < LATEST]
SAMPLE = b"user_id,name\n1,Jake\n2,Mostafa\n"


def versions(conn: psycopg.Connection, schema: str = "public") -> list[int]:
    return [r[0] for r in conn.execute(sql.SQL(
        "SELECT version FROM {} ORDER BY version").format(
        sql.Identifier(schema, ddl.VERSION_TABLE))).fetchall()]


def shape(conn: psycopg.Connection, schema: str) -> dict[str, object]:
    """Columns, constraints and indexes of a schema's ledger tables, schema name removed."""
    # With the schema first on the path, names in definitions come out unqualified.
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    try:
        return _shape(conn, schema)
    finally:
        conn.execute("RESET search_path")


def _shape(conn: psycopg.Connection, schema: str) -> dict[str, object]:
    columns = conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity "
        "FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name LIKE 'snapshot\\_%%' ORDER BY table_name, ordinal_position",
        (schema,)).fetchall()
    indexes = conn.execute(
        "SELECT indexname, replace(indexdef, %s, 'S.') FROM pg_indexes "
        "WHERE schemaname = %s AND tablename LIKE 'snapshot\\_%%' ORDER BY indexname",
        (f"{schema}.", schema)).fetchall()
    constraints = conn.execute(
        "SELECT c.conrelid::regclass::text, c.contype, pg_get_constraintdef(c.oid) "
        "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname = %s AND c.conrelid::regclass::text LIKE %s ORDER BY 1, 2, 3",
        (schema, "%snapshot\\_%")).fetchall()
    return {
        "columns": [tuple(str(v).replace(f"{schema}.", "S.") for v in row) for row in columns],
        "indexes": indexes,
        "constraints": [(t.removeprefix(f"{schema}."), kind, d.replace(f"{schema}.", "S."))
                        for t, kind, d in constraints],
    }


def write(tmp_path: Path, name: str, content: bytes = SAMPLE) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- from nothing


@pytest.mark.smoke
def test_migrate_an_empty_database(cli_env: dict[str, str], db_url: str,
                                   db_conn: psycopg.Connection) -> None:
    result = invoke_cli("--database", db_url, "migrate", env=cli_env)
    assert result.returncode == 0, result.stderr
    applied = ", ".join(str(n) for n, _, _ in ddl.MIGRATIONS)
    assert result.stdout.strip() == (
        f"ledger in schema public migrated to version {LATEST} (applied {applied})")
    assert versions(db_conn) == [n for n, _, _ in ddl.MIGRATIONS]
    tools = {r[0] for r in db_conn.execute(
        sql.SQL("SELECT tool_version FROM {}").format(sql.Identifier(ddl.VERSION_TABLE)))}
    assert tools == {__version__}
    again = invoke_cli("--database", db_url, "migrate", env=cli_env)
    assert again.returncode == 0
    assert again.stdout.strip() == f"ledger in schema public is current (version {LATEST})"
    assert versions(db_conn) == [n for n, _, _ in ddl.MIGRATIONS]


def test_import_migrates_an_empty_database(tmp_path: Path, cli_env: dict[str, str],
                                           db_url: str, db_conn: psycopg.Connection) -> None:
    result = invoke_cli("--database", db_url, "import", write(tmp_path, "snapshot_20230101.csv"),
                        env=cli_env)
    assert result.returncode == 0, result.stderr
    assert versions(db_conn)[-1] == LATEST
    assert db_conn.execute("SELECT count(*) FROM snapshots").fetchone() == (2,)


def test_migrate_into_another_schema(cli_env: dict[str, str], db_url: str,
                                     db_conn: psycopg.Connection) -> None:
    db_conn.execute("CREATE SCHEMA ingest")
    result = invoke_cli("--database", db_url, "--schema", "ingest", "migrate", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "ledger in schema ingest migrated" in result.stdout
    assert versions(db_conn, "ingest")[-1] == LATEST
    assert db_conn.execute("SELECT to_regclass('public.snapshot_imports')").fetchone() == (None,)


def test_the_migrations_are_idempotent_in_process(db_conn: psycopg.Connection) -> None:
    assert ddl.migrate(db_conn, "public") == [n for n, _, _ in ddl.MIGRATIONS]
    assert ddl.migrate(db_conn, "public") == []
    assert ddl.migrate(db_conn, "public", target=1) == []


# --------------------------------------------------------------------------- from each version


@pytest.mark.parametrize("start", EARLIER)
def test_upgrade_from_an_earlier_version(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                         db_conn: psycopg.Connection, start: int) -> None:
    """A ledger left at an earlier version, with a record in it, is upgraded by the next
    import to exactly what a fresh database gets, and its history is kept."""
    assert ddl.migrate(db_conn, "public", target=start) == list(range(1, start + 1))
    assert versions(db_conn) == list(range(1, start + 1))
    old = db_conn.execute(
        "INSERT INTO snapshot_imports (table_name, file_name, sha256, size_bytes, status, "
        "row_count, finished_at) VALUES ('snapshots', 'snapshot_20221231.csv', repeat('a', 64), "
        "10, 'failed', NULL, now()) RETURNING id").fetchone()[0]

    # `list` runs no DDL: it refuses an old ledger and says how to upgrade.
    listed = invoke_cli("--database", db_url, "list", env=cli_env)
    assert listed.returncode == 1
    assert f"at version {start}" in listed.stderr and "snapshots migrate" in listed.stderr
    assert "Traceback" not in listed.stderr
    assert versions(db_conn) == list(range(1, start + 1))

    result = invoke_cli("--database", db_url, "import", write(tmp_path, "snapshot_20230101.csv"),
                        env=cli_env)
    assert result.returncode == 0, result.stderr
    assert versions(db_conn) == [n for n, _, _ in ddl.MIGRATIONS]
    db_conn.execute("CREATE SCHEMA fresh")
    ddl.migrate(db_conn, "fresh")
    assert shape(db_conn, "public") == shape(db_conn, "fresh")

    listed = invoke_cli("--database", db_url, "list", "--all", "--format", "json", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert f'"id": {old},' in listed.stdout
    assert '"file": "snapshot_20230101.csv"' in listed.stdout


@pytest.mark.parametrize("start", EARLIER)
def test_migrate_command_from_an_earlier_version(cli_env: dict[str, str], db_url: str,
                                                 db_conn: psycopg.Connection,
                                                 start: int) -> None:
    ddl.migrate(db_conn, "public", target=start)
    result = invoke_cli("--database", db_url, "migrate", env=cli_env)
    assert result.returncode == 0, result.stderr
    rest = ", ".join(str(n) for n in range(start + 1, LATEST + 1))
    assert result.stdout.strip() == (
        f"ledger in schema public migrated to version {LATEST} (applied {rest})")
    assert invoke_cli("--database", db_url, "list", env=cli_env).returncode == 0


# --------------------------------------------------------------------------- newer than the tool


@pytest.fixture
def newer_ledger(db_conn: psycopg.Connection) -> int:
    ddl.migrate(db_conn, "public")
    newer = LATEST + 1
    db_conn.execute(sql.SQL(
        "INSERT INTO {} (version, description, tool_version) VALUES (%s, 'from the future', "
        "'99.0.0')").format(sql.Identifier(ddl.VERSION_TABLE)), (newer,))
    return newer


@pytest.mark.smoke
@pytest.mark.parametrize("command", [["import", "FILE"], ["list"], ["list", "FILE"],
                                     ["migrate"], ["forget", "snapshot_20230101.csv"],
                                     ["import", "--dry-run", "FILE"]])
def test_a_ledger_newer_than_the_tool_is_refused(tmp_path: Path, cli_env: dict[str, str],
                                                 db_url: str, db_conn: psycopg.Connection,
                                                 newer_ledger: int,
                                                 command: list[str]) -> None:
    path = write(tmp_path, "snapshot_20230101.csv")
    args = [str(path) if word == "FILE" else word for word in command]
    tables_before = db_conn.execute(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchone()
    result = invoke_cli("--database", db_url, *args, env=cli_env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"at version {newer_ledger}, newer than this snapshots {__version__}" in errors[0]
    assert "upgrade snapshots" in result.stderr
    # Nothing written: no record, no table, the version rows unchanged.
    assert db_conn.execute("SELECT count(*) FROM snapshot_imports").fetchone() == (0,)
    assert db_conn.execute(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    ).fetchone() == tables_before
    assert versions(db_conn)[-1] == newer_ledger


# --------------------------------------------------------------------------- concurrency



def waiting_for_advisory_locks(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted "
        "AND d.datname = current_database()").fetchone()
    return int(row[0])


@pytest.mark.smoke
def test_four_concurrent_migrations_apply_once(cli_env: dict[str, str], db_url: str,
                                               db_conn: psycopg.Connection) -> None:
    """Held at the migration lock, then let go together: one applies, three find it done."""
    gate = psycopg.connect(db_url, autocommit=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        gate.execute(sql.SQL("SELECT pg_advisory_lock({})").format(
            ddl.lock_key("migrate", "public")))
        procs = [start_cli("--database", db_url, "migrate", env=cli_env) for _ in range(4)]
        wait_until(lambda: waiting_for_advisory_locks(db_conn) == 4, timeout=60,
                   message="four migrators to wait for the migration lock")
        gate.close()
        results = [(*proc.communicate(timeout=120), proc.returncode) for proc in procs]
    finally:
        gate.close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert [code for _, _, code in results] == [0, 0, 0, 0], [err for _, err, _ in results]
    outs = sorted(out.strip() for out, _, _ in results)
    assert sum("migrated to version" in out for out in outs) == 1, outs
    assert sum(f"is current (version {LATEST})" in out for out in outs) == 3, outs
    assert versions(db_conn) == [n for n, _, _ in ddl.MIGRATIONS]


def test_four_concurrent_imports_on_an_empty_database(tmp_path: Path, cli_env: dict[str, str],
                                                      db_url: str,
                                                      db_conn: psycopg.Connection) -> None:
    """No gate: four imports of different files race for the ledger and the table."""
    files = [write(tmp_path, f"snapshot_2023010{day}.csv",
                   SAMPLE.replace(b"Jake", b"Jake %d" % day)) for day in range(1, 5)]
    procs = [start_cli("--database", db_url, "import", path, env=cli_env) for path in files]
    results = [(*proc.communicate(timeout=120), proc.returncode) for proc in procs]
    assert [code for _, _, code in results] == [0, 0, 0, 0], [err for _, err, _ in results]
    assert versions(db_conn) == [n for n, _, _ in ddl.MIGRATIONS]
    assert db_conn.execute(
        "SELECT count(*), count(DISTINCT snapshot_id) FROM snapshots").fetchone() == (8, 4)
    assert db_conn.execute(
        "SELECT count(*) FROM snapshot_imports WHERE status = 'imported'").fetchone() == (4,)
