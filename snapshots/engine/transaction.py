"""The start of a file's one transaction: whose rows these are, which load path, the merge
lock and time-order guard (upsert), and --replace superseding the earlier import; and its
end, the record flipped to `imported` with the rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from snapshots import schema as ddl
from snapshots import store
from snapshots.csvio.header import Header
from snapshots.engine.context import LoadContext, Loaded
from snapshots.engine.target import Target, resolve_target
from snapshots.errors import OutOfOrderError


@dataclass(frozen=True)
class Claim:
    """A file's `importing` record, and what the decision before it found."""

    import_id: int
    existing: store.Record | None  # the import --replace supersedes
    day: object  # the snapshot date in the file's name, or None
    same: int | None  # an earlier import of the same content under another name


def current_target(ctx: LoadContext, header: Header) -> Target:
    info = ddl.describe_table(ctx.conn, ctx.schema, ctx.table)
    return resolve_target(ctx.schema, ctx.table, info, ctx.options.mode, header.names)


def begin(ctx: LoadContext, path: Path, header: Header, claim: Claim) -> Target:
    """Inside the transaction, before any row: tag the rows with the import, resolve the
    target, and (upsert) serialise merges into the table and guard time order."""
    ctx.conn.execute("SELECT set_config(%s, %s, true)",
                     (ddl.IMPORT_ID_SETTING, str(claim.import_id)))
    target = current_target(ctx, header)
    if target.mode == "upsert":
        # Merges into one table go one at a time, so two processes can't both pass the
        # time-order guard and let the older snapshot win.
        ctx.conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(
            ddl.lock_key("merge", ctx.schema, ctx.table)))
        guard_time_order(ctx, path, claim)
    supersede(ctx, claim.existing, target)
    return target


def finish(ctx: LoadContext, claim: Claim, loaded: Loaded) -> float:
    """The record says `imported`, in the rows' transaction; gives the time it records."""
    return store.mark_imported(ctx.conn, ctx.schema, claim.import_id, rows=loaded.rows,
                               rejected=loaded.rejected, same_content_as=claim.same)


def guard_time_order(ctx: LoadContext, path: Path, claim: Claim) -> None:
    day, existing = claim.day, claim.existing
    if day is None or ctx.options.force:
        return
    newest, name = store.newest_snapshot_date(
        ctx.conn, ctx.schema, ctx.table,
        excluding=existing.id if existing is not None else None)
    if newest is not None and day < newest:  # type: ignore[operator]
        raise OutOfOrderError(
            f"{path}: snapshot date {day} is older than {name} ({newest}), already merged "
            f"into {ctx.schema}.{ctx.table}; nothing written",
            hint="upsert never moves time backwards; --force merges it anyway")


def supersede(ctx: LoadContext, existing: store.Record | None, target: Target) -> None:
    """--replace: the earlier import's rows go (append) and its record says `replaced`."""
    if existing is None:
        return
    if target.mode == "append" and target.info is not None:
        ddl.delete_snapshot_rows(ctx.conn, ctx.schema, ctx.table, [existing.id])
    store.mark_status(ctx.conn, ctx.schema, [existing.id], "replaced")
