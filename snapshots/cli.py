"""The command line. The only module that imports click: it parses options, calls the
libraries underneath, prints, and maps errors to exit codes.
"""

from __future__ import annotations

import errno
import functools
import gc
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from snapshots import __version__
from snapshots.errors import DatabaseUnavailable, ExitCode, SnapshotsError, UsageError

if TYPE_CHECKING:
    from snapshots.prehash import Prehasher

log = logging.getLogger("snapshots")

COMMANDS = ("import", "list", "forget", "retry", "sync", "migrate", "db")
DEFAULT_TABLE = "snapshots"


# --------------------------------------------------------------------------- shared options


def _shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--database/--table/--schema, accepted before or after the command name."""
    func = click.option("--schema", "schema_", metavar="NAME", envvar="SNAPSHOTS_SCHEMA",
                        help="Schema of the table and ledger [default: the connection's "
                             "first schema].")(func)
    func = click.option("--table", metavar="NAME", envvar="SNAPSHOTS_TABLE",
                        help=f"Target table [default: {DEFAULT_TABLE}].")(func)
    func = click.option("--database", metavar="DB", envvar="SNAPSHOTS_DATABASE",
                        help="host[:port][/dbname], postgresql:// URI or libpq key=value "
                             "string [default: PG* variables, else embedded].")(func)
    return func


class Settings:
    """Options from the group and the command, merged (the command's win)."""

    def __init__(self) -> None:
        self.database: str | None = None
        self.table: str | None = None
        self.schema: str | None = None
        self.verbosity = 0
        self.log_format = "text"

    def merge(self, database: str | None, table: str | None, schema: str | None) -> None:
        self.database = database or self.database
        self.table = table or self.table
        self.schema = schema or self.schema

    @property
    def table_name(self) -> str:
        name = self.table or DEFAULT_TABLE
        if not name.strip() or len(name.encode()) > 63 or "\x00" in name:
            raise UsageError(f"--table {name!r}: a table name is 1 to 63 bytes")
        return name


def _settings(ctx: click.Context, database: str | None, table: str | None,
              schema: str | None) -> Settings:
    settings: Settings = ctx.ensure_object(Settings)
    if ctx.parent is not None:
        # The group already read SNAPSHOTS_DATABASE & co.; a command re-reading them must not
        # override an option given before the command (`--database` beats the environment).
        env = click.core.ParameterSource.ENVIRONMENT
        database, table, schema = (
            None if ctx.get_parameter_source(name) is env else value
            for name, value in (("database", database), ("table", table), ("schema_", schema)))
    settings.merge(database, table, schema)
    return settings


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every expected error is one line on stderr (plus a hint) and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        settings: Settings = ctx.ensure_object(Settings)
        try:
            return func(*args, **kwargs)
        except SnapshotsError as exc:
            if settings.verbosity >= 2:
                log.exception("details")
            _print_error(exc)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            _report_error("interrupted; a load in flight was rolled back, nothing half-written")
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:  # `snapshots list | head`: the reader has all it wants
            _quiet_stdout()
            ctx.exit(int(ExitCode.OK))
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # a bug or something unforeseen: still one line
            if settings.verbosity >= 1:
                log.exception("unexpected error")
            from snapshots.config import first_line
            _report_error(f"{type(exc).__name__}: {first_line(str(exc))}",
                          "run with -v for the traceback" if settings.verbosity < 1 else None)
            ctx.exit(int(ExitCode.FAILED))

    return wrapper


def _quiet_stdout() -> None:
    """Send the rest of stdout nowhere: its reader has gone (a closed pipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _print_error(exc: SnapshotsError) -> None:
    _report_error(str(exc), exc.hint)


def _report_error(message: str, hint: str | None = None, *,
                  label: str | None = "error", fmt: str | None = None) -> None:
    from snapshots.output import error_lines

    if fmt is None:
        ctx = click.get_current_context(silent=True)
        settings = ctx.find_object(Settings) if ctx is not None else None
        fmt = settings.log_format if settings else "text"
    for line in error_lines(message, hint, fmt, label=label):
        click.echo(line, err=True)


def _early_log_format(args: Sequence[str]) -> str:
    """--log-format before Click has parsed it (a usage error may come first)."""
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1]
    return os.environ.get("SNAPSHOTS_LOG_FORMAT", "text")


# --------------------------------------------------------------------------- the group


class SnapshotsGroup(click.Group):
    """`snapshots FILE...` (the seed's form) means `snapshots import FILE...`."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            if Path(args[0]).exists():
                return "import", self.commands["import"], args
            raise click.UsageError(
                f"{args[0]!r} is neither a command nor an existing file or directory "
                f"(commands: {', '.join(COMMANDS)})", ctx)
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] COMMAND [ARGS]...  |  FILE...")


@click.group(cls=SnapshotsGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                   "max_content_width": 100})
@_shared_options
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug and tracebacks).")
@click.option("-q", "--quiet", is_flag=True, envvar="SNAPSHOTS_QUIET",
              help="Only errors.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              envvar="SNAPSHOTS_LOG_FORMAT", show_default=True, help="Log line format.")
@click.version_option(__version__, "--version", prog_name="snapshots")
@click.pass_context
def cli(ctx: click.Context, database: str | None, table: str | None, schema_: str | None,
        verbose: int, quiet: bool, log_format: str) -> None:
    """Load CSV snapshot files into PostgreSQL exactly once, and know what was loaded.

    \b
    snapshots import data/*.csv     load files (or directories)
    snapshots list                  what is loaded, when, by whom
    snapshots sync --data-dir DIR   keep a directory in sync
    """
    from snapshots.output import configure_logging

    settings = _settings(ctx, database, table, schema_)
    settings.verbosity = -1 if quiet else verbose
    settings.log_format = log_format
    configure_logging(settings.verbosity, log_format)


def _connect_target(settings: Settings) -> str:
    """The conninfo to use; starts (or joins) the embedded server when none is given."""
    from snapshots.config import resolve_database

    target = resolve_database(settings.database)
    if target.conninfo is not None:
        return target.conninfo
    from snapshots import embedded

    return embedded.acquire()


# --------------------------------------------------------------------------- import


def _parse_size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    """`32M` -> bytes (binary multiples)."""
    text = str(value).strip()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    if not number.isdigit() or int(number) * scale < 1:
        raise click.BadParameter(f"{value!r} is not a size such as 32M, 512k or 1000000")
    return int(number) * scale


def _csv_options(delimiter: str | None, quote: str, null: str, encoding: str, no_header: bool,
                 columns: str | None) -> Any:
    from snapshots.csvfile import CsvOptions

    cols = tuple(c.strip() for c in columns.split(",")) if columns else None
    return CsvOptions(delimiter=_unescape(delimiter or ","), quote=quote, null=null,
                      encoding=encoding, header=not no_header, columns=cols,
                      detect_delimiter=not delimiter)


def _unescape(value: str) -> str:
    return {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)


def _named(name: str, decorator: Callable[..., Any]) -> Callable[..., Any]:
    decorator.snapshots_name = name  # type: ignore[attr-defined]
    return decorator


def import_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return _loading_options(func, dry_run=True)


def sync_loading_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """import's loading options without --dry-run (a service that writes nothing is no use)."""
    return _loading_options(func, dry_run=False)


def _loading_options(func: Callable[..., Any], *, dry_run: bool) -> Callable[..., Any]:
    decorators = [
        click.option("--mode", type=click.Choice(["auto", "append", "upsert"]), default="auto",
                     envvar="SNAPSHOTS_MODE", show_default=True,
                     help="append keeps every snapshot's rows; upsert merges on the primary "
                          "key; auto picks from the table."),
        click.option("--replace", is_flag=True, envvar="SNAPSHOTS_REPLACE",
                     help="Supersede an earlier import of the same name with different bytes."),
        click.option("--force", is_flag=True, envvar="SNAPSHOTS_FORCE",
                     help="Upsert a snapshot older than the newest one merged."),
        click.option("--delete-missing", is_flag=True, envvar="SNAPSHOTS_DELETE_MISSING",
                     help="Upsert: delete rows whose key is not in the snapshot."),
        _named("dry_run", click.option("--dry-run", is_flag=True, envvar="SNAPSHOTS_DRY_RUN",
                                       help="Validate every row; write nothing.")),
        click.option("--on-error", type=click.Choice(["abort", "skip"]), default="abort",
                     envvar="SNAPSHOTS_ON_ERROR", show_default=True,
                     help="skip: load the good rows, keep bad ones in snapshot_rejects."),
        click.option("--max-rejects", type=click.IntRange(min=0), envvar="SNAPSHOTS_MAX_REJECTS",
                     help="With --on-error skip: fail the file beyond N rejected rows."),
        click.option("--type", "types", multiple=True, metavar="COL=TYPE",
                     envvar="SNAPSHOTS_TYPE", help="Column type for a new table (repeatable)."),
        click.option("--schema-evolution", type=click.Choice(["strict", "add"]),
                     default="strict", envvar="SNAPSHOTS_SCHEMA_EVOLUTION", show_default=True,
                     help="add: add new columns, load missing ones as NULL, widen types."),
        click.option("--delimiter", envvar="SNAPSHOTS_DELIMITER",
                     help="Field delimiter (one character; \\t for tab) [default: detected "
                          "per file among , ; tab |; tab for .tsv]."),
        click.option("--quote", default='"', envvar="SNAPSHOTS_QUOTE", show_default=True,
                     help="Quote character."),
        click.option("--null", default="", envvar="SNAPSHOTS_NULL",
                     help="String that means NULL [default: unquoted empty field]."),
        click.option("--encoding", default="UTF8", envvar="SNAPSHOTS_ENCODING",
                     show_default=True, help="File encoding (converted by the server)."),
        click.option("--no-header", is_flag=True, envvar="SNAPSHOTS_NO_HEADER",
                     help="The file has no header line: give --columns."),
        click.option("--columns", metavar="A,B,...", envvar="SNAPSHOTS_COLUMNS",
                     help="Column names for --no-header files."),
        click.option("--jobs", type=click.IntRange(min=1), envvar="SNAPSHOTS_JOBS",
                     help="Database connections to use at once [default: CPUs, at most 4]."),
        click.option("--pushgateway", metavar="URL", envvar="SNAPSHOTS_PUSHGATEWAY",
                     help="Push this run's metrics to a Prometheus Pushgateway."),
        click.option("--part-size", metavar="SIZE", envvar="SNAPSHOTS_PART_SIZE",
                     default="32M", show_default=True, callback=_parse_size,
                     help="Smallest part of one file loaded over several --jobs "
                          "connections (bytes; k, M, G suffixes)."),
    ]
    if not dry_run:
        decorators = [d for d in decorators if getattr(d, "snapshots_name", "") != "dry_run"]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@import_options
@_shared_options
@click.pass_context
@handle_errors
def import_cmd(ctx: click.Context, paths: tuple[Path, ...], database: str | None,
               table: str | None, schema_: str | None, **options: Any) -> None:
    """Import snapshot FILEs (and the *.csv / *.csv.gz files of DIRs), each exactly once.

    Examples:

    \b
      snapshots import data/                     every *.csv and *.csv.gz in data/
      snapshots import --dry-run new.csv         check every row, write nothing
      snapshots import --on-error skip new.csv   load the good rows, keep the bad aside
      snapshots import --replace snapshot_20230603.csv   supersede an earlier import
      snapshots --database db:5432/warehouse import data/   PGUSER/PGPASSWORD for the login
    """
    from snapshots.csvfile import expand_inputs
    from snapshots.options import ImportOptions

    settings = _settings(ctx, database, table, schema_)
    files = expand_inputs(paths)
    if not files:
        raise UsageError("no .csv or .csv.gz files found in " + ", ".join(map(str, paths)))
    from snapshots.csvfile import parse_type_overrides

    opts = ImportOptions(
        mode=options["mode"], replace=options["replace"], force=options["force"],
        delete_missing=options["delete_missing"], dry_run=options["dry_run"],
        on_error=options["on_error"], max_rejects=options["max_rejects"],
        types=parse_type_overrides(options["types"]),
        schema_evolution=options["schema_evolution"], part_size=options["part_size"],
        csv=_csv_options(options["delimiter"], options["quote"], options["null"],
                         options["encoding"], options["no_header"], options["columns"]),
    )
    if opts.max_rejects is not None and opts.on_error != "skip":
        raise UsageError("--max-rejects goes with --on-error skip")
    from snapshots.options import default_jobs, worth_parts
    from snapshots.prehash import Prehasher

    jobs = options["jobs"] or default_jobs()
    # Hashing starts now, while the database driver loads and the server is reached.
    with Prehasher(files, parts=lambda path, size: worth_parts(opts, path, size, jobs),
                   options=opts.csv, ahead=jobs) as prehashed:
        conninfo = _connect_target(settings)
        code = run_imports(conninfo, files, table=settings.table_name, schema=settings.schema,
                           options=opts, jobs=jobs, pushgateway=options["pushgateway"],
                           quiet=settings.verbosity < 0, prehashed=prehashed)
    ctx.exit(int(code))


def run_imports(conninfo: str, files: Sequence[Path], *, table: str, schema: str | None,
                options: Any, jobs: int | None, pushgateway: str | None,
                quiet: bool, prehashed: Prehasher | None = None) -> ExitCode:
    """Import, printing one line per file as it finishes; the exit code for the run."""
    from snapshots.output import is_terminal, progress_bar
    from snapshots.runner import import_files

    results = []
    with progress_bar(is_terminal(sys.stderr) and not quiet) as bar:

        def progress_for(path: Path) -> Any:
            if bar is None:
                return None
            task = bar.add_task(path.name, total=path.stat().st_size)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                if done >= total:
                    bar.remove_task(task)
            return update

        try:
            for result in import_files(conninfo, files, table=table, schema=schema,
                                       options=options, jobs=jobs, progress=progress_for,
                                       prehashed=prehashed):
                results.append(result)
                try:
                    _print_result(result, quiet=quiet,
                                  echo=bar.console.print if bar is not None else click.echo)
                except BrokenPipeError:
                    # Whoever read the lines is gone (`| head`): the loads go on, unprinted;
                    # stopping here would leave a load half done for the next run to reap.
                    _quiet_stdout()
        except DatabaseUnavailable:
            if pushgateway:  # the dashboard must see this run too: database_up 0
                from snapshots.metrics import push_database_down

                push_database_down(pushgateway, table=table, origin=options.origin,
                                   schema=schema)
            raise
    if pushgateway:
        from snapshots.metrics import push_results

        push_results(pushgateway, results, table=table, origin=options.origin)
    failures = [r for r in results if not r.ok]
    codes = {r.error.exit_code for r in failures if isinstance(r.error, SnapshotsError)}
    if ExitCode.USAGE in codes:  # e.g. an unknown --type: the command line is wrong
        return ExitCode.USAGE
    if codes == {ExitCode.DATABASE} and len(failures) == len(results):
        return ExitCode.DATABASE
    if len(results) > 1 and not quiet:
        counts: dict[str, int] = {}
        for r in results:
            counts[r.result] = counts.get(r.result, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in counts.items())
        if failures:  # on stderr, where the errors went, and in their format
            _report_error(f"{len(results)} files: {summary}", label=None)
        else:
            click.echo(f"{len(results)} files: {summary}")
    return ExitCode.FAILED if failures else ExitCode.OK


def _print_result(result: Any, *, quiet: bool, echo: Callable[[str], Any]) -> None:
    from snapshots.output import result_line

    for warning in result.warnings:
        log.warning(warning)
    if result.ok:
        if not quiet:
            echo(result_line(result))
        return
    # The error already names the file; the result word would only repeat it.
    _report_error(str(result.error or result_line(result)),
                  result.error.hint if result.error is not None else None)


# --------------------------------------------------------------------------- sync


@cli.command("sync")
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
@_shared_options
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
    from snapshots.csvfile import parse_type_overrides
    from snapshots.metrics import DEFAULT_METRICS_PORT, HealthServer, Metrics, push
    from snapshots.options import ImportOptions, default_jobs
    from snapshots.output import log_timestamps
    from snapshots.sync import DEFAULT_PATTERNS, SyncOptions, SyncService, write_summary

    settings = _settings(ctx, database, table, schema_)
    if options["max_rejects"] is not None and options["on_error"] != "skip":
        raise UsageError("--max-rejects goes with --on-error skip")
    if settings.verbosity == 0:
        logging.getLogger("snapshots").setLevel(logging.INFO)  # a service logs each file
    log_timestamps()
    import_opts = ImportOptions(
        mode=options["mode"], replace=options["replace"], force=options["force"],
        delete_missing=options["delete_missing"], on_error=options["on_error"],
        max_rejects=options["max_rejects"], types=parse_type_overrides(options["types"]),
        schema_evolution=options["schema_evolution"], part_size=options["part_size"],
        csv=_csv_options(options["delimiter"], options["quote"], options["null"],
                         options["encoding"], options["no_header"], options["columns"]),
        origin="sync", wait_for_busy=False)
    sync_opts = SyncOptions(
        data_dir=data_dir, table=settings.table_name, schema=settings.schema, once=once,
        patterns=tuple(patterns) or DEFAULT_PATTERNS, recursive=recursive, settle=settle,
        poll=poll, rescan=rescan, jobs=options["jobs"] or default_jobs(), grace=grace,
        retention_days=retention_days, import_options=import_opts)
    conninfo = _connect_target(settings)
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


# --------------------------------------------------------------------------- retry


@cli.command("retry")
@click.argument("names", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Every snapshot whose latest "
                                                           "attempt failed.")
@_shared_options
@click.pass_context
@handle_errors
def retry_cmd(ctx: click.Context, names: tuple[str, ...], all_failed: bool,
              database: str | None, table: str | None, schema_: str | None) -> None:
    """Ask sync to try failed snapshots again (by NAME, or all with --failed).

    sync does not retry a failed file until its bytes change; this tells it to.

    Examples:

    \b
      snapshots retry snapshot_20230701.csv
      snapshots retry --failed
    """
    from snapshots import schema as ddl
    from snapshots.config import connect
    from snapshots.store import request_retry

    settings = _settings(ctx, database, table, schema_)
    if bool(names) == all_failed:
        raise UsageError("give NAME... or --failed (one of them)")
    wanted = [Path(n).name for n in names]
    with connect(_connect_target(settings)) as conn:
        schema = settings.schema or ddl.current_schema(conn)
        if not ddl.require_current(conn, schema):
            records = []
        else:
            records = request_retry(conn, schema, settings.table_name, names=wanted,
                                    all_failed=all_failed)
    for record in records:
        click.echo(f"retry requested for {record.file_name} (failed #{record.id})")
    missing = [n for n in wanted if n not in {r.file_name for r in records}]
    for name in missing:
        _report_error(f"{name} has no failed attempt to retry in {settings.table_name}")
    if not records and all_failed:
        click.echo("nothing failed: nothing to retry")
    ctx.exit(1 if missing else 0)


# --------------------------------------------------------------------------- list


@cli.command("list")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              envvar="SNAPSHOTS_FORMAT", show_default=True, help="Output format.")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["importing", "imported", "failed", "replaced", "forgotten"]),
              help="Only records with this status (repeatable).")
