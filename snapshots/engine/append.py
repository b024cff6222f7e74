"""Append mode: COPY into the table, creating it with inferred types on the first import,
widening columns and loading again when the data needs it (--schema-evolution add, or types
settled by the full file)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from snapshots import schema as ddl
from snapshots.copyerrors import copy_location, input_error_from_copy
from snapshots.csvio.header import Header
from snapshots.csvio.inference import TEXT, StreamInference, widen_type
from snapshots.engine.columns import (
    drop_view,
    reconcile_columns,
    sample_inference,
    stream_inference,
)
from snapshots.engine.context import LoadContext, Loaded, LoadJob
from snapshots.engine.copy import copy_file, copy_with_errors
from snapshots.engine.target import Target
from snapshots.errors import InputError, UsageError

log = logging.getLogger("snapshots.importer")  # the engine's one logger name, as logs show it

SAMPLE_BYTES = 4 << 20  # bytes read to guess types before the table is created
MAX_WIDENINGS = 64  # a file can't need more retries than this without something being wrong


def load_append(ctx: LoadContext, job: LoadJob) -> Loaded:
    """Append the file's rows to the table (created by this load if it is not there)."""
    path, header, target, sha = job.path, job.header, job.target, job.sha256
    if target.info is not None:
        columns = reconcile_columns(ctx, path, header, target)
        import_id = job.import_id if target.info.has_snapshot_id else None
        return Loaded(append_existing(ctx, path, ctx.relation, columns, sha, import_id), 0, "")
    rows, detail = append_new(ctx, path, header, ctx.relation, sha, job.import_id)
    return Loaded(rows, 0, detail)


def append_existing(ctx: LoadContext, path: Path, relation: sql.Composable,
                    columns: Sequence[str], sha: str, import_id: int | None = None) -> int:
    if ctx.options.schema_evolution != "add":
        return copy_with_errors(ctx, path, relation, columns, sha, import_id=import_id)
    # --schema-evolution add: widen a column when a value needs it, then try again.
    for _ in range(MAX_WIDENINGS):
        try:
            with ctx.conn.transaction():  # savepoint: a failed COPY leaves nothing
                return copy_file(ctx, path, relation, columns, sha)
        except (psycopg.errors.InvalidTextRepresentation,
                psycopg.errors.NumericValueOutOfRange,
                psycopg.errors.InvalidDatetimeFormat,
                psycopg.errors.DatetimeFieldOverflow) as exc:
            _, column, _ = copy_location(exc)
            info = ddl.describe_table(ctx.conn, ctx.schema, ctx.table)
            assert info is not None
            if column is None or column not in info.columns or \
                    info.columns[column] == "text":
                raise input_error_from_copy(exc, path, ctx.options.csv) from None
            wider = widen_type(info.columns[column])
            log.info("widening %s.%s from %s to %s", ctx.table, column,
                     info.columns[column], wider)
            drop_view(ctx)
            ddl.alter_column_type(ctx.conn, ctx.schema, ctx.table, column, wider)
            ddl.create_latest_view(ctx.conn, ctx.schema, ctx.table)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise input_error_from_copy(exc, path, ctx.options.csv) from None
    raise InputError("too many type widenings", file=path)


def append_new(ctx: LoadContext, path: Path, header: Header, relation: sql.Composable,
               sha: str, import_id: int | None = None) -> tuple[int, str]:
    """First import: create the table with inferred types, in the load's transaction.

    Types are guessed from the first rows, then checked against every row while COPY
    streams. If the full data needs a wider type, the empty-again table is altered and the
    file loaded again, so inference never produces a table that rejects its own file.
    """
    # Serialise creators of this table; the loser finds the table and appends to it.
    ctx.conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(
        ddl.lock_key("table", ctx.schema, ctx.table)))
    info = ddl.describe_table(ctx.conn, ctx.schema, ctx.table)
    if info is not None:
        target = Target(ctx.schema, ctx.table, "append", info, header.names)
        if not info.has_snapshot_id:
            raise UsageError(f"table {ctx.schema}.{ctx.table} appeared meanwhile "
                             "without snapshot_id")
        columns = reconcile_columns(ctx, path, header, target)
        return append_existing(ctx, path, relation, columns, sha, import_id), ""

    names = header.names
    sample = sample_inference(ctx, path, header, limit_bytes=SAMPLE_BYTES)
    created = sample.types()
    # The BRIN index before the COPY, as every later snapshot meets it: keeping it costs COPY
    # next to nothing (rows only extend unsummarised ranges), while building it afterwards
    # scans the whole new table again inside the load (~0.1 s a million rows). The view
    # comes after, since it would pin column types that a widening may still change.
    ddl.create_append_table(ctx.conn, ctx.schema, ctx.table,
                            list(zip(names, created, strict=True)), index=True, view=False,
                            import_id=import_id)
    rows = copy_settling_types(ctx, path, relation, names, created, sha,
                               (ctx.schema, ctx.table), sample=sample)
    if import_id is not None:
        ddl.restore_snapshot_id_default(ctx.conn, ctx.schema, ctx.table)
    ddl.create_latest_view(ctx.conn, ctx.schema, ctx.table)
    typed = ", ".join(f"{n} {t}" for n, t in zip(names, created, strict=True))
    return rows, f"created {ctx.schema}.{ctx.table} ({typed})"


def copy_settling_types(ctx: LoadContext, path: Path, relation: sql.Composable,
                        names: Sequence[str],
                        created: list[str], sha: str, table: tuple[str, str], *,
                        sample: StreamInference | None = None) -> int:
    """COPY into a table this import creates (`table`, with the sampled types `created`),
    widening its columns and loading again until every row fits. The import and its dry
    run both load this way, so the dry run's verdict is the import's. `created` ends as
    the types the table has. With `sample` (the inference that chose `created`), the check
    of the stream starts from its types instead of from scratch."""
    forced_text: list[int] = []  # columns COPY showed to need text (e.g. `""`)
    inference: StreamInference | None = sample.resume() if sample is not None \
        else stream_inference(ctx, names)
    for _ in range(MAX_WIDENINGS):
        try:
            with ctx.conn.transaction():  # savepoint: a retry starts from an empty table
                rows = copy_file(ctx, path, relation, names, sha, inference=inference)
                if inference is not None and inference.types() != created:
                    raise _NeedsWider(inference.types())
            return rows
        except _NeedsWider as wider:
            retype(ctx, table, names, created, wider.types)
            inference = None  # the full pass is done: the types are right now
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            _, column, _ = copy_location(exc)
            if column is None or column not in names or \
                    created[names.index(column)] == TEXT or column in ctx.options.types:
                raise input_error_from_copy(exc, path, ctx.options.csv) from None
            # A value the fast check let through (`""`, 2023-02-30): that column is text.
            forced_text.append(names.index(column))
            retype(ctx, table, names, created, [TEXT if i in forced_text else t
                                                 for i, t in enumerate(created)])
            if inference is not None:
                inference = stream_inference(ctx, names, forced_text)
    raise InputError("could not settle the column types", file=path)


def retype(ctx: LoadContext, table: tuple[str, str], names: Sequence[str], created: list[str],
           final: Sequence[str]) -> None:
    for index, (old, new) in enumerate(zip(created, final, strict=True)):
        if old != new:
            ddl.alter_column_type(ctx.conn, *table, names[index], new)
            created[index] = new


class _NeedsWider(Exception):
    def __init__(self, types: list[str]) -> None:
        super().__init__("wider types needed")
        self.types = types
