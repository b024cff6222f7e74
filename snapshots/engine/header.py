"""A file's own dialect and header, read before its load: a delimiter detected in the
file is that file's, so the context a load gets carries it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from snapshots.csvio.dialect import SNIFF_BYTES, detect_dialect, read_head
from snapshots.csvio.header import Header, header_from_head, read_header
from snapshots.engine.context import LoadContext


def file_header(ctx: LoadContext, path: Path,
                data: bytes | None = None) -> tuple[LoadContext, Header, str]:
    """The context with the file's dialect, its header, and what to say about a detected
    delimiter ("" when there is nothing to say). Raises InputError for a bad header.
    `data`: the (plain) file's bytes, when read already."""
    # One read for both, most of the time.
    head = read_head(path) if data is None else data[:SNIFF_BYTES]
    dialect, detected = detect_dialect(path, ctx.options.csv, head)
    ctx = replace(ctx, options=replace(ctx.options, csv=dialect))
    header = header_from_head(head, path, dialect) if head is not None else None
    return ctx, header or read_header(path, dialect), detected
