"""Thin kopf handlers: read the event, call a builder, call the API, write the status.

Handlers are plain functions of keyword arguments (as kopf calls them), registered on a
registry by ``register()``; tests call them directly with a fake ``Kube``. They are sync: kopf
runs them in its thread pool, which suits the blocking `kubernetes` client.

No handler is registered for deletion, so kopf adds no finalizer: deleting a SnapshotSource
deletes its CronJob and Jobs through owner references even while the operator is down.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import kopf

from snapshots_operator import GROUP, PLURAL, VERSION, resources
from snapshots_operator.kube import api_error_message
from snapshots_operator.metrics import OperatorMetrics

log = logging.getLogger(__name__)

Emit = Callable[[Mapping[str, Any], str, str, str], None]


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kopf_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """A Kubernetes Event on ``obj`` through kopf's poster (thread-safe, never raises)."""
    kopf.event(dict(obj), type=type_, reason=reason, message=message[:1024])


class KubeLike(Protocol):  # what handlers need from kube.Kube (tests pass a fake)
    def apply_cronjob(self, desired: Mapping[str, Any]) -> tuple[str, dict[str, Any]]: ...
    def create_job(self, desired: Mapping[str, Any]) -> tuple[str, dict[str, Any]]: ...
    def job_pods(self, job: Mapping[str, Any]) -> list[dict[str, Any]]: ...
    def mark_job_recorded(self, namespace: str, name: str) -> None: ...
    def remove_source_annotation(self, namespace: str, name: str, key: str) -> None: ...
    def update_source_status(
        self, namespace: str, name: str,
        compute: Callable[[dict[str, Any]], Mapping[str, Any] | None],
    ) -> dict[str, Any] | None: ...


@dataclass
class Context:
    """Everything the handlers share; kept in kopf's ``memo`` as ``memo.snapshots``."""

    kube: KubeLike
    config: resources.OperatorConfig = field(default_factory=resources.OperatorConfig)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    emit: Emit = kopf_event
    now: Callable[[], str] = utcnow


def _ctx(memo: Any) -> Context:
    return memo["snapshots"] if isinstance(memo, Mapping) else memo.snapshots


def _plain(body: Any) -> dict[str, Any]:
    """kopf's Body is a read-only view; builders want plain dicts."""
    return {key: _plain_value(value) for key, value in dict(body).items()}


def _plain_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_value(item) for item in value]
    return value


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --------------------------------------------------------------------------- launching

def launch_job(ctx: Context, source: Mapping[str, Any], trigger: str,
               request: str = "") -> str:
    """Create a one-off Job for ``source``; idempotent per (source, trigger, request)."""
    token = resources.launch_token(source, trigger, request)
    desired = resources.build_job(source, ctx.config, trigger, token)
    try:
        what, _job = ctx.kube.create_job(desired)
    except Exception:
        ctx.metrics.jobs_launched.labels(trigger, "error").inc()
        raise
    ctx.metrics.jobs_launched.labels(trigger, what).inc()
    name = desired["metadata"]["name"]
    if what == "created":
        why = "initial sync" if trigger == resources.TRIGGER_INITIAL else \
            f"{resources.SYNC_NOW_ANNOTATION} annotation"
        ctx.emit(source, "Normal", "JobLaunched", f"started Job {name} ({why})")
    return name


def _write_status(ctx: Context, source: Mapping[str, Any],
                  compute: Callable[[dict[str, Any]], Mapping[str, Any] | None],
                  ) -> dict[str, Any] | None:
    meta = source["metadata"]
    updated = ctx.kube.update_source_status(meta["namespace"], meta["name"], compute)
    if updated is not None:
        ctx.metrics.observe_status(meta["namespace"], meta["name"], updated.get("status") or {})
    return updated


# --------------------------------------------------------------------------- SnapshotSource

def reconcile(body: Any, memo: Any, reason: str = "resume", old: Any = None, new: Any = None,
              **_: Any) -> None:
    """Create or patch the CronJob; on creation also launch the first sync at once."""
    ctx = _ctx(memo)
    source = _plain(body)
    spec = resources.spec_with_defaults(source.get("spec") or {})
    try:
        desired = resources.build_cronjob(source, ctx.config)
        what, _cronjob = ctx.kube.apply_cronjob(desired)
        launched = None
        if reason == "create" and not spec["suspend"]:
            launched = launch_job(ctx, source, resources.TRIGGER_INITIAL)
    except Exception as exc:
        ctx.metrics.reconciles.labels("error").inc()
        message = f"cannot set up the CronJob: {api_error_message(exc)}"
        ctx.emit(source, "Warning", "ReconcileFailed", message)
        now = ctx.now()
        _write_status(ctx, source, lambda s: resources.status_error(
            s, "ReconcileFailed", message, now))
        raise kopf.TemporaryError(message, delay=30) from exc
    name = desired["metadata"]["name"]
    if what == "created":
        ctx.emit(source, "Normal", "CronJobCreated",
                 f"created CronJob {name} (schedule {spec['schedule']!r})")
    elif what == "adopted":
        ctx.emit(source, "Normal", "CronJobAdopted", f"adopted the existing CronJob {name}")
    elif reason == "update":
        ctx.emit(source, "Normal", "CronJobUpdated", f"updated CronJob {name} to the new spec")
    if reason == "update" and old is not None and new is not None:
        was = bool((old or {}).get("suspend"))
        if was != bool(spec["suspend"]):
            ctx.emit(source, "Normal", "Suspended" if spec["suspend"] else "Resumed",
                     "the schedule is suspended" if spec["suspend"] else
                     "the schedule runs again")
    now = ctx.now()
    _write_status(ctx, source, lambda s: resources.status_configured(s, now, launched=launched))
    ctx.metrics.reconciles.labels("success").inc()


