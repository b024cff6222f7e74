"""`snapshots list` (table, CSV, JSON and its JSON Schema; file states) and `snapshots forget`,
through the CLI (in process, with the `cli` harness).

The list tests share one database prepared once per module with every kind of record; they
only read it. The forget tests change data, so each gets its own database.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from helpers import Cli, conninfo_to_uri
from psycopg import sql

from snapshots import embedded

RECORD_KEYS = ["id", "table", "file", "path", "snapshot_date", "sha256", "size_bytes", "rows",
               "rejected_rows", "status", "error", "started_at", "finished_at",
               "duration_seconds", "same_content_as", "imported_by"]
PROVENANCE_KEYS = ["host", "user", "role", "pid", "version", "origin", "namespace", "pod",
                   "source"]


def load_schema() -> dict[str, Any]:
    """The schema as installed: package data of `snapshots`."""
    text = resources.files("snapshots").joinpath("list.schema.json").read_text()
    return json.loads(text)


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def assert_valid(validator: jsonschema.protocols.Validator, document: Any) -> None:
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def clean_env(embedded_dir: Path) -> dict[str, str]:
    """Like conftest's cli_env, for a module-scoped fixture."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPSHOTS_", "PG"))}
    env[embedded.DATA_DIR_ENV] = str(embedded_dir)
    return env


@pytest.fixture(scope="module")
def listed(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """One database holding every kind of record:

    #1 a imported · b imported (#2), then changed on disk · #3 c failed · #4 copy: same bytes
    as a · r imported (#5) then replaced by #6 · #7 f forgotten · #8 skip with 1 rejected row
    · #9 undated imported.
    """
    name = f"snapshots_list_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
            sql.Identifier(name)))
    directory = tmp_path_factory.mktemp("listed")
    db = Cli(conninfo_to_uri(pg_server, dbname=name), clean_env(directory / "embedded"),
            directory)
    db.write("a_20230101.csv", "id,n\n1,10\n2,20\n")
    db.write("b_20230102.csv", "id,n\n3,30\n")
    db.write("c_20230103.csv", "id,n\n4,forty\n")
    db.write("copy_20230104.csv", "id,n\n1,10\n2,20\n")
    db.write("r_20230105.csv", "id,n\n5,50\n")
    db.write("f_20230106.csv", "id,n\n6,60\n")
    db.write("skip_20230107.csv", "id,n\n7,70\n8,x\n")
    db.write("undated.csv", "id,n\n9,90\n")
    db.run("import", "--jobs", "1", "a_20230101.csv", "b_20230102.csv")
    db.run("import", "c_20230103.csv", code=1)
    db.run("import", "--jobs", "1", "copy_20230104.csv", "r_20230105.csv", "f_20230106.csv")
    db.write("r_20230105.csv", "id,n\n5,55\n")
    db.run("import", "--replace", "r_20230105.csv")
    db.run("forget", "f_20230106.csv")
    db.run("import", "--on-error", "skip", "skip_20230107.csv")
    db.run("import", "undated.csv")
    db.write("b_20230102.csv", "id,n\n3,33\n")  # changed since it was imported
    db.write("new_20230108.csv", "id,n\n10,100\n")
    assert [(r["id"], r["file_name"], r["status"]) for r in db.ledger()] == [
        (1, "a_20230101.csv", "imported"), (2, "b_20230102.csv", "imported"),
        (3, "c_20230103.csv", "failed"), (4, "copy_20230104.csv", "imported"),
        (5, "r_20230105.csv", "replaced"), (6, "f_20230106.csv", "forgotten"),
        (7, "r_20230105.csv", "imported"), (8, "skip_20230107.csv", "imported"),
        (9, "undated.csv", "imported")]
    yield db
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


# --------------------------------------------------------------------------- the schema


def test_schema_ships_as_package_data_and_is_valid() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$defs"]["recordFields"]["required"] == RECORD_KEYS
    assert schema["$defs"]["importedBy"]["required"] == PROVENANCE_KEYS


