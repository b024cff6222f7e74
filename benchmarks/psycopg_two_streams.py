"""The floor of a Python client: two threads, each COPYing one half over its own psycopg
connection, with nothing else (no hashing, no ledger, no checks). import_throughput.py runs
it beside `snapshots import --jobs 2` and two psql processes, to show how much of the gap to
psql is the interpreter and driver, and how much is snapshots' own work.

    python benchmarks/psycopg_two_streams.py URI TABLE COLUMNS HALF_1 HALF_2

HALF_1 starts with the header line.
"""

from __future__ import annotations

import sys
import threading

import psycopg


def copy_half(uri: str, table: str, columns: str, path: str, header: bool,
              errors: list[BaseException]) -> None:
    try:
        with psycopg.connect(uri) as conn, conn.cursor() as cur, open(path, "rb") as f:
            statement = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, HEADER {header})"
            with cur.copy(statement) as copy:  # type: ignore[arg-type]
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
    except BaseException as exc:
        errors.append(exc)


def main() -> None:
    uri, table, columns, first, second = sys.argv[1:6]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=copy_half, args=(uri, table, columns, path, n == 0,
                                                        errors))
               for n, path in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"COPY failed: {errors[0]}")


if __name__ == "__main__":
    main()
