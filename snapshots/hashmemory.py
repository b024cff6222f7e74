"""sync's memory of the files it hashed (the snapshot_files table): a file whose size, mtime
and inode are what they were when it was hashed is not read again, not even after a restart.

Only a cache: sync writes it once per pass, so a SIGKILL loses at most a pass's entries,
and those files are read once more, nothing worse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import psycopg
from psycopg import sql

from snapshots.filesig import FileSignature
from snapshots.schema import FILES


class FileMemory(NamedTuple):
    signature: FileSignature  # when it was hashed
    sha256: str


def hashed_files(conn: psycopg.Connection, schema: str, table: str) -> dict[str, FileMemory]:
    """sync's memory of what it hashed, so a restart reads none of those bytes again."""
    rows = conn.execute(sql.SQL(
        "SELECT path, size_bytes, mtime_ns, inode, sha256 FROM {} WHERE table_name = %s").format(
        sql.Identifier(schema, FILES)), (table,)).fetchall()
    return {r[0]: FileMemory(FileSignature(r[1], r[2], r[3]), r[4]) for r in rows}


def remember_hashes(conn: psycopg.Connection, schema: str, table: str,
                    memories: Mapping[str, FileMemory]) -> None:
    """One statement for any number of paths (a first pass learns thousands at once)."""
    if not memories:
        return
    paths = list(memories)
    conn.execute(sql.SQL(
        "INSERT INTO {} (table_name, path, size_bytes, mtime_ns, inode, sha256) "
        "SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
        "%s::text[]) ON CONFLICT (table_name, path) DO UPDATE SET "
        "size_bytes = EXCLUDED.size_bytes, mtime_ns = EXCLUDED.mtime_ns, "
        "inode = EXCLUDED.inode, sha256 = EXCLUDED.sha256, hashed_at = now()").format(
        sql.Identifier(schema, FILES)),
        (table, paths, [memories[p].signature.size for p in paths],
         [memories[p].signature.mtime_ns for p in paths],
         [memories[p].signature.inode for p in paths],
         [memories[p].sha256 for p in paths]))
