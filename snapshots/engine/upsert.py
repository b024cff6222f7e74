"""Upsert mode: COPY into a staging table, then merge it on the primary key (the SQL is in
`merge`)."""

from __future__ import annotations

from snapshots.engine.columns import reconcile_columns
from snapshots.engine.context import LoadContext, Loaded, LoadJob
from snapshots.engine.copy import copy_with_errors
from snapshots.engine.merge import merge_staged, stage_table


def load_upsert(ctx: LoadContext, job: LoadJob) -> Loaded:
    columns = reconcile_columns(ctx, job.path, job.header, job.target)
    staged = stage_table(ctx, columns)
    rows = copy_with_errors(ctx, job.path, staged, columns, job.sha256)
    return Loaded(rows, 0, merge_staged(ctx, job.path, staged, job.target, columns))
