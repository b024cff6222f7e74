"""Where the database is: the forms of --database, libpq's environment, redaction.

Precedence: --database, then SNAPSHOTS_DATABASE (Click resolves both into one value), then
libpq's own variables (PGHOST or PGSERVICE set means "a database is given"), then the embedded
default.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from snapshots.errors import DatabaseUnavailable, UsageError

DEFAULT_CONNECT_TIMEOUT = 10
APPLICATION_NAME = "snapshots"

_HOST_PORT_DB = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s]+)(?::(?P<port>\d+))?(?:/(?P<dbname>[^\s/]+))?$")


@dataclass(frozen=True)
class DatabaseTarget:
    """A resolved database: a libpq conninfo string, or None for the embedded default."""

    conninfo: str | None

    @property
    def embedded(self) -> bool:
        return self.conninfo is None


def parse_database(value: str) -> str:
    """Turn any accepted --database form into a libpq conninfo string.

    Forms: `host`, `host:port`, `host:port/dbname`, a postgresql:// URI, or `key=value ...`.
    """
    text = value.strip()
    if not text:
        raise UsageError("--database is empty")
    if text.startswith(("postgresql://", "postgres://")) or "=" in text:
        conninfo = text
    else:
        match = _HOST_PORT_DB.match(text)
        if not match:
            raise UsageError(
                f"--database {redact_text(text)!r} is not host[:port][/dbname], a "
                "postgresql:// URI or a key=value connection string")
        params: dict[str, str] = {"host": match["host"].strip("[]")}
        if match["port"]:
            params["port"] = match["port"]
        if match["dbname"]:
            params["dbname"] = match["dbname"]
        conninfo = make_conninfo(**params)
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:  # libpq quotes the whole string back
        raise UsageError(f"--database: {first_line(redact_text(str(exc)))}") from None
    return conninfo


_PASSWORD_PATTERNS = (
    re.compile(r"(postgres(?:ql)?://[^\s:@/]*:)\S*@"),  # a URI's user:password@
    re.compile(r"([^\s:/@'\"]*:)[^\s@'\"/]*@"),  # user:password@host without a scheme
    re.compile(r"(password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s'\"&]+)", re.I),  # key=value
)


def redact_text(text: str) -> str:
    """Mask anything that looks like a password in free text that may quote a conninfo
    (libpq's parse errors do), when the conninfo itself could not be parsed."""
    for pattern in _PASSWORD_PATTERNS:
        text = pattern.sub(r"\1***@" if pattern is not _PASSWORD_PATTERNS[2] else r"\1***",
                           text)
    return text


def resolve_database(option: str | None,
                     environ: Mapping[str, str] | None = None) -> DatabaseTarget:
    env = os.environ if environ is None else environ
    if option:
        return DatabaseTarget(parse_database(option))
    if env.get("PGHOST") or env.get("PGSERVICE"):
        return DatabaseTarget("")  # libpq reads PG* variables and ~/.pgpass itself
    return DatabaseTarget(None)


def with_defaults(conninfo: str, environ: Mapping[str, str] | None = None) -> str:
    """Add a connect timeout and our application name unless the user chose their own."""
    env = os.environ if environ is None else environ
    given = conninfo_to_dict(conninfo) if conninfo else {}
    extra: dict[str, str] = {}
    if "connect_timeout" not in given and "PGCONNECT_TIMEOUT" not in env:
        extra["connect_timeout"] = env.get("SNAPSHOTS_CONNECT_TIMEOUT",
                                           str(DEFAULT_CONNECT_TIMEOUT))
    if "application_name" not in given and "PGAPPNAME" not in env:
        extra["application_name"] = APPLICATION_NAME
    if "keepalives" not in given:
        # A long-running sync must notice a silently dropped network, not hang on it.
        extra.update(keepalives="1", keepalives_idle="30", keepalives_interval="10",
                     keepalives_count="3")
    return make_conninfo(conninfo, **extra)


def redact(conninfo: str) -> str:
    """The conninfo for display: never a password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<unparseable connection string>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def describe(conninfo: str | None) -> str:
    """Short, password-free `user@host:port/dbname` for messages."""
    if conninfo is None:
        return "the embedded PostgreSQL"
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "<database>"
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or ""
    return f"{host}:{port}/{db}" if db else f"{host}:{port}"


def scrub(message: str, conninfo: str | None) -> str:
    """Remove the password from a server or libpq message, should one ever echo it."""
    if not conninfo:
        return message
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        password = None
    password = password or os.environ.get("PGPASSWORD")
    if password:
        # Only where it stands as its own token: a password "p" must not turn
        # "accepting" into "acce***ting".
        pattern = rf"(?<![A-Za-z0-9]){re.escape(str(password))}(?![A-Za-z0-9])"
        message = re.sub(pattern, "***", message)
    return message


def first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else message.strip()


def connect(conninfo: str, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection; a server that can't be reached or refuses us is exit code 3."""
    full = with_defaults(conninfo)
    try:
        # UTF8 whatever the server's encoding: in a SQL_ASCII database (initdb under the C
        # locale, as in many minimal images) psycopg would hand text back as bytes. File data
        # is unaffected: every COPY names the file's own ENCODING.
        return psycopg.connect(full, autocommit=autocommit, client_encoding="UTF8")
    except psycopg.OperationalError as exc:
        reason = scrub(connection_reason(exc), full)
        raise DatabaseUnavailable(f"cannot connect to {describe(conninfo)}: {reason}",
                                  hint=connection_hint(reason, login_user(full))) from None


# libpq's and the server's words for "a login is missing or wrong" (fe_sendauth: no password
# supplied; password authentication failed for user ...; peer/ident authentication failed).
_LOGIN_REFUSED = re.compile(r"no password supplied|authentication failed|"
                            r"password is required|no pg_hba\.conf entry", re.I)


_WRONG_PASSWORD = re.compile(r"password authentication failed", re.I)


def login_user(conninfo: str) -> tuple[str | None, bool]:
    """The user libpq logs in as (the conninfo's, PGUSER's, else the OS user's name), and
    whether it is that last default."""
    try:
        user = conninfo_to_dict(conninfo).get("user") or os.environ.get("PGUSER")
    except psycopg.ProgrammingError:
        user = os.environ.get("PGUSER")
    if user:
        return str(user), False
    try:
        return getpass.getuser(), True
    except (KeyError, OSError):
        return None, True


def connection_hint(reason: str, login: tuple[str | None, bool] = (None, False)) -> str:
    """What to do next: a refused login says how to give one, since the seed's
    `host:port` form carries no user or password, and names the user libpq tried (by default
    the OS user, which a ~/.pgpass line for another user does not match)."""
    user, by_default = login
    as_user = f" for user {user!r}" if user else ""
    if _WRONG_PASSWORD.search(reason):
        return (f"the server refused the password{as_user}: check PGPASSWORD, the "
                "~/.pgpass line (host:port:db:user:password) or the password in "
                "--database postgresql://user:password@host:port/db")
    if _LOGIN_REFUSED.search(reason):
        default = " (libpq's default: your OS user)" if user and by_default else ""
        return (f"give a login{as_user}{default}: PGUSER and PGPASSWORD, a ~/.pgpass line "
                "(host:port:db:user:password, for that user), or "
                "--database postgresql://user:password@host:port/db")
    return "check --database / SNAPSHOTS_DATABASE, that the server runs, and the login"


def connection_reason(exc: BaseException) -> str:
    """libpq's reason without its 'connection to server at ... failed:' preamble."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    # libpq puts its advice on a line of its own ("Is the server running ..."): keep the
    # sentences apart when the lines become one.
    text = " ".join(line if line.endswith((".", "?", ":", ";")) or i == len(lines) - 1
                    else line + "." for i, line in enumerate(lines))
    text = re.sub(r'connection to server (at|on socket) "[^"]*"(, port \d+)? failed: ', "", text)
    parts = [p.strip() for p in text.split("; ") if p.strip()]
    return parts[0] if parts else text
