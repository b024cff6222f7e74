"""Snapshot file names: which files are snapshots, their dates, and the order they load in.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from snapshots.errors import UsageError

_DATE_RUN = re.compile(r"(?<!\d)(\d{8})(?!\d)")


def snapshot_date(name: str) -> dt.date | None:
    """The first run of exactly 8 digits in the name that is a valid YYYYMMDD date."""
    for match in _DATE_RUN.finditer(name):
        digits = match.group(1)
        try:
            return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            continue
    return None


def load_order(paths: Iterable[Path]) -> list[Path]:
    """Snapshot-date order, undated last, then by name: time must not run backwards."""

    def key(path: Path) -> tuple[int, dt.date, str]:
        day = snapshot_date(path.name)
        return (0, day, path.name) if day else (1, dt.date.min, path.name)

    return sorted(paths, key=key)


def is_snapshot_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


def is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files stay as given; a directory becomes its *.csv and *.csv.gz files (not recursive).

    Raises UsageError for a path that is neither a readable file nor a directory.
    """
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [p for p in path.iterdir() if p.is_file() and is_snapshot_file(p)
                     and not p.name.startswith(".")]
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise UsageError(f"{path}: not a regular file or a directory")
        else:
            raise UsageError(f"{path}: no such file or directory")
    return load_order(files)
