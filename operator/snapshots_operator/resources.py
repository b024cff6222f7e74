"""Pure builders: a SnapshotSource (a plain dict) in, Kubernetes objects and status out.

Nothing here talks to the API or reads the clock: callers pass ``now``. That keeps every
decision the operator makes testable with exact expectations (tests/test_operator_resources.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from snapshots.errors import ExitCode  # what `sync --once` exits with: one enum, both sides
from snapshots_operator import API_VERSION, KIND, __version__

# --------------------------------------------------------------------------- names & labels

MANAGED_BY = "snapshots-operator"
CONTAINER = "snapshots"
DATA_MOUNT = "/snapshots"          # the volume is mounted read-only here; spec.path is inside it
TLS_MOUNT = "/etc/snapshots/tls"   # database CA / client certificate Secrets
TMP_MOUNT = "/tmp"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_SOURCE = "snapshots.dev/source"

ANNOTATION_SOURCE = "snapshots.dev/source"          # the SnapshotSource's full name
ANNOTATION_TRIGGER = "snapshots.dev/trigger"        # schedule | initial | sync-now
ANNOTATION_RECORDED = "snapshots.dev/recorded"      # set on a Job once its run is in the status
SYNC_NOW_ANNOTATION = "snapshots.dev/sync-now"      # users set it to run a Job right now

TRIGGER_SCHEDULE = "schedule"
TRIGGER_INITIAL = "initial"
TRIGGER_SYNC_NOW = "sync-now"

CRONJOB_NAME_MAX = 52   # the CronJob controller appends 11 characters to make Job names
JOB_NAME_MAX = 63       # a Job's name becomes a label value of its pods
LABEL_VALUE_MAX = 63

# --------------------------------------------------------------------------- defaults

DEFAULTS: dict[str, Any] = {
    "schedule": "*/15 * * * *",
    "suspend": False,
    "mode": "auto",
    "onError": "abort",
    "schemaEvolution": "strict",
    "recursive": False,
    "activeDeadlineSeconds": 3600,
    "backoffLimit": 2,
    "successfulJobsHistoryLimit": 3,
    "failedJobsHistoryLimit": 3,
    "startingDeadlineSeconds": 300,
}

DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "512Mi"},
}

RUN_AS = 10001


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator's own flags and environment decide for every Job it builds."""

    image: str = f"snapshots:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    job_ttl_seconds: int = 86400          # one-off Jobs; CronJob history limits prune the rest
    resources: Mapping[str, Any] = field(default_factory=lambda: copy.deepcopy(DEFAULT_RESOURCES))


