"""Connecting: the forms of --database, precedence, redaction, exit code 3, logging options,
and what a role without superuser rights can do.

The minimal grants these tests verify (they are docs/reference.md's):

    -- import (append into a table it creates), list, forget:
    GRANT CONNECT ON DATABASE db TO loader;
    GRANT USAGE, CREATE ON SCHEMA ingest TO loader;
    -- plus, for --mode upsert, --on-error skip and --dry-run (they stage in temporary tables):
    GRANT TEMPORARY ON DATABASE db TO loader;

    -- a role that may not run DDL, once an owner has run `snapshots migrate` and created the
    -- table (import into it, list, forget):
    GRANT CONNECT ON DATABASE db TO loader;
    GRANT USAGE ON SCHEMA ingest TO loader;
    GRANT SELECT ON ingest.snapshot_ledger_version TO loader;
    GRANT SELECT, INSERT, UPDATE ON ingest.snapshot_imports TO loader;
    GRANT SELECT, INSERT, DELETE ON ingest.snapshots TO loader;

    -- list only:
    GRANT CONNECT ON DATABASE db TO reader;
    GRANT USAGE ON SCHEMA ingest TO reader;
    GRANT SELECT ON ingest.snapshot_ledger_version, ingest.snapshot_imports TO reader;
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import conninfo_to_uri, in_ci, invoke_cli, run_cli, wait_until
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from snapshots import config
from snapshots.errors import DatabaseUnavailable, UsageError

SAMPLE = b"user_id,name,store_name,credit_limit\n1,Jake,Best Berlin Burgers,10000.1\n"


# --------------------------------------------------------------------------- --database forms


@pytest.mark.smoke
@pytest.mark.parametrize(("given", "expected"), [
    ("db.example.com", {"host": "db.example.com"}),
    ("db.example.com:5433", {"host": "db.example.com", "port": "5433"}),
    ("db.example.com:5433/sales", {"host": "db.example.com", "port": "5433",
                                   "dbname": "sales"}),
    ("db:5432/my-db_2", {"host": "db", "port": "5432", "dbname": "my-db_2"}),
    ("10.0.0.7", {"host": "10.0.0.7"}),
    ("[::1]:5432", {"host": "::1", "port": "5432"}),
    ("[::1]", {"host": "::1"}),
    ("[2001:db8::1]:6432/x", {"host": "2001:db8::1", "port": "6432", "dbname": "x"}),
    ("  db:5432  ", {"host": "db", "port": "5432"}),
    ("postgresql://ann:pw@db:5433/sales?sslmode=require",
     {"user": "ann", "password": "pw", "host": "db", "port": "5433", "dbname": "sales",
      "sslmode": "require"}),
    ("postgres://db/sales", {"host": "db", "dbname": "sales"}),
    ("postgresql:///sales?host=/var/run/postgresql",
     {"host": "/var/run/postgresql", "dbname": "sales"}),
    ("host=db port=5433 dbname=sales sslmode=verify-full sslrootcert=/etc/ca.pem",
     {"host": "db", "port": "5433", "dbname": "sales", "sslmode": "verify-full",
      "sslrootcert": "/etc/ca.pem"}),
    ("service=reporting", {"service": "reporting"}),
])
def test_database_forms(given: str, expected: dict[str, str]) -> None:
    assert conninfo_to_dict(config.parse_database(given)) == expected


@pytest.mark.parametrize("given", [
    "", "   ", "db:port", "db:5432/a/b", "a b", "::1", "host=db port", "db:5432?x=1",
    "postgresql://db/sales?nonsense=1", "host=db nonsense=1",
])
def test_bad_database_forms_are_usage_errors(given: str) -> None:
    with pytest.raises(UsageError):
        config.parse_database(given)


@pytest.mark.parametrize("given", [
    "postgresql://ann:s3cr3t-pw@[::1/sales",  # libpq quotes the whole URI in its error
    "postgresql://ann:s3cr3t-pw@db/sales?nonsense=1",
    "ann:s3cr3t-pw@db",  # a URI without its scheme
    "host=db password=s3cr3t-pw nonsense=1",
    "host=db password='s3cr3t-pw",
])
def test_a_bad_database_string_never_shows_its_password(given: str) -> None:
    with pytest.raises(UsageError) as caught:
        config.parse_database(given)
    assert "s3cr3t" not in str(caught.value)
    assert "s3cr3t" not in (caught.value.hint or "")


def test_precedence_in_resolve_database() -> None:
    env = {"PGHOST": "from-env"}
    assert config.resolve_database("db:1", env).conninfo == config.parse_database("db:1")
    assert config.resolve_database(None, env).conninfo == ""  # libpq reads PG* itself
    assert config.resolve_database(None, {"PGSERVICE": "x"}).conninfo == ""
    assert config.resolve_database(None, {"PGUSER": "u", "PGPASSWORD": "p"}).embedded
    assert config.resolve_database(None, {}).embedded
    assert config.resolve_database("", {}).embedded


def test_connect_timeout_and_application_name_are_added_unless_chosen() -> None:
    added = conninfo_to_dict(config.with_defaults("host=db", {}))
    assert added["connect_timeout"] == str(config.DEFAULT_CONNECT_TIMEOUT)
    assert added["application_name"] == "snapshots"
    chosen = conninfo_to_dict(config.with_defaults(
        "host=db connect_timeout=3 application_name=etl", {}))
    assert chosen["connect_timeout"] == "3" and chosen["application_name"] == "etl"
    from_env = conninfo_to_dict(config.with_defaults(
        "host=db", {"PGCONNECT_TIMEOUT": "7", "PGAPPNAME": "x"}))
    assert "connect_timeout" not in from_env and "application_name" not in from_env
    ours = conninfo_to_dict(config.with_defaults("host=db", {"SNAPSHOTS_CONNECT_TIMEOUT": "2"}))
    assert ours["connect_timeout"] == "2"


@pytest.mark.parametrize("conninfo", [
    "postgresql://ann:s3cr3t-pw@db:5433/sales",
    "postgresql://db/sales?password=s3cr3t-pw",
    "host=db password=s3cr3t-pw",
    "host=db password='s3cr3t pw'",
])
def test_redact_and_describe_never_show_a_password(conninfo: str) -> None:
    redacted = config.redact(conninfo)
    assert "s3cr3t" not in redacted
    assert conninfo_to_dict(redacted)["password"] == "***"
    assert conninfo_to_dict(redacted)["host"] == "db"
    assert "s3cr3t" not in config.describe(conninfo)
    assert config.describe(conninfo).startswith("db:")


def test_scrub_removes_the_password_from_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    message = 'FATAL: something echoed "s3cr3t-pw" back'
    assert "s3cr3t" not in config.scrub(message, "host=db password=s3cr3t-pw")
    monkeypatch.setenv("PGPASSWORD", "s3cr3t-pw")
    assert "s3cr3t" not in config.scrub(message, "host=db")
    assert config.scrub(message, None) == message  # the embedded server has no password


def test_connect_failure_is_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        config.connect("postgresql://ann:s3cr3t-pw@127.0.0.1:1/sales")
    assert caught.value.exit_code == 3
    assert "s3cr3t" not in str(caught.value)
    assert "127.0.0.1:1/sales" in str(caught.value)


# --------------------------------------------------------------------------- CLI: exit 3


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("error:", "hint:")) for line in lines), result.stderr
    return errors[0]


@pytest.mark.smoke
@pytest.mark.parametrize("command", [["list"], ["import", "FILE"], ["forget", "x.csv"],
                                     ["migrate"]])
def test_unreachable_server_exits_3_with_one_line(tmp_path: Path, cli_env: dict[str, str],
                                                  command: list[str]) -> None:
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    args = [str(sample) if word == "FILE" else word for word in command]
    started = time.monotonic()
    result = invoke_cli("--database", "postgresql://ann:s3cr3t-pw@127.0.0.1:1/sales", *args,
                        env=cli_env)
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert "cannot connect to 127.0.0.1:1/sales" in line
    assert "s3cr3t" not in result.stdout + result.stderr
    assert time.monotonic() - started < 20


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) but never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_connect_timeout_bounds_a_server_that_never_answers(cli_env: dict[str, str],
                                                            silent_server: int) -> None:
    # A process: in process, nothing would bound a connect that hangs (run_cli's timeout does).
    env = {**cli_env, "SNAPSHOTS_CONNECT_TIMEOUT": "2"}
    started = time.monotonic()
    result = run_cli("--database", f"127.0.0.1:{silent_server}", "list", env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert f"cannot connect to 127.0.0.1:{silent_server}" in one_error_line(result)
    assert 1.5 <= elapsed < 15, elapsed


@pytest.fixture
def password_role(pg_server: str, db_url: str) -> Iterator[tuple[str, str]]:
    """(role, password) of a login role the server really checks the password of.

    The session's own throwaway server trusts local connections; for this role alone a
    scram-sha-256 rule goes first in pg_hba.conf while the test runs. An external server
    (SNAPSHOTS_TEST_DATABASE, e.g. CI's PostgreSQL 15 over TCP) must already ask for it.
    """
    role = f"snap_pw_{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    dbname = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), sql.Identifier(role)))
        hba_path: Path | None = None
        original = ""
        if not _password_checked(db_url, role):
            hba_file = admin.execute("SHOW hba_file").fetchone()[0]
            if os.environ.get("SNAPSHOTS_TEST_DATABASE") or not os.access(hba_file, os.W_OK):
                _drop_role(admin, role)
                message = "the test server does not check passwords and its pg_hba is not ours"
                if in_ci():
                    pytest.fail(message)
                pytest.skip(message)
            hba_path = Path(hba_file)
            original = hba_path.read_text()
            rules = (f"local all {role} scram-sha-256\n"
                     f"host all {role} all scram-sha-256\n")
            hba_path.write_text(rules + original)
            admin.execute("SELECT pg_reload_conf()")
            wait_until(lambda: _password_checked(db_url, role), timeout=10,
                       message="pg_hba.conf to be reloaded")
        try:
            yield role, password
        finally:
            if hba_path is not None:
                hba_path.write_text(original)
                admin.execute("SELECT pg_reload_conf()")
            _drop_role(admin, role)


def _password_checked(db_url: str, role: str) -> bool:
    uri = conninfo_to_uri(db_url, user=role, password="certainly-wrong")
    try:
        psycopg.connect(uri, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return "password" in str(exc)
    return False


def _drop_role(admin: psycopg.Connection, role: str) -> None:
    for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'snapshots_test_%'").fetchall():
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(name), sql.Identifier(role)))
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.smoke
def test_wrong_password_exits_3_and_never_shows_it(tmp_path: Path, cli_env: dict[str, str],
                                                   db_url: str,
                                                   password_role: tuple[str, str]) -> None:
    role, password = password_role
    wrong = f"wrong-{uuid.uuid4().hex}"
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    uri = conninfo_to_uri(db_url, user=role, password=wrong)
    for args in (["list"], ["import", str(sample)], ["-vv", "import", str(sample)]):
        result = invoke_cli("--database", uri, *args, env=cli_env)
        assert result.returncode == 3, result.stderr
        assert "password authentication failed" in result.stderr
        # A login was given: the hint is about its password, for the user it names.
        assert f"hint: the server refused the password for user {role!r}" in result.stderr
        assert wrong not in result.stdout + result.stderr
        assert password not in result.stdout + result.stderr
        if "-vv" not in args:
            one_error_line(result)
    # The same through SNAPSHOTS_DATABASE and through libpq's PGPASSWORD.
    result = invoke_cli("list", env={**cli_env, "SNAPSHOTS_DATABASE": uri})
    assert result.returncode == 3 and wrong not in result.stderr
    params = conninfo_to_dict(db_url)
    pg_env = {**cli_env, "PGHOST": params.get("host") or "localhost",
              "PGPORT": str(params.get("port") or 5432), "PGDATABASE": params["dbname"],
              "PGUSER": role, "PGPASSWORD": wrong}
    result = invoke_cli("list", env=pg_env)
    assert result.returncode == 3, result.stderr
    assert wrong not in result.stdout + result.stderr
    # And the right password works.
    right = conninfo_to_uri(db_url, user=role, password=password)
    assert invoke_cli("--database", right, "list", env=cli_env).returncode == 0


@pytest.mark.smoke
def test_seed_form_without_a_password_says_how_to_give_a_login(
        tmp_path: Path, cli_env: dict[str, str], db_url: str,
        password_role: tuple[str, str]) -> None:
    """`snapshots --database host:port FILE` carries no password: the hint names the ways
    to give a login (the seed's form, against a server that asks for one; a server on a
    socket only, as the embedded one, gets the same form as a URI without a password)."""
    role, password = password_role
    params = conninfo_to_dict(db_url)
    host = params.get("host") or "localhost"
    target = f"{host}:{params.get('port') or 5432}" if not host.startswith("/") else \
        conninfo_to_uri(db_url, user=role, dbname="")
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    env = {**cli_env, "PGUSER": role, "PGDATABASE": params["dbname"],
           "PGPASSFILE": str(tmp_path / "no-such-pgpass")}
    result = invoke_cli("--database", target, sample, env=env)
    assert result.returncode == 3, result.stderr
    assert "no password supplied" in one_error_line(result)
    hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    assert len(hints) == 1, result.stderr
    for way in ("PGUSER", "PGPASSWORD", "~/.pgpass",
                "postgresql://user:password@host:port/db", f"for user {role!r}"):
        assert way in hints[0], result.stderr
    assert "your OS user" not in hints[0]  # PGUSER named it
    # What the hint says works: the same form with PGPASSWORD logs in (the role may not
    # create tables, so it lists rather than imports).
    result = invoke_cli("--database", target, "list", env={**env, "PGPASSWORD": password})
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- CLI: precedence


def test_database_option_beats_environment(tmp_path: Path, cli_env: dict[str, str],
                                           db_url: str) -> None:
    # (Not PGPORT: libpq fills in what a conninfo leaves out, like the port of this URI.)
    env = {**cli_env, "SNAPSHOTS_DATABASE": "127.0.0.1:1", "PGHOST": "127.0.0.1"}
    # Before and after the command name.
    assert invoke_cli("--database", db_url, "list", env=env).returncode == 0
    assert invoke_cli("list", "--database", db_url, env=env).returncode == 0


def test_snapshots_database_beats_libpq_variables(cli_env: dict[str, str], db_url: str) -> None:
    env = {**cli_env, "SNAPSHOTS_DATABASE": db_url, "PGHOST": "127.0.0.1"}
    assert invoke_cli("list", env=env).returncode == 0
    env = {**cli_env, "SNAPSHOTS_DATABASE": "127.0.0.1:1"}
    assert invoke_cli("list", env=env).returncode == 3


def _libpq_env(db_url: str) -> dict[str, str]:
    params = conninfo_to_dict(db_url)
    env = {"PGHOST": params.get("host") or "localhost", "PGDATABASE": params["dbname"]}
    if params.get("port"):
        env["PGPORT"] = str(params["port"])
    if params.get("user"):
        env["PGUSER"] = params["user"]
    if params.get("password"):
        env["PGPASSWORD"] = params["password"]
    return env


def test_libpq_variables_name_the_database(tmp_path: Path, cli_env: dict[str, str],
                                           db_url: str, db_conn: psycopg.Connection) -> None:
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    env = {**cli_env, **_libpq_env(db_url)}
    result = invoke_cli("import", sample, env=env)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT count(*) FROM snapshots").fetchone() == (1,)
    # PGHOST alone, pointing nowhere, is "a database is given": exit 3, not the embedded one.
    result = invoke_cli("list", env={**cli_env, "PGHOST": "127.0.0.1", "PGPORT": "1"})
    assert result.returncode == 3
    assert "127.0.0.1:1" in one_error_line(result)


def test_pgservice_names_the_database(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                      db_conn: psycopg.Connection) -> None:
    params = _libpq_env(db_url)
    keys = {"PGHOST": "host", "PGPORT": "port", "PGDATABASE": "dbname", "PGUSER": "user",
            "PGPASSWORD": "password"}
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text("[snapshots-test]\n" + "".join(
        f"{keys[k]}={v}\n" for k, v in params.items()))
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    env = {**cli_env, "PGSERVICEFILE": str(service_file), "PGSERVICE": "snapshots-test"}
    result = invoke_cli("import", sample, env=env)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT count(*) FROM snapshots").fetchone() == (1,)
    # The same service by --database service=NAME.
    env.pop("PGSERVICE")
    listed = invoke_cli("--database", "service=snapshots-test", "list", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["file"] for r in json.loads(listed.stdout)] == ["snapshot_20230101.csv"]


def test_key_value_database_with_options(tmp_path: Path, cli_env: dict[str, str],
                                         db_url: str) -> None:
    params = conninfo_to_dict(db_url)
    conninfo = " ".join(f"{k}='{v}'" for k, v in params.items())
    assert invoke_cli("--database", conninfo + " sslmode=disable", "list",
                      env=cli_env).returncode == 0
    assert invoke_cli("--database", conninfo + " sslmode=prefer application_name=etl", "list",
                      env=cli_env).returncode == 0
    # libpq itself checks the values: one line, no traceback.
    bogus = invoke_cli("--database", conninfo + " sslmode=bogus", "list", env=cli_env)
    assert bogus.returncode != 0
    assert "sslmode" in one_error_line(bogus)


# --------------------------------------------------------------------------- CLI: logging


def test_quiet_prints_nothing_on_success(tmp_path: Path, cli_env: dict[str, str],
                                         db_url: str) -> None:
    sample = tmp_path / "nodate.csv"  # would warn: no date in the name
    sample.write_bytes(SAMPLE)
    result = invoke_cli("-q", "--database", db_url, "import", sample, env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    loud = invoke_cli("--database", db_url, "import", sample, env=cli_env)
    assert "skipped nodate.csv" in loud.stdout
    assert "no YYYYMMDD date" in loud.stderr


def test_quiet_still_prints_errors(tmp_path: Path, cli_env: dict[str, str],
                                   db_url: str) -> None:
    bad = tmp_path / "bad_20230101.csv"
    bad.write_bytes(b"a,a\n1,2\n")
    result = invoke_cli("-q", "--database", db_url, "import", bad, env=cli_env)
    assert result.returncode == 1
    assert "duplicate column name" in one_error_line(result)


def test_verbose_shows_a_traceback_only_when_asked(cli_env: dict[str, str]) -> None:
    # A process, as a user runs it: the traceback goes through the logging the CLI configures.
    quiet = run_cli("--database", "127.0.0.1:1", "list", env=cli_env)
    assert quiet.returncode == 3 and "Traceback" not in quiet.stderr
    loud = run_cli("-vv", "--database", "127.0.0.1:1", "list", env=cli_env)
    assert loud.returncode == 3
    assert "Traceback" in loud.stderr
    assert any(line.startswith("error: cannot connect to 127.0.0.1:1")
               for line in loud.stderr.splitlines())


def test_json_log_format(tmp_path: Path, cli_env: dict[str, str], db_url: str) -> None:
    sample = tmp_path / "nodate.csv"
    sample.write_bytes(SAMPLE)
    result = invoke_cli("--log-format", "json", "--database", db_url, "import", sample,
                        env=cli_env)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines, "a warning was expected"
    entries = [json.loads(line) for line in lines]  # every stderr line is a JSON object
    warning = next(e for e in entries if "no YYYYMMDD date" in e["message"])
    assert warning["level"] == "warning"
    assert warning["time"].endswith("Z")
    # The environment variable does the same.
    again = invoke_cli("--database", db_url, "import", sample,
                       env={**cli_env, "SNAPSHOTS_LOG_FORMAT": "json"})
    assert all(json.loads(line) for line in again.stderr.splitlines())


def test_json_log_format_errors(tmp_path: Path, cli_env: dict[str, str], db_url: str) -> None:
    """Errors and their hints are JSON lines too: a log collector parses every stderr line."""
    bad = tmp_path / "snapshot_20230101.csv"
    bad.write_bytes(b"a,b\n1,2\n3\n")
    good = tmp_path / "snapshot_20230102.csv"
    good.write_bytes(b"a,b\n1,2\n")
    failed = invoke_cli("--log-format", "json", "--database", db_url, "--table", "jsonlog",
                        "import", bad, good, env=cli_env)
    assert failed.returncode == 1
    error, summary = [json.loads(line) for line in failed.stderr.splitlines()]
    assert error["level"] == "error" and f"{bad}:3" in error["message"]
    assert summary["message"] == "2 files: 1 failed, 1 imported"
    unreachable = invoke_cli("--log-format", "json", "--database", "127.0.0.1:1", "list",
                             env=cli_env)
    assert unreachable.returncode == 3
    [entry] = [json.loads(line) for line in unreachable.stderr.splitlines()]
    assert entry["level"] == "error" and "cannot connect to 127.0.0.1:1" in entry["message"]
    assert entry["hint"]
    # Click's own usage errors too, wherever --log-format stands.
    usage = invoke_cli("--log-format", "json", "import", "--bogus", "x", env=cli_env)
    assert usage.returncode == 2
    [entry] = [json.loads(line) for line in usage.stderr.splitlines()]
    assert "No such option '--bogus'" in entry["message"]
    # Text stays the default: `error:` and `hint:` lines.
    text = invoke_cli("--database", "127.0.0.1:1", "list", env=cli_env)
    assert text.stderr.splitlines()[0].startswith("error: cannot connect to 127.0.0.1:1")
    assert text.stderr.splitlines()[1].startswith("hint: ")


# --------------------------------------------------------------------------- roles


@pytest.fixture
def loader(pg_server: str, db_url: str, db_conn: psycopg.Connection) -> Iterator[dict[str, str]]:
    """A login role with no superuser, CREATEDB or CREATEROLE, and a schema `ingest`.

    The database's default PUBLIC grants (CONNECT, TEMPORARY) are revoked; each test grants
    what it claims is enough. Yields the role's name, password and URI.
    """
    role = f"snap_loader_{uuid.uuid4().hex[:10]}"
    password = f"pw-{uuid.uuid4().hex}"
    dbname = conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL(
            "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
            sql.Identifier(role), sql.Literal(password)))
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
            sql.Identifier(dbname)))
    db_conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    db_conn.execute("CREATE SCHEMA ingest")
    try:
        yield {"role": role, "password": password, "db": dbname,
               "uri": conninfo_to_uri(db_url, user=role, password=password)}
    finally:
        db_conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        with psycopg.connect(pg_server, autocommit=True) as admin:
            _drop_role(admin, role)


def grant(db_conn: psycopg.Connection, statement: str, **names: str) -> None:
    db_conn.execute(sql.SQL(statement).format(**{k: sql.Identifier(v) for k, v in names.items()}))


def relations_in(conn: psycopg.Connection, schema: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s", (schema,)).fetchall()}


@pytest.mark.smoke
def test_a_role_with_create_on_a_schema_can_import_list_and_forget(
        tmp_path: Path, cli_env: dict[str, str], db_conn: psycopg.Connection,
        loader: dict[str, str]) -> None:
    grant(db_conn, "GRANT CONNECT ON DATABASE {db} TO {role}", db=loader["db"],
          role=loader["role"])
    grant(db_conn, "GRANT USAGE, CREATE ON SCHEMA ingest TO {role}", role=loader["role"])
    first = tmp_path / "snapshot_20230101.csv"
    first.write_bytes(SAMPLE)
    second = tmp_path / "snapshot_20230102.csv"
    second.write_bytes(SAMPLE + b"2,Mostafa,Express Espresso,500.002\n")
    env = {**cli_env, "SNAPSHOTS_DATABASE": loader["uri"], "SNAPSHOTS_SCHEMA": "ingest"}

    result = invoke_cli("import", first, second, env=env)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT count(*) FROM ingest.snapshots").fetchone() == (3,)
    assert db_conn.execute("SELECT count(*) FROM ingest.snapshots_latest").fetchone() == (2,)
    roles = db_conn.execute(
        "SELECT DISTINCT imported_by->>'role' FROM ingest.snapshot_imports").fetchall()
    assert roles == [(loader["role"],)]

    listed = invoke_cli("list", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["status"] for r in json.loads(listed.stdout)] == ["imported", "imported"]
    assert invoke_cli("list", first, env=env).returncode == 0

    forgot = invoke_cli("forget", first.name, env=env)
    assert forgot.returncode == 0, forgot.stderr
    assert db_conn.execute("SELECT count(*) FROM ingest.snapshots").fetchone() == (2,)
    # Skip an already imported file, and mark an interrupted claim (the reaper's locks).
    assert invoke_cli("import", second, env=env).returncode == 0


def test_upsert_skip_and_dry_run_need_temporary(tmp_path: Path, cli_env: dict[str, str],
                                                db_conn: psycopg.Connection,
                                                loader: dict[str, str]) -> None:
    grant(db_conn, "GRANT CONNECT ON DATABASE {db} TO {role}", db=loader["db"],
          role=loader["role"])
    grant(db_conn, "GRANT USAGE, CREATE ON SCHEMA ingest TO {role}", role=loader["role"])
    with psycopg.connect(loader["uri"], autocommit=True) as conn:
        conn.execute("CREATE TABLE ingest.customers (user_id bigint PRIMARY KEY, name text, "
                     "store_name text, credit_limit numeric)")
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    env = {**cli_env, "SNAPSHOTS_DATABASE": loader["uri"], "SNAPSHOTS_SCHEMA": "ingest",
           "SNAPSHOTS_TABLE": "customers"}

    denied = invoke_cli("import", sample, env=env)
    assert denied.returncode == 1
    assert "permission denied" in one_error_line(denied)
    assert db_conn.execute("SELECT count(*) FROM ingest.customers").fetchone() == (0,)

    grant(db_conn, "GRANT TEMPORARY ON DATABASE {db} TO {role}", db=loader["db"],
          role=loader["role"])
    assert invoke_cli("import", "--dry-run", sample, env=env).returncode == 0
    result = invoke_cli("import", sample, env=env)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT user_id, name FROM ingest.customers").fetchall() == [
        (1, "Jake")]
    skip = tmp_path / "skip_20230101.csv"
    skip.write_bytes(SAMPLE + b"3,Ann\n")  # one field short: rejected
    result = invoke_cli("import", "--table", "appended", "--on-error", "skip", skip, env=env)
    assert result.returncode == 0, result.stderr
    assert db_conn.execute("SELECT count(*) FROM ingest.snapshot_rejects").fetchone() == (1,)


def test_a_role_without_ddl_rights_imports_after_an_owner_migrated(
        tmp_path: Path, cli_env: dict[str, str], db_url: str, db_conn: psycopg.Connection,
        loader: dict[str, str]) -> None:
    owner_env = {**cli_env, "SNAPSHOTS_DATABASE": db_url, "SNAPSHOTS_SCHEMA": "ingest"}
    first = tmp_path / "snapshot_20230101.csv"
    first.write_bytes(SAMPLE)
    assert invoke_cli("import", first, env=owner_env).returncode == 0  # migrates, creates table
    role = loader["role"]
    grant(db_conn, "GRANT CONNECT ON DATABASE {db} TO {role}", db=loader["db"], role=role)
    grant(db_conn, "GRANT USAGE ON SCHEMA ingest TO {role}", role=role)
    grant(db_conn, "GRANT SELECT ON ingest.snapshot_ledger_version TO {role}", role=role)
    grant(db_conn, "GRANT SELECT, INSERT, UPDATE ON ingest.snapshot_imports TO {role}",
          role=role)
    grant(db_conn, "GRANT SELECT, INSERT, DELETE ON ingest.snapshots TO {role}", role=role)
    env = {**cli_env, "SNAPSHOTS_DATABASE": loader["uri"], "SNAPSHOTS_SCHEMA": "ingest"}
    before = relations_in(db_conn, "ingest")

    second = tmp_path / "snapshot_20230102.csv"
    second.write_bytes(SAMPLE + b"2,Mostafa,Express Espresso,500.002\n")
    result = invoke_cli("import", first, second, env=env)
    assert result.returncode == 0, result.stderr
    assert "skipped snapshot_20230101.csv" in result.stdout
    assert db_conn.execute("SELECT count(*) FROM ingest.snapshots_latest").fetchone() == (2,)
    assert invoke_cli("list", env=env).returncode == 0
    assert invoke_cli("forget", second.name, env=env).returncode == 0
    assert db_conn.execute("SELECT count(*) FROM ingest.snapshots").fetchone() == (1,)
    assert relations_in(db_conn, "ingest") == before


def test_a_read_only_role_can_list(tmp_path: Path, cli_env: dict[str, str], db_url: str,
                                   db_conn: psycopg.Connection,
                                   loader: dict[str, str]) -> None:
    """`list` reads the ledger's version and its records: SELECT on those two tables."""
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    owner = {**cli_env, "SNAPSHOTS_DATABASE": db_url, "SNAPSHOTS_SCHEMA": "ingest"}
    assert invoke_cli("import", sample, env=owner).returncode == 0
    role = loader["role"]
    grant(db_conn, "GRANT CONNECT ON DATABASE {db} TO {role}", db=loader["db"], role=role)
    grant(db_conn, "GRANT USAGE ON SCHEMA ingest TO {role}", role=role)
    grant(db_conn, "GRANT SELECT ON ingest.snapshot_imports TO {role}", role=role)
    env = {**cli_env, "SNAPSHOTS_DATABASE": loader["uri"], "SNAPSHOTS_SCHEMA": "ingest"}
    denied = invoke_cli("list", env=env)
    assert denied.returncode == 1
    assert "permission denied" in one_error_line(denied)
    grant(db_conn, "GRANT SELECT ON ingest.snapshot_ledger_version TO {role}", role=role)
    listed = invoke_cli("list", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["file"] for r in json.loads(listed.stdout)] == [sample.name]
    assert invoke_cli("list", sample, env=env).returncode == 0


@pytest.mark.smoke
def test_list_on_a_database_without_a_ledger_runs_no_ddl(tmp_path: Path,
                                                         cli_env: dict[str, str],
                                                         db_url: str,
                                                         db_conn: psycopg.Connection,
                                                         loader: dict[str, str]) -> None:
    """Not even a role that could create tables gets one from `list`; one that can't, can
    still list (nothing)."""
    before = relations_in(db_conn, "public") | relations_in(db_conn, "ingest")
    for fmt, expected in (("json", "[]"), ("csv", None), ("table", None)):
        result = invoke_cli("--database", db_url, "list", "--format", fmt, env=cli_env)
        assert result.returncode == 0, result.stderr
        if expected is not None:
            assert result.stdout.strip() == expected
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    states = invoke_cli("--database", db_url, "list", "--format", "json", sample, env=cli_env)
    assert states.returncode == 1
    assert json.loads(states.stdout)[0]["state"] == "not_imported"
    assert relations_in(db_conn, "public") | relations_in(db_conn, "ingest") == before

    grant(db_conn, "GRANT CONNECT ON DATABASE {db} TO {role}", db=loader["db"],
          role=loader["role"])
    grant(db_conn, "GRANT USAGE ON SCHEMA ingest TO {role}", role=loader["role"])
    result = invoke_cli("--database", loader["uri"], "--schema", "ingest", "list", "--format",
                        "json", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert relations_in(db_conn, "public") | relations_in(db_conn, "ingest") == before


def test_missing_schema_is_a_clear_error(tmp_path: Path, cli_env: dict[str, str],
                                         db_url: str) -> None:
    sample = tmp_path / "snapshot_20230101.csv"
    sample.write_bytes(SAMPLE)
    result = invoke_cli("--database", db_url, "--schema", "nowhere", "import", sample, env=cli_env)
    assert result.returncode == 2
    assert "schema 'nowhere' does not exist" in one_error_line(result)


@pytest.fixture
def sql_ascii_url(pg_server: str) -> Iterator[str]:
    """A database created the way initdb under the C locale makes them: SQL_ASCII."""
    name = f"snapshots_ascii_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'SQL_ASCII' "
                              "LC_COLLATE 'C' LC_CTYPE 'C'").format(sql.Identifier(name)))
    try:
        yield conninfo_to_uri(pg_server, dbname=name)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def test_a_sql_ascii_database_loads_and_lists(tmp_path: Path, cli_env: dict[str, str],
                                              sql_ascii_url: str) -> None:
    # Found running the image against Debian's PostgreSQL in a container: psycopg returned
    # current_schema() as bytes and the import said `schema "b'public'" does not exist`.
    path = tmp_path / "snapshot_20240101.csv"
    path.write_text("id,name\n1,Zoë\n2,Jake\n", encoding="utf-8")
    result = invoke_cli("--database", sql_ascii_url, "import", path, env=cli_env)
    assert result.returncode == 0, result.stderr
    listed = invoke_cli("--database", sql_ascii_url, "list", "--format", "json", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert [r["rows"] for r in json.loads(listed.stdout)] == [2]
    with psycopg.connect(sql_ascii_url, client_encoding="UTF8") as conn:
        assert conn.execute("SELECT name FROM snapshots ORDER BY id").fetchall() == [
            ("Zoë",), ("Jake",)]


def test_a_missing_login_names_the_os_user_libpq_defaults_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A ~/.pgpass line for user postgres does not match when libpq logs in as the OS user.
    monkeypatch.delenv("PGUSER", raising=False)
    login = config.login_user("host=db port=5432")
    assert login == (getpass.getuser(), True)
    hint = config.connection_hint("fe_sendauth: no password supplied", login)
    assert f"give a login for user {getpass.getuser()!r} (libpq's default: your OS user)" in hint
    assert config.login_user("postgresql://ana@db/x") == ("ana", False)
    monkeypatch.setenv("PGUSER", "bob")
    assert config.login_user("host=db") == ("bob", False)
