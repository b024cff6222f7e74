"""`--on-error skip`: load the good rows and keep every rejected record.

The slow path, on purpose: Python reads each record with its raw bytes and the line where it
starts, structural problems (field count, encoding, NUL) are rejected there, and the server
decides which values fit their column types (`pg_input_is_valid` on PostgreSQL 16+, a
temporary PL/pgSQL check before that). Rejects go to `snapshot_rejects` in the same
transaction as the good rows.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from snapshots import schema as ddl
from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.header import Header
from snapshots.csvio.inference import TEXT, TypeInference
from snapshots.csvio.quoting import misplaced_quote
from snapshots.csvio.streams import open_content
from snapshots.engine.columns import overrides, reconcile_columns
from snapshots.engine.context import LoadContext, Loaded, LoadJob
from snapshots.engine.merge import merge_staged, stage_table
from snapshots.engine.target import Target
from snapshots.errors import InputError, InterruptedImport

STAGE = sql.Identifier("snapshots_skip_stage")
BATCH = 10_000

_VALIDATOR_PG15 = """
CREATE FUNCTION pg_temp.snapshots_input_error(value text, kind text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT %L::%s', value, kind);
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN SQLERRM;
END $$
"""


def raw_records(path: Path, options: CsvOptions, width: int
                ) -> Iterator[tuple[int, bytes, list[str] | None, str | None]]:
    """(start line, raw bytes, fields or None, reject reason or None) per record.

    The header record is not yielded.
    """
    encoding = options.python_encoding
    bytewise = options.quotes_bytewise  # else a misplaced quote can't be told from bytes
    pending: list[bytes] = []
    state = {"line": 0, "bad_encoding": False}
    stream, _ = open_content(path)

    def texts() -> Iterator[str]:
        for raw in stream:
            state["line"] += 1
            pending.append(raw)
            if state["line"] == 1 and raw.startswith(b"\xef\xbb\xbf") and encoding == "utf-8":
                raw = raw[3:]
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError:
                state["bad_encoding"] = True
                yield raw.decode(encoding, "replace")

    with stream:
        reader = options.reader(texts())
        start = 1
        first = True
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raw = b"".join(pending)
                # The same words as abort mode where a misplaced quote is what broke it.
                misplaced = misplaced_quote(raw, options) if bytewise else None
                yield start, raw, None, f"malformed quoting: {misplaced.reason}" \
                    if misplaced is not None else f"malformed CSV: {exc}"
                pending.clear()
                start = state["line"] + 1
                continue
            raw = b"".join(pending)
            pending.clear()
            this_start, start = start, state["line"] + 1
            if first and options.header:
                first = False
                continue
            first = False
            if state["bad_encoding"]:
                state["bad_encoding"] = False
                yield this_start, raw, None, f"invalid byte sequence for encoding {encoding}"
            elif b"\x00" in raw:
                yield this_start, raw, None, "NUL byte in the record"
            elif bytewise and (misplaced := misplaced_quote(raw, options)) is not None:
                # What COPY would silently misread: the same rule as in abort mode.
                yield this_start, raw, None, f"malformed quoting: {misplaced.reason}"
            elif not fields and raw.strip() == b"":
                continue  # a blank line is no record
            elif len(fields) != width:
                yield this_start, raw, None, f"expected {width} fields, found {len(fields)}"
            else:
                yield this_start, raw, fields, None


def quoted_fields(record: str, options: CsvOptions) -> list[bool]:
    """Per field of one CSV record: was it quoted? (A quote opens a field only at its start.)"""
    delimiter, quote = options.delimiter, options.quote
    flags: list[bool] = []
    quoted = in_quotes = False
    at_start = True
    i, n = 0, len(record)
    while i < n:
        c = record[i]
        if in_quotes:
            if c == quote:
                if i + 1 < n and record[i + 1] == quote:
                    i += 1  # a doubled quote is a quote character
                else:
                    in_quotes = False
        elif c == quote and at_start:
            in_quotes = quoted = True
            at_start = False
        elif c == delimiter:
            flags.append(quoted)
            quoted, at_start = False, True
        elif c in "\r\n":
            break
        else:
            at_start = False
        i += 1
    flags.append(quoted)
    return flags


def load_skipping(ctx: LoadContext, path: Path, header: Header, target: Target,
                  import_id: int, *, relation: sql.Composable | None = None
                  ) -> tuple[int, int, str]:
    """Stage every record as text, mark the rejects, then load the good rows: appended
    (into a table this load may create) or merged. With `relation`, a dry run: only the
    counts and what would be created. Gives (good rows, rejected rows, detail)."""
    names = list(header.names)
    inference = stage_records(ctx, path, names, infer=target.info is None)
    if target.info is None:
        types = dict(zip(names, inference.types() if inference else [TEXT] * len(names),
                         strict=True))
        not_null: frozenset[str] = frozenset()
    else:
        types = {c: target.info.columns[c] for c in reconcile_columns(ctx, path, header, target)}
        not_null = target.info.not_null
    _reject_bad_values(ctx.conn, types, not_null)
    rejected = _scalar(ctx.conn, sql.SQL(
        "SELECT count(*) FROM {} WHERE _reason IS NOT NULL").format(STAGE))
    check_max_rejects(ctx, path, rejected)
    good = _scalar(ctx.conn, sql.SQL(
        "SELECT count(*) FROM {} WHERE _reason IS NULL").format(STAGE))
    if relation is not None:  # dry run: validation only
        return good, rejected, "" if target.info is not None else \
            f"would create {ctx.schema}.{ctx.table} ({_typed(types)})"
    ctx.conn.execute(sql.SQL(
        "INSERT INTO {} (import_id, line, raw, column_name, value, reason) "
        "SELECT %s, _line, _raw, _column, _value, _reason FROM {} "
        "WHERE _reason IS NOT NULL ORDER BY _line").format(
        sql.Identifier(ctx.schema, ddl.REJECTS), STAGE), (import_id,))
    if target.mode == "append":
        return good, rejected, append_good(ctx, path, target, types)
    return good, rejected, merge_good(ctx, path, target, types, rejected)


def stage_records(ctx: LoadContext, path: Path, names: list[str], *,
                  infer: bool) -> TypeInference | None:
    """Every record into a temporary table of text columns, with its line, raw bytes and,
    for a structural problem, its reason; with `infer`, the types its values fit."""
    conn, opts = ctx.conn, ctx.options
    null = opts.csv.null
    inference = TypeInference(len(names), overrides(ctx, names), null=null) if infer else None
    quote_byte = opts.csv.quote.encode(opts.csv.python_encoding)
    encoding = opts.csv.python_encoding
    conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(STAGE))
    conn.execute(sql.SQL(
        "CREATE TEMP TABLE {} (_line bigint NOT NULL, _raw bytea NOT NULL, _reason text, "
        "_column text, _value text, {}) ON COMMIT DROP").format(
        STAGE, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(n)) for n in names)))
    columns = ["_line", "_raw", "_reason", *names]
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            STAGE, sql.SQL(", ").join(sql.Identifier(c) for c in columns))) as copy:
        batch: list[list[str]] = []
        for line, raw, fields, reason in raw_records(path, opts.csv, len(names)):
            if ctx.cancel.is_set():
                raise InterruptedImport(f"{path}: cancelled; nothing written")
            if fields is None:
                copy.write_row((line, raw, reason, *([None] * len(names))))
                continue
            values: list[str | None] = [None if v == null else v for v in fields]
            if quote_byte in raw and None in values:
                # COPY's rule: only an UNQUOTED null string is NULL (`""` is an empty string).
                # Python's csv can't tell, so the raw record says which fields were quoted.
                quoted = quoted_fields(raw.decode(encoding, "replace"), opts.csv)
                for index, was_quoted in enumerate(quoted[:len(values)]):
                    if was_quoted and values[index] is None:
                        values[index] = null
                        if inference is not None:
                            inference.widen(index)  # a string no other type reads back
            copy.write_row((line, raw, None, *values))
            if inference is not None:
                batch.append(fields)
                if len(batch) >= BATCH:
                    inference.feed(batch)
                    batch.clear()
        if inference is not None:
            inference.feed(batch)
    return inference


def check_max_rejects(ctx: LoadContext, path: Path, rejected: int) -> None:
    limit = ctx.options.max_rejects
    if limit is None or rejected <= limit:
        return
    first = ctx.conn.execute(sql.SQL(
        "SELECT _line, _reason FROM {} WHERE _reason IS NOT NULL ORDER BY _line LIMIT 1")
        .format(STAGE)).fetchone()
    assert first is not None
    raise InputError(f"{rejected} rejected rows, more than --max-rejects {limit}; nothing "
                     f"written (first: line {first[0]}, {first[1]})", file=path)


def _typed(types: dict[str, str]) -> str:
    return ", ".join(f"{n} {t}" for n, t in types.items())


def _casts(types: dict[str, str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier(n), sql.SQL(t))  # type: ignore[arg-type]
        for n, t in types.items())


def append_good(ctx: LoadContext, path: Path, target: Target, types: dict[str, str]) -> str:
    """The good rows into the table, created here (as a first import creates it: the index
    and the view after the rows) when it is not there yet."""
    conn = ctx.conn
    cols = sql.SQL(", ").join(sql.Identifier(n) for n in types)
    created = target.info is None
    if created:
        conn.execute(sql.SQL("SELECT pg_advisory_xact_lock({})").format(
            ddl.lock_key("table", ctx.schema, ctx.table)))
        if ddl.describe_table(conn, ctx.schema, ctx.table) is not None:
            raise InputError("the table appeared while this file was staged; run again",
                             file=path)
        ddl.create_append_table(conn, ctx.schema, ctx.table, list(types.items()),
                                index=False, view=False)
    conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} WHERE _reason IS NULL "
                         "ORDER BY _line").format(ctx.relation, cols, _casts(types), STAGE))
    if not created:
        return ""
    ddl.create_snapshot_index(conn, ctx.schema, ctx.table)
    ddl.create_latest_view(conn, ctx.schema, ctx.table)
    return f"created {ctx.schema}.{ctx.table} ({_typed(types)})"


def merge_good(ctx: LoadContext, path: Path, target: Target, types: dict[str, str],
               rejected: int) -> str:
    """The good rows merged on the key (upsert mode)."""
    conn = ctx.conn
    cols = sql.SQL(", ").join(sql.Identifier(n) for n in types)
    stage = stage_table(ctx, list(types), with_lines=True)
    conn.execute(sql.SQL(
        "INSERT INTO {} ({}, _record) "
        "SELECT {}, _line FROM {} WHERE _reason IS NULL").format(stage, cols, _casts(types),
                                                                 STAGE))
    spare = None
    if ctx.options.delete_missing and rejected:
        # A rejected record's key is still in the snapshot: --delete-missing spares it. When
        # a rejected record's key can't be read, nobody can tell which keys are missing.
        pk = target.info.primary_key if target.info is not None else ()
        unknown = conn.execute(sql.SQL(
            "SELECT _line FROM {} WHERE _reason IS NOT NULL AND ({} OR _column = ANY(%s)) "
            "ORDER BY _line LIMIT 1").format(
            STAGE, sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(c))
                                        for c in pk)), (list(pk),)).fetchone()
        if unknown:
            raise InputError("--delete-missing: this rejected record's key is unknown, so which "
                             "keys are missing is unknown too; nothing written", file=path,
                             line=unknown[0],
                             hint="fix the record, or import without --delete-missing")
        spare = STAGE
    return merge_staged(ctx, path, stage, target, list(types), physical_records=True,
                        spare=spare)


def _reject_bad_values(conn: psycopg.Connection, types: dict[str, str],
                       not_null: frozenset[str]) -> None:
    """Mark, per record, the first column whose value does not fit its type."""
    modern = conn.info.server_version >= 160000
    if not modern:
        conn.execute(_VALIDATOR_PG15)
    for name, kind in types.items():
        column = sql.Identifier(name)
        if name in not_null:
            conn.execute(sql.SQL(
                "UPDATE {} SET _reason = 'empty value in a NOT NULL column', _column = {} "
                "WHERE _reason IS NULL AND {} IS NULL").format(STAGE, sql.Literal(name), column))
        if kind == TEXT:
            continue
        if modern:
            check = sql.SQL("(pg_input_error_info({c}, {k})).message").format(
                c=column, k=sql.Literal(kind))
            where = sql.SQL("NOT pg_input_is_valid({c}, {k})").format(c=column,
                                                                      k=sql.Literal(kind))
        else:
            check = sql.SQL("pg_temp.snapshots_input_error({c}, {k})").format(
                c=column, k=sql.Literal(kind))
            where = sql.SQL("{} IS NOT NULL").format(check)
        conn.execute(sql.SQL(
            "UPDATE {stage} SET _reason = {check}, _column = {name}, _value = {c} "
            "WHERE _reason IS NULL AND {c} IS NOT NULL AND {where}").format(
            stage=STAGE, check=check, name=sql.Literal(name), c=column, where=where))


def _scalar(conn: psycopg.Connection, query: sql.Composable) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def load_skip(ctx: LoadContext, job: LoadJob) -> Loaded:
    """--on-error skip as a load path: the good rows load, the rejected ones are kept."""
    return Loaded(*load_skipping(ctx, job.path, job.header, job.target, job.import_id))
