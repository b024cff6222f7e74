"""Helpers shared by the test modules (imported by conftest and tests as ``helpers``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

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
