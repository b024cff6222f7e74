"""`make test` on a shared machine: pytest sessions started at once each own their
directories, and a server that dies is one clear failure (issue 13).

Each check runs real pytest sessions of a small module written here, with this suite's
conftest loaded as a plugin (so the fixtures under test are the real ones).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_until

TESTS = Path(__file__).resolve().parent
# The suite's own settings (markers, asyncio scope), as `make test` runs with them.
PYTEST = [sys.executable, "-m", "pytest", "-c", str(TESTS.parent / "pyproject.toml"),
          "-p", "conftest", "-p", "no:cacheprovider", "-q"]

# The first test waits for a go from outside while its session is running; the second only
# needs the server. Handshake files live in HANDSHAKE (one directory per session).
INNER = '''
import os, time
from pathlib import Path
import psycopg

HANDSHAKE = Path(os.environ["HANDSHAKE"])


def test_first(db_url, tmp_path):
    with psycopg.connect(db_url) as conn:
        data = conn.execute("SHOW data_directory").fetchone()[0]
    (HANDSHAKE / "server").write_text(data)
    (HANDSHAKE / "basetemp").write_text(str(tmp_path.parent))
    (HANDSHAKE / "started").touch()
    deadline = time.monotonic() + 120
    while not (HANDSHAKE / "go").exists():
        assert time.monotonic() < deadline, "no go within 120 s"
        time.sleep(0.05)


def test_second(db_url):
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_third(db_url):
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
'''


def start_session(module: Path, handshake: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    handshake.mkdir()
    return subprocess.Popen(
        [*PYTEST, str(module)], cwd=module.parent, env={**env, "HANDSHAKE": str(handshake)},
        text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def inner(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The inner module, and an environment whose shared pytest temp root is private to this
    test (PYTEST_DEBUG_TEMPROOT): what the sessions would share on a real machine."""
    module = tmp_path / "inner" / "test_inner.py"
    module.parent.mkdir()
    module.write_text(INNER)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "SNAPSHOTS_TEST_DATABASE"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    shared = tmp_path / "shared-temproot"
    shared.mkdir()
    env["PYTEST_DEBUG_TEMPROOT"] = str(shared)
    own = tmp_path / "tmpdir"
    own.mkdir()
    env["TMPDIR"] = str(own)
    return module, env


def test_two_sessions_at_once_each_own_their_directories(
        tmp_path: Path, inner: tuple[Path, dict[str, str]],
        procs: list[subprocess.Popen[str]]) -> None:
    module, env = inner
    shared = Path(env["PYTEST_DEBUG_TEMPROOT"])
    first = start_session(module, tmp_path / "one", env)
    second = start_session(module, tmp_path / "two", env)
    procs += [first, second]
    for name in ("one", "two"):
        wait_until(lambda name=name: (tmp_path / name / "started").exists(), timeout=120,
                   message=f"session {name} to start its server")
    servers = {(tmp_path / n / "server").read_text() for n in ("one", "two")}
    basetemps = {(tmp_path / n / "basetemp").read_text() for n in ("one", "two")}
    assert len(servers) == 2 and len(basetemps) == 2
    # What another session's clean-up of the shared temp root did to a running session:
    # everything in it goes while both are still running. Neither may depend on it.
    for entry in shared.iterdir():
        subprocess.run(["rm", "-rf", str(entry)], check=True)
    for name in ("one", "two"):
        (tmp_path / name / "go").touch()
    for proc in (first, second):
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out
        assert "3 passed" in out, out
    # Each run cleaned up after itself.
    for directory in servers | basetemps:
        assert not Path(directory).exists(), directory


def test_a_server_that_dies_is_one_clear_failure(
        tmp_path: Path, inner: tuple[Path, dict[str, str]],
        procs: list[subprocess.Popen[str]]) -> None:
    module, env = inner
    session = start_session(module, tmp_path / "one", env)
    procs.append(session)
    wait_until(lambda: (tmp_path / "one" / "started").exists(), timeout=120,
               message="the session to start its server")
    data = Path((tmp_path / "one" / "server").read_text())
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, 9)  # the server dies while the session runs
    wait_until(lambda: not _alive(postmaster), timeout=30, message="the server to die")
    (tmp_path / "one" / "go").touch()
    out, _ = session.communicate(timeout=180)
    assert session.returncode == 1, out
    # One failed test, then one message that names the server and its log; no error per
    # remaining test.
    assert "1 error" in out or "1 failed" in out, out
    assert "passed, 2 errors" not in out and "2 errors" not in out, out
    assert f"the test PostgreSQL server (embedded, data directory {data}) is not answering" \
        in out, out
    assert f"its log {data / 'log'}" in out, out


def test_an_external_server_that_cannot_be_reached_is_one_message(
        tmp_path: Path, inner: tuple[Path, dict[str, str]]) -> None:
    module, env = inner
    env = {**env, "SNAPSHOTS_TEST_DATABASE": "postgresql://ann:s3cr3t@127.0.0.1:1/postgres"}
    (tmp_path / "one").mkdir()
    result = subprocess.run(
        [*PYTEST, str(module)], cwd=module.parent, env={**env, "HANDSHAKE": str(tmp_path / "one")},
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert out.count("is not answering") == 1, out
    assert "SNAPSHOTS_TEST_DATABASE: 127.0.0.1:1/postgres" in out, out
    assert "error" not in out.lower().replace("error:", ""), out
    assert "s3cr3t" not in out


def test_a_run_sweeps_ended_runs_beyond_the_newest_three(
        tmp_path: Path, inner: tuple[Path, dict[str, str]]) -> None:
    """Failed runs keep their files, but /tmp must not fill up: a new run removes those of
    ended runs beyond the newest three, and never a running one's or an unknown one's."""
    module, env = inner
    own = Path(env["TMPDIR"])
    ended = []
    for age in range(5):  # ended runs: a lock file nobody holds, oldest last
        directory = own / f"snapshots-tests-ended{age}"
        (directory / "tmp").mkdir(parents=True)
        (directory / ".lock").touch()
        os.utime(directory, (time.time() - 60 * (age + 1),) * 2)
        ended.append(directory)
    running = own / "snapshots-tests-running"
    (running / "tmp").mkdir(parents=True)
    unknown = own / "snapshots-tests-nolock"
    (unknown / "tmp").mkdir(parents=True)
    trivial = module.parent / "test_trivial.py"
    trivial.write_text("def test_nothing():\n    pass\n")
    with (running / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a session that still runs
        result = subprocess.run([*PYTEST, str(trivial)], cwd=module.parent, env=env,
                                capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [d.exists() for d in ended] == [True, True, True, False, False]
    assert running.exists() and unknown.exists()
    # The run itself left nothing behind.
    assert sorted(p.name for p in own.iterdir()) == sorted(
        [d.name for d in ended[:3]] + [running.name, unknown.name])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
