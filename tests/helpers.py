"""Helpers shared by the test modules (imported by conftest and tests as ``helpers``)."""

from __future__ import annotations

import contextlib
import io
import json
import locale
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

T = TypeVar("T")


def in_ci() -> bool:
    """CI sets CI=true; there a missing prerequisite is a broken pipeline, not a reason to skip."""
    return os.environ.get("CI", "").lower() == "true"


def require_tool(name: str) -> str:
    """The path of executable ``name``; skip the test without it, but fail under CI=true.

    A developer without promtool should still be able to run the rest of the suite; CI is
    supposed to have everything, and a silent skip there would hide a broken install step.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (not on PATH)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m snapshots ARGS`` as a real process, with text stdout/stderr captured.

    Pass the ``cli_env`` fixture as ``env``: it keeps the developer's own database settings
    and embedded server out of the test.
    """
    return subprocess.run(
        [sys.executable, "-m", "snapshots", *(os.fspath(arg) for arg in args)],
        env=dict(env) if env is not None else None,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        # Without input, a CLI that reads stdin must see EOF rather than pytest's terminal.
        stdin=subprocess.DEVNULL if input is None else None,
    )


def invoke_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``snapshots ARGS`` run in this process (``snapshots.cli.run``), as ``run_cli`` sees it.

    The same environment handling as ``run_cli``: ``env`` (the ``cli_env`` fixture) replaces
    os.environ for the call (TZ included), stdin is empty unless ``input`` is given, stdout
    and stderr are captured as text with universal newlines, and ``cwd`` is the working
    directory. What the CLI changes in the process is put back afterwards: environment,
    working directory, standard streams, logging configuration, signal handlers. The
    embedded server is refused (it registers this process as a user and stops at exit): a
    test that needs it runs the CLI as a process with ``run_cli``. So do tests of signals,
    kills, timeouts and the console script itself.
    """
    from snapshots import cli, embedded

    argv = [os.fspath(arg) for arg in args]
    encoding = locale.getpreferredencoding(False)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding=encoding, write_through=True)
    stderr = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="backslashreplace",
                              write_through=True)
    stdin = io.TextIOWrapper(io.BytesIO((input or "").encode(encoding)), encoding=encoding)

    def no_embedded(*_args: object, **_kwargs: object) -> str:
        pytest.fail("the CLI in process reached the embedded server: give it a --database, "
                    "or run it as a process with run_cli", pytrace=False)

    threads = set(threading.enumerate())
    with pytest.MonkeyPatch.context() as patch, _logging_kept(), _signals_kept():
        if env is not None:
            for key in [key for key in os.environ if key not in env]:
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
        # A process reads TZ when it starts: here the C library is told of the change (and
        # of its undoing, below).
        time.tzset()
        if cwd is not None:
            patch.chdir(cwd)
        patch.setattr(sys, "stdin", stdin)
        patch.setattr(sys, "stdout", stdout)
        patch.setattr(sys, "stderr", stderr)
        # What a process with piped output sees of its terminal (shutil.get_terminal_size,
        # hence Click's help width): none, so $COLUMNS or 80 columns, not pytest's terminal.
        patch.setattr(sys, "__stdout__", stdout)
        patch.setattr(sys, "__stderr__", stderr)
        patch.setattr(embedded, "acquire", no_embedded)
        patch.setattr(embedded, "start", no_embedded)
        code = cli.run(argv)
    time.tzset()
    for thread in set(threading.enumerate()) - threads:
        thread.join(timeout=10)
        if thread.is_alive():
            pytest.fail(f"snapshots {' '.join(argv)} left thread {thread.name} running",
                        pytrace=False)
    return subprocess.CompletedProcess(["snapshots", *argv], code, _text(stdout, encoding),
                                       _text(stderr, encoding))


def _text(stream: io.TextIOWrapper, encoding: str) -> str:
    """What ``subprocess.run(text=True)`` would have read from the stream's bytes."""
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return io.TextIOWrapper(io.BytesIO(raw), encoding=encoding, newline=None).read()


@contextlib.contextmanager
def _logging_kept() -> Iterator[None]:
    """Every logger's handlers, level, propagation as they were (the CLI configures them)."""
    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict
                                      .values() if isinstance(logger, logging.Logger))]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled)
             for logger in loggers]
    try:
        yield
    finally:
        for logger, handlers, level, propagate, disabled in saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
        known = {id(logger) for logger in loggers}
        for logger in logging.root.manager.loggerDict.values():
            if isinstance(logger, logging.Logger) and id(logger) not in known:
                logger.handlers.clear()
                logger.setLevel(logging.NOTSET)


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum)
             for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


