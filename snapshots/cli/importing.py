"""`snapshots import`: files loaded once each, a line printed per file as it finishes."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from snapshots.cli.errors import handle_errors, quiet_stdout, report_error
from snapshots.cli.options import (
    command_settings,
    connect_target,
    import_options,
    loading_options_from,
    shared_options,
)
from snapshots.errors import DatabaseUnavailable, ExitCode, SnapshotsError, UsageError

if TYPE_CHECKING:
    from snapshots.engine.context import ProgressCallback
    from snapshots.engine.result import FileResult
    from snapshots.options import ImportOptions
    from snapshots.prehash import Prehasher

log = logging.getLogger("snapshots")


@click.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@import_options
@shared_options
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
    from snapshots.csvio.names import expand_inputs

    settings = command_settings(ctx, database, table, schema_)
    files = expand_inputs(paths)
    if not files:
        raise UsageError("no .csv or .csv.gz files found in " + ", ".join(map(str, paths)))
    opts = loading_options_from(options)
    from snapshots.options import default_jobs, read_whole, worth_parts
    from snapshots.prehash import Prehasher

    jobs = options["jobs"] or default_jobs()
    # Hashing starts now, while the database driver loads and the server is reached.
    with Prehasher(files, parts=lambda path, size: worth_parts(opts, path, size, jobs),
                   options=opts.csv, ahead=jobs,
                   skip=lambda size: read_whole(opts, size)) as prehashed:
        conninfo = connect_target(settings)
        code = run_imports(conninfo, files, table=settings.table_name, schema=settings.schema,
                           options=opts, jobs=jobs, pushgateway=options["pushgateway"],
                           quiet=settings.verbosity < 0, prehashed=prehashed)
    ctx.exit(int(code))


def run_imports(conninfo: str, files: Sequence[Path], *, table: str, schema: str | None,
                options: ImportOptions, jobs: int | None, pushgateway: str | None,
                quiet: bool, prehashed: Prehasher | None = None) -> ExitCode:
    """Import, printing one line per file as it finishes; the exit code for the run."""
    from snapshots.output import is_terminal, progress_bar
    from snapshots.runner import import_files

    results: list[FileResult] = []
    with progress_bar(is_terminal(sys.stderr) and not quiet) as bar:

        def progress_for(path: Path) -> ProgressCallback | None:
            if bar is None:
                return None
            task = bar.add_task(path.name, total=path.stat().st_size)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                if done >= total:
                    bar.remove_task(task)
            return update

        # Closed here, not whenever the interpreter gets round to it: on Ctrl-C the
        # generator's workers must roll back and remove their claims before the exit.
        loads = import_files(conninfo, files, table=table, schema=schema, options=options,
                             jobs=jobs, progress=progress_for, prehashed=prehashed)
        try:
            with contextlib.closing(loads):
                for result in loads:
                    results.append(result)
                    try:
                        _print_result(result, quiet=quiet,
                                      echo=bar.console.print if bar is not None else click.echo)
                    except BrokenPipeError:
                        # Whoever read the lines is gone (`| head`): the loads go on, unprinted;
                        # stopping here would leave a load half done for the next run to reap.
                        quiet_stdout()
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
            report_error(f"{len(results)} files: {summary}", label=None)
        else:
            click.echo(f"{len(results)} files: {summary}")
    return ExitCode.FAILED if failures else ExitCode.OK


def _print_result(result: FileResult, *, quiet: bool, echo: Callable[[str], Any]) -> None:
    from snapshots.output import result_line

    for warning in result.warnings:
        log.warning(warning)
    if result.ok:
        if not quiet:
            echo(result_line(result))
        return
    # The error already names the file; the result word would only repeat it.
    report_error(str(result.error or result_line(result)),
                 result.error.hint if result.error is not None else None)
