"""sync's database link in process: connect and migrate, lose it, back off (SPEC section 5:
database down means capped exponential backoff, `snapshots_database_up 0`, /readyz failing)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg
import pytest

from snapshots.dblink import BACKOFF_CAP, BACKOFF_START, DatabaseLink
from snapshots.metrics import Metrics


def up_gauge(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("snapshots_database_up")


def test_connects_migrates_and_reads_the_ledger(db_url: str,
                                                db_conn: psycopg.Connection) -> None:
    metrics = Metrics()
    link = DatabaseLink(db_url, table="snapshots", schema=None, metrics=metrics)
    assert not link.up and link.ledger is None
    assert link.check()
    assert link.up and up_gauge(metrics) == 1 and link.error is None
    assert link.schema == "public"
    assert link.ledger is not None and link.ledger.memory == {}
    assert db_conn.execute("SELECT to_regclass('snapshot_imports') IS NOT NULL").fetchone() \
        == (True,)
    assert link.check(), "a second check before the ping is due is free"
    link.close()
    assert link.ledger is None


def test_a_lost_database_backs_off_exponentially_up_to_the_cap(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    link = DatabaseLink(db_url, table="snapshots", schema=None, metrics=metrics)
    assert link.check()
    conn = link.ledger.conn if link.ledger else None
    waits = []
    with caplog.at_level(logging.WARNING, logger="snapshots.sync"):
        for _ in range(9):
            link.lost(psycopg.OperationalError("server closed the connection\nmore"))
            waits.append(link.next_check() - time.monotonic())
    assert conn is not None and conn.closed
    assert not link.up and link.ledger is None and up_gauge(metrics) == 0
    assert link.error == "server closed the connection"
    expected = [min(BACKOFF_CAP, BACKOFF_START * 2 ** n) for n in range(9)]
    assert expected[-1] == BACKOFF_CAP
    assert waits == pytest.approx(expected, abs=0.2)
    assert caplog.text.count("database unavailable") == 1, "said once per outage"
    assert not link.check(), "not before the backoff is over"


def test_an_unreachable_server_is_down_not_an_error(tmp_path: Path) -> None:
    metrics = Metrics()
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path / 'no-server'}"
    link = DatabaseLink(nowhere, table="snapshots", schema=None, metrics=metrics)
    assert not link.check()
    assert not link.up and up_gauge(metrics) == 0
    assert link.error
    assert link.next_check() - time.monotonic() == pytest.approx(BACKOFF_START, abs=0.2)
