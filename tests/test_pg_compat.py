"""Behaviour that differs between PostgreSQL versions (run against 15 in CI's smoke subset)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from helpers import invoke_cli

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_a_backslash_dot_line_is_data_or_a_clear_error(
        tmp_path: Path, db_url: str, db_conn: psycopg.Connection, cli_env: dict[str, str],
        ending: str) -> None:
    # Before PostgreSQL 18, COPY reads a line `\.` as the end of the data, even in CSV mode:
    # the rows after it would vanish without an error.
    body = "value\nfirst\n\\.\nlast\n" if ending else "value\nfirst\nsecond\n\\."
    path = tmp_path / "snapshot_20230101.csv"
    path.write_bytes(body.replace("\n", ending or "\n").encode())
    result = invoke_cli("--database", db_url, "import", str(path), env=cli_env)
    if db_conn.info.server_version >= 180000:
        assert result.returncode == 0, result.stderr
        values = [r[0] for r in db_conn.execute("SELECT value FROM snapshots ORDER BY 1")]
        assert "\\." in values and len(values) == 3
    else:
        assert result.returncode == 1
        assert "\\." in result.stderr and "nothing written" in result.stderr
        assert db_conn.execute("SELECT to_regclass('snapshots')").fetchone() == (None,)


@pytest.mark.parametrize("existing", [False, True], ids=["new-table", "existing-table"])
def test_a_stray_quote_fails_instead_of_joining_records(
        tmp_path: Path, db_url: str, db_conn: psycopg.Connection, cli_env: dict[str, str],
        existing: bool) -> None:
    # COPY reads `12" pizza` as the start of a quoted section and would silently swallow the
    # records up to the next quote.
    if existing:
        good = tmp_path / "snapshot_20230101.csv"
        good.write_text("id,item,price\n9,tea,2\n")
        assert invoke_cli("--database", db_url, "import", str(good), env=cli_env).returncode == 0
    path = tmp_path / "snapshot_20230201.csv"
    path.write_text('id,item,price\n1,12" pizza,5\n2,6" sub,3\n3,cola,1\n')
    result = invoke_cli("--database", db_url, "import", str(path), env=cli_env)
    assert result.returncode == 1
    assert f"{path}:2: malformed quoting" in result.stderr
    rows = db_conn.execute("SELECT count(*) FROM snapshots").fetchone() if existing else None
    assert rows in (None, (1,))
    # Line breaks inside properly quoted fields are fine.
    multi = tmp_path / "snapshot_20230301.csv"
    multi.write_text('id,item,price\n1,"two\nlines",5\n2,"say ""hi""",3\n')
    result = invoke_cli("--database", db_url, "import", str(multi), env=cli_env)
    assert result.returncode == 0, result.stderr
