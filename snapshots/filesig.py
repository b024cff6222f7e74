"""What tells that a file's bytes may have changed, without reading them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class FileSignature(NamedTuple):
    """A file's size, mtime and inode (a tuple: compared per file, often, in sync's listing).

    The inode tells a file replaced by rename (the usual atomic write) from one rewritten in
    place; together with size and mtime it is what sync settles on and what a load checks
    again before it commits the hash it took.
    """

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSignature:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


def file_signature(path: Path | str) -> FileSignature:
    return FileSignature.of(os.stat(path))
