"""Names, labels, annotations and defaults shared by the pod specs, run outcomes and status.

Pure: a SnapshotSource (a plain dict) in, strings and dicts out.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
