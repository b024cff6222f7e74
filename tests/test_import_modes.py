"""`snapshots import` in append mode (and the command line around it), through the real CLI.

Every test runs `python -m snapshots` as a subprocess against a fresh database and checks what
a user sees (exit code, stdout, stderr) and what is in the database afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import run_cli, start_cli
from psycopg import sql
from psycopg.rows import dict_row

SEED_HEADER = "user_id,name,store_name,credit_limit\n"


class Snap:
    """The CLI against one test database, files in one directory, and a look at the result."""

    def __init__(self, db_url: str, env: dict[str, str], directory: Path,
                 conn: psycopg.Connection) -> None:
        self.db_url = db_url
        self.env = env
        self.dir = directory
        self.conn = conn

    def run(self, *args: str | Path, code: int | None = 0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`snapshots --database DB ARGS...`; asserts the exit code unless `code` is None."""
        result = run_cli("--database", self.db_url, *args, env=env or self.env, cwd=self.dir)
        if code is not None:
            assert result.returncode == code, (
                f"exit {result.returncode}, expected {code}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        return path

    def rows(self, query: str | sql.Composable,
             params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def scalar(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]

    def ledger(self, schema: str = "public") -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(
                sql.Identifier(schema, "snapshot_imports"))).fetchall()

    def exists(self, name: str) -> bool:
        return self.scalar("SELECT to_regclass(%s) IS NOT NULL", (name,))

    def column_types(self, table: str = "snapshots", schema: str = "public") -> dict[str, str]:
        return dict(self.rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table)))

    def data(self, table: str = "snapshots", columns: str = "*",
             order: str = "snapshot_id, 1") -> list[tuple[Any, ...]]:
        return self.rows(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(columns), sql.Identifier(table), sql.SQL(order)))


@pytest.fixture
def snap(db_url: str, cli_env: dict[str, str], tmp_path: Path,
         db_conn: psycopg.Connection) -> Snap:
    directory = tmp_path / "files"
    directory.mkdir()
    return Snap(db_url, cli_env, directory, db_conn)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- first import


def test_first_import_creates_table_with_inferred_types(snap: Snap) -> None:
    content = (
        "User ID,Name,Credit Limit,Active,Joined,Seen At,Seen At TZ,Zip,Delta,Big,Local Day\n"
        "1,Jake,10000.1,true,2023-01-02,2023-01-02 10:00:00,2023-01-02T10:00:00+02:00,"
        "007,+5,1e5,01/02/2023\n"
        "2,Mostafa,500.002,false,2023-02-28,2023-02-28T23:59:59.5,2023-02-28 23:59:59Z,"
        "12345,-3,2,13/02/2023\n"
        "3,,,,,,,,,,\n"
    )
    path = snap.write("snapshot_20230101.csv", content)
    result = snap.run("import", path.name)

    out = lines(result.stdout)
    assert len(out) == 1
    assert out[0].startswith("imported snapshot_20230101.csv: 3 rows in ")
    assert "(#1); created public.snapshots (" in out[0]
    assert snap.column_types() == {
        "user_id": "bigint", "name": "text", "credit_limit": "numeric", "active": "boolean",
        "joined": "date", "seen_at": "timestamp without time zone",
        "seen_at_tz": "timestamp with time zone", "zip": "text", "delta": "text",
        "big": "text", "local_day": "text", "snapshot_id": "bigint",
    }
    # Values come back as written: nothing lost to a narrower type.
    rows = snap.rows("SELECT zip, delta, big, local_day, credit_limit::text, name "
                     "FROM snapshots ORDER BY user_id")
    assert rows == [("007", "+5", "1e5", "01/02/2023", "10000.1", "Jake"),
                    ("12345", "-3", "2", "13/02/2023", "500.002", "Mostafa"),
                    (None, None, None, None, None, None)]

    [record] = snap.ledger()
    assert record["status"] == "imported"
    assert record["table_name"] == "snapshots"
    assert record["file_name"] == "snapshot_20230101.csv"
    assert record["path"] == str(path.resolve())
    assert record["snapshot_date"].isoformat() == "2023-01-01"
    assert record["sha256"] == hashlib.sha256(content.encode()).hexdigest()
    assert record["size_bytes"] == len(content.encode())
    assert record["row_count"] == 3
    assert record["rejected_rows"] == 0
    assert record["error"] is None
    assert record["same_content_as"] is None
    assert record["finished_at"] >= record["started_at"]
    assert record["imported_by"]["origin"] == "import"
    assert record["imported_by"]["version"]
    assert isinstance(record["imported_by"]["pid"], int)
    assert snap.scalar("SELECT count(DISTINCT snapshot_id) FROM snapshots") == 1
    assert snap.scalar("SELECT min(snapshot_id) FROM snapshots") == record["id"]


