"""How soon a COPY stream's writer thread gets the GIL back, while it is the only one.

A stream sends through psycopg's writer thread (engine.copy.BoundedWriter), which needs the
GIL every time the socket has drained: about 200 kB on a local socket, a few milliseconds of
the server's parsing. The loading thread meanwhile holds the GIL for the checks on the next
chunk, and by default Python lets a waiting thread wait up to 5 ms for it
(`sys.getswitchinterval()`), so the server sat idle part of each wait. A shorter interval
while one stream runs measured (5M rows, 5 alternations each, embedded PostgreSQL 18): one
stream into an existing table 7.40 s -> 6.67 s, a first import with inference 8.01 s ->
7.20 s. With two streams at once (`--jobs 2`) both CPUs are already busy with the servers'
work and the extra switches only took from it (4.40 s -> 4.69 s), so the interval goes back
to Python's as soon as a second stream starts.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

LONE_STREAM_SWITCH_SECONDS = 0.0005


class _Streams:
    """The streams running in this process, and the switch interval that follows from them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._default = sys.getswitchinterval()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            if self._running == 0:
                self._default = sys.getswitchinterval()  # whatever the host process set
            self._running += 1
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._apply()

    def _apply(self) -> None:
        sys.setswitchinterval(LONE_STREAM_SWITCH_SECONDS if self._running == 1
                              else self._default)


# Around each COPY stream that sends from a writer thread.
copy_stream = _Streams().running
