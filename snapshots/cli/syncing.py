"""`snapshots sync`: a directory kept loaded, as a service or (--once) as a job."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import click

from snapshots.cli.errors import handle_errors
from snapshots.cli.options import (
    command_settings,
    connect_target,
    loading_options_from,
    shared_options,
    sync_loading_options,
)
from snapshots.errors import ExitCode, UsageError

log = logging.getLogger("snapshots")


@click.command("sync")
@click.option("--data-dir", type=click.Path(path_type=Path), required=True,
              envvar="SNAPSHOTS_DATA_DIR", help="Directory to keep in sync.")
@click.option("--once", is_flag=True, envvar="SNAPSHOTS_ONCE",
              help="Load the backlog and exit (for Jobs and CronJobs).")
@click.option("--pattern", "patterns", multiple=True, envvar="SNAPSHOTS_PATTERN",
              help="File name glob (repeatable) [default: *.csv and *.csv.gz].")
@click.option("--recursive", is_flag=True, envvar="SNAPSHOTS_RECURSIVE",
              help="Also look in subdirectories.")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True,
              envvar="SNAPSHOTS_SETTLE",
              help="Seconds a file's size and mtime must stay unchanged before it is taken.")
@click.option("--poll", is_flag=True, envvar="SNAPSHOTS_POLL",
              help="No filesystem events: list the directory every second.")
@click.option("--rescan", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              envvar="SNAPSHOTS_RESCAN", help="Seconds between full rescans.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), envvar="SNAPSHOTS_METRICS_PORT",
              help="Port for /metrics, /healthz, /readyz; 0 disables "
                   "[default: 9840, off with --once].")
@click.option("--metrics-host", default="0.0.0.0", show_default=True,
              envvar="SNAPSHOTS_METRICS_HOST", help="Address to serve metrics on.")
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              envvar="SNAPSHOTS_GRACE",
              help="On SIGTERM/SIGINT, seconds a file in flight may take to finish.")
@click.option("--summary-file", type=click.Path(path_type=Path), envvar="SNAPSHOTS_SUMMARY_FILE",
              help="--once: write a JSON summary here [default: /dev/termination-log "
                   "when it exists].")
@click.option("--retention-days", type=click.IntRange(min=1), envvar="SNAPSHOTS_RETENTION_DAYS",
              help="Forget snapshots older than D days after each pass (append mode).")
@sync_loading_options
@shared_options
@click.pass_context
@handle_errors
def sync_cmd(ctx: click.Context, data_dir: Path, once: bool, patterns: tuple[str, ...],
             recursive: bool, settle: float, poll: bool, rescan: float,
             metrics_port: int | None, metrics_host: str, grace: float,
             summary_file: Path | None, retention_days: int | None, database: str | None,
             table: str | None, schema_: str | None, **options: Any) -> None:
    """Load every snapshot in DIR, then each new one seconds after it lands.

    Examples:

    \b
      snapshots sync --data-dir incoming/                   a service (metrics on :9840)
      snapshots sync --data-dir incoming/ --once            load the backlog and exit
      snapshots sync --data-dir incoming/ --retention-days 90 --metrics-port 0
    """
    import signal

    from snapshots.config import describe, resolve_database
    from snapshots.metrics import DEFAULT_METRICS_PORT, HealthServer, Metrics, push
    from snapshots.options import default_jobs
    from snapshots.output import log_timestamps
    from snapshots.sync import DEFAULT_PATTERNS, SyncOptions, SyncService, write_summary

    settings = command_settings(ctx, database, table, schema_)
    import_opts = loading_options_from(options, origin="sync", wait_for_busy=False)
    if settings.verbosity == 0:
        logging.getLogger("snapshots").setLevel(logging.INFO)  # a service logs each file
    log_timestamps()
    sync_opts = SyncOptions(
        data_dir=data_dir, table=settings.table_name, schema=settings.schema, once=once,
        patterns=tuple(patterns) or DEFAULT_PATTERNS, recursive=recursive, settle=settle,
        poll=poll, rescan=rescan, jobs=options["jobs"] or default_jobs(), grace=grace,
        retention_days=retention_days, import_options=import_opts)
    conninfo = connect_target(settings)
    metrics = Metrics()
    service = SyncService(conninfo, sync_opts, metrics)
    port = metrics_port if metrics_port is not None else (0 if once else DEFAULT_METRICS_PORT)
    server = None
    if port:
        try:
            server = HealthServer(metrics, host=metrics_host, port=port, alive=service.alive,
                                  ready=service.ready).start()
        except OSError as exc:
            in_use = exc.errno == errno.EADDRINUSE
            raise UsageError(
                f"cannot serve metrics on {metrics_host}:{port}: {exc.strerror or exc}",
                hint="choose another --metrics-port, or 0 to disable" if in_use else
                "check --metrics-host (an address or name of this machine)") from None
        log.info("serving /metrics, /healthz and /readyz on %s:%d", metrics_host, server.port)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _f: service.request_stop(s))
    watching = "once: the files there now" if once else (
        "polling" if poll else f"events + rescan every {rescan:g}s")
    # describe() never shows a password.
    database = describe(None if resolve_database(settings.database).embedded else conninfo)
    log.info("syncing %s into %s of %s (settle %.1fs, %s)", data_dir.resolve(),
             settings.table_name, database, settle, watching)
    try:
        summary = service.run()
    finally:
        if server is not None:
            server.stop()
    if not once:
        ctx.exit(int(ExitCode.OK))
    write_summary(summary, settings.table_name, summary_file)
    if options["pushgateway"]:
        push(options["pushgateway"], metrics, job="snapshots_sync", table=settings.table_name,
             schema=settings.schema)
    click.echo(summary.as_json(settings.table_name))
    if summary.interrupted:
        ctx.exit(int(ExitCode.INTERRUPTED))
    if summary.database_error and not (summary.imported or summary.skipped):
        ctx.exit(int(ExitCode.DATABASE))
    ctx.exit(int(ExitCode.OK if summary.ok else ExitCode.FAILED))
