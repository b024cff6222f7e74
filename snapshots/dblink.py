"""sync's own link to the database: connect, migrate, reap, ping, back off, report readiness;
and what sync reads from the ledger over it (hashes it remembers, states, the table's shape).

Importers have connections of their own (snapshots.workers); this one serves the loop.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg

from snapshots import hashmemory, store
from snapshots import schema as ddl
from snapshots.config import connect, first_line
from snapshots.csvio.hashing import sha256_file
from snapshots.engine.target import merges
from snapshots.errors import DatabaseUnavailable, SnapshotsError
from snapshots.filesig import FileSignature
from snapshots.metrics import Metrics

# The JSON log names the logger: the service's lines keep the one they always had.
log = logging.getLogger("snapshots.sync")

BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
PING_SECONDS = 5.0  # an idle service still checks the database this often (/readyz)

# What a lost database raises: the loop treats both alike.
LOST = (psycopg.OperationalError, DatabaseUnavailable)


class LedgerView:
    """The ledger as one connection sees it. Hashes are read at connect; states and the
    table's shape once per listing (`refresh`), not once per file."""

    def __init__(self, conn: psycopg.Connection, schema: str, table: str) -> None:
        self.conn = conn
        self.schema = schema
        self.table = table
        self.memory = hashmemory.hashed_files(conn, schema, table)
        self._unsaved: dict[str, hashmemory.FileMemory] = {}
        self._states: dict[str, store.SnapshotState] | None = None
        self._shape: tuple[bool, bool] | None = None

    def refresh(self) -> None:
        self._states = None
        self._shape = None

    def state(self, name: str) -> store.SnapshotState | None:
        if self._states is None:
            self._states = store.snapshot_states(self.conn, self.schema, self.table)
        return self._states.get(name)

    def shape(self, mode: str) -> tuple[bool, bool]:
        """(the table exists, files are merged on its key)."""
        if self._shape is None:
            info = ddl.describe_table(self.conn, self.schema, self.table)
            self._shape = (info is not None, merges(self.schema, self.table, info, mode))
        return self._shape

    def table_created(self) -> None:
        self._shape = None  # the first file may have created the table

    def remembered(self, rel: str, seen: FileSignature) -> str | None:
        """The file's hash when these bytes were hashed before, or None."""
        memory = self.memory.get(rel)
        if memory is not None and memory.signature == seen:
            return memory.sha256
        return None

    def sha256(self, rel: str, seen: FileSignature, path: Path) -> str | None:
        """The file's hash, remembered or read (and remembered); None when it is still
        changing. Raises OSError when it cannot be read."""
        sha = self.remembered(rel, seen)
        if sha is not None:
            return sha
        sha, size = sha256_file(path)  # the only place sync reads a file's bytes
        if size != seen.size:
            return None
        self.learn(rel, seen, sha)
        return sha

    def learn(self, rel: str, seen: FileSignature, sha: str) -> None:
        """Remember a hash (one an import found, say), to be written with the next save."""
        if self.remembered(rel, seen) != sha:
            self.memory[rel] = self._unsaved[rel] = hashmemory.FileMemory(seen, sha)

    def save(self) -> None:
        """Write the hashes read since the last save, in one statement."""
        if self._unsaved:
            hashmemory.remember_hashes(self.conn, self.schema, self.table, self._unsaved)
            self._unsaved = {}


class DatabaseLink:
    """Connected and migrated, or backing off: capped exponential, reset by a success."""

    def __init__(self, conninfo: str, *, table: str, schema: str | None,
                 metrics: Metrics) -> None:
        self.conninfo = conninfo
        self.table = table
        self.schema = schema
        self.metrics = metrics
        self.up = False
        self.error: str | None = None  # why it is down, for a --once run's summary
        self.ledger: LedgerView | None = None  # None while down
        self._backoff = BACKOFF_START
        self._next_try = 0.0  # when to connect again
        self._next_ping = 0.0

    def check(self) -> bool:
        """True when the link is usable now: ping it when due, reconnect when due."""
        now = time.monotonic()
        if self.ledger is not None and not self.ledger.conn.closed \
                and not self.ledger.conn.broken:
            if now < self._next_ping:
                return True
            # An idle service sends nothing, so a dead server would go unnoticed (and /readyz
            # stay green) until the next file: ask it now and then.
            try:
                self.ledger.conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self.lost(exc)
                return False
            self._next_ping = now + PING_SECONDS
            return True
        if now < self._next_try:
            return False
        try:
            self._connect()
        except LOST as exc:
            self.lost(exc)
            return False
        if not self.up:
            log.info("database is up")
        self.up = True
        self.metrics.database_up.set(1)
        self._next_ping = now + PING_SECONDS
        self._backoff = BACKOFF_START
        self.error = None
        return True

    def _connect(self) -> None:
        conn = connect(self.conninfo)
        self.ledger = None
        try:
            schema = self.schema = self.schema or ddl.current_schema(conn)
            ddl.migrate(conn, schema)
            store.reap_interrupted(conn, schema, self.table)
            ledger = LedgerView(conn, schema, self.table)
            last = store.last_success(conn, schema, self.table)
        except BaseException:
            conn.close()
            raise
        self.ledger = ledger
        if last is not None:  # a restart must not look like "no snapshot for a long time"
            gauge = self.metrics.last_success
            gauge.set(max(last.timestamp(), gauge._value.get()))

    def lost(self, exc: BaseException) -> None:
        """Down: close, and try again after the backoff."""
        message = str(exc) if isinstance(exc, SnapshotsError) else first_line(str(exc))
        if self.up or self._backoff == BACKOFF_START:
            log.warning("database unavailable: %s; retrying with backoff", message)
        self.up = False
        self.metrics.database_up.set(0)
        self.close()
        self._next_try = time.monotonic() + self._backoff
        self._backoff = min(BACKOFF_CAP, self._backoff * 2)
        self.error = message

    def next_check(self) -> float:
        """When `check` has something to do next (a ping, or a reconnect)."""
        return self._next_ping if self.up else self._next_try

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.conn.close()
        self.ledger = None
