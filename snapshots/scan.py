"""The data directory as sync sees it: which files are candidates (patterns, hidden and
partial names), their signatures, and filesystem events that only wake the loop early."""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from snapshots.filesig import FileSignature

# The JSON log names the logger: the service's lines keep the one they always had.
log = logging.getLogger("snapshots.sync")

DEFAULT_PATTERNS = ("*.csv", "*.csv.gz")
IGNORED = ("*.tmp", "*.part", "*~")


def list_files(root: Path, patterns: tuple[str, ...], *,
               recursive: bool) -> dict[str, FileSignature]:
    """Candidate files, relative to `root`: matching, complete-looking, not hidden."""
    found: dict[str, FileSignature] = {}
    walker: Iterable[tuple[str, list[str], list[str]]]
    if recursive:
        walker = os.walk(root)
    else:
        try:
            names = os.listdir(root)
        except OSError as exc:
            log.warning("cannot list %s: %s", root, exc)
            return found
        walker = [(str(root), [], names)]
    for directory, dirs, names in walker:
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not wanted(name, patterns):
                continue
            full = os.path.join(directory, name)
            try:
                st = os.stat(full)
            except OSError:
                continue  # gone between listing and stat
            if not os.path.isfile(full):
                continue
            found[os.path.relpath(full, root)] = FileSignature.of(st)
    return found


def wanted(name: str, patterns: tuple[str, ...]) -> bool:
    if name.startswith(".") or any(fnmatch.fnmatch(name, p) for p in IGNORED):
        return False
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def start_watcher(root: Path, *, recursive: bool, stop: threading.Event,
                  changed: Callable[[], None]) -> threading.Thread:
    """Call `changed` whenever the directory changes, until `stop` is set."""
    import watchfiles  # imported when needed: --poll runs without it

    def watch() -> None:
        try:
            for _changes in watchfiles.watch(
                    root, recursive=recursive, stop_event=stop, debounce=50, step=20,
                    rust_timeout=1000, yield_on_timeout=False, raise_interrupt=False):
                changed()
        except Exception as exc:  # events are an optimisation; the rescan still works
            log.warning("file events unavailable (%s); relying on the rescan", exc)

    thread = threading.Thread(target=watch, name="watcher", daemon=True)
    thread.start()
    return thread
