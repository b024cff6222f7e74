"""snapshots.metrics and the --once summary, in process: counts, the HTTP endpoints, the
Pushgateway client, and the 4 KB termination-message limit."""

from __future__ import annotations

import json
import logging
import socket
import struct
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import require_tool, wait_until

from snapshots import __version__, sync
from snapshots.importer import FileResult
from snapshots.metrics import RESULTS, HealthServer, Metrics, grouping_key, push, push_results
from snapshots.sync import SUMMARY_LIMIT, Summary, write_summary


def result(kind: str, *, rows: int = 0, rejected: int = 0, size: int = 0,
           seconds: float = 0.0, name: str = "snapshot_20230101.csv") -> FileResult:
    return FileResult(path=Path(name), result=kind, file_name=name, rows=rows,
                      rejected=rejected, bytes=size, seconds=seconds)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# --------------------------------------------------------------------------- Metrics


def test_every_series_exists_from_the_start() -> None:
    metrics = Metrics()
    for kind in RESULTS:
        assert value(metrics, "snapshots_files_total", result=kind) == 0
    assert value(metrics, "snapshots_rows_total") == 0
    assert value(metrics, "snapshots_build_info", version=__version__) == 1
    assert value(metrics, "snapshots_import_duration_seconds_count") == 0
    text = metrics.expose().decode()
    assert "_created" not in text


def test_observe_counts_each_outcome_where_it_happened() -> None:
    metrics = Metrics()
    metrics.observe(result("imported", rows=10, rejected=2, size=300, seconds=0.7))
    metrics.observe(result("imported", rows=5, size=100, seconds=0.2))
    metrics.observe(result("skipped", rows=99, size=999, seconds=0.001))
    metrics.observe(result("failed", rows=3, size=50))
    metrics.observe(result("conflict", size=50))
    metrics.observe(result("busy"))  # another process has it: not an outcome
    metrics.observe(result("validated", rows=7))  # a dry run writes nothing
    assert value(metrics, "snapshots_files_total", result="imported") == 2
    assert value(metrics, "snapshots_files_total", result="skipped") == 1
    assert value(metrics, "snapshots_files_total", result="failed") == 1
    assert value(metrics, "snapshots_files_total", result="conflict") == 1
    assert value(metrics, "snapshots_rows_total") == 15  # imported rows only
    assert value(metrics, "snapshots_rows_rejected_total") == 2
    assert value(metrics, "snapshots_bytes_total") == 400
    # Only imports are timed: a restart skipping 10,000 files must not flood it with zeros.
    assert value(metrics, "snapshots_import_duration_seconds_sum") == pytest.approx(0.9)
    assert value(metrics, "snapshots_import_duration_seconds_count") == 2
    assert value(metrics, "snapshots_import_duration_seconds_bucket", le="0.5") == 1
    assert (value(metrics, "snapshots_last_success_timestamp_seconds") or 0) > 1.6e9


def test_grouping_key_is_stable_and_has_no_paths() -> None:
    assert grouping_key("snapshots", None) == {"table": "snapshots"}
    assert grouping_key("t", "s") == {"table": "t", "schema": "s"}


def test_promtool_accepts_the_exposition() -> None:
    promtool = require_tool("promtool")
    metrics = Metrics()
    metrics.observe(result("imported", rows=10, size=300, seconds=0.7))
    metrics.observe(result("failed"))
    metrics.pending.set(3)
    metrics.database_up.set(1)
    check = subprocess.run([promtool, "check", "metrics"], input=metrics.expose().decode(),
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


# --------------------------------------------------------------------------- Summary


def test_summary_counts_and_ok() -> None:
    summary = Summary()
    summary.add(result("imported", rows=4, size=10))
    summary.add(result("skipped"))
    assert summary.ok
    payload = json.loads(summary.as_json("snapshots"))
    assert payload["files"] == {"imported": 1, "skipped": 1, "failed": 0, "conflict": 0,
                                "still_failed": 0}
    assert (payload["rows"], payload["bytes"], payload["table"]) == (4, 10, "snapshots")
    assert payload["seconds"] >= 0 and payload["version"] == __version__
    summary.add(result("failed", name="bad.csv"))
    assert not summary.ok
    assert json.loads(summary.as_json("snapshots"))["failures"][0]["file"] == "bad.csv"


def test_summary_is_the_same_however_often_it_is_rendered() -> None:
    summary = Summary()
    summary.finished = summary.started + 1.25
    assert summary.as_json("t") == summary.as_json("t")
    assert json.loads(summary.as_json("t"))["seconds"] == 1.25


@pytest.mark.parametrize("char", ["x", "é", "🙂"])
def test_summary_fits_four_kilobytes_with_many_failures(char: str) -> None:
    summary = Summary()
    summary.database_error = "lost the database " * 100
    for i in range(500):
        failure = result("failed", name=f"snapshot_{i:04d}_{char * 300}.csv")
        failure.detail = f"{char} line {i}: bad value " * 50
        summary.add(failure)
    text = summary.as_json("snapshots")
    assert len(text.encode()) <= SUMMARY_LIMIT
    payload = json.loads(text)
    assert payload["files"]["failed"] == 500
    assert payload["failures"], "as many failures as fit are listed"
    assert len(payload["failures"]) + payload["failures_omitted"] == 500
    assert payload["failures"][0]["file"].startswith("snapshot_0000_")


def test_write_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       caplog: pytest.LogCaptureFixture) -> None:
    summary = Summary()
    summary.add(result("imported", rows=1))
    target = tmp_path / "summary.json"
    assert write_summary(summary, "t", target) == target
    assert json.loads(target.read_text())["rows"] == 1

    # Default: /dev/termination-log only when it exists (it does in a Kubernetes pod).
    missing = tmp_path / "no-termination-log"
    monkeypatch.setattr(sync, "TERMINATION_LOG", missing)
    assert write_summary(summary, "t", None) is None
    assert not missing.exists()
    present = tmp_path / "termination-log"
    present.touch()
    monkeypatch.setattr(sync, "TERMINATION_LOG", present)
    assert write_summary(summary, "t", None) == present
    assert json.loads(present.read_text())["files"]["imported"] == 1

    with caplog.at_level(logging.WARNING, logger="snapshots.sync"):
        assert write_summary(summary, "t", tmp_path / "no" / "such" / "dir.json") is None
    assert "could not write the summary" in caplog.text


