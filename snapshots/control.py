"""How sync's loop is steered from outside it: woken early (events, finished files), asked
to stop (a signal, or a --once run's end), and seen alive (/healthz) by its heartbeat."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass

# The JSON log names the logger: the service's lines keep the one they always had.
log = logging.getLogger("snapshots.sync")

STALL_SECONDS = 60.0  # /healthz fails when the loop has not turned for this long


@dataclass
class StopRequest:
    """A signal asked the service to stop: said again, with what became of the files then."""

    signal: str
    at: float
    in_flight: int
    cancelled: int = 0

    def announce(self, grace: float) -> None:
        n = self.in_flight
        log.info("received %s: %s (grace %gs)", self.signal,
                 f"finishing {n} file{'s' if n != 1 else ''} in flight" if n
                 else "no file in flight", grace)

    def report(self, finished: float) -> None:
        n = self.in_flight
        log.info("stopped %.1fs after %s; %d file%s in flight then: %d finished, %d cancelled",
                 finished - self.at, self.signal, n, "s" if n != 1 else "",
                 max(0, n - self.cancelled), self.cancelled)


class Control:
    """The loop's events and heartbeat, and the stop request that came by signal, if any."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # stop taking files
        self.wake = threading.Event()
        self.heartbeat = time.monotonic()
        self.request: StopRequest | None = None

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < STALL_SECONDS

    def sleep(self, seconds: float) -> None:
        """Until `seconds` pass or something wakes the loop."""
        self.wake.wait(seconds)
        self.wake.clear()

    def ask_stop(self, signum: int | None, *, in_flight: int, grace: float) -> bool:
        """Stop taking files; False when asked already (then don't wait for the grace)."""
        if self.stop.is_set():
            self.wake.set()
            return False
        if signum is not None:
            self.request = StopRequest(signal.Signals(signum).name, time.monotonic(), in_flight)
            self.request.announce(grace)
        self.stop.set()
        self.wake.set()
        return True
