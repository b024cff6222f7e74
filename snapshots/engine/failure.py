"""A failed import's record: what the ledger says about it, written even when the
connection died with the load."""

from __future__ import annotations

import logging
import threading

import psycopg

from snapshots import store
from snapshots.config import first_line
from snapshots.engine.connections import Connections
from snapshots.errors import DatabaseUnavailable, InterruptedImport, SnapshotsError, UsageError

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