@click.option("--all", "every", is_flag=True, help="Every import attempt, not one per snapshot.")
@_shared_options
@click.pass_context
@handle_errors
def list_cmd(ctx: click.Context, files: tuple[Path, ...], fmt: str, statuses: tuple[str, ...],
             every: bool, database: str | None, table: str | None, schema_: str | None) -> None:
    """What is loaded, when and by whom; with FILEs, whether each file is imported.

    Examples:

    \b
      snapshots list                             the latest record of every snapshot
      snapshots list --status failed --all       every failed attempt
      snapshots list --format json > loaded.json
      snapshots list incoming/*.csv              exit 1 if any of them is not imported
    """
    from snapshots.listing import file_states, list_snapshots
    from snapshots.output import render_records, render_states

    settings = _settings(ctx, database, table, schema_)
    conninfo = _connect_target(settings)
    if files:
        states = file_states(conninfo, files, table=settings.table_name, schema=settings.schema)
        render_states(states, fmt, sys.stdout)
        ctx.exit(0 if all(s["state"] == "imported" for s in states) else 1)
    records = list_snapshots(conninfo, table=settings.table_name, schema=settings.schema,
                             statuses=statuses, every_attempt=every)
    render_records(records, fmt, sys.stdout, table=settings.table_name, statuses=statuses)