def test_schema_rejects_what_the_spec_rules_out(validator: jsonschema.protocols.Validator,
                                                listed: Cli) -> None:
    [good] = [e for e in listed.json() if e["id"] == 1]
    assert validator.is_valid([good])

    def invalid(change: dict[str, Any], drop: str | None = None) -> bool:
        entry = {**good, **change}
        if drop:
            del entry[drop]
        return not validator.is_valid([entry])

    assert invalid({}, drop="error")  # keys are always present
    assert invalid({}, drop="imported_by")
    assert invalid({"started_at": "2023-01-01T10:00:00+02:00"})  # UTC only
    assert invalid({"started_at": "2023-01-01 10:00:00Z"})
    assert invalid({"status": "done"})
    assert invalid({"sha256": "ABC"})
    assert invalid({"snapshot_date": "01/02/2023"})
    assert invalid({"surprise": 1})
    assert invalid({"imported_by": {**good["imported_by"], "origin": "cron"}})
    assert invalid({"argument": "a.csv", "state": "imported", "status": "failed"})
    assert invalid({"argument": "a.csv", "state": "gone"})
    assert not invalid({"argument": "a.csv", "state": "imported"})
    assert not invalid({"argument": "a.csv", "state": "not_imported", "status": "forgotten"})


# --------------------------------------------------------------------------- list


def test_list_json(listed: Cli, validator: jsonschema.protocols.Validator) -> None:
    entries = listed.json()
    assert_valid(validator, entries)
    # One entry per snapshot (imported preferred, else its latest attempt), by date.
    assert [(e["id"], e["file"], e["status"]) for e in entries] == [
        (1, "a_20230101.csv", "imported"), (2, "b_20230102.csv", "imported"),
        (3, "c_20230103.csv", "failed"), (4, "copy_20230104.csv", "imported"),
        (7, "r_20230105.csv", "imported"), (6, "f_20230106.csv", "forgotten"),
        (8, "skip_20230107.csv", "imported"), (9, "undated.csv", "imported")]
    for entry in entries:
        assert list(entry) == RECORD_KEYS
        assert list(entry["imported_by"]) == PROVENANCE_KEYS
        assert entry["table"] == "snapshots"
    by_id = {e["id"]: e for e in entries}
    ledger = {r["id"]: r for r in listed.ledger()}
    for import_id, entry in by_id.items():
        record = ledger[import_id]
        assert dt.datetime.fromisoformat(entry["started_at"]) == record["started_at"]
        assert entry["started_at"].endswith("Z")
        assert entry["sha256"] == record["sha256"]
        assert entry["path"] == str(listed.dir / record["file_name"])
        assert entry["imported_by"]["origin"] == "import"
    assert by_id[1]["rows"] == 2
    assert by_id[1]["snapshot_date"] == "2023-01-01"
    assert by_id[1]["duration_seconds"] == pytest.approx(
        (ledger[1]["finished_at"] - ledger[1]["started_at"]).total_seconds(), abs=0.001)
    assert by_id[4]["same_content_as"] == 1
    assert by_id[3]["rows"] is None
    assert "forty" in by_id[3]["error"]
    assert by_id[8]["rejected_rows"] == 1
    assert by_id[9]["snapshot_date"] is None


def test_list_all_and_status(listed: Cli, validator: jsonschema.protocols.Validator) -> None:
    every = listed.json("--all")
    assert_valid(validator, every)
    assert [e["id"] for e in every] == list(range(1, 10))
    replaced = listed.json("--all", "--status", "replaced")
    assert [(e["id"], e["status"]) for e in replaced] == [(5, "replaced")]
    some = listed.json("--status", "failed", "--status", "forgotten")
    assert [(e["file"], e["status"]) for e in some] == [
        ("c_20230103.csv", "failed"), ("f_20230106.csv", "forgotten")]


def test_list_csv(listed: Cli) -> None:
    result = listed.run("list", "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == RECORD_KEYS
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "7", "6", "8", "9"]
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["file"] == "a_20230101.csv"
    assert record["error"] == ""  # null
    assert json.loads(record["imported_by"])["origin"] == "import"
    assert record["started_at"].endswith("Z")
    # An empty list still has its header.
    result = listed.run("list", "--format", "csv", "--table", "nothing_here")
    assert result.stdout.splitlines() == [",".join(RECORD_KEYS)]


