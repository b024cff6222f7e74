"""The metadata store: reading and writing the ledger (`snapshot_imports`).

Claims, records, the interrupted-claim reaper, and the queries behind `list`, conflict checks
and `forget`. Data rows are the importer's business; this module only touches the ledger.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from snapshots import __version__
from snapshots import schema as ddl
from snapshots.schema import LEDGER, lock_key

STATUSES = ("importing", "imported", "failed", "replaced", "forgotten")

# Environment variables the operator's Jobs set (Downward API) so every record says where
# it came from.
PROVENANCE_ENV = {
    "namespace": "SNAPSHOTS_POD_NAMESPACE",
    "pod": "SNAPSHOTS_POD_NAME",
    "source": "SNAPSHOTS_SOURCE",
}

RECORD_COLUMNS = (
    "id", "table_name", "file_name", "path", "snapshot_date", "sha256", "size_bytes",
    "row_count", "rejected_rows", "status", "error", "started_at", "finished_at",
    "same_content_as", "imported_by",
)


@dataclass(frozen=True)
class Record:
    id: int
    table_name: str
    file_name: str
    path: str | None
    snapshot_date: dt.date | None
    sha256: str
    size_bytes: int
    row_count: int | None
    rejected_rows: int
    status: str
    error: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    same_content_as: int | None
    imported_by: dict[str, Any]

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


ORIGINS = ("import", "sync", "job")


def provenance(origin: str, role: str | None = None) -> dict[str, Any]:
    """Who is importing. The operator's Jobs run `sync` but say `job` (SNAPSHOTS_ORIGIN)."""
    if os.environ.get("SNAPSHOTS_ORIGIN") in ORIGINS:
        origin = os.environ["SNAPSHOTS_ORIGIN"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else None
    info: dict[str, Any] = {
        "host": socket.gethostname(), "user": user, "role": role, "pid": os.getpid(),
        "version": __version__, "origin": origin,
    }
    for key, env in PROVENANCE_ENV.items():
        info[key] = os.environ.get(env) or None
    return info


def ledger(schema: str) -> sql.Composed:
    return sql.Identifier(schema, LEDGER)  # type: ignore[return-value]


def fetch_records(conn: psycopg.Connection, query: sql.Composable,
             params: Sequence[Any] | dict[str, Any] = ()) -> list[Record]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [Record(**row) for row in cur.fetchall()]


def records(conn: psycopg.Connection, schema: str, where: sql.Composable,
            params: Sequence[Any] | dict[str, Any] = ()) -> list[Record]:
    """The ledger's records `where` says (a clause starting with a space)."""
    return fetch_records(conn, select_sql(schema) + where, params)


def select_sql(schema: str) -> sql.Composed:
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in RECORD_COLUMNS), ledger(schema))


# --------------------------------------------------------------------------- locks


def name_lock(conn: psycopg.Connection, schema: str, table: str, file_name: str,
              *, wait: bool) -> bool:
    """Session advisory lock on a snapshot's identity: whoever holds it owns its claim."""
    key = lock_key("name", schema, table, file_name)
    if wait:
        conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(key))
        return True
    row = conn.execute(sql.SQL("SELECT pg_try_advisory_lock({})").format(key)).fetchone()
    return bool(row and row[0])


def name_unlock(conn: psycopg.Connection, schema: str, table: str, file_name: str) -> None:
    conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(
        lock_key("name", schema, table, file_name)))


# --------------------------------------------------------------------------- writes


def claim(conn: psycopg.Connection, schema: str, *, table: str, file_name: str, path: str,
          snapshot_date: dt.date | None, sha256: str, size_bytes: int,
          imported_by: dict[str, Any]) -> int:
    """Insert the `importing` record (committed on its own, so a failure stays visible)."""
    row = conn.execute(sql.SQL(
        "INSERT INTO {} (table_name, file_name, path, snapshot_date, sha256, size_bytes, "
        "status, imported_by) VALUES (%s, %s, %s, %s, %s, %s, 'importing', %s) RETURNING id"
    ).format(ledger(schema)), (table, file_name, path, snapshot_date, sha256, size_bytes,
                               Jsonb(imported_by))).fetchone()
    assert row is not None
    return int(row[0])


def mark_imported(conn: psycopg.Connection, schema: str, import_id: int, *, rows: int,
                  rejected: int, same_content_as: int | None) -> float:
    """Returns the seconds the record says the import took (`list`'s TOOK), so the import's
    own line can say the same."""
    row = conn.execute(mark_imported_sql(schema, import_id, rows=rows, rejected=rejected,
                                         same_content_as=same_content_as)).fetchone()
    assert row is not None
    return took_seconds(row[0])


def mark_imported_sql(schema: str, import_id: int, *, rows: int, rejected: int,
                      same_content_as: int | None) -> sql.Composed:
    """The statement that flips a claim to `imported`, values inline: a batch sends it in
    one round trip with the next file's first statements. Gives `finished_at - started_at`."""
    return sql.SQL(
        "UPDATE {} SET status = 'imported', row_count = {}, rejected_rows = {}, "
        "same_content_as = {}, finished_at = clock_timestamp(), error = NULL WHERE id = {} "
        "RETURNING finished_at - started_at").format(
        ledger(schema), sql.Literal(rows), sql.Literal(rejected), sql.Literal(same_content_as),
        sql.Literal(import_id))


