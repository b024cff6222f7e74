"""A file's columns against the table: --type overrides, inference passes, reconciliation
(and --schema-evolution add)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from psycopg import sql

from snapshots import schema as ddl
from snapshots.csvio.header import Header
from snapshots.csvio.inference import TEXT, StreamInference
from snapshots.csvio.streams import iter_chunks, open_content
from snapshots.engine.context import LoadContext
from snapshots.engine.target import Target
from snapshots.errors import SchemaDriftError, UsageError


def overrides(ctx: LoadContext, names: Sequence[str]) -> dict[int, str]:
    """--type, by column index; every name must be the file's and every type the server's."""
    types = ctx.options.types
    unknown = set(types) - set(names)
    if unknown:
        raise UsageError(f"--type names a column the file does not have: "
                         f"{', '.join(sorted(unknown))}")
    result = {}
    for index, name in enumerate(names):
        if name in types:
            result[index] = ddl.check_type_name(ctx.conn, types[name])
    return result


def stream_inference(ctx: LoadContext, names: Sequence[str],
                     forced_text: Sequence[int] = ()) -> StreamInference:
    inference = StreamInference(len(names), ctx.options.csv, overrides(ctx, names))
    for index in forced_text:
        inference.widen(index)
    return inference


def infer_types(ctx: LoadContext, path: Path, header: Header, *, only: Sequence[str] = (),
                limit_bytes: int | None = None, forced_text: Sequence[int] = ()) -> list[str]:
    """An inference pass over the file (or its first `limit_bytes`), no COPY."""
    return sample_inference(ctx, path, header, only=only, limit_bytes=limit_bytes,
                            forced_text=forced_text).types()


def sample_inference(ctx: LoadContext, path: Path, header: Header, *,
                     only: Sequence[str] = (), limit_bytes: int | None = None,
                     forced_text: Sequence[int] = ()) -> StreamInference:
    """infer_types, keeping the inference (its types seed the check of the COPY stream)."""
    inference = stream_inference(ctx, header.names, forced_text)
    if only:
        for index, name in enumerate(header.names):
            if name not in only and index not in inference.exact.overrides:
                inference.exact.overrides[index] = TEXT  # not needed: skip the work
    stream, _ = open_content(path)
    read = 0
    with stream:
        for chunk in iter_chunks(stream):
            inference.feed(chunk)
            read += len(chunk)
            if limit_bytes is not None and read >= limit_bytes:
                break
    if limit_bytes is None or read < limit_bytes:
        inference.finish()
    return inference


def drop_view(ctx: LoadContext) -> None:
    ctx.conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(
        sql.Identifier(ctx.schema, ddl.latest_view_name(ctx.table))))


def reconcile_columns(ctx: LoadContext, path: Path, header: Header,
                      target: Target) -> tuple[str, ...]:
    """Match the file to an existing table; add columns under --schema-evolution add.

    Returns the table's columns in the file's order (what COPY's column list names).
    """
    assert target.info is not None
    table_columns = target.info.data_columns
    file_columns = list(header.names)
    added = [c for c in file_columns if c not in table_columns]
    missing = [c for c in table_columns if c not in file_columns]
    if added or missing:
        if ctx.options.schema_evolution == "strict":
            parts = []
            if added:
                parts.append(f"added {', '.join(added)}")
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            # Both ways out: the same data grown new columns, or other data that wants a
            # table of its own (every file goes to one table unless --table says another).
            hint = "the same data with new columns: --schema-evolution add (missing ones " \
                "load as NULL); other data: --table NAME loads it into a table of its own"
            other = _likely_delimiter(header, ctx.options.csv.delimiter)
            if other is not None:
                hint = f"the header reads as one column: is the file delimited by " \
                    f"{other!r}? say so with --delimiter"
            raise SchemaDriftError(
                f"columns differ from table {ctx.schema}.{ctx.table}: {'; '.join(parts)}; "
                "nothing written", file=path, hint=hint)
        lacking = [c for c in target.info.primary_key if c in missing]
        if target.mode == "upsert" and lacking:
            raise SchemaDriftError(
                f"the file lacks primary key column(s) {', '.join(lacking)}", file=path)
        if added:
            types = infer_types(ctx, path, header, only=added)
            if target.mode == "append":
                drop_view(ctx)
            ddl.add_columns(ctx.conn, ctx.schema, ctx.table,
                            [(c, types[header.names.index(c)]) for c in added])
            if target.mode == "append":
                ddl.create_latest_view(ctx.conn, ctx.schema, ctx.table)
            target.info = ddl.describe_table(ctx.conn, ctx.schema, ctx.table)
    return tuple(file_columns)


def _likely_delimiter(header: Header, delimiter: str) -> str | None:
    """Another common delimiter, when a one-column header holds it (a TSV read as CSV)."""
    if len(header.raw) != 1:
        return None
    return next((c for c in ("\t", ";", "|", ",") if c != delimiter and c in header.raw[0]),
                None)
