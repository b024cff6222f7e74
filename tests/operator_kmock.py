"""Running the real operator (kopf) against KMock, the Kubernetes API simulator.

KMock keeps objects in memory and serves list/watch/create/patch/delete, but leaves to its
users what a real API server adds on its own. ``SnapshotsEmulator`` adds the few parts the
operator relies on: ``uid``, ``generateName`` (Events), ``creationTimestamp``, ``generation``
(bumped by spec changes) and ``resourceVersion`` honoured by watches (a watch that starts at
a version replays only what changed since, as the real server does, instead of every object).
Nothing here schedules pods: tests play the Job controller and the kubelet through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import kmock
import pytest
from kmock._internal import enums, rendering
from kubernetes import client as k8s

from snapshots_operator import GROUP, KIND, PLURAL, VERSION, handlers
from snapshots_operator.cli import HttpServer, run_operator
from snapshots_operator.kube import Kube
from snapshots_operator.resources import OperatorConfig

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
    """A handle on the operator under test and the simulated API server it talks to."""

    api: SnapshotsEmulator
    context: handlers.Context
    server: HttpServer

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

    async def metrics(self) -> str:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{self.server.port}/metrics") as response:
            assert response.status == 200
            return await response.text()

    async def healthz(self) -> int:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{self.server.port}/healthz") as response:
            return response.status

    # ----------------------------------------------------------------- changing state

    async def _call(self, method: str, path: str, body: Any = None,
                    content_type: str = "application/merge-patch+json") -> dict[str, Any]:
        headers = {"Content-Type": content_type} if body is not None else {}
        async with self.api.request(method, path, data=json.dumps(body) if body is not None
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


@contextlib.asynccontextmanager
async def running_operator(api: SnapshotsEmulator,
                           config: OperatorConfig | None = None, *,
                           clusterwide: bool = False,
                           ) -> AsyncIterator[RunningOperator]:
    """Start the operator's real entry point (kopf, handlers, HTTP server) against ``api``.

    It runs in a thread with its own event loop, as in a pod: KMock keeps this test's loop,
    and kopf's shutdown only waits for kopf's own tasks.
    """
    import kopf

    register_resources(api)
    url = str(api.url).rstrip("/")
    configuration = k8s.Configuration()
    configuration.host = url
    api_client = k8s.ApiClient(configuration)
    context = handlers.Context(kube=Kube(api_client), config=config or OperatorConfig(
        image="registry.example/snapshots:test"))
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True)

    ready = threading.Event()
    state: dict[str, Any] = {}
    servers: list[HttpServer] = []

    async def operator_main() -> None:
        state["loop"] = asyncio.get_running_loop()
        state["stop"] = stop = asyncio.Event()
        await run_operator(
            context=context, clusterwide=clusterwide,
            namespaces=[] if clusterwide else [NAMESPACE],
            metrics_host="127.0.0.1", metrics_port=_free_port(), registry=registry,
            stop_flag=stop, ready_flag=ready, on_server=servers.append)

    def thread_main() -> None:
        try:
            asyncio.run(operator_main())
        except BaseException as exc:  # reported by the test below
            state["error"] = exc

    thread = threading.Thread(target=thread_main, name="operator", daemon=True)
    thread.start()
    try:
        await until(lambda: (ready.is_set() and servers) or not thread.is_alive(), 30,
                    message="the operator to start")
        if "error" in state:
            raise state["error"]
        # kopf lists, then watches: wait for both watches so nothing happens before them.
        await until(lambda: {"snapshotsources", "jobs"} <= _watched(api), 20,
                    message="the operator's watch streams")
        yield RunningOperator(api=api, context=context, server=servers[0])
    finally:
        if "loop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        await until(lambda: not thread.is_alive(), 30, message="the operator to stop")
        api_client.close()
        if "error" in state:
            raise state["error"]


def _watched(api: kmock.KubernetesEmulator) -> set[str]:
    return {request.resource.plural for request in api
            if request.action == enums.action.WATCH and request.resource is not None}



def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
