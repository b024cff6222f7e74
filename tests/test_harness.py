"""The in-process CLI runner (helpers.invoke_cli): it sees what a process would, and leaves
the test process as it found it."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import Cli, invoke_cli, run_cli


@pytest.mark.parametrize("args", [["--help"], ["import", "--help"], ["sync", "--help"],
                                  ["import", "--bogus"], ["nowhere.csv"], ["--version"]])
def test_in_process_output_is_the_process_output(cli_env: dict[str, str],
                                                 args: list[str]) -> None:
    """Help text (its width included), usage errors and exit codes, byte for byte."""
    real = run_cli(*args, env=cli_env)
    here = invoke_cli(*args, env=cli_env)
    assert (here.returncode, here.stdout, here.stderr) == (
        real.returncode, real.stdout, real.stderr)


def test_in_process_import_says_what_a_process_says(cli: Cli) -> None:
    cli.write("a_20230101.csv", "id\n1\n")
    cli.write("b_20230102.csv", "id\n2\n")
    here = cli.run("import", "a_20230101.csv")
    real = cli.process("import", "b_20230102.csv")
    assert here.stdout.split(" in ")[0] == "imported a_20230101.csv: 1 row"
    assert real.stdout.split(" in ")[0] == "imported b_20230102.csv: 1 row"
    assert here.stderr == real.stderr == ""


def test_the_environment_is_the_given_one_and_is_put_back(cli: Cli,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("SNAPSHOTS_TABLE", "not_this_one")  # not in cli.env: dropped
    cli.write("a_20230101.csv", "id\n1\n")
    before = dict(os.environ)
    cli.run("import", "a_20230101.csv", env={**cli.env, "SNAPSHOTS_SCHEMA": "public"})
    assert dict(os.environ) == before
    assert cli.exists("public.snapshots") and not cli.exists("public.not_this_one")


def test_cwd_streams_logging_signals_and_tz_are_put_back(cli: Cli) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    snapshots_level = logging.getLogger("snapshots").level
    cwd, streams = Path.cwd(), (sys.stdin, sys.stdout, sys.stderr)
    sigterm = signal.getsignal(signal.SIGTERM)
    zone = time.tzname
    cli.run("-vv", "list", env={**cli.env, "TZ": "XST-5:30"})
    assert (root.handlers, root.level) == (handlers, level)
    assert logging.getLogger("snapshots").level == snapshots_level
    assert Path.cwd() == cwd
    assert (sys.stdin, sys.stdout, sys.stderr) == streams
    assert signal.getsignal(signal.SIGTERM) == sigterm
    assert time.tzname == zone


def test_the_embedded_server_is_refused_in_process(cli_env: dict[str, str]) -> None:
    """Without a database the CLI would start the embedded server in the test process."""
    with pytest.raises(pytest.fail.Exception, match="embedded server"):
        invoke_cli("list", env=cli_env)
