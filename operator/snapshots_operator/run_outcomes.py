"""What a finished Job amounted to, read from its conditions and its pods' terminations.

Pure: the Job and its pods (plain dicts) in, a RunOutcome out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from snapshots.errors import ExitCode  # what `sync --once` exits with: one enum, both sides
from snapshots_operator.naming import ANNOTATION_TRIGGER, CONTAINER, TRIGGER_SCHEDULE

# --------------------------------------------------------------------------- run outcomes

@dataclass(frozen=True)
class RunOutcome:
    """What one finished Job amounted to, read from its conditions and its pods."""

    job: str
    trigger: str
    succeeded: bool
    reason: str
    message: str
    start_time: str | None = None
    completion_time: str | None = None
    exit_code: int | None = None
    summary: Mapping[str, Any] | None = None

    @property
    def result(self) -> str:
        return "Succeeded" if self.succeeded else "Failed"

    def as_status(self) -> dict[str, Any]:
        run: dict[str, Any] = {
            "job": self.job, "trigger": self.trigger, "result": self.result,
            "reason": self.reason, "message": self.message,
            "startTime": self.start_time, "completionTime": self.completion_time,
            "exitCode": self.exit_code, "summary": dict(self.summary) if self.summary else None,
        }
        return run


def job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition
    return None


def job_finished(job: Mapping[str, Any]) -> bool:
    return bool(job_condition(job, "Complete") or job_condition(job, "Failed"))


def job_active(job: Mapping[str, Any]) -> bool:
    return not job_finished(job)


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """The `sync --once` JSON summary from a termination message, or None (e.g. a log tail)."""
    if not message:
        return None
    try:
        data = json.loads(message.strip())
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("files"), dict):
        return data
    return None


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            state = (status.get("state") or {}).get("terminated")
            return state or (status.get("lastState") or {}).get("terminated")
    return None


def last_terminated(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most recent termination of the sync container among the Job's pods."""
    states = [state for pod in pods if (state := _terminated(pod))]
    if not states:
        return None
    return max(states, key=lambda s: (s.get("finishedAt") or "", s.get("startedAt") or ""))


def _last_line(text: str | None, limit: int = 300) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def summary_message(summary: Mapping[str, Any]) -> str:
    files = summary.get("files") or {}
    text = (f"imported {files.get('imported', 0)}, skipped {files.get('skipped', 0)}, "
            f"failed {files.get('failed', 0)}, conflicts {files.get('conflict', 0)}; "
            f"{summary.get('rows', 0)} rows")
    if summary.get("rejected_rows"):
        text += f" ({summary['rejected_rows']} rejected)"
    if summary.get("seconds") is not None:
        text += f" in {summary['seconds']}s"
    failures = summary.get("failures") or []
    if failures:
        first = failures[0]
        text += f"; {first.get('file')}: {first.get('error')}"
        more = len(failures) - 1 + int(summary.get("failures_omitted") or 0)
        if more:
            text += f" (and {more} more)"
    if summary.get("database_error"):
        text += f"; database: {summary['database_error']}"
    return text


def run_outcome(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> RunOutcome:
    """Decide what a finished Job means: its result, a reason, a message and the summary."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    trigger = (meta.get("annotations") or {}).get(ANNOTATION_TRIGGER, TRIGGER_SCHEDULE)
    state = last_terminated(pods)
    message = (state or {}).get("message")
    summary = parse_summary(message)
    exit_code = (state or {}).get("exitCode")
    common = {"job": meta.get("name", ""), "trigger": trigger,
              "start_time": status.get("startTime"), "exit_code": exit_code,
              "summary": summary}
    complete = job_condition(job, "Complete")
    if complete:
        return RunOutcome(succeeded=True, reason="Synced",
                          message=summary_message(summary) if summary else "the run succeeded",
                          completion_time=status.get("completionTime")
                          or complete.get("lastTransitionTime"), **common)
    failed = job_condition(job, "Failed") or {}
    finished = failed.get("lastTransitionTime") or (state or {}).get("finishedAt")
    deadline = job.get("spec", {}).get("activeDeadlineSeconds")
    if failed.get("reason") == "DeadlineExceeded":
        text = f"the run took longer than activeDeadlineSeconds ({deadline}s) and was stopped"
        if summary:
            text += f"; so far: {summary_message(summary)}"
        reason = "DeadlineExceeded"
    elif state and state.get("reason") == "OOMKilled":
        reason = "OOMKilled"
        text = ("the sync container ran out of memory (OOMKilled); "
                "raise spec.resources.limits.memory")
    elif summary and summary.get("interrupted"):
        reason, text = "Interrupted", f"the run was interrupted; {summary_message(summary)}"
    elif summary and summary.get("database_error") and exit_code == ExitCode.DATABASE:
        reason, text = "DatabaseUnreachable", summary_message(summary)
    elif summary:
        reason, text = "ImportFailed", summary_message(summary)
    elif exit_code == ExitCode.DATABASE:
        reason = "DatabaseUnreachable"
        text = _last_line(message) or "the database could not be reached"
    else:
        reason = "JobFailed"
        detail = _last_line(message) or failed.get("message") or "the Job failed"
        if state:
            detail = f"exit code {exit_code} ({state.get('reason') or 'Error'}): {detail}"
        text = detail
    return RunOutcome(succeeded=False, reason=reason, message=text, completion_time=finished,
                      **common)
