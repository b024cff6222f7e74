"""The SnapshotSource operator: runs `snapshots sync --once` on Kubernetes (kopf).

This package lives in ``operator/`` of the repository, which deliberately has no
``__init__.py``: a top-level package named ``operator`` would shadow Python's standard library.
"""

from snapshots import __version__

GROUP = "snapshots.dev"
VERSION = "v1alpha1"
PLURAL = "snapshotsources"
KIND = "SnapshotSource"
API_VERSION = f"{GROUP}/{VERSION}"

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "__version__"]
