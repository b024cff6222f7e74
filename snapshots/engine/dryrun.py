"""--dry-run: validate everything against a temporary copy of the target, then roll back."""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from snapshots import schema as ddl
from snapshots.config import first_line
from snapshots.csvio.header import Header
from snapshots.engine.append import SAMPLE_BYTES, copy_settling_types
from snapshots.engine.columns import infer_types, reconcile_columns
from snapshots.engine.context import LoadContext, Loaded
from snapshots.engine.copy import copy_with_errors
from snapshots.engine.merge import check_keys, stage_table
from snapshots.engine.target import Target, resolve_target
from snapshots.errors import LedgerError, UsageError
from snapshots.rejects import load_skipping


def dry_run(ctx: LoadContext, path: Path, header: Header, sha: str) -> Loaded:
    """Validate everything (header, types, every row) against a temporary copy of the
    target, then roll back: nothing is written to the table or the ledger. Gives the rows,
    the rejects and what the import would do besides loading them."""
    conn = ctx.conn
    try:
        with conn.transaction(force_rollback=True):
            info = ddl.describe_table(conn, ctx.schema, ctx.table)
            if info is None:
                names = header.names
                # Sampled, then settled by loading, as the import does (append_new).
                types = infer_types(ctx, path, header, limit_bytes=SAMPLE_BYTES)
                stage = sql.Identifier("snapshots_stage")
                conn.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                    stage, sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))  # type: ignore[arg-type]
                        for n, t in zip(names, types, strict=True))))
                target = Target(ctx.schema, ctx.table, "append", None, names)
                if ctx.options.on_error != "skip":
                    rows = copy_settling_types(ctx, path, stage, names, types, sha,
                                               ("pg_temp", "snapshots_stage"))
                    typed = ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True))
                    return Loaded(rows, 0, f"would create {ctx.schema}.{ctx.table} ({typed})")
            else:
                target = resolve_target(ctx.schema, ctx.table, info, ctx.options.mode,
                                        header.names)
                if ctx.options.schema_evolution == "add":
                    raise UsageError("--dry-run with --schema-evolution add is not supported "
                                     "on an existing table")
                names = reconcile_columns(ctx, path, header, target)
                stage = stage_table(ctx, names)
            if ctx.options.on_error == "skip":
                return Loaded(*load_skipping(ctx, path, header, target, 0, relation=stage))
            rows = copy_with_errors(ctx, path, stage, names, sha)
            if target.mode == "upsert":
                assert target.info is not None
                check_keys(ctx, path, stage, target.info.primary_key)
            return Loaded(rows, 0, "")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise LedgerError(first_line(str(exc))) from None
