"""The operator's pure builders and its handlers, called directly, with exact expectations."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

import kopf
import pytest

from snapshots_operator import handlers, resources
from snapshots_operator.metrics import OperatorMetrics
from snapshots_operator.resources import OperatorConfig

CONFIG = OperatorConfig(image="registry.example/snapshots:1.2.3")
NOW = "2026-01-02T03:04:05Z"
LABELS = {
    "app.kubernetes.io/name": "snapshots",
    "app.kubernetes.io/instance": "users",
    "app.kubernetes.io/component": "sync",
    "app.kubernetes.io/managed-by": "snapshots-operator",
    "snapshots.dev/source": "users",
}
OWNER = {"apiVersion": "snapshots.dev/v1alpha1", "kind": "SnapshotSource", "name": "users",
         "uid": "1111-2222", "controller": True, "blockOwnerDeletion": True}
SUMMARY = {"version": "0.1.0", "table": "users",
           "files": {"imported": 2, "skipped": 1, "failed": 0, "conflict": 0},
           "rows": 11, "rejected_rows": 0, "bytes": 457, "seconds": 0.41,
           "interrupted": False, "failures": [], "failures_omitted": 0}


def make_source(**spec: Any) -> dict[str, Any]:
    base = {
        "volume": {"persistentVolumeClaim": {"claimName": "snapshots-data"}},
        "path": "/incoming/",
        "database": {"uriSecretRef": {"name": "snapshots-db", "key": "uri"}},
        "table": "users",
        "schedule": "0 * * * *",
    }
    base.update(spec)
    return {"apiVersion": "snapshots.dev/v1alpha1", "kind": "SnapshotSource",
            "metadata": {"name": "users", "namespace": "data", "uid": "1111-2222",
                         "generation": 2},
            "spec": base}


# --------------------------------------------------------------------------- builders

def test_cronjob_is_exactly_what_the_source_asks_for() -> None:
    source = make_source(pushgateway="http://pushgateway.monitoring:9091")
    pod_annotations = {"snapshots.dev/source": "users", "snapshots.dev/trigger": "schedule"}
    assert resources.build_cronjob(source, CONFIG) == {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": "users", "namespace": "data", "labels": LABELS,
            "annotations": {"snapshots.dev/source": "users"},
            "ownerReferences": [OWNER],
        },
        "spec": {
            "schedule": "0 * * * *",
            "suspend": False,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 300,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": LABELS, "annotations": pod_annotations},
                "spec": {
                    "activeDeadlineSeconds": 3600,
                    "backoffLimit": 2,
                    "podFailurePolicy": {"rules": [
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                        {"action": "FailJob", "onExitCodes": {
                            "containerName": "snapshots", "operator": "NotIn", "values": [3]}},
                    ]},
                    "template": {
                        "metadata": {"labels": LABELS, "annotations": pod_annotations},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "securityContext": {
                                "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "fsGroup": 10001, "fsGroupChangePolicy": "OnRootMismatch",
                                "seccompProfile": {"type": "RuntimeDefault"},
                            },
                            "containers": [{
                                "name": "snapshots",
                                "image": "registry.example/snapshots:1.2.3",
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["snapshots"],
                                "args": ["sync", "--once", "--data-dir", "/snapshots/incoming",
                                         "--table", "users", "--mode", "auto",
                                         "--on-error", "abort", "--schema-evolution", "strict",
                                         "--pushgateway", "http://pushgateway.monitoring:9091"],
                                "env": [
                                    {"name": "SNAPSHOTS_DATABASE", "valueFrom": {
                                        "secretKeyRef": {"name": "snapshots-db", "key": "uri"}}},
                                    {"name": "SNAPSHOTS_ORIGIN", "value": "job"},
                                    {"name": "SNAPSHOTS_POD_NAMESPACE", "valueFrom": {
                                        "fieldRef": {"fieldPath": "metadata.namespace"}}},
                                    {"name": "SNAPSHOTS_POD_NAME", "valueFrom": {
                                        "fieldRef": {"fieldPath": "metadata.name"}}},
                                    {"name": "SNAPSHOTS_SOURCE", "value": "users"},
                                    {"name": "HOME", "value": "/tmp"},
                                ],
                                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                              "limits": {"memory": "512Mi"}},
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/snapshots", "readOnly": True},
                                    {"name": "tmp", "mountPath": "/tmp"},
                                ],
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "FallbackToLogsOnError",
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                            }],
                            "volumes": [
                                {"name": "data",
                                 "persistentVolumeClaim": {"claimName": "snapshots-data"}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                            ],
                        },
                    },
                },
            },
        },
    }


def test_every_option_becomes_an_argument() -> None:
    source = make_source(
        path="/", schema="staging", mode="upsert", onError="skip", maxRejects=10,
        schemaEvolution="add", deleteMissing=True, patterns=["*.csv", "*.tsv"], recursive=True,
        types={"credit_limit": "numeric(12,2)", "born": "date"}, jobs=2, retentionDays=30,
        csv={"delimiter": ";", "quote": "'", "null": "NA", "encoding": "LATIN1",
             "noHeader": True, "columns": ["user_id", "name"]})
    assert resources.sync_args(source["spec"]) == [
        "sync", "--once", "--data-dir", "/snapshots",
        "--table", "users", "--schema", "staging", "--mode", "upsert", "--on-error", "skip",
        "--schema-evolution", "add", "--max-rejects", "10", "--delete-missing",
        "--pattern", "*.csv", "--pattern", "*.tsv", "--recursive",
        "--type", "born=date", "--type", "credit_limit=numeric(12,2)",
        "--delimiter", ";", "--quote", "'", "--null", "NA", "--encoding", "LATIN1",
        "--no-header", "--columns", "user_id,name", "--jobs", "2", "--retention-days", "30",
    ]


def test_host_database_with_credentials_and_tls() -> None:
    database = {"host": "pg.db.svc", "port": 6432, "name": "warehouse",
                "credentialsSecretRef": {"name": "pg-login"},
                "tls": {"sslMode": "verify-full", "caSecretRef": {"name": "pg-ca"},
                        "clientCertSecretRef": {"name": "pg-client"}}}
    assert resources.database_env(database) == [
        {"name": "PGHOST", "value": "pg.db.svc"},
        {"name": "PGPORT", "value": "6432"},
        {"name": "PGDATABASE", "value": "warehouse"},
        {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": "pg-login", "key": "username"}}},
        {"name": "PGPASSWORD",
         "valueFrom": {"secretKeyRef": {"name": "pg-login", "key": "password"}}},
        {"name": "PGSSLMODE", "value": "verify-full"},
        {"name": "PGSSLROOTCERT", "value": "/etc/snapshots/tls/ca/ca.crt"},
        {"name": "PGSSLCERT", "value": "/etc/snapshots/tls/client/tls.crt"},
        {"name": "PGSSLKEY", "value": "/etc/snapshots/tls/client/tls.key"},
    ]
    pod = resources.pod_template(make_source(database=database), CONFIG)["spec"]
    assert pod["volumes"][2:] == [
        {"name": "tls-ca", "secret": {"secretName": "pg-ca", "defaultMode": 0o440}},
        {"name": "tls-client", "secret": {"secretName": "pg-client", "defaultMode": 0o440}},
    ]
    assert pod["containers"][0]["volumeMounts"][2:] == [
        {"name": "tls-ca", "mountPath": "/etc/snapshots/tls/ca", "readOnly": True},
        {"name": "tls-client", "mountPath": "/etc/snapshots/tls/client", "readOnly": True},
    ]
    env = json.dumps(pod["containers"][0]["env"])
    assert "password" not in env.replace('"key": "password"', "")  # only a Secret reference


def test_pod_options_pass_through_and_override_defaults() -> None:
    source = make_source(
        image="other/snapshots:9", imagePullPolicy="Always", serviceAccountName="loader",
        nodeSelector={"disk": "ssd"}, tolerations=[{"key": "batch", "operator": "Exists"}],
        imagePullSecrets=[{"name": "regcred"}], podSecurityContext={"runAsUser": 2000},
        resources={"limits": {"memory": "2Gi"}}, suspend=True, timeZone="Europe/Berlin",
        activeDeadlineSeconds=600, backoffLimit=0)
    cron = resources.build_cronjob(source, CONFIG)
    assert cron["spec"]["suspend"] is True
    assert cron["spec"]["timeZone"] == "Europe/Berlin"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert (job["activeDeadlineSeconds"], job["backoffLimit"]) == (600, 0)
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == ("other/snapshots:9", "Always")
    assert container["resources"] == {"limits": {"memory": "2Gi"}}
    assert pod["securityContext"]["runAsUser"] == 2000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "loader"
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_one_off_job() -> None:
    source = make_source()
    token = resources.launch_token(source, resources.TRIGGER_SYNC_NOW, "now@t")
    job = resources.build_job(source, CONFIG, resources.TRIGGER_SYNC_NOW, token)
    assert job["metadata"] == {
        "name": f"users-now-{token}", "namespace": "data", "labels": LABELS,
        "annotations": {"snapshots.dev/source": "users", "snapshots.dev/trigger": "sync-now"},
        "ownerReferences": [OWNER],
    }
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert job["spec"]["template"]["metadata"]["annotations"]["snapshots.dev/trigger"] == \
        "sync-now"
    # Deterministic: a retried launch names the same Job (and meets a 409 that adopts it).
    assert resources.launch_token(source, "sync-now", "now@t") == token
    assert resources.launch_token(source, "sync-now", "now@u") != token
    initial = resources.build_job(source, CONFIG, resources.TRIGGER_INITIAL,
                                  resources.launch_token(source, "initial"))
    assert initial["metadata"]["name"].startswith("users-init-")


def test_long_names_fit_kubernetes_limits() -> None:
    source = make_source()
    source["metadata"]["name"] = "a" * 60 + "-" + "b" * 100
    assert len(resources.cronjob_name(source)) <= 52
    job = resources.build_job(source, CONFIG, "initial", "deadbeef")
    assert len(job["metadata"]["name"]) <= 63
    assert all(len(value) <= 63 for value in job["metadata"]["labels"].values())
    assert job["metadata"]["annotations"]["snapshots.dev/source"] == source["metadata"]["name"]
    other = make_source()
    other["metadata"]["name"] = "a" * 60 + "-" + "c" * 100
    assert resources.cronjob_name(other) != resources.cronjob_name(source)


def test_cronjob_patch_and_adoption() -> None:
    desired = resources.build_cronjob(make_source(), CONFIG)
    patch = resources.cronjob_patch(desired)
    assert patch["spec"]["timeZone"] is None  # removes a time zone set earlier
    assert patch["metadata"]["ownerReferences"] == [OWNER]
    existing = {"metadata": {"ownerReferences": [
        {"uid": "old-source", "controller": True, "kind": "SnapshotSource"},
        {"uid": "someone-else", "kind": "ConfigMap"}]}}
    adopted = resources.adoption_patch(existing, desired)
    assert adopted["metadata"]["ownerReferences"] == [OWNER, {"uid": "someone-else",
                                                              "kind": "ConfigMap"}]
    assert adopted["spec"] == patch["spec"]


# --------------------------------------------------------------------------- outcomes

def job(name: str = "users-29000000", *, complete: bool = False, reason: str | None = None,
        trigger: str = "schedule") -> dict[str, Any]:
    conditions = [{"type": "Complete", "status": "True", "lastTransitionTime": NOW}] \
        if complete else [{"type": "Failed", "status": "True", "reason": reason or
                           "PodFailurePolicy", "message": "m", "lastTransitionTime": NOW}]
    return {"metadata": {"name": name, "namespace": "data",
                         "annotations": {"snapshots.dev/source": "users",
                                         "snapshots.dev/trigger": trigger}},
            "spec": {"activeDeadlineSeconds": 3600},
            "status": {"startTime": "2026-01-02T03:00:00Z", "conditions": conditions,
                       **({"completionTime": NOW} if complete else {})}}


def pod(exit_code: int, message: str | None, reason: str = "Error") -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": exit_code, "reason": reason,
                                  "finishedAt": NOW, "startedAt": "2026-01-02T03:00:01Z"}
    if message is not None:
        terminated["message"] = message
    return {"status": {"containerStatuses": [{"name": "snapshots",
                                              "state": {"terminated": terminated}}]}}


def test_success_reads_the_summary() -> None:
    outcome = resources.run_outcome(job(complete=True), [pod(0, json.dumps(SUMMARY),
                                                             "Completed")])
    assert outcome == resources.RunOutcome(
        job="users-29000000", trigger="schedule", succeeded=True, reason="Synced",
        message="imported 2, skipped 1, failed 0, conflicts 0; 11 rows in 0.41s",
        start_time="2026-01-02T03:00:00Z", completion_time=NOW, exit_code=0, summary=SUMMARY)


def test_failed_file_is_import_failed_with_the_file_and_error() -> None:
    summary = {**SUMMARY, "files": {"imported": 1, "skipped": 0, "failed": 1, "conflict": 0},
               "failures": [{"file": "snapshot_20230102.csv", "error": "line 3: bad value"}]}
    outcome = resources.run_outcome(job(), [pod(1, json.dumps(summary))])
    assert (outcome.succeeded, outcome.reason, outcome.exit_code) == (False, "ImportFailed", 1)
    assert outcome.message == ("imported 1, skipped 0, failed 1, conflicts 0; 11 rows in 0.41s; "
                               "snapshot_20230102.csv: line 3: bad value")
    assert outcome.summary == summary


@pytest.mark.parametrize(("pods", "job_reason", "reason", "message"), [
    ([pod(137, "Killed\n", "OOMKilled")], None, "OOMKilled",
     "the sync container ran out of memory (OOMKilled); raise spec.resources.limits.memory"),
    ([pod(137, None, "OOMKilled")], None, "OOMKilled",
     "the sync container ran out of memory (OOMKilled); raise spec.resources.limits.memory"),
    ([], "DeadlineExceeded", "DeadlineExceeded",
     "the run took longer than activeDeadlineSeconds (3600s) and was stopped"),
    ([pod(3, "loading...\nerror: cannot connect to the database\n")], None,
     "DatabaseUnreachable", "error: cannot connect to the database"),
    ([pod(2, "error: --max-rejects goes with --on-error skip\n")], None, "JobFailed",
     "exit code 2 (Error): error: --max-rejects goes with --on-error skip"),
    ([], "BackoffLimitExceeded", "JobFailed", "m"),
])
def test_failures_without_a_summary_keep_their_reason(pods: list[dict[str, Any]],
                                                      job_reason: str | None, reason: str,
                                                      message: str) -> None:
    outcome = resources.run_outcome(job(reason=job_reason), pods)
    assert (outcome.succeeded, outcome.reason, outcome.message, outcome.summary) == \
        (False, reason, message, None)


def test_database_down_and_interrupted_summaries() -> None:
    down = {**SUMMARY, "files": {"imported": 0, "skipped": 0, "failed": 0, "conflict": 0},
            "database_error": "connection refused"}
    outcome = resources.run_outcome(job(), [pod(3, json.dumps(down))])
    assert outcome.reason == "DatabaseUnreachable"
    assert outcome.message.endswith("; database: connection refused")
    stopped = {**SUMMARY, "interrupted": True}
    assert resources.run_outcome(job(), [pod(130, json.dumps(stopped))]).reason == "Interrupted"
    # A deadline stops the run with SIGTERM: it writes an interrupted summary, but the
    # reason users need is the deadline.
    assert resources.run_outcome(job(reason="DeadlineExceeded"),
                                 [pod(130, json.dumps(stopped))]).reason == "DeadlineExceeded"


# --------------------------------------------------------------------------- status

def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = resources.set_condition([], "Ready", "True", "Synced", "ok", "T1", 1)
    second = resources.set_condition(first, "Ready", "True", "Synced", "still ok", "T2", 2)
    assert second == [{"type": "Ready", "status": "True", "reason": "Synced",
                       "message": "still ok", "lastTransitionTime": "T1",
                       "observedGeneration": 2}]
    third = resources.set_condition(second, "Ready", "False", "ImportFailed", "x", "T3", 2)
    assert third[0]["lastTransitionTime"] == "T3"


def test_status_from_creation_to_a_failed_run_and_back() -> None:
    source = make_source()
    created = resources.status_configured(source, NOW, launched="users-init-1")
    assert created == {
        "observedGeneration": 2, "cronJob": "users", "schedule": "0 * * * *",
        "suspended": False, "active": 1, "activeJobs": ["users-init-1"],
        "conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "AwaitingFirstRun",
             "message": "no run has finished yet", "lastTransitionTime": NOW,
             "observedGeneration": 2},
            {"type": "Progressing", "status": "True", "reason": "JobRunning",
             "message": "running: users-init-1", "lastTransitionTime": NOW,
             "observedGeneration": 2},
            {"type": "Degraded", "status": "False", "reason": "AsExpected",
             "message": "no failed run", "lastTransitionTime": NOW, "observedGeneration": 2},
        ],
    }
    source["status"] = created
    failed = resources.run_outcome(job("users-init-1", reason="PodFailurePolicy",
                                       trigger="initial"), [pod(137, None, "OOMKilled")])
    status = resources.status_after_run(source, failed, "2026-01-02T04:00:00Z")
    assert status["lastFailedTime"] == NOW
    assert status["lastRun"]["reason"] == "OOMKilled"
    assert (status["active"], status["activeJobs"]) == (0, [])
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "OOMKilled")
    assert (by_type["Degraded"]["status"], by_type["Degraded"]["reason"]) == \
        ("True", "OOMKilled")
    assert (by_type["Progressing"]["status"], by_type["Progressing"]["reason"]) == \
        ("False", "Idle")
    source["status"] = status
    later = {**job(complete=True), "status": {**job(complete=True)["status"],
                                              "completionTime": "2026-01-02T05:00:00Z"}}
    ok = resources.run_outcome(later, [pod(0, json.dumps(SUMMARY), "Completed")])
    status = resources.status_after_run(source, ok, "2026-01-02T05:00:01Z")
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (by_type["Ready"]["status"], by_type["Degraded"]["status"]) == ("True", "False")
    assert status["lastSuccessfulTime"] == "2026-01-02T05:00:00Z"
    assert status["lastScheduleTime"] == "2026-01-02T03:00:00Z"
    assert status["lastRun"]["summary"] == SUMMARY
    # An older run read late does not replace the newer result.
    source["status"] = {**source["status"], **status}
    stale = resources.status_after_run(source, failed, "2026-01-02T05:00:02Z")
    assert "lastRun" not in stale and "lastFailedTime" not in stale
    assert {c["type"]: c["status"] for c in stale["conditions"]}["Ready"] == "True"


def test_a_running_job_is_progressing_once() -> None:
    source = make_source()
    running = job(trigger="schedule")
    running["status"] = {"startTime": "2026-01-02T03:00:00Z", "active": 1}
    patch = resources.status_job_started(source, running, NOW)
    assert patch is not None
    assert patch["activeJobs"] == ["users-29000000"]
    assert patch["lastScheduleTime"] == "2026-01-02T03:00:00Z"
    assert resources.condition(patch, "Progressing")["status"] == "True"
    source["status"] = patch
    assert resources.status_job_started(source, running, NOW) is None


def test_parse_summary_ignores_log_tails() -> None:
    assert resources.parse_summary(json.dumps(SUMMARY) + "\n") == SUMMARY
    assert resources.parse_summary("Traceback (most recent call last):") is None
    assert resources.parse_summary('{"not": "a summary"}') is None
    assert resources.parse_summary(None) is None


# --------------------------------------------------------------------------- handlers

class FakeKube:
    """Records calls; keeps one SnapshotSource whose status handlers update."""

    def __init__(self, source: dict[str, Any], *, fail_cronjob: bool = False) -> None:
        self.source = copy.deepcopy(source)
        self.fail_cronjob = fail_cronjob
        self.cronjobs: list[Mapping[str, Any]] = []
        self.jobs: list[Mapping[str, Any]] = []
        self.recorded: list[str] = []
        self.removed: list[str] = []
        self.pods: list[dict[str, Any]] = []

    def apply_cronjob(self, desired: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.fail_cronjob:
            raise RuntimeError("forbidden")
        self.cronjobs.append(desired)
        return ("created" if len(self.cronjobs) == 1 else "patched"), dict(desired)

    def create_job(self, desired: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        seen = any(j["metadata"]["name"] == desired["metadata"]["name"] for j in self.jobs)
        self.jobs.append(desired)
        return ("adopted" if seen else "created"), dict(desired)

    def job_pods(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.pods

    def mark_job_recorded(self, namespace: str, name: str) -> None:
        self.recorded.append(name)

    def remove_source_annotation(self, namespace: str, name: str, key: str) -> None:
        self.removed.append(key)

    def update_source_status(self, namespace: str, name: str,
                             compute: Callable[[dict[str, Any]], Mapping[str, Any] | None],
                             ) -> dict[str, Any] | None:
        patch = compute(copy.deepcopy(self.source))
        if patch:
            self.source.setdefault("status", {}).update(patch)
        return copy.deepcopy(self.source)


class Events(list):
    def __call__(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.append((obj["metadata"]["name"], type_, reason, message))


def make_context(kube: FakeKube) -> tuple[dict[str, Any], Events]:
    events = Events()
    context = handlers.Context(kube=kube, config=CONFIG, metrics=OperatorMetrics(),
                               emit=events, now=lambda: NOW)
    return {"snapshots": context}, events


def sample(context: dict[str, Any], name: str, **labels: str) -> float | None:
    return context["snapshots"].metrics.registry.get_sample_value(name, labels)


def test_create_handler_sets_up_the_cronjob_and_runs_once() -> None:
    source = make_source()
    kube = FakeKube(source)
    memo, events = make_context(kube)
    handlers.reconcile(body=source, memo=memo, reason="create")
    assert kube.cronjobs == [resources.build_cronjob(source, CONFIG)]
    token = resources.launch_token(source, "initial")
    assert kube.jobs == [resources.build_job(source, CONFIG, "initial", token)]
    assert events == [
        ("users", "Normal", "JobLaunched", f"started Job users-init-{token} (initial sync)"),
        ("users", "Normal", "CronJobCreated", "created CronJob users (schedule '0 * * * *')"),
    ]
    assert kube.source["status"]["activeJobs"] == [f"users-init-{token}"]
    assert sample(memo, "snapshots_operator_reconciles_total", result="success") == 1
    assert sample(memo, "snapshots_operator_jobs_launched_total", trigger="initial",
                  result="created") == 1
    assert sample(memo, "snapshots_operator_sources", condition="Progressing",
                  status="True") == 1


def test_created_suspended_runs_nothing_and_suspend_changes_are_events() -> None:
    source = make_source(suspend=True)
    kube = FakeKube(source)
    memo, events = make_context(kube)
    handlers.reconcile(body=source, memo=memo, reason="create")
    assert kube.jobs == []
    assert kube.cronjobs[0]["spec"]["suspend"] is True
    assert resources.condition(kube.source["status"], "Progressing")["reason"] == "Suspended"
    resumed = make_source(suspend=False)
    handlers.reconcile(body=resumed, memo=memo, reason="update", old={"suspend": True},
                       new=resumed["spec"])
    assert kube.cronjobs[-1]["spec"]["suspend"] is False
    assert events[-2:] == [
        ("users", "Normal", "CronJobUpdated", "updated CronJob users to the new spec"),
        ("users", "Normal", "Resumed", "the schedule runs again"),
    ]
    assert kube.jobs == []  # an update launches nothing


def test_a_refused_cronjob_is_degraded_and_retried() -> None:
    source = make_source()
    kube = FakeKube(source, fail_cronjob=True)
    memo, events = make_context(kube)
    with pytest.raises(kopf.TemporaryError):
        handlers.reconcile(body=source, memo=memo, reason="create")
    assert events == [("users", "Warning", "ReconcileFailed",
                       "cannot set up the CronJob: RuntimeError: forbidden")]
    degraded = resources.condition(kube.source["status"], "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileFailed")
    assert sample(memo, "snapshots_operator_reconciles_total", result="error") == 1


def test_sync_now_launches_one_job_and_removes_the_annotation() -> None:
    import datetime as dt

    source = make_source()
    kube = FakeKube(source)
    memo, events = make_context(kube)
    started = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    handlers.sync_now(body=source, memo=memo, new="1", reason="update", started=started)
    token = resources.launch_token(source, "sync-now", f"1@{started.isoformat()}")
    assert [j["metadata"]["name"] for j in kube.jobs] == [f"users-now-{token}"]
    assert kube.removed == ["snapshots.dev/sync-now"]
    assert events[0][2] == "JobLaunched"
    # kopf retrying the same request (same started) names the same Job: adopted, not re-run.
    handlers.sync_now(body=source, memo=memo, new="1", reason="update", started=started)
    assert sample(memo, "snapshots_operator_jobs_launched_total", trigger="sync-now",
                  result="created") == 1
    assert sample(memo, "snapshots_operator_jobs_launched_total", trigger="sync-now",
                  result="adopted") == 1
    # Removing the annotation calls the handler with nothing to do.
    handlers.sync_now(body=source, memo=memo, new=None, reason="update")
    assert len(kube.jobs) == 2
    # On creation the initial Job is the run: the annotation is only removed.
    handlers.sync_now(body=source, memo=memo, new="1", reason="create", started=started)
    assert len(kube.jobs) == 2 and kube.removed.count("snapshots.dev/sync-now") == 3


def test_job_events_record_each_run_once() -> None:
    source = make_source()
    kube = FakeKube(source)
    memo, events = make_context(kube)
    running = job(trigger="schedule")
    running["status"] = {"startTime": "2026-01-02T03:00:00Z", "active": 1}
    handlers.job_event(type="ADDED", body=running, memo=memo)
    assert kube.source["status"]["activeJobs"] == ["users-29000000"]
    assert events == [("users", "Normal", "JobStarted", "scheduled Job users-29000000 started")]
    kube.pods = [pod(0, json.dumps(SUMMARY), "Completed")]
    finished = job(complete=True)
    handlers.job_event(type="MODIFIED", body=finished, memo=memo)
    handlers.job_event(type="MODIFIED", body=finished, memo=memo)  # a repeated event
    assert kube.recorded == ["users-29000000", "users-29000000"]
    assert kube.source["status"]["lastRun"]["summary"] == SUMMARY
    assert resources.condition(kube.source["status"], "Ready")["status"] == "True"
    assert events[1:] == [("users", "Normal", "RunSucceeded",
                           "Job users-29000000: imported 2, skipped 1, failed 0, conflicts 0; "
                           "11 rows in 0.41s")]
    assert sample(memo, "snapshots_operator_jobs_finished_total", result="succeeded",
                  reason="Synced") == 1
    assert sample(memo, "snapshots_operator_last_success_timestamp_seconds",
                  namespace="data", source="users") == 1767323045.0
    # Recorded Jobs (annotated) and deletions are ignored.
    recorded = job(complete=True)
    recorded["metadata"]["annotations"]["snapshots.dev/recorded"] = "true"
    handlers.job_event(type="MODIFIED", body=recorded, memo=memo)
    handlers.job_event(type="DELETED", body=finished, memo=memo)
    assert len(kube.recorded) == 2
