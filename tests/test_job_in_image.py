"""The operator's Job, run for real: its pod template in the built image, with podman.

The Job and the CronJob come from the operator's own builders for the example SnapshotSource
in manifests/04-example.yaml; tests/kubelet.py turns the pod template into ``podman run``
field by field, as a kubelet would run it (the example Secret's values resolved, the claim a
directory). What the container writes to the termination message is handed to the
operator's ``run_outcome`` and ``status_after_run``, the functions that read a real pod's
status back into the SnapshotSource.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from containers import PROJECT, copy_samples, engine_env, network, postgres
from kubelet import Node, pod_run_args

from snapshots.errors import ExitCode
from snapshots_operator import resources

pytestmark = pytest.mark.containers

EXAMPLE = PROJECT / "manifests" / "04-example.yaml"
# The kubelet keeps at most this much of a log as a termination message (FallbackToLogsOnError).
LOG_TAIL_LINES = 80
LOG_TAIL_BYTES = 2048


def example() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The example's Secret, PersistentVolumeClaim and SnapshotSource (with a uid, as the API
    server would give it)."""
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc}
    source = copy.deepcopy(docs["SnapshotSource"])
    source["metadata"].update(uid=str(uuid.uuid4()), generation=1)
    return docs["Secret"], docs["PersistentVolumeClaim"], source


def secret_data(secret: Mapping[str, Any]) -> dict[str, str]:
    assert "data" not in secret, "the example's Secret uses stringData"
    return dict(secret["stringData"])


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_pod(job: Mapping[str, Any], template: Mapping[str, Any], tmp_path: Path, net: str,
            secrets: Mapping[str, Mapping[str, str]],
            claims: Mapping[str, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the pod to its end; the Job and the pod as the API server would then show them."""
    # One run of one pod: Kubernetes retries by new pods (backoffLimit), never in place.
    assert template["spec"]["restartPolicy"] == "Never"
    assert template["spec"]["automountServiceAccountToken"] is False  # it needs no API
    pod_name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
    termination_log = tmp_path / f"{pod_name}.termination-log"
    termination_log.touch()
    shutil.chown(termination_log, template["spec"]["securityContext"]["runAsUser"])
    node = Node(namespace=job["metadata"]["namespace"], network=net, secrets=secrets,
                claims=claims, termination_log=termination_log)
    args = pod_run_args(template, pod_name, node)
    started = now()
    try:
        proc = subprocess.run(["podman", "run", *args], env=engine_env(), capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["podman", "rm", "-f", pod_name], env=engine_env(),
                       capture_output=True, timeout=120)
    finished = now()
    message = termination_log.read_text()
    if not message and proc.returncode != 0:  # FallbackToLogsOnError
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        message = tail[-LOG_TAIL_BYTES:]
    terminated = {"exitCode": proc.returncode, "reason": "Completed" if proc.returncode == 0
                  else "Error", "message": message, "startedAt": started,
                  "finishedAt": finished}
    pod = {"metadata": {"name": pod_name},
           "status": {"containerStatuses": [{"name": resources.CONTAINER,
                                             "state": {"terminated": terminated}}]}}
    condition = "Complete" if proc.returncode == 0 else "Failed"
    finished_job = {**job, "status": {
        "startTime": started, "completionTime": finished if condition == "Complete" else None,
        "conditions": [{"type": condition, "status": "True", "lastTransitionTime": finished}]}}
    return finished_job, pod


def test_the_operators_job_runs_in_the_image(product_image: str, tmp_path: Path,
                                             service_images: dict[str, str]) -> None:
    secret, claim, source = example()
    config = resources.OperatorConfig(image=product_image, image_pull_policy="Never")
    job = resources.build_job(source, config, resources.TRIGGER_INITIAL, "t1")
    cronjob = resources.build_cronjob(source, config)
    scheduled = cronjob["spec"]["jobTemplate"]
    scheduled = {"metadata": {"name": f"{cronjob['metadata']['name']}-29000000",
                              "namespace": cronjob["metadata"]["namespace"],
                              "annotations": scheduled["spec"]["template"]["metadata"]
                              ["annotations"]}, "spec": scheduled["spec"]}

    # The claim's contents: the samples under spec.path.
    volume = tmp_path / "volume"
    copy_samples(volume / source["spec"]["path"])
    claims = {claim["metadata"]["name"]: volume}
    secrets = {secret["metadata"]["name"]: secret_data(secret)}
    uri = secrets["snapshots-db"]["uri"]
    host = uri.split("@", 1)[1].split(":", 1)[0]
    password = uri.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]

    with network() as net, postgres(service_images, net, alias=host, password=password) as db:
        finished, pod = run_pod(job, job["spec"]["template"], tmp_path, net, secrets, claims)
        outcome = resources.run_outcome(finished, [pod])
        status = resources.status_after_run(source, outcome, now())
        assert outcome.succeeded, outcome.message
        run = status["lastRun"]
        assert run["result"] == "Succeeded" and run["trigger"] == resources.TRIGGER_INITIAL
        assert run["summary"]["files"]["imported"] == 2, run
        assert run["summary"]["rows"] == 11
        assert run["message"].startswith("imported 2, skipped 0, failed 0"), run["message"]
        table = source["spec"]["table"]
        assert db.query(f"SELECT count(*) FROM {table}") == "11"
        # Provenance: the pod's namespace and name, from the field references.
        by = db.query("SELECT DISTINCT concat_ws(' ', imported_by->>'origin', "
                      "imported_by->>'namespace', imported_by->>'pod', "
                      "imported_by->>'source') FROM snapshot_imports")
        assert by == f"job snapshots {pod['metadata']['name']} users", by

        # The CronJob's next run: the same pod, and nothing new to import.
        assert scheduled["spec"]["template"]["spec"] == job["spec"]["template"]["spec"]
        source["status"] = status
        finished, pod = run_pod(scheduled, scheduled["spec"]["template"], tmp_path, net,
                                secrets, claims)
        outcome = resources.run_outcome(finished, [pod])
        assert outcome.succeeded, outcome.message
        again = resources.status_after_run(source, outcome, now())["lastRun"]
        assert again["summary"]["files"] == {**again["summary"]["files"], "imported": 0,
                                             "skipped": 2, "failed": 0}, again
        assert again["summary"]["rows"] == 0
        assert db.query(f"SELECT count(*) FROM {table}") == "11"
        assert db.query("SELECT count(*) FROM snapshot_imports") == "2"

        # A wrong password in the Secret: the Job fails as DatabaseUnreachable, in one line.
        wrong = {name: {**data, "uri": uri.replace(password, "wrong")}
                 for name, data in secrets.items()}
        finished, pod = run_pod(job, job["spec"]["template"], tmp_path, net, wrong, claims)
        outcome = resources.run_outcome(finished, [pod])
        assert not outcome.succeeded and outcome.exit_code == ExitCode.DATABASE
        assert outcome.reason == "DatabaseUnreachable", outcome
        assert "wrong" not in outcome.message and "password" in outcome.message