# --------------------------------------------------------------------------- forget


@cli.command("forget")
@click.argument("targets", nargs=-1)
@click.option("--older-than", type=click.IntRange(min=0), metavar="DAYS",
              help="Forget snapshots older than DAYS (by snapshot date, else import time).")
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="Keep the newest N snapshots, forget the rest.")
@_shared_options
@click.pass_context
@handle_errors
def forget_cmd(ctx: click.Context, targets: tuple[str, ...], older_than: int | None,
               keep: int | None, database: str | None, table: str | None,
               schema_: str | None) -> None:
    """Forget snapshots by NAME or IMPORT_ID (append mode deletes their rows).

    A path is reduced to its file name (the file need not exist); `42` is an import id,
    `./42` a name.

    Examples:

    \b
      snapshots forget snapshot_20230101.csv
      snapshots forget 42                        by import id
      snapshots forget --older-than 90           snapshots dated more than 90 days ago
      snapshots forget --keep 30                 all but the newest 30
    """
    from snapshots.listing import forget_snapshots
    from snapshots.output import plural

    settings = _settings(ctx, database, table, schema_)
    chosen = sum(bool(x) for x in (targets, older_than is not None, keep is not None))
    if chosen != 1:
        raise UsageError("give NAME|IMPORT_ID..., or --older-than DAYS, or --keep N (one of them)")
    ids, names = split_names_and_ids(targets)
    conninfo = _connect_target(settings)
    result, missing = forget_snapshots(conninfo, table=settings.table_name, schema=settings.schema,
                                       ids=ids, names=names, older_than_days=older_than,
                                       keep=keep)
    for record in result.records:
        click.echo(f"forgot {record.file_name} (#{record.id})")
    if result.rows_deleted:
        click.echo(f"deleted {plural(result.rows_deleted, 'row')}")
    if not result.records and not missing:
        click.echo("nothing to forget")
    for n, word in enumerate(missing, 1):
        last = n == len(missing) and len(targets) > len(missing)
        _report_error(f"no imported snapshot {word} in {settings.table_name}",
                      "nothing was forgotten: forget is all or nothing" if last else None)
    ctx.exit(1 if missing else 0)


