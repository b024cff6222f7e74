"""The product's image, built from the real Dockerfile on a Debian base, run with podman.

Built once per session (tests/containers.py); every test here runs real containers on a
network of its own, against PostgreSQL 15 from Debian's packages in a container.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from containers import container, copy_samples, network, podman, postgres
from helpers import wait_until

from snapshots import __version__

pytestmark = pytest.mark.containers

RUN_AS = "10001"


def test_the_image_says_its_version(product_image: str) -> None:
    result = podman("run", "--rm", product_image, "--version")
    assert result.stdout.strip() == f"snapshots, version {__version__}"


def test_the_image_runs_as_a_non_root_user(product_image: str) -> None:
    inspect = json.loads(podman("image", "inspect", product_image).stdout)[0]
    assert inspect["Config"]["User"] == f"{RUN_AS}:{RUN_AS}"
    assert podman("run", "--rm", "--entrypoint", "id", product_image,
                  "-u").stdout.strip() == RUN_AS


def test_the_image_carries_the_operator(product_image: str) -> None:
    result = podman("run", "--rm", "--entrypoint", "snapshots-operator", product_image, "--help")
    assert "usage: snapshots-operator" in result.stdout
    # Outside a pod and without a kubeconfig it must say so in one line, not a traceback.
    bare = podman("run", "--rm", "--entrypoint", "snapshots-operator", product_image,
                  "--all-namespaces", check=False)
    assert bare.returncode == 1
    assert "no Kubernetes credentials" in bare.stderr and "Traceback" not in bare.stderr


def test_an_import_in_the_image_loads_into_postgres(product_image: str, tmp_path: Path,
                                                    service_images: dict[str, str]) -> None:
    data = copy_samples(tmp_path / "data")
    with network() as net, postgres(service_images, net) as db:
        run = ["run", "--rm", "--network", net, "-v", f"{data}:/data:ro",
               "-e", f"SNAPSHOTS_DATABASE={db.uri}", product_image]
        first = podman(*run, "import", "/data/")
        assert "2 files: 2 imported" in first.stdout, first.stdout + first.stderr
        assert db.query("SELECT count(*) FROM snapshots") == "11"
        again = podman(*run, "import", "/data/")
        assert "2 files: 2 skipped" in again.stdout, again.stdout + again.stderr
        listed = json.loads(podman(*run, "list", "--format", "json").stdout)
        assert [(r["file"], r["status"], r["rows"]) for r in listed] == [
            ("snapshot_20230101.csv", "imported", 5), ("snapshot_20230603.csv", "imported", 6)]


def healthcheck(name: str) -> int:
    return podman("healthcheck", "run", name, check=False, timeout=60).returncode


def test_the_healthcheck_passes_for_sync_and_fails_when_its_endpoint_is_down(
        product_image: str, tmp_path: Path, service_images: dict[str, str]) -> None:
    data = copy_samples(tmp_path / "data")
    with network() as net, postgres(service_images, net) as db:
        options = ["--network", net, "-v", f"{data}:/data:ro", "--health-interval", "disable",
                   "-e", f"SNAPSHOTS_DATABASE={db.uri}"]
        with container(product_image, "sync", "--data-dir", "/data",
                       options=options) as sync:
            wait_until(lambda: db.query("SELECT count(*) FROM information_schema.tables "
                                        "WHERE table_name = 'snapshots'") == "1",
                       timeout=120, interval=0.5, message="sync to load the samples")
            wait_until(lambda: healthcheck(sync) == 0, timeout=60, interval=0.5,
                       message="the HEALTHCHECK to pass")
            # A hung sync: the endpoint accepts connections and never answers.
            pid = podman("inspect", sync, "--format", "{{.State.Pid}}").stdout.strip()
            os.kill(int(pid), signal.SIGSTOP)
            try:
                assert healthcheck(sync) == 1
            finally:
                os.kill(int(pid), signal.SIGCONT)
            assert healthcheck(sync) == 0
            assert "Traceback" not in podman("logs", sync).stderr
