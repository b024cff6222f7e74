"""The real kopf runtime against KMock: what a cluster would see the operator do.

No cluster runs here (SPEC section 8): KMock serves the Kubernetes API, and the tests play the
controllers a cluster would run (CronJob and Job controllers, the kubelet) through that API.
Every wait is a condition with a deadline (operator_kmock.until).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import run_cli
from operator_kmock import (
    CRONJOBS,
    NAMESPACE,
    OPERATOR_SCRIPT,
    SOURCES,
    SnapshotsEmulator,
    running_operator,
    until,
)

from snapshots_operator import resources

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.kmock(cls=SnapshotsEmulator),
    # kmock 0.8 reads its bundled resource list with a deprecated importlib call.
    pytest.mark.filterwarnings("ignore:read_binary is deprecated:DeprecationWarning"),
]

SPEC = {
    "volume": {"persistentVolumeClaim": {"claimName": "snapshots-data"}},
    "path": "incoming",
    "database": {"uriSecretRef": {"name": "snapshots-db", "key": "uri"}},
    "table": "users",
    "schedule": "*/5 * * * *",
}

SUMMARY = {"version": "0.1.0", "table": "users",
           "files": {"imported": 2, "skipped": 1, "failed": 0, "conflict": 0},
           "rows": 5, "rejected_rows": 0, "bytes": 457, "seconds": 0.41,
           "interrupted": False, "failures": [], "failures_omitted": 0}


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a /metrics page (labels in any order), None when absent."""
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return None


def status_of(op: Any, name: str, type_: str) -> tuple[str, str] | None:
    condition = op.condition(name, type_)
    return (condition["status"], condition["reason"]) if condition else None


@pytest.mark.parametrize("login", ["kubeconfig", "in-cluster",
                                   pytest.param("in-image", marks=pytest.mark.containers)])
async def test_create_runs_at_once_and_a_good_run_is_ready(kmock: SnapshotsEmulator,
                                                          login: str,
                                                          request: pytest.FixtureRequest) -> None:
    """The whole life of a source, with the operator logged in as a user would run it:
    from a kubeconfig outside a cluster, from the pod's service account inside one, and as
    the Deployment in manifests/ runs it: in the built image, with that service account."""
    image = request.getfixturevalue("product_image") if login == "in-image" else None
    async with running_operator(kmock, login="in-cluster" if image else login,
                                image=image) as op:
        created = await op.create_source("users", SPEC)
        uid = created["metadata"]["uid"]

        cronjob = await until(lambda: op.get(CRONJOBS, "users"), message="the CronJob")
        owner = {"apiVersion": "snapshots.dev/v1alpha1", "kind": "SnapshotSource",
                 "name": "users", "uid": uid, "controller": True, "blockOwnerDeletion": True}
        assert cronjob["metadata"]["ownerReferences"] == [owner]
        assert cronjob["spec"]["schedule"] == "*/5 * * * *"
        assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
        container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:4] == ["sync", "--once", "--data-dir", "/snapshots/incoming"]

        jobs = await until(lambda: op.jobs_of("users"), message="the immediate Job")
        assert len(jobs) == 1
        job = jobs[0]
        assert job["metadata"]["ownerReferences"] == [owner]
        assert job["metadata"]["annotations"]["snapshots.dev/trigger"] == "initial"
        assert job["spec"]["template"]["spec"] == \
            cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        # Both conditions, waited for together: the status may land in more than one patch.
        await until(lambda: status_of(op, "users", "Progressing") == ("True", "JobRunning")
                    and status_of(op, "users", "Ready") == ("Unknown", "AwaitingFirstRun"),
                    message="Progressing while the Job runs, Ready awaiting the first run")

        await op.finish_job(job["metadata"]["name"], succeeded=True,
                            message=json.dumps(SUMMARY))
        await until(lambda: status_of(op, "users", "Ready") == ("True", "Synced"),
                    message="Ready=True after the run")
        status = op.source("users")["status"]
        assert status["lastRun"]["summary"] == SUMMARY
        assert status["lastRun"]["result"] == "Succeeded"
        assert status["lastRun"]["message"] == \
            "imported 2, skipped 1, failed 0, conflicts 0; 5 rows in 0.41s"
        assert status["lastSuccessfulTime"]
        assert status["observedGeneration"] == 1
        assert status_of(op, "users", "Degraded") == ("False", "AsExpected")
        assert status_of(op, "users", "Progressing") == ("False", "Idle")
        await until(lambda: (op.get("batch/v1/jobs", job["metadata"]["name"]) or {})
                    .get("metadata", {}).get("annotations", {})
                    .get("snapshots.dev/recorded") == "true", message="the Job marked recorded")

        reasons = await until(lambda: (r := {e["reason"] for e in op.events("users")}) >= {
            "CronJobCreated", "JobLaunched", "RunSucceeded"} and r, message="the events")
        assert "Warning" not in {e["type"] for e in op.events("users")}, reasons

        text = op.metrics()
        assert metric(text, "snapshots_operator_reconciles_total", result="success") == 1
        assert metric(text, "snapshots_operator_jobs_launched_total", trigger="initial",
                      result="created") == 1
        assert metric(text, "snapshots_operator_jobs_finished_total", result="succeeded",
                      reason="Synced") == 1
        assert metric(text, "snapshots_operator_sources", condition="Ready", status="True") == 1
        assert metric(text, "snapshots_operator_last_success_timestamp_seconds",
                      namespace=NAMESPACE, source="users") > 1.7e9
        assert op.healthz() == 200

        # Deleting the source is not held up: no finalizer (owner references do the rest).
        assert "finalizers" not in op.source("users")["metadata"]
        await op.delete_source("users")
        assert op.get(SOURCES, "users") is None
        await until(lambda: metric(op.metrics(), "snapshots_operator_last_success_timestamp_"
                                   "seconds", namespace=NAMESPACE, source="users") is None,
                    message="the deleted source's series to go")
        assert metric(op.metrics(), "snapshots_operator_sources", condition="Ready",
                      status="True") == 0
        # Every call, kopf's watches and the operator's own, carried the given credentials.
        assert op.authorizations() == {f"Bearer {op.token}"}