def mark_many_imported_sql(
        schema: str,
        loads: Sequence[tuple[int, int, int, int | None, dt.datetime, dt.datetime | None]],
) -> sql.Composed:
    """One statement flipping many claims to `imported`, in the transaction that holds
    their rows: (import id, rows, rejected rows, same content as, started, finished) each;
    a finished of None is now. The times are each file's own load, so `list`'s TOOK is
    that file's and not its batch's. Gives (id, finished_at - started_at)."""
    values = sql.SQL(", ").join(
        sql.SQL("({}::bigint, {}::bigint, {}::bigint, {}::bigint, {}::timestamptz, "
                "{}::timestamptz)").format(*map(sql.Literal, load)) for load in loads)
    return sql.SQL(
        "UPDATE {} AS i SET status = 'imported', row_count = v.rows, rejected_rows = v.rejected, "
        "same_content_as = v.same, started_at = v.started, "
        "finished_at = coalesce(v.finished, clock_timestamp()), error = NULL "
        "FROM (VALUES {}) AS v(id, rows, rejected, same, started, finished) WHERE i.id = v.id "
        "RETURNING i.id, i.finished_at - i.started_at").format(ledger(schema), values)


def took_seconds(duration: dt.timedelta) -> float:
    return round(duration.total_seconds(), 3)  # as Record.duration_seconds rounds it


def mark_failed(conn: psycopg.Connection, schema: str, import_id: int, error: str, *,
                retry: bool = False) -> None:
    """`retry`: the file is not at fault (cancelled, database lost, wrong options), so sync
    may try it again without waiting for new bytes or `snapshots retry`."""
    conn.execute(sql.SQL(
        "UPDATE {} SET status = 'failed', error = %s, finished_at = clock_timestamp(), "
        "retry_requested_at = CASE WHEN %s THEN now() END "
        "WHERE id = %s AND status = 'importing'").format(ledger(schema)),
        (error, retry, import_id))


def discard_claim(conn: psycopg.Connection, schema: str, import_id: int) -> None:
    """Remove a claim whose load was cancelled (shutdown, Ctrl-C): the attempt wrote nothing
    and says nothing about the file, so no `failed` record stays behind; the latest record
    is again what it was before, and the next run loads the file."""
    conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s AND status = 'importing'").format(
        ledger(schema)), (import_id,))


def mark_status(conn: psycopg.Connection, schema: str, ids: Sequence[int], status: str) -> None:
    conn.execute(sql.SQL("UPDATE {} SET status = %s WHERE id = ANY(%s)").format(ledger(schema)),
                 (status, list(ids)))


def reap_interrupted(conn: psycopg.Connection, schema: str, table: str | None = None) -> list[int]:
    """Mark `importing` records whose owner is gone as failed ("interrupted").

    The owner holds the snapshot's name lock for as long as it works; if we can take that lock,
    nobody is working on it any more.
    """
    query = sql.SQL("SELECT id, table_name, file_name FROM {} WHERE status = 'importing'").format(
        ledger(schema))
    params: tuple[Any, ...] = ()
    if table is not None:
        query = query + sql.SQL(" AND table_name = %s")
        params = (table,)
    reaped: list[int] = []
    for import_id, table_name, file_name in conn.execute(query, params).fetchall():
        if not name_lock(conn, schema, table_name, file_name, wait=False):
            continue
        try:
            # The owner may have finished between the SELECT and the lock: only a claim still
            # `importing` now was orphaned.
            if conn.execute(_INTERRUPTED.format(ledger(schema)) + sql.SQL(" AND id = %s"),
                            (import_id,)).rowcount:
                reaped.append(int(import_id))
        finally:
            name_unlock(conn, schema, table_name, file_name)
    return reaped


def drop_leftover_parts(conn: psycopg.Connection, schema: str) -> list[str]:
    """Drop the tables of parallel loads that ended without attaching them (failed, killed).

    A part or stage belongs to an import id; while that record is `importing` its owner may
    still be writing it (a dead owner's claim is reaped first, by reap_interrupted).
    """
    rows = conn.execute(sql.SQL(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN {} i ON i.id = substring(c.relname from '_([0-9]+)$')::bigint "
        "WHERE n.nspname = %s AND c.relkind = 'r' "
        "AND c.relname ~ '^snapshot_(part|stage)_[0-9]+$' "
        "AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid) "
        "AND i.status IS DISTINCT FROM 'importing'").format(ledger(schema)),
        (schema,)).fetchall()
    dropped = []
    for (name,) in rows:
        ddl.drop_table(conn, schema, name)
        dropped.append(str(name))
    return dropped


