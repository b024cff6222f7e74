"""The names the sync stages (backlog.py, dblink.py) still import from here: the
file-without-a-database code lives in snapshots/csvio/ now, one job a module."""

# kept until sync.py and cli.py import from the new modules
from snapshots.csvio.hashing import sha256_file
from snapshots.csvio.names import snapshot_date

__all__ = ["sha256_file", "snapshot_date"]
