"""What a sync run did, as counts and a JSON summary (at most 4 KB: what Kubernetes keeps
of a termination message), and the one place each file's outcome is counted and logged."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from snapshots import __version__
from snapshots.engine.result import FileResult
from snapshots.metrics import Metrics
from snapshots.output import plural

# The JSON log names the logger: the service's lines keep the one they always had.
log = logging.getLogger("snapshots.sync")

SUMMARY_LIMIT = 4096  # bytes: Kubernetes keeps at most 4 KB of a termination message


@dataclass
class Summary:
    imported: int = 0
    skipped: int = 0
    failed: int = 0
    conflict: int = 0
    rows: int = 0
    rejected_rows: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None  # set when the run ends: every rendering says the same
    failures: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False
    database_error: str | None = None
    # Files that failed in an earlier run with the same bytes: not retried, but a --once run
    # must not look green while they sit there.
    still_failed: dict[str, str] = field(default_factory=dict)  # name -> its earlier error

    def add(self, result: FileResult) -> None:
        if result.result == "imported":
            self.imported += 1
            self.rows += result.rows
            self.rejected_rows += result.rejected
            self.bytes += result.bytes
        elif result.result == "skipped":
            self.skipped += 1
        elif result.result in ("failed", "conflict"):
            setattr(self, result.result, getattr(self, result.result) + 1)
            self.failures.append({"file": result.file_name,
                                  "error": str(result.error or result.detail)})

    def as_json(self, table: str) -> str:
        """At most 4 KB: the failure list is cut to fit, and says so."""
        payload: dict[str, Any] = {
            "version": __version__, "table": table,
            "files": {"imported": self.imported, "skipped": self.skipped,
                      "failed": self.failed, "conflict": self.conflict,
                      "still_failed": len(self.still_failed)},
            "rows": self.rows, "rejected_rows": self.rejected_rows, "bytes": self.bytes,
            "seconds": round((self.finished or time.monotonic()) - self.started, 3),
            "interrupted": self.interrupted, "failures": [], "failures_omitted": 0,
        }
        if self.database_error:
            payload["database_error"] = self.database_error[:300]
        failures = self.failures + [
            {"file": name, "error": f"failed in an earlier run with these bytes ({error}); "
                                    "not retried until they change or `snapshots retry` is run"}
            for name, error in sorted(self.still_failed.items())]
        text = json.dumps(payload, separators=(",", ":"))
        for index, failure in enumerate(failures):
            entry = {"file": failure["file"][:200], "error": failure["error"][:300]}
            payload["failures"].append(entry)
            payload["failures_omitted"] = len(failures) - index - 1
            candidate = json.dumps(payload, separators=(",", ":"))
            if len(candidate.encode()) > SUMMARY_LIMIT:
                payload["failures"].pop()
                payload["failures_omitted"] = len(failures) - index
                break
            text = candidate
        return json.dumps(payload, separators=(",", ":")) if len(text.encode()) > SUMMARY_LIMIT \
            else text

    @property
    def ok(self) -> bool:
        return not (self.failed or self.conflict or self.interrupted or self.database_error
                    or self.still_failed)


def report_outcome(result: FileResult, metrics: Metrics, summary: Summary, *,
                   quiet: bool = False) -> None:
    """A file's final outcome: counted in the metrics and the summary, and logged."""
    metrics.observe(result)
    summary.add(result)
    fields = {"snap_file": result.file_name, "snap_result": result.result,
              "snap_rows": result.rows, "snap_seconds": round(result.seconds, 3)}
    for warning in result.warnings:
        log.warning("%s", warning, extra=fields)
    if result.result == "imported":
        log.info("imported %s: %s in %.2fs%s", result.file_name,
                 plural(result.rows, "row"), result.seconds,
                 f" ({result.detail})" if result.detail else "", extra=fields)
    elif result.result in ("failed", "conflict"):
        log.error("%s %s: %s", result.result, result.file_name,
                  result.error or result.detail, extra=fields)
    elif not quiet:
        log.info("%s %s: %s", result.result, result.file_name, result.detail, extra=fields)
    else:
        log.debug("skipped %s: %s", result.file_name, result.detail, extra=fields)


def report_cancelled(result: FileResult) -> None:
    """Cancelled at shutdown: not an outcome of the file, so not counted; said once."""
    log.warning("cancelled %s at shutdown; nothing written, the next run loads it",
                result.file_name, extra={"snap_file": result.file_name,
                                         "snap_result": "cancelled"})


def report_still_failed(summary: Summary, name: str, error: str) -> None:
    """Failed in an earlier run with these bytes: not retried, but a --once run must not look
    green while it sits there; said once."""
    if name in summary.still_failed or name in {f["file"] for f in summary.failures}:
        return
    summary.still_failed[name] = error
    log.warning("%s failed earlier with these bytes: %s; not retried until they change or "
                "`snapshots retry` asks", name, error,
                extra={"snap_file": name, "snap_result": "failed"})
