"""The ledger's versioned schema, and DDL for data tables. Every identifier goes through
psycopg.sql.Identifier, so a hostile header or table name is only an odd name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from snapshots import __version__
from snapshots.errors import LedgerError, UsageError

LEDGER = "snapshot_imports"
REJECTS = "snapshot_rejects"
FILES = "snapshot_files"
VERSION_TABLE = "snapshot_ledger_version"
SNAPSHOT_ID = "snapshot_id"
IMPORT_ID_SETTING = "snapshots.import_id"

# One entry per ledger version. Never edit a released entry: append a new one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "ledger and rejects", """
CREATE TABLE {schema}.snapshot_imports (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name      text        NOT NULL,
    file_name       text        NOT NULL,
    path            text,
    snapshot_date   date,
    sha256          text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
    size_bytes      bigint      NOT NULL,
    row_count       bigint,
    rejected_rows   bigint      NOT NULL DEFAULT 0,
    status          text        NOT NULL
        CHECK (status IN ('importing', 'imported', 'failed', 'replaced', 'forgotten')),
    error           text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    same_content_as bigint REFERENCES {schema}.snapshot_imports (id),
    imported_by     jsonb       NOT NULL DEFAULT '{{}}'
);
-- The identity rule: at most one imported record per (table, file name).
CREATE UNIQUE INDEX snapshot_imports_one_imported
    ON {schema}.snapshot_imports (table_name, file_name) WHERE status = 'imported';
CREATE INDEX snapshot_imports_by_name
    ON {schema}.snapshot_imports (table_name, file_name, id DESC);
CREATE INDEX snapshot_imports_newest
    ON {schema}.snapshot_imports (table_name, snapshot_date DESC NULLS LAST, id DESC)
    WHERE status = 'imported';
CREATE INDEX snapshot_imports_by_sha256
    ON {schema}.snapshot_imports (table_name, sha256) WHERE status = 'imported';
CREATE INDEX snapshot_imports_in_flight
    ON {schema}.snapshot_imports (table_name) WHERE status = 'importing';
CREATE TABLE {schema}.snapshot_rejects (
    import_id   bigint NOT NULL REFERENCES {schema}.snapshot_imports (id) ON DELETE CASCADE,
    line        bigint NOT NULL,
    raw         bytea  NOT NULL,
    column_name text,
    value       text,
    reason      text   NOT NULL
);
CREATE INDEX snapshot_rejects_by_import ON {schema}.snapshot_rejects (import_id, line);
"""),
    (2, "sync's memory of hashed files", """
CREATE TABLE {schema}.snapshot_files (
    table_name  text        NOT NULL,
    path        text        NOT NULL,
    size_bytes  bigint      NOT NULL,
    mtime_ns    bigint      NOT NULL,
    inode       bigint      NOT NULL,
    sha256      text        NOT NULL,
    hashed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, path)
);
"""),
    (3, "retry requests for failed snapshots", """
ALTER TABLE {schema}.snapshot_imports ADD COLUMN retry_requested_at timestamptz;
"""),
)
LATEST_VERSION = MIGRATIONS[-1][0]


def lock_key(*parts: str) -> sql.Composable:
    """An advisory-lock key derived from names, computed by the server (stable everywhere)."""
    return sql.SQL("hashtextextended({}, 7421)").format(sql.Literal("\x1f".join(parts)))


def current_schema(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_schema()").fetchone()
    if not row or row[0] is None:
        raise LedgerError("the connection has no current schema (empty search_path)",
                          hint="pass --schema NAME")
    return str(row[0])


def schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return row is not None


def ledger_version(conn: psycopg.Connection, schema: str) -> int | None:
    """The ledger's version, 0 for an empty schema, None when the version table is missing."""
    row = conn.execute("SELECT to_regclass(%s)",
                       (sql.Identifier(schema, VERSION_TABLE).as_string(conn),)).fetchone()
    if row is None or row[0] is None:
        return None
    result = conn.execute(sql.SQL("SELECT max(version) FROM {}").format(
        sql.Identifier(schema, VERSION_TABLE))).fetchone()
    return int(result[0]) if result and result[0] is not None else 0


