"""Running the real operator (kopf) against KMock, the Kubernetes API simulator.

KMock keeps objects in memory and serves list/watch/create/patch/delete, but leaves to its
users what a real API server adds on its own. ``SnapshotsEmulator`` adds the few parts the
operator relies on: ``uid``, ``generateName`` (Events), ``creationTimestamp``, ``generation``
(bumped by spec changes) and ``resourceVersion`` honoured by watches (a watch that starts at
a version replays only what changed since, as the real server does, instead of every object).
Nothing here schedules pods: tests play the Job controller and the kubelet through the API.

The operator itself runs as users run it: the installed ``snapshots-operator`` console script
in a process of its own, logging in with its own wiring from a kubeconfig, or from a pod's
service account (``running_operator(login=...)``). Nothing of the product is replaced here.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.test_utils
import kmock
import pytest
import yaml
from containers import CONTAINERS_CONF
from helpers import free_port, in_ci, require_tool
from kmock._internal import enums, rendering
from kubelet import Node, pod_run_args

from snapshots_operator import GROUP, KIND, PLURAL, VERSION

T = TypeVar("T")

SOURCES = f"{GROUP}/{VERSION}/{PLURAL}"
CRONJOBS = "batch/v1/cronjobs"
JOBS = "batch/v1/jobs"
PODS = "v1/pods"
EVENTS = "v1/events"
NAMESPACE = "data"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SnapshotsEmulator(kmock.KubernetesEmulator):
    """KMock's emulator plus uid, generateName, generation and resourceVersion."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.versions = itertools.count(1)
        self.last_version = 0

    def _next_version(self) -> str:
        self.last_version = next(self.versions)
        return str(self.last_version)

    async def _handle(self, request: rendering.Request):  # type: ignore[override]
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", now())
                meta["generation"] = 1
                meta["resourceVersion"] = self._next_version()
            elif request.action == enums.action.UPDATE and request.name:
                key = (request.resource, request.namespace, request.name)
                try:
                    current = self.objects[key]
                except KeyError:
                    current = None
                if current is not None and not current.deleted:
                    old_meta = current.get("metadata", {})
                    generation = old_meta.get("generation", 1)
                    if request.subresource is None and "spec" in data:
                        generation += 1
                    meta["generation"] = generation
                meta["resourceVersion"] = self._next_version()
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        assert isinstance(payload, dict)
        payload["metadata"] = {"resourceVersion": str(self.last_version)}
        selector = request.params.get("labelSelector")
        if selector:  # equality terms only, as the operator uses
            terms = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
            payload["items"] = [
                item for item in payload["items"]
                if all((item.get("metadata", {}).get("labels") or {}).get(k) == v
                       for k, v in terms.items())]
        return payload

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        yield b""
        assert request.resource is not None
        bus = self._buses[request.resource]
        marker = await bus.mark()
        since = request.params.get("resourceVersion")
        since_version = int(since) if since and since.isdigit() else 0
        async with self._lock:
            replay = []
            for (resource, namespace, _name), obj in self.objects.items():
                if resource != request.resource or obj.deleted:
                    continue
                if request.namespace is not None and namespace != request.namespace:
                    continue
                version = int(obj.get("metadata", {}).get("resourceVersion") or 0)
                if version > since_version:
                    replay.append({"type": "ADDED" if not since_version else "MODIFIED",
                                   "object": obj.raw})
        for event in replay:
            yield event
        async for event in bus.stream(since=marker):
            namespace = event.get("object", {}).get("metadata", {}).get("namespace")
            if request.namespace is None or namespace == request.namespace:
                yield event


