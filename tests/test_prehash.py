"""Hashing ahead of the import (snapshots.prehash): the right hash and cut points, handed over
only while the file is unchanged, never a wait on a file the thread has not reached, and at
most `ahead` files read ahead of the import."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from helpers import run_cli

from snapshots.csvio.cutpoints import split_records
from snapshots.csvio.dialect import CsvOptions
from snapshots.prehash import Prehasher


def write(path: Path, rows: int) -> Path:
    path.write_bytes(b"a,b\n" + b"".join(b'%d,"x\ny"\n' % i for i in range(rows)))
    return path


def test_hashes_and_cut_points_in_the_same_read(tmp_path: Path) -> None:
    files = [write(tmp_path / f"s_2023010{n}.csv", 500 * n) for n in (1, 2)]
    with Prehasher(files, parts=lambda _p, _s: 3, options=CsvOptions(), ahead=1) as pre:
        for path in files:
            hashed = pre.take(path)
            assert hashed is not None
            assert hashed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert hashed.size == path.stat().st_size
            assert hashed.parts == 3
            assert hashed.ranges == split_records(path, 3, CsvOptions())


def test_one_stream_has_no_cut_points(tmp_path: Path) -> None:
    path = write(tmp_path / "s_20230101.csv", 10)
    with Prehasher([path], parts=lambda _p, _s: 1, options=CsvOptions()) as pre:
        hashed = pre.take(path)
    assert hashed is not None and hashed.ranges is None


def test_a_file_changed_after_its_hash_is_not_handed_over(tmp_path: Path) -> None:
    path = write(tmp_path / "s_20230101.csv", 10)
    other = write(tmp_path / "s_20230102.csv", 10)
    hashed_first = threading.Event()

    def parts(p: Path, _size: int) -> int:
        if p == other:
            hashed_first.set()  # the thread finished the first file and moved on
        return 1

    with Prehasher([path, other], parts=parts, options=CsvOptions(), ahead=2) as pre:
        assert hashed_first.wait(10)
        with path.open("ab") as f:
            f.write(b"99,late\n")
        assert pre.take(path) is None  # the importer hashes it again itself
        assert pre.take(other) is not None


def test_a_file_replaced_by_another_with_the_same_size(tmp_path: Path) -> None:
    path = write(tmp_path / "s_20230101.csv", 10)
    with Prehasher([path], parts=lambda _p, _s: 1, options=CsvOptions()) as pre:
        stale = pre.take(path)
    assert stale is not None
    replacement = tmp_path / "new.csv"
    replacement.write_bytes(path.read_bytes().replace(b"x", b"z"))
    os.replace(replacement, path)  # same size, new inode
    with Prehasher([path], parts=lambda _p, _s: 1, options=CsvOptions()) as pre:
        fresh = pre.take(path)
    assert fresh is not None and fresh.sha256 != stale.sha256


def test_taken_out_of_order_or_unknown_returns_none_without_waiting(tmp_path: Path) -> None:
    files = [write(tmp_path / f"s_2023010{n}.csv", 10) for n in (1, 2, 3)]
    started = threading.Event()
    release = threading.Event()

    def parts(_p: Path, _size: int) -> int:
        started.set()
        assert release.wait(10)  # hold the thread on the first file
        return 1

    with Prehasher(files, parts=parts, options=CsvOptions(), ahead=1) as pre:
        assert started.wait(10)
        assert pre.take(files[2]) is None  # not reached: the caller hashes it itself
        assert pre.take(tmp_path / "unknown.csv") is None
        release.set()
        assert pre.take(files[0]) is not None  # in progress: waited for
        assert pre.take(files[1]) is not None
        assert pre.take(files[2]) is None  # withdrawn above: never hashed


def test_reads_at_most_ahead_files_beyond_the_import(tmp_path: Path) -> None:
    files = [write(tmp_path / f"s_2023010{n}.csv", 10) for n in range(1, 6)]
    seen: list[Path] = []
    with Prehasher(files, parts=lambda p, _s: seen.append(p) or 1, options=CsvOptions(),
                   ahead=2, ahead_bytes=0) as pre:
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # A must-not-happen window: the thread has room for two results and no more.
        time.sleep(0.2)
        assert seen == files[:2]
        assert pre.take(files[0]) is not None
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == files[:3]


def test_small_files_are_read_further_ahead_up_to_ahead_bytes(tmp_path: Path) -> None:
    """A batch of small files wants many hashes at once: the thread goes on past `ahead`
    files while the results it holds come to less than `ahead_bytes`, and no further."""
    files = [write(tmp_path / f"s_2023010{n}.csv", 10) for n in range(1, 10)]
    size = files[0].stat().st_size
    started: list[Path] = []
    with Prehasher(files, parts=lambda p, _s: started.append(p) or 1, options=CsvOptions(),
                   ahead=1, ahead_bytes=4 * size) as pre:
        deadline = time.monotonic() + 10

        def resting() -> bool:  # four hashed, none in progress: waiting for room
            with pre._cond:
                return len(started) >= 4 and pre._current is None

        while not resting() and time.monotonic() < deadline:
            time.sleep(0.01)
        # ahead=1 alone would have stopped at one; four files' bytes reach ahead_bytes.
        assert started == files[:4]
        assert all(pre.take(f) is not None for f in files)
    assert started == files


def test_close_abandons_the_rest(tmp_path: Path) -> None:
    files = [write(tmp_path / f"s_2023010{n}.csv", 10) for n in (1, 2)]
    pre = Prehasher(files, parts=lambda _p, _s: 1, options=CsvOptions(), ahead=1)
    pre.close()
    assert not pre._thread.is_alive()
    assert pre.take(files[1]) is None


def test_an_unreadable_file_is_left_to_the_importer(tmp_path: Path) -> None:
    missing = tmp_path / "gone_20230101.csv"
    with Prehasher([missing], parts=lambda _p, _s: 1, options=CsvOptions()) as pre:
        assert pre.take(missing) is None


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_import_uses_the_hash_taken_ahead(tmp_path: Path, cli_env: dict[str, str],
                                          jobs: str) -> None:
    """Through the CLI: the ledger holds the file's real sha256, and a re-import skips."""
    path = write(tmp_path / "snapshot_20230101.csv", 2000)
    first = run_cli("import", "--jobs", jobs, "--part-size", "4k", path, env=cli_env)
    assert first.returncode == 0, first.stderr
    listed = run_cli("list", "--format", "json", env=cli_env)
    [record] = json.loads(listed.stdout)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    again = run_cli("import", "--jobs", jobs, path, env=cli_env)
    assert again.returncode == 0 and "already imported" in again.stdout + again.stderr