def check_not_newer(version: int | None, schema: str) -> None:
    if version is not None and version > LATEST_VERSION:
        raise LedgerError(
            f"the ledger in schema {schema!r} is at version {version}, newer than this "
            f"snapshots {__version__} understands (version {LATEST_VERSION})",
            hint="upgrade snapshots; an older tool must not write to a newer ledger")


def migrate(conn: psycopg.Connection, schema: str, *, target: int = LATEST_VERSION) -> list[int]:
    """Bring the ledger to `target`, under an advisory lock so concurrent runs apply it once.

    Returns the versions applied (empty when already current).
    """
    version = ledger_version(conn, schema)
    check_not_newer(version, schema)
    if version is not None and version >= target:
        return []
    applied: list[int] = []
    # A session-level lock taken before the transaction: the transaction's start then sees
    # what a concurrent migrator committed (an xact lock would leave stale catalog caches).
    conn.execute(sql.SQL("SELECT pg_advisory_lock({})").format(lock_key("migrate", schema)))
    try:
        with conn.transaction():
            version = ledger_version(conn, schema)  # another process may have done it meanwhile
            check_not_newer(version, schema)
            if version is None:
                conn.execute(sql.SQL(
                    "CREATE TABLE {} (version integer PRIMARY KEY, description text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now(), tool_version text NOT NULL)"
                ).format(sql.Identifier(schema, VERSION_TABLE)))
                version = 0
            for number, description, statements in MIGRATIONS:
                if version < number <= target:
                    conn.execute(sql.SQL(statements).format(  # type: ignore[arg-type]
                        schema=sql.Identifier(schema)))
                    conn.execute(sql.SQL(
                        "INSERT INTO {} (version, description, tool_version) "
                        "VALUES (%s, %s, %s)").format(sql.Identifier(schema, VERSION_TABLE)),
                        (number, description, __version__))
                    applied.append(number)
    finally:
        if not conn.broken:
            conn.execute(sql.SQL("SELECT pg_advisory_unlock({})").format(
                lock_key("migrate", schema)))
    return applied


def require_current(conn: psycopg.Connection, schema: str) -> bool:
    """For readers that must not run DDL (`list`): False when there is no ledger yet."""
    version = ledger_version(conn, schema)
    check_not_newer(version, schema)
    if version is None or version == 0:
        return False
    if version < LATEST_VERSION:
        raise LedgerError(
            f"the ledger in schema {schema!r} is at version {version}; this snapshots needs "
            f"version {LATEST_VERSION}", hint="run `snapshots migrate` (or any import) first")
    return True


# --------------------------------------------------------------------------- data tables


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    columns: dict[str, str]  # column name -> formatted type, in table order
    primary_key: tuple[str, ...]
    not_null: frozenset[str]

    @property
    def has_snapshot_id(self) -> bool:
        return SNAPSHOT_ID in self.columns

    @property
    def data_columns(self) -> dict[str, str]:
        return {k: v for k, v in self.columns.items() if k != SNAPSHOT_ID}


