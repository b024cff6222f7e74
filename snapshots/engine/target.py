"""Where rows go in a load, and how the file's columns map onto it."""

from __future__ import annotations

from dataclasses import dataclass

from snapshots import schema as ddl


@dataclass
class Target:
    """Where rows go in this load, and how the file's columns map onto it."""

    schema: str
    table: str
    mode: str  # append | upsert
    info: ddl.TableInfo | None
    file_columns: tuple[str, ...]