def register_resources(emulator: kmock.KubernetesEmulator) -> None:
    """The built-in resources (kmock's bundled discovery) plus our CRD's."""
    emulator.resources.load_bundled()
    emulator.resources[SOURCES] = kmock.ResourceInfo(
        kind=KIND, singular="snapshotsource", namespaced=True, subresources={"status"},
        shortnames={"snapsrc"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"})


async def until(predicate: Callable[[], T], timeout: float = 15, interval: float = 0.05,
                message: str | None = None) -> T:
    """The asyncio twin of helpers.wait_until: poll until truthy, fail at the deadline.

    It must await (not sleep) so that KMock, in this same event loop, keeps serving.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", "condition")
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        await asyncio.sleep(interval)


@dataclass
class RunningOperator:
    """A handle on the operator under test (a real process) and the simulated API server."""

    api: SnapshotsEmulator
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path
    token: str

    # ----------------------------------------------------------------- reading state

    def get(self, resource: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.api.objects or self.api.objects[key].deleted:
            return None
        return json.loads(json.dumps(self.api.objects[key].raw))

    def names(self, resource: str, namespace: str = NAMESPACE) -> list[str]:
        return sorted(name for (res, ns, name), obj in self.api.objects.items()
                      if res == kmock.resource(resource) and ns == namespace
                      and not obj.deleted)

    def items(self, resource: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return [obj for name in self.names(resource, namespace)
                if (obj := self.get(resource, name, namespace)) is not None]

    def source(self, name: str) -> dict[str, Any]:
        obj = self.get(SOURCES, name)
        assert obj is not None, f"SnapshotSource {name} is gone"
        return obj

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for cond in (self.source(name).get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return cond
        return None

    def events(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.items(EVENTS)
                if event.get("involvedObject", {}).get("kind") == KIND
                and event["involvedObject"].get("name") == name]

    def jobs_of(self, name: str) -> list[dict[str, Any]]:
        return [job for job in self.items(JOBS)
                if job["metadata"].get("annotations", {}).get("snapshots.dev/source") == name]

    def metrics(self) -> str:
        """The operator's /metrics page (a blocking read: the operator is another process)."""
        with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            assert response.status == 200
            return response.read().decode()

    def healthz(self) -> int:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def authorizations(self) -> set[str]:
        """The Authorization header of every request the operator made (kopf's watches and
        patches, the `kubernetes` client's calls); the test's own requests are KMock's."""
        seen = {request.headers.get("Authorization", "") for request in self.api
                if not request.headers.get("User-Agent", "").startswith("kmock/")}
        # The scheme is case-insensitive (RFC 7235): the `kubernetes` client says "bearer".
        return {f"{scheme.capitalize()} {rest}".strip()
                for scheme, _, rest in (header.partition(" ") for header in seen)}

    # ----------------------------------------------------------------- changing state

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/merge-patch+json") -> dict[str, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        # The plain-HTTP entry point the fixture opened first: KMock would otherwise spread
        # the test's calls over the TLS one of the in-cluster login too.
        client = self.api.servers[0].client
        async with client.request(method, path, data=json.dumps(body) if body is not None
                                  else None, headers=headers) as response:
            text = await response.text()
            assert response.status < 300, f"{method} {path}: {response.status} {text}"
            return json.loads(text) if text else {}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, body, "application/json")

    async def create_source(self, name: str, spec: dict[str, Any],
                            annotations: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": name, "namespace": NAMESPACE,
                             "annotations": annotations or {}},
                "spec": spec}
        return await self._call(
            "POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}", body,
            "application/json")

    async def patch_source(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            "PATCH", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}", patch)

    async def delete_source(self, name: str) -> None:
        await self._call(
            "DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}")

    async def finish_job(self, job_name: str, *, succeeded: bool, message: str | None,
                         exit_code: int = 0, reason: str | None = None,
                         job_reason: str | None = None) -> None:
        """Play the Job controller and the kubelet: a pod ran and ended; the Job finished.

        The pod's container state carries the termination message (the `--once` summary,
        or nothing), as the kubelet reports it; then the Job's conditions say how it ended.
        """
        job = self.get(JOBS, job_name)
        assert job is not None, f"no Job {job_name}"
        started = now()
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{job_name}-{uuid.uuid4().hex[:5]}", "namespace": NAMESPACE,
                "labels": {"job-name": job_name, "batch.kubernetes.io/job-name": job_name,
                           **job["spec"]["template"]["metadata"]["labels"]},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": job["metadata"]["uid"], "controller": True}],
            },
            "spec": job["spec"]["template"]["spec"],
        }
        created = await self._call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod,
                                   "application/json")
        await self._call("PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job_name}/status",
                         {"status": {"startTime": started, "active": 1}})
        terminated: dict[str, Any] = {
            "exitCode": exit_code, "reason": reason or ("Completed" if succeeded else "Error"),
            "startedAt": started, "finishedAt": now()}
        if message is not None:
            terminated["message"] = message
        await self._call(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{created['metadata']['name']}/status",
            {"status": {"phase": "Succeeded" if succeeded else "Failed",
                        "containerStatuses": [{"name": "snapshots", "ready": False,
                                               "restartCount": 0, "image": "snapshots",
                                               "imageID": "", "state": {
                                                   "terminated": terminated}}]}})
        finished = now()
        if succeeded:
            conditions = [{"type": "SuccessCriteriaMet", "status": "True",
                           "lastTransitionTime": finished},
                          {"type": "Complete", "status": "True",
                           "lastTransitionTime": finished}]
            status = {"succeeded": 1, "active": 0, "completionTime": finished}
        else:
            conditions = [{"type": "FailureTarget", "status": "True",
                           "reason": job_reason or "PodFailurePolicy",
                           "lastTransitionTime": finished},
                          {"type": "Failed", "status": "True",
                           "reason": job_reason or "PodFailurePolicy",
                           "message": "the pod failed", "lastTransitionTime": finished}]
            status = {"failed": 1, "active": 0}
        await self._call("PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job_name}/status",
                         {"status": {**status, "conditions": conditions}})

    async def schedule_job(self, source_name: str, suffix: str = "29000000") -> str:
        """Play the CronJob controller: create a Job from the CronJob's jobTemplate."""
        cronjob = self.get(CRONJOBS, source_name)
        assert cronjob is not None
        template = cronjob["spec"]["jobTemplate"]
        name = f"{cronjob['metadata']['name']}-{suffix}"
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": NAMESPACE,
                            "labels": template["metadata"]["labels"],
                            "annotations": template["metadata"]["annotations"],
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob",
                                                 "name": cronjob["metadata"]["name"],
                                                 "uid": cronjob["metadata"]["uid"],
                                                 "controller": True}]},
               "spec": template["spec"]}
        await self._call("POST", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs", job,
                         "application/json")
        await self._call("PATCH", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}/status",
                         {"status": {"startTime": now(), "active": 1}})
        return name


