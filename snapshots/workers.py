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
from dataclasses import dataclass
from pathlib import Path

from snapshots.engine.result import FileResult
from snapshots.errors import DatabaseUnavailable, InterruptedImport
from snapshots.importer import Importer
from snapshots.options import ImportOptions, worth_parts


def share(options: ImportOptions, path: Path, size: int, *, free: int, waiting: int) -> int:
    """Connections a file may load over: a large file alone may take all that are free for
    its parts; files waiting behind it get a fair share, so several still load side by side."""
    free = max(1, free)  # none free: a file waiting ahead of a batch still loads in one
    return worth_parts(options, path, size, max(1, free // (1 + min(waiting, free - 1))))


class NotTaken(Exception):
    """A file of a batch the worker stopped before (sync is stopping): not an outcome."""


def returned(future: Future[FileResult]) -> tuple[str, FileResult | None, BaseException | None]:
    """What a finished file's future means to sync: ("not_taken"), ("lost", error): the
    database went away, not the file's fault; ("bug", error): the worker itself failed;
    ("cancelled", result): cancelled at shutdown, not an outcome of the file; ("busy",
    result): another process has it; ("done", result): the file's outcome."""
    try:
        result = future.result()
    except NotTaken:
        return "not_taken", None, None
    except DatabaseUnavailable as exc:
        return "lost", None, exc
    except Exception as exc:
        return "bug", None, exc
    if isinstance(result.error, DatabaseUnavailable):
        return "lost", result, result.error
    if isinstance(result.error, InterruptedImport):
        return "cancelled", result, None
    return ("busy" if result.result == "busy" else "done"), result, None


@dataclass
class _Batch:
    files: list[tuple[str, Path, tuple[str, int] | None]]
    futures: dict[Path, Future[FileResult]]
    stop: threading.Event

    def not_taken(self) -> None:
        for future in self.futures.values():
            if not future.done():
                future.set_exception(NotTaken())


class Importers:
    """The importers (each with its connections): idle ones are reused, busy ones can be
    cancelled from the loop, one whose connection broke is closed instead of kept."""

    def __init__(self, new_importer: Callable[[threading.Event], Importer]) -> None:
        self.cancel_event = threading.Event()  # cancel files in flight (grace is over)
        self._new_importer = new_importer
        self._idle: queue.SimpleQueue[Importer] = queue.SimpleQueue()
        self._busy: dict[int, Importer] = {}  # by worker thread
        self._lock = threading.Lock()

    def take(self) -> Importer:
        """An importer for this worker thread."""
        try:
            importer = self._idle.get_nowait()
        except queue.Empty:
            importer = self._new_importer(self.cancel_event)
        with self._lock:
            self._busy[threading.get_ident()] = importer
        return importer

    def give_back(self, importer: Importer, *, lost: bool = False) -> None:
        with self._lock:
            self._busy.pop(threading.get_ident(), None)
        if lost or importer.conn.broken:
            importer.close()
        else:
            self._idle.put(importer)

    def cancel(self) -> None:
        self.cancel_event.set()
        with self._lock:
            busy = list(self._busy.values())
        for importer in busy:
            importer.cancel_now()

    def drop_idle(self) -> None:
        """Close the idle importers: after a database outage their connections are dead."""
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class ImporterPool:
    """Files in flight, each on a worker thread with the connections it was given."""

    def __init__(self, new_importer: Callable[[threading.Event], Importer], *, jobs: int,
                 wake: Callable[[], None]) -> None:
        self.jobs = jobs
        self.importers = Importers(new_importer)
        self.cancel_event = self.importers.cancel_event
        self._wake = wake  # told when a file is done, so its result is collected promptly
        self._executor = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sync")
        self._lock = threading.Lock()
        # rel -> (its result, connections it holds, in a batch (running or waiting ahead))
        self._in_flight: dict[str, tuple[Future[FileResult], int, bool]] = {}
        self._tasks: set[Future[None]] = set()  # batch workers' tasks
        self._ahead: list[_Batch] = []  # batches waiting for a batch worker to go on with
        self._batch_workers = 0  # workers loading batches (and going on with those ahead)

    def __len__(self) -> int:
        return len(self._in_flight)

    def loads(self) -> int:
        """Loads in flight: a batch of small files is one, and so are those waiting ahead
        of it for its worker."""
        with self._lock:  # a failed batch worker starts the next from its own thread
            self._tasks = {t for t in self._tasks if not t.done()}
            tasks = len(self._tasks)
        return sum(not batched for _f, _c, batched in self._in_flight.values()) + tasks

    def free(self) -> int:
        with self._lock:
            return self._free()

    def _free(self) -> int:
        return self.jobs - self._batch_workers - sum(
            connections for _f, connections, _b in self._in_flight.values())

    def submit(self, rel: str, path: Path, known: tuple[str, int] | None, parts: int) -> None:
        """Import `path` over `parts` connections, its hash and size known already."""

        def work() -> FileResult:
            importer = self.importers.take()
            lost = True
            try:
                result = importer.import_file(path, known=known, parts=parts)
                lost = isinstance(result.error, DatabaseUnavailable)
            finally:
                self.importers.give_back(importer, lost=lost)
            return result

        future = self._executor.submit(work)
        future.add_done_callback(lambda _f: self._wake())
        self._in_flight[rel] = (future, parts, False)

    def submit_batch(self, files: list[tuple[str, Path, tuple[str, int] | None]],
                     stop: threading.Event) -> None:
        """Import small files in order on one worker and one connection, sharing
        transactions (Importer.import_many); each file's result is its own future. `stop`
        set, the worker takes no further file of them. While a batch is loading, the next
        ones (up to one per job) wait ahead, for a worker to go on with on its connection:
        the loop hashes and sorts them while the worker loads."""
        if len(files) == 1:
            self.submit(*files[0], parts=1)
            return
        futures: dict[Path, Future[FileResult]] = {path: Future() for _rel, path, _k in files}
        for future in futures.values():
            future.set_running_or_notify_cancel()
        batch = _Batch(files, futures, stop)
        with self._lock:
            ahead = self._batch_workers > 0 and self._free() <= 0
            if ahead:
                self._ahead.append(batch)
            else:
                self._batch_workers += 1
        if not ahead:
            self._start_batches(batch)
        for rel, path, _known in files:
            # A batch's connection is its worker's (see free), whichever batch it is on.
            self._in_flight[rel] = (futures[path], 0, True)

    def ahead_room(self) -> bool:
        """Whether a batch submitted now would wait ahead rather than want a connection."""
        with self._lock:
            return self._batch_workers > 0 and self._free() <= 0 and \
                len(self._ahead) < self.jobs

    def _start_batches(self, first: _Batch) -> None:
        task = self._executor.submit(self._work_batches, first)
        task.add_done_callback(lambda _f: self._wake())
        with self._lock:
            self._tasks.add(task)

    def _work_batches(self, batch: _Batch) -> None:
        importer = self.importers.take()
        current: _Batch | None = batch
        try:
            while current is not None:
                self._load_batch(importer, current)
                current = self._next_batch(current.stop)
        finally:
            self.importers.give_back(importer)
            with self._lock:
                if current is not None:  # this worker failed: another goes on with the rest
                    current = self._ahead.pop(0) if self._ahead else None
                    if current is None:
                        self._batch_workers -= 1
            if current is not None:
                self._start_batches(current)

    def _next_batch(self, stop: threading.Event) -> _Batch | None:
        """The batch waiting ahead, or None (this worker is done with batches). Stopping, the
        batches waiting are not taken."""
        with self._lock:
            if stop.is_set() or self.cancel_event.is_set():
                dropped, self._ahead = self._ahead, []
            else:
                dropped = []
                if self._ahead:
                    self._wake()  # room ahead again: the loop may queue the next
                    return self._ahead.pop(0)
            self._batch_workers -= 1
        for batch in dropped:
            batch.not_taken()
        return None

    @staticmethod
    def _load_batch(importer: Importer, batch: _Batch) -> None:
        try:
            for result in importer.import_many(
                    [path for _rel, path, _k in batch.files],
                    known={path: known for _rel, path, known in batch.files}, stop=batch.stop):
                batch.futures[result.path].set_result(result)
        except BaseException as exc:
            for future in batch.futures.values():
                if not future.done():
                    future.set_exception(exc)
            raise
        finally:
            batch.not_taken()  # stopped before their turn

    def finished(self) -> Iterator[tuple[str, Future[FileResult]]]:
        """The files done since the last call, each once."""
        for rel, (future, _connections, _batched) in list(self._in_flight.items()):
            if future.done():
                del self._in_flight[rel]
                yield rel, future

    def drop_idle(self) -> None:
        self.importers.drop_idle()

    def cancel(self) -> int:
        """Cancel and roll back every file in flight; wait for them. Returns how many."""
        self.importers.cancel()
        for future, _connections, _batched in list(self._in_flight.values()):
            future.exception(timeout=30)
        return len(self._in_flight)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.importers.drop_idle()
