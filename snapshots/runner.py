"""Run imports of many files: in snapshot-date order, over up to --jobs connections."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from snapshots.engine.batch_plan import BATCH_FILES
from snapshots.engine.target import merges
from snapshots.importer import FileResult, Importer, ProgressCallback
from snapshots.options import ImportOptions, default_jobs
from snapshots.prehash import Prehasher


def import_files(conninfo: str, files: Sequence[Path], *, table: str, schema: str | None,
                 options: ImportOptions, jobs: int | None = None,
                 progress: Callable[[Path], ProgressCallback | None] | None = None,
                 cancel: threading.Event | None = None,
                 prehashed: Prehasher | None = None) -> Iterator[FileResult]:
    """Import files, yielding each result as it is known. `prehashed`: the files' hashes,
    being computed ahead (see snapshots.prehash).

    Files one at a time get every connection for their parts (a large file loads in
    parallel parts); several at once get one each. Upsert mode goes file by file: merge
    order is snapshot order, so time never runs backwards.
    """
    workers = jobs or default_jobs()
    state = "missing"
    if workers > 1 and len(files) > 1 and options.mode != "upsert":
        state = _table_state(conninfo, table, schema, options.mode)
    if workers <= 1 or len(files) <= 1 or options.mode == "upsert" or state == "upsert":
        yield from _sequential(conninfo, files, table=table, schema=schema, options=options,
                               progress=progress, cancel=cancel, parts=workers,
                               prehashed=prehashed)
        return
    pending = list(files)
    # The first file in snapshot order creates the table, with the types of its data, as it
    # would without --jobs; only then do the others load side by side (else whichever file
    # won the race would choose the types, and an earlier file could fail against them).
    while state == "missing" and pending and not options.dry_run:
        yield from _sequential(conninfo, pending[:1], table=table, schema=schema,
                               options=options, progress=progress, cancel=cancel,
                               parts=workers, prehashed=prehashed)
        del pending[0]
        if cancel is not None and cancel.is_set():
            return
        state = _table_state(conninfo, table, schema, options.mode)
    if len(pending) <= 1:
        if pending:
            yield from _sequential(conninfo, pending, table=table, schema=schema,
                                   options=options, progress=progress, cancel=cancel,
                                   parts=workers, prehashed=prehashed)
        return
    yield from _parallel(conninfo, pending, table=table, schema=schema, options=options,
                         workers=min(workers, len(pending)), progress=progress, cancel=cancel,
                         prehashed=prehashed)


def _table_state(conninfo: str, table: str, schema: str | None, mode: str) -> str:
    """`missing`, `upsert` (what `mode` merges into: files must go one by one, in order) or
    `append`."""
    from snapshots import schema as ddl
    from snapshots.config import connect

    with connect(conninfo) as conn:
        schema = schema or ddl.current_schema(conn)
        info = ddl.describe_table(conn, schema, table)
    if info is None:
        return "missing"
    return "upsert" if merges(schema, table, info, mode) else "append"


def _sequential(conninfo: str, files: Sequence[Path], *, table: str, schema: str | None,
                options: ImportOptions,
                progress: Callable[[Path], ProgressCallback | None] | None,
                cancel: threading.Event | None, parts: int = 1,
                prehashed: Prehasher | None = None) -> Iterator[FileResult]:
    importer = Importer(conninfo, table=table, schema=schema, options=options, cancel=cancel,
                        parts=parts, prehashed=prehashed)
    with importer:
        yield from importer.import_many(files, progress=progress)


def _parallel(conninfo: str, files: Sequence[Path], *, table: str, schema: str | None,
              options: ImportOptions, workers: int,
              progress: Callable[[Path], ProgressCallback | None] | None,
              cancel: threading.Event | None,
              prehashed: Prehasher | None = None) -> Iterator[FileResult]:
    # Workers take consecutive files a few at a time, so runs of small files still share
    # transactions (Importer.import_many), yet every worker gets several turns.
    todo: queue.Queue[Sequence[Path]] = queue.Queue()
    size = max(1, min(BATCH_FILES, len(files) // (workers * 4)))
    for start in range(0, len(files), size):
        todo.put(files[start:start + size])
    done: queue.Queue[FileResult | BaseException] = queue.Queue()
    stop = cancel or threading.Event()
    importers: list[Importer] = []

    def work() -> None:
        try:
            importer = Importer(conninfo, table=table, schema=schema, options=options,
                                cancel=stop, prehashed=prehashed)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            done.put(exc)
            done.put(_WorkerDone())
            return
        importers.append(importer)
        try:
            with importer:
                while not stop.is_set():
                    try:
                        chunk = todo.get_nowait()
                    except queue.Empty:
                        break
                    for result in importer.import_many(chunk, progress=progress):
                        done.put(result)
        except Exception as exc:  # cancelled between files, or the server went away
            if not stop.is_set():
                done.put(exc)
        finally:
            done.put(_WorkerDone())

    threads = [threading.Thread(target=work, name=f"import-{i}", daemon=True)
               for i in range(workers)]
    finished = 0
    error: BaseException | None = None
    try:
        for thread in threads:
            thread.start()
        while finished < len(threads):
            item = done.get()
            if isinstance(item, _WorkerDone):
                finished += 1
            elif isinstance(item, BaseException):
                error = item  # its _WorkerDone follows
            else:
                yield item
    except BaseException:
        # Ctrl-C (it reaches this thread only) or the consumer gone: the workers' loads in
        # flight are cancelled and rolled back, and they remove their claims before the
        # process ends, as one worker does.
        stop.set()
        for importer in importers:
            importer.cancel_now()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=CANCEL_SECONDS)
        raise
    for thread in threads:
        thread.join()
    # A worker that could not connect is fine while others did the work; when files are
    # left over, nobody could: that is the run's error.
    if error is not None and not todo.empty():
        raise error


CANCEL_SECONDS = 10.0  # how long cancelled workers get to clean up after themselves


class _WorkerDone:
    """Sentinel: a worker ran out of files."""