def describe_table(conn: psycopg.Connection, schema: str, table: str) -> TableInfo | None:
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """, (schema, table)).fetchall()
    if not rows:
        return None
    pk = conn.execute(
        """
        SELECT a.attname
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
        ORDER BY k.ord
        """, (schema, table)).fetchall()
    return TableInfo(
        schema=schema, name=table,
        columns={r[0]: r[1] for r in rows},
        primary_key=tuple(r[0] for r in pk),
        not_null=frozenset(r[0] for r in rows if r[2]),
    )


def create_append_table(conn: psycopg.Connection, schema: str, table: str,
                        columns: Sequence[tuple[str, str]], *, index: bool = True,
                        view: bool = True, import_id: int | None = None) -> None:
    """The append-mode table: the CSV's columns plus snapshot_id, whose DEFAULT reads the
    transaction-local setting (a COPY that does not send the id itself gets it from there).

    A first import creates the view after its COPY (which may still widen the types a view
    would pin); its BRIN index costs less kept during the COPY than built after it. With
    `import_id`, the DEFAULT is that id until restore_snapshot_id_default: the table is
    this transaction's, no one else sees it, and a constant costs the server less per row
    than the setting or an id in every line.
    """
    defs = [sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind))  # type: ignore[arg-type]
            for name, kind in columns]
    defs.append(sql.SQL("{} bigint NOT NULL DEFAULT {}").format(
        sql.Identifier(SNAPSHOT_ID),
        _snapshot_id_default() if import_id is None else sql.Literal(int(import_id))))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(defs)))
    conn.execute(sql.SQL("COMMENT ON COLUMN {} IS {}").format(
        sql.Identifier(schema, table, SNAPSHOT_ID),
        sql.Literal(f"id in {schema}.{LEDGER} of the import that loaded this row")))
    if index:
        create_snapshot_index(conn, schema, table)
    if view:
        create_latest_view(conn, schema, table)


def _snapshot_id_default() -> sql.Composable:
    return sql.SQL("current_setting({})::bigint").format(sql.Literal(IMPORT_ID_SETTING))


def set_snapshot_id_default(conn: psycopg.Connection, schema: str, name: str,
                            import_id: int | None) -> None:
    """With an id: a table only this import writes (its part table) fills snapshot_id with
    that constant. With None: back to the DEFAULT every append table has, before anyone
    else sees the table."""
    default = _snapshot_id_default() if import_id is None else sql.Literal(int(import_id))
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {}").format(
        sql.Identifier(schema, name), sql.Identifier(SNAPSHOT_ID), default))


def restore_snapshot_id_default(conn: psycopg.Connection, schema: str, name: str) -> None:
    set_snapshot_id_default(conn, schema, name, None)


def create_snapshot_index(conn: psycopg.Connection, schema: str, table: str) -> None:
    """BRIN, not btree: rows arrive grouped by snapshot, so a BRIN index finds a snapshot's
    pages almost as well, and COPY into a btree-indexed table measured about twice as slow
    (docs/design.md)."""
    conn.execute(sql.SQL("CREATE INDEX {} ON {} USING brin ({})").format(
        sql.Identifier(index_name(table, "snapshot_id")), sql.Identifier(schema, table),
        sql.Identifier(SNAPSHOT_ID)))


def index_name(table: str, suffix: str) -> str:
    name = f"{table}_{suffix}"
    if len(name.encode()) <= 63:
        return name
    return f"{table.encode()[:50].decode(errors='ignore')}_{suffix}"


def latest_view_name(table: str) -> str:
    name = f"{table}_latest"
    if len(name.encode()) > 63:
        raise UsageError(f"--table {table!r} is too long: an append-mode table's name must "
                         f"leave room for its view {name!r} (63 bytes at most)")
    return name


def create_latest_view(conn: psycopg.Connection, schema: str, table: str) -> None:
    """`<table>_latest`: the newest imported snapshot's rows (by snapshot date, then id)."""
    conn.execute(sql.SQL(
        """
        CREATE OR REPLACE VIEW {view} AS
        SELECT t.* FROM {table} t
        WHERE t.{sid} = (
            SELECT i.id FROM {ledger} i
            WHERE i.table_name = {name} AND i.status = 'imported'
            ORDER BY i.snapshot_date DESC NULLS LAST, i.id DESC
            LIMIT 1)
        """).format(view=sql.Identifier(schema, latest_view_name(table)),
                    table=sql.Identifier(schema, table), sid=sql.Identifier(SNAPSHOT_ID),
                    ledger=sql.Identifier(schema, LEDGER), name=sql.Literal(table)))


def add_columns(conn: psycopg.Connection, schema: str, table: str,
                columns: Sequence[tuple[str, str]]) -> None:
    for name, kind in columns:
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
            sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(kind)))  # type: ignore[arg-type]


def alter_column_type(conn: psycopg.Connection, schema: str, table: str, column: str,
                      kind: str) -> None:
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING {}::{}").format(
        sql.Identifier(schema, table), sql.Identifier(column), sql.SQL(kind),  # type: ignore[arg-type]
        sql.Identifier(column), sql.SQL(kind)))  # type: ignore[arg-type]


