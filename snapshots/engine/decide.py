"""What to do with a file whose name was imported before: a pure rule, shared by the
importer (per file, under its name lock) and sync (before it hands a file over)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from snapshots.errors import ConflictError

if TYPE_CHECKING:  # a pure rule: no database driver to import
    from snapshots.engine.result import FileResult
    from snapshots.store import Record


class Decision(Enum):
    SKIP = "skip"  # the same bytes were imported under this name: nothing to do
    CONFLICT = "conflict"  # other bytes were imported under this name, and no --replace
    CLAIM = "claim"  # import it (new, or --replace supersedes the earlier import)


def decide(imported_sha256: str | None, sha256: str, *, replace: bool) -> Decision:
    """`imported_sha256`: the content hash of the name's `imported` record, None if none."""
    if imported_sha256 is None:
        return Decision.CLAIM
    if imported_sha256 == sha256:
        return Decision.SKIP
    return Decision.CLAIM if replace else Decision.CONFLICT


def judge(result: FileResult, path: Path, existing: Record | None, *,
          replace: bool) -> Record | None:
    """The decision for `result`'s file (its sha256 known), given its name's `imported`
    record: skipped (said in `result`), a conflict (raised), or go on (gives the import
    --replace supersedes, if any)."""
    sha = result.sha256
    assert sha is not None
    verdict = decide(existing.sha256 if existing is not None else None, sha, replace=replace)
    if verdict is Decision.SKIP:
        assert existing is not None
        result.result = "skipped"
        result.import_id = existing.id
        result.rows = existing.row_count or 0
        result.detail = f"already imported as #{existing.id}"
    elif verdict is Decision.CONFLICT:
        assert existing is not None
        raise ConflictError(
            f"{path}: conflict: {path.name} was imported as #{existing.id} with different "
            f"content (sha256 {existing.sha256[:12]}…, this file {sha[:12]}…); nothing written",
            hint="use --replace to supersede the earlier import")
    return existing