OPERATOR_SCRIPT = Path(sys.executable).with_name("snapshots-operator")
JOB_IMAGE = "registry.example/snapshots:test"
SERVICE_ACCOUNT_DIR = "/run/secrets/kubernetes.io/serviceaccount"
DEPLOYMENT_MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "03-operator.yaml"


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    """A kubeconfig as `kubectl config` writes one: a cluster, a user with a token, a context."""
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": token}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester",
                                                   "namespace": NAMESPACE}}],
        "current-context": "kmock",
    }))
    return path


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (ca.crt, tls.crt, tls.key),
    as a cluster's API server presents them to the pods' service accounts."""
    openssl = require_tool("openssl")
    ca_key, ca, key, csr, cert = (directory / name for name in (
        "ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                          "keyUsage=digitalSignature,keyEncipherment\n"
                          "extendedKeyUsage=serverAuth\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-subj", "/CN=kmock-ca", "-days", "2"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=kubernetes"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", extensions],
    ):
        subprocess.run([openssl, *map(str, argv)], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def _tls_server_class(context: ssl.SSLContext) -> type[aiohttp.test_utils.RawTestServer]:
    class TLSServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, **kwargs: Any) -> None:
            await super().start_server(ssl=context, **kwargs)

    return TLSServer


def _in_cluster_command(service_account: Path) -> list[str]:
    """Run the operator with ``service_account`` where a pod has its service account.

    The `kubernetes` client reads the token and CA from fixed paths under /run/secrets; a
    private mount namespace (root and util-linux's unshare) puts the files there for the
    operator's process alone, as the kubelet does for a pod, and nothing on the host changes.
    """
    unshare = require_tool("unshare")
    if os.geteuid() != 0:
        message = "the in-cluster login test needs root (a private mount namespace)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    script = (f"mount -t tmpfs tmpfs /run && mkdir -p {SERVICE_ACCOUNT_DIR} && "
              f'mount --bind "$1" {SERVICE_ACCOUNT_DIR} && shift && exec "$@"')
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(service_account)]


def _deployment_command(image: str, service_account: Path, metrics_port: int,
                        api: dict[str, str]) -> list[str]:
    """The operator's Deployment from manifests/03-operator.yaml, run in ``image`` by podman
    (tests/kubelet.py) on the host network, where the simulated API server listens.

    Changed only where the host network forces it: the metrics port (a free one, on
    loopback) and the watched namespace (the tests' own); ``api`` is what Kubernetes adds to
    every pod's environment, KUBERNETES_SERVICE_HOST and _PORT. In the foreground,
    `podman run` passes SIGTERM on to the operator, as the kubelet would.
    """
    (deployment,) = [doc for doc in yaml.safe_load_all(DEPLOYMENT_MANIFEST.read_text())
                     if doc and doc["kind"] == "Deployment"]
    template = copy.deepcopy(deployment["spec"]["template"])
    (container,) = template["spec"]["containers"]
    container["image"] = image
    overrides = {"SNAPSHOTS_OPERATOR_METRICS_PORT": str(metrics_port),
                 "SNAPSHOTS_OPERATOR_NAMESPACES": NAMESPACE,
                 "SNAPSHOTS_OPERATOR_JOB_IMAGE": JOB_IMAGE}
    node = Node(namespace=deployment["metadata"]["namespace"], network="host",
                service_account=service_account)
    args = pod_run_args(template, f"snapshots-test-operator-{uuid.uuid4().hex[:8]}", node,
                        overrides)
    added = {**api, "SNAPSHOTS_OPERATOR_METRICS_HOST": "127.0.0.1"}
    return ["podman", "run", "--rm", *(arg for item in added.items()
                                       for arg in ("-e", "=".join(item))), *args]


@contextlib.asynccontextmanager
async def running_operator(api: SnapshotsEmulator, *, clusterwide: bool = False,
                           login: str = "kubeconfig",
                           image: str | None = None) -> AsyncIterator[RunningOperator]:
    """Start the installed ``snapshots-operator`` against ``api``, as a user would.

    It is given nothing but what a user gives it: a kubeconfig (``login="kubeconfig"``), or a
    pod's service account token and CA with ``KUBERNETES_SERVICE_HOST``/``_PORT`` pointing at
    the API over TLS (``login="in-cluster"``); its options on the command line. With
    ``image``, the in-cluster login is the operator's Deployment from manifests/ run in that
    image. Its log goes to a file, shown when it fails.
    """
    assert OPERATOR_SCRIPT.exists(), f"{OPERATOR_SCRIPT}: the package is not installed"
    register_resources(api)
    token = f"token-{uuid.uuid4().hex}"
    workdir = Path(tempfile.mkdtemp(prefix="snapshots-operator-"))
    home = workdir / "home"
    home.mkdir()
    metrics_port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    prefix: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        if login == "kubeconfig":
            env["KUBECONFIG"] = str(_kubeconfig(workdir / "kubeconfig",
                                                str(api.url).rstrip("/"), token))
        elif login == "in-cluster":
            service_account = workdir / "serviceaccount"
            service_account.mkdir()
            ca, cert, key = _certificates(workdir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            tls = await stack.enter_async_context(
                kmock.Server(api, server_cls=_tls_server_class(context)))
            (service_account / "token").write_text(token)
            (service_account / "ca.crt").write_bytes(ca.read_bytes())
            (service_account / "namespace").write_text(NAMESPACE)
            env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
            env["KUBERNETES_SERVICE_PORT"] = str(tls.port)
            prefix = _in_cluster_command(service_account) if image is None else []
        else:
            raise ValueError(login)
        scope = ["--all-namespaces"] if clusterwide else ["--namespace", NAMESPACE]
        command = [*prefix, str(OPERATOR_SCRIPT), *scope, "--metrics-host", "127.0.0.1",
                   "--metrics-port", str(metrics_port), "--job-image", JOB_IMAGE]
        if image is not None:
            assert login == "in-cluster" and not clusterwide, "the Deployment as shipped"
            # Readable by the pod's user, as the kubelet's projected token is (0644).
            for path in (workdir, service_account, *service_account.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
            api_env = {name: env[name] for name in ("KUBERNETES_SERVICE_HOST",
                                                    "KUBERNETES_SERVICE_PORT")}
            command = _deployment_command(image, service_account, metrics_port, api_env)
            env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
        log = workdir / "operator.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        op = RunningOperator(api=api, process=process, metrics_port=metrics_port, log=log,
                             token=token)
        try:
            await until(lambda: process.poll() is not None or _answers(op), 60,
                        message="the operator's /healthz")
            assert process.poll() is None, f"the operator exited:\n{op.logs()}"
            # kopf lists, then watches: wait for both watches so nothing happens before them.
            await until(lambda: {"snapshotsources", "jobs"} <= _watched(api), 30,
                        message="the operator's watch streams")
            yield op
        except BaseException:
            print(f"--- operator log\n{op.logs()}")
            raise
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            await until(lambda: process.poll() is not None, 30,
                        message="the operator to stop on SIGTERM")
    returncode = process.returncode
    logs = op.logs()
    shutil.rmtree(workdir, ignore_errors=True)
    assert returncode == 0, f"the operator exited {returncode} on SIGTERM:\n{logs}"
    assert "Traceback" not in logs, logs


def _answers(op: RunningOperator) -> bool:
    try:
        return op.healthz() == 200
    except OSError:
        return False


def _watched(api: kmock.KubernetesEmulator) -> set[str]:
    return {request.resource.plural for request in api
            if request.action == enums.action.WATCH and request.resource is not None}
