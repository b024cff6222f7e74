"""Offline checks of what users apply: manifests/, the Helm chart, the CRD and its schema.

No cluster and no helm binary: `kubernetes-validate --strict` validates every built-in object
against the API's own schemas, helm-python-sdk (Helm's Go SDK) lints and renders the chart, and
SnapshotSources are checked against the CRD's own OpenAPI schema with jsonschema.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml
from helpers import require_tool

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "snapshots-operator"
CRD_FILE = MANIFESTS / "01-crd.yaml"
KUBE_VERSIONS = ("1.27.0", kv.latest_version())  # the chart's kubeVersion floor, and the newest
CUSTOM_KINDS = {"SnapshotSource", "ServiceMonitor", "PrometheusRule"}
DEPLOY_COPIES = {
    ROOT / "deploy" / "grafana" / "dashboards" / "snapshots.json":
        CHART / "files" / "dashboards" / "snapshots.json",
    ROOT / "deploy" / "prometheus" / "alerts.yml": CHART / "files" / "alerts" / "snapshots.yml",
}
NON_DEFAULT_VALUES: dict[str, Any] = {
    "image": {"repository": "registry.example/snapshots", "tag": "1.2.3",
              "pullPolicy": "Always"},
    "jobImage": {"repository": "registry.example/snapshots-jobs"},
    "imagePullSecrets": [{"name": "regcred"}],
    "watch": {"allNamespaces": True},
    "serviceAccount": {"annotations": {"iam.example/role": "snapshots"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRules": {"enabled": True},
    "grafanaDashboards": {"enabled": True, "annotations": {"grafana_folder": "snapshots"}},
    "metrics": {"port": 9900, "service": {"port": 9900, "annotations": {
        "prometheus.io/scrape": "true"}}},
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"example.com/team": "data"},
    "extraEnv": [{"name": "TZ", "value": "UTC"}],
    "verbose": True,
}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd() -> dict[str, Any]:
    (document,) = load_all(CRD_FILE)
    return document


def source_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def render(values: dict[str, Any] | None = None, namespace: str = "snapshots-system",
           ) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name="snap", namespace=namespace,
                                 is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def validate_builtin(objects: list[dict[str, Any]]) -> set[str]:
    """Strictly validate each built-in object for every version; return the custom kinds."""
    custom = set()
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            custom.add(obj["kind"])
            continue
        for version in KUBE_VERSIONS:
            kv.validate(obj, version, strict=True)
    return custom


# --------------------------------------------------------------------------- manifests/

def test_kubernetes_validate_strict_accepts_every_manifest() -> None:
    files = sorted(MANIFESTS.glob("*.yaml"))
    assert [f.name for f in files] == ["00-namespace.yaml", "01-crd.yaml", "02-rbac.yaml",
                                       "03-operator.yaml", "04-example.yaml"]
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    for version in KUBE_VERSIONS:
        command += ["-k", version]
    result = subprocess.run([*command, *map(str, files)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # The only objects without an API schema are our own SnapshotSources.
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert warnings and all("kind SnapshotSource" in line for line in warnings), result.stdout


def test_strict_validation_does_catch_mistakes() -> None:
    """A control: the same validator rejects a misspelt field (so passing means something)."""
    (deployment,) = by_kind(load_all(MANIFESTS / "03-operator.yaml"), "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBE_VERSIONS[-1], strict=True)


def test_the_example_snapshotsource_is_valid() -> None:
    (example,) = by_kind(load_all(MANIFESTS / "04-example.yaml"), "SnapshotSource")
    jsonschema.validate(example, source_schema())
    pvc, secret = (by_kind(load_all(MANIFESTS / "04-example.yaml"), kind)[0]
                   for kind in ("PersistentVolumeClaim", "Secret"))
    assert example["spec"]["volume"]["persistentVolumeClaim"]["claimName"] == \
        pvc["metadata"]["name"]
    ref = example["spec"]["database"]["uriSecretRef"]
    assert ref["key"] in secret["stringData"] and ref["name"] == secret["metadata"]["name"]


# --------------------------------------------------------------------------- the CRD

def test_crd_identity() -> None:
    document = crd()
    assert document["metadata"]["name"] == "snapshotsources.snapshots.dev"
    assert document["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    spec = document["spec"]
    assert (spec["group"], spec["scope"]) == ("snapshots.dev", "Namespaced")
    assert spec["names"]["plural"] == "snapshotsources"
    assert spec["names"]["kind"] == "SnapshotSource"
    assert spec["names"]["shortNames"] == ["snapsrc"]
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]
            if not c.get("priority")] == ["Ready", "Schedule", "Last success", "Last result",
                                          "Age"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert schema["required"] == ["volume", "path", "database"]


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def test_crd_schema_is_structural_and_portable() -> None:
    """What an API server demands of a CRD schema, and patterns that RE2 (Go) can compile."""
    for path, node in _walk(source_schema()):
        free = node.get("x-kubernetes-preserve-unknown-fields") or \
            node.get("x-kubernetes-int-or-string")
        assert "type" in node or free, f"{path} has no type"
        for branch in node.get("oneOf", []) + node.get("anyOf", []):
            assert set(branch) <= {"required", "type"}, f"{path}: oneOf/anyOf may only constrain"
        pattern = node.get("pattern")
        if pattern:
            re.compile(pattern)
            assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), f"{path}: not RE2: {pattern}"
        if "default" in node:  # the API server refuses a CRD whose defaults are invalid
            jsonschema.validate(node["default"], node)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Validator:
    schema = source_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def snapshot_source(**spec: Any) -> dict[str, Any]:
    base = {"volume": {"persistentVolumeClaim": {"claimName": "data"}}, "path": "incoming",
            "database": {"uriSecretRef": {"name": "db"}}}
    base.update(spec)
    return {"apiVersion": "snapshots.dev/v1alpha1", "kind": "SnapshotSource",
            "metadata": {"name": "x", "namespace": "data"},
            "spec": {key: value for key, value in base.items() if value is not None}}


@pytest.mark.parametrize("spec", [
    {},
    {"schedule": "*/15 * * * *"},
    {"schedule": "0 3 * * 1-5", "timeZone": "Europe/Berlin"},
    {"schedule": "30 2 1,15 jan-jun MON-FRI"},
    {"schedule": "@hourly"},
    {"path": "/"},
    {"path": ""},
    {"path": "a/b.c/..d/"},
    {"database": {"host": "pg.db", "port": 5432, "name": "w",
                  "credentialsSecretRef": {"name": "login"},
                  "tls": {"sslMode": "verify-full", "caSecretRef": {"name": "ca"}}}},
    {"table": "users", "schema": "staging", "mode": "upsert", "onError": "skip",
     "maxRejects": 0, "types": {"credit_limit": "numeric(12,2)"},
     "csv": {"delimiter": ";", "null": "NA", "noHeader": True, "columns": ["a", "b"]}},
    {"table": "t" * 56, "retentionDays": 30, "pushgateway": "http://pgw:9091",
     "resources": {"limits": {"memory": "1Gi", "cpu": 2}}, "activeDeadlineSeconds": 60,
     "backoffLimit": 0, "suspend": True},
])
def test_good_snapshotsources_validate(validator: jsonschema.Validator,
                                       spec: dict[str, Any]) -> None:
    validator.validate(snapshot_source(**spec))


@pytest.mark.parametrize(("spec", "why"), [
    ({"database": None}, "missing database"),
    ({"volume": None}, "missing volume"),
    ({"path": None}, "missing path"),
    ({"schedule": "every 5 minutes"}, "bad cron"),
    ({"schedule": "* * * *"}, "bad cron: four fields"),
    ({"schedule": "* * * * * *"}, "bad cron: six fields"),
    ({"schedule": "@every 5m"}, "bad cron: not a standard descriptor"),
    ({"mode": "merge"}, "bad mode"),
    ({"onError": "ignore"}, "bad on-error"),
    ({"table": "Users"}, "bad table name: upper case"),
    ({"table": "users; drop table x"}, "bad table name"),
    ({"table": "1users"}, "bad table name: leading digit"),
    ({"table": "t" * 57}, "bad table name: too long for <table>_latest"),
    ({"path": "../etc"}, "path escaping the volume"),
    ({"path": "a/../../b"}, "path escaping the volume"),
    ({"database": {"uriSecretRef": {"name": "db"}, "host": "pg"}}, "two databases"),
    ({"database": {"port": 5432}}, "no database at all"),
    ({"database": {"host": "pg", "tls": {"sslMode": "sometimes"}}}, "bad sslMode"),
    ({"volume": {}}, "empty volume"),
    ({"activeDeadlineSeconds": 5}, "deadline below its bound"),
    ({"backoffLimit": 11}, "backoff above its bound"),
    ({"retentionDays": 0}, "retention below its bound"),
    ({"pushgateway": "pgw:9091"}, "pushgateway without a scheme"),
    ({"csv": {"delimiter": ";;"}}, "two-character delimiter"),
])
def test_broken_snapshotsources_are_rejected(validator: jsonschema.Validator,
                                             spec: dict[str, Any], why: str) -> None:
    errors = list(validator.iter_errors(snapshot_source(**spec)))
    assert errors, f"accepted: {why}"


# --------------------------------------------------------------------------- the chart

def test_helm_lint_is_clean() -> None:
    for values in ({}, NON_DEFAULT_VALUES):
        report = helm.lint(CHART, values, strict=True, namespace="snapshots-system",
                           kube_version="v1.27.0")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_default_render_validates_strictly() -> None:
    objects = render()
    assert validate_builtin(objects) == set()
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ConfigMap", "CustomResourceDefinition", "Deployment", "Role",
                     "RoleBinding", "Service", "ServiceAccount"]
    # Namespaced mode needs nothing cluster-wide (kopf's scanning is off then).
    (role,) = by_kind(objects, "Role")
    (manifest_role,) = by_kind(load_all(MANIFESTS / "02-rbac.yaml"), "Role")
    assert role["rules"] == manifest_role["rules"]
    assert role["metadata"]["namespace"] == "snapshots-system"
    (config,) = by_kind(objects, "ConfigMap")
    assert config["data"]["SNAPSHOTS_OPERATOR_NAMESPACES"] == "snapshots-system"
    assert config["data"]["SNAPSHOTS_OPERATOR_JOB_IMAGE"] == "snapshots:0.1.0"
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]
    assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/config"])
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["snapshots-operator"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_non_default_render_validates_strictly() -> None:
    objects = render(NON_DEFAULT_VALUES, namespace="ops")
    assert validate_builtin(objects) == {"ServiceMonitor", "PrometheusRule"}
    kinds = sorted(obj["kind"] for obj in objects)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap",
                     "CustomResourceDefinition", "Deployment", "PrometheusRule", "Service",
                     "ServiceAccount", "ServiceMonitor"]
    (cluster_role,) = by_kind(objects, "ClusterRole")
    assert cluster_role["rules"][0] == {"apiGroups": ["apiextensions.k8s.io"],
                                        "resources": ["customresourcedefinitions"],
                                        "verbs": ["list", "watch"]}
    (manifest_role,) = by_kind(load_all(MANIFESTS / "02-rbac.yaml"), "Role")
    assert cluster_role["rules"][1:] == manifest_role["rules"]
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "snap-snapshots-operator",
                                    "namespace": "ops"}]
    config = next(c for c in by_kind(objects, "ConfigMap")
                  if "SNAPSHOTS_OPERATOR_JOB_IMAGE" in c["data"])
    assert config["data"]["SNAPSHOTS_OPERATOR_ALL_NAMESPACES"] == "true"
    assert config["data"]["SNAPSHOTS_OPERATOR_JOB_IMAGE"] == "registry.example/snapshots-jobs:1.2.3"
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (service,) = by_kind(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "registry.example/snapshots:1.2.3"


def test_namespaced_mode_gets_a_role_in_each_namespace() -> None:
    objects = render({"watch": {"namespaces": ["team-a", "team-b"]}, "crds": {"create": False},
                      "serviceAccount": {"create": False, "name": "existing"}})
    validate_builtin(objects)
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objects, "Role")) == \
        ["team-a", "team-b"]
    assert all(b["subjects"][0] == {"kind": "ServiceAccount", "name": "existing",
                                    "namespace": "snapshots-system"}
               for b in by_kind(objects, "RoleBinding"))
    assert not by_kind(objects, "CustomResourceDefinition")
    assert not by_kind(objects, "ServiceAccount")
    (config,) = by_kind(objects, "ConfigMap")
    assert config["data"]["SNAPSHOTS_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_the_operator_reads_the_configuration_the_chart_gives_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from snapshots_operator.cli import parse_args

    for values, expected in (({"watch": {"namespaces": ["a", "b"]}}, (False, ["a", "b"])),
                             ({"watch": {"allNamespaces": True}}, (True, None))):
        (config,) = by_kind(render(values), "ConfigMap")
        for key, value in config["data"].items():
            monkeypatch.setenv(key, value)
        args = parse_args([])
        assert (args.all_namespaces, args.namespaces) == expected
        assert args.job_image == "snapshots:0.1.0"
        assert args.metrics_port == 9841
        for key in config["data"]:
            monkeypatch.delenv(key)


def test_checksum_config_follows_the_configuration() -> None:
    def checksum(values: dict[str, Any]) -> str:
        (deployment,) = by_kind(render(values), "Deployment")
        return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"jobImage": {"tag": "2.0.0"}})
    assert checksum({}) != checksum({"watch": {"namespaces": ["other"]}})


@pytest.mark.parametrize(("values", "why"), [
    ({"replicas": 2}, "unknown key (the operator runs one replica)"),
    ({"image": {"pullPolicy": "Sometimes"}}, "bad pull policy"),
    ({"image": {"repository": ""}}, "empty repository"),
    ({"metrics": {"port": 70000}}, "port out of range"),
    ({"watch": {"namespaces": ["Bad_Namespace"]}}, "invalid namespace name"),
    ({"watch": {"allNamespaces": "yes"}}, "string for a boolean"),
    ({"resources": {"limits": {"memory": "lots"}}}, "not a quantity"),
    ({"serviceMonitor": {"interval": "often"}}, "not a duration"),
    ({"crds": {"create": True, "keep": False}}, "unknown nested key"),
])
def test_values_schema_rejects_bad_values(values: dict[str, Any], why: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(defaults, schema)  # the defaults themselves pass


def test_every_values_key_has_a_doc_comment() -> None:
    """Each key of values.yaml that the schema names has a `#` comment right above it."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    undocumented = []
    for index, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        node = schema
        for _, parent in stack:
            node = (node.get("properties") or {}).get(parent, {})
        stack.append((indent, key))
        if key not in (node.get("properties") or {}):
            continue  # the contents of a free-form default (e.g. podSecurityContext)
        previous = lines[index - 1].strip() if index else ""
        if not previous.startswith("#"):
            undocumented.append(".".join(k for _, k in stack))
    assert undocumented == []
    assert len([line for line in lines if line.lstrip().startswith("# --")]) >= 40


