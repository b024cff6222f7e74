"""What one load step is given: the connection, the table, the options, cancel and progress.

A small value instead of the whole importer: the load paths read it and never set it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import psycopg
from psycopg import sql

from snapshots.csvio.header import Header
from snapshots.engine.target import Target
from snapshots.options import ImportOptions

ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class LoadContext:
    conn: psycopg.Connection
    schema: str
    table: str
    options: ImportOptions
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: ProgressCallback | None = None

    @property
    def relation(self) -> sql.Identifier:
        """The target table, schema-qualified."""
        return sql.Identifier(self.schema, self.table)


@dataclass(frozen=True)
class LoadJob:
    """One file's load: its header, where it goes, its hash and its ledger record."""

    path: Path
    header: Header
    target: Target
    sha256: str
    import_id: int


class Loaded(NamedTuple):
    """What a load path did: rows loaded, rows rejected, and what else to say."""

    rows: int
    rejected: int
    detail: str
