"""What the command line prints, read as a new user reads it (issue 13, point 11): one
state per file in `list FILE`, singular counts, one measurement of an import's time, the
seed form's errors like every other error, nulls for what a failed attempt never counted,
and examples in every command's --help."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from helpers import invoke_cli, run_cli

HEADER = "user_id,name,store_name,credit_limit\n"


def one_row_file(directory: Path, name: str = "snapshot_20230101.csv") -> Path:
    path = directory / name
    path.write_text(HEADER + "1,Jake,Best Berlin Burgers,10000.1\n")
    return path


def test_one_import_reads_the_same_everywhere(tmp_path: Path, cli_env: dict[str, str],
                                              db_url: str) -> None:
    path = one_row_file(tmp_path)
    result = invoke_cli("--database", db_url, "import", path, env=cli_env)
    assert result.returncode == 0, result.stderr
    match = re.match(r"imported snapshot_20230101\.csv: 1 row in ([0-9.]+)s \(#1\)",
                     result.stdout)
    assert match, result.stdout
    # The import's time is the record's: what `list` says it took, in every format.
    listed = invoke_cli("--database", db_url, "list", "--format", "json", env=cli_env)
    (record,) = json.loads(listed.stdout)
    assert f"{record['duration_seconds']:.2f}" == match[1], (result.stdout, record)
    table = invoke_cli("--database", db_url, "list", env=cli_env).stdout.splitlines()
    took = table[0].index("TOOK")
    assert table[1][took:].split()[0] == f"{match[1]}s", table
    # `list FILE`: the state once, then the record it comes from.
    state = invoke_cli("--database", db_url, "list", path, env=cli_env)
    assert state.returncode == 0, state.stderr
    assert re.fullmatch(rf"{re.escape(str(path))}\s+imported\s+#1\n", state.stdout), \
        state.stdout
    forgot = invoke_cli("--database", db_url, "forget", path.name, env=cli_env)
    assert forgot.stdout.splitlines() == ["forgot snapshot_20230101.csv (#1)", "deleted 1 row"]
    # A state that differs from the record's status still names both.
    state = invoke_cli("--database", db_url, "list", path, env=cli_env)
    assert re.fullmatch(rf"{re.escape(str(path))}\s+not_imported\s+#1 forgotten\n",
                        state.stdout), state.stdout


def test_sync_counts_one_row_in_the_singular(tmp_path: Path, cli_env: dict[str, str],
                                             db_url: str) -> None:
    one_row_file(tmp_path)
    # sync as a process: the service installs signal handlers and runs its own threads.
    result = run_cli("--database", db_url, "sync", "--data-dir", tmp_path, "--once",
                     "--settle", "0", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "imported snapshot_20230101.csv: 1 row in " in result.stderr, result.stderr


def test_a_failed_attempt_counted_no_rows_and_no_rejects(tmp_path: Path,
                                                         cli_env: dict[str, str],
                                                         db_url: str) -> None:
    path = tmp_path / "snapshot_20230101.csv"
    path.write_text("id,amount\n1,5\n")
    assert invoke_cli("--database", db_url, "import", path, env=cli_env).returncode == 0
    bad = tmp_path / "snapshot_20230102.csv"
    bad.write_text("id,amount\n1,lots\n")
    assert invoke_cli("--database", db_url, "import", bad, env=cli_env).returncode == 1
    listed = invoke_cli("--database", db_url, "list", "--all", "--format", "json", env=cli_env)
    records = {r["file"]: r for r in json.loads(listed.stdout)}
    failed = records[bad.name]
    assert failed["status"] == "failed"
    assert (failed["rows"], failed["rejected_rows"]) == (None, None)
    assert (records[path.name]["rows"], records[path.name]["rejected_rows"]) == (1, 0)
    schema = json.loads(resources.files("snapshots").joinpath("list.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(list(records.values()))
    as_csv = invoke_cli("--database", db_url, "list", "--all", "--format", "csv", env=cli_env)
    header, *rows = as_csv.stdout.splitlines()
    keys = header.split(",")
    failed_row = next(r for r in rows if bad.name in r).split(",")
    assert failed_row[keys.index("rejected_rows")] == ""


@pytest.mark.parametrize("args", [
    ["nowhere.csv"],  # the seed's form with a file that is not there
    ["--bogus", "FILE"],
    ["FILE", "--bogus"],  # the seed's form: `import`'s options
    ["import"],
    ["list", "--format", "yaml"],
])
def test_usage_errors_are_one_error_line_and_a_hint(tmp_path: Path, cli_env: dict[str, str],
                                                    args: list[str]) -> None:
    path = one_row_file(tmp_path)
    result = invoke_cli(*(str(path) if a == "FILE" else a for a in args), env=cli_env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert re.fullmatch(r"hint: see 'snapshots( \w+)? --help'", lines[1]), result.stderr
    assert "Usage:" not in result.stderr and "Error:" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["import"], ["list"], ["forget"], ["retry"], ["sync"],
                                     ["migrate"], ["db"]])
def test_every_command_help_has_examples(cli_env: dict[str, str], command: list[str]) -> None:
    result = invoke_cli(*command, "--help", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout, result.stdout
    examples = [line.strip() for line in result.stdout.splitlines()
                if line.strip().startswith(f"snapshots {command[0]} ")
                or line.strip().startswith("snapshots --database")]
    assert examples, result.stdout
