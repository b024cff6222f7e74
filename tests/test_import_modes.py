"""`snapshots import` in append mode (and the command line around it), through the CLI.

Every test runs the CLI against a fresh database (in process, with the `cli` harness; as a
real process where signals or a second process matter) and checks what a user sees (exit
code, stdout, stderr) and what is in the database afterwards.
"""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest
from helpers import Cli, invoke_cli, start_cli
from psycopg import sql

SEED_HEADER = "user_id,name,store_name,credit_limit\n"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------- first import


SNAPSHOT_ID_DEFAULT = (
    "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
    "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
    "WHERE d.adrelid = to_regclass(%s) AND a.attname = 'snapshot_id'")


def test_first_import_creates_table_with_inferred_types(cli: Cli) -> None:
    content = (
        "User ID,Name,Credit Limit,Active,Joined,Seen At,Seen At TZ,Zip,Delta,Big,Local Day\n"
        "1,Jake,10000.1,true,2023-01-02,2023-01-02 10:00:00,2023-01-02T10:00:00+02:00,"
        "007,+5,1e5,01/02/2023\n"
        "2,Mostafa,500.002,false,2023-02-28,2023-02-28T23:59:59.5,2023-02-28 23:59:59Z,"
        "12345,-3,2,13/02/2023\n"
        "3,,,,,,,,,,\n"
    )
    path = cli.write("snapshot_20230101.csv", content)
    result = cli.run("import", path.name)

    out = lines(result.stdout)
    assert len(out) == 1
    assert out[0].startswith("imported snapshot_20230101.csv: 3 rows in ")
    assert "(#1); created public.snapshots (" in out[0]
    assert cli.column_types() == {
        "user_id": "bigint", "name": "text", "credit_limit": "numeric", "active": "boolean",
        "joined": "date", "seen_at": "timestamp without time zone",
        "seen_at_tz": "timestamp with time zone", "zip": "text", "delta": "text",
        "big": "text", "local_day": "text", "snapshot_id": "bigint",
    }
    # Values come back as written: nothing lost to a narrower type.
    rows = cli.rows("SELECT zip, delta, big, local_day, credit_limit::text, name "
                     "FROM snapshots ORDER BY user_id")
    assert rows == [("007", "+5", "1e5", "01/02/2023", "10000.1", "Jake"),
                    ("12345", "-3", "2", "13/02/2023", "500.002", "Mostafa"),
                    (None, None, None, None, None, None)]

    [record] = cli.ledger()
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
    assert cli.scalar("SELECT count(DISTINCT snapshot_id) FROM snapshots") == 1
    assert cli.scalar("SELECT min(snapshot_id) FROM snapshots") == record["id"]
    # The COPY filled snapshot_id from a constant DEFAULT while the table was this
    # import's alone; what it commits is the DEFAULT every append table has.
    assert cli.scalar(SNAPSHOT_ID_DEFAULT, ("snapshots",)) == \
        "(current_setting('snapshots.import_id'::text))::bigint"


def test_inference_never_rejects_its_own_file(cli: Cli) -> None:
    # Values that look typed but which the server rejects or reads differently: the quoted
    # empty string (not NULL) in a numeric-looking column, and an out-of-range offset.
    cli.write("odd_20230101.csv", 'id,n,at\n1,5,2023-01-02 10:00:00+02:00\n'
                                   '2,"",2023-01-02 10:00:00+20:00\n3,,\n')
    cli.run("import", "odd_20230101.csv")
    types = cli.column_types()
    assert types["id"] == "bigint"
    assert types["n"] == "text"
    assert types["at"] == "text"
    assert cli.data(columns="id, n, at", order="id") == [
        (1, "5", "2023-01-02 10:00:00+02:00"), (2, "", "2023-01-02 10:00:00+20:00"),
        (3, None, None)]


def test_type_override(cli: Cli) -> None:
    cli.write("s_20230101.csv", "User ID,Amount,Code\n1,2.5,7\n2,3,8\n")
    cli.run("import", "--type", "user id=text", "--type", "AMOUNT=numeric(10,2)",
             "--type", "code=integer", "s_20230101.csv")
    assert cli.column_types() == {"user_id": "text", "amount": "numeric", "code": "integer",
                                   "snapshot_id": "bigint"}
    assert cli.scalar("SELECT numeric_scale FROM information_schema.columns "
                       "WHERE table_name = 'snapshots' AND column_name = 'amount'") == 2
    assert cli.data(columns="user_id, amount::text", order="1") == [("1", "2.50"), ("2", "3.00")]


