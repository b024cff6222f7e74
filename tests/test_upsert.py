"""Upsert mode: a table that already exists with a PRIMARY KEY and no snapshot_id, like the
seed's own `snapshots(user_id PRIMARY KEY, ...)`, through the CLI (in process).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from helpers import Cli

HEADER = "user_id,name,store_name,credit_limit\n"
JAN = HEADER + (
    "1,Jake,Best Berlin Burgers,10000.1\n"
    "2,Mostafa,Express Espresso,500.002\n"
    "3,Aiko,Tokyo Tea House,2500.00\n"
    "4,Lena,Lena's Lemonade,750.5\n"
)
JUN = HEADER + (
    "1,Jake,Best Berlin Burgers,12000.1\n"  # changed
    "2,Mostafa,Express Espresso,500.002\n"  # unchanged
    "3,Aiko,Tokyo Tea House,2500.00\n"  # unchanged
    '5,Omar,"Omar\'s Olives, Oils & More",1200\n'  # new; 4 is missing
)


def table(cli: Cli) -> dict[int, tuple[Any, ...]]:
    """user_id -> (xmin, name, store_name, credit_limit as text)."""
    return {r[0]: r[1:] for r in cli.rows(
        "SELECT user_id, xmin::text, name, store_name, credit_limit::text FROM snapshots")}


@pytest.fixture
def keyed(cli: Cli, db_conn: psycopg.Connection) -> Cli:
    db_conn.execute("CREATE TABLE snapshots (user_id bigint PRIMARY KEY, name text NOT NULL, "
                    "store_name text, credit_limit numeric)")
    return cli


def values(table: dict[int, tuple[Any, ...]]) -> dict[int, tuple[Any, ...]]:
    return {k: v[1:] for k, v in table.items()}


def test_merge_on_the_primary_key(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.write("snapshot_20230603.csv", JUN)
    result = keyed.run("import", "snapshot_20230101.csv")  # --mode auto finds upsert
    assert "imported snapshot_20230101.csv: 4 rows" in result.stdout
    assert "merged: 4 inserted or changed" in result.stdout
    # Upsert leaves the user's table alone: no snapshot_id, no view.
    assert keyed.rows("SELECT count(*) FROM information_schema.columns "
                      "WHERE table_name = 'snapshots' AND column_name = 'snapshot_id'") == [(0,)]
    assert keyed.rows("SELECT to_regclass('snapshots_latest')") == [(None,)]
    before = table(keyed)

    result = keyed.run("import", "snapshot_20230603.csv")
    assert "merged: 2 inserted or changed" in result.stdout
    after = table(keyed)
    assert values(after) == {
        1: ("Jake", "Best Berlin Burgers", "12000.1"),
        2: ("Mostafa", "Express Espresso", "500.002"),
        3: ("Aiko", "Tokyo Tea House", "2500.00"),
        4: ("Lena", "Lena's Lemonade", "750.5"),  # missing keys stay
        5: ("Omar", "Omar's Olives, Oils & More", "1200"),
    }
    # Unchanged rows are not touched (same tuple version), changed ones are.
    assert after[2][0] == before[2][0]
    assert after[3][0] == before[3][0]
    assert after[4][0] == before[4][0]
    assert after[1][0] != before[1][0]
    assert [(r["file_name"], r["status"], r["row_count"]) for r in keyed.ledger()] == [
        ("snapshot_20230101.csv", "imported", 4), ("snapshot_20230603.csv", "imported", 4)]

    result = keyed.run("import", "snapshot_20230603.csv")
    assert "skipped snapshot_20230603.csv: already imported as #2" in result.stdout
    assert table(keyed) == after


def test_delete_missing(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.write("snapshot_20230603.csv", JUN)
    keyed.run("import", "snapshot_20230101.csv")
    result = keyed.run("import", "--delete-missing", "snapshot_20230603.csv")
    assert "merged: 2 inserted or changed, 1 deleted" in result.stdout
    assert sorted(table(keyed)) == [1, 2, 3, 5]


def test_header_matched_by_normalised_name_in_any_order(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv",
                "Credit Limit,Store Name,Name,User ID\n10.5,Shop,Jake,1\n")
    keyed.run("import", "snapshot_20230101.csv")
    assert values(table(keyed)) == {1: ("Jake", "Shop", "10.5")}


def test_older_snapshot_is_refused_unless_forced(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.write("snapshot_20230603.csv", JUN)
    keyed.run("import", "snapshot_20230603.csv")
    before = table(keyed)

    result = keyed.run("import", "snapshot_20230101.csv", code=1)
    assert "snapshot date 2023-01-01 is older than snapshot_20230603.csv (2023-06-03)" \
        in result.stderr
    assert "nothing written" in result.stderr
    assert "--force" in result.stderr
    assert table(keyed) == before  # not even a tuple rewritten
    assert [r["status"] for r in keyed.ledger()] == ["imported", "failed"]

    result = keyed.run("import", "--force", "snapshot_20230101.csv")
    assert "imported snapshot_20230101.csv" in result.stdout
    assert values(table(keyed))[1] == ("Jake", "Best Berlin Burgers", "10000.1")
    assert [r["status"] for r in keyed.ledger()] == ["imported", "failed", "imported"]


def test_files_given_together_merge_in_date_order(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.write("snapshot_20230603.csv", JUN)
    # Even with several connections: --mode auto resolves to upsert, which merges in order.
    result = keyed.run("import", "--jobs", "2", "snapshot_20230603.csv", "snapshot_20230101.csv")
    assert [line.split(":")[0] for line in result.stdout.splitlines()[:2]] == [
        "imported snapshot_20230101.csv", "imported snapshot_20230603.csv"]
    assert values(table(keyed))[1] == ("Jake", "Best Berlin Burgers", "12000.1")


def test_undated_snapshot_is_not_refused(keyed: Cli) -> None:
    keyed.write("snapshot_20230603.csv", JUN)
    keyed.write("manual_fix.csv", HEADER + "2,Mostafa,Espresso Express,600\n")
    keyed.run("import", "snapshot_20230603.csv")
    result = keyed.run("import", "manual_fix.csv")
    assert "no YYYYMMDD date" in result.stderr
    assert values(table(keyed))[2] == ("Mostafa", "Espresso Express", "600")


def test_duplicate_key_names_the_key_and_both_lines(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.run("import", "snapshot_20230101.csv")
    before = table(keyed)
    keyed.write("snapshot_20230603.csv", HEADER + (
        "1,Jake,Best,1\n"
        '2,Mo,"two\nlines",2\n'  # lines 3-4: physical lines are counted, not records
        "3,Aiko,Tea,3\n"
        "2,Again,Shop,4\n"  # line 6
    ))
    result = keyed.run("import", "snapshot_20230603.csv", code=1)
    assert "snapshot_20230603.csv:6: duplicate primary key (user_id=2) on lines 3 and 6" \
        in result.stderr
    assert table(keyed) == before
    assert keyed.ledger()[-1]["status"] == "failed"


def test_empty_key_is_an_error(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", HEADER + "1,Jake,Best,1\n,Nobody,Shop,2\n")
    result = keyed.run("import", "snapshot_20230101.csv", code=1)
    assert "snapshot_20230101.csv:3: empty primary key value, column user_id" in result.stderr
    assert table(keyed) == {}


def test_bad_value_writes_nothing(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.run("import", "snapshot_20230101.csv")
    before = table(keyed)
    keyed.write("snapshot_20230603.csv", HEADER + "1,Jake,Best,1\n9,Nine,Shop,lots\n")
    result = keyed.run("import", "snapshot_20230603.csv", code=1)
    assert "snapshot_20230603.csv:3:" in result.stderr
    assert "column credit_limit" in result.stderr
    assert table(keyed) == before
    # A NOT NULL column the file leaves empty: the table's own constraint speaks.
    keyed.write("snapshot_20230604.csv", HEADER + "1,,Best,1\n")
    result = keyed.run("import", "snapshot_20230604.csv", code=1)
    assert "snapshot_20230604.csv" in result.stderr
    assert "name" in result.stderr
    assert table(keyed) == before


def test_strict_schema_refuses_a_different_header(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", "user_id,name,email\n1,Jake,j@example.com\n")
    result = keyed.run("import", "snapshot_20230101.csv", code=1)
    assert "added email; missing store_name, credit_limit" in result.stderr
    assert table(keyed) == {}


def test_schema_evolution_add_in_upsert(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.run("import", "snapshot_20230101.csv")
    keyed.write("snapshot_20230604.csv", "user_id,name,email\n1,Jake,j@example.com\n"
                                         "9,Nina,n@example.com\n")
    keyed.run("import", "--schema-evolution", "add", "snapshot_20230604.csv")
    # A merge writes what the file has: the new column is added; a column the file lacks
    # is NULL for new keys and left as it was for existing ones (nothing is thrown away).
    assert keyed.rows("SELECT user_id, store_name, email FROM snapshots ORDER BY 1") == [
        (1, "Best Berlin Burgers", "j@example.com"), (2, "Express Espresso", None),
        (3, "Tokyo Tea House", None), (4, "Lena's Lemonade", None), (9, None, "n@example.com")]
    # The key itself can't be missing.
    keyed.write("snapshot_20230605.csv", "name\nNobody\n")
    result = keyed.run("import", "--schema-evolution", "add", "snapshot_20230605.csv", code=1)
    assert "lacks primary key column(s) user_id" in result.stderr


def test_forget_only_marks_and_replace_remerges(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.run("import", "snapshot_20230101.csv")
    before = table(keyed)

    result = keyed.run("forget", "snapshot_20230101.csv")
    assert "forgot snapshot_20230101.csv (#1)" in result.stdout
    assert "deleted" not in result.stdout
    assert table(keyed) == before
    assert [r["status"] for r in keyed.ledger()] == ["forgotten"]

    # Forgotten: the same file may be merged again (nothing changes, nothing is rewritten).
    result = keyed.run("import", "snapshot_20230101.csv")
    assert "merged: 0 inserted or changed" in result.stdout
    assert table(keyed) == before

    # A corrected file under the same name: a conflict, then --replace merges it.
    keyed.write("snapshot_20230101.csv", JAN.replace("2500.00", "2600.00"))
    result = keyed.run("import", "snapshot_20230101.csv", code=1)
    assert "conflict" in result.stderr
    assert table(keyed) == before
    result = keyed.run("import", "--replace", "snapshot_20230101.csv")
    assert "merged: 1 inserted or changed" in result.stdout
    assert "replaced #2" in result.stdout
    after = table(keyed)
    assert values(after)[3] == ("Aiko", "Tokyo Tea House", "2600.00")
    assert after[1] == before[1]
    assert [r["status"] for r in keyed.ledger()] == ["forgotten", "replaced", "imported"]


def test_replace_of_the_newest_is_not_refused_as_older(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.write("snapshot_20230603.csv", JUN)
    keyed.run("import", "snapshot_20230101.csv", "snapshot_20230603.csv")
    keyed.write("snapshot_20230603.csv", JUN.replace("12000.1", "13000.1"))
    keyed.run("import", "--replace", "snapshot_20230603.csv")
    assert values(table(keyed))[1] == ("Jake", "Best Berlin Burgers", "13000.1")
    # Replacing the older one would move time backwards: refused without --force.
    keyed.write("snapshot_20230101.csv", JAN.replace("10000.1", "1"))
    result = keyed.run("import", "--replace", "snapshot_20230101.csv", code=1)
    assert "older than snapshot_20230603.csv" in result.stderr
    assert values(table(keyed))[1] == ("Jake", "Best Berlin Burgers", "13000.1")


def test_on_error_skip_in_upsert(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", HEADER + "1,Jake,Best,1\n2,Mo,Shop,x\n3,Aiko,Tea\n"
                                                  "4,Lena,Lemon,4\n")
    result = keyed.run("import", "--on-error", "skip", "snapshot_20230101.csv")
    assert "2 rejected rows" in result.stdout
    assert sorted(table(keyed)) == [1, 4]
    assert keyed.rows("SELECT line, column_name, value FROM snapshot_rejects ORDER BY line") \
        == [(3, "credit_limit", "x"), (4, None, None)]


def test_dry_run_checks_keys_and_writes_nothing(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", HEADER + "1,Jake,Best,1\n1,Jake,Best,2\n")
    result = keyed.run("import", "--dry-run", "snapshot_20230101.csv", code=1)
    assert "duplicate primary key (user_id=1) on lines 2 and 3" in result.stderr
    keyed.write("snapshot_20230102.csv", JAN)
    result = keyed.run("import", "--dry-run", "snapshot_20230102.csv")
    assert "valid snapshot_20230102.csv: 4 rows" in result.stdout
    assert table(keyed) == {}
    assert keyed.rows("SELECT to_regclass('snapshot_imports')") == [(None,)]


def test_composite_key(keyed: Cli) -> None:
    keyed.conn.execute("CREATE TABLE stock (region text, sku bigint, qty bigint, "
                       "PRIMARY KEY (region, sku))")
    keyed.write("stock_20230101.csv", "region,sku,qty\neu,1,5\nus,1,6\n")
    keyed.write("stock_20230102.csv", "region,sku,qty\neu,1,5\nus,1,7\neu,2,1\n")
    keyed.run("--table", "stock", "import", "stock_20230101.csv")
    before = dict(((r, s), (x, q)) for r, s, x, q in keyed.rows(
        "SELECT region, sku, xmin::text, qty FROM stock"))
    keyed.run("--table", "stock", "import", "stock_20230102.csv")
    after = dict(((r, s), (x, q)) for r, s, x, q in keyed.rows(
        "SELECT region, sku, xmin::text, qty FROM stock"))
    assert {k: v[1] for k, v in after.items()} == {("eu", 1): 5, ("us", 1): 7, ("eu", 2): 1}
    assert after[("eu", 1)][0] == before[("eu", 1)][0]
    keyed.write("stock_20230103.csv", "region,sku,qty\neu,1,5\neu,1,6\n")
    result = keyed.run("--table", "stock", "import", "stock_20230103.csv", code=1)
    assert "duplicate primary key (region=eu, sku=1) on lines 2 and 3" in result.stderr


def test_upsert_mode_needs_a_key(keyed: Cli) -> None:
    keyed.write("s_20230101.csv", "id\n1\n")
    result = keyed.run("--table", "fresh", "import", "--mode", "upsert", "s_20230101.csv",
                       code=2)  # the command line asks for what can't be: a usage error
    assert "--mode upsert needs an existing table public.fresh with a primary key" \
        in result.stderr
    assert keyed.rows("SELECT to_regclass('fresh')") == [(None,)]


def test_delete_missing_spares_the_keys_of_rejected_rows(keyed: Cli) -> None:
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.run("import", "snapshot_20230101.csv")
    before = table(keyed)
    # Key 2 is in the snapshot (its limit is bad): rejected, but not "missing".
    keyed.write("snapshot_20230102.csv", HEADER + "1,Jake,Best Berlin Burgers,10000.1\n"
                                                  "2,Mostafa,Express Espresso,lots\n")
    # A record whose key can't be read (too few fields) makes "missing" unknowable.
    keyed.write("snapshot_20230103.csv", HEADER + "1,Jake,Best Berlin Burgers,10000.1\n"
                                                  "3,Aiko\n")
    result = keyed.run("import", "--on-error", "skip", "--delete-missing",
                       "snapshot_20230103.csv", code=1)
    assert "snapshot_20230103.csv:3: --delete-missing: this rejected record's key is unknown" \
        in result.stderr
    assert table(keyed) == before

    result = keyed.run("import", "--on-error", "skip", "--delete-missing",
                       "snapshot_20230102.csv")
    assert "merged: 0 inserted or changed, 2 deleted; 1 rejected row" in result.stdout
    assert table(keyed) == {k: v for k, v in before.items() if k in (1, 2)}


def big_snapshot(keys: range, limit: dict[int, str] | None = None, *,
                 order: list[int] | None = None) -> str:
    limit = limit or {}
    return HEADER + "".join(f"{k},N{k},S{k % 7},{limit.get(k, f'{k}.5')}\n"
                            for k in (order if order is not None else keys))


def versions(cli: Cli) -> dict[int, tuple[str, str, str]]:
    """user_id -> (xmin, ctid, credit_limit): a row rewritten gets a new xmin and ctid."""
    return {r[0]: r[1:] for r in cli.rows(
        "SELECT user_id, xmin::text, ctid::text, credit_limit::text FROM snapshots")}


@pytest.mark.parametrize("plan", ["merge", "hash", "moved"])
@pytest.mark.parametrize("delete", [False, True])
def test_large_merge_writes_only_what_differs(keyed: Cli, monkeypatch: pytest.MonkeyPatch,
                                              plan: str, delete: bool) -> None:
    """Enough rows that the planner has a choice: the join walking both key indexes (the
    table in key order), the hash join, and rows moved by another writer between the join
    and the UPDATE (the ctid finds nothing: the keys then do). The same merge each time."""
    from snapshots.engine import merge

    seen: list[bool] = []
    walks = merge.walks_both_indexes
    monkeypatch.setattr(merge, "walks_both_indexes",
                        lambda conn, query: seen.append(walks(conn, query)) or seen[-1])
    if plan == "hash":
        monkeypatch.setattr(merge, "in_key_order", lambda *a: False)
    if plan == "moved":
        by_ctid = merge.update_by_ctid_sql
        monkeypatch.setattr(merge, "update_by_ctid_sql", lambda *a: by_ctid(*a) + psycopg.sql.SQL(
            " AND false"))
    keyed.write("snapshot_20230101.csv", big_snapshot(range(1, 20001)))
    keyed.run("import", "snapshot_20230101.csv")
    keyed.conn.execute("VACUUM ANALYZE snapshots")
    before = versions(keyed)
    changed = {k: f"{k}.75" for k in range(1, 20001, 10)}  # every tenth row
    # 20000 is missing, 20001 and 20002 are new.
    keyed.write("snapshot_20230102.csv", big_snapshot(range(1, 20003), changed,
                                                      order=[*range(1, 20000), 20001, 20002]))
    result = keyed.run("import", *(["--delete-missing"] if delete else []),
                       "snapshot_20230102.csv")
    assert f"merged: {len(changed) + 2} inserted or changed" in result.stdout
    assert seen == ([] if plan == "hash" else [True])  # the first import: an empty table
    after = versions(keyed)
    assert after[20001][2] == "20001.5" and after[20002][2] == "20002.5"
    assert (20000 in after) is not delete
    for k in range(1, 20000):
        if k in changed:
            assert after[k][2] == changed[k]
            assert after[k][:2] != before[k][:2]
        else:  # untouched: the same row version in the same place
            assert after[k] == before[k]
    if not delete:
        assert after[20000] == before[20000]


def test_hash_join_stays_for_a_stage_out_of_key_order(keyed: Cli,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A file in no key order: walking the stage's index would jump around its pages, so
    the planner is left its hash join (and the merge is the same)."""
    from snapshots.engine import merge

    seen: list[bool] = []
    ordered = merge.in_key_order
    monkeypatch.setattr(merge, "in_key_order",
                        lambda *a: seen.append(ordered(*a)) or seen[-1])
    keys = list(range(1, 50001))
    keyed.write("snapshot_20230101.csv", big_snapshot(range(1, 50001)))
    keyed.run("import", "snapshot_20230101.csv")
    keyed.conn.execute("VACUUM ANALYZE snapshots")
    import random
    random.Random(5).shuffle(keys)
    keyed.write("snapshot_20230102.csv", big_snapshot(range(1, 50001), {7: "1"}, order=keys))
    result = keyed.run("import", "snapshot_20230102.csv")
    assert "merged: 1 inserted or changed" in result.stdout
    assert seen == [False, False]  # the first import (an empty table), then the stage
    assert keyed.rows("SELECT credit_limit::text FROM snapshots WHERE user_id = 7") == [("1",)]


def test_empty_key_after_a_multiline_field_names_its_physical_line(keyed: Cli) -> None:
    """COPY refuses the empty key itself (the stage's key is NOT NULL): the line is still
    the file's physical line, and nothing is written."""
    keyed.write("snapshot_20230101.csv", JAN)
    keyed.run("import", "snapshot_20230101.csv")
    before = table(keyed)
    keyed.write("snapshot_20230102.csv", HEADER + '1,Jake,"two\nlines",1\n2,Mo,Shop,2\n'
                                                  ',Nobody,Shop,3\n4,Lena,Lemon,4\n')
    result = keyed.run("import", "snapshot_20230102.csv", code=1)
    assert "snapshot_20230102.csv:5: empty primary key value, column user_id" in result.stderr
    assert table(keyed) == before
    assert keyed.ledger()[-1]["status"] == "failed"