def test_list_table_in_local_time(listed: Cli) -> None:
    result = listed.run("list", env={**listed.env, "TZ": "XST-5:30"})
    out = result.stdout.splitlines()
    assert out[0].split() == ["ID", "FILE", "DATE", "STATUS", "ROWS", "REJECTED", "WHEN",
                              "TOOK", "SHA256", "BY", "ERROR"]
    assert len(out) == 9
    body = {line.split()[1]: line for line in out[1:]}
    assert body["a_20230101.csv"].split()[:5] == ["1", "a_20230101.csv", "2023-01-01",
                                                  "imported", "2"]
    assert "+05:30" in body["a_20230101.csv"]  # local time, with its offset
    assert body["c_20230103.csv"].split()[3] == "failed"
    assert "forty" in body["c_20230103.csv"]
    assert body["skip_20230107.csv"].split()[4:6] == ["1", "1"]  # 1 row, 1 rejected
    assert body["f_20230106.csv"].split()[3] == "forgotten"
    assert body["undated.csv"].split()[2] == "imported"  # no date column value


def test_list_files_states(listed: Cli, validator: jsonschema.protocols.Validator) -> None:
    files = ["a_20230101.csv", "b_20230102.csv", "c_20230103.csv", "new_20230108.csv",
             "f_20230106.csv", str(listed.dir / "copy_20230104.csv")]
    result = listed.run("list", "--format", "json", *files, code=1)
    entries = json.loads(result.stdout)
    assert_valid(validator, entries)
    assert [(e["argument"], e["state"], e["id"]) for e in entries] == [
        ("a_20230101.csv", "imported", 1), ("b_20230102.csv", "changed", 2),
        ("c_20230103.csv", "failed", 3), ("new_20230108.csv", "not_imported", None),
        ("f_20230106.csv", "not_imported", 6), (files[-1], "imported", 4)]
    for entry in entries:
        assert list(entry) == ["argument", "state", *RECORD_KEYS]  # always every key
    new = entries[3]
    assert (new["table"], new["file"], new["status"], new["imported_by"]) == (
        "snapshots", "new_20230108.csv", None, None)
    assert entries[4]["status"] == "forgotten"

    plain = listed.run("list", *files, code=1).stdout.splitlines()
    assert [line.split()[:2] for line in plain] == [
        ["a_20230101.csv", "imported"], ["b_20230102.csv", "changed"],
        ["c_20230103.csv", "failed"], ["new_20230108.csv", "not_imported"],
        ["f_20230106.csv", "not_imported"], [files[-1], "imported"]]
    assert plain[0].split()[2:] == ["#1"]  # the state once: the status adds nothing here
    assert plain[1].split()[2:] == ["#2", "imported"]  # changed: imported, other bytes

    rows = list(csv.reader(io.StringIO(listed.run("list", "--format", "csv",
                                                  "new_20230108.csv", "a_20230101.csv",
                                                  code=1).stdout)))
    assert rows[0] == ["argument", "state", *RECORD_KEYS]
    assert [dict(zip(rows[0], r, strict=True))["id"] for r in rows[1:]] == ["", "1"]

    # All imported: exit 0. Another table: nothing is imported there.
    listed.run("list", "a_20230101.csv", "copy_20230104.csv", "undated.csv")
    other = json.loads(listed.run("list", "--format", "json", "--table", "other",
                                  "a_20230101.csv", code=1).stdout)
    assert [(e["state"], e["table"]) for e in other] == [("not_imported", "other")]

    # A directory stands for its snapshot files, in the order import would load them.
    entries = json.loads(listed.run("list", "--format", "json", ".", code=1).stdout)
    assert [(e["file"], e["state"]) for e in entries] == [
        ("a_20230101.csv", "imported"), ("b_20230102.csv", "changed"),
        ("c_20230103.csv", "failed"), ("copy_20230104.csv", "imported"),
        ("r_20230105.csv", "imported"), ("f_20230106.csv", "not_imported"),
        ("skip_20230107.csv", "imported"), ("new_20230108.csv", "not_imported"),
        ("undated.csv", "imported")]

    result = listed.run("list", "no_such_20230101.csv", code=2)
    assert "no_such_20230101.csv" in result.stderr


def test_list_on_an_empty_database_runs_no_ddl(cli: Cli, db_conn: psycopg.Connection) -> None:
    db = cli
    assert db.json() == []
    db.write("a_20230101.csv", "id\n1\n")
    entries = db.json("a_20230101.csv", code=1)
    assert [(e["state"], e["id"]) for e in entries] == [("not_imported", None)]
    result = db.run("list")
    assert "ID" in result.stdout
    assert db_conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
                           ).fetchone() == (0,)


