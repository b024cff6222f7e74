"""What happened to one file (`FileResult`), and the words its line says."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from snapshots.errors import SnapshotsError

if TYPE_CHECKING:  # no database driver needed to read a result
    from snapshots.engine.context import Loaded


@dataclass
class FileResult:
    """What happened to one file. `result` is imported, skipped, failed, conflict, busy or
    validated (dry run)."""

    path: Path
    result: str
    file_name: str = ""
    import_id: int | None = None
    rows: int = 0
    rejected: int = 0
    bytes: int = 0
    seconds: float = 0.0
    snapshot_date: object = None
    sha256: str | None = None
    same_content_as: int | None = None
    detail: str = ""
    error: SnapshotsError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("imported", "skipped", "validated", "busy")


def _rejected(count: int) -> str:
    return f"{count} rejected row{'s' if count != 1 else ''}"


def validated(result: FileResult, loaded: Loaded, detected: str) -> None:
    """A dry run's outcome: what a real run would do, and that nothing was written."""
    result.result, result.rows, result.rejected = "validated", loaded.rows, loaded.rejected
    result.detail = "nothing written (dry run)"
    if loaded.detail:
        result.detail = f"{loaded.detail}; {result.detail}"
    if loaded.rejected:  # --on-error skip: say what a real run would reject
        result.detail = f"{_rejected(loaded.rejected)} would be skipped; {result.detail}"
    if detected:
        result.detail += f"; {detected}"


def imported(result: FileResult, loaded: Loaded, *, schema: str, replaced: int | None,
             detected: str) -> None:
    """An import's outcome, and the warning that rejected rows were kept."""
    result.result, result.rows, result.rejected = "imported", loaded.rows, loaded.rejected
    parts = [loaded.detail] if loaded.detail else []
    if result.same_content_as is not None:
        parts.append(f"same content as #{result.same_content_as}")
    if replaced is not None:
        parts.append(f"replaced #{replaced}")
    if loaded.rejected:
        parts.append(_rejected(loaded.rejected))
        result.warnings.append(
            f"{result.path.name}: {_rejected(loaded.rejected)} kept in "
            f"{schema}.snapshot_rejects (import #{result.import_id})")
    if detected:
        parts.append(detected)
    result.detail = "; ".join(parts)
