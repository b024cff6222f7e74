"""Hashing ahead of the import.

A file's sha256 must be known before its claim, so every import starts with a full read of
the file. Done in a background thread, that read overlaps whatever comes before the file: the
start-up of the command (loading the database driver, starting the embedded server) for the
first file, the previous file's load for the others. hashlib lets go of the GIL while it
hashes, so the thread runs beside the rest on a second core.

The thread stays at most `ahead` files ahead of the import, or more while the files it holds
come to less than AHEAD_BYTES (so a directory of large files is not read twice: once by the
hash, and again, out of the page cache, by COPY, while a run of small files is hashed well
before a batch wants them), and a result is only handed out while the file's size, mtime and
inode are what they were before the read.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.hashing import Hashed, hash_file
from snapshots.filesig import file_signature

log = logging.getLogger(__name__)

AHEAD_BYTES = 4 << 20


class _Closed(Exception):
    pass


class Prehasher:
    """Hashes `paths` in order in a thread of its own; `take(path)` hands a result over.

    `parts(path, size)` says how many parts a file would be cut into, so the cut points are
    found while it is hashed (see csvio.hashing.hash_file). `skip(size)` says which files
    are left to the import, which reads them whole itself (options.read_whole).
    """

    def __init__(self, paths: Sequence[Path], *, parts: Callable[[Path, int], int],
                 options: CsvOptions, ahead: int = 1, ahead_bytes: int = AHEAD_BYTES,
                 skip: Callable[[int], bool] = lambda _size: False) -> None:
        self._waiting = dict.fromkeys(paths)  # in import order, not yet started

        def hash_ahead(path: Path, check: Callable[[], None]) -> Hashed | None:
            """The one hash of a file, with its cut points (check() stops it once closed);
            None for a file left to the import (`skip`)."""
            if skip(path.stat().st_size):
                return None
            return hash_file(path, options, lambda size: parts(path, size), check)

        self._hash_file = hash_ahead
        self._ahead = max(1, ahead)
        self._ahead_bytes = ahead_bytes
        self._current: Path | None = None
        self._results: dict[Path, Hashed] = {}
        self._held_bytes = 0  # of the results not taken yet
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="prehash", daemon=True)
        self._thread.start()

    def take(self, path: Path) -> Hashed | None:
        """The file's hash if it was (or is being) hashed ahead and has not changed since;
        None tells the caller to hash the file itself."""
        with self._cond:
            # Next in line, with room for it: the thread is about to start it.
            while path in self._waiting and next(iter(self._waiting)) == path and \
                    self._room() and not self._closed:
                self._cond.wait()
            if path in self._waiting:  # not reached (taken out of order): don't wait for it
                del self._waiting[path]
                return None
            while self._current == path:
                self._cond.wait()
            result = self._results.pop(path, None)
            self._held_bytes -= result.size if result is not None else 0
            self._cond.notify_all()  # room for the next file
        try:
            if result is None or file_signature(path) != result.signature:
                return None
        except OSError:
            return None
        return result

    def close(self) -> None:
        """Stop hashing (a file half read is abandoned); results not taken are dropped."""
        with self._cond:
            self._closed = True
            self._waiting.clear()
            self._results.clear()
            self._held_bytes = 0
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prehasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _room(self) -> bool:
        """Whether the thread may hash one more file before the import takes one."""
        return len(self._results) < self._ahead or self._held_bytes < self._ahead_bytes

    def _run(self) -> None:
        try:
            self._hash_in_order()
        finally:  # whatever ends the thread, nobody may wait for it any more
            with self._cond:
                self._closed = True
                self._current = None
                self._cond.notify_all()

    def _hash_in_order(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._waiting and not self._room():
                    self._cond.wait()
                if self._closed or not self._waiting:
                    return
                path = next(iter(self._waiting))
                del self._waiting[path]
                self._current = path
                self._cond.notify_all()
            try:
                result = self._hash(path)
            except (OSError, _Closed):
                result = None  # the importer reads the file itself and reports what it finds
            except Exception:
                log.debug("hashing %s ahead failed", path, exc_info=True)
                result = None
            with self._cond:
                if result is not None:  # (take finds none otherwise: the import hashes it)
                    self._results[path] = result
                    self._held_bytes += result.size
                self._current = None
                self._cond.notify_all()

    def _hash(self, path: Path) -> Hashed | None:
        def check() -> None:
            if self._closed:
                raise _Closed()

        return self._hash_file(path, check)