def test_chart_crd_equals_the_manifests_crd() -> None:
    assert (CHART / "files" / "crd.yaml").read_bytes() == CRD_FILE.read_bytes(), \
        "run: python3 charts/sync-deploy-files.py"
    (rendered,) = by_kind(render(), "CustomResourceDefinition")
    assert rendered == crd()


@pytest.mark.parametrize(("source", "copy_"), list(DEPLOY_COPIES.items()),
                         ids=[p.name for p in DEPLOY_COPIES])
def test_chart_carries_the_deploy_files_byte_for_byte(source: Path, copy_: Path) -> None:
    assert source.exists(), f"{source.relative_to(ROOT)} is missing (written by the telemetry work)"
    assert copy_.exists() and copy_.read_bytes() == source.read_bytes(), \
        "run: python3 charts/sync-deploy-files.py"


def test_rendered_dashboards_and_rules_carry_them() -> None:
    objects = render(NON_DEFAULT_VALUES)
    dashboards = next(c for c in by_kind(objects, "ConfigMap")
                      if c["metadata"]["name"].endswith("-dashboards"))
    project = CHART / "files" / "dashboards" / "snapshots.json"
    operator = CHART / "files" / "dashboards" / "snapshots-operator.json"
    assert dashboards["data"]["snapshots.json"] == project.read_text().rstrip("\n")
    assert json.loads(dashboards["data"]["snapshots-operator.json"]) == \
        json.loads(operator.read_text())
    (rule,) = by_kind(objects, "PrometheusRule")
    project_rules = yaml.safe_load((CHART / "files" / "alerts" / "snapshots.yml").read_text())
    operator_rules = yaml.safe_load(
        (CHART / "files" / "alerts" / "snapshots-operator.yml").read_text())
    assert rule["spec"]["groups"] == project_rules["groups"] + operator_rules["groups"]


def test_operator_alert_rules_pass_promtool() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(CHART / "files" / "alerts" / "snapshots-operator.yml")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_dashboard_queries_only_operator_metrics() -> None:
    from snapshots_operator.metrics import OperatorMetrics

    dashboard = json.loads((CHART / "files" / "dashboards" / "snapshots-operator.json")
                           .read_text())
    exported = OperatorMetrics().render().decode()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"snapshots_operator_\w+", target["expr"]):
                assert f"\n{name}" in "\n" + exported or f"# TYPE {name}" in exported, name


def test_readme_snapshotsources_validate(validator: jsonschema.Validator) -> None:
    """Every SnapshotSource shown in the docs and the chart's README is one the CRD accepts."""
    found = 0
    for readme in (ROOT / "docs" / "kubernetes.md", CHART / "README.md"):
        for block in re.findall(r"```yaml\n(.*?)```", readme.read_text(), re.S):
            for doc in yaml.safe_load_all(block):
                if isinstance(doc, dict) and doc.get("kind") == "SnapshotSource":
                    validator.validate(doc)
                    found += 1
    assert found >= 2