def test_type_override_errors_name_the_problem(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id\n1\n")
    result = cli.run("import", "--type", "nope=int", "s_20230101.csv", code=2)
    assert "--type names a column the file does not have: nope" in result.stderr
    result = cli.run("import", "--type", "id=no_such_type", "s_20230101.csv", code=2)
    assert "unknown type 'no_such_type'" in result.stderr
    result = cli.run("import", "--type", "id", "s_20230101.csv", code=2)
    assert "expected COL=TYPE" in result.stderr
    assert not cli.exists("snapshots")


# --------------------------------------------------------------------------- identity


def test_second_snapshot_appends_and_latest_view_shows_the_newest(cli: Cli) -> None:
    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n2,Mo,Espresso,500\n")
    cli.write("snapshot_20230603.csv", SEED_HEADER + "1,Jake,Best,12000.1\n3,Aiko,Tea,3000\n"
                                                      "5,Omar,Olives,1200\n")
    result = cli.run("import", "--jobs", "1", "snapshot_20230603.csv", "snapshot_20230101.csv")
    assert lines(result.stdout)[1].startswith("imported snapshot_20230603.csv: 3 rows")
    assert "created" not in lines(result.stdout)[1]

    assert cli.scalar("SELECT count(*) FROM snapshots") == 5
    assert cli.rows("SELECT snapshot_id, count(*) FROM snapshots GROUP BY 1 ORDER BY 1") == [
        (1, 2), (2, 3)]
    latest = "SELECT user_id, snapshot_id FROM snapshots_latest ORDER BY 1"
    assert cli.rows(latest) == [(1, 2), (3, 2), (5, 2)]

    # An older snapshot loaded later does not become the latest: snapshot date first...
    cli.write("snapshot_20220101.csv", SEED_HEADER + "9,Old,Shop,1\n")
    cli.run("import", "snapshot_20220101.csv")
    assert cli.rows(latest) == [(1, 2), (3, 2), (5, 2)]
    # ...then the import id among snapshots of the same date.
    cli.write("resend_20230603.csv", SEED_HEADER + "7,New,Shop,2\n")
    cli.run("import", "resend_20230603.csv")
    assert cli.rows(latest) == [(7, 4)]
    # An undated snapshot has no date to be newest by.
    cli.write("undated.csv", SEED_HEADER + "8,Undated,Shop,3\n")
    result = cli.run("import", "undated.csv")
    assert "undated.csv: no YYYYMMDD date in the name" in result.stderr
    assert cli.ledger()[-1]["snapshot_date"] is None
    assert cli.rows(latest) == [(7, 4)]


def test_reimport_is_skipped_and_same_bytes_elsewhere_is_same_content(cli: Cli) -> None:
    content = SEED_HEADER + "1,Jake,Best,10000.1\n"
    cli.write("snapshot_20230101.csv", content)
    cli.run("import", "snapshot_20230101.csv")

    result = cli.run("import", "snapshot_20230101.csv")
    assert lines(result.stdout) == ["skipped snapshot_20230101.csv: already imported as #1"]
    assert len(cli.ledger()) == 1
    assert cli.scalar("SELECT count(*) FROM snapshots") == 1

    cli.write("copy_20230102.csv", content)
    result = cli.run("import", "copy_20230102.csv")
    assert "imported copy_20230102.csv: 1 row" in result.stdout
    assert "same content as #1" in result.stdout
    first, second = cli.ledger()
    assert second["same_content_as"] == first["id"] == 1
    assert second["sha256"] == first["sha256"]
    assert second["status"] == "imported"
    assert second["snapshot_date"].isoformat() == "2023-01-02"
    assert cli.rows("SELECT snapshot_id, count(*) FROM snapshots GROUP BY 1 ORDER BY 1") == [
        (1, 1), (2, 1)]


def test_conflict_exits_1_and_writes_nothing(cli: Cli) -> None:
    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n")
    cli.run("import", "snapshot_20230101.csv")
    before = cli.data()
    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,99\n2,New,Shop,1\n")

    result = cli.run("import", "snapshot_20230101.csv", code=1)
    assert "conflict" in result.stderr
    assert "snapshot_20230101.csv was imported as #1 with different content" in result.stderr
    assert "--replace" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert cli.data() == before
    assert [r["status"] for r in cli.ledger()] == ["imported"]


def test_replace_supersedes_atomically(cli: Cli) -> None:
    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n2,Mo,Shop,5\n")
    cli.write("snapshot_20230603.csv", SEED_HEADER + "1,Jake,Best,12000.1\n")
    cli.run("import", "snapshot_20230101.csv", "snapshot_20230603.csv", "--jobs", "1")

    # A bad replacement changes nothing: the old import stays, with its rows.
    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,lots\n")
    result = cli.run("import", "--replace", "snapshot_20230101.csv", code=1)
    assert "snapshot_20230101.csv:2:" in result.stderr
    assert [(r["id"], r["status"]) for r in cli.ledger()] == [
        (1, "imported"), (2, "imported"), (3, "failed")]
    assert cli.rows("SELECT snapshot_id, count(*) FROM snapshots GROUP BY 1 ORDER BY 1") == [
        (1, 2), (2, 1)]

    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.2\n3,Aiko,Tea,1\n"
                                                      "4,Lena,Lemon,2\n")
    result = cli.run("import", "--replace", "snapshot_20230101.csv")
    assert "imported snapshot_20230101.csv: 3 rows" in result.stdout
    assert "replaced #1" in result.stdout
    assert [(r["id"], r["status"]) for r in cli.ledger()] == [
        (1, "replaced"), (2, "imported"), (3, "failed"), (4, "imported")]
    assert cli.rows("SELECT snapshot_id, user_id FROM snapshots ORDER BY 1, 2") == [
        (2, 1), (4, 1), (4, 3), (4, 4)]
    # The newest snapshot is still the newest.
    assert cli.rows("SELECT DISTINCT snapshot_id FROM snapshots_latest") == [(2,)]
    # And replacing with the now-imported bytes again is simply skipped.
    result = cli.run("import", "--replace", "snapshot_20230101.csv")
    assert "skipped snapshot_20230101.csv: already imported as #4" in result.stdout


