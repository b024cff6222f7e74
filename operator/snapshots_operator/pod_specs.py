"""The CronJob, Job and pod a SnapshotSource becomes, and the patches that keep them so.

Pure builders: a SnapshotSource (a plain dict) and the OperatorConfig in, Kubernetes objects out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from snapshots.errors import ExitCode  # what `sync --once` exits with: one enum, both sides
from snapshots_operator.naming import (
    ANNOTATION_SOURCE,
    ANNOTATION_TRIGGER,
    CONTAINER,
    DATA_MOUNT,
    RUN_AS,
    TLS_MOUNT,
    TMP_MOUNT,
    TRIGGER_SCHEDULE,
    OperatorConfig,
    cronjob_name,
    job_name,
    owner_reference,
    source_labels,
    spec_with_defaults,
)

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
