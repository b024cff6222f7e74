"""The embedded PostgreSQL default, with real server processes and real client processes.

Each test gets its own data directory (through ``cli_env``), so the servers here are
independent of the session's test server and of the developer's own embedded server.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import run_cli, wait_until

from snapshots import embedded

# A process using the embedded server the way a snapshots command does: it acquires (or, with
# "start", keeps) the server, reports, and with "hold" stays alive until its stdin closes.
WORKER = """
import json, os, sys
from snapshots import embedded
from snapshots.errors import DatabaseUnavailable

mode, hold = sys.argv[1], sys.argv[2] == "hold"
try:
    uri = embedded.start() if mode == "start" else embedded.acquire()
except DatabaseUnavailable as error:
    print(json.dumps({"error": str(error), "hint": error.hint}), flush=True)
    sys.exit(3)
print(json.dumps({"pid": os.getpid(), "postmaster": embedded.status().pid, "uri": uri}), flush=True)
if hold:
    sys.stdin.read()
"""

TIMEOUT = 60  # generous for a loaded 2-core CI machine; a healthy run takes a second or two


class Worker:
    """A client process; ``ready()`` returns what it printed once it holds the server."""

    def __init__(self, env: dict[str, str], mode: str, *, hold: bool) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, mode, "hold" if hold else "exit"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def ready(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"worker {self.process.pid} did not report within {TIMEOUT} s")
        if line is None:
            self.process.wait(TIMEOUT)
            assert self.process.stderr is not None
            pytest.fail(
                f"worker exited with {self.process.returncode}: {self.process.stderr.read()}"
            )
        return json.loads(line)

    def release(self) -> int:
        """Let it exit normally (atexit handlers run) and wait until it has."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: no atexit handler runs, its pid stays in the server's registry."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)


@pytest.fixture
def embedded_dir(cli_env: dict[str, str]) -> Path:
    return Path(cli_env[embedded.DATA_DIR_ENV])


@pytest.fixture
def spawn(cli_env: dict[str, str]) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def spawn(mode: str = "acquire", *, hold: bool = True) -> Worker:
        worker = Worker(cli_env, mode, hold=hold)
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        if worker.process.poll() is None:
            worker.kill()
        for stream in (worker.process.stdin, worker.process.stdout, worker.process.stderr):
            if stream is not None:
                stream.close()


def running(directory: Path) -> bool:
    return embedded.status(data_dir=directory).running


def stopped(directory: Path) -> bool:
    return not running(directory)


def test_url_and_status_never_start_it(embedded_dir: Path) -> None:
    assert embedded.url(data_dir=embedded_dir) is None
    state = embedded.status(data_dir=embedded_dir)
    assert (state.running, state.pid, state.uri, state.kept, state.users) == (
        False,
        None,
        None,
        False,
        [],
    )
    assert state.data_dir == embedded_dir.resolve()
    assert not (embedded_dir / "pgdata").exists()


def test_db_url_of_a_stopped_server_is_exit_3(cli_env: dict[str, str],
                                               embedded_dir: Path) -> None:
    """No server to reach: the exit code of a database that cannot be reached."""
    result = run_cli("db", "url", env=cli_env)
    assert result.returncode == 3
    assert result.stderr.startswith("error: the embedded PostgreSQL is not running")
    assert not (embedded_dir / "pgdata").exists()


def test_concurrent_acquire_shares_one_server_and_stops_after_the_last(
    embedded_dir: Path, spawn: Callable[..., Worker]
) -> None:
    first, second = spawn(), spawn()  # both race through initdb and start
    a, b = first.ready(), second.ready()

    assert a["postmaster"] == b["postmaster"]
    assert a["uri"] == b["uri"] == embedded.url(data_dir=embedded_dir)
    state = embedded.status(data_dir=embedded_dir)
    assert state.running and state.pid == a["postmaster"] and not state.kept
    assert sorted(state.users) == sorted([a["pid"], b["pid"]])
    with psycopg.connect(a["uri"]) as conn:
        assert conn.execute("SELECT current_database(), current_user").fetchone() == (
            "postgres",
            "postgres",
        )

    assert first.release() == 0
    state = embedded.status(data_dir=embedded_dir)
    assert state.running and state.pid == a["postmaster"]
    assert state.users == [b["pid"]]

    assert second.release() == 0
    wait_until(lambda: stopped(embedded_dir), TIMEOUT, message="the server to stop")
    assert embedded.url(data_dir=embedded_dir) is None
    assert embedded.status(data_dir=embedded_dir).users == []


def test_start_keeps_it_running_until_stop(
    embedded_dir: Path, spawn: Callable[..., Worker]
) -> None:
    starter = spawn("start", hold=False)
    started = starter.ready()
    assert starter.release() == 0  # gone, and the server stays
    state = embedded.status(data_dir=embedded_dir)
    assert state.running and state.kept and state.pid == started["postmaster"]
    assert state.users == []

    user = spawn("acquire", hold=False)
    assert user.ready()["postmaster"] == started["postmaster"]
    assert user.release() == 0
    assert running(embedded_dir), "an ordinary user must not stop a kept server"

    assert embedded.stop(data_dir=embedded_dir) is True
    wait_until(lambda: stopped(embedded_dir), TIMEOUT, message="the server to stop")
    assert not embedded.status(data_dir=embedded_dir).kept
    assert embedded.stop(data_dir=embedded_dir) is False


def test_sigkilled_users_do_not_keep_it_up(
    embedded_dir: Path, spawn: Callable[..., Worker]
) -> None:
    killed, survivor = spawn(), spawn()
    killed_pid = killed.ready()["pid"]
    survivor.ready()
    killed.kill()
    assert embedded.status(data_dir=embedded_dir).users == [survivor.process.pid]

    # The survivor's exit prunes the dead pid and so counts itself as the last user.
    assert survivor.release() == 0
    wait_until(lambda: stopped(embedded_dir), TIMEOUT, message="the server to stop")
    registry = json.loads((embedded_dir / "pgdata" / ".handle_pids.json").read_text())
    assert killed_pid not in registry

    # The only user killed: nobody is left to stop the server, until the next user comes
    # and goes.
    lonely = spawn()
    lonely.ready()
    lonely.kill()
    assert running(embedded_dir)
    passer_by = spawn("acquire", hold=False)
    passer_by.ready()
    assert passer_by.release() == 0
    wait_until(lambda: stopped(embedded_dir), TIMEOUT, message="the server to stop")


def test_a_server_that_cannot_start_is_one_clear_line(
    embedded_dir: Path, spawn: Callable[..., Worker]
) -> None:
    first = spawn("acquire", hold=False)
    first.ready()
    assert first.release() == 0
    wait_until(lambda: stopped(embedded_dir), TIMEOUT, message="the server to stop")
    # As if the data directory were left by an older PostgreSQL major version.
    (embedded_dir / "pgdata" / "PG_VERSION").write_text("9\n")

    broken = spawn("acquire", hold=False)
    report = broken.ready()
    assert broken.release() == 3
    assert report["error"].startswith("embedded PostgreSQL could not start: FATAL:")
    assert "incompatible" in report["error"]
    assert "\n" not in report["error"]
    assert str(embedded_dir / "pgdata" / "log") in report["hint"]
    assert stopped(embedded_dir)
