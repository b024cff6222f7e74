"""The ledger's statements for many files of one table at once: name locks, the reaper,
the lookups behind the skip/conflict decision, and claims, each one round trip for a whole
batch of small files instead of one per file (see `snapshots.engine.batch`).

Each does what its one-file counterpart in `snapshots.store` does, for every name given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from snapshots.store import Record, ledger, records

# Built by the server exactly as schema.lock_key("name", schema, table, file_name) builds
# one name's key, so a batch and a single import of the same file exclude each other.
_KEY = sql.SQL("hashtextextended(%(prefix)s || n.name, 7421)")


def _prefix(schema: str, table: str) -> str:
    return "\x1f".join(("name", schema, table)) + "\x1f"


def try_name_locks(conn: psycopg.Connection, schema: str, table: str,
                   names: Sequence[str]) -> set[str]:
    """Take every free name lock (session level, as store.name_lock); gives the names
    taken. A name another process holds is left to the one-file path, which waits for it
    or says busy."""
    rows = conn.execute(sql.SQL(
        "SELECT n.name FROM unnest(%(names)s::text[]) AS n(name) "
        "WHERE pg_try_advisory_lock({})").format(_KEY),
        {"names": list(names), "prefix": _prefix(schema, table)}).fetchall()
    return {str(name) for (name,) in rows}


def name_unlocks(conn: psycopg.Connection, schema: str, table: str,
                 names: Sequence[str]) -> None:
    conn.execute(sql.SQL(
        "SELECT pg_advisory_unlock({}) FROM unnest(%(names)s::text[]) AS n(name)").format(_KEY),
        {"names": list(names), "prefix": _prefix(schema, table)})


def reap_names(conn: psycopg.Connection, schema: str, table: str,
               names: Sequence[str]) -> list[int]:
    """With the names' locks held: their `importing` records are orphans (store.reap_name)."""
    rows = conn.execute(sql.SQL(
        "UPDATE {} SET status = 'failed', finished_at = clock_timestamp(), "
        "error = 'interrupted: the importing process went away before it finished', "
        "retry_requested_at = now() "
        "WHERE status = 'importing' AND table_name = %s AND file_name = ANY(%s) RETURNING id"
    ).format(ledger(schema)), (table, list(names))).fetchall()
    return [int(r[0]) for r in rows]


def imported_records(conn: psycopg.Connection, schema: str, table: str,
                     names: Sequence[str]) -> dict[str, Record]:
    """Each name's `imported` record, if it has one (at most one per name)."""
    found = records(conn, schema, sql.SQL(
        " WHERE table_name = %s AND file_name = ANY(%s) AND status = 'imported'"),
        (table, list(names)))
    return {record.file_name: record for record in found}


def same_contents(conn: psycopg.Connection, schema: str, table: str,
                  files: Sequence[tuple[str, str]]) -> dict[str, int]:
    """For each (file name, sha256): the first import of the same bytes under another name
    (store.same_content)."""
    rows = conn.execute(sql.SQL(
        "SELECT f.name, (SELECT i.id FROM {} i WHERE i.table_name = %s AND i.sha256 = f.sha "
        "AND i.status = 'imported' AND i.file_name <> f.name ORDER BY i.id LIMIT 1) "
        "FROM unnest(%s::text[], %s::text[]) AS f(name, sha)").format(ledger(schema)),
        (table, [name for name, _ in files], [sha for _, sha in files])).fetchall()
    return {str(name): int(same) for name, same in rows if same is not None}


def claims(conn: psycopg.Connection, schema: str, table: str,
           files: Sequence[tuple[str, str, dt.date | None, str, int]],
           imported_by: dict[str, Any]) -> list[int]:
    """`importing` records for (file name, path, snapshot date, sha256, size) each, in one
    statement committed on its own (store.claim); gives their ids in the same order."""
    rows = conn.execute(sql.SQL(
        "INSERT INTO {} (table_name, file_name, path, snapshot_date, sha256, size_bytes, "
        "status, imported_by) "
        "SELECT %s, f.name, f.path, f.day, f.sha, f.size, 'importing', %s "
        "FROM unnest(%s::text[], %s::text[], %s::date[], %s::text[], %s::bigint[]) "
        "AS f(name, path, day, sha, size) RETURNING file_name, id").format(ledger(schema)),
        (table, Jsonb(imported_by), *map(list, zip(*files, strict=True)))).fetchall()
    ids = {str(name): int(import_id) for name, import_id in rows}  # a batch's names differ
    return [ids[name] for name, *_ in files]