# --------------------------------------------------------------------------- HTTP


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_health_server_endpoints() -> None:
    state = {"alive": True, "ready": False}
    metrics = Metrics()
    metrics.observe(result("imported", rows=42, size=7))
    server = HealthServer(metrics, host="127.0.0.1", port=0, alive=lambda: state["alive"],
                          ready=lambda: state["ready"]).start()
    try:
        status, content_type, body = get(server.port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert "snapshots_rows_total 42.0" in body
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/readyz")[:1] == (503,)
        state["ready"] = True
        assert get(server.port, "/readyz")[0] == 200
        assert get(server.port, "/readyz?verbose=1")[0] == 200
        state["alive"] = False
        assert get(server.port, "/healthz")[0] == 503
        assert get(server.port, "/")[0] == 404
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)


def test_a_client_that_gives_up_before_the_reply_leaves_no_traceback(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    # The image's HEALTHCHECK gives up after 4 s; a sync that answers later must not print a
    # BrokenPipeError traceback for it (seen with the container paused by SIGSTOP).
    client_gone = threading.Event()
    answered = threading.Event()

    def alive() -> bool:
        client_gone.wait(10)
        answered.set()
        return True

    server = HealthServer(Metrics(), host="127.0.0.1", port=0, alive=alive,
                          ready=lambda: True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            # Closing with a reset, as a client process that timed out and exited does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        caplog.set_level(logging.DEBUG, logger="snapshots.metrics")
        client_gone.set()
        assert answered.wait(10)
        stderr: list[str] = []

        def handled() -> bool:
            stderr.append(capfd.readouterr().err)
            return "Traceback" in "".join(stderr) or "went away" in caplog.text

        wait_until(handled, timeout=10, message="the failed reply to be handled")
        assert get(server.port, "/healthz")[0] == 200  # and it still serves the next one
    finally:
        server.stop()
    assert "Traceback" not in "".join(stderr)


# --------------------------------------------------------------------------- Pushgateway


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_push_to_an_unreachable_gateway_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with caplog.at_level(logging.WARNING, logger="snapshots.metrics"):
        assert push(url, Metrics(), job="snapshots_sync", table="t", schema=None) is False
        assert push_results(url, [result("imported")], table="t", origin="import") is False
    assert caplog.text.count("could not push metrics") == 2


class _Gateway(BaseHTTPRequestHandler):
    """A stand-in Pushgateway that records what it is sent (a subclass per test)."""

    received: ClassVar[list[tuple[str, str, bytes]]]
    status: ClassVar[int]

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(("PUT", self.path, body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    class Handler(_Gateway):
        received: ClassVar[list[tuple[str, str, bytes]]] = []
        status: ClassVar[int] = 200

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    finally:
        server.shutdown()
        server.server_close()


def test_push_uses_a_stable_grouping_key(gateway: tuple[str, type[_Gateway]]) -> None:
    url, handler = gateway
    metrics = Metrics()
    metrics.observe(result("imported", rows=3))
    assert push(url, metrics, job="snapshots_sync", table="snapshots", schema="etl") is True
    assert push(url, metrics, job="snapshots_sync", table="snapshots", schema="etl") is True
    paths = [path for _, path, _ in handler.received]
    assert paths == ["/metrics/job/snapshots_sync/schema/etl/table/snapshots"] * 2
    assert b"snapshots_rows_total 3.0" in handler.received[0][2]


def test_push_rejected_by_the_gateway_is_a_warning(gateway: tuple[str, type[_Gateway]],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    url, handler = gateway
    handler.status = 500
    with caplog.at_level(logging.WARNING, logger="snapshots.metrics"):
        assert push(url, Metrics(), job="snapshots_sync", table="t", schema=None) is False
    assert "could not push metrics" in caplog.text
