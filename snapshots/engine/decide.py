"""What to do with a file whose name was imported before: a pure rule, shared by the
importer (per file, under its name lock) and sync (before it hands a file over)."""

from __future__ import annotations

from enum import Enum


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