def split_names_and_ids(words: Sequence[str]) -> tuple[list[int], list[str]]:
    """`42` is an import id; anything else (`./42`, a path) is reduced to a file name."""
    ids: list[int] = []
    names: list[str] = []
    for word in words:
        if word.isdigit():
            ids.append(int(word))
        else:
            name = Path(word).name
            if not name:
                raise UsageError(f"{word!r} names no file")
            names.append(name)
    return ids, names


# --------------------------------------------------------------------------- migrate, db


@cli.command("migrate")
@_shared_options
@click.pass_context
@handle_errors
def migrate_cmd(ctx: click.Context, database: str | None, table: str | None,
                schema_: str | None) -> None:
    """Apply the ledger's schema migrations explicitly.

    Example (as a role that may run DDL, before loaders that may not):

    \b
      snapshots --database postgresql://owner@db/warehouse migrate
    """
    from snapshots import schema as ddl
    from snapshots.config import connect

    settings = _settings(ctx, database, table, schema_)
    with connect(_connect_target(settings)) as conn:
        schema = settings.schema or ddl.current_schema(conn)
        applied = ddl.migrate(conn, schema)
    if applied:
        click.echo(f"ledger in schema {schema} migrated to version {applied[-1]} "
                   f"(applied {', '.join(map(str, applied))})")
    else:
        click.echo(f"ledger in schema {schema} is current (version {ddl.LATEST_VERSION})")


