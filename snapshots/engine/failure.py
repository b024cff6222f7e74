"""A failed import's record: what the ledger says about it, written even when the
connection died with the load."""

from __future__ import annotations

import logging
import threading

import psycopg

from snapshots import store
from snapshots.config import first_line
from snapshots.engine.connections import Connections
from snapshots.engine.result import FileResult
from snapshots.errors import (
    ConflictError,
    DatabaseUnavailable,
    InterruptedImport,
    SnapshotsError,
    UsageError,
)

log = logging.getLogger("snapshots.importer")  # the engine's one logger name, as logs show it


def record_failure(conns: Connections, schema: str, import_id: int, exc: BaseException,
                   cancel: threading.Event) -> None:
    if isinstance(exc, SnapshotsError):
        message = str(exc)
    elif isinstance(exc, KeyboardInterrupt):
        message = "interrupted"
    else:
        message = first_line(str(exc)) or type(exc).__name__
    # Not the file's fault: a cancellation, a lost server, options that don't fit the
    # table. Such a failure doesn't stop sync from trying the same bytes again.
    retry = isinstance(exc, (InterruptedImport, KeyboardInterrupt, UsageError,
                             DatabaseUnavailable,
                             psycopg.OperationalError))  # QueryCanceled is one too
    # Cancelled (a shutdown past its grace, Ctrl-C): no outcome of the file, and nothing
    # of it was written, so its claim goes too rather than stay behind as a failure.
    cancelled = isinstance(exc, (InterruptedImport, KeyboardInterrupt)) or (
        isinstance(exc, psycopg.errors.QueryCanceled) and cancel.is_set())

    def record(conn: psycopg.Connection) -> None:
        if cancelled:
            store.discard_claim(conn, schema, import_id)
        else:
            store.mark_failed(conn, schema, import_id, message, retry=retry)

    try:
        try:
            if conns.main.broken or conns.main.closed:
                raise psycopg.OperationalError("connection lost")
            record(conns.main)
        except psycopg.OperationalError:
            # The connection died with the load (it may not know yet): a new one records it.
            record(conns.reconnect())
    except (psycopg.Error, SnapshotsError):
        # The claim stays `importing`; its owner (us) is gone once this connection closes,
        # so the next run's reaper marks it interrupted.
        log.warning("could not record the failure of import #%s", import_id)


def fail(result: FileResult, exc: BaseException, conn: psycopg.Connection,
         cancel: threading.Event) -> bool:
    """Say in `result` why its file failed, as one line (False: not an error of a file)."""
    path = result.path
    if isinstance(exc, SnapshotsError):
        result.result = "conflict" if isinstance(exc, ConflictError) else "failed"
        result.error = exc
    elif isinstance(exc, psycopg.errors.QueryCanceled):  # an OperationalError: before that
        result.result = "failed"
        result.error = InterruptedImport(f"{path}: cancelled; nothing written") \
            if cancel.is_set() else SnapshotsError(f"{path}: {first_line(str(exc))}")
    elif isinstance(exc, psycopg.OperationalError):
        result.result = "failed"
        if connection_lost(conn, exc):
            result.error = DatabaseUnavailable(f"{path}: lost the database: "
                                               f"{first_line(str(exc))}")
        else:  # the server refused this file: a limit (54xxx), a full disk (53100), ...
            result.error = SnapshotsError(f"{path}: {first_line(str(exc))}")
    elif isinstance(exc, psycopg.Error):
        result.result = "failed"
        result.error = SnapshotsError(f"{path}: {first_line(str(exc))}")
    else:
        return False
    return True


def connection_lost(conn: psycopg.Connection, exc: psycopg.OperationalError) -> bool:
    """Whether an OperationalError means the database went away, rather than that the server
    refused the statement (psycopg files SQLSTATE classes 53, 54, 55, 57 and 58 under
    OperationalError too: `tables can have at most 1600 columns` is one)."""
    state = exc.sqlstate or ""
    return conn.broken or conn.closed or not state or state.startswith("08") or \
        state in ("57P01", "57P02", "57P03")
