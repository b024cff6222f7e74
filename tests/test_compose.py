"""The shipped docker-compose.yml, brought up for real with podman-compose.

The stack runs from a copy of the project's compose file, deploy/ and data/, under a project
name of its own and with free host ports (the file's SNAPSHOTS_*_PORT variables). A test-only
override swaps nothing but ``image:``: the official postgres, prom/prometheus and
prom/pushgateway images cannot be pulled here, so images built from Debian's packages stand
in for them, and sync runs the image built from the real Dockerfile (its ``build: .`` needs
python:3.12-slim, which cannot be pulled either). Grafana has no Debian package and is left
out.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from containers import PROJECT, copy_samples, engine_env
from helpers import free_port, require_tool, run_cli, wait_until

pytestmark = pytest.mark.containers

SERVICES = ("db", "sync", "pushgateway", "prometheus")  # all but grafana
PORT_VARIABLES = {"db": "SNAPSHOTS_DB_PORT", "sync": "SNAPSHOTS_SYNC_PORT",
                  "pushgateway": "SNAPSHOTS_PUSHGATEWAY_PORT",
                  "prometheus": "SNAPSHOTS_PROMETHEUS_PORT"}
NEW_FILE = "snapshot_20230701.csv"


def podman_compose() -> str:
    beside = Path(sys.executable).with_name("podman-compose")
    return str(beside) if beside.exists() else require_tool("podman-compose")


@dataclass
class Stack:
    directory: Path
    project: str
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        env = engine_env(**{PORT_VARIABLES[s]: str(p) for s, p in self.ports.items()})
        proc = subprocess.run(
            [podman_compose(), "-p", self.project, "-f", "docker-compose.yml",
             "-f", "compose.test.yml", *args],
            cwd=self.directory, env=env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
            pytest.fail(f"podman-compose {' '.join(args)} exited {proc.returncode}:\n{tail}",
                        pytrace=False)
        return proc

    def up(self) -> None:
        self.compose("up", "-d", "--no-build", *SERVICES)

    @property
    def database(self) -> str:
        return f"postgresql://snapshots:snapshots@127.0.0.1:{self.ports['db']}/snapshots"

    def get(self, service: str, path: str, **query: str) -> str:
        url = f"http://127.0.0.1:{self.ports[service]}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.read().decode()

    def prometheus(self, path: str, **query: str) -> Any:
        try:
            return json.loads(self.get("prometheus", path, **query))["data"]
        except OSError:
            return None


@pytest.fixture
def stack(tmp_path: Path, product_image: str,
          service_images: dict[str, str]) -> Iterator[Stack]:
    directory = tmp_path / "stack"
    directory.mkdir()
    shutil.copy(PROJECT / "docker-compose.yml", directory)
    shutil.copytree(PROJECT / "deploy", directory / "deploy")
    copy_samples(directory / "data")
    images = {"db": service_images["postgres"], "sync": product_image,
              "pushgateway": service_images["pushgateway"],
              "prometheus": service_images["prometheus"]}
    override = {"services": {name: {"image": image} for name, image in images.items()}}
    (directory / "compose.test.yml").write_text(yaml.safe_dump(override))
    stack = Stack(directory, f"snapshots-test-{uuid.uuid4().hex[:8]}",
                  {service: free_port() for service in PORT_VARIABLES})
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "-t", "5", check=False)


def ledger(stack: Stack, cli_env: dict[str, str]) -> list[dict[str, Any]]:
    result = run_cli("--database", stack.database, "list", "--format", "json", env=cli_env)
    return json.loads(result.stdout) if result.returncode == 0 else []


def imported(stack: Stack, cli_env: dict[str, str]) -> set[str]:
    return {r["file"] for r in ledger(stack, cli_env) if r["status"] == "imported"}


def series(stack: Stack, query: str) -> list[dict[str, Any]]:
    data = stack.prometheus("/api/v1/query", query=query)
    return data["result"] if data else []


def sync_metric(stack: Stack, name: str, **labels: str) -> float | None:
    """A sample of the running sync's own /metrics, through its published port."""
    try:
        text = stack.get("sync", "/metrics")
    except OSError:
        return None
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} " if want else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_compose_stack_loads_scrapes_pushes_and_keeps_its_data(
        stack: Stack, cli_env: dict[str, str]) -> None:
    samples = {p.name for p in (stack.directory / "data").glob("*.csv")}
    stack.up()
    wait_until(lambda: imported(stack, cli_env) == samples, timeout=180, interval=1,
               message=f"sync to load {sorted(samples)}")

    # A file that arrives later is loaded by the running service.
    new = stack.directory / "data" / NEW_FILE
    partial = new.with_suffix(".part")
    partial.write_text("user_id,name,store_name,credit_limit\n7,Ana,Corner Cafe,250.5\n")
    partial.rename(new)
    wait_until(lambda: imported(stack, cli_env) == {*samples, NEW_FILE}, timeout=120,
               interval=1, message=f"sync to load {NEW_FILE}")
    records = ledger(stack, cli_env)
    assert {r["imported_by"]["origin"] for r in records} == {"sync"}

    # Prometheus scrapes the sync service by its service name, and has the alert rules.
    def scraped() -> list[dict[str, Any]]:
        return [s for s in series(stack, 'snapshots_files_total{job="snapshots"}')
                if s["metric"].get("result") == "imported" and float(s["value"][1]) == 3]

    (sample,) = wait_until(scraped, timeout=120, interval=1,
                           message="Prometheus to scrape 3 imported files from sync")
    assert sample["metric"]["instance"] == "sync:9840"
    assert sample["metric"]["table"] == "snapshots"
    rules = stack.prometheus("/api/v1/rules")
    alerts = {rule["name"] for group in rules["groups"] for rule in group["rules"]
              if rule["type"] == "alerting"}
    shipped = yaml.safe_load((PROJECT / "deploy/prometheus/alerts.yml").read_text())
    expected = {rule["alert"] for group in shipped["groups"] for rule in group["rules"]
                if "alert" in rule}
    assert expected and alerts == expected
    targets = stack.prometheus("/api/v1/targets")["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health["snapshots"] == "up", targets

    # A one-off import in the sync service's container pushes to the Pushgateway.
    run = stack.compose("run", "--rm", "sync", "import", f"/data/{NEW_FILE}")
    assert f"skipped {NEW_FILE}: already imported" in run.stdout, run.stdout + run.stderr
    pushed = [line for line in stack.get("pushgateway", "/metrics").splitlines()
              if line.startswith("snapshots_files_total{")]
    assert any('job="snapshots_import"' in line for line in pushed), (pushed, run.stderr)
    wait_until(lambda: series(stack, 'snapshots_files_total{job="snapshots_import",'
                                     'result="skipped"}'),
               timeout=120, interval=1, message="Prometheus to scrape the pushed metrics")

    # down and up again: the named volumes keep the data, and nothing is imported again.
    rows = run_cli("--database", stack.database, "list", "--format", "json", env=cli_env)
    stack.compose("down", "-t", "30")
    stack.up()
    wait_until(lambda: sync_metric(stack, "snapshots_files_total", result="skipped") == 3,
               timeout=180, interval=1, message="the restarted sync to skip the 3 files")
    assert sync_metric(stack, "snapshots_files_total", result="imported") in (None, 0.0)
    assert ledger(stack, cli_env) == json.loads(rows.stdout)
