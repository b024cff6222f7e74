"""A batch's one transaction (snapshots.engine.batch), each file in a savepoint of its own.

Per file, one round trip besides its COPY: the savepoint and the `set_config` that tags
its rows go out with the release of the savepoint before, and the loaded files' records
flip to `imported` in one statement sent with the COMMIT, each with its own start and end
(the server's clock when it began, and when the next one did), so `list`'s TOOK is the
file's and not its batch's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from snapshots import schema as ddl
from snapshots import store
from snapshots.engine.context import Loaded


@dataclass
class _Loaded:
    import_id: int
    loaded: Loaded
    same_content_as: int | None
    recorded: Callable[[float], None]  # told the seconds its record says, once committed
    started: dt.datetime
    finished: dt.datetime | None = None  # None: when the record is flipped


class BatchTransaction:
    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.since: float | None = None  # when the open transaction began (monotonic)
        self.in_file = False  # a file's savepoint is open
        self.started: dt.datetime | None = None  # the server's clock at this file's start
        self.loaded: list[_Loaded] = []  # since the last commit

    def age(self) -> float:
        return 0.0 if self.since is None else time.monotonic() - self.since

    def begin_file(self, import_id: int) -> None:
        statements: list[sql.Composable] = []
        if self.since is None:
            statements.append(sql.SQL("BEGIN"))  # this is where a batch's transaction starts
            self.since = time.monotonic()
        elif self.in_file:
            statements.append(sql.SQL("RELEASE SAVEPOINT snapshots_file"))
        statements += [sql.SQL("SAVEPOINT snapshots_file"), sql.SQL(  # whose rows these are
            f"SELECT set_config('{ddl.IMPORT_ID_SETTING}', '{int(import_id)}', true), "
            "clock_timestamp()")]
        cur = self.conn.execute(sql.SQL("; ").join(statements))
        while cur.nextset():
            pass  # the last result is the SELECT's
        row = cur.fetchone()
        assert row is not None
        if self.loaded and self.loaded[-1].finished is None:
            self.loaded[-1].finished = row[1]  # the file before ended when this one began
        self.in_file = True
        self.started = row[1]

    def file_loaded(self, import_id: int, loaded: Loaded, same_content_as: int | None,
                    recorded: Callable[[float], None]) -> None:
        assert self.started is not None
        self.loaded.append(_Loaded(import_id, loaded, same_content_as, recorded, self.started))

    def rollback_file(self) -> None:
        self.in_file = False
        if not self.conn.broken and not self.conn.closed:
            # When this fails too, the transaction is lost: the caller aborts it.
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("ROLLBACK TO SAVEPOINT snapshots_file; "
                                  "RELEASE SAVEPOINT snapshots_file")

    def commit(self) -> None:
        """The loaded files' records say `imported`, and their rows become visible with
        them."""
        if self.since is None:
            return
        loaded, self.loaded = self.loaded, []
        statements: list[sql.Composable] = []
        if self.in_file:
            statements.append(sql.SQL("RELEASE SAVEPOINT snapshots_file"))
        if loaded:
            statements.append(store.mark_many_imported_sql(self.schema, [
                (f.import_id, f.loaded.rows, f.loaded.rejected, f.same_content_as, f.started,
                 f.finished) for f in loaded]))
        statements.append(sql.SQL("COMMIT"))
        cur = self.conn.execute(sql.SQL("; ").join(statements))
        self.since, self.in_file = None, False
        took: dict[int, float] = {}
        while True:
            if cur.description is not None:
                took.update((int(i), store.took_seconds(t)) for i, t in cur.fetchall())
            if not cur.nextset():
                break
        for f in loaded:
            f.recorded(took.get(f.import_id, 0.0))

    def abort(self) -> None:
        self.since, self.in_file, self.loaded = None, False, []
        if not self.conn.broken and not self.conn.closed:
            with contextlib.suppress(psycopg.Error):  # the connection went with it
                self.conn.execute("ROLLBACK")