def test_inference_never_rejects_its_own_file(snap: Snap) -> None:
    # Values that look typed but which the server rejects or reads differently: the quoted
    # empty string (not NULL) in a numeric-looking column, and an out-of-range offset.
    snap.write("odd_20230101.csv", 'id,n,at\n1,5,2023-01-02 10:00:00+02:00\n'
                                   '2,"",2023-01-02 10:00:00+20:00\n3,,\n')
    snap.run("import", "odd_20230101.csv")
    types = snap.column_types()
    assert types["id"] == "bigint"
    assert types["n"] == "text"
    assert types["at"] == "text"
    assert snap.data(columns="id, n, at", order="id") == [
        (1, "5", "2023-01-02 10:00:00+02:00"), (2, "", "2023-01-02 10:00:00+20:00"),
        (3, None, None)]


def test_type_override(snap: Snap) -> None:
    snap.write("s_20230101.csv", "User ID,Amount,Code\n1,2.5,7\n2,3,8\n")
    snap.run("import", "--type", "user id=text", "--type", "AMOUNT=numeric(10,2)",
             "--type", "code=integer", "s_20230101.csv")
    assert snap.column_types() == {"user_id": "text", "amount": "numeric", "code": "integer",
                                   "snapshot_id": "bigint"}
    assert snap.scalar("SELECT numeric_scale FROM information_schema.columns "
                       "WHERE table_name = 'snapshots' AND column_name = 'amount'") == 2
    assert snap.data(columns="user_id, amount::text", order="1") == [("1", "2.50"), ("2", "3.00")]


def test_type_override_errors_name_the_problem(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id\n1\n")
    result = snap.run("import", "--type", "nope=int", "s_20230101.csv", code=2)
    assert "--type names a column the file does not have: nope" in result.stderr
    result = snap.run("import", "--type", "id=no_such_type", "s_20230101.csv", code=2)
    assert "unknown type 'no_such_type'" in result.stderr
    result = snap.run("import", "--type", "id", "s_20230101.csv", code=2)
    assert "expected COL=TYPE" in result.stderr
    assert not snap.exists("snapshots")


# --------------------------------------------------------------------------- identity


def test_second_snapshot_appends_and_latest_view_shows_the_newest(snap: Snap) -> None:
    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n2,Mo,Espresso,500\n")
    snap.write("snapshot_20230603.csv", SEED_HEADER + "1,Jake,Best,12000.1\n3,Aiko,Tea,3000\n"
                                                      "5,Omar,Olives,1200\n")
    result = snap.run("import", "--jobs", "1", "snapshot_20230603.csv", "snapshot_20230101.csv")
    assert lines(result.stdout)[1].startswith("imported snapshot_20230603.csv: 3 rows")
    assert "created" not in lines(result.stdout)[1]

    assert snap.scalar("SELECT count(*) FROM snapshots") == 5
    assert snap.rows("SELECT snapshot_id, count(*) FROM snapshots GROUP BY 1 ORDER BY 1") == [
        (1, 2), (2, 3)]
    latest = "SELECT user_id, snapshot_id FROM snapshots_latest ORDER BY 1"
    assert snap.rows(latest) == [(1, 2), (3, 2), (5, 2)]

    # An older snapshot loaded later does not become the latest: snapshot date first...
    snap.write("snapshot_20220101.csv", SEED_HEADER + "9,Old,Shop,1\n")
    snap.run("import", "snapshot_20220101.csv")
    assert snap.rows(latest) == [(1, 2), (3, 2), (5, 2)]
    # ...then the import id among snapshots of the same date.
    snap.write("resend_20230603.csv", SEED_HEADER + "7,New,Shop,2\n")
    snap.run("import", "resend_20230603.csv")
    assert snap.rows(latest) == [(7, 4)]
    # An undated snapshot has no date to be newest by.
    snap.write("undated.csv", SEED_HEADER + "8,Undated,Shop,3\n")
    result = snap.run("import", "undated.csv")
    assert "undated.csv: no YYYYMMDD date in the name" in result.stderr
    assert snap.ledger()[-1]["snapshot_date"] is None
    assert snap.rows(latest) == [(7, 4)]


def test_reimport_is_skipped_and_same_bytes_elsewhere_is_same_content(snap: Snap) -> None:
    content = SEED_HEADER + "1,Jake,Best,10000.1\n"
    snap.write("snapshot_20230101.csv", content)
    snap.run("import", "snapshot_20230101.csv")

    result = snap.run("import", "snapshot_20230101.csv")
    assert lines(result.stdout) == ["skipped snapshot_20230101.csv: already imported as #1"]
    assert len(snap.ledger()) == 1
    assert snap.scalar("SELECT count(*) FROM snapshots") == 1

    snap.write("copy_20230102.csv", content)
    result = snap.run("import", "copy_20230102.csv")
    assert "imported copy_20230102.csv: 1 row" in result.stdout
    assert "same content as #1" in result.stdout
    first, second = snap.ledger()
    assert second["same_content_as"] == first["id"] == 1
    assert second["sha256"] == first["sha256"]
    assert second["status"] == "imported"
    assert second["snapshot_date"].isoformat() == "2023-01-02"
    assert snap.rows("SELECT snapshot_id, count(*) FROM snapshots GROUP BY 1 ORDER BY 1") == [
        (1, 1), (2, 1)]


def test_conflict_exits_1_and_writes_nothing(snap: Snap) -> None:
    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n")
    snap.run("import", "snapshot_20230101.csv")
    before = snap.data()
    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,99\n2,New,Shop,1\n")

    result = snap.run("import", "snapshot_20230101.csv", code=1)
    assert "conflict" in result.stderr
    assert "snapshot_20230101.csv was imported as #1 with different content" in result.stderr
    assert "--replace" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert snap.data() == before
    assert [r["status"] for r in snap.ledger()] == ["imported"]


def test_replace_supersedes_atomically(snap: Snap) -> None:
    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n2,Mo,Shop,5\n")
    snap.write("snapshot_20230603.csv", SEED_HEADER + "1,Jake,Best,12000.1\n")
    snap.run("import", "snapshot_20230101.csv", "snapshot_20230603.csv", "--jobs", "1")

    # A bad replacement changes nothing: the old import stays, with its rows.
    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,lots\n")
    result = snap.run("import", "--replace", "snapshot_20230101.csv", code=1)
    assert "snapshot_20230101.csv:2:" in result.stderr
    assert [(r["id"], r["status"]) for r in snap.ledger()] == [
        (1, "imported"), (2, "imported"), (3, "failed")]
    assert snap.rows("SELECT snapshot_id, count(*) FROM snapshots GROUP BY 1 ORDER BY 1") == [
        (1, 2), (2, 1)]

    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.2\n3,Aiko,Tea,1\n"
                                                      "4,Lena,Lemon,2\n")
    result = snap.run("import", "--replace", "snapshot_20230101.csv")
    assert "imported snapshot_20230101.csv: 3 rows" in result.stdout
    assert "replaced #1" in result.stdout
    assert [(r["id"], r["status"]) for r in snap.ledger()] == [
        (1, "replaced"), (2, "imported"), (3, "failed"), (4, "imported")]
    assert snap.rows("SELECT snapshot_id, user_id FROM snapshots ORDER BY 1, 2") == [
        (2, 1), (4, 1), (4, 3), (4, 4)]
    # The newest snapshot is still the newest.
    assert snap.rows("SELECT DISTINCT snapshot_id FROM snapshots_latest") == [(2,)]
    # And replacing with the now-imported bytes again is simply skipped.
    result = snap.run("import", "--replace", "snapshot_20230101.csv")
    assert "skipped snapshot_20230101.csv: already imported as #4" in result.stdout