async def test_the_operator_without_credentials_says_so_in_one_line(tmp_path: Path) -> None:
    """No service account and no kubeconfig: one clear error, not a traceback."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "KUBECONFIG": str(tmp_path / "missing")}
    done = subprocess.run([str(OPERATOR_SCRIPT), "--namespace", NAMESPACE,
                           "--metrics-port", "0"], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("snapshots-operator: no Kubernetes credentials"), lines
    assert "KUBECONFIG" in lines[-1]


async def test_failed_and_oom_killed_runs_are_degraded(kmock: SnapshotsEmulator) -> None:
    async with running_operator(kmock) as op:
        await op.create_source("users", SPEC)
        first = (await until(lambda: op.jobs_of("users"), message="the Job"))[0]
        summary = {**SUMMARY, "files": {"imported": 1, "skipped": 0, "failed": 1, "conflict": 0},
                   "failures": [{"file": "snapshot_20230102.csv",
                                 "error": "line 3, column credit_limit: 'abc' is not numeric"}]}
        await op.finish_job(first["metadata"]["name"], succeeded=False, exit_code=1,
                            message=json.dumps(summary))
        await until(lambda: status_of(op, "users", "Degraded") == ("True", "ImportFailed"),
                    message="Degraded=ImportFailed")
        assert status_of(op, "users", "Ready") == ("False", "ImportFailed")
        degraded = op.condition("users", "Degraded")
        assert "snapshot_20230102.csv: line 3, column credit_limit" in degraded["message"]
        assert op.source("users")["status"]["lastFailedTime"]

        # A scheduled run whose pod is OOMKilled before writing any summary.
        scheduled = await op.schedule_job("users")
        await until(lambda: scheduled in (op.source("users")["status"].get("activeJobs") or []),
                    message="the scheduled Job noticed")
        await op.finish_job(scheduled, succeeded=False, exit_code=137, reason="OOMKilled",
                            message=None)
        await until(lambda: status_of(op, "users", "Degraded") == ("True", "OOMKilled"),
                    message="Degraded=OOMKilled")
        status = op.source("users")["status"]
        assert status["lastRun"]["job"] == scheduled
        assert status["lastRun"].get("summary") is None  # the null removed the old one
        assert status["lastScheduleTime"]
        assert "raise spec.resources.limits.memory" in op.condition("users", "Degraded")["message"]

        # A run past its deadline: the Job controller's reason, no summary.
        late = await op.schedule_job("users", suffix="29000005")
        await op.finish_job(late, succeeded=False, exit_code=137, message=None,
                            job_reason="DeadlineExceeded")
        await until(lambda: status_of(op, "users", "Degraded") == ("True", "DeadlineExceeded"),
                    message="Degraded=DeadlineExceeded")

        events = await until(lambda: (w := [e for e in op.events("users")
                                            if e["type"] == "Warning"]) and len(w) >= 3 and w,
                             message="warning events")
        assert {e["reason"] for e in events} >= {"ImportFailed", "OOMKilled", "DeadlineExceeded"}
        text = op.metrics()
        assert metric(text, "snapshots_operator_jobs_finished_total", result="failed",
                      reason="OOMKilled") == 1
        assert metric(text, "snapshots_operator_sources", condition="Degraded",
                      status="True") == 1


async def test_spec_changes_patch_the_cronjob_and_suspend(kmock: SnapshotsEmulator) -> None:
    async with running_operator(kmock) as op:
        await op.create_source("users", SPEC)
        await until(lambda: op.get(CRONJOBS, "users"), message="the CronJob")
        await until(lambda: op.jobs_of("users"), message="the initial Job")

        await op.patch_source("users", {"spec": {"schedule": "0 3 * * *",
                                                 "pushgateway": "http://pgw:9091"}})
        cronjob = await until(lambda: (c := op.get(CRONJOBS, "users"))
                              and c["spec"]["schedule"] == "0 3 * * *" and c,
                              message="the CronJob's new schedule")
        args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[-2:] == ["--pushgateway", "http://pgw:9091"]
        await until(lambda: op.source("users")["status"].get("observedGeneration") == 2,
                    message="observedGeneration 2")
        assert op.source("users")["status"]["schedule"] == "0 3 * * *"

        await op.patch_source("users", {"spec": {"suspend": True}})
        await until(lambda: op.get(CRONJOBS, "users")["spec"]["suspend"] is True,
                    message="the CronJob suspended")
        await until(lambda: op.source("users")["status"].get("suspended") is True,
                    message="status.suspended")
        await until(lambda: {"CronJobUpdated", "Suspended"} <=
                    {e["reason"] for e in op.events("users")}, message="the events")
        assert len(op.jobs_of("users")) == 1  # spec changes run nothing by themselves

        await op.patch_source("users", {"spec": {"suspend": False, "pushgateway": None}})
        cronjob = await until(lambda: (c := op.get(CRONJOBS, "users"))
                              and c["spec"]["suspend"] is False and c,
                              message="the CronJob resumed")
        args = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--pushgateway" not in args
        await until(lambda: "Resumed" in {e["reason"] for e in op.events("users")},
                    message="the Resumed event")


async def test_sync_now_annotation_launches_exactly_one_job(kmock: SnapshotsEmulator) -> None:
    async with running_operator(kmock) as op:
        await op.create_source("users", SPEC)
        initial = (await until(lambda: op.jobs_of("users"), message="the initial Job"))[0]
        await op.finish_job(initial["metadata"]["name"], succeeded=True,
                            message=json.dumps(SUMMARY))
        await until(lambda: status_of(op, "users", "Ready") == ("True", "Synced"),
                    message="Ready")

        await op.patch_source("users", {"metadata": {"annotations": {
            resources.SYNC_NOW_ANNOTATION: "2026-01-02T03:04:05Z"}}})
        jobs = await until(lambda: len(j := op.jobs_of("users")) == 2 and j,
                           message="the sync-now Job")
        now_job = next(j for j in jobs if j["metadata"]["annotations"]
                       ["snapshots.dev/trigger"] == "sync-now")
        await until(lambda: resources.SYNC_NOW_ANNOTATION not in
                    (op.source("users")["metadata"].get("annotations") or {}),
                    message="the annotation removed")
        await until(lambda: status_of(op, "users", "Progressing") == ("True", "JobRunning"),
                    message="Progressing")

        await op.finish_job(now_job["metadata"]["name"], succeeded=True,
                            message=json.dumps({**SUMMARY, "files": {
                                "imported": 0, "skipped": 3, "failed": 0, "conflict": 0}}))
        await until(lambda: op.source("users")["status"]["lastRun"]["job"] ==
                    now_job["metadata"]["name"], message="the sync-now run recorded")
        assert op.source("users")["status"]["lastRun"]["trigger"] == "sync-now"
        assert len(op.jobs_of("users")) == 2  # one annotation, one Job
        text = op.metrics()
        assert metric(text, "snapshots_operator_jobs_launched_total", trigger="sync-now",
                      result="created") == 1
        assert metric(text, "snapshots_operator_jobs_finished_total", result="succeeded",
                      reason="Synced") == 2


async def test_an_existing_cronjob_is_adopted_cluster_wide(kmock: SnapshotsEmulator) -> None:
    """--all-namespaces mode; a CronJob of the source's name exists already (409 on create)."""
    leftover = {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "users", "namespace": NAMESPACE, "labels": {"team": "data"},
                     "ownerReferences": [{"apiVersion": "snapshots.dev/v1alpha1",
                                          "kind": "SnapshotSource", "name": "users",
                                          "uid": "a-deleted-source", "controller": True}]},
        "spec": {"schedule": "0 0 * * *", "timeZone": "UTC", "jobTemplate": {"spec": {
            "template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "old", "image": "old"}]}}}}},
    }
    async with running_operator(kmock, clusterwide=True) as op:
        assert any(r.namespace is None for r in kmock
                   if r.resource is not None and r.resource.plural == "snapshotsources")
        await op.create(f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs", leftover)
        uid = (await op.create_source("users", SPEC))["metadata"]["uid"]
        cronjob = await until(lambda: (c := op.get(CRONJOBS, "users")) and
                              c["metadata"]["ownerReferences"][0]["uid"] == uid and c,
                              message="the CronJob adopted")
        assert [ref["uid"] for ref in cronjob["metadata"]["ownerReferences"]] == [uid]
        assert cronjob["spec"]["schedule"] == "*/5 * * * *"
        assert "timeZone" not in cronjob["spec"]  # the merge patch's null removed it
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert [c["name"] for c in pod["containers"]] == ["snapshots"]
        assert cronjob["metadata"]["labels"]["team"] == "data"  # other labels are kept
        assert any(r.method == "POST" and r.resource is not None
                   and r.resource.plural == "cronjobs" for r in kmock)
        await until(lambda: "CronJobAdopted" in {e["reason"] for e in op.events("users")},
                    message="the CronJobAdopted event")
        await until(lambda: op.jobs_of("users"), message="the initial Job")


async def test_the_job_command_runs_for_real(kmock: SnapshotsEmulator, db_url: str,
                                             cli_env: dict[str, str], tmp_path: Path) -> None:
    """The Job's own command and environment, run as a local process against PostgreSQL.

    What the kubelet would do is done by hand: the volume is a local directory, the Secret's
    key and the Downward API fields become environment values, and the termination message
    file is read back and handed to the API as the pod's state.
    """
    data = tmp_path / "volume"
    (data / "incoming").mkdir(parents=True)
    (data / "incoming" / "snapshot_20230101.csv").write_text(
        "user_id,name,store_name,credit_limit\n1,Jake,Best Berlin Burgers,10000.1\n"
        "2,Mostafa,Express Espresso,500.002\n")
    (data / "incoming" / "snapshot_20230102.csv").write_text(
        "user_id,name,store_name,credit_limit\n1,Jake,Best Berlin Burgers,20000\n")
    async with running_operator(kmock) as op:
        await op.create_source("users", SPEC)
        job = (await until(lambda: op.jobs_of("users"), message="the Job"))[0]
        pod_spec = job["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        assert container["command"] == ["snapshots"]

        pod_name = f"{job['metadata']['name']}-x7k2p"
        env = dict(cli_env)
        for var in container["env"]:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in var["valueFrom"]:
                assert var["valueFrom"]["secretKeyRef"] == {"name": "snapshots-db", "key": "uri"}
                env[var["name"]] = db_url
            else:
                field = var["valueFrom"]["fieldRef"]["fieldPath"]
                env[var["name"]] = {"metadata.namespace": NAMESPACE,
                                    "metadata.name": pod_name}[field]
        env["HOME"] = str(tmp_path)
        mount = next(m for m in container["volumeMounts"] if m["name"] == "data")
        args = [str(data) + arg[len(mount["mountPath"]):]
                if arg.startswith(mount["mountPath"]) else arg for arg in container["args"]]
        termination = tmp_path / "termination-log"
        result = run_cli(*args, "--summary-file", termination, env=env, timeout=180)
        assert result.returncode == 0, result.stderr
        message = termination.read_text()
        assert len(message.encode()) <= 4096

        await op.finish_job(job["metadata"]["name"], succeeded=True, message=message)
        await until(lambda: status_of(op, "users", "Ready") == ("True", "Synced"),
                    message="Ready from the real summary")
        run = op.source("users")["status"]["lastRun"]
        assert run["summary"] == json.loads(message)
        assert run["summary"]["files"]["imported"] == 2
        assert run["summary"]["rows"] == 3
        assert run["summary"]["table"] == "users"

    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT file_name, imported_by FROM snapshot_imports "
                            "WHERE status = 'imported' ORDER BY file_name").fetchall()
    assert [row[0] for row in rows] == ["snapshot_20230101.csv", "snapshot_20230102.csv"]
    for _file, imported_by in rows:
        assert (imported_by["namespace"], imported_by["pod"], imported_by["source"]) == \
            (NAMESPACE, pod_name, "users")
    assert os.environ.get("SNAPSHOTS_SOURCE") is None  # nothing leaked into this process
