"""A SnapshotSource's status: its conditions and the patches after configuring, a Job's
start, a finished run and the operator's own errors.

Pure: nothing reads the clock; callers pass ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from snapshots_operator.naming import (
    ANNOTATION_TRIGGER,
    TRIGGER_SCHEDULE,
    cronjob_name,
    spec_with_defaults,
)
from snapshots_operator.run_outcomes import RunOutcome

# --------------------------------------------------------------------------- status

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")


def set_condition(conditions: Sequence[Mapping[str, Any]], type_: str, status: str,
                  reason: str, message: str, now: str,
                  generation: int | None) -> list[dict[str, Any]]:
    """Conditions with ``type_`` set; lastTransitionTime moves only when the status changes."""
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != status
        result.append(_condition(
            type_, status, reason, message,
            now if changed else condition.get("lastTransitionTime", now), generation))
    if not found:
        result.append(_condition(type_, status, reason, message, now, generation))
    order = {name: index for index, name in enumerate(CONDITION_TYPES)}
    return sorted(result, key=lambda c: order.get(c.get("type", ""), len(order)))


def _condition(type_: str, status: str, reason: str, message: str, when: str,
               generation: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": type_, "status": status, "reason": reason,
                            "message": message[:1024], "lastTransitionTime": when}
    if generation is not None:  # a null inside a list would be stored, and is invalid
        item["observedGeneration"] = generation
    return item


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for item in (status or {}).get("conditions") or ():
        if item.get("type") == type_:
            return item
    return None


def _generation(source: Mapping[str, Any]) -> int | None:
    return source.get("metadata", {}).get("generation")


def status_configured(source: Mapping[str, Any], now: str, *, launched: str | None = None,
                      ) -> dict[str, Any]:
    """The status after creating/patching the CronJob (and maybe launching a Job)."""
    status = source.get("status") or {}
    spec = spec_with_defaults(source["spec"])
    generation = _generation(source)
    conditions = list(status.get("conditions") or [])
    active = list(status.get("activeJobs") or [])
    if launched and launched not in active:
        active.append(launched)
    if not condition(status, "Ready"):
        conditions = set_condition(conditions, "Ready", "Unknown", "AwaitingFirstRun",
                                   "no run has finished yet", now, generation)
    if not condition(status, "Degraded"):
        conditions = set_condition(conditions, "Degraded", "False", "AsExpected",
                                   "no failed run", now, generation)
    conditions = _progressing(conditions, active, bool(spec["suspend"]), now, generation)
    return {
        "observedGeneration": generation,
        "cronJob": cronjob_name(source),
        "schedule": spec["schedule"],
        "suspended": bool(spec["suspend"]),
        "active": len(active),
        "activeJobs": active,
        "conditions": conditions,
    }


def _progressing(conditions: list[dict[str, Any]], active: Sequence[str], suspended: bool,
                 now: str, generation: int | None) -> list[dict[str, Any]]:
    if active:
        return set_condition(conditions, "Progressing", "True", "JobRunning",
                             f"running: {', '.join(active)}", now, generation)
    if suspended:
        return set_condition(conditions, "Progressing", "False", "Suspended",
                             "the schedule is suspended (sync-now still runs)", now, generation)
    return set_condition(conditions, "Progressing", "False", "Idle",
                         "waiting for the next scheduled run", now, generation)


def status_job_started(source: Mapping[str, Any], job: Mapping[str, Any], now: str,
                       ) -> dict[str, Any] | None:
    """The status once a Job is seen running; None when the status already says so."""
    status = source.get("status") or {}
    name = job["metadata"]["name"]
    active = list(status.get("activeJobs") or [])
    if name in active:
        return None
    active.append(name)
    generation = _generation(source)
    suspended = bool(spec_with_defaults(source.get("spec") or {})["suspend"])
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "active": len(active),
        "activeJobs": active,
        "conditions": _progressing(list(status.get("conditions") or []), active, suspended,
                                   now, generation),
    }
    trigger = (job["metadata"].get("annotations") or {}).get(ANNOTATION_TRIGGER)
    if trigger == TRIGGER_SCHEDULE:
        patch["lastScheduleTime"] = (job.get("status") or {}).get("startTime") or \
            job["metadata"].get("creationTimestamp") or now
    return patch


def status_after_run(source: Mapping[str, Any], outcome: RunOutcome, now: str,
                     ) -> dict[str, Any]:
    """The status once a finished Job has been read: lastRun, times and the conditions."""
    status = source.get("status") or {}
    generation = _generation(source)
    suspended = bool(spec_with_defaults(source.get("spec") or {})["suspend"])
    active = [name for name in status.get("activeJobs") or [] if name != outcome.job]
    conditions = list(status.get("conditions") or [])
    when = outcome.completion_time or now
    patch: dict[str, Any] = {"observedGeneration": generation, "active": len(active),
                             "activeJobs": active}
    if outcome.trigger == TRIGGER_SCHEDULE and outcome.start_time and \
            (status.get("lastScheduleTime") or "") < outcome.start_time:
        patch["lastScheduleTime"] = outcome.start_time
    previous = (status.get("lastRun") or {}).get("completionTime")
    if previous and outcome.completion_time and previous > outcome.completion_time:
        # An older run read late (e.g. after an operator restart): it must not replace the
        # newer run's result; only its time is kept, if it is the latest of its kind.
        key = "lastSuccessfulTime" if outcome.succeeded else "lastFailedTime"
        if (status.get(key) or "") < when:
            patch[key] = when
        patch["conditions"] = _progressing(conditions, active, suspended, now, generation)
        return patch
    patch["lastRun"] = outcome.as_status()
    if outcome.succeeded:
        patch["lastSuccessfulTime"] = when
        conditions = set_condition(conditions, "Ready", "True", outcome.reason, outcome.message,
                                   now, generation)
        conditions = set_condition(conditions, "Degraded", "False", "AsExpected",
                                   "the last run succeeded", now, generation)
    else:
        patch["lastFailedTime"] = when
        conditions = set_condition(conditions, "Ready", "False", outcome.reason,
                                   outcome.message, now, generation)
        conditions = set_condition(conditions, "Degraded", "True", outcome.reason,
                                   outcome.message, now, generation)
    patch["conditions"] = _progressing(conditions, active, suspended, now, generation)
    return patch


def status_error(source: Mapping[str, Any], reason: str, message: str, now: str,
                 ) -> dict[str, Any]:
    """The status when the operator itself cannot do its part (e.g. the CronJob is refused)."""
    status = source.get("status") or {}
    generation = _generation(source)
    conditions = set_condition(list(status.get("conditions") or []), "Degraded", "True",
                               reason, message, now, generation)
    return {"observedGeneration": generation, "conditions": conditions}
