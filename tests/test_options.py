"""The loading options' builder (snapshots.options.build_import_options): the rules between
options, called as a library (no Click, no database), and import and sync seeing the same
one-line error for them."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import invoke_cli

from snapshots.errors import ExitCode, UsageError
from snapshots.options import PART_MIN_BYTES, ImportOptions, build_import_options


def usage_error(**options: object) -> UsageError:
    with pytest.raises(UsageError) as caught:
        build_import_options(**options)  # type: ignore[arg-type]
    assert caught.value.exit_code is ExitCode.USAGE
    return caught.value


def test_the_defaults_are_import_options_defaults() -> None:
    built = build_import_options()
    assert built == ImportOptions(csv=built.csv)
    assert built.part_size == PART_MIN_BYTES
    # No --delimiter: each file's own is detected, starting from a comma.
    assert (built.csv.delimiter, built.csv.detect_delimiter, built.csv.header) == (",", True, True)


@pytest.mark.parametrize("on_error", ["abort", None])
def test_max_rejects_needs_on_error_skip(on_error: str | None) -> None:
    options: dict[str, object] = {"max_rejects": 3}
    if on_error is not None:
        options["on_error"] = on_error
    assert str(usage_error(**options)) == "--max-rejects goes with --on-error skip"


@pytest.mark.parametrize("limit", [0, 5])
def test_max_rejects_with_skip_is_kept(limit: int) -> None:
    built = build_import_options(on_error="skip", max_rejects=limit)
    assert (built.on_error, built.max_rejects) == ("skip", limit)


def test_each_value_is_checked_before_the_rules_between_them() -> None:
    # A wrong value is the first thing to fix; the combination may be right once it is.
    error = usage_error(max_rejects=1, types=["user_id"])
    assert str(error) == "--type 'user_id': expected COL=TYPE, e.g. --type user_id=bigint"
    assert str(usage_error(max_rejects=1, mode="merge")) == \
        "--mode must be auto, append or upsert, not 'merge'"


@pytest.mark.parametrize(("options", "message"), [
    ({"no_header": True}, "--no-header needs --columns A,B,..."),
    ({"columns": "a,b"}, "--columns goes with --no-header"),
    ({"delimiter": ";", "quote": ";"}, "--delimiter and --quote must differ"),
    ({"null": "a,b", "delimiter": ","}, "--null must not contain the delimiter, the quote or "
                                        "a line break"),
])
def test_the_csv_options_rules_hold_through_the_builder(options: dict[str, object],
                                                        message: str) -> None:
    assert str(usage_error(**options)) == message


def test_command_line_spellings_are_parsed() -> None:
    built = build_import_options(types=["User ID=bigint", "at=timestamptz"], delimiter="\\t",
                                 no_header=True, columns="User ID, at")
    assert built.types == {"user_id": "bigint", "at": "timestamptz"}
    assert (built.csv.delimiter, built.csv.detect_delimiter) == ("\t", False)
    assert (built.csv.header, built.csv.columns) == (False, ("User ID", "at"))
    assert build_import_options(delimiter="tab").csv.delimiter == "\t"


def test_what_the_command_decides_passes_through() -> None:
    built = build_import_options(origin="sync", wait_for_busy=False, dry_run=False)
    assert (built.origin, built.wait_for_busy) == ("sync", False)


@pytest.mark.parametrize("command", ["import", "sync"])
def test_import_and_sync_report_the_rule_alike(command: str, tmp_path: Path,
                                               cli_env: dict[str, str]) -> None:
    # The rule is checked before any database is reached: no --database is needed.
    (tmp_path / "s_20230101.csv").write_text("id\n1\n")
    args = ["import", tmp_path / "s_20230101.csv"] if command == "import" else \
        ["sync", "--data-dir", tmp_path, "--once"]
    result = invoke_cli(*args, "--max-rejects", "2", env=cli_env)
    assert result.returncode == ExitCode.USAGE
    assert result.stderr == "error: --max-rejects goes with --on-error skip\n"
    assert result.stdout == ""