@cli.group("db")
def db_group() -> None:
    """The embedded PostgreSQL used when no database is given.

    Examples:

    \b
      snapshots db start && psql "$(snapshots db url)"
      snapshots db status
      snapshots db stop
    """


@db_group.command("start")
@handle_errors
def db_start() -> None:
    """Start it and keep it running until `snapshots db stop`."""
    from snapshots import embedded

    click.echo(embedded.start())


@db_group.command("url")
@handle_errors
def db_url() -> None:
    """Print a URI for psql (the server must be running: `snapshots db start`)."""
    from snapshots import embedded

    uri = embedded.url()
    if uri is None:
        raise DatabaseUnavailable("the embedded PostgreSQL is not running",
                                  hint="start it with `snapshots db start`")
    click.echo(uri)


@db_group.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def db_status(fmt: str) -> None:
    """Is it running, where is its data, who uses it."""
    from dataclasses import asdict

    from snapshots import embedded

    status = embedded.status()
    if fmt == "json":
        click.echo(json.dumps(asdict(status), default=str, indent=2))
        return
    for key, value in asdict(status).items():
        click.echo(f"{key}: {value}")
    if not status.running:
        sys.exit(1)


@db_group.command("stop")
@click.option("--force", is_flag=True,
              help="Stop it even while other snapshots processes use it.")