# --------------------------------------------------------------------------- forget


@pytest.fixture
def forget_db(cli: Cli) -> Cli:
    return cli


def statuses(db: Cli) -> dict[int, str]:
    return {r["id"]: r["status"] for r in db.ledger()}


def test_forget_by_name_and_by_path(forget_db: Cli) -> None:
    db = forget_db
    for day in ("20230101", "20230102", "20230103"):
        db.write(f"s_{day}.csv", f"id\n{day}\n{day}\n")
    db.run("import", "--jobs", "1", ".")
    assert db.rows("SELECT DISTINCT snapshot_id FROM snapshots_latest") == [(3,)]

    result = db.run("forget", "s_20230103.csv")
    assert result.stdout.splitlines() == ["forgot s_20230103.csv (#3)", "deleted 2 rows"]
    assert statuses(db) == {1: "imported", 2: "imported", 3: "forgotten"}
    assert db.rows("SELECT DISTINCT snapshot_id FROM snapshots ORDER BY 1") == [(1,), (2,)]
    # The latest view falls back to the newest snapshot still imported.
    assert db.rows("SELECT DISTINCT snapshot_id FROM snapshots_latest") == [(2,)]

    # A path is reduced to its file name; the file need not exist any more.
    result = db.run("forget", "/gone/away/s_20230101.csv")
    assert "forgot s_20230101.csv (#1)" in result.stdout
    assert statuses(db)[1] == "forgotten"

    # Forgotten: importing it again is a new import.
    result = db.run("import", "s_20230103.csv")
    assert "imported s_20230103.csv: 2 rows" in result.stdout
    assert statuses(db) == {1: "forgotten", 2: "imported", 3: "forgotten", 4: "imported"}
    assert [e["id"] for e in db.json()] == [1, 2, 4]


def test_forget_by_id_versus_a_file_named_like_an_id(forget_db: Cli) -> None:
    db = forget_db
    db.write("s_20230101.csv", "id\n1\n")
    db.write("1", "id\n100\n")  # a snapshot file named "1"
    db.run("import", "--jobs", "1", "s_20230101.csv", "./1")
    assert [(r["id"], r["file_name"]) for r in db.ledger()] == [(1, "s_20230101.csv"), (2, "1")]

    result = db.run("forget", "./1")  # the name
    assert result.stdout.splitlines()[0] == "forgot 1 (#2)"
    assert statuses(db) == {1: "imported", 2: "forgotten"}
    result = db.run("forget", "1")  # the id
    assert result.stdout.splitlines()[0] == "forgot s_20230101.csv (#1)"
    assert statuses(db) == {1: "forgotten", 2: "forgotten"}
    assert db.rows("SELECT count(*) FROM snapshots") == [(0,)]


def test_forget_older_than(forget_db: Cli) -> None:
    db = forget_db
    today = dt.date.today()
    old = (today - dt.timedelta(days=400)).strftime("%Y%m%d")
    recent = (today - dt.timedelta(days=10)).strftime("%Y%m%d")
    db.write(f"old_{old}.csv", "id\n1\n")
    db.write(f"recent_{recent}.csv", "id\n2\n")
    db.write("undated.csv", "id\n3\n")  # judged by its import time: just now
    db.run("import", "--jobs", "1", ".")

    result = db.run("forget", "--older-than", "30")
    assert result.stdout.splitlines() == [f"forgot old_{old}.csv (#1)", "deleted 1 row"]
    assert statuses(db) == {1: "forgotten", 2: "imported", 3: "imported"}
    result = db.run("forget", "--older-than", "30")
    assert result.stdout.strip() == "nothing to forget"
    db.run("forget", "--older-than", "5")
    assert statuses(db) == {1: "forgotten", 2: "forgotten", 3: "imported"}
    assert db.rows("SELECT id FROM snapshots") == [(3,)]


def test_forget_keep(forget_db: Cli) -> None:
    db = forget_db
    for day in ("20230101", "20230102", "20230103", "20230104"):
        db.write(f"s_{day}.csv", f"id\n{day}\n")
    db.run("import", "--jobs", "1", ".")
    result = db.run("forget", "--keep", "2")
    assert result.stdout.splitlines() == [
        "forgot s_20230101.csv (#1)", "forgot s_20230102.csv (#2)", "deleted 2 rows"]
    assert statuses(db) == {1: "forgotten", 2: "forgotten", 3: "imported", 4: "imported"}
    assert db.rows("SELECT id FROM snapshots ORDER BY 1") == [(20230103,), (20230104,)]
    assert db.run("forget", "--keep", "2").stdout.strip() == "nothing to forget"
    db.run("forget", "--keep", "0")
    assert set(statuses(db).values()) == {"forgotten"}
    assert db.rows("SELECT count(*) FROM snapshots") == [(0,)]