# --------------------------------------------------------------------------- schema drift


def test_strict_refuses_different_columns_and_writes_nothing(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id,name,n\n1,a,5\n")
    snap.run("import", "s_20230101.csv")
    snap.write("s_20230102.csv", "id,Name,Extra,Other\n2,b,x,y\n")

    result = snap.run("import", "s_20230102.csv", code=1)
    assert "columns differ from table public.snapshots: added extra, other; missing n; " \
           "nothing written" in result.stderr
    assert "--schema-evolution add" in result.stderr
    # Other data altogether (a new user's first unrelated file) belongs in a table of its own.
    assert "--table NAME loads it into a table of its own" in result.stderr
    assert snap.column_types() == {"id": "bigint", "name": "text", "n": "bigint",
                                   "snapshot_id": "bigint"}
    assert snap.data(columns="id") == [(1,)]
    failed = snap.ledger()[-1]
    assert failed["status"] == "failed"
    assert "added extra, other; missing n" in failed["error"]

    # The same columns in another order and spelling are the same columns.
    snap.write("s_20230103.csv", "N,NAME,ID\n6,b,2\n")
    snap.run("import", "s_20230103.csv")
    assert snap.data(columns="id, name, n") == [(1, "a", 5), (2, "b", 6)]


def test_schema_evolution_add_adds_columns_and_widens_types(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id,name,n\n1,a,5\n")
    snap.run("import", "s_20230101.csv")

    # A new column is added (typed from the data), a missing one loads as NULL.
    snap.write("s_20230102.csv", "id,name,extra\n2,b,7\n")
    snap.run("import", "--schema-evolution", "add", "s_20230102.csv")
    assert snap.column_types() == {"id": "bigint", "name": "text", "n": "bigint",
                                   "snapshot_id": "bigint", "extra": "bigint"}
    assert snap.data(columns="id, n, extra") == [(1, 5, None), (2, None, 7)]
    assert snap.rows("SELECT id, extra FROM snapshots_latest") == [(2, 7)]

    # bigint -> numeric when a value needs it; old values are kept.
    snap.write("s_20230103.csv", "id,name,n,extra\n3,c,1.5,8\n")
    snap.run("import", "--schema-evolution", "add", "s_20230103.csv")
    assert snap.column_types()["n"] == "numeric"
    # numeric -> text.
    snap.write("s_20230104.csv", "id,name,n,extra\n4,d,abc,9\n")
    snap.run("import", "--schema-evolution", "add", "s_20230104.csv")
    assert snap.column_types()["n"] == "text"
    assert snap.data(columns="id, n") == [(1, "5"), (2, None), (3, "1.5"), (4, "abc")]
    assert snap.rows("SELECT id, n, extra FROM snapshots_latest") == [(4, "abc", 9)]
    assert [r["status"] for r in snap.ledger()] == ["imported"] * 4

    # A new column plus a row with the wrong number of fields: nothing changes, not even DDL.
    before = snap.column_types()
    snap.write("s_20230105.csv", "id,name,n,extra,more\n5,e,1,2,x\n6,f,1,2\n")
    result = snap.run("import", "--schema-evolution", "add", "s_20230105.csv", code=1)
    assert "s_20230105.csv:3:" in result.stderr
    assert snap.column_types() == before
    assert snap.scalar("SELECT count(*) FROM snapshots") == 4


# --------------------------------------------------------------------------- inputs


def test_gzip_is_hashed_compressed(snap: Snap) -> None:
    raw = (SEED_HEADER + "1,Jake,Best,10000.1\n2,Mo,Shop,5\n").encode()
    compressed = gzip.compress(raw, mtime=0)
    snap.write("snapshot_20230101.csv.gz", compressed)
    result = snap.run("import", "snapshot_20230101.csv.gz")
    assert "imported snapshot_20230101.csv.gz: 2 rows" in result.stdout
    [record] = snap.ledger()
    assert record["sha256"] == hashlib.sha256(compressed).hexdigest()
    assert record["sha256"] != hashlib.sha256(raw).hexdigest()
    assert record["size_bytes"] == len(compressed)
    assert record["snapshot_date"].isoformat() == "2023-01-01"
    assert snap.data(columns="user_id, name") == [(1, "Jake"), (2, "Mo")]
    result = snap.run("import", "snapshot_20230101.csv.gz")
    assert "skipped" in result.stdout


def test_delimiter_quote_and_null(snap: Snap) -> None:
    snap.write("semi_20230101.csv", 'id;name;v\n1;"a;b";NA\n2;x;3\n3;;4\n')
    snap.run("--table", "semi", "import", "--delimiter", ";", "--null", "NA",
             "semi_20230101.csv")
    assert snap.column_types("semi")["v"] == "bigint"
    # With --null NA, an empty field is an empty string.
    assert snap.data("semi", "id, name, v") == [(1, "a;b", None), (2, "x", 3), (3, "", 4)]

    snap.write("quote_20230101.csv", "id,name\n1,'a,b'\n2,'it''s'\n3,\"x\"\n")
    snap.run("--table", "quote", "import", "--quote", "'", "quote_20230101.csv")
    assert snap.data("quote", "id, name") == [(1, "a,b"), (2, "it's"), (3, '"x"')]

    snap.write("tab_20230101.csv", "id\tname\n1\ta,b\n")
    snap.run("--table", "tab", "import", "--delimiter", "\\t", "tab_20230101.csv")
    assert snap.data("tab", "id, name") == [(1, "a,b")]


def test_encoding_is_converted(snap: Snap) -> None:
    snap.write("latin_20230101.csv", "id,name\n1,caf\xe9\n2,Stra\xdfe\n".encode("latin-1"))
    result = snap.run("import", "latin_20230101.csv", code=1)  # not UTF-8
    assert "latin_20230101.csv:2: invalid byte sequence for encoding" in result.stderr
    assert "UTF8" in result.stderr
    assert "hint: check --encoding" in result.stderr
    assert not snap.exists("snapshots")

    snap.run("import", "--encoding", "LATIN1", "latin_20230101.csv")
    assert snap.data(columns="id, name") == [(1, "café"), (2, "Straße")]


def test_no_header_with_columns(snap: Snap) -> None:
    snap.write("nh_20230101.csv", "1,x\n2,y\n")
    snap.run("import", "--no-header", "--columns", "A,Store Name", "nh_20230101.csv")
    assert snap.column_types() == {"a": "bigint", "store_name": "text", "snapshot_id": "bigint"}
    assert snap.data(columns="a, store_name") == [(1, "x"), (2, "y")]
    assert snap.ledger()[0]["row_count"] == 2
    result = snap.run("import", "--no-header", "nh_20230101.csv", code=2)
    assert "--no-header needs --columns" in result.stderr


def test_bom_and_crlf_are_handled(snap: Snap) -> None:
    snap.write("bom_20230101.csv", b'\xef\xbb\xbfid,name\r\n1,"a\r\nb"\r\n2,c\r\n')
    snap.run("import", "bom_20230101.csv")
    assert snap.column_types() == {"id": "bigint", "name": "text", "snapshot_id": "bigint"}
    assert snap.data(columns="id, name") == [(1, "a\r\nb"), (2, "c")]


def test_header_only_file_is_a_snapshot_with_zero_rows(snap: Snap) -> None:
    snap.write("empty_20230101.csv", "id,name\n")
    result = snap.run("import", "empty_20230101.csv")
    assert "imported empty_20230101.csv: 0 rows" in result.stdout
    [record] = snap.ledger()
    assert (record["status"], record["row_count"]) == ("imported", 0)
    assert snap.column_types() == {"id": "text", "name": "text", "snapshot_id": "bigint"}
    assert snap.scalar("SELECT count(*) FROM snapshots") == 0


def test_empty_file_is_an_error(snap: Snap) -> None:
    snap.write("nothing_20230101.csv", "")
    result = snap.run("import", "nothing_20230101.csv", code=1)
    assert "nothing_20230101.csv:1: empty file: no header line" in result.stderr
    assert not snap.exists("snapshots")


@pytest.mark.parametrize("on_error", ["abort", "skip"])
def test_quoted_empty_is_empty_string_and_unquoted_empty_is_null(snap: Snap,
                                                                 on_error: str) -> None:
    snap.write("e_20230101.csv", 'id,name,note,n\n1,"",x,""\n2,,y,\n3,a,"",5\n'
                                 '4,"b,""c""",,6\n')
    snap.run("import", "--on-error", on_error, "e_20230101.csv")
    # `""` in an otherwise numeric column is a string: the column is text, not a rejected row.
    assert snap.column_types()["n"] == "text"
    assert snap.rows("SELECT id, name, name IS NULL, note, n FROM snapshots ORDER BY id") == [
        (1, "", False, "x", ""), (2, None, True, "y", None), (3, "a", False, "", "5"),
        (4, 'b,"c"', False, None, "6")]
    # The same with --null NA: a quoted "NA" is the string NA.
    snap.write("n_20230101.csv", 'id,v\n1,NA\n2,"NA"\n3,\n')
    snap.run("--table", "na", "import", "--on-error", on_error, "--null", "NA",
             "n_20230101.csv")
    assert snap.data("na", "id, v") == [(1, None), (2, "NA"), (3, "")]


def test_directory_loads_in_date_order_undated_last(snap: Snap) -> None:
    for name in ("snapshot_20230603.csv", "b_undated.csv", "snapshot_20230101.csv",
                 "a_undated.csv", "snapshot_20221231.csv.gz"):
        content = (SEED_HEADER + f"1,{name},Shop,1\n").encode()
        snap.write(f"in/{name}", gzip.compress(content) if name.endswith(".gz") else content)
    snap.write("in/notes.txt", "not a snapshot\n")
    snap.write("in/.hidden_20230101.csv", SEED_HEADER)
    snap.write("in/sub/snapshot_20240101.csv", SEED_HEADER)  # not recursive

    result = snap.run("import", "--jobs", "1", "in")
    expected = ["snapshot_20221231.csv.gz", "snapshot_20230101.csv", "snapshot_20230603.csv",
                "a_undated.csv", "b_undated.csv"]
    assert [line.split(":")[0] for line in lines(result.stdout)[:-1]] == [
        f"imported {name}" for name in expected]
    assert lines(result.stdout)[-1] == "5 files: 5 imported"
    assert [(r["id"], r["file_name"]) for r in snap.ledger()] == list(enumerate(expected, 1))
    assert snap.rows("SELECT DISTINCT name FROM snapshots_latest") == [("snapshot_20230603.csv",)]


def test_files_given_together_load_in_date_order(snap: Snap) -> None:
    for name in ("s_20230603.csv", "s_20230101.csv", "undated.csv"):
        snap.write(name, "id\n1\n" if name != "undated.csv" else "id\n2\n")
    snap.run("import", "--jobs", "1", "undated.csv", "s_20230603.csv", "s_20230101.csv")
    assert [r["file_name"] for r in snap.ledger()] == ["s_20230101.csv", "s_20230603.csv",
                                                       "undated.csv"]


def test_several_files_over_several_connections(snap: Snap) -> None:
    for day in range(1, 9):
        snap.write(f"s_202301{day:02}.csv", f"id,day\n{day},{day}\n{day + 100},{day}\n")
    result = snap.run("import", "--jobs", "3", ".")
    assert lines(result.stdout)[-1] == "8 files: 8 imported"
    assert {r["status"] for r in snap.ledger()} == {"imported"}
    assert snap.scalar("SELECT count(*) FROM snapshots") == 16
    assert snap.rows("SELECT id FROM snapshots_latest ORDER BY 1") == [(8,), (108,)]


def test_path_that_is_not_a_file_is_a_usage_error(snap: Snap) -> None:
    result = snap.run("import", "missing_20230101.csv", code=2)
    assert "missing_20230101.csv: no such file or directory" in result.stderr
    (snap.dir / "empty_dir").mkdir()
    result = snap.run("import", "empty_dir", code=2)
    assert "no .csv or .csv.gz files found in empty_dir" in result.stderr


# --------------------------------------------------------------------------- dry run


def test_dry_run_writes_nothing(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id,name\n1,a\n2,b\n")
    result = snap.run("import", "--dry-run", "s_20230101.csv")
    assert "valid s_20230101.csv: 2 rows" in result.stdout
    assert "nothing written (dry run)" in result.stdout
    assert not snap.exists("snapshot_imports")
    assert not snap.exists("snapshots")

    snap.run("import", "s_20230101.csv")
    snap.write("s_20230102.csv", "id,name\n3,c\nfour,d\n")
    result = snap.run("import", "--dry-run", "s_20230102.csv", code=1)
    assert "s_20230102.csv:3:" in result.stderr
    assert "column id" in result.stderr
    assert "'four'" in result.stderr
    snap.write("s_20230103.csv", "id,name\n3,c\n")
    snap.run("import", "--dry-run", "s_20230103.csv")
    assert len(snap.ledger()) == 1
    assert snap.scalar("SELECT count(*) FROM snapshots") == 2


# --------------------------------------------------------------------------- --on-error skip


def test_on_error_skip_keeps_good_rows_and_rejects(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id,n,note\n1,5,a\n")
    snap.run("import", "s_20230101.csv")
    content = ('id,n,note\n'
               '2,6,"multi\nline"\n'  # lines 2-3
               '3,abc,b\n'  # line 4: a value that is no bigint
               '4,7\n'  # line 5: too few fields
               '5,8,c\n')
    snap.write("s_20230102.csv", content)

    result = snap.run("import", "--dry-run", "--on-error", "skip", "s_20230102.csv")
    assert "valid s_20230102.csv: 2 rows" in result.stdout
    assert "2 rejected rows would be skipped; nothing written (dry run)" in result.stdout
    assert len(snap.ledger()) == 1

    result = snap.run("import", "--on-error", "skip", "s_20230102.csv")
    assert "imported s_20230102.csv: 2 rows" in result.stdout
    assert "2 rejected rows" in result.stdout
    assert "WARNING: s_20230102.csv: 2 rejected rows kept in public.snapshot_rejects " \
           "(import #2)" in result.stderr
    assert snap.rows("SELECT id, n, note FROM snapshots WHERE snapshot_id = 2 ORDER BY id") == [
        (2, 6, "multi\nline"), (5, 8, "c")]
    record = snap.ledger()[-1]
    assert (record["status"], record["row_count"], record["rejected_rows"]) == ("imported", 2, 2)
    rejects = snap.rows("SELECT import_id, line, raw, column_name, value, reason "
                        "FROM snapshot_rejects ORDER BY line")
    assert rejects[0][:5] == (2, 4, b"3,abc,b\n", "n", "abc")
    assert 'invalid input syntax for type bigint: "abc"' in rejects[0][5]
    assert rejects[1][:5] == (2, 5, b"4,7\n", None, None)
    assert "expected 3 fields, found 2" in rejects[1][5]

    listed = json.loads(snap.run("list", "--format", "json").stdout)
    assert [(e["file"], e["rejected_rows"]) for e in listed] == [
        ("s_20230101.csv", 0), ("s_20230102.csv", 2)]


def test_stray_quotes_are_rejected_by_skip_as_by_abort(snap: Snap) -> None:
    """The same bytes are the same data in both modes: a quote between ordinary characters,
    which COPY would drop (`Plain x`) or use to join records, fails the file by default and
    is a rejected record with --on-error skip, never loaded as written."""
    content = ('id,note\n'
               '1,"fine ""quoted"""\n'
               '2,Plain "x"\n'  # line 3
               '3,12" pizza\n'  # line 4
               '4,ok\n')
    snap.write("s_20230101.csv", content)
    result = snap.run("import", "s_20230101.csv", code=1)
    assert "s_20230101.csv:3: malformed quoting" in result.stderr
    assert not snap.exists("snapshots")
    snap.run("import", "--dry-run", "s_20230101.csv", code=1)

    result = snap.run("import", "--on-error", "skip", "s_20230101.csv")
    assert "2 rejected rows" in result.stdout
    assert snap.data(columns="id, note") == [(1, 'fine "quoted"'), (4, "ok")]
    rejects = snap.rows("SELECT line, raw, reason FROM snapshot_rejects ORDER BY line")
    assert [(line, raw) for line, raw, _ in rejects] == [
        (3, b'2,Plain "x"\n'), (4, b'3,12" pizza\n')]
    assert all("malformed quoting" in reason for _, _, reason in rejects)


def test_max_rejects_fails_the_whole_file(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id\n1\n")
    snap.run("import", "s_20230101.csv")
    snap.write("s_20230102.csv", "id\n2\nx\ny\n3\n")
    result = snap.run("import", "--on-error", "skip", "--max-rejects", "1", "s_20230102.csv",
                      code=1)
    assert "2 rejected rows, more than --max-rejects 1; nothing written" in result.stderr
    assert "line 3" in result.stderr
    assert snap.data(columns="id") == [(1,)]
    assert snap.scalar("SELECT count(*) FROM snapshot_rejects") == 0
    assert snap.ledger()[-1]["status"] == "failed"

    snap.run("import", "--on-error", "skip", "--max-rejects", "2", "s_20230102.csv")
    assert snap.data(columns="id") == [(1,), (2,), (3,)]
    assert snap.scalar("SELECT count(*) FROM snapshot_rejects") == 2

    result = snap.run("import", "--max-rejects", "2", "s_20230102.csv", code=2)
    assert "--max-rejects goes with --on-error skip" in result.stderr


# --------------------------------------------------------------------------- odd names


def test_hostile_header_and_table_name_are_only_odd_names(snap: Snap) -> None:
    snap.conn.execute("CREATE TABLE t (keep int)")
    snap.write("h_20230101.csv", 'id,"x""); DROP TABLE t; --"\n1,a\n')
    table = 'x"; DROP TABLE snapshot_imports; --'
    result = snap.run("--table", table, "import", "h_20230101.csv")
    assert "imported h_20230101.csv: 1 row" in result.stdout
    assert snap.column_types(table) == {"id": "bigint", "x_drop_table_t_": "text",
                                        "snapshot_id": "bigint"}
    assert snap.exists("t")
    assert snap.data(table, "id, x_drop_table_t_") == [(1, "a")]
    assert snap.rows(sql.SQL("SELECT id FROM {}").format(sql.Identifier(f"{table}_latest"))) \
        == [(1,)]
    [record] = snap.ledger()
    assert record["table_name"] == table

    listed = json.loads(snap.run("list", "--table", table, "--format", "json").stdout)
    assert [(e["table"], e["file"]) for e in listed] == [(table, "h_20230101.csv")]
    assert json.loads(snap.run("list", "--format", "json").stdout) == []  # other table

    # A header whose raw text is SQL stays data in the upsert path too.
    snap.conn.execute(sql.SQL("CREATE TABLE {} (\"k'); --\" int PRIMARY KEY, v text)").format(
        sql.Identifier("we'ird")))
    snap.write("w_20230101.csv", "\"K'); --\",V\n1,a\n")
    result = snap.run("--table", "we'ird", "import", "w_20230101.csv", code=1)
    # `k'); --` normalises to `k_` which the table does not have: refused by name, not by SQL.
    assert "added k_" in result.stderr


def test_table_name_limits(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id\n1\n")
    result = snap.run("--table", "a" * 64, "import", "s_20230101.csv", code=2)
    assert "a table name is 1 to 63 bytes" in result.stderr
    # An append table also needs room for its `<table>_latest` view.
    result = snap.run("--table", "b" * 60, "import", "s_20230101.csv", code=2)
    assert "must leave room for its view" in result.stderr
    assert not snap.exists("b" * 60)
    assert [r["status"] for r in snap.ledger()] == ["failed"]


def test_other_schema(snap: Snap) -> None:
    snap.conn.execute('CREATE SCHEMA "Other Schema"')
    snap.write("s_20230101.csv", "id\n1\n")
    snap.run("import", "--schema", "Other Schema", "s_20230101.csv")
    assert snap.column_types(schema="Other Schema") == {"id": "bigint", "snapshot_id": "bigint"}
    assert [r["status"] for r in snap.ledger("Other Schema")] == ["imported"]
    assert not snap.exists("public.snapshot_imports")
    assert not snap.exists("public.snapshots")
    assert snap.rows('SELECT id FROM "Other Schema".snapshots_latest') == [(1,)]

    listed = json.loads(snap.run("--schema", "Other Schema", "list", "--format", "json").stdout)
    assert [e["file"] for e in listed] == ["s_20230101.csv"]
    assert json.loads(snap.run("list", "--format", "json").stdout) == []

    for command in (("import", "s_20230101.csv"), ("list",), ("forget", "s_20230101.csv")):
        result = snap.run(*command, "--schema", "nope", code=2)
        assert "schema 'nope' does not exist" in result.stderr


# --------------------------------------------------------------------------- command line


def test_options_before_or_after_the_command(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id\n1\n")
    before = run_cli("--database", snap.db_url, "--table", "t1", "import", "s_20230101.csv",
                     env=snap.env, cwd=snap.dir)
    after = run_cli("import", "s_20230101.csv", "--table", "t1", "--database", snap.db_url,
                    env=snap.env, cwd=snap.dir)
    assert before.returncode == after.returncode == 0
    assert "imported s_20230101.csv" in before.stdout
    assert after.stdout.strip() == "skipped s_20230101.csv: already imported as #1"

    # An option before the command also beats the environment the command reads.
    one = run_cli("--database", snap.db_url, "--table", "t1", "list", "--format", "json",
                  env={**snap.env, "SNAPSHOTS_TABLE": "wrong"})
    two = run_cli("list", "--format", "json", "--database", snap.db_url, "--table", "t1",
                  env=snap.env)
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout
    assert [e["file"] for e in json.loads(one.stdout)] == ["s_20230101.csv"]


def test_snapshots_database_environment_variable(snap: Snap) -> None:
    snap.write("s_20230101.csv", "id\n1\n")
    env = {**snap.env, "SNAPSHOTS_DATABASE": snap.db_url}
    result = run_cli("import", "s_20230101.csv", env=env, cwd=snap.dir)
    assert result.returncode == 0, result.stderr
    assert snap.data(columns="id") == [(1,)]
    result = run_cli("list", "--format", "json", env=env)
    assert [e["file"] for e in json.loads(result.stdout)] == ["s_20230101.csv"]
    # --database wins over the environment.
    bad = {**snap.env, "SNAPSHOTS_DATABASE": "postgresql://nobody@127.0.0.1:1/none"}
    result = run_cli("--database", snap.db_url, "list", "--format", "json", env=bad)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 1


def test_seed_form_and_a_file_named_list(snap: Snap) -> None:
    snap.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n")
    snap.write("list", "id\n1\n")
    result = snap.run("snapshot_20230101.csv")  # snapshots --database DB FILE...
    assert "imported snapshot_20230101.csv: 1 row" in result.stdout
    assert snap.data(columns="user_id") == [(1,)]

    result = snap.run("--table", "other", "./list")  # a file named list
    assert "imported list: 1 row" in result.stdout
    assert snap.data("other", "id") == [(1,)]

    result = snap.run("--table", "other", "list")  # the command
    assert "list" in result.stdout.split()
    assert "imported" in result.stdout


def test_unknown_word_is_a_usage_error(snap: Snap) -> None:
    result = snap.run("lsit", code=2)
    assert "'lsit' is neither a command nor an existing file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not snap.exists("snapshot_imports")
    result = snap.run("import", "--mode", "sideways", "x.csv", code=2)
    assert "sideways" in result.stderr


def test_append_mode_on_a_keyed_table_is_refused(snap: Snap) -> None:
    snap.conn.execute("CREATE TABLE snapshots (id int PRIMARY KEY)")
    snap.write("s_20230101.csv", "id\n1\n")
    result = snap.run("import", "--mode", "append", "s_20230101.csv", code=2)
    assert "--mode append needs a snapshot_id column" in result.stderr
    assert snap.scalar("SELECT count(*) FROM snapshots") == 0
    snap.conn.execute("CREATE TABLE plain (id int)")
    result = snap.run("--table", "plain", "import", "s_20230101.csv", code=2)
    assert "neither a snapshot_id column nor a primary key" in result.stderr


# --------------------------------------------------------------------------- closed pipes


def test_a_reader_that_goes_away_stops_the_output_not_the_loads(snap: Snap) -> None:
    """`snapshots import DIR | head -1`: every file is still loaded (none left `importing`
    for the next run to reap), without a traceback or an error about the pipe."""
    for n in range(1, 21):
        snap.write(f"many/s_202301{n:02d}.csv", f"id,n\n{n},1\n")
    proc = start_cli("--database", snap.db_url, "import", "--jobs", "2", snap.dir / "many",
                     env=snap.env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("imported ")
    proc.stdout.close()  # like `head -1` exiting
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err
    statuses = [r["status"] for r in snap.ledger()]
    assert statuses == ["imported"] * 20

    listing = start_cli("--database", snap.db_url, "list", env=snap.env)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.readline()
    listing.stdout.close()
    err = listing.stderr.read()
    assert listing.wait(timeout=60) == 0 and "error" not in err, err
