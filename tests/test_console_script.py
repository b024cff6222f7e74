"""The installed console script (`snapshots = "snapshots.cli:main"`), once per command.

The rest of the suite runs the CLI in process (``snapshots.cli.run``) or as
``python -m snapshots``; these run the real `snapshots` executable that pip installed, so the
entry point, ``main``'s exit codes and the process around it stay covered for every command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import in_ci


def console_script() -> str:
    """The `snapshots` executable installed next to this interpreter (else on PATH)."""
    beside = Path(sys.executable).with_name("snapshots")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("snapshots")
    if found is None:
        message = "the snapshots console script is not installed (pip install -e .)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def script(*args: str | os.PathLike[str], env: dict[str, str],
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), *(os.fspath(arg) for arg in args)], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def sample(directory: Path, name: str = "snapshot_20230101.csv",
           content: str = "id,amount\n1,5\n") -> Path:
    path = directory / name
    path.write_text(content)
    return path


def test_import_exits_0_and_says_what_it_loaded(tmp_path: Path, cli_env: dict[str, str],
                                                db_url: str) -> None:
    result = script("--database", db_url, "import", sample(tmp_path), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "imported snapshot_20230101.csv: 1 row in " in result.stdout


def test_import_of_a_bad_file_exits_1(tmp_path: Path, cli_env: dict[str, str],
                                      db_url: str) -> None:
    bad = sample(tmp_path, content="id,amount\n1,5\n2,3,4\n")
    result = script("--database", db_url, "--table", "t", "import", "--mode", "append", bad,
                    env=cli_env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")


def test_the_seed_form_imports(tmp_path: Path, cli_env: dict[str, str], db_url: str) -> None:
    result = script("--database", db_url, sample(tmp_path), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "imported snapshot_20230101.csv" in result.stdout


def test_list_exits_0(cli_env: dict[str, str], db_url: str) -> None:
    result = script("--database", db_url, "list", "--format", "json", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_forget_of_an_unknown_name_exits_1(cli_env: dict[str, str], db_url: str) -> None:
    result = script("--database", db_url, "forget", "nope.csv", env=cli_env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "nope.csv" in result.stderr


def test_retry_with_nothing_failed_exits_0(cli_env: dict[str, str], db_url: str) -> None:
    result = script("--database", db_url, "retry", "--failed", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "nothing failed: nothing to retry" in result.stdout


def test_sync_once_exits_0(tmp_path: Path, cli_env: dict[str, str], db_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    sample(data)
    result = script("--database", db_url, "sync", "--data-dir", data, "--once", "--settle", "0",
                    env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "imported snapshot_20230101.csv: 1 row in " in result.stderr


def test_migrate_exits_0(cli_env: dict[str, str], db_url: str) -> None:
    result = script("--database", db_url, "migrate", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ledger in schema public migrated to version ")


def test_db_status_of_a_stopped_server_exits_1(cli_env: dict[str, str]) -> None:
    """A command's own sys.exit(1) comes out as the process's exit code."""
    result = script("db", "status", env=cli_env)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "running: False" in result.stdout


def test_a_usage_error_exits_2(cli_env: dict[str, str]) -> None:
    result = script("import", "--bogus", env=cli_env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ")
    assert "hint: see 'snapshots import --help'" in result.stderr


def test_version_exits_0(cli_env: dict[str, str]) -> None:
    result = script("--version", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("snapshots, version ")
