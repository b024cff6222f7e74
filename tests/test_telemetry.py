"""Telemetry against a real Prometheus and Pushgateway (SPEC sections 6 and 8).

The Debian packages' `prometheus` and `prometheus-pushgateway` run on loopback, Prometheus
from a copy of deploy/prometheus/prometheus.yml whose targets point at this test's ports (and
a 1 s scrape and evaluation interval), with deploy/prometheus/alerts.yml loaded as shipped.
`snapshots sync` and `snapshots import --pushgateway` run as real processes, and everything is
asserted through Prometheus's HTTP API. The deploy/ files themselves, docker-compose.yml and the
Dockerfile are checked statically at the end (there is no Docker engine here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
import pytest
import yaml
from helpers import conninfo_to_uri, free_port, require_tool, run_cli, wait_until
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql

from snapshots import __version__, embedded
from snapshots.errors import DatabaseUnavailable
from snapshots.importer import FileResult
from snapshots.metrics import DEFAULT_METRICS_PORT, push_results

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "snapshots.json"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MONITORING = REPO / "docs" / "monitoring.md"

DEADLINE = 45.0  # generous for a loaded 2-core CI machine; a quiet one takes ~2 s
PUSHED_JOBS = ("snapshots_import", "snapshots_sync")
HEADER = "user_id,name,store_name,credit_limit\n"


# --------------------------------------------------------------------------- processes


def http_get(url: str) -> tuple[int, str] | None:
    """(status, body), or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class Process:
    """A background process whose output goes to a file (a pipe could fill up and block it)."""

    def __init__(self, name: str, command: list[str], log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = command
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(command, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_http(self, url: str) -> None:
        def answers() -> bool:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.output()}"
            reply = http_get(url)
            return reply is not None and reply[0] == 200

        wait_until(answers, DEADLINE, interval=0.1, message=f"{self.name} to answer {url}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()
        return self.process.returncode

    def report(self) -> None:
        print(f"--- {self.name}: {' '.join(self.command)}\n{self.output()}")


def clean_env(embedded_dir: Path) -> dict[str, str]:
    """As the `cli_env` fixture: no developer SNAPSHOTS_*/PG* settings leak into the CLI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SNAPSHOTS_", "PG"))}
    env[embedded.DATA_DIR_ENV] = str(embedded_dir)
    return env


# --------------------------------------------------------------------------- Prometheus API


class PromQLError(AssertionError):
    pass


@dataclass
class Prometheus:
    url: str

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        address = f"{self.url}{path}" + (f"?{urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(address, timeout=15) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as error:  # 400/422 carry a JSON error body
            return json.load(error)

    def _result(self, body: dict[str, Any], expr: str) -> list[dict[str, Any]]:
        if body.get("status") != "success":
            raise PromQLError(f"{expr}\n  -> {body.get('errorType')}: {body.get('error')}")
        assert not body.get("warnings"), f"{expr}\n  -> warnings {body['warnings']}"
        return body["data"]["result"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self._result(self.api("/api/v1/query", **params), expr)

    def query_range(self, expr: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        return self._result(self.api("/api/v1/query_range", query=expr, start=f"{start:.3f}",
                                     end=f"{end:.3f}", step=f"{step:g}"), expr)

    def values(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """{label set: value} of an instant query."""
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in self.query(expr)}

    def value(self, expr: str) -> float | None:
        """The value of a query that returns at most one series."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr} returned {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, expected: float) -> None:
        seen: list[float | None] = []

        def arrived() -> bool:
            seen.append(self.value(expr))
            return seen[-1] == expected

        wait_until(arrived, DEADLINE, interval=0.1,
                   message=f"{expr} == {expected:g} in Prometheus (last seen {seen[-1:]})")

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        body = self.api("/api/v1/alerts")
        assert body["status"] == "success", body
        return [a for a in body["data"]["alerts"]
                if a["labels"].get("alertname") == alertname and a["state"] == "firing"
                and all(a["labels"].get(k) == v for k, v in labels.items())]


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    prometheus: Prometheus
    pushgateway_url: str
    database: str
    conn: psycopg.Connection
    env: dict[str, str]
    work: Path
    data_dir: Path
    sync_port: int
    victim_port: int
    processes: list[Process] = field(default_factory=list)

    def import_(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return run_cli("--database", self.database, "import", "--pushgateway",
                       self.pushgateway_url, *args, env=self.env, timeout=DEADLINE)

    def csv(self, directory: Path, name: str, body: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_text(body)
        return path

    def sync_metrics(self) -> dict[str, float]:
        reply = http_get(f"http://127.0.0.1:{self.sync_port}/metrics")
        assert reply is not None and reply[0] == 200, reply
        samples = {}
        for family in text_string_to_metric_families(reply[1]):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


def template_config(ports: dict[str, int], victim_port: int) -> dict[str, Any]:
    """The shipped prometheus.yml with loopback targets, a 1 s scrape and evaluation, and a
    second sync target (the "victim", which the sync-down test starts and stops)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # A new scrape job in the shipped config must be added here, with a real target to scrape.
    assert set(jobs) == set(ports), f"scrape jobs {sorted(jobs)}; templated {sorted(ports)}"
    for name, job in jobs.items():
        (static,) = job["static_configs"]
        (_target,) = static["targets"]
        static["targets"] = [f"127.0.0.1:{ports[name]}"]
    victim = dict(jobs["snapshots"]["static_configs"][0])
    victim["targets"] = [f"127.0.0.1:{victim_port}"]
    victim["labels"] = {**victim.get("labels", {}), "table": "victim"}
    jobs["snapshots"]["static_configs"].append(victim)
    return config


@pytest.fixture(scope="module")
def stack(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = require_tool("prometheus")
    pushgateway_bin = require_tool("prometheus-pushgateway")
    work = tmp_path_factory.mktemp("telemetry")
    env = clean_env(work / "embedded")

    name = f"snapshots_telemetry_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
            sql.Identifier(name)))
    database = conninfo_to_uri(pg_server, dbname=name)
    processes: list[Process] = []
    conn = psycopg.connect(database, autocommit=True)
    try:
        data_dir = work / "data"
        data_dir.mkdir()
        for source in sorted((REPO / "data").glob("snapshot_*.csv")):
            shutil.copy(source, data_dir / source.name)

        ports = {"snapshots": free_port(), "pushgateway": free_port(),
                 "prometheus": free_port()}
        victim_port = free_port()
        pushgateway_url = f"http://127.0.0.1:{ports['pushgateway']}"
        pushgateway = Process("pushgateway", [
            pushgateway_bin, f"--web.listen-address=127.0.0.1:{ports['pushgateway']}"], work)
        processes.append(pushgateway)
        sync = Process("sync", [
            sys.executable, "-m", "snapshots", "--database", database, "sync",
            "--data-dir", str(data_dir), "--settle", "0", "--rescan", "1",
            "--metrics-host", "127.0.0.1", "--metrics-port", str(ports["snapshots"])],
            work, env)
        processes.append(sync)

        config_dir = work / "prometheus"
        config_dir.mkdir()
        shutil.copy(ALERTS, config_dir / ALERTS.name)  # rule_files are relative to the config
        config_file = config_dir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(template_config(ports, victim_port)))
        prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
        prometheus = Process("prometheus", [
            prometheus_bin, f"--config.file={config_file}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], work)
        processes.append(prometheus)

        pushgateway.wait_http(f"{pushgateway_url}/-/ready")
        sync.wait_http(f"http://127.0.0.1:{ports['snapshots']}/readyz")
        prometheus.wait_http(f"{prometheus_url}/-/ready")
        yield Stack(Prometheus(prometheus_url), pushgateway_url, database, conn, env, work,
                    data_dir, ports["snapshots"], victim_port, processes)
    finally:
        for process in reversed(processes):
            process.stop()
        for process in processes:
            process.report()
        conn.close()
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


def alert_expr(name: str) -> str:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return rule["expr"]
    raise AssertionError(f"no alert {name} in {ALERTS}")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets() -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"]
            for target in panel.get("targets", [])]


def grafana_expr(expr: str, interval: float, table: str = ".*") -> str:
    """A dashboard expression as Grafana sends it, with its variables filled in."""
    rate_interval = max(4.0, interval + 1.0)  # Grafana: max(4 scrapes, interval + 1 scrape)
    for variable, value in (("$__rate_interval", f"{rate_interval:g}s"),
                            ("$__interval_ms", f"{interval * 1000:g}"),
                            ("$__interval", f"{interval:g}s"),
                            ("$__range", "1h"),
                            ("${table}", table), ("$table", table)):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr}"
    return expr


def labels_of(result: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [r["metric"] for r in result]


# --------------------------------------------------------------------------- live series


def test_prometheus_scrapes_every_target(stack: Stack) -> None:
    def targets_up() -> dict[tuple[str, str], str] | None:
        body = stack.prometheus.api("/api/v1/targets")
        health = {(t["labels"]["job"], t["scrapeUrl"]): t["health"]
                  for t in body["data"]["activeTargets"]}
        expected_down = {key for key in health if str(stack.victim_port) in key[1]}
        done = all(state != "unknown" for state in health.values())
        ok = all(state == ("down" if key in expected_down else "up")
                 for key, state in health.items())
        return health if done and ok else None

    health = wait_until(targets_up, DEADLINE, interval=0.1, message="every target scraped")
    assert {job for job, _ in health} == {"snapshots", "pushgateway", "prometheus"}


def test_sync_series_arrive_with_the_ledgers_values(stack: Stack) -> None:
    prom = stack.prometheus
    service = 'job="snapshots", table="snapshots"'

    def ledger() -> tuple[int, int, int]:
        count, rows, size = stack.conn.execute(
            "SELECT count(*), coalesce(sum(row_count), 0), coalesce(sum(size_bytes), 0) "
            "FROM snapshot_imports WHERE table_name = 'snapshots' AND status = 'imported'"
        ).fetchone()
        return int(count), int(rows), int(size)

    # The two repository files: loaded by the service, then visible in Prometheus.
    wait_until(lambda: stack.conn.execute(
        "SELECT to_regclass('snapshot_imports')").fetchone()[0] is not None and
        ledger()[0] >= 2, DEADLINE, message="the backlog to be imported")
    count, rows, size = ledger()
    assert rows >= 11  # 5 + 6 rows in data/*.csv
    prom.wait_value(f'snapshots_files_total{{{service}, result="imported"}}', count)
    prom.wait_value(f"snapshots_rows_total{{{service}}}", rows)
    prom.wait_value(f"snapshots_bytes_total{{{service}}}", size)
    prom.wait_value(f"snapshots_pending_files{{{service}}}", 0)
    metrics = stack.sync_metrics()  # what the process itself says
    instance = f"127.0.0.1:{stack.sync_port}"
    for name in ("snapshots_rows_rejected_total", "snapshots_import_duration_seconds_count",
                 "snapshots_last_success_timestamp_seconds",
                 "snapshots_oldest_pending_age_seconds"):
        result = prom.query(f"{name}{{{service}}}")
        assert [(r["metric"]["instance"], float(r["value"][1])) for r in result] == \
            [(instance, metrics[name])], name
    assert metrics["snapshots_import_duration_seconds_count"] >= count
    assert time.time() - 300 < metrics["snapshots_last_success_timestamp_seconds"] <= time.time()
    assert prom.value(f"snapshots_database_up{{{service}}}") == 1
    assert prom.value(f'snapshots_build_info{{{service}, version="{__version__}"}}') == 1
    assert prom.value(f"up{{{service}}}") == 1
    # The recording rule behind SnapshotsNoNewSnapshot sees the service's table.
    prom.wait_value('snapshots:last_success_timestamp_seconds{table="snapshots"}',
                    metrics["snapshots_last_success_timestamp_seconds"])
    stale = labels_of(prom.query(alert_expr("SnapshotsNoNewSnapshot")))
    assert {"table": "snapshots"} not in stale


def test_import_pushes_its_run_under_a_stable_grouping_key(stack: Stack) -> None:
    prom = stack.prometheus
    pushed = 'job="snapshots_import", table="pushed"'
    files = sorted((REPO / "data").glob("snapshot_*.csv"))
    before = time.time()
    first = stack.import_("--table", "pushed", *files)
    after = time.time()
    assert first.returncode == 0, first.stderr
    assert "could not push" not in first.stderr

    prom.wait_value(f'snapshots_files_total{{{pushed}, result="imported"}}', 2)
    values = prom.values(f"{{__name__=~'snapshots_.*|push_time_seconds', {pushed}}}")
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for labels, value in values.items():
        label_map = dict(labels)
        by_name.setdefault(label_map.pop("__name__"), []).append((label_map, value))
    # A pushed series has the grouping key's labels and no instance: with honor_labels, the
    # Pushgateway's empty instance label is dropped rather than replaced by its own address.
    for name, samples in by_name.items():
        for labels, _ in samples:
            assert "instance" not in labels, (name, labels)
            assert {labels["job"], labels["table"]} == {"snapshots_import", "pushed"}
    scalar = {name: samples[0][1] for name, samples in by_name.items() if len(samples) == 1}
    assert scalar["snapshots_rows_total"] == 11
    assert scalar["snapshots_rows_rejected_total"] == 0
    assert scalar["snapshots_bytes_total"] == sum(f.stat().st_size for f in files)
    assert scalar["snapshots_import_duration_seconds_count"] == 2
    assert scalar["snapshots_database_up"] == 1
    assert scalar["snapshots_pending_files"] == 0
    assert before <= scalar["snapshots_last_success_timestamp_seconds"] <= after
    assert before <= scalar["push_time_seconds"] <= after
    assert by_name["snapshots_build_info"] == [
        ({"job": "snapshots_import", "table": "pushed", "version": __version__}, 1.0)]
    assert {labels["result"]: value for labels, value in by_name["snapshots_files_total"]} == \
        {"imported": 2, "skipped": 0, "failed": 0, "conflict": 0}

    # The same files again: the next push replaces this run's group instead of adding one.
    second = stack.import_("--table", "pushed", *files)
    assert second.returncode == 0, second.stderr
    prom.wait_value(f'snapshots_files_total{{{pushed}, result="skipped"}}', 2)
    assert prom.value(f'snapshots_files_total{{{pushed}, result="imported"}}') == 0
    assert prom.value(f'count(snapshots_files_total{{{pushed}, result="imported"}})') == 1
    # That run imported nothing (its gauge says 0), but the dashboard still knows when the
    # table last got a snapshot.
    assert prom.value(f"snapshots_last_success_timestamp_seconds{{{pushed}}}") == 0
    (since_title, since) = next(t for t in dashboard_targets()
                                if t[0] == "Time since last success")
    age = prom.value(grafana_expr(since, 60, table="pushed"))
    assert age is not None and 0 <= age <= time.time() - before + 1, since_title


def test_sync_once_pushes_its_run(stack: Stack) -> None:
    directory = stack.work / "once"
    stack.csv(directory, "snapshot_20240101.csv", HEADER + "1,Ann,Shop,1.5\n2,Bo,Shop,2\n")
    done = run_cli("--database", stack.database, "--table", "oncetable", "sync", "--once",
                   "--data-dir", directory, "--summary-file", stack.work / "once.json",
                   "--pushgateway", stack.pushgateway_url, env=stack.env, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    pushed = 'job="snapshots_sync", table="oncetable"'
    stack.prometheus.wait_value(f'snapshots_files_total{{{pushed}, result="imported"}}', 1)
    assert stack.prometheus.value(f"snapshots_rows_total{{{pushed}}}") == 2
    assert stack.prometheus.value(f"snapshots_database_up{{{pushed}}}") == 1
    assert stack.prometheus.value(f"snapshots_pending_files{{{pushed}}}") == 0


def test_a_run_that_cannot_reach_the_database_pushes_database_down(stack: Stack) -> None:
    directory = stack.work / "unreachable"
    stack.csv(directory, "snapshot_20240101.csv", HEADER + "1,Ann,Shop,1.5\n")
    nobody = f"postgresql://snapshots:secret@127.0.0.1:{free_port()}/snapshots"
    done = run_cli("--database", nobody, "--table", "unreachable", "sync", "--once",
                   "--data-dir", directory, "--summary-file", stack.work / "down.json",
                   "--pushgateway", stack.pushgateway_url, env=stack.env, timeout=DEADLINE)
    assert done.returncode == 3, done.stderr
    stack.prometheus.wait_value(
        'snapshots_database_up{job="snapshots_sync", table="unreachable"}', 0)
    # SnapshotsDatabaseDown's condition holds for that run (its `for:` is 5 minutes).
    down = labels_of(stack.prometheus.query(alert_expr("SnapshotsDatabaseDown")))
    assert {"job": "snapshots_sync", "table": "unreachable"} in down
    assert not [d for d in down if d.get("job") == "snapshots"]  # the service's database is up


def test_push_results_reports_a_database_lost_during_the_run(stack: Stack) -> None:
    lost = FileResult(Path("snapshot_20240102.csv"), "failed",
                      error=DatabaseUnavailable("connection lost"))
    done = FileResult(Path("snapshot_20240101.csv"), "imported", rows=3, bytes=40, seconds=0.1)
    assert push_results(stack.pushgateway_url, [done, lost], table="lostdb", origin="import")
    text = http_get(f"{stack.pushgateway_url}/metrics")
    assert text is not None
    assert re.search(r'^snapshots_database_up\{[^}]*table="lostdb"[^}]*\} 0$', text[1], re.M)
    assert re.search(r'^snapshots_files_total\{[^}]*result="failed",table="lostdb"\} 1$',
                     text[1], re.M)


def test_a_failed_push_is_a_warning(stack: Stack) -> None:
    result = run_cli("--database", stack.database, "import", "--table", "nopush",
                     "--pushgateway", f"http://127.0.0.1:{free_port()}",
                     REPO / "data" / "snapshot_20230101.csv", env=stack.env, timeout=DEADLINE)
    assert result.returncode == 0, result.stderr
    assert "could not push" in result.stderr
    assert stack.conn.execute("SELECT count(*) FROM snapshot_imports WHERE table_name = "
                              "'nopush' AND status = 'imported'").fetchone()[0] == 1


# --------------------------------------------------------------------------- alerts, live


def test_a_failed_pushed_run_fires_until_a_good_run(stack: Stack) -> None:
    prom = stack.prometheus
    wait_until(lambda: all(r["health"] == "ok" for g in prom.api("/api/v1/rules")["data"]
                           ["groups"] for r in g["rules"]), DEADLINE, interval=0.1,
               message="every rule to be evaluated")
    assert not prom.firing("SnapshotsRunFailed", table="broken")
    bad = stack.csv(stack.work / "broken", "snapshot_20240101.csv", "a,b\n1,2,3\n")
    failed = stack.import_("--table", "broken", bad)
    assert failed.returncode == 1, failed.stderr
    wait_until(lambda: prom.firing("SnapshotsRunFailed", table="broken"), DEADLINE,
               interval=0.1, message="SnapshotsRunFailed to fire")
    (alert,) = prom.firing("SnapshotsRunFailed", table="broken")
    assert alert["labels"]["job"] == "snapshots_import"
    assert alert["labels"]["severity"] == "warning"
    assert "1 failed" in alert["annotations"]["description"]
    # The service's alert is about the service only.
    assert not prom.firing("SnapshotsImportFailed", job="snapshots_import")

    good = stack.csv(stack.work / "broken", "snapshot_20240102.csv", "a,b\n1,2\n")
    fixed = stack.import_("--table", "broken", good)
    assert fixed.returncode == 0, fixed.stderr
    wait_until(lambda: not prom.firing("SnapshotsRunFailed", table="broken"), DEADLINE,
               interval=0.1, message="SnapshotsRunFailed to resolve")


def test_a_file_the_service_fails_fires_import_failed(stack: Stack) -> None:
    prom = stack.prometheus
    instance = f"127.0.0.1:{stack.sync_port}"
    wait_until(lambda: prom.value('up{job="snapshots", table="snapshots"}') == 1, DEADLINE,
               message="the service to be scraped")
    assert not prom.firing("SnapshotsImportFailed", instance=instance)
    failed_before = stack.sync_metrics()['snapshots_files_total{result="failed"}']
    stack.csv(stack.data_dir, "snapshot_20230801.csv", HEADER + "1,Jake,Burgers,lots\n")
    wait_until(lambda: prom.firing("SnapshotsImportFailed", instance=instance), DEADLINE,
               interval=0.1, message="SnapshotsImportFailed to fire")
    assert stack.sync_metrics()['snapshots_files_total{result="failed"}'] == failed_before + 1
    (alert,) = prom.firing("SnapshotsImportFailed", instance=instance)
    assert alert["labels"]["table"] == "snapshots"
    assert alert["labels"]["job"] == "snapshots"


def test_sync_down_follows_the_process(stack: Stack) -> None:
    prom = stack.prometheus
    victim = f"127.0.0.1:{stack.victim_port}"
    down = alert_expr("SnapshotsSyncDown")
    not_ready = alert_expr("SnapshotsSyncNotReady")

    def down_instances() -> set[str]:
        return {labels["instance"] for labels in labels_of(prom.query(down))}

    # Nothing listens on the victim's port: its condition holds, the main service's does not.
    wait_until(lambda: down_instances() == {victim}, DEADLINE, interval=0.1,
               message=f"{down} to hold for {victim} alone")
    directory = stack.work / "victim"
    directory.mkdir(exist_ok=True)
    process = Process("victim", [
        sys.executable, "-m", "snapshots", "--database", stack.database, "--table", "victim",
        "sync", "--data-dir", str(directory), "--metrics-host", "127.0.0.1",
        "--metrics-port", str(stack.victim_port)], stack.work, stack.env)
    try:
        process.wait_http(f"http://127.0.0.1:{stack.victim_port}/readyz")
        wait_until(lambda: not down_instances(), DEADLINE, interval=0.1,
                   message="the victim to be scraped")
        # The first scrape may predate the connection (database_up starts at 0): wait for
        # one taken after it.
        wait_until(lambda: prom.value(f'snapshots_database_up{{instance="{victim}"}}') == 1,
                   DEADLINE, interval=0.1, message="the victim's database_up to be 1")
        assert not labels_of(prom.query(not_ready))
        assert process.stop() == 0
        wait_until(lambda: down_instances() == {victim}, DEADLINE, interval=0.1,
                   message="the stopped victim to be seen down")
    finally:
        process.stop()
        process.report()


# --------------------------------------------------------------------------- expressions


def test_every_dashboard_and_rule_expression_evaluates(stack: Stack) -> None:
    prom = stack.prometheus
    # Data from both sources first: some errors (many-to-many matching) only show with data.
    good = stack.csv(stack.work / "exprs", "snapshot_20240101.csv", HEADER + "1,A,S,1\n")
    assert stack.import_("--table", "exprs", good).returncode == 0
    prom.wait_value('snapshots_files_total{job="snapshots_import", table="exprs", '
                    'result="imported"}', 1)
    wait_until(lambda: (prom.value('snapshots_files_total{job="snapshots", '
                                   'table="snapshots", result="imported"}') or 0) > 0,
               DEADLINE, interval=0.1, message="the service's imports in Prometheus")
    now = time.time()
    expressions = [(f"panel {title!r}", expr) for title, expr in dashboard_targets()]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            expressions.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
    assert len(expressions) >= 20
    failures = []
    for where, expr in expressions:
        try:
            for interval in (1.0, 60.0):
                text = grafana_expr(expr, interval)
                prom.query(text)
                prom.query_range(text, now - 60, now, interval)
        except PromQLError as error:
            failures.append(f"{where}: {error}")
    assert not failures, "\n".join(failures)
    # Panels that must show something by now, with the service and pushed runs both present.
    for title, expr in dashboard_targets():
        if title in ("Database up", "Time since last success", "Build version",
                     "Pending files", "Files per interval", "Since last pushed run"):
            assert prom.query_range(grafana_expr(expr, 1.0), now - 60, now, 1), title
    # The table variable's query (a Grafana function around a PromQL selector).
    (table_variable,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "table"]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", table_variable["query"]["query"])
    assert match, table_variable
    tables = {labels.get(match[2]) for labels in labels_of(prom.query(match[1]))}
    assert {"snapshots", "pushed", "exprs"} <= tables
    # Every rule evaluates cleanly inside Prometheus too.
    for group in prom.api("/api/v1/rules")["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] in ("ok", "unknown") and not rule.get("lastError"), rule


def test_files_per_interval_counts_each_file_once(stack: Stack) -> None:
    """The dashboard's main panel, as Grafana queries it (range query, step = $__interval),
    adds up exactly what happened: the service's counters by difference, and each pushed run
    once, in the interval its push arrived."""
    prom = stack.prometheus
    service = 'snapshots_files_total{job="snapshots", table="snapshots", result="imported"}'
    title, expr = next(t for t in dashboard_targets() if t[0] == "Files per interval")
    pushed = 'snapshots_files_total{job="snapshots_import", table="counted", result="%s"}'

    def scraped_service() -> float | None:
        mine = stack.sync_metrics()['snapshots_files_total{result="imported"}']
        return mine if prom.value(service) == mine else None

    already = wait_until(scraped_service, DEADLINE, interval=0.1,
                         message="Prometheus to catch up with the service")
    start = time.time()  # everything before this is in Prometheus; the steps start after it
    stack.csv(stack.data_dir, "snapshot_20240301.csv", HEADER + "8,Ann,Shop,10.5\n")
    files = [stack.csv(stack.work / "counted", f"snapshot_2024030{day}.csv",
                       HEADER + f"{day},X,Y,{day}\n") for day in (1, 2)]
    assert stack.import_("--table", "counted", *files).returncode == 0
    prom.wait_value(pushed % "imported", 2)
    assert stack.import_("--table", "counted", *files).returncode == 0  # both skipped
    prom.wait_value(pushed % "skipped", 2)
    prom.wait_value(service, already + 1)
    # Steps of one scrape interval: the two pushes, seen by different scrapes, fall into
    # different steps (within one step only the last run would count, as docs/monitoring.md says).
    # The first step covers (start, start + 1]; the last one reaches past what was seen.
    step = 1.0
    result = prom.query_range(grafana_expr(expr, step, table="snapshots|counted"),
                              start + step, time.time() + step, step)
    totals = {r["metric"]["result"]: sum(float(v) for _, v in r["values"]) for r in result}
    assert totals == {"imported": 3, "skipped": 2, "failed": 0, "conflict": 0}, (title, totals)


# --------------------------------------------------------------------------- promtool


def test_promtool_accepts_the_config_and_rules() -> None:
    promtool = require_tool("promtool")
    for args in (["check", "config", str(PROMETHEUS_CONFIG)],
                 ["check", "rules", str(ALERTS)],
                 ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


def test_alert_unit_tests_cover_every_alert_firing_and_not_firing() -> None:
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    assert {"SnapshotsImportFailed", "SnapshotsRunFailed", "SnapshotsSyncDown",
            "SnapshotsSyncNotReady", "SnapshotsNoNewSnapshot", "SnapshotsDatabaseDown"} <= alerts
    unit = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())
    assert unit["rule_files"] == [ALERTS.name]
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in unit["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts <= fires, f"never shown firing: {alerts - fires}"
    assert alerts <= quiet, f"never shown quiet: {alerts - quiet}"


# --------------------------------------------------------------------------- static checks


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str) -> str:
    """docker compose's ${VAR:-default}, with the defaults."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports", []):
        ports.add(int(interpolate(str(entry)).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: source} for every volume of a service."""
    result = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        result[target] = source
    return result


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The repository file behind a path inside a container, through its bind mounts."""
    for target, source in sorted(mounts(service).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            assert source.startswith("./"), f"{container_path} is on volume {source}"
            return REPO / source / os.path.relpath(container_path, target)
    raise AssertionError(f"{container_path} is not mounted from the repository")


def test_compose_services_ports_volumes_and_healthchecks() -> None:
    config = compose()
    services = config["services"]
    assert set(services) == {"db", "sync", "pushgateway", "prometheus", "grafana"}
    expected_ports = {"db": 5432, "sync": DEFAULT_METRICS_PORT, "pushgateway": 9091,
                      "prometheus": 9090, "grafana": 3000}
    for name, service in services.items():
        assert container_ports(service) == {expected_ports[name]}, name
        assert "image" in service or "build" in service, name
        for target, source in mounts(service).items():
            assert target.startswith("/"), (name, target)
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in (config.get("volumes") or {}), f"{name}: volume {source}"
        if name == "sync":  # the image's own HEALTHCHECK (checked with the Dockerfile)
            assert service["build"] == "." and "healthcheck" not in service
            assert re.search(r"^HEALTHCHECK .*/healthz", DOCKERFILE.read_text(), re.M | re.S)
        else:
            test = service["healthcheck"]["test"]
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    assert services["sync"]["depends_on"]["db"]["condition"] == "service_healthy"


def test_compose_sync_points_at_the_compose_database_and_data() -> None:
    services = compose()["services"]
    sync, db = services["sync"], services["db"]
    environment = sync["environment"]
    url = urlsplit(environment["SNAPSHOTS_DATABASE"])
    assert (url.hostname, url.port) == ("db", 5432)
    assert url.username == db["environment"]["POSTGRES_USER"]
    assert url.password == db["environment"]["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == db["environment"]["POSTGRES_DB"]
    command = sync["command"]
    assert command[0] == "sync"
    data_dir = command[command.index("--data-dir") + 1]
    assert host_path(sync, data_dir) == REPO / "data"
    assert int(environment["SNAPSHOTS_METRICS_PORT"]) == DEFAULT_METRICS_PORT
    push = urlsplit(environment["SNAPSHOTS_PUSHGATEWAY"])
    assert push.hostname in services and push.port in container_ports(services[push.hostname])


def test_compose_prometheus_scrapes_the_compose_services() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    args = dict(arg.partition("=")[::2] for arg in prometheus["command"])
    config_path = host_path(prometheus, args["--config.file"])
    assert config_path == PROMETHEUS_CONFIG
    config = yaml.safe_load(config_path.read_text())
    for rule_file in config["rule_files"]:
        assert (config_path.parent / rule_file).is_file(), rule_file
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"snapshots", "pushgateway", "prometheus"}
    assert jobs["pushgateway"]["honor_labels"] is True
    expected = {"snapshots": "sync", "pushgateway": "pushgateway", "prometheus": "localhost"}
    for name, job in jobs.items():
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                assert host == expected[name], target
                service = services["prometheus" if host == "localhost" else host]
                assert int(port) in container_ports(service), target
    # The static `table` label names the table the compose sync service loads.
    (static,) = jobs["snapshots"]["static_configs"]
    table = services["sync"]["environment"].get("SNAPSHOTS_TABLE", "snapshots")
    assert static["labels"]["table"] == table


def test_compose_grafana_provisioning_agrees_with_the_configs() -> None:
    services = compose()["services"]
    grafana = services["grafana"]
    datasources = host_path(grafana, "/etc/grafana/provisioning/datasources")
    providers = host_path(grafana, "/etc/grafana/provisioning/dashboards")
    assert datasources == GRAFANA_DIR / "provisioning" / "datasources"
    assert providers == GRAFANA_DIR / "provisioning" / "dashboards"
    (source,) = [s for f in sorted(datasources.glob("*.yml"))
                 for s in yaml.safe_load(f.read_text())["datasources"]]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    url = urlsplit(source["url"])
    assert url.hostname == "prometheus"
    assert url.port in container_ports(services["prometheus"])
    (provider,) = [p for f in sorted(providers.glob("*.yml"))
                   for p in yaml.safe_load(f.read_text())["providers"]]
    dashboards = host_path(grafana, provider["options"]["path"])
    assert dashboards == DASHBOARD.parent and DASHBOARD.is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == DASHBOARD
    assert "prometheus" in grafana["depends_on"]


def test_dashboard_has_every_panel_of_the_issue() -> None:
    board = dashboard()
    panels = board["panels"]
    titles = [p["title"] for p in panels]
    assert len(set(titles)) == len(titles)
    assert len({p["id"] for p in panels}) == len(panels)
    assert {"Files per interval", "Rows per second", "Rejected rows per interval",
            "Import duration p50 / p95", "Pending files", "Oldest pending file age",
            "Time since last success", "Database up", "Build version"} <= set(titles)
    exprs = " ".join(expr for _, expr in dashboard_targets())
    for metric in ("snapshots_files_total", "snapshots_rows_total",
                   "snapshots_rows_rejected_total", "snapshots_import_duration_seconds_bucket",
                   "snapshots_pending_files", "snapshots_oldest_pending_age_seconds",
                   "snapshots_last_success_timestamp_seconds", "snapshots_database_up",
                   "snapshots_build_info", "push_time_seconds"):
        assert metric in exprs, metric
    # Every panel and query goes through the datasource variable: the same JSON works with
    # the compose datasource and with whatever a cluster's Grafana calls its Prometheus.
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_monitoring_doc_describes_every_panel_and_alert() -> None:
    text = MONITORING.read_text()
    match = re.search(r"^## Monitoring\n(.*)", text, re.M | re.S)
    assert match, "docs/monitoring.md has no Monitoring section"
    section = match[1]
    for title in {p["title"] for p in dashboard()["panels"]}:
        assert title in section, f"panel {title!r} not described"
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] in section, f"alert {rule['alert']} not described"
    assert "docker compose up -d" in section
    assert "docker compose run --rm sync import" in section


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repo) out of the build context:
    the last pattern that matches the path or one of its parents decides."""
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    parts = Path(path).parts
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[:depth])
            if fnmatch(candidate, pattern) or (pattern.startswith("**/") and
                                               fnmatch(parts[depth - 1], pattern[3:])):
                ignored = not negate
                break
    return ignored


def test_dockerfile_references_existing_paths() -> None:
    instructions = dockerfile_instructions()
    copies = [args for op, args in instructions if op == "COPY" and "--from" not in args]
    assert copies
    for args in copies:
        *sources, _destination = args.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
            if (REPO / source).is_dir():  # and what is inside it gets through too
                for inner in (REPO / source).rglob("*.py"):
                    if "__pycache__" not in inner.parts:
                        assert not dockerignored(str(inner.relative_to(REPO))), inner
    # What the build needs is all there: pyproject's readme and packages.
    copied = {s for args in copies for s in args.split()[:-1]}
    assert {"pyproject.toml", "README.md", "snapshots"} <= copied
    # And what must stay out does.
    for junk in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "data/x.csv",
                 "snapshots/__pycache__/cli.cpython-311.pyc"):
        assert dockerignored(junk), junk


def test_dockerfile_runs_snapshots_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    # Both stages start from one base, python:3.x-slim unless BASE says otherwise (the
    # container tests build on a Debian base of their own: tests/containers.py).
    froms = [args for op, args in instructions if op == "FROM"]
    assert froms and all(re.match(r"\$\{BASE\}(\s|$)", f) for f in froms), froms
    (base,) = [args for op, args in instructions if op == "ARG" and args.startswith("BASE=")]
    assert re.fullmatch(r"BASE=python:3\.\d+-slim", base), base
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    (entrypoint,) = [args for op, args in instructions if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["snapshots"]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^snapshots = "snapshots\.cli:main"$', pyproject, re.M)
    exposed = [int(p) for op, args in instructions if op == "EXPOSE" for p in args.split()]
    assert exposed == [DEFAULT_METRICS_PORT]


def healthcheck_code() -> str:
    (healthcheck,) = [args for op, args in dockerfile_instructions() if op == "HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"], command
    assert "/healthz" in command[2] and "curl" not in command[2]
    return command[2]


@pytest.mark.parametrize(("argv", "port", "healthy"), [
    (["sync", "--data-dir", "/data"], "sync", True),
    (["sync", "--data-dir", "/data"], "closed", False),
    (["sync", "--data-dir", "/data", "--once"], "closed", True),
    (["import", "/data/snapshot_20230101.csv"], "closed", True),
    (["sync", "--data-dir", "/data"], "0", True),
], ids=["sync-answers", "sync-silent", "sync-once", "import", "metrics-off"])
def test_the_image_healthcheck_asks_sync_for_healthz(
        stack: Stack, tmp_path: Path, argv: list[str], port: str, healthy: bool) -> None:
    """The HEALTHCHECK one-liner, run here against a real sync (PID 1's command line, which a
    container would have, comes from a file)."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(a.encode() for a in
                                   ["/usr/local/bin/python", "/usr/local/bin/snapshots", *argv])
                        + b"\0")
    code = healthcheck_code()
    assert "'/proc/1/cmdline'" in code
    code = code.replace("'/proc/1/cmdline'", repr(str(cmdline)))
    env = dict(os.environ)
    env["SNAPSHOTS_METRICS_PORT"] = {"sync": str(stack.sync_port),
                                     "closed": str(free_port()), "0": "0"}[port]
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=30)
    assert (done.returncode == 0) == healthy, done.stderr
