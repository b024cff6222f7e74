"""A real container engine for the image, Job-in-image and compose tests: rootful podman.

No image registry is reachable from the test machines, so every image is built here: two base
images from Debian packages (debootstrap from the apt mirror this machine uses, then
``podman import``), the product's image from the real ``Dockerfile`` on the Python one, and
stand-ins for the official ``postgres``, ``prom/prometheus`` and ``prom/pushgateway`` images
on the other (tests/containers/*.Containerfile). Base images are tagged by a digest of their
recipe and reused across runs; the product's image is built once per test session and
removed at its end.

podman reads tests/containers/containers.conf (through ``CONTAINERS_CONF``): the settings
this kind of machine needs, without touching the host's own configuration.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import in_ci, require_tool, wait_until

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
RECIPES = HERE / "containers"
CONTAINERS_CONF = RECIPES / "containers.conf"
PREFIX = "localhost/snapshots-test"
SUITE = "bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
BASE_RECIPE = 1  # bump when _post_process changes: base images are reused by their tag


@dataclass(frozen=True)
class BaseImage:
    """A Debian minbase root file system with ``packages``, imported as an image."""

    name: str
    packages: tuple[str, ...]

    @property
    def tag(self) -> str:
        recipe = "\n".join([SUITE, str(BASE_RECIPE), *self.packages])
        return f"{PREFIX}/{self.name}:{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


PYTHON_BASE = BaseImage("python-base", ("ca-certificates", "python3", "python3-pip",
                                        "python3-venv"))
SERVICES_BASE = BaseImage("services-base", ("postgresql-15", "prometheus",
                                            "prometheus-pushgateway", "wget"))


def engine_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **extra}


def podman(*args: str, timeout: float = 300, check: bool = True,
           input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``; a failure names the command and the tail of its stderr."""
    proc = subprocess.run(["podman", *args], env=engine_env(), capture_output=True, text=True,
                          timeout=timeout, input=input,
                          stdin=subprocess.DEVNULL if input is None else None)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        pytest.fail(f"podman {' '.join(args[:3])}... exited {proc.returncode}:\n{tail}",
                    pytrace=False)
    return proc


def require_engine() -> None:
    """Skip without rootful podman and debootstrap; under CI=true that is a failure."""
    for tool in ("podman", "runc", "debootstrap"):
        require_tool(tool)
    if os.geteuid() != 0:
        message = "the container tests need rootful podman (run as root)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def apt_mirror() -> str:
    """The Debian archive this machine's apt uses (deb822 ``URIs:`` or a one-line ``deb``)."""
    files: list[Path] = []
    for source in APT_SOURCES:
        files += sorted(source.glob("*")) if source.is_dir() else [source]
    for path in files:
        if not path.is_file() or path.suffix not in {"", ".list", ".sources"}:
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M):
            if not uri.rstrip("/").endswith("-security"):
                return uri
    pytest.fail("no Debian archive found in the apt sources of this machine", pytrace=False)


def _post_process(rootfs: Path) -> None:
    """Trust the host's CAs (pip in a build reaches the package index only through them);
    let pip install into the system Python (an image has no other); no apt caches."""
    if HOST_CA_BUNDLE.exists():
        target = rootfs / "etc/ssl/certs/ca-certificates.crt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOST_CA_BUNDLE, target)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    for name, target in (("python", "python3"), ("pip", "pip3")):
        link = rootfs / "usr/local/bin" / name
        if (rootfs / "usr/bin" / target).exists() and not link.exists():
            link.symlink_to(f"/usr/bin/{target}")
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()


def base_image(spec: BaseImage) -> str:
    """The base image ``spec``: reused when present, else debootstrapped and imported."""
    if image_exists(spec.tag):
        return spec.tag
    with tempfile.TemporaryDirectory(prefix=f"snapshots-{spec.name}-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(spec.packages)}",
             SUITE, str(rootfs), apt_mirror()],
            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-10:])
            pytest.fail(f"debootstrap of {spec.name} failed:\n{tail}", pytrace=False)
        _post_process(rootfs)
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(archive), "."],
                       check=True, timeout=600)
        podman("import", "--change", "CMD [\"/bin/bash\"]", str(archive), spec.tag,
               timeout=600)
    return spec.tag


