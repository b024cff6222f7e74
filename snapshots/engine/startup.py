"""What an importer does once, before its first file: the ledger migrated (or, for a dry
run, only checked not to be newer than this tool), the claims of owners that are gone
marked interrupted, and the tables their parallel loads left behind dropped."""

from __future__ import annotations

import logging

import psycopg

from snapshots import schema as ddl
from snapshots import store

log = logging.getLogger("snapshots.importer")  # the engine's one logger name, as logs show it


def ready_ledger(conn: psycopg.Connection, schema: str, *, dry_run: bool) -> None:
    if dry_run:
        ddl.check_not_newer(ddl.ledger_version(conn, schema), schema)
        return
    ddl.migrate(conn, schema)
    # Every table's dead claims, not only this one's: their leftover parallel-load tables
    # (dropped next) can be as large as a snapshot.
    for import_id in store.reap_interrupted(conn, schema):
        log.warning("marked import #%s as interrupted: its process went away", import_id)
    for name in store.drop_leftover_parts(conn, schema):
        log.warning("dropped %s.%s, left by a parallel load that did not finish", schema, name)
