"""An importer's connections: the one its files' transactions run on, and the helpers
the parts of a parallel load use; cancelling them all from another thread."""

from __future__ import annotations

import contextlib

import psycopg

from snapshots.config import connect


class Connections:
    """Not thread-safe except `cancel_now`: one per importer."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.main = connect(conninfo)
        self._helpers: list[psycopg.Connection] = []  # parts 2..N of a parallel load

    def reconnect(self) -> psycopg.Connection:
        """A new main connection, for when the old one died (its failure must be recorded)."""
        self.main.close()
        self.main = connect(self.conninfo)
        return self.main

    def for_parts(self, count: int) -> list[psycopg.Connection]:
        """The main connection and `count` helpers (opened as needed, kept for the next)."""
        self._helpers = [c for c in self._helpers if not c.closed and not c.broken]
        while len(self._helpers) < count:
            self._helpers.append(connect(self.conninfo))
        return [self.main, *self._helpers[:count]]

    def cancel_now(self) -> None:
        """Cancel the statements in flight on every connection (from another thread)."""
        for conn in [self.main, *self._helpers]:
            with contextlib.suppress(psycopg.Error, AttributeError):
                conn.cancel_safe(timeout=2)

    def close(self) -> None:
        for conn in [self.main, *self._helpers]:
            if not conn.closed:
                conn.close()
        self._helpers.clear()
