"""The operator's own Prometheus metrics (kopf has none), all named snapshots_operator_*.

Labels stay bounded: results, triggers and reasons are fixed sets; per-source series exist
once per SnapshotSource (namespace, source) and go away when the source is deleted.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from snapshots_operator import __version__

CONDITIONS = ("Ready", "Progressing", "Degraded")
STATUSES = ("True", "False", "Unknown")


class _SourcesCollector(Collector):
    def __init__(self, metrics: OperatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "snapshots_operator_sources",
            "SnapshotSources by condition and its status.",
            labels=["condition", "status"])
        counts = {(c, s): 0 for c in CONDITIONS for s in STATUSES}
        with self.metrics.lock:
            for conditions in self.metrics.conditions.values():
                for type_, status in conditions.items():
                    if (type_, status) in counts:
                        counts[type_, status] += 1
        for (type_, status), count in counts.items():
            family.add_metric([type_, status], count)
        yield family


class OperatorMetrics:
    """One set of metrics in its own registry (tests run several operators in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.lock = threading.Lock()
        self.conditions: dict[tuple[str, str], dict[str, str]] = {}
        self.reconciles = Counter(
            "snapshots_operator_reconciles", "Reconciliations of SnapshotSources by result.",
            ["result"], registry=self.registry)
        self.jobs_launched = Counter(
            "snapshots_operator_jobs_launched",
            "Jobs the operator launched itself, by trigger (initial, sync-now) and result "
            "(created; adopted: it existed already; error).",
            ["trigger", "result"], registry=self.registry)
        self.jobs_finished = Counter(
            "snapshots_operator_jobs_finished",
            "Finished sync Jobs (scheduled and one-off) by result and reason.",
            ["result", "reason"], registry=self.registry)
        self.last_success = Gauge(
            "snapshots_operator_last_success_timestamp_seconds",
            "When the last successful run of a SnapshotSource finished (Unix time).",
            ["namespace", "source"], registry=self.registry)
        self.build_info = Gauge(
            "snapshots_operator_build_info", "Always 1; the operator's version.",
            ["version"], registry=self.registry)
        self.build_info.labels(__version__).set(1)
        for result in ("success", "error"):
            self.reconciles.labels(result)
        for trigger in ("initial", "sync-now"):
            for result in ("created", "adopted", "error"):
                self.jobs_launched.labels(trigger, result)
        self.registry.register(_SourcesCollector(self))

    def observe_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        conditions = {c.get("type", ""): c.get("status", "Unknown")
                      for c in status.get("conditions") or ()}
        with self.lock:
            self.conditions[namespace, name] = conditions

    def forget_source(self, namespace: str, name: str) -> None:
        with self.lock:
            self.conditions.pop((namespace, name), None)
        with contextlib.suppress(KeyError):
            self.last_success.remove(namespace, name)

    def render(self) -> bytes:
        return generate_latest(self.registry)
