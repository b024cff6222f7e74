"""Opening a file's bytes: its whole content (decompressed for .gz, hashed as it is read),
a byte span of it (one part of a parallel load), and reading either in chunks.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from snapshots.csvio.names import is_gzip

CHUNK_SIZE = 1 << 20  # 1 MiB: big enough to amortise syscalls, small enough for flat memory
# The longest record a scan holds in memory: past it type inference gives up (its columns
# stay text) and the malformed-record scan reports the record.
MAX_RECORD_CARRY = 64 << 20


class HashingReader(io.RawIOBase):
    """Wraps a binary file so every byte read through it is also hashed.

    A gzip file is hashed compressed (as stored) by putting this under GzipFile.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return n or 0

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_content(path: Path) -> tuple[BinaryIO, HashingReader]:
    """The file's content (decompressed for .gz) and the hashing reader under it."""
    raw = HashingReader(path.open("rb", buffering=0))
    if is_gzip(path):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return io.BufferedReader(raw, CHUNK_SIZE), raw  # type: ignore[return-value]


class _SpanReader(io.RawIOBase):
    """The bytes [start, end) of a file, as a stream of their own."""

    def __init__(self, raw: BinaryIO, length: int) -> None:
        self._raw = raw
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._raw.readinto(view) or 0  # type: ignore[attr-defined]
        self._left -= n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_span(path: Path, start: int, end: int) -> BinaryIO:
    """Bytes [start, end) of an uncompressed file (one part of a parallel load)."""
    raw = path.open("rb", buffering=0)
    raw.seek(start)
    return io.BufferedReader(_SpanReader(raw, end - start), CHUNK_SIZE)  # type: ignore[return-value]


def iter_chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
