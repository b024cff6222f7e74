"""Upsert mode: COPY into a staging table, then merge it on the primary key (the SQL is in
`merge`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import psycopg

from snapshots.copyerrors import copy_location, input_error_from_copy, record_start_for_copy_line
from snapshots.engine.columns import reconcile_columns
from snapshots.engine.context import LoadContext, Loaded, LoadJob
from snapshots.engine.copy import copy_file
from snapshots.engine.merge import merge_staged, stage_table
from snapshots.errors import InputError


def load_upsert(ctx: LoadContext, job: LoadJob) -> Loaded:
    assert job.target.info is not None
    pk = job.target.info.primary_key
    columns = reconcile_columns(ctx, job.path, job.header, job.target)
    staged = stage_table(ctx, columns, not_null=pk)
    try:
        rows = copy_file(ctx, job.path, staged, columns, job.sha256)
    except psycopg.errors.NotNullViolation as exc:
        raise empty_key(ctx, job.path, exc, pk) from None
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise input_error_from_copy(exc, job.path, ctx.options.csv) from None
    detail = merge_staged(ctx, job.path, staged, job.target, columns, nulls_refused=True)
    return Loaded(rows, 0, detail)


def empty_key(ctx: LoadContext, path: Path, exc: psycopg.Error,
              pk: Sequence[str]) -> InputError:
    """The stage's NOT NULL on the key refused a row: the empty key, on its line."""
    copy_line, _, _ = copy_location(exc)
    line = None if copy_line is None else record_start_for_copy_line(
        path, ctx.options.csv, copy_line)
    return InputError("empty primary key value", file=path, line=line, column=", ".join(pk))