def reap_name(conn: psycopg.Connection, schema: str, table: str, file_name: str) -> list[int]:
    """With the snapshot's name lock held: any `importing` record of it is an orphan.

    Catches the claim of a process that died while we waited for its lock (its server session
    may outlive it for a while, so the reaper at start-up could not take the lock yet).
    """
    rows = conn.execute(_INTERRUPTED.format(ledger(schema)) + sql.SQL(
        " AND table_name = %s AND file_name = %s RETURNING id"), (table, file_name)).fetchall()
    return [int(r[0]) for r in rows]


_INTERRUPTED = sql.SQL(
    "UPDATE {} SET status = 'failed', finished_at = clock_timestamp(), "
    "error = 'interrupted: the importing process went away before it finished', "
    "retry_requested_at = now() "  # not the file's fault: sync tries it again
    "WHERE status = 'importing'")


# --------------------------------------------------------------------------- reads


def imported_record(conn: psycopg.Connection, schema: str, table: str,
                    file_name: str) -> Record | None:
    found = fetch_records(conn, select_sql(schema) + sql.SQL(
        " WHERE table_name = %s AND file_name = %s AND status = 'imported'"), (table, file_name))
    return found[0] if found else None


def latest_record(conn: psycopg.Connection, schema: str, table: str,
                  file_name: str) -> Record | None:
    found = fetch_records(conn, select_sql(schema) + sql.SQL(
        " WHERE table_name = %s AND file_name = %s ORDER BY id DESC LIMIT 1"),
        (table, file_name))
    return found[0] if found else None


def records_by_ids(conn: psycopg.Connection, schema: str, ids: Sequence[int]) -> list[Record]:
    return fetch_records(conn, select_sql(schema) + sql.SQL(" WHERE id = ANY(%s) ORDER BY id"),
                    (list(ids),))


def same_content(conn: psycopg.Connection, schema: str, table: str, sha256: str,
                 file_name: str) -> int | None:
    row = conn.execute(sql.SQL(
        "SELECT id FROM {} WHERE table_name = %s AND sha256 = %s AND status = 'imported' "
        "AND file_name <> %s ORDER BY id LIMIT 1").format(ledger(schema)),
        (table, sha256, file_name)).fetchone()
    return int(row[0]) if row else None


def newest_snapshot_date(conn: psycopg.Connection, schema: str, table: str,
                         *, excluding: int | None = None) -> tuple[dt.date | None, str | None]:
    """The newest imported snapshot's date and file name (the upsert time-order guard)."""
    row = conn.execute(sql.SQL(
        "SELECT snapshot_date, file_name FROM {} WHERE table_name = %s AND status = 'imported' "
        "AND snapshot_date IS NOT NULL AND id IS DISTINCT FROM %s "
        "ORDER BY snapshot_date DESC, id DESC LIMIT 1").format(ledger(schema)),
        (table, excluding)).fetchone()
    return (row[0], row[1]) if row else (None, None)


def last_success(conn: psycopg.Connection, schema: str, table: str) -> dt.datetime | None:
    """When a snapshot of this table was last imported."""
    row = conn.execute(sql.SQL(
        "SELECT max(finished_at) FROM {} WHERE table_name = %s AND status = 'imported'").format(
        ledger(schema)), (table,)).fetchone()
    return row[0] if row else None


@dataclass(frozen=True)
class SnapshotState:
    """What the ledger says about one name: its imported record, else its latest attempt."""

    status: str
    sha256: str
    retry_requested: bool
    # Asked for by `snapshots retry` after the failure (not set automatically with it).
    explicit_retry: bool = False
    error: str | None = None  # of a failed attempt


def snapshot_states(conn: psycopg.Connection, schema: str, table: str) -> dict[str, SnapshotState]:
    rows = conn.execute(sql.SQL(
        "SELECT DISTINCT ON (file_name) file_name, status, sha256, "
        "retry_requested_at IS NOT NULL, coalesce(retry_requested_at > finished_at, false), "
        "error FROM {} WHERE table_name = %s "
        "ORDER BY file_name, (status = 'imported') DESC, id DESC").format(ledger(schema)),
        (table,)).fetchall()
    return {r[0]: SnapshotState(r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in rows}


def request_retry(conn: psycopg.Connection, schema: str, table: str, *,
                  names: Sequence[str] = (), all_failed: bool = False) -> list[Record]:
    """Flag the latest failed attempt of each name so sync tries it again.

    A name that has an imported record has nothing to retry.
    """
    latest = sql.SQL(
        "SELECT DISTINCT ON (file_name) id, status FROM {} WHERE table_name = %s {} "
        "ORDER BY file_name, (status = 'imported') DESC, id DESC").format(
        ledger(schema), sql.SQL("") if all_failed else sql.SQL("AND file_name = ANY(%s)"))
    params: list[Any] = [table] if all_failed else [table, list(names)]
    with conn.transaction():
        ids = [r[0] for r in conn.execute(latest, params).fetchall() if r[1] == "failed"]
        if not ids:
            return []
        conn.execute(sql.SQL("UPDATE {} SET retry_requested_at = now() WHERE id = ANY(%s)")
                     .format(ledger(schema)), (ids,))
    return records_by_ids(conn, schema, ids)