def build(tag: str, containerfile: Path, context: Path, base: str, *, layers: bool = True,
          timeout: float = 1200) -> str:
    """``podman build`` in Docker format (OCI images drop HEALTHCHECK), ``BASE`` set.

    ``layers=False`` keeps no intermediate images: for an image rebuilt from changed sources
    every run, whose cached layers would only pile up.
    """
    podman("build", "--format", "docker", f"--layers={str(layers).lower()}",
           "--build-arg", f"BASE={base}", "-f", str(containerfile), "-t", tag, str(context),
           timeout=timeout)
    return tag


def build_service_images() -> dict[str, str]:
    """Images standing in for postgres, prom/prometheus and prom/pushgateway, by service."""
    base = base_image(SERVICES_BASE)
    digest = base.rsplit(":", 1)[1]
    images = {}
    for service in ("postgres", "prometheus", "pushgateway"):
        recipe = RECIPES / f"{service}.Containerfile"
        images[service] = build(f"{PREFIX}/{service}:{digest}", recipe, RECIPES, base)
    return images


def build_product_image() -> str:
    """The product's image from the real Dockerfile, on the Debian Python base."""
    base = base_image(PYTHON_BASE)
    return build(f"{PREFIX}/snapshots:{uuid.uuid4().hex[:8]}", PROJECT / "Dockerfile",
                 PROJECT, base, layers=False)


def copy_samples(directory: Path) -> Path:
    """The project's sample snapshots (data/snapshot_*.csv) in ``directory``, made if need be
    and readable by the image's non-root user."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for path in sorted((PROJECT / "data").glob("snapshot_*.csv")):
        shutil.copy(path, directory)
    return directory


@contextmanager
def network() -> Iterator[str]:
    """A podman network of the test's own (DNS by container name and alias)."""
    name = f"snapshots-test-{uuid.uuid4().hex[:8]}"
    podman("network", "create", name)
    try:
        yield name
    finally:
        podman("network", "rm", "-f", name, check=False)


@contextmanager
def container(image: str, *args: str, name: str | None = None,
              options: Sequence[str] = ()) -> Iterator[str]:
    """A detached container, removed (with its anonymous volumes) at exit."""
    name = name or f"snapshots-test-{uuid.uuid4().hex[:8]}"
    podman("run", "-d", "--name", name, *options, image, *args)
    try:
        yield name
    finally:
        podman("rm", "-f", "-v", "-t", "2", name, check=False, timeout=120)



# --------------------------------------------------------------------------- fixtures
# Imported by conftest.py, so each image is built once per session whichever test needs it.

@pytest.fixture(scope="session")
def product_image() -> Iterator[str]:
    """The image built from the project's Dockerfile, removed at the session's end."""
    require_engine()
    tag = build_product_image()
    yield tag
    podman("rmi", "-f", tag, check=False)


@pytest.fixture(scope="session")
def service_images() -> dict[str, str]:
    require_engine()
    return build_service_images()


POSTGRES_USER = "snapshots"
POSTGRES_DB = "snapshots"


@dataclass(frozen=True)
class Postgres:
    container: str
    uri: str  # as containers on its network reach it

    def query(self, statement: str) -> str:
        """``psql -tA`` inside the server's container (a local login, trusted)."""
        return podman("exec", self.container, "psql", "-U", POSTGRES_USER, "-d", POSTGRES_DB,
                      "-tAc", statement).stdout.strip()


@contextmanager
def postgres(images: dict[str, str], net: str, *, alias: str = "db",
             password: str = "snapshots-test") -> Iterator[Postgres]:
    """A PostgreSQL container on ``net`` (the official image's interface), ready."""
    options = ["--network", net, "--network-alias", alias, "--health-interval", "disable",
               "-e", f"POSTGRES_USER={POSTGRES_USER}", "-e", f"POSTGRES_PASSWORD={password}",
               "-e", f"POSTGRES_DB={POSTGRES_DB}"]
    with container(images["postgres"], options=options) as name:
        # Over TCP: during initdb only the socket listens, and then it is not the final server.
        wait_until(lambda: podman("exec", name, "pg_isready", "-q", "-h", "127.0.0.1",
                                  check=False).returncode == 0,
                   timeout=120, interval=0.5, message=f"PostgreSQL in {name}")
        yield Postgres(name, f"postgresql://{POSTGRES_USER}:{password}@{alias}:5432/{POSTGRES_DB}")
