"""Where to cut an uncompressed file into parts for a parallel load: at record boundaries,
found by counting quotes, never by parsing rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.streams import CHUNK_SIZE


class RecordSplitter:
    """Finds where to cut an uncompressed CSV file into `parts` byte ranges of about equal
    size, each starting at a record boundary (the header stays in the first). Fed the file's
    chunks in order.

    A line break ends a record when an even number of quote characters comes before it in
    the file: COPY's CSV parser toggles "inside quotes" on every quote character (a doubled
    quote toggles twice), so this is exactly where COPY itself sees a record end, quoted line
    breaks and badly quoted fields included. It counts quotes at C speed; it never parses a
    row.
    """

    def __init__(self, size: int, parts: int, options: CsvOptions) -> None:
        self.size = size
        self._targets = [size * k // parts for k in range(1, parts)]
        self._quote = options.quote.encode()
        self._bounds = [0]
        self._offset, self._odd, self._next = 0, False, 0

    @property
    def done(self) -> bool:
        return self._next >= len(self._targets)

    def feed(self, chunk: bytes) -> None:
        """The file's next bytes."""
        if self.done:
            return  # every cut is found: the rest of the file needs no counting
        targets, k = self._targets, self._next
        if k < len(targets) and targets[k] < self._offset + len(chunk):
            counted_to, parity, search = 0, self._odd, 0  # quote parity at chunk[counted_to]
            while k < len(targets):
                at = chunk.find(b"\n", max(search, targets[k] - self._offset))
                if at < 0:
                    break
                parity ^= bool(chunk.count(self._quote, counted_to, at) & 1)
                counted_to, search = at, at + 1
                if parity:
                    continue  # a line break inside a quoted field
                boundary = self._offset + at + 1
                if self._bounds[-1] < boundary < self.size:
                    self._bounds.append(boundary)
                k += 1
                while k < len(targets) and targets[k] < boundary:
                    k += 1
            self._next = k
        self._odd ^= bool(chunk.count(self._quote) & 1)
        self._offset += len(chunk)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._bounds, [*self._bounds[1:], self.size], strict=True))


def split_records(path: Path, parts: int, options: CsvOptions,
                  check: Callable[[], None] | None = None) -> list[tuple[int, int]]:
    """`parts` byte ranges of the file, cut at record boundaries (see RecordSplitter). It
    reads only as far as the last cut. `check` runs before each chunk, as in sha256_file."""
    splitter = RecordSplitter(path.stat().st_size, parts, options)
    with path.open("rb", buffering=0) as f:
        while not splitter.done and (chunk := f.read(CHUNK_SIZE)):
            if check is not None:
                check()
            splitter.feed(chunk)
    return splitter.ranges()
