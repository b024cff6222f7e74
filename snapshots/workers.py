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

    def __len__(self) -> int:
        return len(self._in_flight)

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