@handle_errors
def db_stop(force: bool) -> None:
    """Stop it now."""
    from snapshots import embedded

    users = [pid for pid in embedded.status().users if pid != os.getpid()]
    if users and not force:
        raise SnapshotsError(
            f"{len(users)} snapshots process(es) still use the embedded PostgreSQL "
            f"(pid {', '.join(map(str, users))}); stopping it would cut them off",
            hint="stop them first, or `snapshots db stop --force`")
    click.echo("stopped" if embedded.stop() else "not running")


def run(argv: Sequence[str] | None = None) -> int:
    """The command line ``argv`` (default: ``sys.argv[1:]``) run to its exit code.

    Nothing here ends the process: the console script (:func:`main`) does that, and tests
    call this in process.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args, prog_name="snapshots", standalone_mode=False)
        return code if isinstance(code, int) else 0  # a command's ctx.exit(code) ends here
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        _report_error("interrupted", fmt=_early_log_format(args))
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        # Usage errors (the seed's `snapshots FILE` form included) look like every other
        # error: one `error:` line and a hint, rather than Click's usage block and `Error:`.
        ctx = getattr(exc, "ctx", None)
        hint = f"see '{ctx.command_path} --help'" if ctx is not None else None
        _report_error(exc.format_message(), hint, fmt=_early_log_format(args))
        return exc.exit_code
    except SystemExit as exc:  # sys.exit(code) in a command, as the interpreter maps it
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        click.echo(exc.code, err=True)
        return 1


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: :func:`run`, then exit with its code."""
    try:
        code = run(argv)
    finally:
        # On the way out, the interpreter's last garbage collection walks every object the
        # database driver and the rest created (~0.1 s here); frozen objects are skipped.
        # Nothing needs them collected: the process is ending.
        gc.freeze()
    sys.exit(code)