def sync_now(body: Any, memo: Any, new: Any = None, reason: str = "update",
             started: dt.datetime | None = None, **_: Any) -> None:
    """The annotation ``snapshots.dev/sync-now`` (any value) runs one Job now, then goes away."""
    if not new:
        return
    ctx = _ctx(memo)
    source = _plain(body)
    meta = source["metadata"]
    spec = resources.spec_with_defaults(source.get("spec") or {})
    if not (reason == "create" and not spec["suspend"]):  # creation launches one anyway
        request = f"{new}@{started.isoformat() if started else ''}"
        try:
            name = launch_job(ctx, source, resources.TRIGGER_SYNC_NOW, request)
        except Exception as exc:
            ctx.metrics.reconciles.labels("error").inc()
            message = f"cannot start a Job: {api_error_message(exc)}"
            ctx.emit(source, "Warning", "JobLaunchFailed", message)
            raise kopf.TemporaryError(message, delay=15) from exc
        now = ctx.now()
        _write_status(ctx, source,
                      lambda s: resources.status_configured(s, now, launched=name))
    ctx.kube.remove_source_annotation(meta["namespace"], meta["name"],
                                      resources.SYNC_NOW_ANNOTATION)


def source_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    """Keep the per-condition gauges current; drop a deleted source's series."""
    ctx = _ctx(memo)
    meta = body.get("metadata") or {}
    if type == "DELETED":
        ctx.metrics.forget_source(meta.get("namespace", ""), meta.get("name", ""))
    else:
        ctx.metrics.observe_status(meta.get("namespace", ""), meta.get("name", ""),
                                   _plain(body.get("status") or {}))


# --------------------------------------------------------------------------- Jobs

def job_event(type: str | None, body: Any, memo: Any, **_: Any) -> None:
    """A Job of ours changed: note it running, or read its finished run into the status."""
    if type == "DELETED":
        return
    ctx = _ctx(memo)
    job = _plain(body)
    meta = job["metadata"]
    annotations = meta.get("annotations") or {}
    source_name = annotations.get(resources.ANNOTATION_SOURCE)
    namespace = meta.get("namespace", "")
    if not source_name or annotations.get(resources.ANNOTATION_RECORDED) == "true":
        return
    now = ctx.now()
    if not resources.job_finished(job):
        started: list[bool] = []

        def running(source: dict[str, Any]) -> Mapping[str, Any] | None:
            patch = resources.status_job_started(source, job, now)
            started.append(patch is not None)
            return patch

        updated = _write_status(ctx, {"metadata": {"namespace": namespace,
                                                   "name": source_name}}, running)
        trigger = annotations.get(resources.ANNOTATION_TRIGGER)
        if updated is not None and any(started) and trigger == resources.TRIGGER_SCHEDULE:
            ctx.emit(updated, "Normal", "JobStarted", f"scheduled Job {meta['name']} started")
        return

    outcome = resources.run_outcome(job, ctx.kube.job_pods(job))
    fresh: list[bool] = []

    def finished(source: dict[str, Any]) -> Mapping[str, Any] | None:
        last = ((source.get("status") or {}).get("lastRun") or {}).get("job")
        fresh.append(last != outcome.job)
        return resources.status_after_run(source, outcome, now) if last != outcome.job else None

    updated = _write_status(ctx, {"metadata": {"namespace": namespace, "name": source_name}},
                            finished)
    if updated is not None and any(fresh):
        ctx.metrics.jobs_finished.labels(outcome.result.lower(), outcome.reason).inc()
        if outcome.succeeded:
            when = _timestamp(outcome.completion_time) or _timestamp(now)
            if when is not None:
                ctx.metrics.last_success.labels(namespace, source_name).set(when)
        ctx.emit(updated, "Normal" if outcome.succeeded else "Warning",
                 "RunSucceeded" if outcome.succeeded else outcome.reason,
                 f"Job {outcome.job}: {outcome.message}")
    ctx.kube.mark_job_recorded(namespace, meta["name"])


# --------------------------------------------------------------------------- login

def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Credentials for kopf's own API calls: in a pod its service account, elsewhere the
    current context of the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``).

    A plain ``OperatorRegistry`` has none of the fallback logins of kopf's default registry,
    so without this kopf gives up at start with "Ran out of valid credentials". It reads the
    same configuration as ``kube.load_api_client`` (the `kubernetes` client's), so kopf's
    watches and the operator's own calls always talk to one server as one identity.
    """
    return kopf.login_via_client(**kwargs)


# --------------------------------------------------------------------------- registration

def register(registry: kopf.OperatorRegistry | None = None) -> kopf.OperatorRegistry:
    """Register every handler on ``registry`` (a fresh one by default) and return it."""
    registry = registry if registry is not None else kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)
    kopf.on.login(id="login", registry=registry)(login)
    kopf.on.create(*resource, id="create", registry=registry)(reconcile)
    kopf.on.resume(*resource, id="resume", registry=registry)(reconcile)
    kopf.on.update(*resource, id="update", field="spec", registry=registry)(reconcile)
    kopf.on.field(*resource, id="sync-now", registry=registry,
                  field=("metadata", "annotations", resources.SYNC_NOW_ANNOTATION))(sync_now)
    kopf.on.event(*resource, id="observe", registry=registry)(source_event)
    kopf.on.event("batch", "v1", "jobs", id="jobs", registry=registry,
                  labels={resources.LABEL_MANAGED_BY: resources.MANAGED_BY})(job_event)
    return registry
