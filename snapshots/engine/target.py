"""Where rows go in a load: `resolve_target` is the only place that says what --mode
(auto in particular) means for a table."""

from __future__ import annotations

from dataclasses import dataclass

from snapshots import schema as ddl
from snapshots.errors import UsageError


@dataclass
class Target:
    """Where rows go in this load, and how the file's columns map onto it."""

    schema: str
    table: str
    mode: str  # append | upsert
    info: ddl.TableInfo | None
    file_columns: tuple[str, ...]


def resolve_target(schema: str, table: str, info: ddl.TableInfo | None, mode: str,
                   file_columns: tuple[str, ...] = ()) -> Target:
    """The one meaning of --mode (auto, append, upsert) for a table as it is now (`info`,
    None when it does not exist yet), or a UsageError saying why the mode does not fit."""
    if info is None:
        if mode == "upsert":
            raise UsageError(
                f"--mode upsert needs an existing table {schema}.{table} "
                "with a primary key", hint="create the table first, or use --mode append")
        ddl.latest_view_name(table)  # too long a name fails now, not after the load
        return Target(schema, table, "append", None, file_columns)
    if mode == "auto":
        if info.has_snapshot_id:
            mode = "append"
        elif info.primary_key:
            mode = "upsert"
        else:
            raise UsageError(
                f"table {schema}.{table} has neither a snapshot_id column nor a "
                "primary key, so snapshots can't tell how to load it",
                hint="add a primary key (upsert), or load into a new --table (append)")
    if mode == "append" and not info.has_snapshot_id:
        raise UsageError(f"--mode append needs a snapshot_id column, and table "
                         f"{schema}.{table} has none",
                         hint="load into a new --table, or use --mode upsert")
    if mode == "upsert" and not info.primary_key:
        raise UsageError(f"--mode upsert needs a primary key on {schema}.{table}")
    if mode == "upsert" and info.has_snapshot_id:
        raise UsageError(f"{schema}.{table} is an append-mode table (it has "
                         "snapshot_id); upsert would break its history")
    return Target(schema, table, mode, info, file_columns)


def merges(schema: str, table: str, info: ddl.TableInfo | None, mode: str) -> bool:
    """Whether files are merged on the table's key (so they must go one by one, in snapshot
    order): --mode upsert, or what `resolve_target` makes of --mode auto. A mode that does
    not fit the table counts as asked; each file's import says why it does not fit."""
    try:
        return resolve_target(schema, table, info, mode).mode == "upsert"
    except UsageError:
        return mode == "upsert"
