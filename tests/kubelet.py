"""A kubelet's part, played by podman: one pod template's container as ``podman run`` options.

Used to run the operator's Job pods (tests/test_job_in_image.py) and the operator's own
Deployment from manifests/ (tests/test_operator_kopf.py) in the built image. Field by field:
command and args, env (Secret keys resolved, field references filled in), volume mounts (a
claim is a directory, an emptyDir a tmpfs of its size limit, the service account token a
directory at the path the kubelet uses), the pod's and the container's security contexts,
the memory limit and the termination message file. A field with no translation here fails
the test: a spec that grows something new must be taught here, never silently dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
QUANTITY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def quantity_bytes(value: str) -> int:
    for unit, factor in QUANTITY_UNITS.items():
        if value.endswith(unit):
            return int(value[: -len(unit)]) * factor
    return int(value)


def known(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    assert not unknown, f"{where}: no podman equivalent taught for {sorted(unknown)}"


@dataclass
class Node:
    """What the cluster around the pod provides: its objects and where the pod runs."""

    namespace: str
    network: str  # a podman network, or "host" (to reach an API server on loopback)
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    claims: Mapping[str, Path] = field(default_factory=dict)
    service_account: Path | None = None  # token, ca.crt, namespace
    termination_log: Path | None = None


# Fields that only matter to a cluster's scheduler, Services or probes: nothing to run.
CLUSTER_ONLY_CONTAINER = {"ports", "livenessProbe", "readinessProbe", "imagePullPolicy"}


def pod_run_args(template: Mapping[str, Any], pod_name: str, node: Node,
                 env_overrides: Mapping[str, str] | None = None) -> list[str]:
    """``podman run`` options and arguments for ``template``'s one container.

    ``env_overrides`` replaces the value of variables the template sets: on the host network a
    fixed port may be taken, so a test passes a free one; anything else it changes is named.
    """
    spec = template["spec"]
    known(spec, {"restartPolicy", "automountServiceAccountToken", "serviceAccountName",
                 "securityContext", "containers", "volumes"}, "pod spec")
    (ctr,) = spec["containers"]
    known(ctr, {"name", "image", "command", "args", "env", "resources", "volumeMounts",
                "terminationMessagePath", "terminationMessagePolicy", "securityContext",
                *CLUSTER_ONLY_CONTAINER}, "container")
    options = ["--name", pod_name, "--network", node.network, "--pull", "never",
               "--health-interval", "disable"]

    pod_security = spec.get("securityContext") or {}
    known(pod_security, {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup",
                         "fsGroupChangePolicy", "seccompProfile"}, "pod securityContext")
    assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}  # podman's default
    user, group = pod_security["runAsUser"], pod_security["runAsGroup"]
    assert user != 0 or not pod_security.get("runAsNonRoot")
    options += ["--user", f"{user}:{group}"]
    if "fsGroup" in pod_security:
        options += ["--group-add", str(pod_security["fsGroup"])]
    security = ctr.get("securityContext") or {}
    known(security, {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsNonRoot",
                     "capabilities"}, "container securityContext")
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if security.get("readOnlyRootFilesystem"):
        # Without podman's own tmpfs on /tmp, /run and /var/tmp: only the pod's volumes write.
        options += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = security.get("capabilities") or {}
    known(capabilities, {"drop"}, "capabilities")
    options += [arg for cap in capabilities.get("drop", ()) for arg in ("--cap-drop", cap)]

    limits = (ctr.get("resources") or {}).get("limits") or {}
    known(limits, {"memory", "cpu"}, "resources.limits")
    if "memory" in limits:
        options += ["--memory", str(quantity_bytes(limits["memory"]))]

    overrides = dict(env_overrides or {})
    fields = {"metadata.namespace": node.namespace, "metadata.name": pod_name}
    for var in ctr.get("env") or ():
        known(var, {"name", "value", "valueFrom"}, f"env {var['name']}")
        if var["name"] in overrides:
            value = overrides.pop(var["name"])
        elif "value" in var:
            value = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            value = node.secrets[ref["name"]][ref["key"]]
        else:
            value = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        options += ["-e", f"{var['name']}={value}"]
    assert not overrides, f"overrides for variables the template does not set: {overrides}"

    volumes = {volume["name"]: volume for volume in spec.get("volumes") or ()}
    for mount in ctr.get("volumeMounts") or ():
        known(mount, {"name", "mountPath", "readOnly"}, f"volumeMount {mount['name']}")
        volume = volumes[mount["name"]]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            read_only = mount.get("readOnly") or claim.get("readOnly")
            options += ["-v", f"{node.claims[claim['claimName']]}:{mount['mountPath']}"
                              f"{':ro' if read_only else ''}"]
        elif "emptyDir" in volume:
            size = quantity_bytes(volume["emptyDir"].get("sizeLimit", "64Mi"))
            options += ["--tmpfs", f"{mount['mountPath']}:rw,size={size},mode=1777"]
        else:
            pytest.fail(f"volume {mount['name']}: no podman equivalent taught", pytrace=False)
    if spec.get("automountServiceAccountToken", True):
        assert node.service_account is not None, "the pod mounts a service account token"
        options += ["-v", f"{node.service_account}:{SERVICE_ACCOUNT_PATH}:ro"]

    if "terminationMessagePath" in ctr:
        assert ctr.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        assert node.termination_log is not None
        options += ["-v", f"{node.termination_log}:{ctr['terminationMessagePath']}"]
    command, args = ctr.get("command") or [], ctr.get("args") or []
    entrypoint = ["--entrypoint", json.dumps(command[:1])] if command else []
    return [*options, *entrypoint, ctr["image"], *command[1:], *args]
