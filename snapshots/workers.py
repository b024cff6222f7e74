"""sync's importer pool: worker threads, an importer (with its connections) per worker, and
the connection budget: --jobs counts connections, not files.

An importer outlives its file, so its connection is reused; one whose connection broke is
closed instead of going back to the idle ones.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from snapshots.engine.result import FileResult
from snapshots.errors import DatabaseUnavailable
from snapshots.importer import Importer
from snapshots.options import ImportOptions, worth_parts


def share(options: ImportOptions, path: Path, size: int, *, free: int, waiting: int) -> int:
    """Connections a file may load over: a large file alone may take all that are free for
    its parts; files waiting behind it get a fair share, so several still load side by side."""
    return worth_parts(options, path, size, max(1, free // (1 + min(waiting, free - 1))))


class NotTaken(Exception):
    """A file of a batch the worker stopped before (sync is stopping): not an outcome."""


class ImporterPool:
    """Files in flight, each on a worker thread with the connections it was given."""

    def __init__(self, new_importer: Callable[[threading.Event], Importer], *, jobs: int,
                 wake: Callable[[], None]) -> None:
        self.jobs = jobs
        self.cancel_event = threading.Event()  # cancel files in flight (grace is over)
        self._new_importer = new_importer
        self._wake = wake  # told when a file is done, so its result is collected promptly
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sync")
        self._idle: queue.SimpleQueue[Importer] = queue.SimpleQueue()
        self._busy: dict[int, Importer] = {}  # by worker thread: cancelled from the loop
        self._lock = threading.Lock()
        self._in_flight: dict[str, tuple[Future[FileResult], int]] = {}  # (result, connections)
        self._tasks: dict[Future[None], list[str]] = {}  # batches on a worker: their files

    def __len__(self) -> int:
        return len(self._in_flight)

    def loads(self) -> int:
        """Loads in flight: a batch of small files is one."""
        for task in [t for t in self._tasks if t.done()]:
            del self._tasks[task]
        batched = sum(rel in self._in_flight for rels in self._tasks.values() for rel in rels)
        return len(self._in_flight) - batched + len(self._tasks)

    def free(self) -> int:
        return self.jobs - sum(connections for _f, connections in self._in_flight.values())

    def submit(self, rel: str, path: Path, known: tuple[str, int], parts: int) -> None:
        """Import `path` over `parts` connections, its hash and size known already."""

        def work() -> FileResult:
            importer = self._take()
            with self._lock:
                self._busy[threading.get_ident()] = importer
            try:
                result = importer.import_file(path, known=known, parts=parts)
            finally:
                with self._lock:
                    self._busy.pop(threading.get_ident(), None)
            if isinstance(result.error, DatabaseUnavailable) or importer.conn.broken:
                importer.close()
            else:
                self._idle.put(importer)
            return result

        future = self._executor.submit(work)
        future.add_done_callback(lambda _f: self._wake())
        self._in_flight[rel] = (future, parts)

    def submit_batch(self, files: list[tuple[str, Path, tuple[str, int]]],
                     stop: threading.Event) -> None:
        """Import small files in order on one worker and one connection, sharing
        transactions (Importer.import_many); each file's result is its own future. `stop`
        set, the worker takes no further file of them."""
        if len(files) == 1:
            self.submit(*files[0], parts=1)
            return
        futures: dict[Path, Future[FileResult]] = {path: Future() for _rel, path, _k in files}
        for future in futures.values():
            future.set_running_or_notify_cancel()

        def work() -> None:
            importer = self._take()
            with self._lock:
                self._busy[threading.get_ident()] = importer
            try:
                for result in importer.import_many(
                        [path for _rel, path, _k in files],
                        known={path: known for _rel, path, known in files}, stop=stop):
                    futures[result.path].set_result(result)
            except BaseException as exc:
                for future in futures.values():
                    if not future.done():
                        future.set_exception(exc)
                raise
            finally:
                with self._lock:
                    self._busy.pop(threading.get_ident(), None)
                for future in futures.values():
                    if not future.done():  # stopped before its turn: not taken
                        future.set_exception(NotTaken())
            if importer.conn.broken:
                importer.close()
            else:
                self._idle.put(importer)

        task = self._executor.submit(work)
        task.add_done_callback(lambda _f: self._wake())
        for index, (rel, path, _known) in enumerate(files):
            # The batch holds one connection: counted once, on its first file.
            self._in_flight[rel] = (futures[path], 1 if index == 0 else 0)
        self._tasks[task] = [rel for rel, _p, _k in files]

    def _take(self) -> Importer:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._new_importer(self.cancel_event)

    def finished(self) -> Iterator[tuple[str, Future[FileResult]]]:
        """The files done since the last call, each once."""
        for rel, (future, _connections) in list(self._in_flight.items()):
            if future.done():
                del self._in_flight[rel]
                yield rel, future

    def drop_idle(self) -> None:
        """Close the idle importers: after a database outage their connections are dead."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def cancel(self) -> int:
        """Cancel and roll back every file in flight; wait for them. Returns how many."""
        self.cancel_event.set()
        with self._lock:
            busy = list(self._busy.values())
        for importer in busy:
            importer.cancel_now()
        for future, _connections in list(self._in_flight.values()):
            future.exception(timeout=30)
        return len(self._in_flight)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.drop_idle()
