"""What an import run is asked to do: its options, their defaults, the rules between them,
and how many parts a file is worth. No database driver here: the command line reads these
before it loads one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from snapshots.csvio.dialect import CsvOptions
from snapshots.csvio.inference import parse_type_overrides
from snapshots.csvio.names import is_gzip
from snapshots.errors import UsageError

MAX_DEFAULT_JOBS = 4
# A file is loaded in parallel parts of at least this size: below it, the extra connections
# and the table per snapshot cost more than a second stream gains.
PART_MIN_BYTES = 32 << 20


@dataclass(frozen=True)
class ImportOptions:
    mode: str = "auto"  # auto | append | upsert
    replace: bool = False
    force: bool = False
    delete_missing: bool = False
    dry_run: bool = False
    on_error: str = "abort"  # abort | skip
    max_rejects: int | None = None
    types: dict[str, str] = field(default_factory=dict)
    schema_evolution: str = "strict"  # strict | add
    csv: CsvOptions = field(default_factory=CsvOptions)
    origin: str = "import"
    wait_for_busy: bool = True  # import waits for another process's claim; sync moves on
    part_size: int = PART_MIN_BYTES  # smallest part of a file loaded over several connections

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "append", "upsert"):
            raise UsageError(f"--mode must be auto, append or upsert, not {self.mode!r}")
        if self.on_error not in ("abort", "skip"):
            raise UsageError(f"--on-error must be abort or skip, not {self.on_error!r}")
        if self.schema_evolution not in ("strict", "add"):
            raise UsageError("--schema-evolution must be strict or add")
        if self.max_rejects is not None and self.max_rejects < 0:
            raise UsageError("--max-rejects must be 0 or more")
        if self.part_size < 1:
            raise UsageError("--part-size must be at least one byte")


def build_import_options(*, mode: str = "auto", replace: bool = False, force: bool = False,
                         delete_missing: bool = False, dry_run: bool = False,
                         on_error: str = "abort", max_rejects: int | None = None,
                         types: Sequence[str] = (), schema_evolution: str = "strict",
                         part_size: int = PART_MIN_BYTES, delimiter: str | None = None,
                         quote: str = '"', null: str = "", encoding: str = "UTF8",
                         no_header: bool = False, columns: str | None = None,
                         origin: str = "import", wait_for_busy: bool = True) -> ImportOptions:
    """ImportOptions from the loading options as a command line spells them (`--type
    COL=TYPE` pairs, `--columns A,B`, `--delimiter '\\t'`), import's and sync's alike.

    Each value is checked first (by ImportOptions and CsvOptions; the CSV dialect's own
    rules, such as --no-header needing --columns, are CsvOptions'), then the rules between
    the loading options, here: import and sync both build their options with this, so they
    cannot disagree on them.
    """
    opts = ImportOptions(
        mode=mode, replace=replace, force=force, delete_missing=delete_missing,
        dry_run=dry_run, on_error=on_error, max_rejects=max_rejects,
        types=parse_type_overrides(types), schema_evolution=schema_evolution,
        part_size=part_size,
        csv=build_csv_options(delimiter=delimiter, quote=quote, null=null, encoding=encoding,
                              no_header=no_header, columns=columns),
        origin=origin, wait_for_busy=wait_for_busy)
    if opts.max_rejects is not None and opts.on_error != "skip":
        # Under abort the first bad row fails the file: a limit would be silently ignored.
        raise UsageError("--max-rejects goes with --on-error skip")
    return opts


def build_csv_options(*, delimiter: str | None = None, quote: str = '"', null: str = "",
                      encoding: str = "UTF8", no_header: bool = False,
                      columns: str | None = None) -> CsvOptions:
    """CsvOptions from --delimiter, --quote, --null, --encoding, --no-header and --columns.
    No --delimiter means each file's own is detected. CsvOptions itself checks the rules
    between these (--no-header needs --columns, --delimiter and --quote differ, ...)."""
    cols = tuple(c.strip() for c in columns.split(",")) if columns else None
    return CsvOptions(delimiter=unescape_delimiter(delimiter or ","), quote=quote, null=null,
                      encoding=encoding, header=not no_header, columns=cols,
                      detect_delimiter=not delimiter)


def unescape_delimiter(value: str) -> str:
    """A tab is hard to type in a shell or an environment variable: `\\t` and `tab` spell it."""
    return {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)


SMALL_FILE_BYTES = 1 << 20  # files up to this size share transactions (engine.batch)


def batchable(options: ImportOptions) -> bool:
    """Append loads that fail a file on its first bad row: what a savepoint holds whole.
    (Upserts merge one file at a time under a lock; --on-error skip stages its rows.)"""
    return not options.dry_run and options.mode != "upsert" and options.on_error == "abort"


def read_whole(options: ImportOptions, size: int) -> bool:
    """Whether a file of `size` bytes would load in a batch, which reads it whole and
    hashes it itself (csvio.hashing.read_hashed): nothing to hash ahead of it."""
    return batchable(options) and size <= SMALL_FILE_BYTES


def worth_parts(options: ImportOptions, path: Path, size: int, most: int) -> int:
    """How many parts a file of `size` bytes would load in, given at most `most` connections
    (1: one stream). Only large uncompressed files into an existing table in the plain mode
    are split; the importer also checks the table and the role's rights."""
    if most < 2 or options.dry_run or options.on_error != "abort" or \
            options.schema_evolution != "strict" or is_gzip(path) or \
            not options.csv.quotes_bytewise:  # cut points are found by counting quote bytes
        return 1
    return max(1, min(most, size // options.part_size))


def available_cpus() -> int:
    """CPUs this process may use, respecting affinity and a container's CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def default_jobs() -> int:
    return min(MAX_DEFAULT_JOBS, available_cpus())
