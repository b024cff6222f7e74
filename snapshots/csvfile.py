"""The names sync.py, the sync stages, the CLI and options.py still import from here: the
file-without-a-database code lives in snapshots/csvio/ now, one job a module."""

# kept until sync.py and cli.py import from the new modules
from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.hashing import sha256_file
from snapshots.csvio.inference import parse_type_overrides
from snapshots.csvio.names import expand_inputs, is_gzip, snapshot_date

__all__ = [
    "CsvOptions",
    "expand_inputs",
    "is_gzip",
    "parse_type_overrides",
    "sha256_file",
    "snapshot_date",
]
