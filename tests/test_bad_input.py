"""Bad input (SPEC section 4): a precise one-line error and nothing written.

Every case runs the CLI (in process; a fifo as a real process) and checks the exit code, the
single `error:` line on stderr (file, physical line, column and value where they apply), that
there is no traceback, and that the database holds nothing of the file: no data rows, no new
tables or views, and at most a `failed` record in the ledger.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from helpers import invoke_cli, run_cli
from psycopg import sql

LEDGER_TABLES = {"snapshot_imports", "snapshot_rejects", "snapshot_files",
                 "snapshot_ledger_version"}


# --------------------------------------------------------------------------- helpers


def relations(conn: psycopg.Connection) -> set[str]:
    """Tables and views of the public schema, the ledger's own excluded."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')").fetchall()
    return {r[0] for r in rows} - LEDGER_TABLES


def records(conn: psycopg.Connection) -> list[tuple[str, str, str | None]]:
    """(file_name, status, error) of every ledger record; none without a ledger."""
    if conn.execute("SELECT to_regclass('public.snapshot_imports')").fetchone()[0] is None:
        return []
    return conn.execute(
        "SELECT file_name, status, error FROM snapshot_imports ORDER BY id").fetchall()


def row_count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table))).fetchone()[0]


@dataclass
class Before:
    relations: set[str]
    records: list[tuple[str, str, str | None]]
    rows: dict[str, int]


def snapshot_state(conn: psycopg.Connection) -> Before:
    rels = relations(conn)
    tables = {r for r in rels if not r.endswith("_latest")}
    return Before(rels, records(conn), {t: row_count(conn, t) for t in tables})