class Cli:
    """The CLI against one test database, files in one directory, and a look at the result.

    ``run`` runs it in process (``invoke_cli``), ``process`` as a real process (``run_cli``);
    both pass ``--database DB`` first, use the harness's environment unless given one and its
    directory as the working directory, and assert the exit code unless ``code`` is None.
    ``conn`` is the test's connection; without one, each look opens its own.
    """

    def __init__(self, db_url: str, env: dict[str, str], directory: Path,
                 conn: psycopg.Connection | None = None) -> None:
        self.db_url = db_url
        self.env = env
        self.dir = directory
        self.conn = conn

    def run(self, *args: str | os.PathLike[str], code: int | None = 0,
            env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`snapshots --database DB ARGS...` in process."""
        result = invoke_cli("--database", self.db_url, *args, env=env or self.env,
                            input=input, cwd=self.dir)
        return self._checked(result, code)

    def process(self, *args: str | os.PathLike[str], code: int | None = 0,
                env: dict[str, str] | None = None,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        """`python -m snapshots --database DB ARGS...` as a real process."""
        result = run_cli("--database", self.db_url, *args, env=env or self.env, input=input,
                         cwd=self.dir)
        return self._checked(result, code)

    @staticmethod
    def _checked(result: subprocess.CompletedProcess[str],
                 code: int | None) -> subprocess.CompletedProcess[str]:
        if code is not None:
            assert result.returncode == code, (
                f"exit {result.returncode}, expected {code}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        """`snapshots list --format json ARGS...`, parsed."""
        return json.loads(self.run("list", "--format", "json", *args, code=code).stdout)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
        return path

    def rows(self, query: str | sql.Composable,
             params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.conn is not None:
            return self.conn.execute(query, params).fetchall()
        with psycopg.connect(self.db_url) as conn:
            return conn.execute(query, params).fetchall()

    def scalar(self, query: str | sql.Composable, params: Sequence[Any] = ()) -> Any:
        [row] = self.rows(query, params)[:1] or [None]
        assert row is not None
        return row[0]

    def ledger(self, schema: str = "public") -> list[dict[str, Any]]:
        query = sql.SQL("SELECT * FROM {} ORDER BY id").format(
            sql.Identifier(schema, "snapshot_imports"))
        if self.conn is not None:
            with self.conn.cursor(row_factory=dict_row) as cur:
                return cur.execute(query).fetchall()
        with psycopg.connect(self.db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query).fetchall()

    def exists(self, name: str) -> bool:
        return bool(self.scalar("SELECT to_regclass(%s) IS NOT NULL", (name,)))

    def column_types(self, table: str = "snapshots", schema: str = "public") -> dict[str, str]:
        return dict(self.rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table)))

    def data(self, table: str = "snapshots", columns: str = "*",
             order: str = "snapshot_id, 1") -> list[tuple[Any, ...]]:
        return self.rows(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(columns), sql.Identifier(table), sql.SQL(order)))


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    The only sanctioned way for tests to wait for another process: a deadline rather than a
    guessed sleep, so the suite is both fast on a quiet machine and patient on a busy one.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(interval)


def conninfo_to_uri(conninfo: str, **overrides: str) -> str:
    """Turn any libpq conninfo (URI or ``key=value``), with overrides, into a URI.

    The CLI is exercised with URIs because that is what users paste; a socket directory or
    several hosts go into the query string, where libpq accepts any parameter.
    """
    params = {
        key: str(value)
        for key, value in conninfo_to_dict(conninfo, **overrides).items()
        if value is not None
    }
    user = params.pop("user", None)
    password = params.pop("password", None) if user is not None else None
    dbname = params.pop("dbname", "")
    netloc = ""
    host = params.get("host")
    if host and not host.startswith(("/", "@")) and "," not in host and not Path(host).drive:
        params.pop("host")
        netloc = f"[{host}]" if ":" in host else host
        port = params.get("port")
        if port and "," not in port:
            params.pop("port")
            netloc += f":{port}"
    userinfo = ""
    if user is not None:
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    uri = f"postgresql://{userinfo}{netloc}/{quote(dbname, safe='')}"
    if params:
        uri += "?" + urlencode(params, quote_via=quote, safe="/")
    return uri


def start_cli(*args: str | os.PathLike[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``python -m snapshots ARGS`` started in the background (to signal or kill it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "snapshots", *(os.fspath(a) for a in args)], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def copy_in_progress(conn: psycopg.Connection) -> int:
    """Rows the server's COPY has taken so far in this database (0 when none runs)."""
    row = conn.execute(
        "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy "
        "WHERE datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def other_sessions(conn: psycopg.Connection) -> int:
    """Client sessions in this database other than ``conn``'s own."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").fetchone()
    return int(row[0]) if row else 0


def write_rows(path: Path, header: str, rows: int, line: Callable[[int], str]) -> Path:
    """A CSV of `header` and `line(i)` for i in 1..rows, written in batches (flat memory)."""
    with path.open("wb") as out:
        out.write(header.encode())
        for start in range(1, rows + 1, 100_000):
            out.write("".join(line(i) for i in range(start, min(start + 100_000, rows + 1)))
                      .encode())
    return path


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (for a server a test starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
