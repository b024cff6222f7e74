"""A file's own dialect and header, read before its load: a delimiter detected in the
file is that file's, so the context a load gets carries it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from snapshots.csvio.dialect import detect_dialect
from snapshots.csvio.header import Header, read_header
from snapshots.engine.context import LoadContext


def file_header(ctx: LoadContext, path: Path) -> tuple[LoadContext, Header, str]:
    """The context with the file's dialect, its header, and what to say about a detected
    delimiter ("" when there is nothing to say). Raises InputError for a bad header."""
    dialect, detected = detect_dialect(path, ctx.options.csv)
    ctx = replace(ctx, options=replace(ctx.options, csv=dialect))
    return ctx, read_header(path, ctx.options.csv), detected
