"""The ledger as list, forget and JSON output see it: one record per snapshot (or every
attempt), the records behind given names or ids, a record as SPEC section 10's JSON, and
forgetting snapshots. The import engine's side (claims, records, the reaper) is
`snapshots.store`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from snapshots import schema as ddl
from snapshots import store


def list_records(conn: psycopg.Connection, schema: str, table: str, *,
                 statuses: Sequence[str] = (), every_attempt: bool = False) -> list[store.Record]:
    """One record per snapshot (its latest attempt), or every attempt; oldest first."""
    where = sql.SQL("WHERE table_name = %s")
    params: list[Any] = [table]
    if every_attempt:
        query = store.select_sql(schema) + sql.SQL(" ") + where
        if statuses:
            query += sql.SQL(" AND status = ANY(%s)")
            params.append(list(statuses))
        query += sql.SQL(" ORDER BY id")
    else:
        inner = store.select_sql(schema) + sql.SQL(" ") + where + sql.SQL(
            " ORDER BY file_name, (status = 'imported') DESC, id DESC")
        query = sql.SQL("SELECT * FROM (SELECT DISTINCT ON (file_name) * FROM ({}) q) latest")
        query = query.format(inner)
        if statuses:
            query += sql.SQL(" WHERE status = ANY(%s)")
            params.append(list(statuses))
        query += sql.SQL(" ORDER BY snapshot_date NULLS LAST, file_name, id")
    return store.fetch_records(conn, query, params)


def records_for_names(conn: psycopg.Connection, schema: str, table: str,
                      names: Sequence[str]) -> dict[str, store.Record]:
    """The record that speaks for each name: its imported one, else its latest attempt."""
    found = store.fetch_records(conn, sql.SQL(
        "SELECT DISTINCT ON (file_name) * FROM ({}) q "
        "ORDER BY file_name, (status = 'imported') DESC, id DESC").format(
        store.select_sql(schema) + sql.SQL(" WHERE table_name = %s AND file_name = ANY(%s)")),
        (table, list(names)))
    return {r.file_name: r for r in found}


def record_json(record: store.Record, table: str | None = None) -> dict[str, Any]:
    """SPEC section 10's object: keys always present, null when unknown, UTC ISO-8601."""
    by = dict(record.imported_by or {})
    provenance_keys = ("host", "user", "role", "pid", "version", "origin",
                       "namespace", "pod", "source")
    return {
        "id": record.id,
        "table": table or record.table_name,
        "file": record.file_name,
        "path": record.path,
        "snapshot_date": record.snapshot_date.isoformat() if record.snapshot_date else None,
        "sha256": record.sha256,
        "size_bytes": record.size_bytes,
        "rows": record.row_count,
        # Unknown where the row count is (a failed or unfinished attempt), not 0.
        "rejected_rows": None if record.row_count is None else record.rejected_rows,
        "status": record.status,
        "error": record.error,
        "started_at": utc_iso(record.started_at),
        "finished_at": utc_iso(record.finished_at),
        "duration_seconds": record.duration_seconds,
        "same_content_as": record.same_content_as,
        "imported_by": {k: by.get(k) for k in provenance_keys},
    }


def utc_iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- forget


@dataclass(frozen=True)
class ForgetResult:
    records: list[store.Record]
    rows_deleted: int
    missing: list[str] = field(default_factory=list)  # asked for, but not imported


def forget(conn: psycopg.Connection, schema: str, table: str, *, ids: Sequence[int] = (),
           names: Sequence[str] = (), older_than_days: int | None = None,
           keep: int | None = None, delete_rows: bool) -> ForgetResult:
    """Mark imported snapshots `forgotten` and (append mode) delete their rows, atomically.

    Choose by ids and/or names, or by age, or keep the newest `keep`.
    """
    params: list[Any] = [table]
    if ids or names:
        condition = sql.SQL("(id = ANY(%s) OR file_name = ANY(%s))")
        params += [list(ids), list(names)]
    elif older_than_days is not None:
        condition = sql.SQL("coalesce(snapshot_date::timestamptz, finished_at) "
                            "< now() - make_interval(days => %s)")
        params.append(older_than_days)
    elif keep is not None:
        condition = sql.SQL(
            "id NOT IN (SELECT id FROM {} WHERE table_name = %s AND status = 'imported' "
            "ORDER BY snapshot_date DESC NULLS LAST, id DESC LIMIT %s)"
        ).format(store.ledger(schema))
        params += [table, keep]
    else:
        return ForgetResult([], 0)
    with conn.transaction():
        chosen = store.fetch_records(conn, store.select_sql(schema) + sql.SQL(
            " WHERE table_name = %s AND status = 'imported' AND ") + condition +
            sql.SQL(" ORDER BY id FOR UPDATE"), params)
        missing = [f"#{i}" for i in ids if i not in {r.id for r in chosen}]
        missing += [n for n in names if n not in {r.file_name for r in chosen}]
        if missing:
            return ForgetResult([], 0, missing)  # all or nothing
        deleted = 0
        if chosen and delete_rows:
            deleted = ddl.delete_snapshot_rows(conn, schema, table, [r.id for r in chosen])
        if chosen:
            store.mark_status(conn, schema, [r.id for r in chosen], "forgotten")
    return ForgetResult(chosen, deleted)
