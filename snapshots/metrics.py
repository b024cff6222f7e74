"""Metric definitions, the HTTP endpoints of `sync`, and the Pushgateway.

Labels never carry file paths: a label per file would grow without bound. Durations are
counted in seconds (`snapshots_import_duration_seconds`), timestamps in Unix seconds.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    push_to_gateway,
)

from snapshots import __version__
from snapshots.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from snapshots.importer import FileResult

log = logging.getLogger(__name__)

# `*_created` series double the output and no dashboard of ours uses them.
disable_created_metrics()

RESULTS = ("imported", "skipped", "failed", "conflict")
DEFAULT_METRICS_PORT = 9840
# Imports take from milliseconds (already imported) to many minutes (gigabytes).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """Every metric of SPEC section 6, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.files = Counter("snapshots_files", "Files handled, by result.", ["result"],
                             registry=r)
        for result in RESULTS:
            self.files.labels(result)  # every series exists from the start, at 0
        self.rows = Counter("snapshots_rows", "Rows loaded.", registry=r)
        self.rows_rejected = Counter("snapshots_rows_rejected",
                                     "Rows rejected under --on-error skip.", registry=r)
        self.bytes = Counter("snapshots_bytes", "Bytes of snapshot files loaded.", registry=r)
        self.duration = Histogram("snapshots_import_duration_seconds",
                                  "Time to import one file, in seconds.",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.pending = Gauge("snapshots_pending_files",
                             "Files in the directory not imported yet.", registry=r)
        self.oldest_pending_age = Gauge("snapshots_oldest_pending_age_seconds",
                                        "Age of the oldest pending file, in seconds.",
                                        registry=r)
        self.last_success = Gauge("snapshots_last_success_timestamp_seconds",
                                  "When a file was last imported, Unix time in seconds.",
                                  registry=r)
        self.database_up = Gauge("snapshots_database_up",
                                 "1 when the database answers, else 0.", registry=r)
        self.build_info = Gauge("snapshots_build_info", "The running version.", ["version"],
                                registry=r)
        self.build_info.labels(__version__).set(1)

    def observe(self, result: FileResult) -> None:
        """Count one file's outcome where it happened."""
        if result.result not in RESULTS:
            return  # `busy` (another process has it) and dry runs are not outcomes
        self.files.labels(result.result).inc()
        if result.result == "imported":
            self.rows.inc(result.rows)
            self.rows_rejected.inc(result.rejected)
            self.bytes.inc(result.bytes)
            self.duration.observe(result.seconds)
            self.last_success.set(time.time())

    def expose(self) -> bytes:
        return generate_latest(self.registry)


def grouping_key(table: str, schema: str | None) -> dict[str, str]:
    """Stable across runs and pods, so each push replaces the last one for this target."""
    key = {"table": table}
    if schema:
        key["schema"] = schema
    return key


def push(url: str, metrics: Metrics, *, job: str, table: str, schema: str | None) -> bool:
    """Push to a Pushgateway; a failure is a warning, never a failed run."""
    try:
        push_to_gateway(url, job=job, registry=metrics.registry,
                        grouping_key=grouping_key(table, schema), timeout=10)
    except (OSError, ValueError) as exc:
        log.warning("could not push metrics to the Pushgateway %s: %s", url, exc)
        return False
    return True


def push_results(url: str, results: Iterable[FileResult], *, table: str, origin: str,
                 schema: str | None = None) -> bool:
    metrics = Metrics()
    reached = True
    for result in results:
        metrics.observe(result)
        if isinstance(result.error, DatabaseUnavailable):
            reached = False  # the database went away during the run
    metrics.database_up.set(1 if reached else 0)
    return push(url, metrics, job=f"snapshots_{origin}", table=table, schema=schema)


def push_database_down(url: str, *, table: str, origin: str, schema: str | None = None) -> bool:
    """A run that could not reach the database at all still reports it."""
    metrics = Metrics()
    metrics.database_up.set(0)
    return push(url, metrics, job=f"snapshots_{origin}", table=table, schema=schema)


# --------------------------------------------------------------------------- HTTP


class HealthServer:
    """/metrics, /healthz (the loop is alive) and /readyz (the database answers)."""

    def __init__(self, metrics: Metrics, *, host: str, port: int,
                 alive: Callable[[], bool], ready: Callable[[], bool]) -> None:
        self.metrics = metrics
        self.alive = alive
        self.ready = ready
        handler = self._handler()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A scraper or health probe that gave up (its timeout) before the reply is
                # routine, not a traceback on stderr; anything else still gets one.
                if isinstance(sys.exc_info()[1], ConnectionError):
                    log.debug("http: %s went away before the reply", client_address)
                    return
                super().handle_error(request, client_address)

        self.server = Server((host, port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics",
                                       daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, owner.metrics.expose(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok = owner.alive()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
                elif path == "/readyz":
                    ok = owner.ready()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"database down\n")
                else:
                    self._reply(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _reply(self, code: int, body: bytes,
                       content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        return Handler