def _digest(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def fit_name(name: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` characters, else a truncated prefix plus a hash."""
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9].rstrip('-.')}-{_digest(name)}"


def label_value(value: str) -> str:
    """A valid label value standing for ``value`` (truncated with a hash when too long)."""
    value = fit_name(value, LABEL_VALUE_MAX)
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def cronjob_name(source: Mapping[str, Any]) -> str:
    return fit_name(source["metadata"]["name"], CRONJOB_NAME_MAX)


def job_name(source: Mapping[str, Any], trigger: str, token: str) -> str:
    """Deterministic per (source, trigger, token): a retried launch hits 409 and adopts."""
    suffix = f"-{'now' if trigger == TRIGGER_SYNC_NOW else 'init'}-{token[:8]}"
    return fit_name(source["metadata"]["name"], JOB_NAME_MAX - len(suffix)) + suffix


def launch_token(source: Mapping[str, Any], trigger: str, request: str = "") -> str:
    """A short hash naming one launch: the source's uid, the trigger and the request value."""
    return _digest(source["metadata"].get("uid") or source["metadata"]["name"], trigger, request)


def source_labels(source: Mapping[str, Any]) -> dict[str, str]:
    name = label_value(source["metadata"]["name"])
    return {
        LABEL_NAME: "snapshots",
        LABEL_INSTANCE: name,
        LABEL_COMPONENT: "sync",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SOURCE: name,
    }


def owner_reference(source: Mapping[str, Any]) -> dict[str, Any]:
    meta = source["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(obj: Mapping[str, Any], source: Mapping[str, Any]) -> bool:
    uid = source["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences", []))


def spec_with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the API server would store it after the CRD's defaults (and ours)."""
    result = {**DEFAULTS, **{k: v for k, v in spec.items() if v is not None}}
    return result


# --------------------------------------------------------------------------- the pod

def sync_args(spec: Mapping[str, Any]) -> list[str]:
    """The container's arguments: `snapshots sync --once ...` from the spec."""
    spec = spec_with_defaults(spec)
    path = str(spec["path"]).strip("/")
    data_dir = f"{DATA_MOUNT}/{path}" if path else DATA_MOUNT
    args = ["sync", "--once", "--data-dir", data_dir]
    for option, key in (("--table", "table"), ("--schema", "schema"), ("--mode", "mode"),
                        ("--on-error", "onError"), ("--schema-evolution", "schemaEvolution")):
        if spec.get(key) is not None:
            args += [option, str(spec[key])]
    if spec.get("maxRejects") is not None:
        args += ["--max-rejects", str(spec["maxRejects"])]
    if spec.get("deleteMissing"):
        args.append("--delete-missing")
    for pattern in spec.get("patterns") or ():
        args += ["--pattern", pattern]
    if spec.get("recursive"):
        args.append("--recursive")
    for column, type_ in sorted((spec.get("types") or {}).items()):
        args += ["--type", f"{column}={type_}"]
    csv = spec.get("csv") or {}
    for option, key in (("--delimiter", "delimiter"), ("--quote", "quote"), ("--null", "null"),
                        ("--encoding", "encoding")):
        if csv.get(key) is not None:
            args += [option, str(csv[key])]
    if csv.get("noHeader"):
        args.append("--no-header")
    if csv.get("columns"):
        args += ["--columns", ",".join(csv["columns"])]
    if spec.get("jobs") is not None:
        args += ["--jobs", str(spec["jobs"])]
    if spec.get("retentionDays") is not None:
        args += ["--retention-days", str(spec["retentionDays"])]
    if spec.get("pushgateway"):
        args += ["--pushgateway", spec["pushgateway"]]
    return args


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def database_env(database: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The database as environment: a Secret's URI, or libpq variables with a credentials Secret.

    Passwords only ever come from Secrets (secretKeyRef); nothing secret is in the Job's spec.
    """
    env: list[dict[str, Any]] = []
    uri = database.get("uriSecretRef")
    if uri:
        env.append(_secret_env("SNAPSHOTS_DATABASE", uri["name"], uri.get("key", "uri")))
    else:
        env.append({"name": "PGHOST", "value": database["host"]})
        env.append({"name": "PGPORT", "value": str(database.get("port", 5432))})
        if database.get("name"):
            env.append({"name": "PGDATABASE", "value": database["name"]})
        creds = database.get("credentialsSecretRef")
        if creds:
            env.append(_secret_env("PGUSER", creds["name"], creds.get("usernameKey", "username")))
            env.append(_secret_env("PGPASSWORD", creds["name"],
                                   creds.get("passwordKey", "password")))
    tls = database.get("tls") or {}
    if tls.get("sslMode"):
        env.append({"name": "PGSSLMODE", "value": tls["sslMode"]})
    ca = tls.get("caSecretRef")
    if ca:
        env.append({"name": "PGSSLROOTCERT",
                    "value": f"{TLS_MOUNT}/ca/{ca.get('key', 'ca.crt')}"})
    client = tls.get("clientCertSecretRef")
    if client:
        env.append({"name": "PGSSLCERT", "value": f"{TLS_MOUNT}/client/tls.crt"})
        env.append({"name": "PGSSLKEY", "value": f"{TLS_MOUNT}/client/tls.key"})
    return env


def provenance_env(source: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where each ledger record came from (SPEC section 3: imported_by)."""
    return [
        {"name": "SNAPSHOTS_ORIGIN", "value": "job"},
        {"name": "SNAPSHOTS_POD_NAMESPACE",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SNAPSHOTS_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SNAPSHOTS_SOURCE", "value": source["metadata"]["name"]},
    ]


def _tls_volumes(database: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    tls = database.get("tls") or {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    # 0440: libpq accepts a root-owned key readable by the group (fsGroup), never by others.
    for kind, ref in (("ca", tls.get("caSecretRef")), ("client", tls.get("clientCertSecretRef"))):
        if ref:
            volumes.append({"name": f"tls-{kind}",
                            "secret": {"secretName": ref["name"], "defaultMode": 0o440}})
            mounts.append({"name": f"tls-{kind}", "mountPath": f"{TLS_MOUNT}/{kind}",
                           "readOnly": True})
    return volumes, mounts


def pod_template(source: Mapping[str, Any], config: OperatorConfig,
                 trigger: str = TRIGGER_SCHEDULE) -> dict[str, Any]:
    spec = spec_with_defaults(source["spec"])
    data_volume = {"name": "data", **copy.deepcopy(spec["volume"])}
    tls_volumes, tls_mounts = _tls_volumes(spec["database"])
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.get("image") or config.image,
        "imagePullPolicy": spec.get("imagePullPolicy") or config.image_pull_policy,
        "command": ["snapshots"],
        "args": sync_args(spec),
        "env": [
            *database_env(spec["database"]),
            *provenance_env(source),
            {"name": "HOME", "value": TMP_MOUNT},
        ],
        "resources": copy.deepcopy(spec.get("resources") or dict(config.resources)),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": TMP_MOUNT},
            *tls_mounts,
        ],
        # The --once summary goes to /dev/termination-log; a pod that dies before writing it
        # (OOMKilled, a crash) leaves the tail of its log there instead.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_security = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
        **copy.deepcopy(spec.get("podSecurityContext") or {}),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [
            data_volume,
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            *tls_volumes,
        ],
    }
    for key in ("serviceAccountName", "nodeSelector", "tolerations", "affinity",
                "imagePullSecrets", "priorityClassName"):
        if spec.get(key):
            pod_spec[key] = copy.deepcopy(spec[key])
    return {
        "metadata": {
            "labels": source_labels(source),
            "annotations": {ANNOTATION_SOURCE: source["metadata"]["name"],
                            ANNOTATION_TRIGGER: trigger},
        },
        "spec": pod_spec,
    }


def job_spec(source: Mapping[str, Any], config: OperatorConfig,
             trigger: str = TRIGGER_SCHEDULE) -> dict[str, Any]:
    spec = spec_with_defaults(source["spec"])
    return {
        "activeDeadlineSeconds": spec["activeDeadlineSeconds"],
        "backoffLimit": spec["backoffLimit"],
        # Retry a pod only when the database was unreachable (exit 3) or the node went away;
        # a file that failed fails the Job at once (a retry would skip it and hide the failure).
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {
                "containerName": CONTAINER, "operator": "NotIn",
                "values": [int(ExitCode.DATABASE)]}},
        ]},
        "template": pod_template(source, config, trigger),
    }


# --------------------------------------------------------------------------- objects

def build_cronjob(source: Mapping[str, Any], config: OperatorConfig) -> dict[str, Any]:
    """The CronJob that runs `snapshots sync --once` on the source's schedule."""
    spec = spec_with_defaults(source["spec"])
    meta = source["metadata"]
    labels = source_labels(source)
    cron_spec: dict[str, Any] = {
        "schedule": spec["schedule"],
        "suspend": bool(spec["suspend"]),
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": spec["startingDeadlineSeconds"],
        "successfulJobsHistoryLimit": spec["successfulJobsHistoryLimit"],
        "failedJobsHistoryLimit": spec["failedJobsHistoryLimit"],
        "jobTemplate": {
            "metadata": {
                "labels": labels,
                "annotations": {ANNOTATION_SOURCE: meta["name"],
                                ANNOTATION_TRIGGER: TRIGGER_SCHEDULE},
            },
            "spec": job_spec(source, config, TRIGGER_SCHEDULE),
        },
    }
    if spec.get("timeZone"):
        cron_spec["timeZone"] = spec["timeZone"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(source),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {ANNOTATION_SOURCE: meta["name"]},
            "ownerReferences": [owner_reference(source)],
        },
        "spec": cron_spec,
    }


# Keys of the CronJob's spec that the builder may leave out: a merge patch sets them to null
# so that removing them from the SnapshotSource removes them from the CronJob.
OPTIONAL_CRON_KEYS = ("timeZone",)


def cronjob_patch(desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that makes an existing CronJob the desired one.

    Lists (containers, env, volumes, args) are replaced whole by a merge patch, so nothing
    stale survives inside them; optional scalar keys get an explicit null.
    """
    meta = desired["metadata"]
    spec = copy.deepcopy(desired["spec"])
    for key in OPTIONAL_CRON_KEYS:
        spec.setdefault(key, None)
    return {
        "metadata": {"labels": meta["labels"], "annotations": meta["annotations"],
                     "ownerReferences": meta["ownerReferences"]},
        "spec": spec,
    }


def adoption_patch(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Take over an object that already exists (a 409 on create): our spec and owner."""
    patch = cronjob_patch(desired) if desired["kind"] == "CronJob" else {
        "metadata": {"labels": desired["metadata"]["labels"],
                     "annotations": desired["metadata"]["annotations"]}}
    ours = desired["metadata"]["ownerReferences"][0]
    others = [ref for ref in existing.get("metadata", {}).get("ownerReferences", [])
              if ref.get("uid") != ours["uid"] and not ref.get("controller")]
    patch["metadata"]["ownerReferences"] = [ours, *others]
    return patch


def build_job(source: Mapping[str, Any], config: OperatorConfig, trigger: str,
              token: str) -> dict[str, Any]:
    """A one-off Job (on creation, or on the sync-now annotation), owned by the source."""
    meta = source["metadata"]
    spec = job_spec(source, config, trigger)
    spec["ttlSecondsAfterFinished"] = config.job_ttl_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(source, trigger, token),
            "namespace": meta["namespace"],
            "labels": source_labels(source),
            "annotations": {ANNOTATION_SOURCE: meta["name"], ANNOTATION_TRIGGER: trigger},
            "ownerReferences": [owner_reference(source)],
        },
        "spec": spec,
    }


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
