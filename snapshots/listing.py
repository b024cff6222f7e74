"""`list` and `forget` as library calls: connect, read (or change) the ledger, return data.

`list` never runs DDL: a database without a ledger simply has nothing imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from snapshots import history, store
from snapshots import schema as ddl
from snapshots.config import connect
from snapshots.csvio.hashing import sha256_file
from snapshots.csvio.names import expand_inputs
from snapshots.errors import UsageError


def list_snapshots(conninfo: str, *, table: str, schema: str | None,
                   statuses: Sequence[str] = (), every_attempt: bool = False
                   ) -> list[store.Record]:
    with connect(conninfo) as conn:
        schema = _schema(conn, schema)
        if not ddl.require_current(conn, schema):
            return []
        return history.list_records(conn, schema, table, statuses=statuses,
                                  every_attempt=every_attempt)


def _schema(conn: psycopg.Connection, schema: str | None) -> str:
    """The schema to read; a mistyped --schema is an error, not an empty list."""
    if schema is None:
        return ddl.current_schema(conn)
    if not ddl.schema_exists(conn, schema):
        raise UsageError(f"schema {schema!r} does not exist")
    return schema


# SPEC section 10's keys (history.record_json builds them from a record).
RECORD_KEYS = ("id", "table", "file", "path", "snapshot_date", "sha256", "size_bytes", "rows",
               "rejected_rows", "status", "error", "started_at", "finished_at",
               "duration_seconds", "same_content_as", "imported_by")


def state_of(record: store.Record | None, sha256: str) -> str:
    """imported, changed (same name imported with other bytes), failed, or not_imported."""
    if record is None:
        return "not_imported"
    if record.status == "imported":
        return "imported" if record.sha256 == sha256 else "changed"
    if record.status == "failed" and record.sha256 == sha256:
        return "failed"
    return "not_imported"


def file_states(conninfo: str, files: Sequence[Path], *, table: str,
                schema: str | None) -> list[dict[str, Any]]:
    """One entry per argument (a directory: per snapshot file in it, as `import` reads it):
    its state and, when there is one, its record's keys."""
    hashes: list[tuple[Path, str]] = []
    for path in (f for arg in files for f in (expand_inputs([arg]) if arg.is_dir() else [arg])):
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        hashes.append((path, sha256_file(path)[0]))
    with connect(conninfo) as conn:
        schema = _schema(conn, schema)
        has_ledger = ddl.require_current(conn, schema)
        records = history.records_for_names(conn, schema, table, [p.name for p, _ in hashes]) \
            if has_ledger else {}
    states = []
    for path, sha in hashes:
        record = records.get(path.name)
        entry: dict[str, Any] = {"argument": str(path), "state": state_of(record, sha)}
        if record is not None:
            entry.update(history.record_json(record, table))
        else:  # the same keys, always: null when unknown
            entry.update(dict.fromkeys(RECORD_KEYS), table=table, file=path.name)
        states.append(entry)
    return states


def forget_snapshots(conninfo: str, *, table: str, schema: str | None, ids: Sequence[int] = (),
                     names: Sequence[str] = (), older_than_days: int | None = None,
                     keep: int | None = None) -> tuple[history.ForgetResult, list[str]]:
    """Forget what was asked; returns the result and the names/ids that matched nothing."""
    with connect(conninfo) as conn:
        schema = _schema(conn, schema)
        if not ddl.require_current(conn, schema):
            missing = [*map(str, ids), *names]
            return history.ForgetResult([], 0), missing
        info = ddl.describe_table(conn, schema, table)
        delete_rows = info is not None and info.has_snapshot_id
        result = history.forget(conn, schema, table, ids=ids, names=names,
                              older_than_days=older_than_days, keep=keep,
                              delete_rows=delete_rows)
    return result, result.missing
