"""Where a file is hashed: sha256_file; hash_file, which finds a parallel load's cut points
beside the hash; and read_hashed, a small file read whole for a batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snapshots.csvio.cutpoints import split_records
from snapshots.csvio.dialect import CsvOptions
from snapshots.filesig import FileSignature, file_signature

# Hashing reads bigger chunks: hashlib lets go of the GIL only inside update(), and a thread
# that hashes beside busy Python threads waits for the GIL once or twice per chunk.
HASH_CHUNK_SIZE = 8 << 20


def sha256_file(path: Path, check: Callable[[], None] | None = None) -> tuple[str, int]:
    """Hex sha256 of the file's bytes as stored, and its size. This is where a file is hashed.

    `check` runs before each chunk (it raises to stop a read that is no longer wanted).
    """
    digest = hashlib.sha256()
    size = 0
    with path.open("rb", buffering=0) as f:
        # One buffer for the whole read, no allocation per chunk; no bigger than the file
        # (zeroing 8 MB for a 20 kB file would cost more than hashing it).
        buf = bytearray(min(HASH_CHUNK_SIZE, max(os.fstat(f.fileno()).st_size + 1, 1 << 16)))
        view = memoryview(buf)
        while n := f.readinto(buf):
            if check is not None:
                check()
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


def read_hashed(path: Path, limit: int) -> tuple[bytes, str] | None:
    """A small file's bytes, read whole, and their hex sha256; None when the file is larger
    than `limit`. A batch's header, checks and COPY then use these very bytes: one read of
    the file instead of three."""
    with path.open("rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size > limit:
            return None
        data = f.readall()
    if len(data) > limit:  # it grew meanwhile
        return None
    return data, hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Hashed:
    """A file's hash, and its cut points for `parts` parts (None when one stream)."""

    path: Path
    sha256: str
    size: int
    signature: FileSignature  # taken before the read
    parts: int
    ranges: list[tuple[int, int]] | None


def hash_file(path: Path, options: CsvOptions, parts: Callable[[int], int],
              check: Callable[[], None] | None = None) -> Hashed:
    """Hash a file and, when `parts(size)` says it loads in several parts, find its cut
    points meanwhile.

    The two run side by side: hashlib lets go of the GIL while it hashes, the quote count
    behind the cut points holds it. On a thread of its own the count overlaps the hash
    instead of following it chunk by chunk, at the price of reading the first parts twice
    from the page cache (measured: a 214 MB file's parallel load starts 0.04 s sooner).
    """
    signature = file_signature(path)
    n = parts(signature.size)
    if n < 2:
        sha, size = sha256_file(path, check)
        return Hashed(path, sha, size, signature, n, None)
    from concurrent.futures import ThreadPoolExecutor  # here: `import` starts no sooner for it

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cut-points") as pool:
        cuts = pool.submit(split_records, path, n, options, check)
        sha, size = sha256_file(path, check)
        ranges = cuts.result()
    return Hashed(path, sha, size, signature, n, ranges)