# --------------------------------------------------------------------------- schema drift


def test_strict_refuses_different_columns_and_writes_nothing(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id,name,n\n1,a,5\n")
    cli.run("import", "s_20230101.csv")
    cli.write("s_20230102.csv", "id,Name,Extra,Other\n2,b,x,y\n")

    result = cli.run("import", "s_20230102.csv", code=1)
    assert "columns differ from table public.snapshots: added extra, other; missing n; " \
           "nothing written" in result.stderr
    assert "--schema-evolution add" in result.stderr
    # Other data altogether (a new user's first unrelated file) belongs in a table of its own.
    assert "--table NAME loads it into a table of its own" in result.stderr
    assert cli.column_types() == {"id": "bigint", "name": "text", "n": "bigint",
                                   "snapshot_id": "bigint"}
    assert cli.data(columns="id") == [(1,)]
    failed = cli.ledger()[-1]
    assert failed["status"] == "failed"
    assert "added extra, other; missing n" in failed["error"]

    # The same columns in another order and spelling are the same columns.
    cli.write("s_20230103.csv", "N,NAME,ID\n6,b,2\n")
    cli.run("import", "s_20230103.csv")
    assert cli.data(columns="id, name, n") == [(1, "a", 5), (2, "b", 6)]


def test_schema_evolution_add_adds_columns_and_widens_types(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id,name,n\n1,a,5\n")
    cli.run("import", "s_20230101.csv")

    # A new column is added (typed from the data), a missing one loads as NULL.
    cli.write("s_20230102.csv", "id,name,extra\n2,b,7\n")
    cli.run("import", "--schema-evolution", "add", "s_20230102.csv")
    assert cli.column_types() == {"id": "bigint", "name": "text", "n": "bigint",
                                   "snapshot_id": "bigint", "extra": "bigint"}
    assert cli.data(columns="id, n, extra") == [(1, 5, None), (2, None, 7)]
    assert cli.rows("SELECT id, extra FROM snapshots_latest") == [(2, 7)]

    # bigint -> numeric when a value needs it; old values are kept.
    cli.write("s_20230103.csv", "id,name,n,extra\n3,c,1.5,8\n")
    cli.run("import", "--schema-evolution", "add", "s_20230103.csv")
    assert cli.column_types()["n"] == "numeric"
    # numeric -> text.
    cli.write("s_20230104.csv", "id,name,n,extra\n4,d,abc,9\n")
    cli.run("import", "--schema-evolution", "add", "s_20230104.csv")
    assert cli.column_types()["n"] == "text"
    assert cli.data(columns="id, n") == [(1, "5"), (2, None), (3, "1.5"), (4, "abc")]
    assert cli.rows("SELECT id, n, extra FROM snapshots_latest") == [(4, "abc", 9)]
    assert [r["status"] for r in cli.ledger()] == ["imported"] * 4

    # A new column plus a row with the wrong number of fields: nothing changes, not even DDL.
    before = cli.column_types()
    cli.write("s_20230105.csv", "id,name,n,extra,more\n5,e,1,2,x\n6,f,1,2\n")
    result = cli.run("import", "--schema-evolution", "add", "s_20230105.csv", code=1)
    assert "s_20230105.csv:3:" in result.stderr
    assert cli.column_types() == before
    assert cli.scalar("SELECT count(*) FROM snapshots") == 4


# --------------------------------------------------------------------------- inputs


def test_gzip_is_hashed_compressed(cli: Cli) -> None:
    raw = (SEED_HEADER + "1,Jake,Best,10000.1\n2,Mo,Shop,5\n").encode()
    compressed = gzip.compress(raw, mtime=0)
    cli.write("snapshot_20230101.csv.gz", compressed)
    result = cli.run("import", "snapshot_20230101.csv.gz")
    assert "imported snapshot_20230101.csv.gz: 2 rows" in result.stdout
    [record] = cli.ledger()
    assert record["sha256"] == hashlib.sha256(compressed).hexdigest()
    assert record["sha256"] != hashlib.sha256(raw).hexdigest()
    assert record["size_bytes"] == len(compressed)
    assert record["snapshot_date"].isoformat() == "2023-01-01"
    assert cli.data(columns="user_id, name") == [(1, "Jake"), (2, "Mo")]
    result = cli.run("import", "snapshot_20230101.csv.gz")
    assert "skipped" in result.stdout


def test_delimiter_quote_and_null(cli: Cli) -> None:
    cli.write("semi_20230101.csv", 'id;name;v\n1;"a;b";NA\n2;x;3\n3;;4\n')
    cli.run("--table", "semi", "import", "--delimiter", ";", "--null", "NA",
             "semi_20230101.csv")
    assert cli.column_types("semi")["v"] == "bigint"
    # With --null NA, an empty field is an empty string.
    assert cli.data("semi", "id, name, v") == [(1, "a;b", None), (2, "x", 3), (3, "", 4)]

    cli.write("quote_20230101.csv", "id,name\n1,'a,b'\n2,'it''s'\n3,\"x\"\n")
    cli.run("--table", "quote", "import", "--quote", "'", "quote_20230101.csv")
    assert cli.data("quote", "id, name") == [(1, "a,b"), (2, "it's"), (3, '"x"')]

    cli.write("tab_20230101.csv", "id\tname\n1\ta,b\n")
    cli.run("--table", "tab", "import", "--delimiter", "\\t", "tab_20230101.csv")
    assert cli.data("tab", "id, name") == [(1, "a,b")]


def test_encoding_is_converted(cli: Cli) -> None:
    cli.write("latin_20230101.csv", "id,name\n1,caf\xe9\n2,Stra\xdfe\n".encode("latin-1"))
    result = cli.run("import", "latin_20230101.csv", code=1)  # not UTF-8
    assert "latin_20230101.csv:2: invalid byte sequence for encoding" in result.stderr
    assert "UTF8" in result.stderr
    assert "hint: check --encoding" in result.stderr
    assert not cli.exists("snapshots")

    cli.run("import", "--encoding", "LATIN1", "latin_20230101.csv")
    assert cli.data(columns="id, name") == [(1, "café"), (2, "Straße")]


def test_no_header_with_columns(cli: Cli) -> None:
    cli.write("nh_20230101.csv", "1,x\n2,y\n")
    cli.run("import", "--no-header", "--columns", "A,Store Name", "nh_20230101.csv")
    assert cli.column_types() == {"a": "bigint", "store_name": "text", "snapshot_id": "bigint"}
    assert cli.data(columns="a, store_name") == [(1, "x"), (2, "y")]
    assert cli.ledger()[0]["row_count"] == 2
    result = cli.run("import", "--no-header", "nh_20230101.csv", code=2)
    assert "--no-header needs --columns" in result.stderr


def test_bom_and_crlf_are_handled(cli: Cli) -> None:
    cli.write("bom_20230101.csv", b'\xef\xbb\xbfid,name\r\n1,"a\r\nb"\r\n2,c\r\n')
    cli.run("import", "bom_20230101.csv")
    assert cli.column_types() == {"id": "bigint", "name": "text", "snapshot_id": "bigint"}
    assert cli.data(columns="id, name") == [(1, "a\r\nb"), (2, "c")]


def test_header_only_file_is_a_snapshot_with_zero_rows(cli: Cli) -> None:
    cli.write("empty_20230101.csv", "id,name\n")
    result = cli.run("import", "empty_20230101.csv")
    assert "imported empty_20230101.csv: 0 rows" in result.stdout
    [record] = cli.ledger()
    assert (record["status"], record["row_count"]) == ("imported", 0)
    assert cli.column_types() == {"id": "text", "name": "text", "snapshot_id": "bigint"}
    assert cli.scalar("SELECT count(*) FROM snapshots") == 0


def test_empty_file_is_an_error(cli: Cli) -> None:
    cli.write("nothing_20230101.csv", "")
    result = cli.run("import", "nothing_20230101.csv", code=1)
    assert "nothing_20230101.csv:1: empty file: no header line" in result.stderr
    assert not cli.exists("snapshots")


@pytest.mark.parametrize("on_error", ["abort", "skip"])
def test_quoted_empty_is_empty_string_and_unquoted_empty_is_null(cli: Cli,
                                                                 on_error: str) -> None:
    cli.write("e_20230101.csv", 'id,name,note,n\n1,"",x,""\n2,,y,\n3,a,"",5\n'
                                 '4,"b,""c""",,6\n')
    cli.run("import", "--on-error", on_error, "e_20230101.csv")
    # `""` in an otherwise numeric column is a string: the column is text, not a rejected row.
    assert cli.column_types()["n"] == "text"
    assert cli.rows("SELECT id, name, name IS NULL, note, n FROM snapshots ORDER BY id") == [
        (1, "", False, "x", ""), (2, None, True, "y", None), (3, "a", False, "", "5"),
        (4, 'b,"c"', False, None, "6")]
    # The same with --null NA: a quoted "NA" is the string NA.
    cli.write("n_20230101.csv", 'id,v\n1,NA\n2,"NA"\n3,\n')
    cli.run("--table", "na", "import", "--on-error", on_error, "--null", "NA",
             "n_20230101.csv")
    assert cli.data("na", "id, v") == [(1, None), (2, "NA"), (3, "")]


def test_directory_loads_in_date_order_undated_last(cli: Cli) -> None:
    for name in ("snapshot_20230603.csv", "b_undated.csv", "snapshot_20230101.csv",
                 "a_undated.csv", "snapshot_20221231.csv.gz"):
        content = (SEED_HEADER + f"1,{name},Shop,1\n").encode()
        cli.write(f"in/{name}", gzip.compress(content) if name.endswith(".gz") else content)
    cli.write("in/notes.txt", "not a snapshot\n")
    cli.write("in/.hidden_20230101.csv", SEED_HEADER)
    cli.write("in/sub/snapshot_20240101.csv", SEED_HEADER)  # not recursive

    result = cli.run("import", "--jobs", "1", "in")
    expected = ["snapshot_20221231.csv.gz", "snapshot_20230101.csv", "snapshot_20230603.csv",
                "a_undated.csv", "b_undated.csv"]
    assert [line.split(":")[0] for line in lines(result.stdout)[:-1]] == [
        f"imported {name}" for name in expected]
    assert lines(result.stdout)[-1] == "5 files: 5 imported"
    assert [(r["id"], r["file_name"]) for r in cli.ledger()] == list(enumerate(expected, 1))
    assert cli.rows("SELECT DISTINCT name FROM snapshots_latest") == [("snapshot_20230603.csv",)]


def test_files_given_together_load_in_date_order(cli: Cli) -> None:
    for name in ("s_20230603.csv", "s_20230101.csv", "undated.csv"):
        cli.write(name, "id\n1\n" if name != "undated.csv" else "id\n2\n")
    cli.run("import", "--jobs", "1", "undated.csv", "s_20230603.csv", "s_20230101.csv")
    assert [r["file_name"] for r in cli.ledger()] == ["s_20230101.csv", "s_20230603.csv",
                                                       "undated.csv"]


def test_several_files_over_several_connections(cli: Cli) -> None:
    for day in range(1, 9):
        cli.write(f"s_202301{day:02}.csv", f"id,day\n{day},{day}\n{day + 100},{day}\n")
    result = cli.run("import", "--jobs", "3", ".")
    assert lines(result.stdout)[-1] == "8 files: 8 imported"
    assert {r["status"] for r in cli.ledger()} == {"imported"}
    assert cli.scalar("SELECT count(*) FROM snapshots") == 16
    assert cli.rows("SELECT id FROM snapshots_latest ORDER BY 1") == [(8,), (108,)]


def test_path_that_is_not_a_file_is_a_usage_error(cli: Cli) -> None:
    result = cli.run("import", "missing_20230101.csv", code=2)
    assert "missing_20230101.csv: no such file or directory" in result.stderr
    (cli.dir / "empty_dir").mkdir()
    result = cli.run("import", "empty_dir", code=2)
    assert "no .csv or .csv.gz files found in empty_dir" in result.stderr


# --------------------------------------------------------------------------- dry run


def test_dry_run_writes_nothing(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id,name\n1,a\n2,b\n")
    result = cli.run("import", "--dry-run", "s_20230101.csv")
    assert "valid s_20230101.csv: 2 rows" in result.stdout
    assert "nothing written (dry run)" in result.stdout
    assert not cli.exists("snapshot_imports")
    assert not cli.exists("snapshots")

    cli.run("import", "s_20230101.csv")
    cli.write("s_20230102.csv", "id,name\n3,c\nfour,d\n")
    result = cli.run("import", "--dry-run", "s_20230102.csv", code=1)
    assert "s_20230102.csv:3:" in result.stderr
    assert "column id" in result.stderr
    assert "'four'" in result.stderr
    cli.write("s_20230103.csv", "id,name\n3,c\n")
    cli.run("import", "--dry-run", "s_20230103.csv")
    assert len(cli.ledger()) == 1
    assert cli.scalar("SELECT count(*) FROM snapshots") == 2


# --------------------------------------------------------------------------- --on-error skip


def test_on_error_skip_keeps_good_rows_and_rejects(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id,n,note\n1,5,a\n")
    cli.run("import", "s_20230101.csv")
    content = ('id,n,note\n'
               '2,6,"multi\nline"\n'  # lines 2-3
               '3,abc,b\n'  # line 4: a value that is no bigint
               '4,7\n'  # line 5: too few fields
               '5,8,c\n')
    cli.write("s_20230102.csv", content)

    result = cli.run("import", "--dry-run", "--on-error", "skip", "s_20230102.csv")
    assert "valid s_20230102.csv: 2 rows" in result.stdout
    assert "2 rejected rows would be skipped; nothing written (dry run)" in result.stdout
    assert len(cli.ledger()) == 1

    result = cli.run("import", "--on-error", "skip", "s_20230102.csv")
    assert "imported s_20230102.csv: 2 rows" in result.stdout
    assert "2 rejected rows" in result.stdout
    assert "WARNING: s_20230102.csv: 2 rejected rows kept in public.snapshot_rejects " \
           "(import #2)" in result.stderr
    assert cli.rows("SELECT id, n, note FROM snapshots WHERE snapshot_id = 2 ORDER BY id") == [
        (2, 6, "multi\nline"), (5, 8, "c")]
    record = cli.ledger()[-1]
    assert (record["status"], record["row_count"], record["rejected_rows"]) == ("imported", 2, 2)
    rejects = cli.rows("SELECT import_id, line, raw, column_name, value, reason "
                        "FROM snapshot_rejects ORDER BY line")
    assert rejects[0][:5] == (2, 4, b"3,abc,b\n", "n", "abc")
    assert 'invalid input syntax for type bigint: "abc"' in rejects[0][5]
    assert rejects[1][:5] == (2, 5, b"4,7\n", None, None)
    assert "expected 3 fields, found 2" in rejects[1][5]

    listed = json.loads(cli.run("list", "--format", "json").stdout)
    assert [(e["file"], e["rejected_rows"]) for e in listed] == [
        ("s_20230101.csv", 0), ("s_20230102.csv", 2)]


def test_stray_quotes_are_rejected_by_skip_as_by_abort(cli: Cli) -> None:
    """The same bytes are the same data in both modes: a quote between ordinary characters,
    which COPY would drop (`Plain x`) or use to join records, fails the file by default and
    is a rejected record with --on-error skip, never loaded as written."""
    content = ('id,note\n'
               '1,"fine ""quoted"""\n'
               '2,Plain "x"\n'  # line 3
               '3,12" pizza\n'  # line 4
               '4,ok\n')
    cli.write("s_20230101.csv", content)
    result = cli.run("import", "s_20230101.csv", code=1)
    assert "s_20230101.csv:3: malformed quoting" in result.stderr
    assert not cli.exists("snapshots")
    cli.run("import", "--dry-run", "s_20230101.csv", code=1)

    result = cli.run("import", "--on-error", "skip", "s_20230101.csv")
    assert "2 rejected rows" in result.stdout
    assert cli.data(columns="id, note") == [(1, 'fine "quoted"'), (4, "ok")]
    rejects = cli.rows("SELECT line, raw, reason FROM snapshot_rejects ORDER BY line")
    assert [(line, raw) for line, raw, _ in rejects] == [
        (3, b'2,Plain "x"\n'), (4, b'3,12" pizza\n')]
    assert all("malformed quoting" in reason for _, _, reason in rejects)


def test_max_rejects_fails_the_whole_file(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id\n1\n")
    cli.run("import", "s_20230101.csv")
    cli.write("s_20230102.csv", "id\n2\nx\ny\n3\n")
    result = cli.run("import", "--on-error", "skip", "--max-rejects", "1", "s_20230102.csv",
                      code=1)
    assert "2 rejected rows, more than --max-rejects 1; nothing written" in result.stderr
    assert "line 3" in result.stderr
    assert cli.data(columns="id") == [(1,)]
    assert cli.scalar("SELECT count(*) FROM snapshot_rejects") == 0
    assert cli.ledger()[-1]["status"] == "failed"

    cli.run("import", "--on-error", "skip", "--max-rejects", "2", "s_20230102.csv")
    assert cli.data(columns="id") == [(1,), (2,), (3,)]
    assert cli.scalar("SELECT count(*) FROM snapshot_rejects") == 2

    result = cli.run("import", "--max-rejects", "2", "s_20230102.csv", code=2)
    assert "--max-rejects goes with --on-error skip" in result.stderr


# --------------------------------------------------------------------------- odd names


def test_hostile_header_and_table_name_are_only_odd_names(cli: Cli) -> None:
    cli.conn.execute("CREATE TABLE t (keep int)")
    cli.write("h_20230101.csv", 'id,"x""); DROP TABLE t; --"\n1,a\n')
    table = 'x"; DROP TABLE snapshot_imports; --'
    result = cli.run("--table", table, "import", "h_20230101.csv")
    assert "imported h_20230101.csv: 1 row" in result.stdout
    assert cli.column_types(table) == {"id": "bigint", "x_drop_table_t_": "text",
                                        "snapshot_id": "bigint"}
    assert cli.exists("t")
    assert cli.data(table, "id, x_drop_table_t_") == [(1, "a")]
    assert cli.rows(sql.SQL("SELECT id FROM {}").format(sql.Identifier(f"{table}_latest"))) \
        == [(1,)]
    [record] = cli.ledger()
    assert record["table_name"] == table

    listed = json.loads(cli.run("list", "--table", table, "--format", "json").stdout)
    assert [(e["table"], e["file"]) for e in listed] == [(table, "h_20230101.csv")]
    assert json.loads(cli.run("list", "--format", "json").stdout) == []  # other table

    # A header whose raw text is SQL stays data in the upsert path too.
    cli.conn.execute(sql.SQL("CREATE TABLE {} (\"k'); --\" int PRIMARY KEY, v text)").format(
        sql.Identifier("we'ird")))
    cli.write("w_20230101.csv", "\"K'); --\",V\n1,a\n")
    result = cli.run("--table", "we'ird", "import", "w_20230101.csv", code=1)
    # `k'); --` normalises to `k_` which the table does not have: refused by name, not by SQL.
    assert "added k_" in result.stderr


def test_table_name_limits(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id\n1\n")
    result = cli.run("--table", "a" * 64, "import", "s_20230101.csv", code=2)
    assert "a table name is 1 to 63 bytes" in result.stderr
    # An append table also needs room for its `<table>_latest` view.
    result = cli.run("--table", "b" * 60, "import", "s_20230101.csv", code=2)
    assert "must leave room for its view" in result.stderr
    assert not cli.exists("b" * 60)
    assert [r["status"] for r in cli.ledger()] == ["failed"]


def test_other_schema(cli: Cli) -> None:
    cli.conn.execute('CREATE SCHEMA "Other Schema"')
    cli.write("s_20230101.csv", "id\n1\n")
    cli.run("import", "--schema", "Other Schema", "s_20230101.csv")
    assert cli.column_types(schema="Other Schema") == {"id": "bigint", "snapshot_id": "bigint"}
    assert [r["status"] for r in cli.ledger("Other Schema")] == ["imported"]
    assert not cli.exists("public.snapshot_imports")
    assert not cli.exists("public.snapshots")
    assert cli.rows('SELECT id FROM "Other Schema".snapshots_latest') == [(1,)]

    listed = json.loads(cli.run("--schema", "Other Schema", "list", "--format", "json").stdout)
    assert [e["file"] for e in listed] == ["s_20230101.csv"]
    assert json.loads(cli.run("list", "--format", "json").stdout) == []

    for command in (("import", "s_20230101.csv"), ("list",), ("forget", "s_20230101.csv")):
        result = cli.run(*command, "--schema", "nope", code=2)
        assert "schema 'nope' does not exist" in result.stderr


# --------------------------------------------------------------------------- command line


def test_options_before_or_after_the_command(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id\n1\n")
    before = invoke_cli("--database", cli.db_url, "--table", "t1", "import", "s_20230101.csv",
                        env=cli.env, cwd=cli.dir)
    after = invoke_cli("import", "s_20230101.csv", "--table", "t1", "--database", cli.db_url,
                       env=cli.env, cwd=cli.dir)
    assert before.returncode == after.returncode == 0
    assert "imported s_20230101.csv" in before.stdout
    assert after.stdout.strip() == "skipped s_20230101.csv: already imported as #1"


def test_an_option_before_the_command_beats_the_environment(cli: Cli) -> None:
    """...the environment the command reads (SNAPSHOTS_TABLE here)."""
    cli.write("s_20230101.csv", "id\n1\n")
    cli.run("--table", "t1", "import", "s_20230101.csv")
    one = invoke_cli("--database", cli.db_url, "--table", "t1", "list", "--format", "json",
                     env={**cli.env, "SNAPSHOTS_TABLE": "wrong"})
    two = invoke_cli("list", "--format", "json", "--database", cli.db_url, "--table", "t1",
                     env=cli.env)
    assert one.returncode == two.returncode == 0
    assert one.stdout == two.stdout
    assert [e["file"] for e in json.loads(one.stdout)] == ["s_20230101.csv"]


def test_snapshots_database_environment_variable(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id\n1\n")
    env = {**cli.env, "SNAPSHOTS_DATABASE": cli.db_url}
    result = invoke_cli("import", "s_20230101.csv", env=env, cwd=cli.dir)
    assert result.returncode == 0, result.stderr
    assert cli.data(columns="id") == [(1,)]
    result = invoke_cli("list", "--format", "json", env=env)
    assert [e["file"] for e in json.loads(result.stdout)] == ["s_20230101.csv"]


def test_database_option_wins_over_snapshots_database(cli: Cli) -> None:
    cli.write("s_20230101.csv", "id\n1\n")
    cli.run("import", "s_20230101.csv")
    bad = {**cli.env, "SNAPSHOTS_DATABASE": "postgresql://nobody@127.0.0.1:1/none"}
    result = invoke_cli("--database", cli.db_url, "list", "--format", "json", env=bad)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 1


def test_seed_form_and_a_file_named_list(cli: Cli) -> None:
    cli.write("snapshot_20230101.csv", SEED_HEADER + "1,Jake,Best,10000.1\n")
    cli.write("list", "id\n1\n")
    result = cli.run("snapshot_20230101.csv")  # snapshots --database DB FILE...
    assert "imported snapshot_20230101.csv: 1 row" in result.stdout
    assert cli.data(columns="user_id") == [(1,)]

    result = cli.run("--table", "other", "./list")  # a file named list
    assert "imported list: 1 row" in result.stdout
    assert cli.data("other", "id") == [(1,)]

    result = cli.run("--table", "other", "list")  # the command
    assert "list" in result.stdout.split()
    assert "imported" in result.stdout


def test_unknown_word_is_a_usage_error(cli: Cli) -> None:
    result = cli.run("lsit", code=2)
    assert "'lsit' is neither a command nor an existing file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert not cli.exists("snapshot_imports")
    result = cli.run("import", "--mode", "sideways", "x.csv", code=2)
    assert "sideways" in result.stderr


def test_append_mode_on_a_keyed_table_is_refused(cli: Cli) -> None:
    cli.conn.execute("CREATE TABLE snapshots (id int PRIMARY KEY)")
    cli.write("s_20230101.csv", "id\n1\n")
    result = cli.run("import", "--mode", "append", "s_20230101.csv", code=2)
    assert "--mode append needs a snapshot_id column" in result.stderr
    assert cli.scalar("SELECT count(*) FROM snapshots") == 0
    cli.conn.execute("CREATE TABLE plain (id int)")
    result = cli.run("--table", "plain", "import", "s_20230101.csv", code=2)
    assert "neither a snapshot_id column nor a primary key" in result.stderr


# --------------------------------------------------------------------------- closed pipes


def test_a_reader_that_goes_away_stops_the_output_not_the_loads(cli: Cli) -> None:
    """`snapshots import DIR | head -1`: every file is still loaded (none left `importing`
    for the next run to reap), without a traceback or an error about the pipe."""
    for n in range(1, 21):
        cli.write(f"many/s_202301{n:02d}.csv", f"id,n\n{n},1\n")
    proc = start_cli("--database", cli.db_url, "import", "--jobs", "2", cli.dir / "many",
                     env=cli.env)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith("imported ")
    proc.stdout.close()  # like `head -1` exiting
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err
    statuses = [r["status"] for r in cli.ledger()]
    assert statuses == ["imported"] * 20

    listing = start_cli("--database", cli.db_url, "list", env=cli.env)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.readline()
    listing.stdout.close()
    err = listing.stderr.read()
    assert listing.wait(timeout=60) == 0 and "error" not in err, err
