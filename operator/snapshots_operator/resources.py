"""The operator's pure builders, by job, under one name.

A SnapshotSource (a plain dict) in, Kubernetes objects and status out; nothing here talks to
the API or reads the clock (callers pass ``now``), which keeps every decision the operator
makes testable with exact expectations (tests/test_operator_resources.py). The work lives in:

- ``naming``: names, labels, annotations, triggers, defaults and ``OperatorConfig``;
- ``pod_specs``: the container's arguments and environment, the pod template, the Job and
  the CronJob, and the patches that keep a CronJob as desired;
- ``run_outcomes``: reading a finished Job and its pods into a ``RunOutcome``;
- ``status``: conditions and the status patches.

This module only re-exports their public names, so ``resources.X`` keeps working.
"""

from __future__ import annotations

from snapshots_operator.naming import (
    ANNOTATION_RECORDED,
    ANNOTATION_SOURCE,
    ANNOTATION_TRIGGER,
    CONTAINER,
    CRONJOB_NAME_MAX,
    DATA_MOUNT,
    DEFAULT_RESOURCES,
    DEFAULTS,
    JOB_NAME_MAX,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_SOURCE,
    LABEL_VALUE_MAX,
    MANAGED_BY,
    RUN_AS,
    SYNC_NOW_ANNOTATION,
    TLS_MOUNT,
    TMP_MOUNT,
    TRIGGER_INITIAL,
    TRIGGER_SCHEDULE,
    TRIGGER_SYNC_NOW,
    OperatorConfig,
    cronjob_name,
    fit_name,
    is_owned_by,
    job_name,
    label_value,
    launch_token,
    owner_reference,
    source_labels,
    spec_with_defaults,
)
from snapshots_operator.pod_specs import (
    OPTIONAL_CRON_KEYS,
    adoption_patch,
    build_cronjob,
    build_job,
    cronjob_patch,
    database_env,
    job_spec,
    pod_template,
    provenance_env,
    sync_args,
)
from snapshots_operator.run_outcomes import (
    RunOutcome,
    job_active,
    job_condition,
    job_finished,
    last_terminated,
    parse_summary,
    run_outcome,
    summary_message,
)
from snapshots_operator.status import (
    CONDITION_TYPES,
    condition,
    set_condition,
    status_after_run,
    status_configured,
    status_error,
    status_job_started,
)

__all__ = [
    "ANNOTATION_RECORDED",
    "ANNOTATION_SOURCE",
    "ANNOTATION_TRIGGER",
    "CONDITION_TYPES",
    "CONTAINER",
    "CRONJOB_NAME_MAX",
    "DATA_MOUNT",
    "DEFAULTS",
    "DEFAULT_RESOURCES",
    "JOB_NAME_MAX",
    "LABEL_COMPONENT",
    "LABEL_INSTANCE",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_SOURCE",
    "LABEL_VALUE_MAX",
    "MANAGED_BY",
    "OPTIONAL_CRON_KEYS",
    "RUN_AS",
    "SYNC_NOW_ANNOTATION",
    "TLS_MOUNT",
    "TMP_MOUNT",
    "TRIGGER_INITIAL",
    "TRIGGER_SCHEDULE",
    "TRIGGER_SYNC_NOW",
    "OperatorConfig",
    "RunOutcome",
    "adoption_patch",
    "build_cronjob",
    "build_job",
    "condition",
    "cronjob_name",
    "cronjob_patch",
    "database_env",
    "fit_name",
    "is_owned_by",
    "job_active",
    "job_condition",
    "job_finished",
    "job_name",
    "job_spec",
    "label_value",
    "last_terminated",
    "launch_token",
    "owner_reference",
    "parse_summary",
    "pod_template",
    "provenance_env",
    "run_outcome",
    "set_condition",
    "source_labels",
    "spec_with_defaults",
    "status_after_run",
    "status_configured",
    "status_error",
    "status_job_started",
    "summary_message",
    "sync_args",
]
