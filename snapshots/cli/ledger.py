"""The ledger's commands: `list`, `forget`, `retry` and `migrate`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from snapshots.cli.errors import handle_errors, report_error
from snapshots.cli.options import command_settings, connect_target, shared_options
from snapshots.errors import ExitCode, UsageError


@click.command("retry")
@click.argument("names", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Every snapshot whose latest "
                                                           "attempt failed.")
@shared_options
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

    settings = command_settings(ctx, database, table, schema_)
    if bool(names) == all_failed:
        raise UsageError("give NAME... or --failed (one of them)")
    wanted = [Path(n).name for n in names]
    with connect(connect_target(settings)) as conn:
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
        report_error(f"{name} has no failed attempt to retry in {settings.table_name}")
    if not records and all_failed:
        click.echo("nothing failed: nothing to retry")
    ctx.exit(int(ExitCode.FAILED if missing else ExitCode.OK))


@click.command("list")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              envvar="SNAPSHOTS_FORMAT", show_default=True, help="Output format.")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(["importing", "imported", "failed", "replaced", "forgotten"]),
              help="Only records with this status (repeatable).")
@click.option("--all", "every", is_flag=True, help="Every import attempt, not one per snapshot.")
@shared_options
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

    settings = command_settings(ctx, database, table, schema_)
    conninfo = connect_target(settings)
    if files:
        states = file_states(conninfo, files, table=settings.table_name, schema=settings.schema)
        render_states(states, fmt, sys.stdout)
        imported = all(s["state"] == "imported" for s in states)
        ctx.exit(int(ExitCode.OK if imported else ExitCode.FAILED))
    records = list_snapshots(conninfo, table=settings.table_name, schema=settings.schema,
                             statuses=statuses, every_attempt=every)
    render_records(records, fmt, sys.stdout, table=settings.table_name, statuses=statuses)


@click.command("forget")
@click.argument("targets", nargs=-1)
@click.option("--older-than", type=click.IntRange(min=0), metavar="DAYS",
              help="Forget snapshots older than DAYS (by snapshot date, else import time).")
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="Keep the newest N snapshots, forget the rest.")
@shared_options
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

    settings = command_settings(ctx, database, table, schema_)
    chosen = sum(bool(x) for x in (targets, older_than is not None, keep is not None))
    if chosen != 1:
        raise UsageError("give NAME|IMPORT_ID..., or --older-than DAYS, or --keep N (one of them)")
    ids, names = split_names_and_ids(targets)
    conninfo = connect_target(settings)
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
        report_error(f"no imported snapshot {word} in {settings.table_name}",
                     "nothing was forgotten: forget is all or nothing" if last else None)
    ctx.exit(int(ExitCode.FAILED if missing else ExitCode.OK))


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


@click.command("migrate")
@shared_options
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

    settings = command_settings(ctx, database, table, schema_)
    with connect(connect_target(settings)) as conn:
        schema = settings.schema or ddl.current_schema(conn)
        applied = ddl.migrate(conn, schema)
    if applied:
        click.echo(f"ledger in schema {schema} migrated to version {applied[-1]} "
                   f"(applied {', '.join(map(str, applied))})")
    else:
        click.echo(f"ledger in schema {schema} is current (version {ddl.LATEST_VERSION})")