def check_type_name(conn: psycopg.Connection, kind: str) -> str:
    """Validate a --type name with the server's own parser; return its canonical spelling."""
    try:
        with conn.transaction():
            row = conn.execute("SELECT format_type(to_regtype(%s), NULL)", (kind,)).fetchone()
    except psycopg.Error:
        row = None
    if not row or row[0] is None:
        raise UsageError(f"--type: unknown type {kind!r}")
    return kind


# --------------------------------------------------------------------------- parallel loads
# A file loaded over several connections (`--jobs`) goes first into a table of its own that
# nothing reads: its parts commit one by one, out of sight. The record's transaction then
# attaches it to the data table by inheritance (appends only: an upsert loads in one stream,
# see engine.parallel.parallel_ranges). The import id in the name ties a leftover to its
# ledger record, so the reaper can drop it (and the `snapshot_stage_<id>` tables that
# parallel upserts of earlier versions left).


def part_table_name(import_id: int) -> str:
    return f"snapshot_part_{import_id}"


def create_part_table(conn: psycopg.Connection, schema: str, table: str, import_id: int) -> str:
    """A logged table of the data table's shape for one import's rows, not yet attached.

    It copies the parent's columns, defaults, constraints and indexes (so reads through the
    parent stay as fast: the BRIN index on snapshot_id skips it for other snapshots), but
    its snapshot_id DEFAULT is the import's id until attach_part: the parts' COPYs send no
    id and the server evaluates a constant per row. No CHECK (snapshot_id = id) of its own:
    evaluated on every row, it cost about 15% of the load (two streams, 5M rows).
    """
    name = part_table_name(import_id)
    conn.execute(sql.SQL(
        "CREATE TABLE {part} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        "INCLUDING INDEXES INCLUDING GENERATED INCLUDING STORAGE)").format(
        part=sql.Identifier(schema, name), parent=sql.Identifier(schema, table)))
    set_snapshot_id_default(conn, schema, name, import_id)
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        sql.Identifier(schema, name), sql.Literal(
            f"rows of import #{import_id} into {schema}.{table} (loaded in parallel; "
            "read them through the parent)")))
    return name


def may_attach(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether this role can load in parallel parts: create a table beside the data table,
    and own the data table (INHERIT needs both tables' owner). Else one stream does it."""
    row = conn.execute(
        "SELECT has_schema_privilege(%s, 'CREATE') AND pg_has_role(c.relowner, 'USAGE') "
        "FROM pg_class c WHERE c.oid = %s::regclass",
        (schema, sql.Identifier(schema, table).as_string(conn))).fetchone()
    return bool(row and row[0])


def attach_part(conn: psycopg.Connection, schema: str, table: str, name: str) -> None:
    """Make a part's rows visible through the data table. SHARE UPDATE EXCLUSIVE on the
    parent: readers and other loads go on."""
    restore_snapshot_id_default(conn, schema, name)
    conn.execute(sql.SQL("ALTER TABLE {} INHERIT {}").format(
        sql.Identifier(schema, name), sql.Identifier(schema, table)))


def drop_table(conn: psycopg.Connection, schema: str, name: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, name)))


def delete_snapshot_rows(conn: psycopg.Connection, schema: str, table: str,
                         ids: Sequence[int]) -> int:
    """Delete snapshots' rows from an append table: a part table goes whole (DROP), the rest
    by snapshot_id. Returns the rows deleted."""
    if not ids:
        return 0
    deleted = 0
    # One query for the part tables and their row counts (the ledger knows them: no count).
    parts = conn.execute(sql.SQL(
        "SELECT c.relname, i.row_count FROM {} i "
        "JOIN pg_class c ON c.relname = 'snapshot_part_' || i.id "
        "JOIN pg_inherits h ON h.inhrelid = c.oid AND h.inhparent = %s::regclass "
        "WHERE i.id = ANY(%s)").format(sql.Identifier(schema, LEDGER)),
        (sql.Identifier(schema, table).as_string(conn), list(ids))).fetchall()
    for name, rows in parts:
        deleted += int(rows or 0)
        drop_table(conn, schema, name)
    deleted += conn.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
        sql.Identifier(schema, table), sql.Identifier(SNAPSHOT_ID)), (list(ids),)).rowcount
    return deleted