def assert_nothing_written(conn: psycopg.Connection, before: Before, file_name: str,
                           message: str) -> None:
    """No new relation, no new rows, and at most one new record: `failed`, with the message."""
    assert relations(conn) == before.relations, "the failed import left a table or view behind"
    for table, count in before.rows.items():
        assert row_count(conn, table) == count, f"rows were added to {table}"
    new = records(conn)[len(before.records):]
    assert len(new) <= 1, new
    for name, status, error in new:
        assert name == file_name
        assert status == "failed", f"record {name} is {status}"
        assert error, "a failed record says why"
        assert error in message, (error, message)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one `error:` line; anything else on stderr may only be a hint."""
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    others = [line for line in lines if not line.startswith(("error:", "hint:"))]
    assert not others, result.stderr
    assert len(lines) <= 2, result.stderr
    return errors[0]


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def import_(cli_env: dict[str, str], db_url: str, *args: str | os.PathLike[str],
            process: bool = False) -> subprocess.CompletedProcess[str]:
    """`snapshots --database DB import ARGS` in process, or as a real process."""
    run = run_cli if process else invoke_cli
    return run("--database", db_url, "import", *args, env=cli_env)


def fails_cleanly(cli_env: dict[str, str], db_url: str, db_conn: psycopg.Connection,
                  path: Path, *extra: str, code: int = 1, process: bool = False) -> str:
    before = snapshot_state(db_conn)
    result = import_(cli_env, db_url, *extra, path, process=process)
    assert result.returncode == code, (result.stdout, result.stderr)
    line = error_line(result)
    assert_nothing_written(db_conn, before, path.name, line)
    return line


def located(line: str, path: Path, number: int | None) -> None:
    """The error names the file as given and, when known, the physical line."""
    where = f"{path}:{number}:" if number is not None else f"{path}:"
    assert where in line, f"expected {where!r} in {line!r}"


# A first snapshot that creates a typed table: `a` bigint, `b` text.
BASE = b"a,b\n1,x\n2,y\n"


@pytest.fixture
def typed_table(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                db_conn: psycopg.Connection) -> str:
    base = write(tmp_path, "base_20230101.csv", BASE)
    result = import_(cli_env, db_url, base)
    assert result.returncode == 0, result.stderr
    types = dict(db_conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'snapshots'").fetchall())
    assert types["a"] == "bigint" and types["b"] == "text", types
    return "snapshots"


# --------------------------------------------------------------------------- the file's body

# (name, content, physical line of the record, reason). Records before the bad one hold
# quoted newlines, so a record count would name the wrong line.
BODY_CASES = [
    pytest.param(
        "unterminated_20230102.csv", b'a,b\n1,"x\ny"\n2,"open\n3,z\n', 4,
        "unterminated CSV quoted field", id="unterminated-quote"),
    pytest.param(
        "more_20230102.csv", b'a,b\n1,"x\ny"\n2,"p\nq"\n3,z,extra\n4,w\n5,v\n', 6,
        "extra data after last expected column", id="more-columns"),
    pytest.param(
        "fewer_20230102.csv", b'a,b\n1,"x\n\ny"\n2\n4,w\n5,v\n', 5,
        'missing data for column "b"', id="fewer-columns"),
    pytest.param(
        "more_in_quoted_20230102.csv", b'a,b\n1,"x\ny"\n2,"p\nq",extra\n4,w\n', 4,
        "extra data after last expected column", id="more-columns-multiline-record"),
    pytest.param(  # as spreadsheets write it: CRLF rows, bare LF inside cells
        "excel_20230102.csv", b'a,b\r\n1,"x\ny\nz"\r\n2,"p\nq"\r\n3,w,extra\r\n5,v\r\n', 7,
        "extra data after last expected column", id="crlf-rows-lf-in-cells"),
    pytest.param(
        "bytes_20230102.csv", b'a,b\n1,"x\ny"\n2,ok\n3,bad\xff\n4,w\n', 5,
        "invalid byte sequence for encoding", id="invalid-utf8"),
    pytest.param(
        "nul_20230102.csv", b'a,b\n1,"x\ny"\n2,a\x00b\n4,w\n', 4,
        "NUL byte", id="nul-byte"),
    pytest.param(  # COPY takes the first line's ending for the whole file
        "mixed_20230102.csv", b'a,b\r\n1,"x\r\ny"\r\n2,y\n3,z\r\n', 4,
        "unquoted newline found in data", id="mixed-line-endings"),
    pytest.param(  # COPY would join the records after it, up to the next quote
        "stray_20230102.csv", b'a,b\n1,"x\ny"\n2,12" pizza\n4,w\n5,v\n', 4,
        "malformed quoting", id="stray-quote"),
    pytest.param(  # balanced on its line: COPY would silently load `Plain x`
        "inner_20230102.csv", b'a,b\n1,"x\ny"\n2,Plain "x"\n4,w\n', 4,
        "malformed quoting", id="quotes-inside-an-unquoted-field"),
]


@pytest.mark.parametrize(("name", "content", "line", "reason"), BODY_CASES)
def test_bad_body_new_table(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                            db_conn: psycopg.Connection, name: str, content: bytes, line: int,
                            reason: str) -> None:
    """The first import, which would create the table: no table is left behind."""
    path = write(tmp_path, name, content)
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, line)
    assert reason in message
    assert "snapshots" not in relations(db_conn)


@pytest.mark.parametrize(("name", "content", "line", "reason"), BODY_CASES)
def test_bad_body_existing_table(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                 db_conn: psycopg.Connection, typed_table: str, name: str,
                                 content: bytes, line: int, reason: str) -> None:
    """COPY into an existing table: the server finds it; the line is still the physical one."""
    path = write(tmp_path, name, content)
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, line)
    assert reason in message
    assert row_count(db_conn, typed_table) == 2  # the first snapshot's rows, untouched
    statuses = [status for file, status, _ in records(db_conn) if file == name]
    assert statuses == ["failed"], "a failure past the claim is visible in the ledger"


@pytest.mark.smoke
def test_value_does_not_fit_the_column_type(tmp_path: Path, cli_env: dict[str, str],
                                            db_url: str, db_conn: psycopg.Connection,
                                            typed_table: str) -> None:
    path = write(tmp_path, "type_20230102.csv",
                 b'a,b\n1,"x\ny"\n2,"p\r\nq"\nabc,z\n4,w\n')
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 6)
    assert "invalid input syntax for type bigint" in message
    assert "column a" in message
    assert "value 'abc'" in message
    assert row_count(db_conn, typed_table) == 2


def test_value_out_of_range_for_the_column_type(tmp_path: Path, cli_env: dict[str, str],
                                                db_url: str, db_conn: psycopg.Connection,
                                                typed_table: str) -> None:
    path = write(tmp_path, "range_20230102.csv", b"a,b\n1,x\n99999999999999999999,y\n3,z\n")
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 3)
    assert "out of range for type bigint" in message
    assert "column a" in message and "value '99999999999999999999'" in message


def test_bytes_with_no_equivalent_in_the_given_encoding(tmp_path: Path,
                                                       cli_env: dict[str, str], db_url: str,
                                                       db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "win_20230101.csv", b'a,b\n1,caf\xe9\n2,"x\ny"\n3,bad\x81\n')
    before = snapshot_state(db_conn)
    result = import_(cli_env, db_url, "--encoding", "WIN1252", path)
    assert result.returncode == 1
    message = error_line(result)
    assert_nothing_written(db_conn, before, path.name, message)
    located(message, path, 5)
    assert "0x81" in message and "WIN1252" in message
    assert "hint: check --encoding" in result.stderr


def test_latin1_file_read_as_utf8_then_with_its_encoding(tmp_path: Path,
                                                         cli_env: dict[str, str], db_url: str,
                                                         db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "latin_20230101.csv", b"a,b\n1,caf\xe9\n")
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 2)
    assert "invalid byte sequence for encoding" in message
    result = import_(cli_env, db_url, "--encoding", "LATIN1", path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT b FROM snapshots").fetchall() == [("café",)]


def test_bad_line_is_physical_far_into_a_file(tmp_path: Path, cli_env: dict[str, str],
                                              db_url: str, db_conn: psycopg.Connection,
                                              typed_table: str) -> None:
    """Thousands of multi-line records before the bad one, over several read chunks."""
    records_ = [b"a,b\n"] + [b'%d,"line one\nline two, with ""quotes""\n"\n' % i
                             for i in range(1, 30_001)]
    records_.append(b"x30001,z\n")
    path = write(tmp_path, "far_20230102.csv", b"".join(records_))
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 1 + 3 * 30_000 + 1)
    assert "column a" in message and "value 'x30001'" in message


# --------------------------------------------------------------------------- the header


HEADER_CASES = [
    pytest.param("dup_20230101.csv", b"a,b,a\n1,2,3\n", r"duplicate column name, value 'a'",
                 id="duplicate-name"),
    pytest.param("empty_name_20230101.csv", b"a,,c\n1,2,3\n", r"column 2 has an empty name",
                 id="empty-name"),
    pytest.param("blank_name_20230101.csv", b'a,"  ",c\n1,2,3\n',
                 r"column 2 has an empty name", id="blank-name"),
    pytest.param("punct_name_20230101.csv", b"a,b,--\n1,2,3\n", r"column 3 has an empty name",
                 id="punctuation-only-name"),
    pytest.param("collide_20230101.csv", b"user_id,Store Name,store_name\n1,2,3\n",
                 r"column names 'Store Name' and 'store_name' both become 'store_name'",
                 id="collide-after-normalisation"),
    pytest.param("long_20230101.csv", b"a," + b"x" * 64 + b"\n1,2\n",
                 r"column name longer than 63 bytes, value 'x{64}'", id="name-over-63-bytes"),
    pytest.param("long_utf8_20230101.csv", b"a," + "é".encode() * 32 + b"\n1,2\n",
                 r"column name longer than 63 bytes", id="name-over-63-bytes-utf8"),
    pytest.param("nul_header_20230101.csv", b"a,b\x00c\n1,2\n", r"NUL byte in the header",
                 id="nul-in-header"),
    pytest.param("unterminated_header_20230101.csv", b'a,"b\n', r"header|quoted field",
                 id="unterminated-header"),
    pytest.param("bytes_header_20230101.csv", b"a,b\xff\n1,2\n",
                 r"invalid byte sequence for encoding UTF8", id="invalid-utf8-header"),
]


@pytest.mark.parametrize(("name", "content", "pattern"), HEADER_CASES)
def test_bad_header(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                    db_conn: psycopg.Connection, name: str, content: bytes,
                    pattern: str) -> None:
    path = write(tmp_path, name, content)
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 1)
    assert re.search(pattern, message), message
    # A file refused for its header is still a failed attempt that `list` shows.
    assert [(name, status) for name, status, _ in records(db_conn)] == [(path.name, "failed")]


@pytest.mark.smoke
def test_empty_file(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                    db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "empty_20230101.csv", b"")
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 1)
    assert "empty file" in message


def test_file_of_blank_lines_is_empty(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                      db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "blank_20230101.csv", b"\n\r\n\n")
    assert "empty file" in fails_cleanly(cli_env, db_url, db_conn, path)


def test_empty_gzip_file(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                         db_conn: psycopg.Connection) -> None:
    import gzip

    path = write(tmp_path, "empty_20230101.csv.gz", gzip.compress(b""))
    assert "empty file" in fails_cleanly(cli_env, db_url, db_conn, path)


def test_corrupt_gzip_file(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                           db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "corrupt_20230101.csv.gz", b"this is not gzip\n")
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, None)


def test_too_many_columns(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                          db_conn: psycopg.Connection) -> None:
    header = ",".join(f"c{i}" for i in range(1601))
    path = write(tmp_path, "wide_20230101.csv", (header + "\n").encode())
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, 1)
    assert "1601 columns" in message and "1600" in message


def test_1600_columns_leave_no_room_for_snapshot_id(tmp_path: Path, cli_env: dict[str, str],
                                                   db_url: str,
                                                   db_conn: psycopg.Connection) -> None:
    """A new append table needs one more column than the file: PostgreSQL refuses it, and
    that is a failed file (exit 1), not a lost database (exit 3)."""
    header = ",".join(f"c{i}" for i in range(1600))
    path = write(tmp_path, "wide_20230101.csv", (header + "\n" + "x," * 1599 + "x\n").encode())
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    assert "1600 columns" in message
    assert "lost the database" not in message


def test_1599_columns_fit(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                          db_conn: psycopg.Connection) -> None:
    header = ",".join(f"c{i}" for i in range(1599))
    path = write(tmp_path, "wide_20230101.csv", (header + "\n" + "x," * 1598 + "y\n").encode())
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT c1598 FROM snapshots").fetchall() == [("y",)]


def test_a_name_of_exactly_63_bytes_is_fine(tmp_path: Path, cli_env: dict[str, str],
                                            db_url: str, db_conn: psycopg.Connection) -> None:
    name = "x" * 63
    path = write(tmp_path, "long_20230101.csv", f"a,{name}\n1,2\n".encode())
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute(sql.SQL("SELECT {} FROM snapshots").format(
        sql.Identifier(name))).fetchall() == [(2,)]


# --------------------------------------------------------------------------- the path


@pytest.mark.smoke
def test_missing_file(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                      db_conn: psycopg.Connection) -> None:
    path = tmp_path / "missing_20230101.csv"
    message = fails_cleanly(cli_env, db_url, db_conn, path, code=2)
    assert str(path) in message and "no such file" in message


def test_fifo_is_not_a_regular_file(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                    db_conn: psycopg.Connection) -> None:
    path = tmp_path / "fifo_20230101.csv"
    os.mkfifo(path)
    # Nobody writes to the fifo: opening it to read would hang, and run_cli's timeout says so
    # (a process, then: in process nothing would end the hang).
    message = fails_cleanly(cli_env, db_url, db_conn, path, code=2, process=True)
    assert str(path) in message and "not a regular file" in message


def test_device_is_not_a_regular_file(cli_env: dict[str, str], db_url: str,
                                      db_conn: psycopg.Connection) -> None:
    message = fails_cleanly(cli_env, db_url, db_conn, Path("/dev/null"), code=2)
    assert "/dev/null" in message and "not a regular file" in message


def test_dangling_symlink(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                          db_conn: psycopg.Connection) -> None:
    path = tmp_path / "link_20230101.csv"
    path.symlink_to(tmp_path / "gone.csv")
    message = fails_cleanly(cli_env, db_url, db_conn, path, code=2)
    assert str(path) in message


def test_unreadable_file(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                         db_conn: psycopg.Connection) -> None:
    """A regular file whose read fails (even for root): /proc/self/mem at offset 0 is EIO."""
    path = tmp_path / "unreadable_20230101.csv"
    path.symlink_to("/proc/self/mem")
    message = fails_cleanly(cli_env, db_url, db_conn, path)
    located(message, path, None)
    assert "cannot read the file" in message


def test_directory_without_snapshot_files(tmp_path: Path, cli_env: dict[str, str],
                                          db_url: str, db_conn: psycopg.Connection) -> None:
    (tmp_path / "notes.txt").write_text("not a snapshot\n")
    message = fails_cleanly(cli_env, db_url, db_conn, tmp_path, code=2)
    assert "no .csv or .csv.gz files" in message


def test_one_bad_path_among_good_files_imports_nothing(tmp_path: Path, cli_env: dict[str, str],
                                                       db_url: str,
                                                       db_conn: psycopg.Connection) -> None:
    good = write(tmp_path, "good_20230101.csv", b"a\n1\n")
    before = snapshot_state(db_conn)
    result = import_(cli_env, db_url, good, tmp_path / "missing_20230102.csv")
    assert result.returncode == 2
    assert_nothing_written(db_conn, before, good.name, error_line(result))
    assert records(db_conn) == []


def test_seed_form_with_a_missing_file_is_a_usage_error(tmp_path: Path,
                                                        cli_env: dict[str, str],
                                                        db_url: str) -> None:
    result = invoke_cli("--database", db_url, tmp_path / "missing_20230101.csv", env=cli_env)
    assert result.returncode == 2
    assert "neither a command nor an existing file" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- not errors


@pytest.mark.smoke
def test_bom_and_crlf_are_handled(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                  db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "bom_20230101.csv",
                 b'\xef\xbb\xbfUser ID,name\r\n1,"two\r\nlines"\r\n2,plain\r\n')
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert db_conn.execute("SELECT user_id, name FROM snapshots ORDER BY user_id").fetchall() \
        == [(1, "two\r\nlines"), (2, "plain")]


def test_crlf_split_across_read_chunks(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                       db_conn: psycopg.Connection) -> None:
    """A CRLF file over several 1 MiB chunks (some boundaries fall between CR and LF):
    every value is seen by type inference, so the numeric column is numeric, not text."""
    rows = [b"id,amount,label\r\n"]
    rows += [b"%d,%d,row\r\n" % (i, i) for i in range(1, 200_001)]
    rows.append(b"200001,1.5,last\r\n")
    path = write(tmp_path, "crlf_20230101.csv", b"".join(rows))
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    types = dict(db_conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'snapshots'").fetchall())
    assert types["id"] == "bigint"
    assert types["amount"] == "numeric"
    assert db_conn.execute("SELECT count(*), max(label) FROM snapshots").fetchone() \
        == (200_001, "row")


@pytest.mark.smoke
def test_header_only_file_is_a_snapshot_with_no_rows(tmp_path: Path, cli_env: dict[str, str],
                                                     db_url: str,
                                                     db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "header_only_20230101.csv", b"a,b\n")
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert row_count(db_conn, "snapshots") == 0
    assert db_conn.execute(
        "SELECT status, row_count FROM snapshot_imports").fetchall() == [("imported", 0)]


def test_header_only_file_without_final_newline(tmp_path: Path, cli_env: dict[str, str],
                                                db_url: str,
                                                db_conn: psycopg.Connection) -> None:
    path = write(tmp_path, "header_only_20230101.csv", b"a,b")
    result = import_(cli_env, db_url, path)
    assert result.returncode == 0, result.stderr
    assert row_count(db_conn, "snapshots") == 0


def test_bad_row_after_header_is_rejected_not_fatal_with_skip(tmp_path: Path,
                                                              cli_env: dict[str, str],
                                                              db_url: str,
                                                              db_conn: psycopg.Connection
                                                              ) -> None:
    """Bytes invalid in UTF-8 on a data line are that row's problem, not the header's."""
    path = write(tmp_path, "skip_20230101.csv", b"a,b\n1,x\n2,bad\xff\n3,z\n")
    result = import_(cli_env, db_url, "--on-error", "skip", path)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT a FROM snapshots ORDER BY a").fetchall() == [(1,), (3,)]
    assert db_conn.execute("SELECT line, reason FROM snapshot_rejects").fetchall() == [
        (3, "invalid byte sequence for encoding utf-8")]


def test_hostile_names_are_only_odd_names(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                          db_conn: psycopg.Connection) -> None:
    db_conn.execute("CREATE TABLE victim (x int)")
    table = 'x"; DROP TABLE victim; --'
    path = write(tmp_path, "odd_20230101.csv",
                 b'"x""); DROP TABLE victim; --",\'; DELETE FROM victim\n1,2\n')
    result = invoke_cli("--database", db_url, "--table", table, "import", path, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "victim" in relations(db_conn)
    columns = [r[0] for r in db_conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
        "ORDER BY ordinal_position", (table,)).fetchall()]
    assert columns == ["x_drop_table_victim_", "_delete_from_victim", "snapshot_id"]
    assert db_conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        sql.Identifier(table + "_latest"))).fetchone() == (1,)
