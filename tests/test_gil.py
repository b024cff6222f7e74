"""The switch interval follows the COPY streams running in the process (engine.gil)."""

from __future__ import annotations

import sys
import threading

import pytest

from snapshots.engine.gil import LONE_STREAM_SWITCH_SECONDS, copy_stream


def test_one_stream_gets_the_short_interval_two_get_pythons_back() -> None:
    host = sys.getswitchinterval()
    assert host != LONE_STREAM_SWITCH_SECONDS
    with copy_stream():
        assert sys.getswitchinterval() == LONE_STREAM_SWITCH_SECONDS
        with copy_stream():
            assert sys.getswitchinterval() == host
        assert sys.getswitchinterval() == LONE_STREAM_SWITCH_SECONDS
    assert sys.getswitchinterval() == host


def test_a_stream_that_fails_still_gives_the_interval_back() -> None:
    host = sys.getswitchinterval()
    with pytest.raises(RuntimeError), copy_stream():
        raise RuntimeError("COPY failed")
    assert sys.getswitchinterval() == host


def test_the_host_processes_own_interval_is_what_comes_back() -> None:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.002)
    try:
        with copy_stream():
            pass
        assert sys.getswitchinterval() == 0.002
    finally:
        sys.setswitchinterval(before)


def test_streams_in_threads_keep_count() -> None:
    host = sys.getswitchinterval()
    started, release = threading.Barrier(3), threading.Event()

    def stream() -> None:
        with copy_stream():
            started.wait(timeout=10)
            release.wait(timeout=10)

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)
    assert sys.getswitchinterval() == host  # two at once
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert sys.getswitchinterval() == host
