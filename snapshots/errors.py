"""Exception hierarchy and process exit codes.

Every error the tool expects carries the exit code it maps to and renders as one line,
so the CLI layer only has to print ``str(error)`` (plus the hint) and exit.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a file failed, or (list FILE...) a file is not imported
    USAGE = 2
    DATABASE = 3  # the database cannot be reached or refuses the login
    INTERRUPTED = 130  # Ctrl-C or a shutdown signal (128 + SIGINT, as shells report it)


class SnapshotsError(Exception):
    """Base for every error the tool reports to a user as one line."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SnapshotsError):
    exit_code = ExitCode.USAGE


class DatabaseUnavailable(SnapshotsError):
    """The server cannot be reached, or refuses the login."""

    exit_code = ExitCode.DATABASE


class LedgerError(SnapshotsError):
    """The ledger's schema is missing, too old for `list`, or newer than this tool."""


class InputError(SnapshotsError):
    """A file's content is wrong. Knows where: file, line, column, value."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
        value: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        self.value = value
        super().__init__(self._render(), hint=hint)

    def _render(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where += f":{self.line}"
        parts = [f"{where}: {self.reason}" if where else self.reason]
        if self.column is not None:
            parts.append(f"column {self.column}")
        if self.value is not None:
            shown = self.value if len(self.value) <= 80 else self.value[:77] + "..."
            parts.append(f"value {shown!r}")
        return ", ".join(parts)

    def located(self, *, file: str | Path | None = None, line: int | None = None) -> InputError:
        """The same error with the file or line filled in."""
        return type(self)(
            self.reason,
            file=file if file is not None else self.file,
            line=line if line is not None else self.line,
            column=self.column,
            value=self.value,
            hint=self.hint,
        )


class SchemaDriftError(InputError):
    """The file's columns differ from the table's under --schema-evolution strict."""


class ConflictError(SnapshotsError):
    """Same snapshot name, different bytes."""


class OutOfOrderError(SnapshotsError):
    """An upsert snapshot older than the newest merged one, without --force."""


class InterruptedImport(SnapshotsError):
    """The import was cancelled (signal, grace period over)."""
