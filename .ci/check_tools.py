"""Name the system tools the test suite needs that this machine lacks.

Outside CI the tests that need a missing tool skip with its name; under CI=true a missing tool
is a failure (this script exits 1), because a suite that skips what it cannot find hides gaps.
"""

from __future__ import annotations

import os
import shutil
import sys

TOOLS = {
    "psql": "Debian package postgresql-client (benchmarks compare against psql \\copy)",
    "promtool": "Debian package prometheus (checks the shipped config, rules and rule tests)",
    "prometheus": "Debian package prometheus (telemetry tests run a real Prometheus)",
    "prometheus-pushgateway": "Debian package prometheus-pushgateway (telemetry tests push to it)",
    "podman": "Debian package podman (image, Job-in-image and compose tests)",
    "runc": "Debian package runc (podman's runtime here: crun fails on hybrid cgroups)",
    "debootstrap": "Debian package debootstrap (the container tests' base images)",
    "openssl": "Debian package openssl (the operator's simulated in-cluster TLS)",
    "unshare": "Debian package util-linux (the operator's simulated service account mount)",
}


def main() -> int:
    missing = [(tool, why) for tool, why in TOOLS.items() if shutil.which(tool) is None]
    for tool, why in missing:
        print(f"missing tool: {tool} — {why}", file=sys.stderr)
    if missing and os.environ.get("CI") == "true":
        return 1
    if missing:
        print("tests needing them will be skipped; .ci/run installs them", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
