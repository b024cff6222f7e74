"""What sync's loop does now and then besides files: look at failures again (`snapshots
retry` may have asked for them), refresh the backlog gauges, apply --retention-days."""

from __future__ import annotations

import logging

from snapshots import history
from snapshots import schema as ddl
from snapshots.backlog import Backlog, Clock
from snapshots.dblink import PING_SECONDS, LedgerView
from snapshots.metrics import Metrics

# The JSON log names the logger: the service's lines keep the one they always had.
log = logging.getLogger("snapshots.sync")


class Chores:
    """Each chore at its own pace, whatever wakes the loop (a 10,000-file backlog wakes it
    after every file)."""

    def __init__(self, rescan: float, retention_days: int | None, metrics: Metrics,
                 clock: Clock) -> None:
        self.rescan = rescan
        self.retention_days = retention_days
        self.metrics = metrics
        self.clock = clock
        self._reopened_at = clock.monotonic()
        self._gauged_at = float("-inf")
        self._retained_at = float("-inf")

    def reopen(self, backlog: Backlog) -> None:
        now = self.clock.monotonic()
        if now - self._reopened_at >= min(self.rescan, PING_SECONDS):
            self._reopened_at = now
            backlog.reopen_failures()

    def relisted(self) -> None:
        self._gauged_at = float("-inf")  # a new listing: the gauges follow at once

    def gauges(self, backlog: Backlog) -> None:
        self.metrics.pending.set(len(backlog.pending))
        now = self.clock.monotonic()
        if backlog.pending and now - self._gauged_at < 1.0:
            return  # the oldest file's age needs a walk over the backlog: once a second
        self._gauged_at = now
        self.metrics.oldest_pending_age.set(backlog.oldest_pending_age())

    def retention(self, ledger: LedgerView, *, force: bool = False) -> None:
        days = self.retention_days
        if days is None:
            return
        now = self.clock.monotonic()
        if not force and now - self._retained_at < min(60.0, self.rescan):
            return
        self._retained_at = now
        info = ddl.describe_table(ledger.conn, ledger.schema, ledger.table)
        if info is None or not info.has_snapshot_id:
            return  # retention deletes whole snapshots: append mode only
        result = history.forget(ledger.conn, ledger.schema, ledger.table,
                                older_than_days=days, delete_rows=True)
        for record in result.records:
            log.info("forgot %s (#%d): older than %d days", record.file_name, record.id, days)