def test_forget_without_a_ledger_is_unknown(forget_db: Cli) -> None:
    result = forget_db.run("forget", "nope.csv", code=1)  # no ledger at all yet
    assert "no imported snapshot nope.csv in snapshots" in result.stderr


@pytest.fixture
def one_imported(forget_db: Cli) -> Cli:
    forget_db.write("s_20230101.csv", "id\n1\n")
    forget_db.run("import", "s_20230101.csv")
    return forget_db


def test_forget_unknown_names_and_ids(one_imported: Cli) -> None:
    db = one_imported
    result = db.run("forget", "nope.csv", "99", code=1)
    assert "no imported snapshot nope.csv in snapshots" in result.stderr
    assert "no imported snapshot #99 in snapshots" in result.stderr
    assert statuses(db) == {1: "imported"}


def test_forget_in_another_table_is_unknown(one_imported: Cli) -> None:
    """Another table is another set of snapshots."""
    db = one_imported
    db.run("forget", "--table", "other", "s_20230101.csv", code=1)
    assert statuses(db) == {1: "imported"}


def test_forget_known_and_unknown_together_forgets_nothing(one_imported: Cli) -> None:
    """All or nothing."""
    db = one_imported
    result = db.run("forget", "s_20230101.csv", "nope.csv", code=1)
    assert "forgot" not in result.stdout
    assert "no imported snapshot nope.csv" in result.stderr
    assert "nothing was forgotten" in result.stderr
    assert statuses(db) == {1: "imported"}


def test_forget_twice_is_unknown_the_second_time(one_imported: Cli) -> None:
    db = one_imported
    db.run("forget", "s_20230101.csv")
    assert statuses(db) == {1: "forgotten"}
    result = db.run("forget", "s_20230101.csv", code=1)  # already forgotten
    assert "no imported snapshot s_20230101.csv" in result.stderr


@pytest.mark.parametrize("args", [(), ("a.csv", "--keep", "1")])
def test_forget_usage_errors(forget_db: Cli, args: tuple[str, ...]) -> None:
    result = forget_db.run("forget", *args, code=2)
    assert "give NAME|IMPORT_ID..., or --older-than DAYS, or --keep N" in result.stderr


@pytest.mark.parametrize("width", [60, 80, 120, 250])
def test_list_table_on_a_narrow_terminal_keeps_ids_and_counts(
        width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rich table leaves out the least needed columns rather than squeezing the id (what
    `forget` takes) or the row count to nothing."""
    from snapshots.output import _rich_table
    from snapshots.store import Record

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    records = [Record(id=123456, table_name="t", file_name=f"snapshot_2023010{n}.csv", path=None,
                      snapshot_date=dt.date(2023, 1, n), sha256="ab" * 32, size_bytes=10,
                      row_count=2_500_000, rejected_rows=0, status="imported", error=None,
                      started_at=now, finished_at=now,
                      same_content_as=None, imported_by={"user": "u", "host": "h"})
               for n in (1, 2)]
    out = io.StringIO()
    monkeypatch.setenv("COLUMNS", str(width))  # rich sizes its console by it
    _rich_table(records, out, table="t")  # what a terminal gets
    text = out.getvalue()
    assert "123456" in text and "2,500,000" in text
    assert max(len(line) for line in text.splitlines()) <= width
    assert "ERROR" not in text  # no record has one
    if width >= 250:
        assert "SHA256" in text and "abababababab" in text


def test_an_empty_filtered_list_names_the_filter() -> None:
    # Four files imported, none failed: "no snapshots imported yet" would be false.
    from snapshots.output import _rich_table

    out = io.StringIO()
    _rich_table([], out, table="t", statuses=("failed",))
    assert out.getvalue().strip() == "no failed snapshots in t"
    out = io.StringIO()
    _rich_table([], out, table="t")
    assert out.getvalue().strip() == "no snapshots imported into t yet"
