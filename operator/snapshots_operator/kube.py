"""Kubernetes API calls (the official `kubernetes` client), all with plain dicts.

Handlers stay thin by calling these; these stay dumb by taking what resources.py built.
A create that meets 409 Conflict adopts the existing object instead of failing: a retried
handler, a restarted operator or a CronJob left over from an earlier SnapshotSource of the same
name all end with the object the operator wants, owned by the current SnapshotSource.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from snapshots_operator import GROUP, PLURAL, VERSION, resources

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


class NoCredentials(Exception):
    """Neither a pod's service account nor a kubeconfig: the operator cannot reach any API."""


def load_api_client() -> k8s.ApiClient:
    """In a pod: the service account; elsewhere: the current kubeconfig context.

    kopf logs in from the same configuration (handlers.login), so both agree on the server.
    """
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException as in_cluster:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as kubeconfig:
            raise NoCredentials(
                f"no Kubernetes credentials: not in a pod ({in_cluster}) and no usable "
                f"kubeconfig ({kubeconfig})") from kubeconfig
    return k8s.ApiClient()


def _json(response: Any) -> dict[str, Any]:
    data = response.data if hasattr(response, "data") else response
    return json.loads(data) if data else {}


class Kube:
    """The few calls the operator makes; every one returns the object as a dict."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.api_client = api_client
        self.batch = k8s.BatchV1Api(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ----------------------------------------------------------------- SnapshotSources

    def get_source(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_source_status(self, namespace: str, name: str,
                            status: Mapping[str, Any]) -> dict[str, Any]:
        return _json(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)},
            _preload_content=False))

    def remove_source_annotation(self, namespace: str, name: str, key: str) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name,
                {"metadata": {"annotations": {key: None}}}, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @contextmanager
    def source_lock(self, namespace: str, name: str) -> Iterator[None]:
        """Serialise this process's status writes per source (they read, merge, then patch)."""
        with self._locks_guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    def update_source_status(
        self, namespace: str, name: str,
        compute: Callable[[dict[str, Any]], Mapping[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Read the source, compute a status patch from it, apply it; all under its lock.

        ``compute`` returns None for "nothing to write". Returns the source as patched (or as
        read), or None if the source is gone.
        """
        with self.source_lock(namespace, name):
            source = self.get_source(namespace, name)
            if source is None:
                return None
            patch = compute(source)
            if not patch:
                return source
            try:
                return self.patch_source_status(namespace, name, patch)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    # ----------------------------------------------------------------- CronJobs

    def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self.batch.read_namespaced_cron_job(name, namespace,
                                                             _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply_cronjob(self, desired: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create the CronJob; when it exists (409 Conflict), bring it to ``desired``.

        Returns (what happened, the object): "created", "patched" (it was ours already) or
        "adopted" (it existed without this SnapshotSource as its controller, e.g. left over
        from an earlier source of the same name, or made by hand).
        """
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            return "created", _json(self.batch.create_namespaced_cron_job(
                namespace, dict(desired), _preload_content=False))
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get_cronjob(namespace, name) or {}
        owner_uid = meta["ownerReferences"][0]["uid"]
        ours = any(ref.get("uid") == owner_uid and ref.get("controller")
                   for ref in existing.get("metadata", {}).get("ownerReferences", []))
        patch = resources.cronjob_patch(desired) if ours else \
            resources.adoption_patch(existing, desired)
        patched = _json(self.batch.patch_namespaced_cron_job(
            name, namespace, patch, _content_type=MERGE_PATCH, _preload_content=False))
        return ("patched" if ours else "adopted"), patched

    # ----------------------------------------------------------------- Jobs

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _json(self.batch.read_namespaced_job(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, desired: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Create a one-off Job; on 409 the Job of that (deterministic) name is ours already.

        Returns ("created" | "adopted", the Job).
        """
        meta = desired["metadata"]
        try:
            return "created", _json(self.batch.create_namespaced_job(
                meta["namespace"], dict(desired), _preload_content=False))
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get_job(meta["namespace"], meta["name"]) or {}
        owner_uid = meta["ownerReferences"][0]["uid"]
        if not any(ref.get("uid") == owner_uid
                   for ref in existing.get("metadata", {}).get("ownerReferences", [])):
            # A Job's spec is immutable: only ownership and our labels can be taken over.
            existing = _json(self.batch.patch_namespaced_job(
                meta["name"], meta["namespace"], resources.adoption_patch(existing, desired),
                _content_type=MERGE_PATCH, _preload_content=False))
        return "adopted", existing

    def mark_job_recorded(self, namespace: str, name: str) -> None:
        try:
            self.batch.patch_namespaced_job(
                name, namespace,
                {"metadata": {"annotations": {resources.ANNOTATION_RECORDED: "true"}}},
                _content_type=MERGE_PATCH, _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def job_pods(self, job: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The pods of a Job (by its job-name label, checked again here, and its uid)."""
        meta = job["metadata"]
        name = meta["name"]
        data = _json(self.core.list_namespaced_pod(
            meta["namespace"], label_selector=f"job-name={name}", _preload_content=False))
        uid = meta.get("uid")
        pods = []
        for pod in data.get("items") or []:
            pod_meta = pod.get("metadata") or {}
            labels = pod_meta.get("labels") or {}
            owners = {ref.get("uid") for ref in pod_meta.get("ownerReferences") or []}
            if name in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name")) \
                    and (uid is None or not owners or uid in owners):
                pods.append(pod)
        return pods

    def source_jobs(self, namespace: str, source_name: str) -> list[dict[str, Any]]:
        """The Jobs that ran (or run) for a source, by label, checked again by annotation."""
        selector = f"{resources.LABEL_SOURCE}={resources.label_value(source_name)}," \
                   f"{resources.LABEL_MANAGED_BY}={resources.MANAGED_BY}"
        data = _json(self.batch.list_namespaced_job(namespace, label_selector=selector,
                                                    _preload_content=False))
        return [job for job in data.get("items") or []
                if (job["metadata"].get("annotations") or {}).get(resources.ANNOTATION_SOURCE)
                == source_name]


def api_error_message(exc: Exception) -> str:
    """One line for an event or a condition from an ApiException (or anything else)."""
    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body or "{}")
            return f"{exc.status} {body.get('reason') or exc.reason}: {body.get('message', '')}"
        except ValueError:
            return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"
