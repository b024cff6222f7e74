#!/usr/bin/env python3
"""Copy the canonical files the Helm chart carries into it, byte for byte.

Helm reads only files inside a chart, so the chart keeps copies of:

    deploy/grafana/dashboards/snapshots.json -> files/dashboards/snapshots.json
    deploy/prometheus/alerts.yml             -> files/alerts/snapshots.yml
    manifests/01-crd.yaml                    -> files/crd.yaml

(the copies are in charts/snapshots-operator/).

Run it after changing any of the sources: `python3 charts/sync-deploy-files.py`
(`--check` only reports differences and exits 1 if there are any).
tests/test_operator_manifests.py fails while a copy differs from its source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "snapshots-operator"

COPIES = {
    ROOT / "deploy" / "grafana" / "dashboards" / "snapshots.json":
        CHART / "files" / "dashboards" / "snapshots.json",
    ROOT / "deploy" / "prometheus" / "alerts.yml": CHART / "files" / "alerts" / "snapshots.yml",
    ROOT / "manifests" / "01-crd.yaml": CHART / "files" / "crd.yaml",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = parser.parse_args(argv)
    status = 0
    for source, copy in COPIES.items():
        name = copy.relative_to(ROOT)
        if not source.exists():
            print(f"missing source: {source.relative_to(ROOT)} (not copied)", file=sys.stderr)
            status = 1
            continue
        data = source.read_bytes()
        if copy.exists() and copy.read_bytes() == data:
            continue
        if args.check:
            print(f"differs: {name} from {source.relative_to(ROOT)}", file=sys.stderr)
            status = 1
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
        print(f"copied {source.relative_to(ROOT)} -> {name}")
    return status


if __name__ == "__main__":
    sys.exit(main())
