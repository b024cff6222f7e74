"""The one interface every load path inside a file's transaction has: a `LoadPath` is a
function of the context and the job that gives `Loaded`; `choose_load` picks one for a
target. (The parallel load and the dry run are chosen before the transaction.)"""

from __future__ import annotations

from collections.abc import Callable

from snapshots.engine.append import load_append
from snapshots.engine.context import LoadContext, Loaded, LoadJob
from snapshots.engine.target import Target
from snapshots.engine.upsert import load_upsert
from snapshots.options import ImportOptions
from snapshots.rejects import load_skip

LoadPath = Callable[[LoadContext, LoadJob], Loaded]


def choose_load(options: ImportOptions, target: Target) -> LoadPath:
    """--on-error skip, append, or upsert."""
    if options.on_error == "skip":
        return load_skip
    return load_append if target.mode == "append" else load_upsert
